"""What the evaluation does on its own when a gradient-masking check fires: escalate, in order of cost.

A model that hides its gradients *without declaring it* (rounding, numpy, a saturated softmax in
its ``forward``) gives ``pgd-adaptive`` nothing to route around. So after the adaptive attack the
evaluation adds, one step at a time and cheapest first, each at the largest ε of the sweep at which
the checks' subset is not all broken yet (:func:`escalation_eps`, read again before each step):

1. ``transfer`` — PGD on a surrogate of the same task (the ``--baseline`` model if given, else a
   shipped model trained on the same dataset), the examples applied to the model;
2. ``pgd-bpda`` — automatic BPDA/EOT: the non-differentiable stage is found from the model's
   behaviour (:mod:`advlab.attacks.autobpda`) and attacked through an identity stand-in;
3. ``square-5000`` — the Square attack with 5 000 queries and 2 restarts (scores only);
4. ``hopskipjump`` — decision-based, only where scores carry nothing (the model returns
   saturated probabilities and Square could not explain what the checks found).

After each step it asks again whether any fired check is still unanswered: a comparison check
(GM03 black box, GM04 transfer, GM05 noise) is answered once the evaluation's own attacks are
within :data:`~advlab.evaluation.checks.MARGIN` of what that check's attack found on the same
subset; a gradient check (GM01, GM02, GM06, GM07, GM08) once a step that routes around the gradient
(``pgd-bpda``, or ``pgd-adaptive`` on a model that declares BPDA/EOT) has run; GM09 (no autograd
at all) once ``pgd-bpda`` and ``square-5000`` have both run. It stops
when every check is answered, nothing on the subset is left to break at any ε, or every step has
run. A step that lowered the subset's Acc@1 by more than the margin then runs at the sweep's other ε
too (:func:`carry_over_sweep`): what fooled the evaluation at one ε fooled it at the others as well.
(At the largest ε a weak attack may have broken the whole subset already — Square on a model
without autograd — which says nothing about the smaller ε: there the escalation moves down.) Each
step is a row of its own; the store's meta ``escalation`` records why each ran, at which ε, its
subset Acc@1, the ε it was carried to and its time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from advlab.attacks import NoInputGradient, get_attack
from advlab.attacks.adaptive import needs_bpda, needs_eot
from advlab.attacks.autobpda import PROBE_N, returns_probabilities
from advlab.evaluation.checks import MARGIN
from advlab.evaluation.run import Run
from advlab.models import read_metadata
from advlab.models.zoo import WEIGHTS_DIR, list_pretrained
from advlab.results.aggregate import GRADIENT_CHECKS, worst_case
from advlab.results.plan import Job, plan_jobs

COMPARISONS = ("GM03", "GM04", "GM05")  # checks whose attack's accuracy is compared with the white-box one
ROUTES = set(GRADIENT_CHECKS - {"GM09"})  # answered by attacking through a stand-in
# GM09 (no autograd at all: every white-box row is missing) is answered once the stand-in *and* the
# full-budget black-box attack have run


@dataclass(frozen=True)
class Step:
    """One escalation step: the row's name, the registry attack and its parameters."""

    label: str
    attack: str
    params: tuple[tuple[str, Any], ...] = ()

    def job(self, norm: str, eps: float) -> Job:
        """The step as a job at ``eps`` (a minimal attack runs unbounded and is scored at ``eps``)."""
        budget = math.inf if get_attack(self.attack).minimal else eps
        return Job(self.attack, norm, budget, (eps,), self.label, self.params)


SQUARE = Step("square-5000", "square", (("max_queries", 5000), ("restarts", 2)))
BPDA = Step("pgd-bpda", "pgd-bpda")
HSJ = Step("hopskipjump", "hopskipjump", (("max_queries", 5000),))


def surrogate_for(config: dict[str, Any]) -> str | None:
    """The transfer step's surrogate, None where there is none.

    The ``--baseline`` model, else the smallest shipped undefended model trained on the same
    dataset (not the evaluated one).
    """
    base = config.get("surrogate")
    if isinstance(base, str) and base:
        return base
    found = []
    for name in list_pretrained():
        path = WEIGHTS_DIR / f"{name}.safetensors"
        meta = read_metadata(path)
        if meta.get("dataset") == config["dataset"] and not meta.get("defense") and name != config["model"]:
            found.append((path.stat().st_size, name))
    return min(found)[1] if found else None


def _own_accuracy(run: Run, idx: torch.Tensor, eps: float) -> float:
    """Acc@1 on the checks' subset of the evaluation's own attacks (the checks' attacks left out)."""
    return _own_accuracies(run, idx).get(eps, 1.0)


def _own_accuracies(run: Run, idx: torch.Tensor) -> dict[float, float]:
    """:func:`_own_accuracy` at every ε of the sweep (the store's worst case read once)."""
    worst = worst_case(run.store, run.config, checks=False)
    return {e: float(w.top1[idx].float().mean()) if len(idx) else 1.0 for e, w in worst.items()}


def escalation_eps(run: Run, idx: torch.Tensor) -> tuple[float, float]:
    """Where the escalation runs, and the subset's Acc@1 there: the largest ε whose subset is not all broken yet.

    At the largest ε a weak attack may already break every example of the subset (Square on a model
    without autograd), and nothing there is left to show that the smaller ε's worst cases are too
    high; the largest ε still holding an unbroken example is where a step can show it (and be
    carried to the others). Where every ε is broken: the largest.
    """
    own = _own_accuracies(run, idx)
    sweep = sorted(run.config["eps"], reverse=True)
    eps = next((e for e in sweep if own.get(e, 1.0) > 0.0), sweep[0])
    return float(eps), own.get(eps, 1.0)


def unanswered(checks: list[dict[str, Any]], own_acc: float, routed: set[str]) -> list[str]:
    """The fired checks the evaluation's own results do not yet answer (see the module docstring)."""
    left = []
    for c in checks:
        if not c["fired"]:
            continue
        if c["code"] in COMPARISONS and c.get("value") is not None and c["value"] < own_acc - MARGIN:
            left.append(c["code"])
        elif c["code"] in GRADIENT_CHECKS and c["code"] not in routed:
            left.append(c["code"])
    return left


def declared_routes(net: Any) -> set[str]:
    """The gradient checks a model's own declarations answer through ``pgd-adaptive`` (BPDA, EOT)."""
    routed = set(ROUTES - {"GM07"}) if needs_bpda(net) else set()
    return routed | ({"GM07"} if needs_eot(net) else set())


def plan_steps(run: Run, leaves_autograd: bool) -> list[tuple[Step, str]]:
    """The escalation's steps for this model, cheapest first, each with why it may run (or why not)."""
    steps: list[tuple[Step, str]] = []
    surrogate = surrogate_for(run.config)
    if surrogate is not None:
        steps.append((Step("transfer", "transfer", (("surrogate", surrogate),)), f"surrogate {surrogate}"))
    steps.append((BPDA, "automatic BPDA/EOT through the stage that loses the gradient"))
    if run.config["norm"] in ("linf", "l2"):
        steps.append((SQUARE, "score-based, full budget"))
    # (a model advlab reads through LogProbabilities still returns probabilities itself: they may be saturated)
    scores_only = getattr(run.net, "returns_probabilities", False) is True or returns_probabilities(run.net,
                                                                                                      run.x[:PROBE_N])
    if run.config["norm"] in ("linf", "l2") and (leaves_autograd or scores_only):
        steps.append((HSJ, "decision-based: the scores may carry nothing"))
    return steps


def escalate(run: Run, checks: list[dict[str, Any]], idx: torch.Tensor, leaves_autograd: bool) -> list[dict[str, Any]]:
    """Run the escalation's steps until every fired check is answered; returns their records.

    Each step runs at :func:`escalation_eps` as it stands before the step (the largest ε whose subset
    is not all broken), then, where it lowered the subset's Acc@1, at the sweep's other ε
    (:func:`carry_over_sweep`). It stops when every check is answered, the subset is broken at every
    ε, or every step has run.
    """
    adaptive = run.store.get_meta("adaptive") or []
    routed = declared_routes(run.net) if adaptive else set()
    skipped = set((run.store.get_meta("skipped") or {}).get("jobs", []))
    swept = set(adaptive) | {j.attack for j in plan_jobs(run.config["attacks"], run.config["norm"],
                                                         run.config["eps"]) if j.key not in skipped}
    if BPDA.attack in swept:  # (a model that leaves autograd: pgd-bpda ran over the sweep already)
        routed |= ROUTES
    records: list[dict[str, Any]] = []
    for step, why in plan_steps(run, leaves_autograd):
        if step.attack in swept and not step.params:
            continue
        eps, own = escalation_eps(run, idx)
        left = unanswered(checks, own, routed)
        if not left or own == 0.0:
            break
        if step is HSJ and not any(code in COMPARISONS for code in left):
            continue
        record = _run_step(run, step, why, eps, idx, left, own)
        records.append(record)
        if step is BPDA and record["ran"]:
            routed |= ROUTES
        if step is SQUARE:
            routed.add("GM09")
    return records


def _run_step(run: Run, step: Step, why: str, eps: float, idx: torch.Tensor, left: list[str],
              own: float) -> dict[str, Any]:
    """One escalation step at ``eps`` (then carried over the sweep where it helped), as its record."""
    t0 = time.perf_counter()
    job = step.job(run.config["norm"], eps)
    try:
        run.add_jobs([job])
    except NoInputGradient as e:  # (pgd-bpda found no route around the break: the next steps still run)
        run.forget_added(job)
        why, ran = f"{why}; not run: {e}", False
    else:
        ran = True
    record = {"step": step.label, "attack": step.attack, "params": dict(step.params), "why": why, "eps": eps,
              "unanswered_before": left, "subset_acc1_before": own, "subset_acc1_after": _own_accuracy(run, idx, eps),
              "seconds": round(time.perf_counter() - t0, 2), "ran": ran}
    if ran:
        carry_over_sweep(run, step, record)
    return record


def carry_over_sweep(run: Run, step: Step, record: dict[str, Any]) -> None:
    """Run ``step`` at the sweep's other ε too where it lowered the subset's Acc@1 by more than :data:`MARGIN`.

    The escalation looks at one ε at a time; a step that broke what the evaluation's attacks had
    not (a transfer attack past a gradient that vanishes) would leave the other ε's worst case as
    wrong as it found this one's. The step's record lists those ε (``swept``).
    """
    others = [e for e in run.config["eps"] if e != record["eps"]]
    if not others or record["subset_acc1_after"] >= record["subset_acc1_before"] - MARGIN:
        return
    t0 = time.perf_counter()
    run.add_jobs([step.job(run.config["norm"], e) for e in others])
    record["swept"], record["seconds"] = others, round(record["seconds"] + time.perf_counter() - t0, 2)


__all__ = ["COMPARISONS", "ROUTES", "Step", "carry_over_sweep", "declared_routes", "escalate", "escalation_eps",
           "plan_steps", "surrogate_for", "unanswered"]
