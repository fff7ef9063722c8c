"""Feature-collision poisons ("poison frogs", Shafahi et al. 2018) against a model fine-tuned on frozen features.

The attacker wants one test image ``t`` (of some class) classified as ``base_class`` after the
victim fine-tunes the last layer of a pretrained network on a training set. Each poison starts
from a correctly labelled base image ``b`` of ``base_class`` and solves

    p = argmin_p ‖f(p) − f(t)‖² + β‖p − b‖²

by forward–backward splitting (a gradient step on the feature term, then the proximal step of
the β-term, ``p ← (p̂ + λβ b) / (1 + λβ)``), with f the penultimate features. ``β`` defaults to
Shafahi et al.'s β₀·(feature dim / input dim)² with β₀ = 0.25. Labels are untouched: the poisons
look like their base images and keep the base label, but sit on the target in feature space, so
the fine-tuned head's boundary moves over ``t``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from advlab._device import module_device
from advlab.metrics import predict_logits
from advlab.models.features import features, last_linear, penultimate_features
from advlab.poison.base import PoisonedData, check_class, check_data, default_generator, finish, pick, poison_count
from advlab.train import TrainConfig, fit

PAPER = ("Shafahi, Huang, Najibi, Suciu, Studer, Dumitras, Goldstein 2018, Poison Frogs! Targeted Clean-Label "
         "Poisoning Attacks on Neural Networks, https://arxiv.org/abs/1804.00792")


def _collide(model: nn.Module, base: torch.Tensor, goal: torch.Tensor, beta: float, steps: int,
             lr: float) -> torch.Tensor:
    """Forward–backward splitting from ``base`` towards the features ``goal``; per-example step halving."""
    p = base.clone()
    step = torch.full((len(p), 1, 1, 1), lr, device=p.device)
    prev = torch.full((len(p),), float("inf"), device=p.device)
    for _ in range(steps):
        q = p.detach().requires_grad_(True)
        obj = (features(model, q) - goal).pow(2).sum(1)
        (grad,) = torch.autograd.grad(obj.sum(), q)
        with torch.no_grad():
            worse = obj.detach() > prev  # Shafahi et al. shrink the step when the objective rises
            step[worse] *= 0.5
            prev = torch.minimum(prev, obj.detach())
            p_hat = p - step * grad
            p = ((p_hat + step * beta * base) / (1 + step * beta)).clamp(0.0, 1.0)
    return p.detach()


def feature_collision(x: torch.Tensor, y: torch.Tensor, *, fraction: float, model: nn.Module,
                      target_x: torch.Tensor, base_class: int, beta: float | None = None, steps: int = 200,
                      lr: float = 0.01, opacity: float = 0.0, generator: torch.Generator | None = None,
                      num_classes: int | None = None) -> PoisonedData:
    """Craft ``round(fraction·N)`` feature-collision poisons from base images of ``base_class``.

    Args:
        x: The fine-tuning images, N×C×H×W in [0, 1].
        y: The fine-tuning labels.
        fraction: Share of the set turned into poisons (drawn from ``base_class``).
        model: The pretrained network whose penultimate features are frozen (not modified).
        target_x: The one target test image (1×C×H×W or C×H×W).
        base_class: The class the target should be given; the poisons keep this (true) label.
        beta: Weight of ‖p − b‖² (default β₀·(feature dim / input dim)², β₀ = 0.25).
        steps: Forward–backward iterations.
        lr: The initial step λ (halved per poison whenever its objective rises).
        opacity: Blend ``opacity``·t into each base image first (Shafahi et al.'s watermarking, 0 = off).
        generator: Seeded source of the choice of base images.
        num_classes: Number of classes (default: largest label + 1).
    """
    x, y, classes = check_data(x, y, num_classes)
    check_class("base_class", base_class, classes)
    t = target_x.reshape(1, *x.shape[1:]) if target_x.numel() == x[0].numel() else None
    if t is None:
        raise ValueError(f"target_x: expected one image of shape {tuple(x.shape[1:])}, got {tuple(target_x.shape)}")
    if not 0.0 <= opacity < 1.0:
        raise ValueError(f"opacity: expected a number in [0, 1), got {opacity}")
    idx = pick((y == base_class).nonzero().flatten(), poison_count(fraction, len(y)), default_generator(generator),
               f"examples of class {base_class}")
    goal = penultimate_features(model, t)
    if beta is None:
        beta = 0.25 * (goal.shape[1] / x[0].numel()) ** 2
    new_x = None
    if len(idx):
        base = ((1 - opacity) * x[idx] + opacity * t).clamp(0.0, 1.0)
        dev = module_device(model)  # the poisons are optimised where the model is, returned to x's device
        new_x = _collide(model, base.to(dev), goal.to(dev), float(beta), steps, lr).to(x.device)
    params = {"fraction": fraction, "base_class": base_class, "beta": beta, "steps": steps, "opacity": opacity}
    return finish(x, y, idx, new_x, None, "feature-collision", params=params, target=base_class,
                  extra={"target_x": t})


class FineTuned(nn.Module):
    """A frozen feature extractor with a fine-tuned linear head: ``head(features(backbone, x))``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.head(features(self.backbone, x))
        return out


def fine_tune_head(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
                   fresh: bool = False) -> FineTuned:
    """Train a copy of ``model``'s last layer on the frozen penultimate features of ``(x, y)``.

    Training is :func:`advlab.train.fit` on the feature vectors, starting from the model's own
    head, or (``fresh=True``) from a new initialisation drawn from ``config.seed`` — the transfer
    setting of Shafahi et al., where the last layer is trained anew on the victim's set.
    ``model`` itself is not modified.
    """
    head = copy.deepcopy(last_linear(model))
    fit(head, (penultimate_features(model, x), y), None, config, progress=False, init_seed=fresh)
    return FineTuned(model, head)


def collision_success(victim: Callable[[torch.Tensor], torch.Tensor], poisoned: PoisonedData) -> bool:
    """Whether the victim now classifies the attack's target image as the base class."""
    pred = int(predict_logits(victim, poisoned.extra["target_x"], device=module_device(victim)).argmax(1))
    return pred == poisoned.target


__all__ = ["PAPER", "FineTuned", "collision_success", "feature_collision", "fine_tune_head"]
