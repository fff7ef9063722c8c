"""The input transformation's interface (what a defended wrapper and an adaptive attacker read), and its argument check.

:mod:`advlab.models.wrappers` builds the transforms and the ``Defended`` wrapper on it; a transform
defined elsewhere (Defense-GAN's projection, :mod:`advlab.models.defense_gan`) subclasses it here.
"""

from __future__ import annotations

import torch
from torch import nn


class Transform(nn.Module):
    """An input transformation. Subclasses set ``differentiable`` / ``randomized`` and ``spec``."""

    differentiable = True
    randomized = False
    spec = "identity"

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable stand-in used by BPDA on the backward pass (default: identity)."""
        return x

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Raise a one-line ValueError if images of ``shape`` (C×H×W) cannot go through (default: any can)."""


def int_arg(spec: str, name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], else a one-line ValueError naming the transform's argument."""
    n = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        n = int(value)
    if n is None or n < low or (high is not None and n > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        what = span if n is not None and high is not None else f"an integer {span}"
        raise ValueError(f"{spec}: {name} must be {what}, got {value!r}")
    return n


__all__ = ["Transform", "int_arg"]
