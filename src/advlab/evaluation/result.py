"""The result of an evaluation: its rows, configuration, checks, per-example worst case and what it added."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab._io import atomic_write_text
from advlab.report.certified import certified_text
from advlab.report.detection import detector_text
from advlab.report.tables import format_table, results_html
from advlab.results.aggregate import WorstCase
from advlab.results.plan import key_names
from advlab.results.records import CONTRACT_KEYS, DETECT_KEYS, Row
from advlab.results.store import Store


@dataclass
class Evaluation:
    """The result of :func:`evaluate`: rows, configuration, checks and where the store lives."""

    rows: list[Row]
    config: dict[str, Any]
    store_path: Path | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_skipped: str | None = None  # why the gradient-masking checks did not run (a black box)
    worst: dict[float, WorstCase] = field(default_factory=dict)  # per ε: each example's worst case
    meta: dict[str, Any] = field(default_factory=dict)  # escalation, ensemble, costs, skipped jobs

    def robust_mask(self, eps: float) -> torch.Tensor:
        """Per example: still correctly classified after every attack that ran at ``eps`` (checks' included)."""
        return self._worst(eps).top1.clone()

    def broken_by(self, eps: float) -> list[str | None]:
        """Per example: the attack that produced its worst case at ``eps`` (None: not broken)."""
        return list(self._worst(eps).broken_by)

    def _worst(self, eps: float) -> WorstCase:
        for e, w in self.worst.items():
            if math.isclose(e, eps):
                return w
        raise ValueError(f"eps: expected one of the sweep's budgets {sorted(self.worst)}, got {eps}")

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as dicts with exactly the contract keys."""
        return [r.as_dict() for r in self.rows]

    def to_markdown(self) -> str:
        """The robustness table as Markdown."""
        return format_table(self.rows, markdown=True)

    def __repr__(self) -> str:
        """One line (a REPL's echo): what was evaluated and its worst case; ``print()`` gives the table."""
        worst = [f"{r.acc1_adv:.3f} ({r.norm} {r.eps:g})" for r in self.rows
                 if r.attack == "worst-case" and r.acc1_adv is not None and r.eps is not None]
        found = f", worst-case Acc@1 {', '.join(worst)}" if worst else ""
        return (f"<Evaluation of {self.config.get('model', '?')} on {self.config.get('dataset', '?')}: "
                f"{len(self.rows)} rows{found}; print() for the table>")

    def _repr_html_(self) -> str:
        """The table in a notebook (Jupyter shows this for an evaluation left as a cell's value), notes below it."""
        notes = [*(self.meta.get("notes") or []), *self._skipped()]
        return results_html(self.rows) + "".join(f"<p>⚠ {html.escape(n)}</p>" for n in notes)

    def _skipped(self) -> list[str]:
        skipped = self.meta.get("skipped") or {}
        return [f"Not computed: {', '.join(key_names(skipped['jobs']))} — {skipped.get('why')}"] if skipped.get(
            "jobs") else []

    def __str__(self) -> str:
        text = format_table(self.rows, markdown=False)
        for note in self.meta.get("notes") or []:
            text += f"\n⚠ {note}"
        if self.config.get("targeted"):
            left_out = self.config.get("untargetable") or []
            text += (f"\nTargeted ({self.config['targeted']}): success = classified as the target"
                     + (f"; left out (no targeted mode): {', '.join(left_out)}" if left_out else ""))
        if self.meta.get("detector"):
            text += "\n" + detector_text(self.meta["detector"])
        if self.meta.get("certified"):
            text += "\n\n" + certified_text(self.meta["certified"])
        for line in self._skipped():
            text += f"\n{line}"
        return text

    def save(self, directory: str | Path) -> None:
        """Write ``results.json``, ``results.csv`` (contract keys) and ``checks.json`` into ``directory`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        records = self.to_records()
        atomic_write_text(d / "results.json", json.dumps(records, indent=2) + "\n")
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(CONTRACT_KEYS + (DETECT_KEYS if self.meta.get("detector") else ())))
        w.writeheader()
        w.writerows(records)
        atomic_write_text(d / "results.csv", buf.getvalue())
        if self.checks:
            atomic_write_text(d / "checks.json", json.dumps(self.checks, indent=2) + "\n")


META_KEYS = ("escalation", "ensemble", "costs", "skipped", "added", "check_subset", "certified", "detector",
             "model_notes")


def evaluation_meta(store: Store) -> dict[str, Any]:
    """What the evaluation added on its own and what it cost, as the store records it."""
    return {k: store.get_meta(k) for k in META_KEYS}



__all__ = ["META_KEYS", "Evaluation", "evaluation_meta"]
