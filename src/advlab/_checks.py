"""Validation helpers used at every public boundary.

Each helper raises a one-line :class:`ValueError` (or :class:`TypeError`) that names the
argument, what was expected and what was got. Never ``assert`` on user input.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence

import torch


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean ...?)"`` suffix with close names, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def check_choice(arg: str, value: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{arg}: expected one of {', '.join(repr(c) for c in choices)}, "
            f"got {value!r}{suggest(str(value), choices)}"
        )
    return value


def check_nonneg(arg: str, value: float) -> float:
    """Check that ``value`` is a finite number >= 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{arg}: expected a number >= 0, got {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{arg}: expected a number >= 0, got {value}")
    return float(value)


def check_positive_int(arg: str, value: int) -> int:
    """Check that ``value`` is an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{arg}: expected an integer >= 1, got {value!r}")
    return value


def check_bounds(arg: str, bounds: tuple[float, float]) -> tuple[float, float]:
    """Check that ``bounds`` is a pair (lo, hi) of finite floats with lo < hi."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{arg}: expected a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{arg}: expected finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def check_images(arg: str, x: object, bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Check an image batch: a floating tensor N×C×H×W (or N×D), finite, inside ``bounds``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{arg}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{arg}: expected a batch N×C×H×W (or N×D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{arg}: expected a non-empty batch, got shape {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"{arg}: contains NaN")
    if bounds is not None:
        lo, hi = bounds
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo or xmax > hi:
            raise ValueError(
                f"{arg}: values must lie in the bounds [{lo}, {hi}], got range [{xmin:.4g}, {xmax:.4g}]"
            )
    return x


def check_labels(arg: str, y: object, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Check a label vector: an integer tensor of shape (n,), values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor of int64 labels, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{arg}: expected integer labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{arg}: expected shape ({n},) to match the batch, got {tuple(y.shape)}")
    if num_classes is not None and n > 0 and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{arg}: labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
    return y.long()
