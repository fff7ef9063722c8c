"""APGD (Auto-PGD), APGD-T and the APGD ensemble: step-size-free PGD and the AutoAttack recipe.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690.

* ``apgd`` — PGD with momentum (α = 0.75) whose step size starts at 2ε and halves at
  checkpoints when the loss stopped improving; it restarts each halving from the best point.
  Losses: cross-entropy (``ce``) or the difference of logits ratio (``dlr``), which is invariant
  to shifting and rescaling the logits, so a saturated softmax (distillation) does not hide it.
* ``apgd-t`` — APGD with the targeted DLR loss against each of the ``n_targets`` most likely
  wrong classes in turn, on the examples still robust.
* ``apgd-ensemble`` — APGD-CE, then APGD-T, then Square on the examples still robust; the
  per-example worst case (AutoAttack's "standard" recipe without FAB).

Every gradient goes through ``grad_fn`` (the seam of :mod:`advlab.attacks.base`), so EOT and
BPDA apply. An example stops being updated once an adversarial iterate is found (the robust
accuracy is that of the full run; the work is less).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from advlab._checks import check_choice, check_positive_int
from advlab.attacks.base import (
    AttackResult,
    GradFn,
    ce_loss,
    get_attack,
    loss_grad,
    register_attack,
    reject_unknown,
    validate,
)
from advlab.attacks.gradient import steepest_step
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Croce, Hein 2020, Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks, https://arxiv.org/abs/2003.01690"
)
APGD_NORMS = ("linf", "l2")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), per example (untargeted)."""
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return -(true - other.amax(dim=1)) / (srt[:, 0] - srt[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2), per example."""
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: ⌈p_j·steps⌉, p_0 = 0, p_1 = 0.22, ..."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if q <= 1})


def _bshape(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def apgd_core(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    is_success: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None,
    grad_fn: GradFn,
    rho: float = 0.75,
    alpha: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run maximising ``objective(logits, y)``; returns (x_adv, success per example).

    ``is_success(logits, labels)`` tells which examples are adversarial (``labels``: the rows of
    ``y`` the logits belong to). Successful examples return the
    first adversarial iterate found; the others the iterate of highest objective.
    """
    x = x.detach()
    n = len(x)
    x_cur = threat.random_init(x, generator) if random_start else x.clone()
    loss, grad, logits = grad_fn(model, x_cur, y, objective)
    success = is_success(logits, y)
    x_adv = x_cur.clone()  # the returned point: first adversarial iterate, else best objective
    best_loss = loss.clone()
    x_best, grad_best = x_cur.clone(), grad.clone()
    eta = torch.full((n,), 2.0 * threat.eps, dtype=x.dtype)
    x_prev = x_cur.clone()
    marks = checkpoints(steps)
    improved = torch.zeros(n)  # successful loss increases since the last checkpoint
    last_mark, eta_at_mark, best_at_mark = 0, eta.clone(), best_loss.clone()
    active = (~success).nonzero().squeeze(1)
    for k in range(steps):
        if len(active) == 0:
            break
        xa, xp, ga = x_cur[active], x_prev[active], grad[active]
        step_size = _bshape(eta[active], xa)
        z = threat.project(x[active], xa + step_size * steepest_step(ga, threat.norm, 1.0))
        if k > 0:
            z = threat.project(x[active], xa + alpha * (z - xa) + (1 - alpha) * (xa - xp))
        x_prev[active] = xa
        x_cur[active] = z
        la, ga, lg = grad_fn(model, z, y[active], objective)
        grad[active] = ga
        hit = is_success(lg, y[active])
        newly = active[hit & ~success[active]]
        x_adv[newly] = z[hit & ~success[active]]
        success[newly] = True
        better = la > best_loss[active]
        improved[active] += (la > loss[active]).float()
        loss[active] = la
        upd = active[better]
        best_loss[upd] = la[better]
        x_best[upd] = z[better]
        grad_best[upd] = ga[better]
        if k + 1 in marks and k + 1 > last_mark:
            span = k + 1 - last_mark
            cond1 = improved < rho * span
            cond2 = (eta == eta_at_mark) & (best_loss == best_at_mark)
            halve = cond1 | cond2
            eta[halve] /= 2
            # restart the halved examples from their best point
            x_cur[halve] = x_best[halve]
            grad[halve] = grad_best[halve]
            x_prev[halve] = x_best[halve]
            improved.zero_()
            last_mark, eta_at_mark, best_at_mark = k + 1, eta.clone(), best_loss.clone()
        active = active[~hit]
    x_adv[~success] = x_best[~success]
    return x_adv, success


def _untargeted_objective(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    check_choice("loss", loss, ("ce", "dlr"))
    return ce_loss if loss == "ce" else dlr_loss


@register_attack(
    "apgd", kind="white-box", norms=APGD_NORMS, targeted=True, paper=PAPER,
    defaults={"steps": 100, "loss": "ce", "restarts": 1},
)
def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    random_start: bool = True,
    grad_fn: GradFn = loss_grad,
    **unused: Any,
) -> AttackResult:
    """Auto-PGD (Croce & Hein 2020): momentum PGD with an automatic step-size schedule.

    L∞ and L2; untargeted (loss ``ce`` or ``dlr``) or targeted with given targets (targeted DLR
    when ``loss="dlr"``, else cross-entropy towards the target). ``restarts`` re-run from new
    random starts on the examples still robust. Cost per restart: at most ``steps`` + 1 forward
    and backward passes per example (fewer: an example stops when it is broken).
    """
    reject_unknown("apgd", unused)
    y, target = validate("apgd", APGD_NORMS, x, y, threat, target, supports_targeted=True)
    if not threat.bounded:
        raise ValueError("threat.eps: apgd is a fixed-budget attack and needs a finite eps, got inf")
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    check_choice("loss", loss, ("ce", "dlr"))
    return _run_restarts(model, x, y, threat, target, steps, loss, restarts, random_start, generator, grad_fn)


def _run_restarts(
    model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, target: torch.Tensor | None,
    steps: int, loss: str, restarts: int, random_start: bool, generator: torch.Generator | None, grad_fn: GradFn,
) -> AttackResult:
    x_adv = x.detach().clone()
    success = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        xs, ys = x[todo], y[todo]
        if target is None:
            objective = _untargeted_objective(loss)

            def hit(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return logits.argmax(1) != labels

            xa, ok = apgd_core(model, xs, ys, threat, objective, hit, steps=steps, random_start=random_start,
                               generator=generator, grad_fn=grad_fn)
        else:
            ts = target[todo]
            xa, ok = _targeted_core(model, xs, ys, ts, threat, loss, steps, random_start, generator, grad_fn)
        x_adv[todo] = xa
        success[todo] = ok
    return AttackResult(x_adv, success)


def _targeted_core(
    model: Model, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, threat: ThreatModel, loss: str,
    steps: int, random_start: bool, generator: torch.Generator | None, grad_fn: GradFn,
) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD towards targets ``t``; the objective's labels are the row numbers, to look up y and t."""
    rows = torch.arange(len(x))
    if loss == "dlr":
        def objective(logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return dlr_targeted_loss(logits, y[r], t[r])
    else:
        def objective(logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return -ce_loss(logits, t[r])

    def hit(logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) == t[r]

    return apgd_core(model, x, rows, threat, objective, hit, steps=steps, random_start=random_start,
                     generator=generator, grad_fn=grad_fn)


@register_attack(
    "apgd-t", kind="white-box", norms=APGD_NORMS, targeted=False, paper=PAPER,
    defaults={"steps": 100, "n_targets": 9},
)
def apgd_t(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 100,
    n_targets: int = 9,
    grad_fn: GradFn = loss_grad,
    **unused: Any,
) -> AttackResult:
    """APGD-T: targeted-DLR APGD against each of the ``n_targets`` most likely wrong classes.

    Untargeted in effect (success = any wrong class); each target class is tried in turn on the
    examples still robust. Cost: up to ``n_targets`` × (``steps`` + 1) passes per robust example.
    """
    reject_unknown("apgd-t", unused)
    y, _ = validate("apgd-t", APGD_NORMS, x, y, threat, target, supports_targeted=False)
    if not threat.bounded:
        raise ValueError("threat.eps: apgd-t is a fixed-budget attack and needs a finite eps, got inf")
    check_positive_int("steps", steps)
    check_positive_int("n_targets", n_targets)
    with torch.no_grad():
        logits = model(x)
    order = logits.sort(dim=1, descending=True).indices
    x_adv = x.detach().clone()
    success = logits.argmax(1) != y
    k_max = min(n_targets, logits.shape[1] - 1)
    for k in range(k_max):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        # the (k+1)-th most likely class other than y
        cand = order[todo]
        cand = cand[cand != y[todo, None]].view(len(todo), -1)
        t = cand[:, k]
        xa, ok = _targeted_core(model, x[todo], y[todo], t, threat, "dlr", steps, True, generator, grad_fn)
        x_adv[todo[ok]] = xa[ok]
        success[todo[ok]] = True
    return AttackResult(x_adv, success)


@register_attack(
    "apgd-ensemble", kind="white-box", norms=APGD_NORMS, targeted=False, paper=PAPER,
    defaults={"steps": 100, "n_targets": 9, "square_queries": 5000},
)
def apgd_ensemble(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 100,
    n_targets: int = 9,
    square_queries: int = 5000,
    grad_fn: GradFn = loss_grad,
    **unused: Any,
) -> AttackResult:
    """APGD-CE, then APGD-T, then Square, each on the examples the previous ones left robust.

    The per-example worst case over three diverse attacks (white-box CE, white-box targeted DLR,
    black-box random search), as AutoAttack's standard version does. ``queries`` counts Square's
    model queries (0 for examples broken before Square ran).
    """
    reject_unknown("apgd-ensemble", unused)
    y, _ = validate("apgd-ensemble", APGD_NORMS, x, y, threat, target, supports_targeted=False)
    if not threat.bounded:
        raise ValueError("threat.eps: apgd-ensemble is a fixed-budget attack and needs a finite eps, got inf")
    with torch.no_grad():
        success = model(x).argmax(1) != y
    x_adv = x.detach().clone()
    queries = torch.zeros(len(x), dtype=torch.int64)
    stages: list[tuple[str, dict[str, Any]]] = [
        ("apgd", {"steps": steps, "loss": "ce", "grad_fn": grad_fn}),
        ("apgd-t", {"steps": steps, "n_targets": n_targets, "grad_fn": grad_fn}),
        ("square", {"max_queries": square_queries}),
    ]
    for name, params in stages:
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        res = get_attack(name)(model, x[todo], y[todo], threat, generator=generator, **params)
        ok = res.success
        x_adv[todo[ok]] = res.x_adv[ok]
        success[todo[ok]] = True
        if res.queries is not None:
            queries[todo] += res.queries
    return AttackResult(x_adv, success, queries)
