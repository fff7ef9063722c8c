"""APGD (Auto-PGD), APGD-T and the APGD ensemble: step-size-free PGD and the AutoAttack recipe.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690.

* ``apgd`` — PGD with momentum (0.75) whose step size starts at 2ε and halves at checkpoints
  when the loss stopped improving; it restarts each halving from the best point. Losses: the
  shared vocabulary of :mod:`advlab.attacks.losses` — ``dlr`` (Croce & Hein's difference of
  logits ratio, invariant to shifting and rescaling the logits, so a saturated softmax does not
  hide it), ``ce`` and ``margin``.
* ``apgd-t`` — APGD with the targeted DLR loss against each of the most likely wrong classes in
  turn, on the examples still robust.
* ``apgd-ensemble`` — APGD-CE, then APGD-T, then Square on the examples still robust; the
  per-example worst case (AutoAttack's "standard" recipe without FAB).

Every gradient goes through ``grad_fn`` (the seam of :mod:`advlab.attacks.losses`), so EOT and
BPDA apply. An example stops being updated once an adversarial iterate is found (the robust
accuracy is that of the full run; the work is less).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch

from advlab._checks import PositiveInt, Range
from advlab._deprecation import caller_level
from advlab.attacks.gradient import steepest_step
from advlab.attacks.losses import (
    GradFn,
    Loss,
    LossFn,
    dlr_loss,
    dlr_targeted_loss,
    loss_grad,
    objective,
    success_on_rows,
)
from advlab.attacks.random_search import square
from advlab.attacks.registry import AttackResult, Renamed, register_attack
from advlab.attacks.tasks import TaskLoss
from advlab.threat import Norm, ThreatModel, per_row

Model = Callable[[torch.Tensor], torch.Tensor]
Success = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PAPER = (
    "Croce, Hein 2020, Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks, https://arxiv.org/abs/2003.01690"
)
APGD_NORMS: tuple[Norm, ...] = ("linf", "l2")
Candidates = Annotated[int, Range(2)]
# n_targets counted the wrong classes tried; candidates counts the classes considered, the true one included
_N_TARGETS = Renamed("candidates", lambda v: v + 1 if isinstance(v, int) and not isinstance(v, bool) else v)
__all__ = ["SquareSkipped", "apgd", "apgd_core", "apgd_ensemble", "apgd_t", "checkpoints", "dlr_loss",
           "dlr_targeted_loss", "normalised_margin"]


class SquareSkipped(UserWarning):
    """The APGD ensemble ran without its Square stage: the inputs are not images (Square's windows need H×W)."""


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: ⌈p_j·steps⌉, p_0 = 0, p_1 = 0.22, ..."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if q <= 1})


@dataclass
class _State:
    """APGD's per-example state: iterates, losses, the best point and the step size η."""

    x_cur: torch.Tensor
    x_prev: torch.Tensor
    x_adv: torch.Tensor  # the returned point: the first adversarial iterate, else the best objective
    x_best: torch.Tensor
    grad: torch.Tensor
    grad_best: torch.Tensor
    loss: torch.Tensor
    best_loss: torch.Tensor
    success: torch.Tensor
    eta: torch.Tensor
    improved: torch.Tensor  # successful loss increases since the last checkpoint
    eta_at_mark: torch.Tensor
    best_at_mark: torch.Tensor
    last_mark: int = 0

    @classmethod
    def start(
        cls, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor, success: torch.Tensor, eps: float
    ) -> _State:
        """The state after the first gradient at the starting point ``x``."""
        eta = torch.full((len(x),), 2.0 * eps, dtype=x.dtype, device=x.device)
        return cls(x, x.clone(), x.clone(), x.clone(), grad, grad.clone(), loss, loss.clone(), success, eta,
                   torch.zeros(len(x), device=x.device), eta.clone(), loss.clone())

    def record(self, active: torch.Tensor, z: torch.Tensor, la: torch.Tensor, ga: torch.Tensor,
               hit: torch.Tensor) -> None:
        """Take the new iterate ``z`` of the ``active`` examples, its loss, gradient and success."""
        self.grad[active] = ga
        first = hit & ~self.success[active]
        self.x_adv[active[first]] = z[first]
        self.success[active[first]] = True
        better = la > self.best_loss[active]
        self.improved[active] += (la > self.loss[active]).float()
        self.loss[active] = la
        upd = active[better]
        self.best_loss[upd] = la[better]
        self.x_best[upd] = z[better]
        self.grad_best[upd] = ga[better]

    def checkpoint(self, mark: int, rho: float) -> None:
        """Halve η where the loss rose too rarely or nothing changed; restart those from their best point."""
        cond1 = self.improved < rho * (mark - self.last_mark)
        cond2 = (self.eta == self.eta_at_mark) & (self.best_loss == self.best_at_mark)
        halve = cond1 | cond2
        self.eta[halve] /= 2
        self.x_cur[halve] = self.x_best[halve]
        self.grad[halve] = self.grad_best[halve]
        self.x_prev[halve] = self.x_best[halve]
        self.improved.zero_()
        self.last_mark, self.eta_at_mark, self.best_at_mark = mark, self.eta.clone(), self.best_loss.clone()


def apgd_core(
    model: Model, x: torch.Tensor, rows: torch.Tensor, threat: ThreatModel, obj: LossFn, hits: Success, *,
    steps: int, random_start: bool, generator: torch.Generator | None, grad_fn: GradFn, rho: float = 0.75,
    momentum: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run maximising ``obj(logits, rows)``; returns (x_adv, success per example).

    ``rows`` name the examples (as :func:`advlab.attacks.losses.objective` expects); ``hits``
    tells which are adversarial. Successful examples return the first adversarial iterate found;
    the others the iterate of highest objective.
    """
    x = x.detach()
    x_cur = threat.random_init(x, generator) if random_start else x.clone()
    loss, grad, logits = grad_fn(model, x_cur, rows, obj)
    st = _State.start(x_cur, loss, grad, hits(logits, rows), threat.eps)
    marks = checkpoints(steps)
    active = (~st.success).nonzero().squeeze(1)
    for k in range(steps):
        if len(active) == 0:
            break
        xa, xp = st.x_cur[active], st.x_prev[active]
        step = per_row(st.eta[active], xa) * steepest_step(st.grad[active], threat.norm, 1.0)
        z = threat.project(x[active], xa + step)
        if k > 0:
            z = threat.project(x[active], xa + momentum * (z - xa) + (1 - momentum) * (xa - xp))
        st.x_prev[active] = xa
        st.x_cur[active] = z
        la, ga, lg = grad_fn(model, z, rows[active], obj)
        hit = hits(lg, rows[active])
        st.record(active, z, la, ga, hit)
        if k + 1 in marks and k + 1 > st.last_mark:
            st.checkpoint(k + 1, rho)
        active = active[~hit]
    st.x_adv[~st.success] = st.x_best[~st.success]
    return st.x_adv, st.success


@register_attack("apgd", kind="white-box", norms=APGD_NORMS, targeted=True, paper=PAPER)
def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    loss: Loss | TaskLoss = "ce",
    restarts: PositiveInt = 1,
    random_start: bool = True,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """Auto-PGD (Croce & Hein 2020): momentum PGD with an automatic step-size schedule.

    L∞ and L2; untargeted or targeted with given targets (``loss="dlr"``: the targeted DLR;
    ``ce``: cross-entropy towards the target). ``restarts`` re-run from new random starts on the
    examples still robust. Cost per restart: at most ``steps`` + 1 forward and backward passes per
    example (fewer: an example stops when it is broken).
    """
    obj, hits = objective(loss, y, target), success_on_rows(y, target, loss)
    x_adv = x.detach().clone()
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        xa, ok = apgd_core(model, x[todo], todo, threat, obj, hits, steps=steps, random_start=random_start,
                           generator=generator, grad_fn=grad_fn)
        x_adv[todo] = xa
        success[todo] = ok
    return AttackResult(x_adv, success)


@register_attack("apgd-t", kind="white-box", norms=APGD_NORMS, targeted=False, paper=PAPER,
                 renamed={"n_targets": _N_TARGETS})
def apgd_t(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    candidates: Candidates = 10,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """APGD-T: targeted-DLR APGD against each of the ``candidates − 1`` most likely wrong classes.

    Untargeted in effect (success = any wrong class); each target class is tried in turn on the
    examples still robust. ``candidates`` counts the classes considered, the true one included (10:
    the 9 targets of AutoAttack). Cost: up to (candidates − 1) × (``steps`` + 1) passes per robust example.
    """
    with torch.no_grad():
        logits = model(x)
    order = logits.sort(dim=1, descending=True).indices
    x_adv = x.detach().clone()
    success = logits.argmax(1) != y
    for k in range(min(candidates, logits.shape[1]) - 1):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        # the (k+1)-th most likely class other than y
        cand = order[todo]
        t = y.clone()
        t[todo] = cand[cand != y[todo, None]].view(len(todo), -1)[:, k]
        obj, hits = objective("dlr", y, t), success_on_rows(y, t)
        xa, ok = apgd_core(model, x[todo], todo, threat, obj, hits, steps=steps, random_start=True,
                           generator=generator, grad_fn=grad_fn)
        x_adv[todo[ok]] = xa[ok]
        success[todo[ok]] = True
    return AttackResult(x_adv, success)


@register_attack("apgd-ensemble", kind="white-box", norms=APGD_NORMS, targeted=False, paper=PAPER,
                 renamed={"n_targets": _N_TARGETS, "square_queries": Renamed("max_queries")})
def apgd_ensemble(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    candidates: Candidates = 10,
    max_queries: Annotated[int, Range(2)] = 5000,
    restarts: PositiveInt = 1,
    dlr: bool = False,
    borderline: Annotated[float, Range(0.0, 1.0)] = 0.0,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """APGD-CE, then APGD-T, then Square, each on the examples the previous ones left robust.

    The per-example worst case over three diverse attacks (white-box CE, white-box targeted DLR,
    black-box random search), as AutoAttack's standard version does. ``max_queries`` is Square's
    per-example budget; ``queries`` counts Square's model queries (0 for examples broken before
    Square ran). ``restarts`` re-runs APGD-CE, APGD-T and Square from new random starts on the
    examples still robust (AutoAttack's standard version uses 1; ``advlab evaluate`` adds the
    ensemble with 2: whether a borderline example breaks depends on the random draws — on the
    mixed-recipe model of docs/benchmarks.md, AutoAttack's APGD-T broke #53 in 3 of 3 seeds in its
    batch, advlab's in 0 of 2, and on #53 alone in 5 and 6 of 8 — so a second run gives it a second
    chance). ``dlr`` adds untargeted APGD with the DLR loss (``restarts`` times) after APGD-CE, as
    AutoAttack's "plus" version does.

    ``borderline`` spends more where it is likeliest to pay: after the stages, that fraction of the
    examples still robust — those whose lowest normalised margin seen in any stage,
    (z_y − max_{j≠y} z_j) / (z_π1 − z_π3), is smallest — gets ``restarts`` more Square runs (0:
    none, AutoAttack's behaviour). Everything before it draws the same randomness, so its result is
    never weaker than without it. Cost: at most ⌈borderline × robust⌉ × restarts × ``max_queries``
    queries. On inputs that are not images (N×D), Square is left out (:class:`SquareSkipped`).
    """
    with torch.no_grad():
        success = model(x).argmax(1) != y
    out = _Ensemble(x.detach().clone(), success, torch.zeros(len(x), dtype=torch.int64, device=x.device),
                    torch.full((len(x),), math.inf, device=x.device))

    def sq(xs: torch.Tensor, ys: torch.Tensor) -> AttackResult:
        return square(model, xs, ys, threat, generator=generator, max_queries=max_queries, restarts=restarts)

    stages: list[Callable[[torch.Tensor, torch.Tensor], AttackResult]] = [
        lambda xs, ys: apgd(model, xs, ys, threat, generator=generator, steps=steps, loss="ce", restarts=restarts,
                            grad_fn=grad_fn),
        # APGD-T runs ``restarts`` times too, each on the examples the earlier runs left robust
        *[lambda xs, ys: apgd_t(model, xs, ys, threat, generator=generator, steps=steps, candidates=candidates,
                                grad_fn=grad_fn)] * restarts,
        *([sq] if (images := _images_or_warn(x)) else []),
    ]
    if dlr:
        stages.insert(1, lambda xs, ys: apgd(model, xs, ys, threat, generator=generator, steps=steps, loss="dlr",
                                             restarts=restarts, grad_fn=grad_fn))
    for stage in stages:
        out.run(model, stage, x, y, (~out.success).nonzero().squeeze(1))
    if borderline > 0 and images:
        out.run(model, sq, x, y, out.closest_robust(borderline))
    return AttackResult(out.x_adv, out.success, out.queries)


def _images_or_warn(x: torch.Tensor) -> bool:
    """Whether ``x`` is a batch of images; a :class:`SquareSkipped` warning where it is not."""
    if x.dim() == 4:
        return True
    warnings.warn(f"advlab: apgd-ensemble on inputs of shape {tuple(x.shape)}, not images N×C×H×W: Square (its "
                  "black-box stage) needs an H×W grid and is left out; the worst case is APGD-CE's and APGD-T's",
                  SquareSkipped, stacklevel=caller_level())
    return False


@dataclass
class _Ensemble:
    """The ensemble's running worst case: points, successes, Square's queries, the closest margin seen."""

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor
    closest: torch.Tensor  # per example: the lowest normalised margin of any stage's returned point

    def run(self, model: Model, stage: Callable[[torch.Tensor, torch.Tensor], AttackResult], x: torch.Tensor,
            y: torch.Tensor, todo: torch.Tensor) -> None:
        """One stage on the examples ``todo``: keep its successes, its queries and its margins."""
        if len(todo) == 0:
            return
        res = stage(x[todo], y[todo])
        ok = res.success
        self.x_adv[todo[ok]] = res.x_adv[ok]
        self.success[todo[ok]] = True
        if res.queries is not None:
            self.queries[todo] += res.queries
        if bool((~ok).any()):
            with torch.no_grad():
                m = normalised_margin(model(res.x_adv[~ok]), y[todo[~ok]])
            self.closest[todo[~ok]] = torch.minimum(self.closest[todo[~ok]], m)

    def closest_robust(self, fraction: float) -> torch.Tensor:
        """The ⌈fraction × robust⌉ examples still robust whose closest margin is smallest."""
        robust = (~self.success).nonzero().squeeze(1)
        k = math.ceil(round(fraction * len(robust), 6))
        return robust[self.closest[robust].argsort(stable=True)[:k]]


def normalised_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(z_y − max_{j≠y} z_j) / (z_π1 − z_π3): < 0 when misclassified; invariant to shifting and scaling z."""
    z = logits.detach().float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], -math.inf).amax(1)
    top = z.topk(min(3, z.shape[1]), dim=1).values
    return (zy - other) / (top[:, 0] - top[:, -1]).clamp_min(1e-12)
