"""Deprecated module path (until advlab 0.3): the attack lives in :mod:`advlab.attacks.decision_based`.

The module was renamed so that no module of ``advlab.attacks`` is shadowed by the attack function
the package exports under the same name (``advlab.attacks.hopskipjump`` is that function).
"""

from advlab._deprecation import alias_module
from advlab.attacks.decision_based import hopskipjump

alias_module("advlab.attacks.hopskipjump", "advlab.attacks.decision_based")

__all__ = ["hopskipjump"]
