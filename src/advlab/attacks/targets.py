"""Choosing target classes for targeted attacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from advlab._checks import check_choice, check_images, check_labels
from advlab._device import draw
from advlab.attacks.fastview import inference_view
from advlab.attacks.registry import check_class_range, check_finite_logits


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
        y: True labels, in ``[0, number of classes)``.
        mode: ``"random"`` (uniform over the other classes) or ``"least-likely"``.
        num_classes: Number of classes (at least 2); read off the model's output when not given.
        generator: Source of randomness for ``"random"`` (drawn on the CPU).

    Returns:
        int64 targets, never equal to ``y``.
    """
    check_choice("mode", mode, ("random", "least-likely"))
    xt = check_images("x", x)
    y = check_labels("y", y, xt.shape[0])
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 2):
        raise ValueError(f"num_classes: expected an integer >= 2 (a target must differ from the label), "
                         f"got {num_classes!r}")
    if mode == "least-likely" or num_classes is None:
        with torch.no_grad():
            logits: torch.Tensor = inference_view(model)(xt)
        if logits.dim() != 2:
            raise ValueError(f"model: expected logits of shape N×K, got shape {tuple(logits.shape)}")
        check_finite_logits(logits, "on x")
        num_classes = int(logits.shape[1])
        if num_classes < 2:
            raise ValueError(f"model: a targeted attack needs at least 2 classes, got {num_classes} output")
        check_class_range("y", y, num_classes)
        if mode == "least-likely":
            masked = logits.clone()
            masked[torch.arange(len(y), device=masked.device), y.to(masked.device)] = float("inf")
            return masked.argmin(dim=1)
    else:
        check_class_range("y", y, num_classes, f"num_classes={num_classes}")
    offset = draw(torch.randint, 1, num_classes, (len(y),), generator=generator, device=y.device)
    return (y + offset) % num_classes
