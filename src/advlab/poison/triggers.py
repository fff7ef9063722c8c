"""Backdoor triggers: stamped on training poisons and, with the same function, on test inputs.

Gu et al. 2017 (BadNets) backdoor MNIST with a small pattern of bright pixels, or a single bright
pixel, in the bottom-right corner. :func:`apply_trigger` is the one place a trigger is stamped, so
the attack success rate is measured with exactly the trigger the poisons carried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from advlab._checks import check_images
from advlab._device import module_device
from advlab.metrics import predict_logits

PAPER_BADNETS = ("Gu, Dolan-Gavitt, Garg 2017, BadNets: Identifying Vulnerabilities in the Machine Learning "
                 "Model Supply Chain, https://arxiv.org/abs/1708.06733")
TriggerKind = Literal["pattern", "pixel"]
# The pattern trigger: a 3×3 checkerboard of bright pixels (Gu et al.'s MNIST "pattern" backdoor).
_PATTERN = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], device="cpu")


@dataclass(frozen=True)
class Trigger:
    """A trigger: where it sits (``mask``, C×H×W in {0, 1}), what it writes (``pattern``), how strongly.

    Stamping gives ``x + amplitude·mask·(pattern − x)``: amplitude 1 overwrites the masked pixels.
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    amplitude: float = 1.0
    kind: str = "pattern"

    @property
    def pixels(self) -> int:
        """How many input elements the trigger touches."""
        return int(self.mask.sum())


def make_trigger(shape: tuple[int, ...], kind: TriggerKind = "pattern", amplitude: float = 1.0) -> Trigger:
    """The bottom-right trigger for images of ``shape`` (C×H×W): a 3×3 pattern or one pixel, 1 px from the edge.

    Args:
        shape: The image shape C×H×W (H, W ≥ 5).
        kind: ``"pattern"`` (3×3 checkerboard of bright pixels) or ``"pixel"`` (one bright pixel).
        amplitude: In (0, 1]; below 1 the trigger is blended (Turner et al.'s reduced amplitude).
    """
    if len(shape) != 3 or min(shape[1:]) < 5:
        raise ValueError(f"shape: expected C×H×W with H, W >= 5, got {tuple(shape)}")
    if kind not in ("pattern", "pixel"):
        raise ValueError(f"trigger: expected 'pattern' or 'pixel', got {kind!r}")
    if not 0.0 < amplitude <= 1.0:
        raise ValueError(f"amplitude: expected a number in (0, 1], got {amplitude}")
    _c, h, w = shape
    mask = torch.zeros(shape, device="cpu")  # a trigger is built on the CPU; apply_trigger moves it to x
    pattern = torch.zeros(shape, device="cpu")
    if kind == "pixel":
        mask[:, h - 2, w - 2] = 1.0
        pattern[:, h - 2, w - 2] = 1.0
    else:
        mask[:, h - 4 : h - 1, w - 4 : w - 1] = 1.0
        pattern[:, h - 4 : h - 1, w - 4 : w - 1] = _PATTERN
    return Trigger(mask, pattern, float(amplitude), kind)


def apply_trigger(x: torch.Tensor, trigger: Trigger) -> torch.Tensor:
    """``x`` (N×C×H×W in [0, 1]) with the trigger stamped on every image (a new tensor)."""
    x = check_images("x", x, (0.0, 1.0))
    if tuple(x.shape[1:]) != tuple(trigger.mask.shape):
        raise ValueError(f"x: expected images of shape {tuple(trigger.mask.shape)} for this trigger, "
                         f"got {tuple(x.shape[1:])}")
    a = trigger.amplitude * trigger.mask.to(x.device)
    return (x + a * (trigger.pattern.to(x.device) - x)).clamp(0.0, 1.0)


def all_to_all_target(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Gu et al.'s all-to-all relabelling: class i becomes i + 1 (mod the number of classes)."""
    return (y + 1) % num_classes


def attack_success_rate(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                        trigger: Trigger, target: int | None, *, num_classes: int = 10) -> float:
    """ASR: the share of triggered test inputs classified as the attacker's class.

    Single target (``target`` given): over the inputs whose true class is not the target, the
    share classified as ``target``. All-to-all (``target=None``): over all inputs, the share
    classified as ``(y + 1) mod num_classes``.
    """
    keep = y != target if target is not None else torch.ones_like(y, dtype=torch.bool)
    xs, ys = x[keep], y[keep]
    if len(xs) == 0:
        raise ValueError("y: no test input outside the target class to measure the attack success rate on")
    pred = predict_logits(model, apply_trigger(xs, trigger), device=module_device(model)).argmax(1)
    goal = torch.full_like(ys, target) if target is not None else all_to_all_target(ys, num_classes)
    return float((pred == goal).float().mean())


__all__ = ["PAPER_BADNETS", "Trigger", "TriggerKind", "all_to_all_target", "apply_trigger",
           "attack_success_rate", "make_trigger"]
