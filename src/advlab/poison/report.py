"""The poisoning report: a table (terminal and Markdown), an HTML page, figures, results.json.

Tables reuse :mod:`advlab.report.settings` (Markdown/HTML tables) and figures are drawn on
matplotlib ``Figure`` objects (:func:`advlab.report.figures.new_figure`), never pyplot; every file
is written atomically (:mod:`advlab._io`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from advlab.report.figures import new_figure, png_bytes
from advlab.report.settings import html_document, html_table, md_table, write_bundle
from advlab.report.tables import fmt as fmt_number
from advlab.report.tables import text_table

HEAD = ["model", "clean Acc@1", "Δ vs clean (points)", "ASR"]


def fmt(v: float | None) -> str:
    """A rate or an accuracy with 4 decimals, ``—`` when missing or NaN."""
    return fmt_number(v, 4)


def model_rows(s: dict[str, Any]) -> list[list[str]]:
    """One row per trained model: clean, poisoned and (with a defense) retrained on the cleaned set."""
    base = s["clean"]["acc1"]
    models = [("clean", s["clean"]), (f"poisoned ({s['attack']})", s["poisoned"])]
    if "defense" in s:
        models.append((f"cleaned by {s['defense']['name']}, retrained", s["defense"]))
    return [[name, fmt(m["acc1"]), f"{100 * (m['acc1'] - base):+.2f}", fmt(m.get("asr"))] for name, m in models]


def detail_rows(s: dict[str, Any]) -> list[list[str]]:
    """What/value rows: the attack's settings and cost, STRIP, the detector's rates."""
    rows = [["attack", s["attack"]], ["settings", json.dumps(s["params"], default=str)],
            ["poisoned examples", f"{s['poisons']} of {s['n_train']} (round(fraction·N), halves up)"],
            ["poisoning transform", f"{s['poison_seconds']:.2f} s"]]
    if "poison_share_of_training" in s:
        rows.append(["transform / poisoned training time", f"{100 * s['poison_share_of_training']:.2f} %"])
    p = s.get("poisoned", {})
    if "strip_auc" in p:
        rows.append(["STRIP AUC, triggered vs clean test inputs", fmt(p["strip_auc"])])
        rows.append(["STRIP: triggered inputs missed at 1 % clean flagged", fmt(p["strip_miss_at_1pct"])])
    d = s.get("defense")
    if d:
        rows += [["defense", f"{d['name']} {json.dumps(d['options'])}"], ["poisons found (TPR)", fmt(d["tpr"])],
                 ["clean flagged in the inspected class (FPR)", fmt(d.get("fpr_class"))],
                 ["clean flagged overall (FPR)", fmt(d["fpr_all"])], ["examples removed", f"{int(d['flagged'])}"]]
    if "target_index" in s:
        rows += [["target test image", f"#{s['target_index']} (class {s['target_class']})"],
                 ["base class (the attacker's goal)", str(s["params"]["base_class"])]]
    return rows


def collision_rows(s: dict[str, Any]) -> list[list[str]]:
    """Feature collision: the fine-tuned head's accuracy and its prediction for the target, clean vs poisoned."""
    return [[f"head fine-tuned on the {k} set", fmt(s[k]["acc1"]), str(s[k]["target_pred"]), str(s[k]["success"])]
            for k in ("clean", "poisoned")]


COLLISION_HEAD = ["model", "clean Acc@1", "target predicted as", "attack succeeded"]
SWEEP_HEAD = ["fraction", "poisons", "clean Acc@1", "ASR"]


def sweep_rows(s: dict[str, Any]) -> list[list[str]]:
    """ASR and accuracy at each swept poison fraction."""
    return [[f"{r['fraction']:g}", str(r["poisons"]), fmt(r["acc1"]), fmt(r.get("asr"))] for r in s.get("sweep", [])]


def tables(s: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, head, rows) of every table of the report."""
    main = ("Models", COLLISION_HEAD, collision_rows(s)) if "target_index" in s else ("Models", HEAD, model_rows(s))
    out = [main, ("Details", ["", "value"], detail_rows(s))]
    if s.get("sweep"):
        out.append(("Poison fraction sweep", SWEEP_HEAD, sweep_rows(s)))
    return out


def terminal(s: dict[str, Any]) -> str:
    """The report's tables as terminal text."""
    return "\n\n".join(text_table(h, r) for _, h, r in tables(s))


def examples_figure(examples: torch.Tensor, labels: torch.Tensor) -> bytes:
    """Poisoned training examples: the original above, the poison below, each with its label."""
    k = len(examples)
    fig = new_figure((1.5 * max(k, 1), 3.0))
    axes = fig.subplots(2, max(k, 1), squeeze=False)
    for j in range(k):
        for i, title in enumerate(("original", "poisoned")):
            img = examples[j, i].permute(1, 2, 0).squeeze(-1).cpu().numpy()
            axes[i][j].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[i][j].set_title(f"{title}, label {int(labels[j, i])}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return png_bytes(fig, dpi=90, bbox_inches="tight")


def sweep_figure(sweep: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """ASR and clean Acc@1 against the poison fraction (log axis)."""
    fig = new_figure((5.5, 3.4))
    ax = fig.subplots()
    f = [r["fraction"] for r in sweep]
    if any("asr" in r for r in sweep):
        ax.plot(f, [r.get("asr", float("nan")) for r in sweep], "o-", label="ASR")
    ax.plot(f, [r["acc1"] for r in sweep], "s--", label="clean Acc@1")
    ax.set_xscale("log")
    ax.set_xlabel("poison fraction of the training set")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, dpi=90)


def figures(s: dict[str, Any], examples: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, str, bytes]]:
    """(name, caption, PNG) of the report's figures."""
    out = [("examples", "Poisoned training examples: original (top) and as poisoned (bottom), with their labels.",
            examples_figure(examples, labels))]
    if s.get("sweep"):
        out.append(("sweep", "ASR and clean Acc@1 of the poisoned model against the poison fraction.",
                    sweep_figure(s["sweep"], s["attack"])))
    return out


def markdown(s: dict[str, Any], figs: Sequence[tuple[str, str, bytes]], command: str) -> str:
    """report.md (figures linked from figures/)."""
    lines = [f"# Poisoning report: {s['attack']}", "", f"Command: `{command}`", ""]
    for title, head, rows in tables(s):
        lines += [f"## {title}", "", *md_table(head, rows), ""]
    lines += ["## Figures", ""] + [f"![{cap}](figures/{name}.png)\n" for name, cap, _ in figs]
    return "\n".join(lines)


def html_page(s: dict[str, Any], figs: Sequence[tuple[str, str, bytes]], command: str) -> str:
    """report.html: self-contained (figures embedded)."""
    body = "".join(f"<h2>{html.escape(t)}</h2>{html_table(h, r, t.lower().replace(' ', '-'))}" for t, h, r in tables(s))
    return html_document(f"Poisoning report: {s['attack']}", command, "", body, figs)


def write_report(directory: Path, s: dict[str, Any], examples: torch.Tensor, labels: torch.Tensor,
                 command: str) -> list[Path]:
    """Write results.json, report.md, report.html and figures/*.png into ``directory`` (atomically)."""
    figs = figures(s, examples, labels)
    return write_bundle(directory, figs, {"command": command, **s}, markdown(s, figs, command),
                        html_page(s, figs, command))


__all__ = ["examples_figure", "figures", "html_page", "markdown", "sweep_figure", "terminal", "write_report"]
