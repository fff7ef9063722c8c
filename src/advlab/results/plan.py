"""The jobs of an evaluation: one attack run at a norm and a budget. Their keys are the store's schema.

Fixed-budget attacks run once per ε. Minimal-perturbation attacks (``minimal=True``) run once
with ε = inf and are scored at every ε of the sweep from their per-example distance. Attacks that
ignore the budget (``bounded=False``, e.g. the negative image) run once and give one row.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from advlab.attacks import get_attack

DEFAULT_EPS: dict[str, tuple[float, ...]] = {
    "linf": (0.1, 0.2, 0.3),
    "l2": (1.0, 1.5, 2.0),
    "l1": (5.0, 10.0, 15.0),
    "l0": (5.0, 10.0, 20.0),
}


@dataclass(frozen=True)
class Job:
    """One attack run over all batches, at a norm and a budget.

    The budget is inf for minimal-perturbation attacks and None for attacks that ignore it. A job
    the evaluation adds on its own (the escalation, the ensemble) may carry a ``label`` — the row's
    name and the key's first part, e.g. ``square-5000`` — and ``params`` that override every other
    source of parameters (a tuple of (name, value) pairs, so the job stays hashable).
    """

    attack: str
    norm: str
    eps: float | None
    sweep: tuple[float, ...]
    label: str = ""
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """The row's attack name: the label, else the attack's registry name."""
        return self.label or self.attack

    @property
    def key(self) -> str:
        """Stable identifier in the store."""
        return f"{self.name}|{self.norm}|{self.eps!r}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the store's meta keeps added jobs this way)."""
        return {"attack": self.attack, "norm": self.norm, "eps": self.eps, "sweep": list(self.sweep),
                "label": self.label, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        """The job :meth:`as_dict` described."""
        return cls(d["attack"], d["norm"], d["eps"], tuple(d["sweep"]), d.get("label", ""),
                   tuple(sorted((d.get("params") or {}).items())))


def key_names(keys: Sequence[str]) -> list[str]:
    """The row names in job keys (``pgd|linf|0.3`` → ``pgd``), each once, in order."""
    return list(dict.fromkeys(k.split("|")[0] for k in keys))


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the store's meta can keep (numbers, strings, booleans, None; not a ``grad_fn``)."""
    return {k: v for k, v in params.items() if isinstance(v, (bool, int, float, str)) or v is None}


def plan_jobs(attacks: Sequence[str], norm: str, eps: Sequence[float]) -> list[Job]:
    """The jobs of a sweep.

    An attack that does not support ``norm`` runs at its first norm with that norm's default sweep.
    """
    jobs = []
    for name in attacks:
        info = get_attack(name)
        a_norm = norm if norm in info.norms else info.norms[0]
        sweep = tuple(eps) if a_norm == norm else DEFAULT_EPS[a_norm]
        if info.minimal:
            jobs.append(Job(info.name, a_norm, math.inf, sweep))
        elif not info.bounded:
            jobs.append(Job(info.name, a_norm, None, sweep))
        else:
            jobs.extend(Job(info.name, a_norm, float(e), sweep) for e in sweep)
    return jobs


def batch_seed(seed: int, job_key: str, batch: int) -> int:
    """A seed derived from (seed, job, batch): a resumed batch draws what it drew the first time."""
    digest = hashlib.sha256(f"{seed}|{job_key}|{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


__all__ = ["DEFAULT_EPS", "Job", "batch_seed", "json_params", "key_names", "plan_jobs"]
