"""Renamed parameters and moved modules keep working for one release, with a DeprecationWarning."""

from __future__ import annotations

import warnings

UNTIL = "advlab 0.3"


def warn_renamed(owner: str, old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``owner``'s parameter ``old`` is now called ``new``."""
    warnings.warn(f"{owner}: '{old}' is deprecated, use '{new}' (the old name works until {UNTIL})",
                  DeprecationWarning, stacklevel=stacklevel)


def alias_module(old: str, new: str) -> None:
    """Warn, from the top of an alias module, that ``old`` moved to ``new``."""
    warnings.warn(f"{old} is deprecated: import from {new} (the old path works until {UNTIL})",
                  DeprecationWarning, stacklevel=3)
