"""Randomized smoothing for L2 (Cohen, Rosenfeld, Kolter 2019): PREDICT, CERTIFY, certified accuracy.

The smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), is certified at x with L2
radius σ·Φ⁻¹(p̲_A) when p̲_A, a lower confidence bound on the top class's probability, exceeds 1/2
(Theorem 1 of the paper, with p̄_B = 1 − p̲_A). CERTIFY selects the class with n0 noise draws and
estimates p̲_A with n fresh draws (Clopper–Pearson, :mod:`advlab.certify.stats`); PREDICT abstains
unless a two-sided binomial test on the top two counts rejects at level α. Both hold with
probability at least 1 − α per example, over the sampling.

Sampling is batched across noise draws and images: the (image, draw) pairs are laid out image
by image and cut into forward passes of ``batch_size`` noisy inputs, so one forward serves many
noisy copies of several images. Each noisy copy draws its noise as a row of ``ceil(d/16)·16``
standard normals (d = the image's element count) from the one generator, in that order. torch's
CPU normal sampler fills whole blocks of 16 values, so with rows whose length is a multiple of
16 the values drawn do not depend on where the forward passes are cut: the counts are identical
for every ``batch_size`` under the same seed (tests/test_certify_smoothing.py checks it). Noise
is in pixel units, added before the model's own normalisation, and never clipped (Cohen et al.
do not clip). The model runs through advlab's fast view (an eval-mode copy where it is in
training mode); it is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advlab._checks import check_nonneg, check_positive_int
from advlab._device import draw
from advlab.attacks.fastview import attack_view
from advlab.certify.stats import binom_test_half, clopper_pearson_lower, normal_ppf

PAPER = ("Cohen, Rosenfeld, Kolter 2019, Certified Adversarial Robustness via Randomized Smoothing, "
         "https://arxiv.org/abs/1902.02918")
ABSTAIN = -1


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_images(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a float tensor N×C×H×W, got {type(x).__name__}")
    if not x.is_floating_point() or x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x: expected a non-empty float tensor N×..., got {x.dtype} of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x: expected finite values, got NaN or inf")
    return x.detach()


class Smoothed:
    """The Gaussian-smoothed classifier of ``model`` at noise level σ (Cohen et al. 2019).

    An object around the base classifier, not a change to it. ``predict`` and ``certify`` are the
    paper's PREDICT and CERTIFY, vectorised over a batch of images; abstentions are −1.

    Args:
        model: The base classifier: images in pixel units → logits over ``num_classes`` classes.
        sigma: Noise standard deviation σ > 0, in pixel units.
        num_classes: Number of classes (≥ 2) the model's logits cover.
    """

    PAPER = PAPER

    def __init__(self, model: nn.Module, sigma: float, num_classes: int) -> None:
        if not callable(model):
            raise TypeError(f"model: expected a torch model (callable), got {type(model).__name__}")
        self.sigma = check_nonneg("sigma", sigma)
        if self.sigma == 0 or math.isinf(self.sigma):
            raise ValueError(f"sigma: expected a finite number > 0, got {sigma}")
        self.num_classes = check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes}")
        self.model = model

    def sample_counts(
        self, x: torch.Tensor, n: int, *, batch_size: int = 1000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """How often f(x + δ) predicts each class over ``n`` noise draws per image: int64 N×num_classes."""
        x = _check_images(x)
        check_positive_int("n", n)
        check_positive_int("batch_size", batch_size)
        net = attack_view(self.model, x)
        counts = torch.zeros(len(x) * self.num_classes, dtype=torch.long, device=x.device)
        total = len(x) * n
        with torch.no_grad():
            for start in range(0, total, batch_size):
                rows = torch.arange(start, min(start + batch_size, total), device=x.device)
                image = rows // n
                noisy = x[image] + self.sigma * self._noise(len(rows), x, generator)
                pred = self._classes(net(noisy), len(rows))
                counts.index_add_(0, image * self.num_classes + pred, torch.ones_like(pred))
        return counts.view(len(x), self.num_classes)

    def _noise(self, rows: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``rows`` draws of N(0, I) shaped like one image, each from a 16-aligned row of the stream."""
        d = x[0].numel()
        width = -(-d // 16) * 16
        z = draw(torch.randn, rows, width, generator=generator, dtype=x.dtype)[:, :d]
        return z.reshape(rows, *x.shape[1:]).to(x.device)

    def _classes(self, logits: Any, rows: int) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (rows, self.num_classes):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"model: expected logits of shape ({rows}, {self.num_classes}), got {shape}")
        return logits.argmax(1)

    def predict(
        self, x: torch.Tensor, n: int = 1000, alpha: float = 0.001, *, batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PREDICT: the top class of ``n`` noisy draws, or −1 (abstain) unless a binomial test rejects.

        The top two counts n_A, n_B are tested two-sided against p = 1/2 on n_A + n_B trials;
        the class is returned when the p-value is ≤ α (then it is g(x) with probability ≥ 1 − α).
        """
        a = _check_alpha(alpha)
        counts = self.sample_counts(x, n, batch_size=batch_size, generator=generator)
        top = counts.topk(2, dim=1)
        n_a, n_b = top.values[:, 0].cpu(), top.values[:, 1].cpu()
        p = binom_test_half(n_a, n_a + n_b)
        return torch.where(p <= a, top.indices[:, 0].cpu(), torch.full_like(n_a, ABSTAIN)).to(x.device)

    def certify(
        self, x: torch.Tensor, n0: int = 100, n: int = 10_000, alpha: float = 0.001, *, batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY: the class selected with ``n0`` draws, certified with ``n`` fresh ones.

        Returns:
            ``(pred, radius)``: int64 classes (−1 where p̲_A ≤ 1/2: abstain) and float32 L2 radii
            σ·Φ⁻¹(p̲_A) (0 where abstaining), p̲_A the one-sided 1 − α Clopper–Pearson lower bound.
        """
        a = _check_alpha(alpha)
        check_positive_int("n0", n0)
        guess = self.sample_counts(x, n0, batch_size=batch_size, generator=generator).argmax(1)
        counts = self.sample_counts(x, n, batch_size=batch_size, generator=generator)
        n_a = counts.gather(1, guess[:, None])[:, 0].cpu()
        p_a = clopper_pearson_lower(n_a, n, a)
        ok = p_a > 0.5
        radius = torch.where(ok, self.sigma * normal_ppf(p_a.clamp(min=0.5)), torch.zeros_like(p_a))
        pred = torch.where(ok, guess.cpu(), torch.full_like(guess.cpu(), ABSTAIN))
        return pred.to(x.device), radius.float().to(x.device)


def certified_accuracy(
    pred: torch.Tensor, radius: torch.Tensor, y: torch.Tensor, radii: Sequence[float]
) -> list[float]:
    """Fraction of examples classified correctly (not abstaining) with a certified radius ≥ r, per r.

    Args:
        pred: int64 predictions (−1 = abstain), shape N.
        radius: Certified radii, shape N.
        y: True labels, shape N.
        radii: The radii r to report.

    Returns:
        One fraction per entry of ``radii``.
    """
    if not (isinstance(pred, torch.Tensor) and isinstance(radius, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError("pred, radius, y: expected tensors")
    if not (pred.dim() == 1 and pred.shape == radius.shape == y.shape and len(y) > 0):
        raise ValueError(f"pred, radius, y: expected three non-empty vectors of one length, got shapes "
                         f"{tuple(pred.shape)}, {tuple(radius.shape)}, {tuple(y.shape)}")
    correct = pred.cpu() == y.cpu()
    out = []
    for r in radii:
        check_nonneg("radii", r)
        out.append(float((correct & (radius.cpu() >= r)).double().mean()))
    return out
