"""Deprecated module path (until advlab 0.3): the results store lives in :mod:`advlab.results.store`."""

from advlab._deprecation import alias_module
from advlab.results.store import SCHEMA, Store

alias_module("advlab.evaluation.store", "advlab.results.store")

__all__ = ["SCHEMA", "Store"]
