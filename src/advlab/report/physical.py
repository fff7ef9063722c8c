"""The physical lab report (``advlab physical``): tables, figures, report.md, report.html, results.json.

Written from the lab's summary (:func:`advlab.lab.run_lab`) and its example views alone. The lab
table is the lecture's (Eykholt et al. 2018, Table 2): rows are distance (the sign's width in
pixels) × viewing angle, columns the light levels, each cell the targeted success over the views
whose clean sign was read correctly, with the count. Figures: the signs as crafted, one grid of
example views per sign and light level (width × angle, the predicted class above each), and RP2's
success on its own EOT views during crafting. Tables reuse :mod:`advlab.report.settings`; figures
are matplotlib ``Figure`` objects (never pyplot); every file is written atomically.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from advlab.report.figures import new_figure, png_bytes
from advlab.report.settings import html_document, html_table, md_table, value_text, write_bundle
from advlab.report.tables import text_table

__all__ = ["figures", "html_page", "lab_rows", "markdown", "summary_rows", "tables", "terminal", "write_report"]

Figure = tuple[str, str, bytes]
Examples = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
SUMMARY_HEAD = ["attack", "region (share of the sign)", "budget", "grid average", "all views pooled",
                "cells counted", "crafting s"]


def pct(v: float | None) -> str:
    """A share as a percentage with one decimal, ``—`` for None or NaN."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def _cells_counted(a: Mapping[str, Any]) -> str:
    flat = [c for w in a["counted"] for ang in w for c in ang]
    return f"{sum(1 for c in flat if c)} of {len(flat)}"


def summary_rows(s: Mapping[str, Any]) -> list[list[str]]:
    """One row per sign attacked: region, budget, the grid's average and pooled success, crafting time."""
    rows = []
    for a in s["attacks"]:
        n = a["notes"]
        rows.append([a["name"], f"{n['region']} ({pct(n['share'])})", n["budget"], pct(a["average"]),
                     pct(a["pooled"]), _cells_counted(a), f"{n['seconds']:.1f}"])
    return rows


def _grid_labels(s: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    g = s["grid"]
    return ([f"{w:g} px" for w in g["widths"]], [f"{a:g}°" for a in g["angles"]], [f"light {v:g}" for v in g["lights"]])


def lab_rows(s: Mapping[str, Any], a: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The lecture's table for one attack: rows width × angle, columns light; each cell ``rate (hits/counted)``."""
    widths, angles, lights = _grid_labels(s)
    head = ["width", "angle", *lights, "row mean"]
    rows = []
    for i, w in enumerate(widths):
        for j, ang in enumerate(angles):
            rates = [a["rate"][i][j][k] for k in range(len(lights))]
            cells = [f"{pct(r)} ({a['hits'][i][j][k]}/{a['counted'][i][j][k]})" for k, r in enumerate(rates)]
            known = [r for r in rates if r is not None]
            rows.append([w, ang, *cells, pct(sum(known) / len(known) if known else None)])
    return head, rows


def clean_rows(s: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The share of views whose clean sign the model reads as the source class, per cell."""
    widths, angles, lights = _grid_labels(s)
    rate = s["clean"]["rate"]
    rows = [[w, ang, *(pct(rate[i][j][k]) for k in range(len(lights)))]
            for i, w in enumerate(widths) for j, ang in enumerate(angles)]
    return ["width", "angle", *lights], rows


def setting_rows(s: Mapping[str, Any], command: str) -> list[list[str]]:
    """The run's settings: model, classes, grid, views, seed, each attack's parameters, the command."""
    g = s["grid"]
    rows = [["model", str(s.get("model", "—"))], ["attack", f"{s['source']} → {s['target']} (targeted)"],
            ["lab grid", f"widths {value_text(g['widths'])} px × angles {value_text(g['angles'])}° × lights "
                         f"{value_text(g['lights'])}"],
            ["views per cell", f"{s['views_per_cell']} ({s['draws']} held-out draws × {s['backgrounds']['held_out']} "
                               "held-out backgrounds)"],
            ["crafting backgrounds", f"{s['backgrounds']['train']} training backgrounds"],
            ["seed", str(s["seed"])]]
    rows += [[f"{a['name']} parameters", ", ".join(f"{k} = {value_text(v)}" for k, v in a["params"].items())]
             for a in s["attacks"]]
    return [*rows, ["command", command]]


def tables(s: Mapping[str, Any], command: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, head, rows) of every table of the report."""
    out = [("Targeted success over the lab grid", SUMMARY_HEAD, summary_rows(s))]
    for a in s["attacks"]:
        out.append((f"Lab table: {a['name']}", *lab_rows(s, a)))
    out.append((f"Clean {s['source']} signs read as {s['source']}", *clean_rows(s)))
    out.append(("Settings", ["setting", "value"], setting_rows(s, command)))
    return out


def verdict(s: Mapping[str, Any]) -> str:
    """One sentence on the acceptance bar: the first attack's grid average against ``s['acceptance']``."""
    a = s["attacks"][0]
    bar = s["acceptance"]
    met = a["average"] is not None and not math.isnan(a["average"]) and a["average"] >= bar
    others = "; ".join(f"{b['name']} {pct(b['average'])}" for b in s["attacks"][1:])
    return (f"{a['name']}: {pct(a['average'])} targeted success averaged over the grid "
            f"({'meets' if met else 'misses'} the {pct(bar)} bar)" + (f"; {others}" if others else "") + ".")


def terminal(s: Mapping[str, Any]) -> str:
    """The summary and lab tables as terminal text, and the verdict."""
    parts = [text_table(h, r) for t, h, r in tables(s, "") if t != "Settings"]
    return "\n\n".join([*parts, verdict(s)])


def _show(ax: Any, img: torch.Tensor) -> None:
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def signs_figure(signs: Mapping[str, torch.Tensor]) -> bytes:
    """The clean and every attacked sign, canonical (on grey)."""
    fig = new_figure((1.9 * len(signs), 2.1))
    axes = fig.subplots(1, len(signs), squeeze=False)[0]
    for ax, (name, rgba) in zip(axes, signs.items(), strict=True):
        _show(ax, rgba[:3] * rgba[3:] + 0.5 * (1 - rgba[3:]))
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def views_figure(s: Mapping[str, Any], images: torch.Tensor, pred: torch.Tensor, light: int) -> bytes:
    """Example views at one light level: rows widths, columns angles, the predicted class above each."""
    widths, angles, _ = _grid_labels(s)
    classes = s["classes"]
    fig = new_figure((1.35 * len(angles) + 0.5, 1.45 * len(widths) + 0.3))
    axes = fig.subplots(len(widths), len(angles), squeeze=False)
    for i, w in enumerate(widths):
        for j, ang in enumerate(angles):
            ax = axes[i][j]
            _show(ax, images[i, j, light])
            name = classes[int(pred[i, j, light])]
            colour = "#b00" if name == s["target"] else "#222"
            ax.set_title(name, fontsize=7, color=colour)
            if j == 0:
                ax.set_ylabel(w, fontsize=8)
            if i == len(widths) - 1:
                ax.set_xlabel(ang, fontsize=8)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=100)


def history_figure(history: Sequence[float], name: str) -> bytes:
    """The share of each crafting step's EOT views read as the target."""
    fig = new_figure((5.0, 2.6))
    ax = fig.subplots()
    ax.plot(range(1, len(history) + 1), history, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("EOT views read as target")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{name} while crafting", fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, dpi=90)


def figures(s: Mapping[str, Any], examples: Examples, signs: Mapping[str, torch.Tensor]) -> list[Figure]:
    """(name, caption, PNG) of every figure: the signs, example views per sign and light, crafting curves."""
    out = [("signs", "The clean sign and each attacked sign as crafted.", signs_figure(signs))]
    lights = s["grid"]["lights"]
    order = [len(lights) // 2, *(k for k in range(len(lights)) if k != len(lights) // 2)]
    for name, (images, pred) in examples.items():
        for k in order:
            out.append((f"views-{name}-light{k}", f"{name}: one held-out view per cell at light {lights[k]:g} "
                        "(rows: width, columns: angle; the class the model reads, red when it is the target).",
                        views_figure(s, images, pred, k)))
    for a in s["attacks"]:
        if a["history"]:
            out.append((f"history-{a['name']}", f"{a['name']}: the share of each step's EOT views read as "
                        f"{s['target']} while crafting.", history_figure(a["history"], a["name"])))
    return out


def markdown(s: Mapping[str, Any], figs: Sequence[Figure], command: str) -> str:
    """report.md (figures linked from figures/)."""
    lines = [f"# Physical lab report: {s['source']} → {s['target']}", "", f"Command: `{command}`", "", verdict(s), ""]
    for title, head, rows in tables(s, command):
        lines += [f"## {title}", "", *md_table(head, rows), ""]
    lines += ["## Figures", ""] + [f"![{cap}](figures/{name}.png)\n" for name, cap, _ in figs]
    return "\n".join(lines)


def html_page(s: Mapping[str, Any], figs: Sequence[Figure], command: str) -> str:
    """report.html: self-contained (figures embedded)."""
    body = "".join(f"<h2>{html.escape(t)}</h2>{html_table(h, r, t.lower().replace(' ', '-').replace(':', ''))}"
                   for t, h, r in tables(s, command))
    title = f"Physical lab report: {s['source']} → {s['target']}"
    return html_document(title, command, html.escape(verdict(s)), body, figs)


def write_report(directory: Path, s: Mapping[str, Any], examples: Examples, signs: Mapping[str, torch.Tensor],
                 command: str) -> list[Path]:
    """Write results.json, report.md, report.html and figures/*.png into ``directory`` (atomically)."""
    figs = figures(s, examples, signs)
    return write_bundle(directory, figs, {"command": command, **s}, markdown(s, figs, command),
                        html_page(s, figs, command))
