"""The robustness table as terminal text or Markdown, alone or next to a baseline's rows."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from advlab.results.records import Row

HEAD = ["Attack", "Dataset", "ε (norm)", "Acc@1 w/", "Acc@5 w/", "Acc@1 w/o", "Acc@5 w/o", "success", "med L0",
        "med L1", "med L2", "med L∞", "queries", "time (s)"]


def fmt(v: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``—`` for a missing or NaN value."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


DETECT_HEAD = ["det. AUC", "TPR@FPR", "clean rej.", "defended"]  # with a detector (the reject option)


def detect_cells(row: Row) -> list[str]:
    """A row's reject-option cells under :data:`DETECT_HEAD` (— where a number does not apply)."""
    return [fmt(row.detect_auc), fmt(row.detect_tpr), fmt(row.clean_rejected), fmt(row.defended_acc)]


def head_and_cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """The table's head and each row's cells: :data:`HEAD`, and :data:`DETECT_HEAD` when the rows have a detector."""
    det = any(r.has_detector for r in rows)
    return HEAD + DETECT_HEAD * det, [cells(r) + detect_cells(r) * det for r in rows]


def eps_label(row: Row) -> str:
    """The threat model of a row as text, e.g. ``0.3 (linf)``."""
    return f"— ({row.norm}, unbounded)" if row.eps is None else f"{row.eps:g} ({row.norm})"


def attack_label(row: Row) -> str:
    """The attack's name, with the strongest attack of a worst-case row in brackets."""
    return row.attack + (f" [{row.strongest}]" if row.strongest else "")


def cells(row: Row) -> list[str]:
    """A row's cells under :data:`HEAD` (the attack's name without marks)."""
    return [attack_label(row), row.dataset, eps_label(row), fmt(row.acc1_adv), fmt(row.acc5_adv),
            fmt(row.acc1_clean), fmt(row.acc5_clean), fmt(row.success_rate), fmt(row.median_l0, 0),
            fmt(row.median_l1, 2), fmt(row.median_l2), fmt(row.median_linf), fmt(row.mean_queries, 0),
            fmt(row.seconds, 1)]


def warning_notes(rows: Sequence[Row]) -> list[str]:
    """One note per gradient-masking warning, naming the rows it affects."""
    flagged: dict[str, list[str]] = {}
    for r in rows:
        for w in r.warnings:
            flagged.setdefault(w, []).append(f"{r.attack} at {eps_label(r)}")
    return [f"⚠ {w} — affects {', '.join(where)}" for w, where in flagged.items()]


def format_table(rows: Sequence[Row], markdown: bool, show_model: bool = False) -> str:
    """The robustness table as text or Markdown.

    Columns: Attack | Dataset | ε (norm) | Acc@1 w/ | Acc@5 w/ | Acc@1 w/o | Acc@5 w/o | success |
    median L0/L1/L2/L∞ | queries | time.
    """
    head_cells, all_cells = head_and_cells(rows)
    head = ["Model"] * show_model + head_cells
    body = []
    for r, c in zip(rows, all_cells, strict=True):
        c[0] += " ⚠" if r.warnings else ""
        body.append([r.model] * show_model + c)
    notes = warning_notes(rows)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))
    return "\n".join([text_table(head, body), *notes])


def warnings_cell(row: Row) -> str:
    """A row's warnings as their check codes (``⚠ GM06, GM08``), the full messages in the cell's tooltip.

    The messages themselves are in the checks table and under the Markdown table; in every row
    they made the table several screens tall.
    """
    if not row.warnings:
        return "<td></td>"
    codes = ", ".join(w.split(" ", 1)[0] for w in row.warnings)
    return f'<td title="{html.escape("; ".join(row.warnings))}">⚠ {html.escape(codes)}</td>'


def results_html(rows: Sequence[Row]) -> str:
    """The results table of the page (id ``results``), warnings (check codes) in the last column."""
    head, all_cells = head_and_cells(rows)
    heads = "".join(f"<th>{h}</th>" for h in [*head, "warnings"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cs) + warnings_cell(r) + "</tr>"
        for r, cs in zip(rows, all_cells, strict=True)
    )
    return f'<div class="wide"><table id="results"><thead><tr>{heads}</tr></thead>\n<tbody>{body}</tbody></table></div>'


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table for the terminal: columns padded to their widest cell, a rule under the head."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_comparison(rows: Sequence[Row], baseline: Sequence[Row], markdown: bool = False) -> str:
    """The table with each of ``baseline``'s rows right after the model's row of the same (attack, norm, ε)."""
    base = {(r.attack, r.norm, r.eps): r for r in baseline}
    merged: list[Row] = []
    for r in rows:
        merged.append(r)
        if (r.attack, r.norm, r.eps) in base:
            merged.append(base.pop((r.attack, r.norm, r.eps)))
    merged += list(base.values())
    return format_table(merged, markdown, show_model=True)


__all__ = ["DETECT_HEAD", "HEAD", "attack_label", "cells", "detect_cells", "eps_label", "fmt", "format_comparison",
           "format_table", "head_and_cells"]
