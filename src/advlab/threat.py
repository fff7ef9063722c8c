"""The threat model: norm, budget, input bounds and targeting, with distance and projection.

Every attack projects and clips through :class:`ThreatModel`; nothing else in advlab
implements a projection. Perturbation norms are computed per example over all of its
elements (for images, L0 counts changed elements: pixels × channels).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from advlab._checks import check_bounds, check_nonneg, suggest
from advlab._deprecation import caller_level
from advlab._device import rng_device

Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[Norm, ...] = get_args(Norm)

_BISECT_STEPS = 40

# The peers' spellings of the norms (torchattacks' "Linf"/"L2", ART's and CleverHans' np.inf/2/1, "inf").
_NORM_WORDS = {"inf": "linf", "l_inf": "linf", "l-inf": "linf", "linfinity": "linf", "l_2": "l2", "l_1": "l1",
               "l_0": "l0"}
_NORM_NUMBERS = {math.inf: "linf", 2.0: "l2", 1.0: "l1", 0.0: "l0"}


def canonical_norm(norm: object, arg: str = "norm") -> Norm:
    """The norm as advlab names it, from any of its peers' spellings; anything else fails in one line.

    Example:
        >>> [canonical_norm(v) for v in ("Linf", "L2", float("inf"), 1)]
        ['linf', 'l2', 'linf', 'l1']
    """
    if isinstance(norm, str):
        key: object = _NORM_WORDS.get(norm.strip().lower(), norm.strip().lower())
    elif isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        key = _NORM_NUMBERS.get(float(norm), norm)
    else:
        key = norm
    if key not in NORMS:
        raise ValueError(f"{arg}: expected one of {', '.join(map(repr, NORMS))} (or 'Linf', 'L2', np.inf, 2, 1, 0), "
                         f"got {norm!r}{suggest(str(key), NORMS)}")
    return key


def per_row(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector (N) shaped to broadcast against ``like`` (N×…)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def distance(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example distance between ``x`` and ``x_adv`` in ``norm`` (shape N)."""
    norm = canonical_norm(norm)
    d = (x_adv - x).flatten(1)
    if norm == "linf":
        return d.abs().amax(dim=1)
    if norm == "l2":
        l2: torch.Tensor = d.norm(p=2, dim=1)
        return l2
    if norm == "l1":
        return d.abs().sum(dim=1)
    return (d != 0).sum(dim=1).to(x.dtype)


def _lower_upper(x: torch.Tensor, bounds: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Box for the perturbation d = x_adv - x, flattened per example (contains 0)."""
    lo, hi = bounds
    xf = x.flatten(1)
    return lo - xf, hi - xf


def _bisect_scale(
    fn: object, target: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """Find per-example t in [lo, hi] with fn(t) <= target, fn decreasing; returns feasible t."""
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        too_big = fn(mid) > target  # type: ignore[operator]
        lo = torch.where(too_big, mid, lo)
        hi = torch.where(too_big, hi, mid)
    return hi


def project_l1(d: torch.Tensor, eps: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean projection of flat ``d`` onto {‖d‖₁ ≤ eps} ∩ [low, high] (0 ∈ box).

    The solution is soft-thresholding by a per-example λ ≥ 0 followed by clipping to the box;
    λ is found by bisection on the (monotone, piecewise-linear) L1 norm of that map.
    """
    box = torch.where(d >= 0, high, -low)  # largest allowed |d_i| in the direction of d_i
    mag = d.abs()

    def norm_at(lam: torch.Tensor) -> torch.Tensor:
        return torch.minimum((mag - lam[:, None]).clamp_min(0), box).sum(dim=1)

    clipped = d.clamp(low, high)
    inside = clipped.abs().sum(dim=1) <= eps
    if bool(inside.all()):
        return clipped
    zero = torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)
    lam = _bisect_scale(norm_at, torch.full_like(zero, eps), zero, mag.amax(dim=1))
    out = d.sign() * torch.minimum((mag - lam[:, None]).clamp_min(0), box)
    return torch.where(inside[:, None], clipped, out)


def project_l2(d: torch.Tensor, eps: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean projection of flat ``d`` onto {‖d‖₂ ≤ eps} ∩ [low, high] (0 ∈ box).

    By the KKT conditions the solution is clip(d / (1 + μ), low, high) for one μ ≥ 0 per
    example; μ is found by bisection on the scale s = 1 / (1 + μ) ∈ [0, 1].
    """
    clipped = d.clamp(low, high)
    inside = clipped.norm(dim=1) <= eps
    if bool(inside.all()):
        return clipped

    def norm_at(s: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = (d * s[:, None]).clamp(low, high).norm(dim=1)
        return out

    # norm_at is increasing in s; bisect on t = 1 - s so the helper sees a decreasing function.
    zero = torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)
    t = _bisect_scale(lambda t: norm_at(1 - t), torch.full_like(zero, eps), zero, zero + 1)
    out = (d * (1 - t)[:, None]).clamp(low, high)
    return torch.where(inside[:, None], clipped, out)


def project_l0(d: torch.Tensor, k: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Exact projection of flat ``d`` onto {at most k non-zeros} ∩ [low, high] (0 ∈ box)."""
    clipped = d.clamp(low, high)
    if k >= d.shape[1]:
        return clipped
    if k <= 0:
        return torch.zeros_like(d)
    gain = d.square() - (d - clipped).square()  # saving in squared error from keeping entry i
    idx = gain.topk(k, dim=1).indices
    mask = torch.zeros_like(d, dtype=torch.bool).scatter_(1, idx, True)
    return torch.where(mask, clipped, torch.zeros_like(d))


def project_balls(d: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of flat ``d`` (N×D) onto per-example balls {‖d_i‖ ≤ eps_i} (no box).

    For attacks whose radius differs per example and changes every step (FMN). Exact for each
    norm: L∞ clamps, L2 rescales, L1 soft-thresholds by the θ of Duchi et al. 2008 (from the
    largest magnitudes only), L0 keeps the ⌊eps_i⌋ entries of largest magnitude (``topk``). Clipping the
    result into the input bounds afterwards keeps it inside the ball: clipping x + d into a box
    that contains x never makes any |d_j| larger.
    """
    norm = canonical_norm(norm)
    r = eps.to(d.dtype)[:, None]
    if norm == "linf":
        return torch.maximum(torch.minimum(d, r), -r)
    if norm == "l2":
        length: torch.Tensor = d.norm(dim=1, keepdim=True)
        return d * (r / length.clamp_min(1e-12)).clamp_max(1.0)
    mag = d.abs()
    if norm == "l0":
        k = r.floor().clamp_max(d.shape[1])
        trim = (mag > 0).sum(dim=1, keepdim=True) > k
        if not bool(trim.any()):
            return d
        kmax = int(k[trim].max())
        idx = mag.topk(kmax, dim=1).indices  # only as many as the largest budget needs, not a full sort
        keep = torch.zeros_like(d, dtype=torch.bool).scatter_(
            1, idx, torch.arange(kmax, device=d.device).expand_as(idx) < k)
        return torch.where(keep | ~trim, d, torch.zeros_like(d))
    outside = mag.sum(dim=1, keepdim=True) > r
    if not bool(outside.any()):
        return d
    theta = _l1_threshold(mag, r, outside)
    return torch.where(outside, d.sign() * (mag - theta).clamp_min(0), d)


def _l1_threshold(mag: torch.Tensor, r: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """θ ≥ 0 with Σ max(|d_j| − θ, 0) = r per row (rows ``outside`` the ball; Duchi et al. 2008).

    With the magnitudes sorted in decreasing order μ₁ ≥ μ₂ ≥ …, θ = (μ₁ + … + μ_ρ − r)/ρ where ρ is
    the last j with μ_j > (μ₁ + … + μ_j − r)/j, a condition that holds exactly for j ≤ ρ. So the
    k largest magnitudes suffice while ρ < k: start with k = 64 and grow k only if some row needs it.
    """
    dim, k = mag.shape[1], min(mag.shape[1], 64)
    while True:
        srt = mag.topk(k, dim=1).values
        csum = srt.cumsum(dim=1)
        j = torch.arange(1, k + 1, device=mag.device, dtype=mag.dtype)
        rho = ((srt - (csum - r) / j) > 0).sum(dim=1, keepdim=True).clamp_min(1)
        if k == dim or not bool((outside & (rho == k)).any()):
            return ((csum.gather(1, rho - 1) - r) / rho.to(mag.dtype)).clamp_min(0)
        k = min(dim, 4 * k)


class BudgetBeyondBounds(UserWarning):
    """An L∞ budget larger than the bounds' range: the ball holds every valid input (often ε in 0–255 units)."""


@dataclass(frozen=True)
class ThreatModel:
    """What the attacker may do: a norm, a budget ε, input bounds and whether it is targeted.

    Args:
        norm: One of ``"linf"``, ``"l2"``, ``"l1"``, ``"l0"``. For ``"l0"`` the budget is the
            number of input elements that may change.
        eps: The budget ε ≥ 0 (``float("inf")`` for unbounded, minimal-perturbation attacks).
        bounds: The valid input range (lo, hi); x_adv always lies inside it.
        targeted: Whether the attack aims at given target classes instead of any wrong class.

    Example:
        >>> import torch
        >>> tm = ThreatModel("linf", 0.1)
        >>> x = torch.full((2, 1, 2, 2), 0.95)
        >>> tm.project(x, x + 0.5).max().item()
        1.0
        >>> tm.distance(x, tm.project(x, x - 0.5)).tolist()
        [0.10000002384185791, 0.10000002384185791]
    """

    norm: Norm
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)
    targeted: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        object.__setattr__(self, "eps", check_nonneg("eps", self.eps))
        object.__setattr__(self, "bounds", check_bounds("bounds", self.bounds))
        span = self.bounds[1] - self.bounds[0]
        if self.norm == "linf" and span < self.eps < math.inf:
            hint = "; a budget in 0–255 units? On [0, 1] images write it /255, e.g. 8/255" if span == 1 else ""
            warnings.warn(f"advlab: eps {self.eps:g} is beyond the bounds' range for linf ({span:g}): every input "
                          f"in the bounds is within reach{hint}", BudgetBeyondBounds, stacklevel=caller_level())

    @property
    def bounded(self) -> bool:
        """Whether ε is finite (a fixed-budget threat model)."""
        return self.eps != float("inf")

    def with_eps(self, eps: float) -> ThreatModel:
        """A copy with another budget."""
        return ThreatModel(self.norm, eps, self.bounds, self.targeted)

    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-example distance in this threat model's norm."""
        return distance(x, x_adv, self.norm)

    def clip(self, x_adv: torch.Tensor) -> torch.Tensor:
        """Clip to the input bounds only."""
        return x_adv.clamp(*self.bounds)

    def linf_interval(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For L∞, the per-element interval [max(x − ε, lo), min(x + ε, hi)] the ε-ball ∩ bounds is.

        Clamping into it is :meth:`project`; an iterative attack computes it once and clamps each
        step (``torch.max(torch.min(x_adv, upper), lower)``) instead of re-deriving it.
        """
        if self.norm != "linf":
            raise ValueError(f"linf_interval: the ball is a per-element interval only for linf, not {self.norm!r}")
        return (x - self.eps).clamp_min(self.bounds[0]), (x + self.eps).clamp_max(self.bounds[1])

    def project(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Exact Euclidean projection of ``x_adv`` onto the ε-ball around ``x`` ∩ the bounds.

        For L0 it keeps the ⌊ε⌋ changes that reduce squared error the most.
        """
        if not self.bounded:
            return self.clip(x_adv)
        low, high = _lower_upper(x, self.bounds)
        d = (x_adv - x).flatten(1)
        if self.norm == "linf":
            d = d.clamp(-self.eps, self.eps).clamp(low, high)
        elif self.norm == "l2":
            d = project_l2(d, self.eps, low, high)
        elif self.norm == "l1":
            d = project_l1(d, self.eps, low, high)
        else:
            d = project_l0(d, int(self.eps), low, high)
        # x + d is inside the bounds mathematically; clamp guards against float rounding.
        return (x + d.view_as(x)).clamp(*self.bounds)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random point of the ε-ball around ``x`` ∩ the bounds (uniform in the ball, then clipped).

        Draws on the generator's device (the CPU for ``None``) and moves to ``x.device``, so results do not depend
        on the device's random stream.
        """
        if not self.bounded:
            raise ValueError("random_init: needs a finite eps, got inf")
        n, dim, dev = x.shape[0], x[0].numel(), rng_device(generator)
        if self.norm == "linf":
            d = (torch.rand(n, dim, generator=generator, device=dev) * 2 - 1) * self.eps
        elif self.norm == "l2":
            g = torch.randn(n, dim, generator=generator, device=dev)
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            r = torch.rand(n, 1, generator=generator, device=dev) ** (1.0 / dim)
            d = g * r * self.eps
        elif self.norm == "l1":
            # Uniform in the L1 ball: exponential spacings with one slack coordinate.
            e = -torch.log(torch.rand(n, dim + 1, generator=generator, device=dev).clamp_min(1e-12))
            sign = torch.randint(0, 2, (n, dim), generator=generator, device=dev) * 2 - 1
            d = sign * e[:, :dim] / e.sum(dim=1, keepdim=True) * self.eps
        else:
            k = min(int(self.eps), dim)
            order = torch.rand(n, dim, generator=generator, device=dev).argsort(dim=1)
            mask = torch.zeros(n, dim, dtype=torch.bool, device=dev).scatter_(1, order[:, :k], True)
            lo, hi = self.bounds
            vals = torch.rand(n, dim, generator=generator, device=dev) * (hi - lo) + lo
            d = torch.where(mask, vals - x.detach().to(dev).flatten(1), torch.zeros(n, dim, device=dev))
        d = d.to(device=x.device, dtype=x.dtype)
        return self.project(x, x + d.view_as(x))
