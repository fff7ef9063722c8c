"""Sparse-RS (L0): a score-based black-box attack by random search over which input elements change.

Croce, Andriushchenko, Singh, Flammarion, Hein 2022, "Sparse-RS: a versatile framework for
query-efficient sparse black-box adversarial attacks", AAAI 2022, https://arxiv.org/abs/2006.12834.

The perturbation is a set M of k = ⌊ε⌋ input elements, each set to a vertex of the box (the lower
or the upper bound). Each iteration swaps a random α·k of them for as many elements outside M,
with fresh random vertices, and keeps the candidate if the loss falls (or the model is fooled).
L0 counts input elements (pixels × channels) as ``ThreatModel`` does, so on images with one
channel (MNIST) an element is a pixel and this is the paper's pixel version; with several
channels each element is chosen on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch

from advlab._checks import Fraction, Range
from advlab._device import draw
from advlab.attacks.losses import Loss, objective
from advlab.attacks.registry import AttackResult, register_attack
from advlab.models.blackbox import QuerySession, as_blackbox
from advlab.threat import ThreatModel

PAPER = (
    "Croce, Andriushchenko, Singh, Flammarion, Hein 2022, Sparse-RS: a versatile framework for "
    "query-efficient sparse black-box adversarial attacks, https://arxiv.org/abs/2006.12834"
)
# Iterations (on the paper's 10 000-query scale) at which α drops, and the divisor of α_init after each.
_STEPS = (0, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_DIVISORS = (1, 2, 4, 5, 6, 8, 10, 12, 15, 20)


def alpha_schedule(p_init: float, it: int, max_queries: int) -> float:
    """The fraction α of the k perturbed elements swapped at iteration ``it`` (≥ 1).

    Sparse-RS's L0 schedule: α_init, then α_init/2 after iteration 0, /4 after 50, /5 after
    200, /6 after 500, /8 after 1000, /10 after 2000, /12 after 4000, /15 after 6000 and /20
    after 8000, on the paper's 10 000-query scale rescaled to ``max_queries``.
    """
    scaled = int(it / max(max_queries, 1) * 10000)
    return p_init / _DIVISORS[sum(scaled > t for t in _STEPS)]


def _margin(scores: torch.Tensor, cls: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-example margin to minimise: < 0 means fooled (``cls``: true labels, or targets when targeted)."""
    own = scores.gather(1, cls[:, None]).squeeze(1)
    other = scores.scatter(1, cls[:, None], float("-inf")).amax(dim=1)
    return other - own if targeted else own - other


class _State:
    """Per example: the k perturbed positions (``inside``), the others (``outside``), their values, the losses."""

    def __init__(self, inside: torch.Tensor, outside: torch.Tensor, vals: torch.Tensor,
                 margin: torch.Tensor, loss: torch.Tensor) -> None:
        self.inside, self.outside, self.vals, self.margin, self.loss = inside, outside, vals, margin, loss

    def take(self, idx: torch.Tensor) -> _State:
        return _State(self.inside[idx], self.outside[idx], self.vals[idx], self.margin[idx], self.loss[idx])

    def put(self, idx: torch.Tensor, other: _State, rows: torch.Tensor | None = None) -> None:
        """Write ``other`` (its ``rows``, default all) into examples ``idx``."""
        sel = slice(None) if rows is None else rows
        for name in ("inside", "outside", "vals", "margin", "loss"):
            getattr(self, name)[idx] = getattr(other, name)[sel]


def _vertices(shape: tuple[int, ...], bounds: tuple[float, float], g: torch.Generator | None,
              like: torch.Tensor) -> torch.Tensor:
    lo, hi = bounds
    return torch.where(draw(torch.rand, shape, generator=g) < 0.5, lo, hi).to(like)


def _apply(x_flat: torch.Tensor, st: _State) -> torch.Tensor:
    return x_flat.scatter(1, st.inside, st.vals)


def _propose(st: _State, m: int, bounds: tuple[float, float], g: torch.Generator | None) -> _State:
    """Swap m random perturbed elements for m random unperturbed ones, with fresh vertices."""
    n, k = st.inside.shape
    dev = st.inside.device
    slot_in = draw(torch.rand, n, k, generator=g).topk(m, dim=1).indices.to(dev)
    fresh = _vertices((n, m), bounds, g, st.vals)
    vals = st.vals.scatter(1, slot_in, fresh)
    if st.outside.shape[1] == 0:  # every element is perturbed: resample values only
        return _State(st.inside, st.outside, vals, st.margin, st.loss)
    # fewer unperturbed elements than m (ε close to the input's size): swap as many as there are
    m_out = min(m, st.outside.shape[1])
    slot_out = draw(torch.rand, n, st.outside.shape[1], generator=g).topk(m_out, dim=1).indices.to(dev)
    swap = slot_in[:, :m_out]
    leaving, coming = st.inside.gather(1, swap), st.outside.gather(1, slot_out)
    inside = st.inside.scatter(1, swap, coming)
    outside = st.outside.scatter(1, slot_out, leaving)
    return _State(inside, outside, vals, st.margin, st.loss)


@register_attack("sparse-rs", kind="score-based", norms=("l0",), targeted=True, needs_grad=False, paper=PAPER)
def sparse_rs(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_queries: Annotated[int, Range(2)] = 10000,
    p_init: Fraction = 0.3,
    loss: Loss = "margin",
) -> AttackResult:
    """Sparse-RS, L0: random search over which ⌊ε⌋ input elements are set to a vertex of the box.

    Croce et al. 2022 (https://arxiv.org/abs/2006.12834), the L0 threat model. Starts from ⌊ε⌋
    random elements set to random vertices (the lower or upper bound); each iteration swaps
    max(⌊α·k⌋, 1) of them for as many unperturbed elements with fresh random vertices (α from
    ``p_init`` by the paper's schedule, :func:`alpha_schedule`) and keeps the candidate where the
    loss falls or the model is fooled. An element set to the value it already had does not count
    as changed, so L0(x_adv − x) ≤ ⌊ε⌋ always. Targeted or untargeted; the margin loss by
    default (``"ce"``, which the authors' code uses for targeted runs, and ``"dlr"`` are the
    other losses of advlab's vocabulary). Black-box, score-based:
    needs only scores (logits or probabilities) from a :class:`~advlab.models.blackbox.BlackBox`
    or a torch model. Cost: one query for the clean input, one for the initialisation, then one
    per iteration per example still not fooled, at most ``max_queries`` per example.

    Args:
        model: A torch model (logits) or a :class:`~advlab.models.blackbox.BlackBox` with scores.
        x: Clean batch inside ``threat.bounds``.
        y: True labels.
        threat: L0 threat model with finite ε (changed input elements, pixels × channels).
        target: Target labels when ``threat.targeted``.
        generator: Source of randomness (drawn on the CPU).
        max_queries: Per-example query budget (≥ 2).
        p_init: α_init, the initial fraction of the ⌊ε⌋ perturbed elements swapped per iteration
            (0.3, the authors' default for L0).
        loss: ``"margin"`` (default), ``"ce"`` or ``"dlr"`` (:func:`~advlab.attacks.losses.objective`).

    Returns:
        ``AttackResult`` with the best point found per example and its query count.
    """
    x = x.detach()
    y, target = y.to(x.device), None if target is None else target.to(x.device)
    k = min(int(threat.eps), x[0].numel())
    run = _Run(as_blackbox(model).session(len(x), max_queries), x, y, target, threat.bounds, loss, generator)
    margin, _ = run.losses(x.flatten(1), torch.arange(len(x), device="cpu"))  # idx: the session's (CPU)
    best = x.flatten(1).clone()
    todo = (margin >= 0).cpu().nonzero().squeeze(1)
    if k > 0 and len(todo):
        st = run.start(todo, k)
        run.search(todo, st, p_init, max_queries)
        on = todo.to(x.device)
        best[on] = _apply(run.x_flat[on], st)
        margin[on] = st.margin
    x_adv = threat.project(x, best.view_as(x))
    return AttackResult(x_adv, margin < 0, run.session.queries.to(x.device, copy=True))


@dataclass
class _Run:
    """One attack call: the query session, the clean batch (flattened), labels, targets and settings."""

    session: QuerySession
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    bounds: tuple[float, float]
    loss: Loss
    g: torch.Generator | None

    def __post_init__(self) -> None:
        self.objective = objective(self.loss, self.y, self.target)  # ascended: the search minimises its negative

    @property
    def x_flat(self) -> torch.Tensor:
        return self.x.flatten(1)

    def losses(self, x_flat: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query the flattened points of examples ``idx`` (positions in the batch): (margin, loss)."""
        on = idx.to(self.x.device)
        scores = self.session.scores(x_flat.view(len(idx), *self.x.shape[1:]), idx)
        cls = self.y[on] if self.target is None else self.target[on]
        return _margin(scores, cls, self.target is not None), -self.objective(scores, on)

    def start(self, todo: torch.Tensor, k: int) -> _State:
        """The random initial set of k elements at random vertices for examples ``todo``, queried once."""
        n, d = len(todo), self.x[0].numel()
        order = draw(torch.rand, n, d, generator=self.g).argsort(dim=1).to(self.x.device)
        st = _State(order[:, :k], order[:, k:], _vertices((n, k), self.bounds, self.g, self.x), self.x.new_empty(0),
                    self.x.new_empty(0))
        st.margin, st.loss = self.losses(_apply(self.x_flat[todo.to(self.x.device)], st), todo)
        return st

    def search(self, todo: torch.Tensor, st: _State, p_init: float, max_queries: int) -> None:
        """Random search, in place on ``st``, until each example is fooled or out of queries.

        The examples still searching are kept as compact tensors; they are written back and
        re-gathered only when the set shrinks.
        """
        k = st.inside.shape[1]
        it = 1
        a = self._left(todo, st.margin).nonzero().squeeze(1)
        while len(a):
            cur, xs = st.take(a.to(self.x.device)), self.x_flat[todo[a].to(self.x.device)]
            while True:
                cand = _propose(cur, max(int(alpha_schedule(p_init, it, max_queries) * k), 1), self.bounds, self.g)
                cand.margin, cand.loss = self.losses(_apply(xs, cand), todo[a])
                it += 1
                better = (cand.loss < cur.loss) | (cand.margin < 0)
                cur = _State(*(torch.where(better[:, None], c, o) if c.dim() == 2 else torch.where(better, c, o)
                               for c, o in zip(_fields(cand), _fields(cur), strict=True)))
                left = self._left(todo[a], cur.margin)
                if not bool(left.all()):
                    break
            st.put(a.to(self.x.device), cur)
            a = a[left]

    def _left(self, idx: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        """Which of examples ``idx`` (with these margins) are not fooled and have queries left (a CPU mask)."""
        return (margin >= 0).cpu() & (self.session.remaining[idx] > 0)


def _fields(st: _State) -> tuple[torch.Tensor, ...]:
    return st.inside, st.outside, st.vals, st.margin, st.loss


__all__ = ["alpha_schedule", "sparse_rs"]
