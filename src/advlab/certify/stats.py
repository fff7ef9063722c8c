"""Binomial statistics for randomized smoothing: Clopper–Pearson bounds and the two-sided binomial test.

All functions are vectorised over tensors of counts (int64) and return float64 tensors; the
distributions are scipy's (``scipy.stats.beta``, ``scipy.stats.binom``), so counts on any device
are read on the CPU and the results are CPU tensors (callers move them to their data's device).

* Clopper & Pearson 1934, The use of confidence or fiducial limits illustrated in the case of the
  binomial, Biometrika 26(4): the exact ("beta") interval. The one-sided lower bound at level
  1 − α of a success probability, from k successes in n trials, is the α-quantile of
  Beta(k, n − k + 1) (0 when k = 0); the two-sided 1 − α interval takes α/2 on each side.
* Cohen, Rosenfeld, Kolter 2019 (https://arxiv.org/abs/1902.02918): CERTIFY's p̲_A is that one-sided
  lower bound; PREDICT abstains unless a two-sided binomial test of n_A against n_A + n_B trials at
  p = 1/2 rejects at level α.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

PAPER = "Clopper & Pearson 1934, The use of confidence or fiducial limits illustrated in the case of the binomial"


def _counts(k: torch.Tensor | int, n: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, n)`` as broadcast int64 tensors, checked: 0 ≤ k ≤ n."""
    kt = torch.as_tensor(k, device="cpu")  # scipy reads them: on the CPU, whatever the default device
    nt = torch.as_tensor(n, device="cpu")
    if kt.is_floating_point() or nt.is_floating_point():
        raise TypeError("k, n: expected integer counts, got floating-point values")
    shape = torch.broadcast_shapes(kt.shape, nt.shape)  # type: ignore[no-untyped-call]
    kt, nt = kt.long().expand(shape), nt.long().expand(shape)
    if bool((kt < 0).any()) or bool((kt > nt).any()):
        raise ValueError("k, n: expected 0 <= k <= n for every count")
    return kt, nt


def _alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    return float(alpha)


def clopper_pearson_lower(k: torch.Tensor | int, n: torch.Tensor | int, alpha: float) -> torch.Tensor:
    """One-sided lower confidence bound at level 1 − α on a binomial proportion (Clopper–Pearson).

    Args:
        k: Successes (int tensor or int), 0 ≤ k ≤ n.
        n: Trials, broadcast against ``k``.
        alpha: Miscoverage, 0 < α < 1: P(p < bound) ≤ α.

    Returns:
        float64 tensor of bounds: Beta(k, n − k + 1)'s α-quantile, 0 where k = 0.
    """
    kt, nt = _counts(k, n)
    a = _alpha(alpha)
    kk, nn_ = kt.double().numpy(), nt.double().numpy()
    out = torch.from_numpy(np.asarray(stats.beta.ppf(a, kk, nn_ - kk + 1), dtype=np.float64))
    return torch.where(kt == 0, torch.zeros_like(out), out)


def clopper_pearson_upper(k: torch.Tensor | int, n: torch.Tensor | int, alpha: float) -> torch.Tensor:
    """One-sided upper confidence bound at level 1 − α (Clopper–Pearson); 1 where k = n."""
    kt, nt = _counts(k, n)
    a = _alpha(alpha)
    kk, nn_ = kt.double().numpy(), nt.double().numpy()
    out = torch.from_numpy(np.asarray(stats.beta.ppf(1 - a, kk + 1, nn_ - kk), dtype=np.float64))
    return torch.where(kt == nt, torch.ones_like(out), out)


def clopper_pearson(
    k: torch.Tensor | int, n: torch.Tensor | int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-sided 1 − α Clopper–Pearson interval: the one-sided bounds at α/2 each."""
    a = _alpha(alpha)
    return clopper_pearson_lower(k, n, a / 2), clopper_pearson_upper(k, n, a / 2)


def binom_test_half(k: torch.Tensor | int, n: torch.Tensor | int) -> torch.Tensor:
    """Two-sided p-value of k successes in n trials against p = 1/2 (1 where n = 0).

    For p = 1/2 the distribution is symmetric, so the p-value (the probability of an outcome at
    most as likely as k) is min(1, 2·P(X ≤ min(k, n − k))): the value of ``scipy.stats.binomtest``.
    """
    kt, nt = _counts(k, n)
    low = torch.minimum(kt, nt - kt).double().numpy()
    p = 2 * stats.binom.cdf(low, nt.double().numpy(), 0.5)
    return torch.from_numpy(np.asarray(p, dtype=np.float64)).clamp(max=1.0)


def normal_ppf(p: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹, the standard normal quantile, in float64 (torch.special.ndtri)."""
    out: torch.Tensor = torch.special.ndtri(p.double())
    return out
