"""Deprecated module path: the black-box interface lives in :mod:`advlab.models.blackbox` (until advlab 0.3)."""

from advlab._deprecation import alias_module
from advlab.models.blackbox import OUTPUTS, BlackBox, QueryBudgetExceeded, QuerySession, as_blackbox

alias_module("advlab.blackbox", "advlab.models.blackbox")

__all__ = ["OUTPUTS", "BlackBox", "QueryBudgetExceeded", "QuerySession", "as_blackbox"]
