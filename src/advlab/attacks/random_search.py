"""Square Attack: a score-based black-box attack by random square-shaped updates.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020, https://arxiv.org/abs/1912.00049.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from advlab._checks import Fraction, PositiveInt, Range
from advlab._device import draw
from advlab.attacks.registry import AttackResult, register_attack
from advlab.models.blackbox import QuerySession, as_blackbox
from advlab.threat import ThreatModel

PAPER = (
    "Andriushchenko, Croce, Flammarion, Hein 2020, Square Attack: a query-efficient black-box "
    "adversarial attack via random search, https://arxiv.org/abs/1912.00049"
)

# Iterations (on the paper's 10 000-query scale) after which the square's area fraction halves.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, it: int, max_queries: int) -> float:
    """The schedule of the fraction ``p`` of pixels a square covers at iteration ``it``.

    ``p`` starts at ``p_init`` and halves at fixed points of the run, rescaled from the paper's
    10 000-query schedule to ``max_queries``.
    """
    scaled = int(it / max(max_queries, 1) * 10000)
    halvings = sum(scaled > t for t in _HALVINGS)
    return float(p_init / 2**halvings)


def _margin(scores: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-example margin to minimise: < 0 means the attack succeeded."""
    other = scores.clone()
    if target is None:
        true = scores.gather(1, y[:, None]).squeeze(1)
        other.scatter_(1, y[:, None], float("-inf"))
        return true - other.amax(dim=1)
    tgt = scores.gather(1, target[:, None]).squeeze(1)
    other.scatter_(1, target[:, None], float("-inf"))
    return other.amax(dim=1) - tgt


def _window_mask(
    top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int, device: torch.device
) -> torch.Tensor:
    """Boolean masks N×1×h×w of the s×s squares whose top-left corners are (top, left)."""
    rows = torch.arange(h, device=device)[None, :] - top.to(device)[:, None]
    cols = torch.arange(w, device=device)[None, :] - left.to(device)[:, None]
    r_in = (rows >= 0) & (rows < s)
    c_in = (cols >= 0) & (cols < s)
    return (r_in[:, :, None] & c_in[:, None, :])[:, None]


def _place(
    pattern: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Put per-example s×s patterns (N×s×s) at (top, left) of a zero N×1×h×w canvas."""
    s = pattern.shape[-1]
    dev = pattern.device
    rows = torch.arange(h, device=dev)[None, :] - top.to(dev)[:, None]
    cols = torch.arange(w, device=dev)[None, :] - left.to(dev)[:, None]
    inside = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    n = pattern.shape[0]
    vals = pattern[
        torch.arange(n, device=dev)[:, None, None],
        rows.clamp(0, s - 1)[:, :, None],
        cols.clamp(0, s - 1)[:, None, :],
    ]
    return (vals * inside)[:, None]


def _rings(a: int, b: int) -> torch.Tensor:
    """An a×b bump: concentric rectangles around the centre with weights Σ_{r≥ring} 1/(r+1)²."""
    ci, cj = a // 2, b // 2
    ring = torch.maximum(
        (torch.arange(a, device="cpu")[:, None] - ci).abs(), (torch.arange(b, device="cpu")[None, :] - cj).abs()
    )
    top = max(a, b)
    tail = torch.tensor([sum(1.0 / (r + 1) ** 2 for r in range(k, top)) for k in range(top)], device="cpu")
    bump = tail[ring]
    unit: torch.Tensor = bump / bump.norm()
    return unit


def pseudo_gaussian(s: int) -> torch.Tensor:
    """The L2 Square Attack's s×s update: two stacked bumps of opposite sign, unit L2 norm (on the CPU)."""
    half = s // 2
    out = torch.cat([_rings(half, s), -_rings(s - half, s)]) if half > 0 else _rings(s, s)
    unit: torch.Tensor = out / out.norm()
    return unit


def _signs(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return draw(torch.randint, 0, 2, shape, generator=generator).float() * 2 - 1


def _corners(
    n: int, s: int, h: int, w: int, g: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    top = draw(torch.randint, 0, h - s + 1, (n,), generator=g)
    return top, draw(torch.randint, 0, w - s + 1, (n,), generator=g)


def _init_linf(x: torch.Tensor, threat: ThreatModel, g: torch.Generator | None) -> torch.Tensor:
    """Vertical stripes of ±ε (one sign per column and channel)."""
    n, c, _, w = x.shape
    stripes = _signs((n, c, 1, w), g).to(x) * threat.eps
    return threat.project(x, x + stripes)


def _init_l2(x: torch.Tensor, threat: ThreatModel, g: torch.Generator | None) -> torch.Tensor:
    """A grid of pseudo-Gaussian bumps with random signs, scaled to norm ε."""
    n, c, h, w = x.shape
    s = max(min(h, w) // 5, 1)
    bump = pseudo_gaussian(s)
    delta = torch.zeros(n, c, h, w, device="cpu")  # built beside the CPU draws, then moved
    top0, left0 = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
    for i in range(h // s):
        for j in range(w // s):
            r, q = top0 + i * s, left0 + j * s
            delta[:, :, r : r + s, q : q + s] += bump * _signs((n, c, 1, 1), g).to(delta)
    delta = delta.to(x)
    delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None] * threat.eps
    return threat.project(x, x + delta)


def _propose_linf(
    xa: torch.Tensor, best: torch.Tensor, threat: ThreatModel, p: float, g: torch.Generator | None
) -> torch.Tensor:
    """Set one random square per example to x ± ε (one sign per channel)."""
    n, c, h, w = xa.shape
    s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1) if min(h, w) > 1 else 1
    top, left = _corners(n, s, h, w, g)
    mask = _window_mask(top, left, s, h, w, xa.device)
    vals = _signs((n, c, 1, 1), g).to(xa) * threat.eps
    # ``best`` is inside the ball; the square's x ± ε is too, once clipped to the bounds.
    lo, hi = threat.bounds
    new = torch.where(mask, (xa + vals).clamp_(lo, hi), best)
    # A square that changes nothing wastes a query: flip its sign instead.
    same = (new == best).flatten(1).all(dim=1)
    if bool(same.any()):
        flipped = torch.where(mask, (xa - vals).clamp_(lo, hi), best)
        new = torch.where(same[:, None, None, None], flipped, new)
    return new


def _propose_l2(
    xa: torch.Tensor, best: torch.Tensor, threat: ThreatModel, p: float, g: torch.Generator | None
) -> torch.Tensor:
    """Move perturbation mass from a random square into another, adding a fresh bump there."""
    n, c, h, w = xa.shape
    s = max(round(math.sqrt(p * h * w)), 3)
    s += 1 - s % 2  # odd, so the bump has a centre
    s = max(min(s, min(h, w) // 2), 1)
    dev = xa.device
    delta = best - xa
    top1, left1 = _corners(n, s, h, w, g)
    m1 = _window_mask(top1, left1, s, h, w, dev)
    # A second square disjoint from the first (resampled where they overlap).
    top2, left2 = _corners(n, s, h, w, g)
    for _ in range(50):
        overlap = ((top2 - top1).abs() < s) & ((left2 - left1).abs() < s)
        if not bool(overlap.any()):
            break
        t2, l2 = _corners(n, s, h, w, g)
        top2, left2 = torch.where(overlap, t2, top2), torch.where(overlap, l2, left2)
    overlap = (((top2 - top1).abs() < s) & ((left2 - left1).abs() < s)).to(dev)
    m2 = _window_mask(top2, left2, s, h, w, dev) & ~overlap[:, None, None, None]
    union = m1 | m2

    def chan_norm(t: torch.Tensor) -> torch.Tensor:
        return t.square().sum(dim=(2, 3), keepdim=True).sqrt()

    norm_w1 = chan_norm(delta * m1)
    norm_union = chan_norm(delta * union)
    spare = (threat.eps**2 - delta.flatten(1).square().sum(dim=1)).clamp_min(0) / c
    bump = pseudo_gaussian(s).to(xa)
    flip = draw(torch.rand, n, generator=g, device=dev) < 0.5
    patterns = torch.where(flip[:, None, None], bump.T, bump)
    fresh = _place(patterns, top1, left1, h, w) * _signs((n, c, 1, 1), g).to(xa)
    new_w1 = fresh + delta * m1 / (norm_w1 + 1e-10)
    new_w1 = new_w1 / chan_norm(new_w1).clamp_min(1e-12)
    new_w1 = new_w1 * (spare[:, None, None, None] + norm_union.square()).sqrt()
    new_delta = torch.where(union, torch.zeros_like(delta), delta) + new_w1 * m1
    scale = threat.eps / new_delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return threat.project(xa, xa + new_delta * scale[:, None, None, None])


@register_attack("square", kind="score-based", norms=("linf", "l2"), targeted=True, needs_grad=False, paper=PAPER)
def square(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_queries: Annotated[int, Range(2)] = 5000,
    p_init: Fraction | None = None,
    restarts: PositiveInt = 1,
) -> AttackResult:
    """Square Attack: random search over square-shaped updates at the ε-ball's surface.

    Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049. Norms: L∞ (squares set to
    x ± ε) and L2 (pseudo-Gaussian bumps, mass moved between two squares). Targeted or
    untargeted. Black-box, score-based: needs only scores (logits or probabilities) from a
    :class:`~advlab.models.blackbox.BlackBox` or a torch model, never gradients. Cost: one query
    for the clean input, one for the initialisation, then one per iteration per example still not
    fooled, at most ``max_queries`` per example; an example stops as soon as it is fooled.

    Args:
        model: A torch model (logits) or a :class:`~advlab.models.blackbox.BlackBox` with scores.
        x: Clean batch N×C×H×W inside ``threat.bounds``.
        y: True labels.
        threat: L∞ or L2 threat model with finite ε.
        target: Target labels when ``threat.targeted``.
        generator: Source of randomness (drawn on the CPU).
        max_queries: Per-example query budget (≥ 2).
        p_init: Initial fraction of pixels changed by a square (default 0.05 for L∞, 0.1 for L2).
        restarts: Runs from a new initialisation on the examples still not fooled, each with
            ``max_queries`` queries (AutoAttack's ``n_restarts``); the queries add up.

    Returns:
        ``AttackResult`` with the best point found per example and its query count.
    """
    if x.dim() != 4:
        raise ValueError(f"x: square needs images N×C×H×W, got shape {tuple(x.shape)}")
    if p_init is None:
        p_init = 0.05 if threat.norm == "linf" else 0.1
    x, box = x.detach(), as_blackbox(model)
    y, target = y.to(x.device), None if target is None else target.to(x.device)
    # success and queries are host-side bookkeeping beside the (CPU) query session; returned on x.device
    best, success = x.clone(), torch.zeros(len(x), dtype=torch.bool, device="cpu")
    queries = torch.zeros(len(x), dtype=torch.int64, device="cpu")
    for r in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        session: QuerySession = box.session(len(todo), max_queries)
        on = todo.to(x.device)
        xs, ys, ts = x[on], y[on], _sub(target, on)
        found, margin = _start(session, xs, ys, ts, threat, generator)
        _search(session, xs, ys, ts, threat, found, margin, p_init, max_queries, generator)
        queries[todo] += session.queries.to(torch.int64)
        better = (margin < 0).cpu()
        keep = torch.ones_like(better) if r == 0 else better  # a later restart's point replaces only a success
        best[todo[keep].to(x.device)] = found[keep.to(x.device)]
        success[todo[better]] = True
    return AttackResult(best, success.to(x.device), queries.to(x.device))


def _start(session: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
           threat: ThreatModel, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Query the clean batch, then the initialisation (stripes or bumps) where it is not yet fooled."""
    margin = _margin(session.scores(x), y, target)
    best = x.clone()
    done = margin < 0
    if not bool(done.all()):
        init_fn = _init_linf if threat.norm == "linf" else _init_l2
        init = init_fn(x, threat, generator)
        todo = (~done).nonzero().squeeze(1)
        m_init = _margin(session.scores(init[todo], todo), y[todo], _sub(target, todo))
        best[todo] = init[todo]
        margin[todo] = m_init
    return best, margin


def _search(session: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
            threat: ThreatModel, best: torch.Tensor, margin: torch.Tensor, p_init: float, max_queries: int,
            generator: torch.Generator | None) -> None:
    """Random search, in place on ``best`` and ``margin``, until fooled or out of queries.

    The examples still searching are kept as compact tensors; they are written back and
    re-gathered only when the set shrinks (an example fooled or out of queries).
    """
    propose = _propose_linf if threat.norm == "linf" else _propose_l2
    it = 0
    a = ((margin >= 0).cpu() & (session.remaining > 0)).nonzero().squeeze(1)
    while len(a):
        ad = a.to(x.device)
        xs, bs, ms, ys, ts = x[ad], best[ad], margin[ad], y[ad], _sub(target, ad)
        while True:
            cand = propose(xs, bs, threat, square_fraction(p_init, it, max_queries), generator)
            m_new = _margin(session.scores(cand, a), ys, ts)
            it += 1
            better = m_new < ms
            bs = torch.where(better[:, None, None, None], cand, bs)
            ms = torch.where(better, m_new, ms)
            left = (ms >= 0).cpu() & (session.remaining[a] > 0)
            if not bool(left.all()):
                break
        best[ad], margin[ad] = bs, ms
        a = a[left]


def _sub(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[idx]


__all__ = ["pseudo_gaussian", "square", "square_fraction"]
