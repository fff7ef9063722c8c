"""Deprecated module path (until advlab 0.3): the attack lives in :mod:`advlab.attacks.carlini_wagner`.

The module was renamed so that no module of ``advlab.attacks`` is shadowed by the attack function
the package exports under the same name (``advlab.attacks.cw`` is that function).
"""

from advlab._deprecation import alias_module
from advlab.attacks.carlini_wagner import cw

alias_module("advlab.attacks.cw", "advlab.attacks.carlini_wagner")

__all__ = ["cw"]
