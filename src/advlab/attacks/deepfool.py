"""Deprecated module path (until advlab 0.3): the attack lives in :mod:`advlab.attacks.linearised`.

The module was renamed so that no module of ``advlab.attacks`` is shadowed by the attack function
the package exports under the same name (``advlab.attacks.deepfool`` is that function).
"""

from advlab._deprecation import alias_module
from advlab.attacks.linearised import deepfool

alias_module("advlab.attacks.deepfool", "advlab.attacks.linearised")

__all__ = ["deepfool"]
