"""The table's rows, computed from the results store alone.

Every number comes from :mod:`advlab.metrics` applied to the stored per-example outcomes, which
were judged from the model's own prediction on the returned x_adv, never from an attack's own
success flag. A final ``worst-case`` row per ε counts an example as broken if any bounded attack
broke it at that ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from advlab.attacks import get_attack
from advlab.metrics import mean_or_none, median_or_none, outcome_at_eps
from advlab.results.plan import Job, plan_jobs
from advlab.results.records import Row
from advlab.results.store import Store

Outcome = dict[str, torch.Tensor]


@dataclass
class _Scored:
    """Per-example (broken, top-1 correct, top-5 correct) of an attack at one budget, and its time."""

    broken: torch.Tensor
    top1: torch.Tensor
    top5: torch.Tensor
    seconds: float

    def merge(self, other: _Scored) -> _Scored:
        """Broken by either, correct under both: the worst case of the two."""
        return _Scored(self.broken | other.broken, self.top1 & other.top1, self.top5 & other.top5,
                       self.seconds + other.seconds)


@dataclass
class _Table:
    """What every row of one evaluation shares: its configuration and clean predictions."""

    config: dict[str, Any]
    clean: Outcome

    @property
    def n(self) -> int:
        return len(self.clean["label"])

    def row(self, attack: str, norm: str, eps: float | None, s: _Scored, o: Outcome | None) -> Row:
        """A row from scored outcomes; ``o`` (None for the worst case) gives the norms and queries."""
        med = {k: median_or_none(o[k][s.broken]) if o is not None else None for k in ("l0", "l1", "l2", "linf")}
        q = o["queries"][~torch.isnan(o["queries"])] if o is not None else torch.empty(0)
        n_correct = int(self.clean["top1"].sum())
        c = self.config
        return Row(attack, c["dataset"], c["model"], norm, eps, self.n, float(s.top1.double().mean()),
                   float(s.top5.double().mean()), float(self.clean["top1"].double().mean()),
                   float(self.clean["top5"].double().mean()),
                   int(s.broken.sum()) / n_correct if n_correct else 0.0, med["l0"], med["l1"], med["l2"],
                   med["linf"], mean_or_none(q), s.seconds, c["seed"])


def stored_jobs(store: Store, config: dict[str, Any]) -> list[Job]:
    """The jobs of an evaluation: its attacks, then the adaptive attack if a check added it."""
    jobs = plan_jobs(config["attacks"], config["norm"], config["eps"])
    return jobs + plan_jobs(store.get_meta("adaptive") or [], config["norm"], config["eps"])


def _job_rows(table: _Table, job: Job, o: Outcome, seconds: float, fired: list[str],
              worst: dict[float, _Scored]) -> list[Row]:
    """One job's rows (one per ε for a minimal attack); adds its outcomes to ``worst``."""
    config, clean = table.config, table.clean
    rows = []
    budgets: list[float | None] = list(job.sweep) if job.eps == math.inf else [job.eps]
    for e in budgets:
        scored_eps = e if job.eps == math.inf else None
        s = _Scored(*outcome_at_eps(o["adv"], o[job.norm], scored_eps, o["top1"], o["top5"],
                                    clean["top1"], clean["top5"]), seconds)
        row = table.row(job.attack, job.norm, e, s, o)
        if fired and get_attack(job.attack).maskable and e == max(config["eps"]) and job.norm == config["norm"]:
            row.warnings = list(fired)
        rows.append(row)
        if e is not None and job.norm == config["norm"]:
            worst[e] = worst[e].merge(s) if e in worst else s
    return rows


def compute_rows(store: Store, config: dict[str, Any]) -> list[Row]:
    """The table's rows, computed from the store alone."""
    table = _Table(config, store.clean())
    fired = [c["message"] for c in (store.get_meta("checks") or []) if c["fired"]]
    rows: list[Row] = []
    worst: dict[float, _Scored] = {}
    for job in stored_jobs(store, config):
        o = store.outcomes(job.key)
        if len(o["idx"]) != table.n:
            raise RuntimeError(f"store: job {job.key} has {len(o['idx'])} of {table.n} outcomes; re-run to finish it")
        rows += _job_rows(table, job, o, store.seconds(job.key), fired, worst)
    for e in sorted(worst):
        row = table.row("worst-case", config["norm"], e, worst[e], None)
        at_e = [r for r in rows if r.eps == e and r.norm == config["norm"]]
        if at_e:
            row.strongest = min(at_e, key=lambda r: r.acc1_adv).attack
        rows.append(row)
    return rows


__all__ = ["compute_rows", "stored_jobs"]
