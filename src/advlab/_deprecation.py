"""Warnings that point at the user's line: renamed things, and :func:`caller_level` for any warning.

Old names (a keyword, an option or a module path that moved) keep working until advlab 0.3 and say
so with a ``DeprecationWarning`` that points at the caller's line (the function call, or the
``import`` statement), not at advlab's own code.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import Any

REMOVAL = "advlab 0.3"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def caller_level() -> int:
    """The ``stacklevel`` of the first frame outside advlab, so the warning points at the user's call."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and _ours(frame):
        frame, level = frame.f_back, level + 1
    return level


def _ours(frame: types.FrameType) -> bool:
    """Whether a frame runs advlab's code, or generated code advlab called (a dataclass's ``__init__``)."""
    name = frame.f_code.co_filename
    if name.startswith("<") and frame.f_back is not None:
        name = frame.f_back.f_code.co_filename
    return name.startswith(_PACKAGE + os.sep)


def warn_renamed(owner: str, old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``owner`` received the old name ``old`` of what is now called ``new``.

    Call it from the function that accepted the old name: the default ``stacklevel`` then
    points the warning at that function's caller.

    Args:
        owner: What took the name, e.g. ``"pgd"`` or ``"advlab evaluate"``.
        old: The deprecated name.
        new: The name to use instead.
        stacklevel: As for :func:`warnings.warn`, counted from this function.
    """
    warnings.warn(
        f"{owner}: '{old}' is deprecated, use '{new}' (the old name works until {REMOVAL})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_value(owner: str, old: str, new: str, old_value: Any, value: Any, *, stacklevel: int = 5) -> Any:
    """``old_value`` (with a warning) when the old name was given, else ``value``.

    For a dataclass whose field was renamed: the old name stays an ``InitVar`` defaulting to
    ``None`` and ``__post_init__`` sets ``self.new = renamed_value(..., old_value, self.new)``;
    the default ``stacklevel`` points at the code constructing the dataclass.
    """
    if old_value is None:
        return value
    warn_renamed(owner, old, new, stacklevel=stacklevel)
    return old_value


def alias_module(old: str, new: str) -> None:
    """Warn that module ``old`` was imported; its contents now live in ``new``.

    Call it at the top level of the alias module. The warning points at the ``import`` that
    loaded the alias (the interpreter skips its own import machinery when counting frames).

    Args:
        old: The deprecated module path, e.g. ``"advlab.blackbox"``.
        new: The module to import from instead.
    """
    warnings.warn(
        f"{old} is deprecated: import from {new} (the old path works until {REMOVAL})",
        DeprecationWarning,
        stacklevel=3,
    )


__all__ = ["alias_module", "caller_level", "renamed_value", "warn_renamed"]
