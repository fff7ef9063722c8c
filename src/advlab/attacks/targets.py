"""Choosing target classes for targeted attacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from advlab._checks import check_choice
from advlab.attacks.fastview import inference_view


def choose_targets(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mode: Literal["random", "least-likely"] = "random",
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick a target class per example: a random class other than ``y``, or the least likely.

    A model in training mode is run through :func:`~advlab.attacks.fastview.inference_view` (an
    eval-mode copy, with a warning): choosing targets never changes the model.

    Args:
        model: Maps a batch to logits (used for ``"least-likely"`` and to count classes).
        x: The clean batch.
        y: True labels.
        mode: ``"random"`` (uniform over the other classes) or ``"least-likely"``.
        num_classes: Number of classes; read off the model's output when not given.
        generator: Source of randomness for ``"random"`` (drawn on the CPU).

    Returns:
        int64 targets, never equal to ``y``.
    """
    check_choice("mode", mode, ("random", "least-likely"))
    if mode == "least-likely" or num_classes is None:
        with torch.no_grad():
            logits: torch.Tensor = inference_view(model)(x)
        num_classes = logits.shape[1]
        if mode == "least-likely":
            masked = logits.clone()
            masked[torch.arange(len(y)), y] = float("inf")
            return masked.argmin(dim=1)
    offset = torch.randint(1, num_classes, (len(y),), generator=generator).to(y.device)
    return (y + offset) % num_classes
