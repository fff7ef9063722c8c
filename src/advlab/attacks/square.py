"""Deprecated module path (until advlab 0.3): the attack lives in :mod:`advlab.attacks.random_search`.

The module was renamed so that no module of ``advlab.attacks`` is shadowed by the attack function
the package exports under the same name (``advlab.attacks.square`` is that function).
"""

from advlab._deprecation import alias_module
from advlab.attacks.random_search import pseudo_gaussian, square, square_fraction

alias_module("advlab.attacks.square", "advlab.attacks.random_search")

__all__ = ["pseudo_gaussian", "square", "square_fraction"]
