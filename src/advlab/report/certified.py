"""The certified section of the report: proven lower bound beside the attacked upper bound, per ε.

Rows come from :func:`advlab.evaluation.certified.certify_rows` (kept in the store's meta); the
figure plots the attacked (worst-case) accuracy and each method's certified accuracy against ε and
shades the gap between the best certificate and the attacks: the honest uncertainty of the evaluation.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from advlab.report.figures import accuracy_axes, new_figure, png_bytes
from advlab.report.settings import md_table
from advlab.report.tables import fmt, text_table

HEAD = ["method", "norm", "ε", "certified Acc@1 (≥)", "attacked Acc@1 (≤)", "gap", "clean Acc@1", "n", "seconds"]
LEGEND = ("Certified = correctly classified and proven so on the whole ε-ball (a lower bound no attack can beat); "
          "attacked = still correct after every attack (worst case, an upper bound). The gap is what the "
          "evaluation leaves open. Smoothing certifies the smoothed classifier, with probability 1 − α.")


def certified_cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One line of cells per (method, ε)."""
    return [[r["method"], r["norm"], f"{r['eps']:g}", fmt(r["certified"]), fmt(r["attacked"]),
             fmt(r["attacked"] - r["certified"]), fmt(r["clean"]), str(r["n"]), f"{r['seconds']:.1f}"] for r in rows]


def certified_text(rows: Sequence[dict[str, Any]]) -> str:
    """The certified rows as an aligned terminal table (empty without rows)."""
    return "" if not rows else "Certified (lower bound) next to attacked (upper bound):\n" + text_table(
        HEAD, certified_cells(rows))


def certified_markdown(rows: Sequence[dict[str, Any]] | None) -> list[str]:
    """The report's Markdown section (empty without certified rows)."""
    if not rows:
        return []
    return ["## Certified next to attacked", "", LEGEND, "", *md_table(HEAD, certified_cells(rows)), ""]


def certified_html(rows: Sequence[dict[str, Any]] | None) -> str:
    """The page's section (empty without certified rows)."""
    if not rows:
        return ""
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                   for cells in certified_cells(rows))
    return (f'<h2>Certified next to attacked</h2><div class="wide"><table id="certified"><thead><tr>{heads}</tr>'
            f"</thead><tbody>{body}</tbody></table></div><p>{html.escape(LEGEND)}</p>")


def certified_figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """Attacked and certified Acc@1 against ε (ε = 0: clean), the gap to the best certificate shaded."""
    fig = new_figure((5.6, 3.8))
    ax = fig.subplots()
    clean = rows[0]["clean"]
    attacked = sorted({r["eps"]: r["attacked"] for r in rows}.items())
    xs = [0.0] + [e for e, _ in attacked]
    ax.plot(xs, [clean] + [a for _, a in attacked], marker="o", color="C3", label="attacked (worst case, ≤)")
    best = {e: 0.0 for e, _ in attacked}
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = sorted((r["eps"], r["certified"]) for r in rows if r["method"] == method)
        for e, c in pts:
            best[e] = max(best[e], c)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", linestyle="--", color=f"C{i}",
                label=f"certified: {method} (≥)")
    ax.fill_between([e for e, _ in attacked], [best[e] for e, _ in attacked], [a for _, a in attacked],
                    color="C3", alpha=0.15, label="gap (unknown)")
    accuracy_axes(ax, f"ε ({rows[0]['norm']})", "Acc@1", legend_columns=2)
    fig.tight_layout()
    return png_bytes(fig, dpi=90, bbox_inches="tight")


__all__ = ["certified_figure", "certified_html", "certified_markdown", "certified_text"]
