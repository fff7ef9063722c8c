"""Gaussian data augmentation: train the base classifier of a randomized-smoothing model.

* ``gaussian-noise`` — Cohen, Rosenfeld, Kolter 2019 (https://arxiv.org/abs/1902.02918), section 3.3
  and Lecuyer et al. 2019: every training input is replaced by x + δ, δ ~ N(0, σ²I), drawn from the
  training loop's seeded generator. The noise is added in pixel units, before the model's own
  Normalize layer, and the noisy input is NOT clipped to [0, 1] (Cohen et al. do not clip: the
  smoothed classifier's guarantee is about exactly this unclipped Gaussian).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import check_nonneg
from advlab._device import draw
from advlab.train import TrainingDefense

PAPER = ("Cohen, Rosenfeld, Kolter 2019, Certified Adversarial Robustness via Randomized Smoothing, "
         "https://arxiv.org/abs/1902.02918")


@dataclass
class GaussianNoise(TrainingDefense):
    """Gaussian data augmentation (Cohen et al. 2019): CE on x + N(0, σ²I), unclipped.

    ``sigma`` is the noise standard deviation in pixel units; train with the σ the smoothed
    classifier will use. The logits returned for the training accuracy are those of the noisy
    batch (a clean forward in training mode would move BatchNorm statistics with clean data).
    """

    name: str = "gaussian-noise"
    sigma: float = 0.5

    def __post_init__(self) -> None:
        self.sigma = check_nonneg("sigma", self.sigma)
        if self.sigma == float("inf"):
            raise ValueError("sigma: expected a finite number >= 0, got inf")

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noise = draw(torch.randn, xb.shape, generator=generator, dtype=xb.dtype, device=xb.device)
        logits = model(xb + self.sigma * noise)
        return F.cross_entropy(logits, yb), logits
