"""HopSkipJump: a decision-based (labels-only) minimal-perturbation attack.

Chen, Jordan and Wainwright, "HopSkipJumpAttack: a query-efficient decision-based attack",
IEEE S&P 2020, https://arxiv.org/abs/1904.02144.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from advlab._checks import NonNegInt, PositiveFloat, PositiveInt
from advlab._device import draw
from advlab.attacks.registry import AttackResult, register_attack
from advlab.models.blackbox import QuerySession, as_blackbox
from advlab.threat import ThreatModel

PAPER = (
    "Chen, Jordan, Wainwright 2020, HopSkipJumpAttack: a query-efficient decision-based "
    "attack, https://arxiv.org/abs/1904.02144"
)

_MAX_HALVINGS = 30  # step-size search: at most this many halvings of the step
_ROWS_PER_CALL = 20000  # gradient-estimate rows sent to the model in one call


class _Oracle:
    """The decision function φ(x') ∈ {True, False} on rows of examples, through a session."""

    def __init__(
        self, session: QuerySession, y: torch.Tensor, target: torch.Tensor | None
    ) -> None:
        self.session = session
        self.y = y
        self.target = target

    def __call__(self, xq: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Per-row success of rows ``xq`` belonging to examples ``idx`` (CPU index)."""
        labels = self.session.labels(xq, idx).to(self.y.device)
        idx_d = idx.to(self.y.device)
        if self.target is not None:
            return labels == self.target[idx_d]
        return labels != self.y[idx_d]


def _blend(
    x: torch.Tensor, x_adv: torch.Tensor, alpha: torch.Tensor, norm: str
) -> torch.Tensor:
    """Points between x (alpha = 0) and x_adv: a convex blend (L2) or a clipped box (L∞)."""
    a = alpha.view(-1, *([1] * (x.dim() - 1)))
    if norm == "l2":
        return (1 - a) * x + a * x_adv
    return torch.minimum(torch.maximum(x_adv, x - a), x + a)


def _binary_search(
    oracle: _Oracle,
    idx: torch.Tensor,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    norm: str,
    theta: float,
) -> torch.Tensor:
    """Move each adversarial point ``x_adv`` towards ``x`` onto the decision boundary.

    Bisects the blend factor (L2) or the L∞ radius until the bracket is below the threshold
    (or the example's budget is spent); returns the adversarial end of the bracket.
    """
    dev = x.device
    if norm == "l2":
        high = torch.ones(len(idx), device=dev)
        thresh = torch.full_like(high, theta)
    else:
        high = (x_adv - x).flatten(1).abs().amax(dim=1)
        thresh = torch.clamp(high * theta, max=theta).clamp_min(1e-12)
    low = torch.zeros_like(high)
    while True:
        open_ = ((high - low) > thresh).cpu() & (oracle.session.remaining[idx] > 0)
        if not bool(open_.any()):
            break
        o = open_.nonzero().squeeze(1)
        od = o.to(dev)
        mid = (high[od] + low[od]) / 2
        adv = oracle(_blend(x[od], x_adv[od], mid, norm), idx[o])
        high[od] = torch.where(adv, mid, high[od])
        low[od] = torch.where(adv, low[od], mid)
    return _blend(x, x_adv, high, norm)


def _estimate_direction(
    oracle: _Oracle,
    idx: torch.Tensor,
    xb: torch.Tensor,
    evals: torch.Tensor,
    delta: torch.Tensor,
    norm: str,
    bounds: tuple[float, float],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Monte-Carlo estimate of the boundary's normal at ``xb`` from ±1 decisions.

    Example i uses ``evals[i]`` random unit directions (Gaussian for L2, uniform for L∞),
    with the mean decision subtracted as a baseline.
    """
    n, dev = len(idx), xb.device
    shape = xb.shape[1:]
    dim = xb[0].numel()
    k_max = int(evals.max())
    chunk = max(1, _ROWS_PER_CALL // max(n, 1))
    sum_fr = torch.zeros(n, dim, device=dev)  # Σ f_j r_j
    sum_r = torch.zeros(n, dim, device=dev)  # Σ r_j
    sum_f = torch.zeros(n, device=dev)  # Σ f_j
    evals_d = evals.to(dev)
    for start in range(0, k_max, chunk):
        k = min(chunk, k_max - start)
        if norm == "l2":
            u = draw(torch.randn, n, k, dim, generator=generator)
        else:
            u = draw(torch.rand, n, k, dim, generator=generator) * 2 - 1
        u = (u / u.norm(dim=2, keepdim=True).clamp_min(1e-12)).to(dev)
        valid = (torch.arange(start, start + k, device=dev)[None, :] < evals_d[:, None])
        rows = valid.nonzero()
        if len(rows) == 0:
            break
        ex, j = rows[:, 0], rows[:, 1]
        base = xb.flatten(1)[ex]
        pert = (base + delta[ex, None] * u[ex, j]).clamp(*bounds)
        r = (pert - base) / delta[ex, None]
        dec = oracle(pert.view(-1, *shape), idx[ex.cpu()]).float() * 2 - 1
        sum_fr.index_add_(0, ex, dec[:, None] * r)
        sum_r.index_add_(0, ex, r)
        sum_f.index_add_(0, ex, dec)
    cnt = evals_d.float().clamp_min(1)
    mean_f = sum_f / cnt
    # Baseline: Σ (f_j - mean f) r_j; if every decision agrees, the mean direction signed.
    grad = sum_fr - mean_f[:, None] * sum_r
    unanimous = mean_f.abs() == 1
    grad = torch.where(unanimous[:, None], mean_f[:, None] * sum_r, grad) / cnt[:, None]
    unit: torch.Tensor = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit.view(n, *shape)


@register_attack("hopskipjump", kind="decision-based", norms=("l2", "linf"), targeted=True, budget="minimal",
                 needs_grad=False, paper=PAPER)
def hopskipjump(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_queries: PositiveInt = 5000,
    steps: PositiveInt = 100,
    init_evals: PositiveInt = 100,
    max_evals: PositiveInt = 10000,
    gamma: PositiveFloat = 1.0,
    init_tries: NonNegInt = 100,
    starting_points: torch.Tensor | None = None,
) -> AttackResult:
    """HopSkipJump: walk along the decision boundary using label queries only.

    Chen et al. 2020, https://arxiv.org/abs/1904.02144. Norms: L2 and L∞. Targeted (give
    ``starting_points`` of the target classes, else uniform noise is tried) or untargeted.
    Black-box, decision-based: needs only predicted labels, from a
    :class:`~advlab.models.blackbox.BlackBox` (``output="labels"`` or scores) or a torch model.
    Minimal-perturbation: with ``threat.eps = inf`` it shrinks the perturbation until the budget
    is spent; with a finite ε an example stops as soon as it is within ε, and x_adv is
    projected into the ε-ball (``success`` then means "adversarial within ε"). Cost per
    iteration t and example: a bisection (~log2(1/θ) queries, θ = γ/d^1.5 for L2, γ/d² for
    L∞), min(init_evals·√t, max_evals) queries for the gradient estimate and a few for the
    step size; at most ``max_queries`` per example in all.

    Args:
        model: A torch model or a :class:`~advlab.models.blackbox.BlackBox` (labels suffice).
        x: Clean batch inside ``threat.bounds``.
        y: True labels.
        threat: L2 or L∞ threat model (ε may be inf).
        target: Target labels when ``threat.targeted``.
        generator: Source of randomness (drawn on the CPU).
        max_queries: Per-example query budget.
        steps: Maximum number of iterations.
        init_evals: Gradient-estimate queries at the first iteration (grows as √t).
        max_evals: Cap on gradient-estimate queries per iteration.
        gamma: Bisection tolerance factor γ.
        init_tries: Uniform-noise draws tried per example to find an adversarial start.
        starting_points: Adversarial starting points (same shape as ``x``), optional.

    Returns:
        The closest adversarial point per example (``x``, unsuccessful, where none was found).
    """
    if starting_points is not None and starting_points.shape != x.shape:
        raise ValueError(f"starting_points: expected a tensor of shape {tuple(x.shape)}")
    x = x.detach()
    session = as_blackbox(model).session(x.shape[0], max_queries)
    oracle = _Oracle(session, y.to(x.device), None if target is None else target.to(x.device))
    walk = _Walk(oracle, x, threat, gamma, generator)
    found, clean_adv, x_adv = walk.start(starting_points, init_tries)
    walk.iterate(x_adv, (~found) | clean_adv, steps, init_evals, max_evals)
    success = found & walk.within(threat.distance(x, x_adv)) if threat.bounded else found.clone()
    x_adv = threat.project(x, x_adv) if threat.bounded else x_adv
    x_adv = torch.where(found.view(-1, *([1] * (x.dim() - 1))), x_adv, x)
    return AttackResult(x_adv, success, session.queries.to(x.device, copy=True))


@dataclass
class _Walk:
    """The attack's fixed context: the oracle, the clean batch, the threat model, θ and the generator."""

    oracle: _Oracle
    x: torch.Tensor
    threat: ThreatModel
    gamma: float
    generator: torch.Generator | None

    def __post_init__(self) -> None:
        self.dim = self.x[0].numel()
        d = self.dim
        self.theta = self.gamma / (d * math.sqrt(d)) if self.threat.norm == "l2" else self.gamma / d**2
        self.bisect_cost = math.ceil(math.log2(1 / self.theta)) + 1

    def within(self, d: torch.Tensor) -> torch.Tensor:
        """Whether distances are inside the budget (never, for ε = inf)."""
        return d <= self.threat.eps if self.threat.bounded else torch.zeros_like(d, dtype=torch.bool)

    def start(self, starting_points: torch.Tensor | None, init_tries: int) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """Query the clean points, find an adversarial start per example, bisect it onto the boundary.

        Returns (found, clean_adv, x_adv): which examples have an adversarial point, which were
        misclassified already (x_adv = x, distance 0), and the points.
        """
        x, oracle, session = self.x, self.oracle, self.oracle.session
        dev = x.device
        found = oracle(x, torch.arange(x.shape[0], device="cpu"))  # the session's index (CPU)
        clean_adv = found.clone()  # already misclassified: x_adv = x, distance 0
        x_adv = x.clone()
        tries = [self.threat.clip(starting_points.detach().to(x))] if starting_points is not None else []
        lo, hi = self.threat.bounds
        for k in range(len(tries) + init_tries):
            need = (~found).cpu() & (session.remaining > 0)
            if not bool(need.any()):
                break
            if k < len(tries):
                cand = tries[k]
            else:
                cand = (draw(torch.rand, x.shape, generator=self.generator) * (hi - lo) + lo).to(x)
            i = need.nonzero().squeeze(1)
            idd = i.to(dev)
            ok = oracle(cand[idd], i)
            x_adv[idd[ok]] = cand[idd[ok]]
            found[idd] |= ok
        live = (found & ~clean_adv).cpu()
        if bool(live.any()):  # onto the boundary
            i = live.nonzero().squeeze(1)
            idd = i.to(dev)
            x_adv[idd] = _binary_search(oracle, i, x[idd], x_adv[idd], self.threat.norm, self.theta)
        return found, clean_adv, x_adv

    def iterate(self, x_adv: torch.Tensor, done: torch.Tensor, steps: int, init_evals: int, max_evals: int) -> None:
        """Estimate the boundary normal, step along it, bisect back; in place on ``x_adv``."""
        threat, session, dev = self.threat, self.oracle.session, self.x.device
        d_cur = threat.distance(self.x, x_adv)
        done = done | self.within(d_cur)
        lo, hi = threat.bounds
        for t in range(1, steps + 1):
            budget = session.remaining - self.bisect_cost - 2
            active = (~done).cpu() & (budget > 0)
            if not bool(active.any()):
                break
            i = active.nonzero().squeeze(1)
            idd = i.to(dev)
            xa, xb, d_i = self.x[idd], x_adv[idd], d_cur[idd]
            evals = budget[i].clamp(max=min(int(init_evals * math.sqrt(t)), max_evals))
            if t == 1:
                delta = torch.full_like(d_i, 0.1 * (hi - lo))
            else:
                delta = (math.sqrt(self.dim) if threat.norm == "l2" else self.dim) * self.theta * d_i
            grad = _estimate_direction(self.oracle, i, xb, evals, delta.clamp_min(1e-12), threat.norm, threat.bounds,
                                       self.generator)
            cand, moved = self._jump(i, xa, xb, grad if threat.norm == "l2" else grad.sign(), d_i / math.sqrt(t))
            better = moved & (threat.distance(xa, cand) < d_i)
            x_adv[idd] = torch.where(better.view(-1, *([1] * (self.x.dim() - 1))), cand, xb)
            d_cur[idd] = threat.distance(xa, x_adv[idd])
            done[idd] = self.within(d_cur[idd])

    def _jump(self, i: torch.Tensor, xa: torch.Tensor, xb: torch.Tensor, update: torch.Tensor,
              step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometric step-size search (halve until the step stays adversarial), then bisect back to the boundary."""
        session, dev = self.oracle.session, xb.device
        lo, hi = self.threat.bounds
        cand = xb.clone()
        pending = torch.ones(len(i), dtype=torch.bool, device=dev)
        for _ in range(_MAX_HALVINGS):
            ask = pending.cpu() & (session.remaining[i] > 0)
            if not bool(ask.any()):
                break
            a = ask.nonzero().squeeze(1)
            ad = a.to(dev)
            trial = (xb[ad] + step[ad].view(-1, *([1] * (xb.dim() - 1))) * update[ad]).clamp(lo, hi)
            ok = self.oracle(trial, i[a])
            cand[ad[ok]] = trial[ok]
            pending[ad[ok]] = False
            step[ad[~ok]] /= 2
        moved = ~pending
        if bool(moved.any()):
            m = moved.nonzero().squeeze(1)
            cand[m] = _binary_search(self.oracle, i[m.cpu()], xa[m], cand[m], self.threat.norm, self.theta)
        return cand, moved


__all__ = ["hopskipjump"]
