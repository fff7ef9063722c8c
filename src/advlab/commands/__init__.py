"""Sub-commands of the ``advlab`` CLI. Each module defines ``register(subparsers)``.

The CLI is a thin layer: each command parses its flags and calls the library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# One module per sub-command (or group); imported explicitly, in this order, for ``--help``.
MODULES: tuple[str, ...] = ("models", "train", "attack", "evaluate", "certify", "transfer", "poison", "physical")


def modules() -> list[ModuleType]:
    """The command modules, imported."""
    return [importlib.import_module(f"advlab.commands.{m}") for m in MODULES]
