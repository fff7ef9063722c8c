"""The table's rows, computed from the results store alone.

Every number comes from :mod:`advlab.metrics` applied to the stored per-example outcomes, which
were judged from the model's own prediction on the returned x_adv, never from an attack's own
success flag. A final ``worst-case`` row per ε counts an example as broken if any bounded attack
broke it at that ε — any attack that ran, including the gradient-masking checks' own attacks on
their subset and the attacks the evaluation added on its own (escalation, ensemble) — and names,
per example, the attack that produced its worst case (:func:`worst_case`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from advlab.attacks import get_attack
from advlab.metrics import mean_or_none, median_or_none, outcome_at_eps
from advlab.results.detection import Detected, at_budget, clean_detected, clean_numbers, job_detected, row_numbers
from advlab.results.plan import Job, plan_jobs
from advlab.results.records import Row
from advlab.results.store import Store

# The checks about the model's gradients (zero, random, not raising the loss, cut off; attacks that fail at
# any budget): they bear on a gradient attack at every norm. GM03-GM05 compare attacks at the sweep's norm.
GRADIENT_CHECKS = frozenset({"GM01", "GM02", "GM06", "GM07", "GM08", "GM09"})

Outcome = dict[str, torch.Tensor]
# the store's bookkeeping lives on the CPU, whatever torch's default device is
CPU = torch.device("cpu")


@dataclass
class _Scored:
    """Per-example (broken, top-1 correct, top-5 correct) of an attack at one budget, and its time."""

    broken: torch.Tensor
    top1: torch.Tensor
    top5: torch.Tensor
    seconds: float


@dataclass
class _Table:
    """What every row of one evaluation shares: its configuration and clean predictions."""

    config: dict[str, Any]
    clean: Outcome
    detect: Detected | None = None  # the clean test images' detector scores (an evaluation with a detector)
    handled: dict[float, torch.Tensor] = field(default_factory=dict)  # per ε: handled under every attack

    @property
    def n(self) -> int:
        return len(self.clean["label"])

    def row(self, attack: str, norm: str, eps: float | None, s: _Scored, o: Outcome | None) -> Row:
        """A row from scored outcomes; ``o`` (None for the worst case) gives the norms and queries."""
        med = {k: median_or_none(o[k][s.broken]) if o is not None else None for k in ("l0", "l1", "l2", "linf")}
        q = o["queries"][~torch.isnan(o["queries"])] if o is not None else torch.empty(0, device=CPU)
        n_correct = int(self.clean["top1"].sum())
        c = self.config
        return Row(attack, c["dataset"], c["model"], norm, eps, self.n, float(s.top1.double().mean()),
                   float(s.top5.double().mean()), float(self.clean["top1"].double().mean()),
                   float(self.clean["top5"].double().mean()),
                   int(s.broken.sum()) / n_correct if n_correct else 0.0, med["l0"], med["l1"], med["l2"],
                   med["linf"], mean_or_none(q), s.seconds, c["seed"])


def stored_jobs(store: Store, config: dict[str, Any]) -> list[Job]:
    """The jobs of an evaluation, in row order.

    Its attacks (less those it could not run), the adaptive attack if a check added it, then the
    jobs the evaluation added on its own (escalation, ensemble).
    """
    skipped = set((store.get_meta("skipped") or {}).get("jobs", []))
    jobs = [j for j in plan_jobs(config["attacks"], config["norm"], config["eps"]) if j.key not in skipped]
    jobs += plan_jobs(store.get_meta("adaptive") or [], config["norm"], config["eps"])
    added = [Job.from_dict(d) for d in store.get_meta("added") or []]
    names = list(dict.fromkeys(j.name for j in added))  # (an escalation step carried over the sweep after its
    return jobs + sorted(added, key=lambda j: (names.index(j.name), j.eps))  # largest ε: its rows by ε)


@dataclass
class WorstCase(_Scored):
    """Per example at one ε: broken by any attack, still correct (top-1, top-5) after all, and which broke it."""

    broken_by: list[str | None] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many examples' worst case each attack produced (the first attack, in row order, that broke it)."""
        return dict(Counter(a for a in self.broken_by if a is not None))


def _partial(table: _Table, d: dict[str, Any], o: Outcome, eps: float) -> _Scored:
    """A check's attack on its subset, spread over every example (the others are left as they were)."""
    n = table.n
    idx = o["idx"].long()
    dist = o[d["norm"]]
    broken, top1, top5 = outcome_at_eps(o["adv"], dist, eps if d.get("minimal") else None, o["top1"], o["top5"],
                                        table.clean["top1"][idx], table.clean["top5"][idx])
    full = _Scored(torch.zeros(n, dtype=torch.bool, device=CPU), table.clean["top1"].clone(),
                   table.clean["top5"].clone(), 0.0)
    full.broken[idx], full.top1[idx], full.top5[idx] = broken, top1, top5
    return full


def _attribute(worst: dict[float, WorstCase], name: str, e: float, s: _Scored, n: int) -> None:
    w = worst.setdefault(e, WorstCase(torch.zeros(n, dtype=torch.bool, device=CPU),
                                      torch.ones(n, dtype=torch.bool, device=CPU),
                                      torch.ones(n, dtype=torch.bool, device=CPU), 0.0, [None] * n))
    for i in (s.broken & ~w.broken).nonzero().flatten().tolist():
        w.broken_by[i] = name
    w.broken |= s.broken
    w.top1 &= s.top1
    w.top5 &= s.top5
    w.seconds += s.seconds


def _row_warnings(config: dict[str, Any], job: Job, e: float | None, budgets: list[float | None],
                  fired: list[dict[str, Any]]) -> list[str]:
    """The fired checks' messages a row carries.

    At the sweep's largest ε, every one; on a row of another norm (CW's L2 sweep beside an L∞
    evaluation), at its own largest budget, those about the model's gradients.
    """
    if not fired or not get_attack(job.attack).maskable:
        return []
    if job.norm == config["norm"]:
        return [c["message"] for c in fired] if e == max(config["eps"]) else []
    largest = max((b for b in budgets if b is not None), default=None)
    return [c["message"] for c in fired if c["code"] in GRADIENT_CHECKS] if e is not None and e == largest else []


def _job_rows(table: _Table, job: Job, o: Outcome, seconds: float, fired: list[dict[str, Any]],
              worst: dict[float, WorstCase], d: Detected | None = None) -> list[Row]:
    """One job's rows (one per ε for a minimal attack); adds its outcomes to ``worst``."""
    config, clean = table.config, table.clean
    rows = []
    budgets: list[float | None] = list(job.sweep) if job.eps == math.inf else [job.eps]
    for e in budgets:
        scored_eps = e if job.eps == math.inf else None
        s = _Scored(*outcome_at_eps(o["adv"], o[job.norm], scored_eps, o["top1"], o["top5"],
                                    clean["top1"], clean["top5"]), seconds)
        row = table.row(job.name, job.norm, e, s, o)
        row.warnings = _row_warnings(config, job, e, budgets, fired) or row.warnings
        rows.append(row)
        if d is not None and table.detect is not None:
            within = o["adv"] if scored_eps is None else _within(o, job.norm, scored_eps)
            numbers, handled = row_numbers(s.broken, s.top1, at_budget(job, d, table.detect, within), table.detect)
            _set(row, numbers)
            if e is not None and job.norm == config["norm"]:
                table.handled[e] = table.handled.get(e, torch.ones_like(handled)) & handled
        if e is not None and job.norm == config["norm"]:
            _attribute(worst, job.name, e, s, table.n)
    return rows


def _within(o: Outcome, norm: str, e: float) -> torch.Tensor:
    """Whether a minimal attack's example counts at ε (misclassified and within the budget)."""
    no = torch.zeros_like(o["adv"])
    return outcome_at_eps(o["adv"], o[norm], e, o["adv"], o["adv"], no, no)[1]


def _set(row: Row, numbers: dict[str, float | None]) -> None:
    for k, v in numbers.items():
        setattr(row, k, v)


def _rows_and_worst(store: Store, config: dict[str, Any], checks: bool = True
                    ) -> tuple[list[Row], dict[float, WorstCase], _Table]:
    table = _Table(config, store.clean())
    table.detect = clean_detected(store, table.n) if config.get("detector") else None
    fired = [c for c in (store.get_meta("checks") or []) if c["fired"]]
    rows: list[Row] = []
    worst: dict[float, WorstCase] = {}
    for job in stored_jobs(store, config):
        o = store.outcomes(job.key)
        if len(o["idx"]) != table.n:
            raise RuntimeError(f"store: job {job.key} has {len(o['idx'])} of {table.n} outcomes; re-run to finish it")
        det = job_detected(store, job, table.n) if table.detect is not None else None
        rows += _job_rows(table, job, o, store.seconds(job.key), fired, worst, det)
    for d in (store.get_meta("check_jobs") or []) if checks else []:
        if d["norm"] == config["norm"] and d["eps"] in worst:
            # (seconds 0: the checks' time is reported as the checks' cost, not the worst case's)
            _attribute(worst, d["name"], d["eps"], _partial(table, d, store.outcomes(d["key"]), d["eps"]), table.n)
    return rows, worst, table


def worst_case(store: Store, config: dict[str, Any], checks: bool = True) -> dict[float, WorstCase]:
    """Per ε of the sweep: each example's worst case over every attack that ran at that ε.

    The checks' own attacks on their subset count too, unless ``checks`` is False.
    """
    return _rows_and_worst(store, config, checks)[1]


def aggregate(store: Store, config: dict[str, Any]) -> tuple[list[Row], dict[float, WorstCase]]:
    """The table's rows and the per-example worst case per ε, from one pass over the store."""
    rows, worst, table = _rows_and_worst(store, config)
    if table.detect is not None:
        rows.insert(0, _clean_row(table))
    for e in sorted(worst):
        w = worst[e]
        row = table.row("worst-case", config["norm"], e, w, None)
        if e in table.handled:  # handled under every attack with a detector score at ε (not the checks' own)
            _set(row, {"clean_rejected": rows[0].clean_rejected,
                       "defended_acc": float(table.handled[e].double().mean())})
        at_e = [r for r in rows if r.eps == e and r.norm == config["norm"] and r.attack != "clean"]
        row.broken_by = w.counts()
        if at_e:
            row.strongest = _strongest(at_e, row.broken_by)
        rows.append(row)
    return rows, worst


def _strongest(at_e: list[Row], broken_by: dict[str, int]) -> str:
    """The attack with the lowest Acc@1 among the rows, and the attacks without a row that broke any example.

    The worst case also counts the gradient-masking checks' attacks on their subset: ``broken_by`` credits
    each example to the first attack that broke it, rows first, so a check attack with a count broke an
    example no row's attack broke, and the bracket names it (``fgsm + checks' pgd``): the worst case is never
    read as the named row's own figure.
    """
    best = min(at_e, key=lambda r: r.acc1_adv).attack
    shown = {r.attack for r in at_e}
    extra = [k.replace("check:", "checks' ") for k in sorted(broken_by) if k not in shown and broken_by[k]]
    return " + ".join([best, *extra])


def _clean_row(table: _Table) -> Row:
    """The ``clean`` row of an evaluation with a detector: no attack (ε 0), the clean defended accuracy."""
    c = table.clean
    s = _Scored(torch.zeros(table.n, dtype=torch.bool, device=CPU), c["top1"], c["top5"], 0.0)
    row = table.row("clean", table.config["norm"], 0.0, s, None)
    assert table.detect is not None
    _set(row, clean_numbers(c["top1"], table.detect))
    return row


def compute_rows(store: Store, config: dict[str, Any]) -> list[Row]:
    """The table's rows, computed from the store alone."""
    return aggregate(store, config)[0]


__all__ = ["WorstCase", "aggregate", "compute_rows", "stored_jobs", "worst_case"]
