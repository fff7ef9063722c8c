"""The report's account of what the evaluation did on its own, and what it cost.

Three sections, each a heading, a sentence and a table, rendered to Markdown and to HTML:

* **Added by the evaluation** — white-box jobs skipped (and why), each escalation step (why it
  ran, Acc@1 on the checks' subset before and after, time) and the APGD ensemble with its version
  and budgets;
* **Where the worst case came from** — per ε, how many examples each attack broke first (the
  checks' own attacks on their subset included);
* **Cost** — wall time of the planned attacks, the checks, the escalation and the ensemble, and
  the share of the checks and the escalation.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from advlab.report.settings import html_table, md_table
from advlab.results.plan import key_names
from advlab.results.records import Row

STANDARD = {"steps": 100, "candidates": 10, "max_queries": 5000}  # AutoAttack's standard version


@dataclass
class Section:
    """A heading, a sentence and a table."""

    title: str
    text: str
    head: Sequence[str]
    rows: list[list[str]]
    table_id: str


def ensemble_version(params: dict[str, Any]) -> str:
    """``standard`` or ``cheaper``, with the budgets: APGD steps, APGD-T targets, Square queries."""
    kind = "standard" if all(params.get(k, v) >= v for k, v in STANDARD.items()) else "cheaper than standard"
    restarts = int(params.get("restarts", 1))
    again = f", APGD-CE, APGD-T and Square each with {restarts} restarts" if restarts > 1 else ""
    again = (", APGD-DLR" + (f" × {restarts}" if restarts > 1 else "") if params.get("dlr") else "") + again
    share = float(params.get("borderline") or 0)
    if share > 0:
        again += (f", then Square × {restarts} more on the {share:.0%} of the survivors closest to the boundary")
    return (f"{kind}: APGD-CE {params.get('steps')} steps, APGD-T {int(params.get('candidates', 10)) - 1} targets × "
            f"{params.get('steps')} steps, Square {params.get('max_queries')} queries{again}")


def added_section(meta: dict[str, Any]) -> Section | None:
    """Skipped white-box jobs, the escalation's steps and the ensemble, or None if the evaluation added nothing."""
    rows: list[list[str]] = []
    skipped = meta.get("skipped") or {}
    if skipped.get("jobs"):
        names = ", ".join(key_names(skipped["jobs"]))
        rows.append(["white-box rows not computed", names, str(skipped.get("why")), "—", "—"])
        if meta.get("adaptive"):
            how = meta.get("adaptive_why") or ("PGD through the automatic stand-in (BPDA) found from the "
                                               "model's behaviour")
            rows.append([f"over the sweep: {', '.join(meta['adaptive'])}", how, "in place of the white-box rows", "—",
                         "—"])
    for s in meta.get("escalation") or []:
        swept = (f" (at ε {s['eps']:g})" if "eps" in s else "") + (
            f"; carried to ε {', '.join(f'{e:g}' for e in s['swept'])}" if s.get("swept") else "")
        rows.append([f"escalation: {s['step']}", s["why"] + swept, "unanswered: " + ", ".join(s["unanswered_before"]),
                     f"{s['subset_acc1_before']:.3f} → {s['subset_acc1_after']:.3f}", f"{s['seconds']:.1f}"])
    ens = meta.get("ensemble") or {}
    if ens.get("added"):
        rows.append(["apgd-ensemble", ensemble_version(ens.get("params") or {}), ens.get("why", ""), "—",
                     f"{(meta.get('costs') or {}).get('ensemble', 0.0):.1f}"])
    if not rows:
        return None
    return Section("Added by the evaluation", "What advlab ran or skipped on its own (docs/warnings.md, "
                   "docs/evaluation.md); Acc@1 is on the checks' subset of correctly classified inputs.",
                   ["what", "how", "why", "subset Acc@1", "time (s)"], rows, "added")


def worst_section(rows: Sequence[Row]) -> Section | None:
    """Per ε, the number of examples whose worst case each attack produced (first in row order)."""
    out = [[f"{r.eps:g} ({r.norm})", ", ".join(f"{a} {n}" for a, n in sorted(r.broken_by.items(), key=lambda t: -t[1]))]
           for r in rows if r.attack == "worst-case" and r.broken_by]
    if not out:
        return None
    return Section("Where the worst case came from", "Each broken example is credited to the first attack, in the "
                   "table's order, that broke it; `check:*` are the gradient-masking checks' own attacks on "
                   "their subset.", ["ε", "examples broken first by"], out, "worst-by")


def cost_section(meta: dict[str, Any]) -> Section | None:
    """Wall time per phase and the share of the checks and the escalation."""
    costs = meta.get("costs") or {}
    if not costs:
        return None
    total = sum(costs.values())
    extra = costs.get("checks", 0.0) + costs.get("escalation", 0.0)
    rows = [[phase, f"{costs[phase]:.1f}", f"{costs[phase] / total:.0%}" if total else "—"]
            for phase in ("detector", "attacks", "adaptive vs detector", "checks", "escalation", "ensemble")
            if phase in costs]
    text = f"The checks and the escalation took {extra / total:.0%} of the evaluation's time." if total else ""
    return Section("Cost", text, ["phase", "time (s)", "share"], rows, "costs")


def model_section(meta: dict[str, Any]) -> Section | None:
    """How advlab ran the model (its warnings when the run was made: an eval-mode copy, a cast, log p, ...)."""
    notes = meta.get("model_notes") or []
    if not notes:
        return None
    rows = [[kind, text.removeprefix("advlab: ")] for kind, _, text in (n.partition(": ") for n in notes)]
    return Section("The model as advlab ran it", "What advlab adapted, or could not, in the model (and data) it was "
                   "given (docs/evaluation.md, \"Your own models, your own images, a GPU\"); every number above is of "
                   "the model as run.", ["warning", "what"], rows, "model-notes")


def sections(meta: dict[str, Any], rows: Sequence[Row]) -> list[Section]:
    """The sections that have something to say."""
    return [s for s in (model_section(meta), added_section(meta), worst_section(rows), cost_section(meta))
            if s is not None]


def responses_markdown(meta: dict[str, Any], rows: Sequence[Row]) -> list[str]:
    """The sections as Markdown lines."""
    out: list[str] = []
    for s in sections(meta, rows):
        out += [f"## {s.title}", "", s.text, "", *md_table(s.head, s.rows), ""]
    return out


def responses_html(meta: dict[str, Any], rows: Sequence[Row]) -> str:
    """The sections as HTML."""
    return "".join(f"<h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>"
                   f"{html_table(s.head, s.rows, s.table_id)}" for s in sections(meta, rows))


__all__ = ["Section", "ensemble_version", "model_section", "responses_html", "responses_markdown", "sections"]
