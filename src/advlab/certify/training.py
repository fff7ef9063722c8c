"""Certified training: minimise a bound on the worst-case loss inside the L∞ ball (IBP, CROWN-IBP).

* ``ibp`` — Gowal et al. 2018, https://arxiv.org/abs/1810.12715: loss = κ·CE(z(x), y) +
  (1 − κ)·CE(ẑ, y), with ẑ_j = −(lower bound of z_y − z_j) the worst-case logits from interval
  bounds (the specification folded into the last layer). After a warm-up of clean training
  (ε = 0, κ = 1), ε rises from 0 to ``eps`` and κ from 1 to ``kappa_end`` (Gowal: 0.5) over a
  ramp; then both stay.
* ``crown-ibp`` — Zhang et al. 2020, https://arxiv.org/abs/1906.06316: the same loss with the
  bound β·CROWN-IBP + (1 − β)·IBP, β going from ``beta_start`` (1) to ``beta_end`` (0) over the
  ramp, and κ from 1 to ``kappa_end`` = 0.

The warm-up and the ramp are fractions of the whole run (``progress`` in train.py's loop): with
``--epochs E`` and ``S`` steps per epoch, the warm-up is ``warmup``·E·S optimiser steps and the ramp
the next ``ramp``·E·S. ``schedule="smooth"`` replaces the linear ε ramp by the smoothstep
3t² − 2t³ (slow start and slow finish); κ and β always ramp linearly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import check_nonneg
from advlab.certify.bounds import chain_margins, input_box
from advlab.certify.chain import build_chain
from advlab.train import TrainingDefense

PAPER = ("Gowal et al. 2018, https://arxiv.org/abs/1810.12715; "
         "Zhang et al. 2020, CROWN-IBP, https://arxiv.org/abs/1906.06316")


def _unit(arg: str, value: float) -> float:
    value = check_nonneg(arg, value)
    if value > 1:
        raise ValueError(f"{arg}: expected a number in [0, 1], got {value}")
    return float(value)


@dataclass
class IBPTraining(TrainingDefense):
    """IBP certified training (Gowal et al. 2018): κ·CE(clean) + (1 − κ)·CE(worst-case logits)."""

    name: str = "ibp"
    eps: float = 0.3
    warmup: float = 0.05
    ramp: float = 0.4
    kappa_end: float = 0.5
    schedule: Literal["linear", "smooth"] = "linear"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_nonneg("eps", self.eps)
        for arg in ("warmup", "ramp", "kappa_end"):
            _unit(arg, getattr(self, arg))
        if self.warmup + self.ramp > 1:
            raise ValueError(f"warmup + ramp: expected at most 1 (fractions of training), "
                             f"got {self.warmup + self.ramp}")
        if self.schedule not in ("linear", "smooth"):
            raise ValueError(f"schedule: expected 'linear' or 'smooth', got {self.schedule!r}")
        self.bounds = (float(self.bounds[0]), float(self.bounds[1]))

    def ramp_fraction(self, progress: float) -> float:
        """How far along the ramp training is: 0 during the warm-up, 1 after the ramp."""
        if progress < self.warmup:
            return 0.0
        if self.ramp == 0:
            return 1.0
        return min(1.0, (progress - self.warmup) / self.ramp)

    def eps_at(self, progress: float) -> float:
        """ε at this point of training."""
        t = self.ramp_fraction(progress)
        if self.schedule == "smooth":
            t = t * t * (3 - 2 * t)
        return self.eps * t

    def kappa_at(self, progress: float) -> float:
        """The clean loss's weight κ at this point of training."""
        return 1.0 + (self.kappa_end - 1.0) * self.ramp_fraction(progress)

    def beta_at(self, progress: float) -> float:
        """The CROWN-IBP weight of the bound (0: pure IBP)."""
        return 0.0

    def method(self) -> Literal["ibp", "crown-ibp"]:
        """The bound the loss uses."""
        return "ibp"

    def step(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed clean / worst-case cross-entropy of one batch."""
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        eps, kappa = self.eps_at(progress), self.kappa_at(progress)
        if kappa < 1.0:
            ops = build_chain(model, tuple(xb.shape[1:]))
            margins = chain_margins(ops, input_box(xb, eps, self.bounds), yb, self.method(),
                                    beta=self.beta_at(progress))
            loss = kappa * loss + (1 - kappa) * F.cross_entropy(-margins, yb)
        return loss, logits


@dataclass
class CrownIBPTraining(IBPTraining):
    """CROWN-IBP certified training (Zhang et al. 2020): the bound β·CROWN-IBP + (1 − β)·IBP, κ → 0."""

    name: str = "crown-ibp"
    kappa_end: float = 0.0
    beta_start: float = 1.0
    beta_end: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _unit("beta_start", self.beta_start)
        _unit("beta_end", self.beta_end)

    def beta_at(self, progress: float) -> float:  # noqa: D102
        return self.beta_start + (self.beta_end - self.beta_start) * self.ramp_fraction(progress)

    def method(self) -> Literal["ibp", "crown-ibp"]:  # noqa: D102
        return "crown-ibp"
