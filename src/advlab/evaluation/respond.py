"""What an evaluation adds on its own: the checks, the adaptive attack and escalation, the ensemble.

After the planned attacks, :func:`respond` runs, each phase once (a resumed run reads it back):

1. the gradient-masking checks on a subset at the largest ε (:mod:`advlab.evaluation.checks`);
   their own attacks are stored and count towards the worst case;
2. if any check fired: ``pgd-adaptive`` over the sweep, then the escalation
   (:mod:`advlab.evaluation.escalation`) at the largest ε until every fired check is answered;
3. if the worst case still leaves Acc@1 > :data:`ROBUST_ACC` at the largest ε (a model that
   looks robust): the APGD ensemble at AutoAttack's standard budgets there (with an APGD-DLR
   stage, restarts, and more Square runs on the quarter of the survivors closest to the boundary),
   so the headline of a robust model is never PGD-40's.

A model whose forward leaves autograd (GM09) is evaluated, not crashed on: :func:`white_box_cut`
finds it before the planned attacks run, and their white-box jobs are skipped and recorded with
the reason. Each phase's wall time is kept in the store's meta ``costs``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from advlab.attacks import get_attack
from advlab.attacks.autobpda import PROBE_N, route
from advlab.attacks.guard import leaves_autograd
from advlab.evaluation.checks import CHECKS, check_model
from advlab.evaluation.defaults import ADAPTIVE, attack_params
from advlab.evaluation.escalation import escalate
from advlab.evaluation.run import Run
from advlab.models.blackbox import BlackBox
from advlab.results.aggregate import worst_case
from advlab.results.plan import Job, json_params, plan_jobs

ROBUST_ACC = 0.05  # worst-case Acc@1 above this at the largest ε adds the ensemble
ENSEMBLE_RESTARTS = 2  # restarts of its APGD-CE, APGD-DLR, APGD-T and Square stages (on the examples still robust)
# the fraction of the examples it leaves robust, closest margin first, that get ENSEMBLE_RESTARTS more Square runs
ENSEMBLE_BORDERLINE = 0.25
ENSEMBLE = "apgd-ensemble"
BPDA_SWEEP, SQUARE_SWEEP = "pgd-bpda", "square"  # the sweep's adaptive attack for a model that leaves autograd
WHITE_BOX_SKIPPED = (f"GM09 {CHECKS['GM09'][1]}: the white-box attacks need an input gradient and were not run; "
                     f"{BPDA_SWEEP} runs over the sweep in their place ({SQUARE_SWEEP} where no stand-in routes "
                     "around the break), and where the checks run, the escalation's transfer and black-box attacks")


def add_cost(run: Run, phase: str, seconds: float) -> None:
    """Add ``seconds`` to the phase's wall time in the store's meta ``costs``."""
    costs = run.store.get_meta("costs") or {}
    costs[phase] = round(costs.get(phase, 0.0) + seconds, 3)
    run.store.set_meta("costs", costs)


def white_box_cut(run: Run, jobs: list[Job]) -> list[Job]:
    """The jobs that can run: a model whose output leaves autograd loses its white-box jobs (recorded)."""
    skipped = run.store.get_meta("skipped")
    if skipped is None:
        cut = isinstance(run.net, nn.Module) and leaves_autograd(run.net, run.x[:PROBE_N])
        # (pgd-bpda asked for by name runs where a stand-in routes around the break)
        keep = cut and any(j.attack == BPDA_SWEEP for j in jobs) and route(run.net, run.x[:PROBE_N],
                                                                            run.y[:PROBE_N])[1] is None
        keys = [j.key for j in jobs
                if cut and get_attack(j.attack).needs_grad and not (keep and j.attack == BPDA_SWEEP)]
        skipped = {"jobs": keys, "why": WHITE_BOX_SKIPPED if cut else None, "leaves_autograd": bool(cut)}
        run.store.set_meta("skipped", skipped)
    return [j for j in jobs if j.key not in set(skipped["jobs"])]


def run_checks_once(run: Run, check_n: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """The checks' results and subset (stored once; their attacks' outcomes stored as partial jobs)."""
    config, store = run.config, run.store
    results = store.get_meta("checks")
    if results is None:
        t0 = time.perf_counter()
        cut = (store.get_meta("skipped") or {}).get("leaves_autograd")  # (probed before the jobs: not again)
        cr = check_model(run.net, run.x, run.y, config["norm"], max(config["eps"]), bounds=run.bounds, n=check_n,
                         seed=config["seed"], leaves_autograd=cut)
        entries = [run.put_partial(name, cr.idx, x_adv, cr.eps, minimal) for name, (x_adv, minimal) in cr.found.items()]
        store.set_meta("check_jobs", entries)
        store.set_meta("check_subset", cr.idx.tolist())
        results = [{**r.as_dict(), "message": r.message} for r in cr.results]
        store.set_meta("checks", results)
        add_cost(run, "checks", time.perf_counter() - t0)
    return results, torch.tensor(store.get_meta("check_subset") or [], dtype=torch.long)


def sweep_attack(run: Run, cut: bool) -> list[str]:
    """The adaptive attack run over the whole sweep.

    ``pgd-adaptive``; for a model that leaves autograd ``pgd-bpda``, or ``square`` where no stand-in
    routes a healthy gradient around the break (none for L0/L1).
    """
    if not cut:
        return [ADAPTIVE]
    view, why_not = route(run.net, run.x[:PROBE_N], run.y[:PROBE_N])
    if why_not is None and view.found.healed:
        return [BPDA_SWEEP]
    why_not = why_not or (f"{BPDA_SWEEP}: the stand-ins found ({view.found.describe()}) leave the input gradient zero "
                          "or not finite on many inputs")
    run.store.set_meta("adaptive_why", why_not)
    return [SQUARE_SWEEP] if run.config["norm"] in get_attack(SQUARE_SWEEP).norms else []


def leaves(run: Run) -> bool:
    """Whether the run's model was found to leave autograd (its white-box jobs skipped)."""
    return bool((run.store.get_meta("skipped") or {}).get("leaves_autograd"))


def run_sweep_attack(run: Run, cut: bool) -> None:
    """Run :func:`sweep_attack` over the sweep (decided once: a resumed run finishes the same jobs)."""
    config, store = run.config, run.store
    if ADAPTIVE in config["attacks"]:
        return
    chosen = store.get_meta("adaptive")
    if chosen is None:
        chosen = [a for a in sweep_attack(run, cut) if a not in config["attacks"]]  # (no row twice)
        jobs = plan_jobs(chosen, config["norm"], config["eps"])
        store.set_meta("adaptive_params", {j.key: attack_params(get_attack(j.attack), j, run.params) for j in jobs})
        store.set_meta("adaptive", chosen)
    run.jobs(plan_jobs(chosen, config["norm"], config["eps"]))


def adaptive_and_escalation(run: Run, results: list[dict[str, Any]], idx: torch.Tensor) -> None:
    """The adaptive attack over the sweep (:func:`sweep_attack`), then the escalation (at :func:`escalation_eps`)."""
    store = run.store
    cut = leaves(run)
    t0 = time.perf_counter()
    run_sweep_attack(run, cut)
    if store.get_meta("escalation") is None:
        store.set_meta("escalation", escalate(run, results, idx, cut))
    add_cost(run, "escalation", time.perf_counter() - t0)


def add_ensemble(run: Run) -> None:
    """The APGD ensemble (standard budgets) at the largest ε when the worst case there exceeds :data:`ROBUST_ACC`."""
    config, store = run.config, run.store
    if not config.get("ensemble") or ENSEMBLE in config["attacks"]:
        return
    decided = store.get_meta("ensemble")
    if decided is not None:  # decided before: finish its jobs (a run interrupted inside them resumes there)
        run.add_jobs([Job.from_dict(d) for d in decided.get("jobs", [])])
        return
    eps = max(config["eps"])
    w = worst_case(store, config).get(eps)
    acc = float(w.top1.float().mean()) if w is not None else 0.0
    info = get_attack(ENSEMBLE)
    cut = bool((store.get_meta("skipped") or {}).get("leaves_autograd")) or isinstance(run.net, BlackBox)
    if acc <= ROBUST_ACC or cut or config["norm"] not in info.norms or math.isinf(eps):
        store.set_meta("ensemble", {"added": False, "acc1_before": acc})
        return
    job = Job(ENSEMBLE, config["norm"], eps, (eps,), params=(("restarts", ENSEMBLE_RESTARTS), ("dlr", True),
                                                                    ("borderline", ENSEMBLE_BORDERLINE)))
    shown = json_params({**info.defaults, **attack_params(info, job, run.params)})
    store.set_meta("ensemble", {"added": True, "acc1_before": acc, "params": shown, "jobs": [job.as_dict()],
                                "why": f"worst-case Acc@1 {acc:.3f} > {ROBUST_ACC} at ε = {eps:g}"})
    t0 = time.perf_counter()
    run.add_jobs([job])
    add_cost(run, "ensemble", time.perf_counter() - t0)


def respond(run: Run, checks: bool, check_n: int) -> None:
    """The checks (and, if any fired, the adaptive attack and the escalation), then the ensemble if needed.

    Without the checks, a model that leaves autograd still gets its sweep attack in place of the
    white-box rows it lost.
    """
    if checks:
        results, idx = run_checks_once(run, check_n)
        if any(r["fired"] for r in results):
            adaptive_and_escalation(run, results, idx)
    elif leaves(run):  # (no checks, e.g. a targeted evaluation: its skipped rows are still replaced)
        t0 = time.perf_counter()
        run_sweep_attack(run, True)
        add_cost(run, "escalation", time.perf_counter() - t0)
    add_ensemble(run)


__all__ = ["ENSEMBLE", "ROBUST_ACC", "WHITE_BOX_SKIPPED", "add_ensemble", "respond", "run_checks_once",
           "white_box_cut"]
