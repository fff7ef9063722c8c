"""A segmentation or detection evaluation's table, figures and report, from its store alone.

The table has the task's metrics with (w/) and without (w/o) attack; the figures are each metric
against ε per attack, and for a few scenes per attack (at the largest ε) the scene, its clean output
(label map or boxes), the adversarial scene, its output and the perturbation — the lecture's figure.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.report.figures import new_figure, png_bytes
from advlab.report.settings import PAGE_CSS, embedded_figures, environment_rows, html_table, md_table, setting_rows
from advlab.report.tables import eps_label, fmt, text_table
from advlab.results.dense import CLEAN, MAX_DET, METRICS, TARGET_METRIC, DenseRow, dense_rows, read_stats
from advlab.results.plan import Job
from advlab.results.store import Store

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LABELS = {"miou": "mIoU", "pixel_acc": "pixel acc", "map50": "mAP@0.5", "recall": "recall@0.5"}
LEGEND = {
    "segmentation": "mIoU = mean over the 11 classes (background included) of TP/(TP+FP+FN) from the confusion "
                    "matrix summed over the scenes; pixel acc = share of pixels labelled right; target px = share "
                    "of the pixels whose target label differs from the clean prediction that took the target "
                    "(DAG, targeted at the previous scene's map); success = share of scenes the attack counts as "
                    "fooled by the task loss's rule; w/ = under attack, w/o = clean.",
    "detection": "mAP@0.5 = VOC all-point average precision at IoU 0.5, mean over the 10 digit classes; recall@0.5 "
                 "= share of true boxes matched by a detection of their class at IoU ≥ 0.5; success = share of "
                 "scenes the attack counts as fooled by the task loss's rule; w/ = under attack, w/o = clean.",
}


def dense_head(task: str) -> list[str]:
    """The table's columns for ``task``."""
    metrics = [f"{LABELS[m]} {w}" for m in METRICS[task] for w in ("w/", "w/o")]
    target = ["target px"] if task == "segmentation" else []
    return ["Attack", "Dataset", "ε (norm)", *metrics, *target, "success", "med L2", "med L∞", "time (s)"]


def dense_cells(row: DenseRow) -> list[str]:
    """A row's cells under :func:`dense_head`."""
    m = row.metrics
    metrics = [fmt(m.get(f"{k}_{w}")) for k in METRICS[row.task] for w in ("adv", "clean")]
    target = [fmt(m.get(TARGET_METRIC))] if row.task == "segmentation" else []
    return [row.attack, row.dataset, eps_label(row), *metrics, *target, fmt(row.success_rate),  # type: ignore[arg-type]
            fmt(row.median_l2), fmt(row.median_linf), fmt(row.seconds, 1)]


def format_dense_table(rows: Sequence[DenseRow], markdown: bool) -> str:
    """A dense task's robustness table as text or Markdown."""
    if not rows:
        return "(no rows)"
    head, body = dense_head(rows[0].task), [dense_cells(r) for r in rows]
    return "\n".join(md_table(head, body)) if markdown else text_table(head, body)


def metric_figure(rows: Sequence[DenseRow]) -> bytes:
    """Each of the task's metrics under attack against ε, one line per attack (the clean value dashed)."""
    task = rows[0].task
    names = METRICS[task]
    fig = new_figure((4.2 * len(names), 3.2))
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        for attack in dict.fromkeys(r.attack for r in rows):
            pts = sorted((r.eps, r.metrics[f"{name}_adv"]) for r in rows if r.attack == attack and r.eps is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=attack)
        ax.axhline(rows[0].metrics[f"{name}_clean"], color="grey", linestyle="--", label="clean")
        ax.set_xlabel(f"ε ({rows[0].norm})")
        ax.set_ylabel(LABELS[name])
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig, dpi=110)


def _label_image(m: np.ndarray) -> np.ndarray:
    """A label map (0 background, d+1 digit d) as RGB: black background, one colour per digit."""
    from matplotlib import colormaps

    colours = colormaps["tab10"](np.arange(10))[:, :3]
    rgb = np.zeros((*m.shape, 3))
    for c in range(1, 11):
        rgb[m == c] = colours[c - 1]
    return rgb


def _boxes(ax: Axes, dets: np.ndarray, colour: str) -> None:
    """Draw detections (x0, y0, x1, y1, score, class) with their class and score."""
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1, score, cls in dets:
        if cls < 0:
            continue
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2))
        ax.text(x0, y0 - 1, f"{int(cls)} {score:.2f}", color=colour, fontsize=6)


def example_figure(store: Store, job: str, task: str, title: str) -> bytes | None:
    """Scene | clean output | adversarial scene | its output | perturbation, for the kept scenes of ``job``."""
    examples = store.examples(job)[:3]
    if not examples:
        return None
    clean, clean_maps = read_stats(store, CLEAN, task)
    adv, adv_maps = read_stats(store, job, task)
    fig = new_figure((9.0, 2.0 * len(examples)))
    axes = fig.subplots(len(examples), 5, squeeze=False)
    for row, (idx, x, xa) in enumerate(examples):
        d = xa - x
        scale = float(np.abs(d).max()) or 1.0
        panels: list[tuple[np.ndarray, str]] = [(x[0], "scene"), (x[0], "clean output"), (xa[0], "adversarial"),
                                                (xa[0], "adversarial output"),
                                                (d[0] / (2 * scale) + 0.5, f"perturbation ×{0.5 / scale:.1f}")]
        if task == "segmentation" and idx in clean_maps and idx in adv_maps:
            side = round(len(clean_maps[idx]) ** 0.5)
            panels[1] = (_label_image(clean_maps[idx].numpy().reshape(side, side)), "clean map")
            panels[3] = (_label_image(adv_maps[idx].numpy().reshape(side, side)), "adversarial map")
        for col, (img, caption) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(caption, fontsize=7)
        if task == "detection":
            _boxes(axes[row][1], clean[idx, : MAX_DET * 6].reshape(MAX_DET, 6).numpy(), "lime")
            _boxes(axes[row][3], adv[idx, : MAX_DET * 6].reshape(MAX_DET, 6).numpy(), "red")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def dense_figures(store: Store, rows: list[DenseRow]) -> list[tuple[str, str, bytes]]:
    """The metric-against-ε figure and, per attack at its largest ε, the example figure."""
    figs = [("metrics", f"{', '.join(LABELS[m] for m in METRICS[rows[0].task])} under attack against ε",
             metric_figure(rows))] if rows else []
    for r in {r.attack: r for r in rows}.values():  # each attack at its largest ε
        job = Job(r.attack, r.norm, r.eps, ())
        png = example_figure(store, job.key, r.task, f"{r.attack} at ε = {r.eps:g} ({r.norm})")
        if png is not None:
            caption = f"{r.attack} at ε = {r.eps:g}: scenes, outputs, perturbation"
            figs.append((f"examples-{r.attack}", caption, png))
    return figs


def render_dense(directory: Path, store: Store, config: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.md`` (PNGs in ``figures/``) and a self-contained ``report.html`` for a dense evaluation."""
    rows = dense_rows(store, config)
    figs = dense_figures(store, rows)
    figdir = directory / "figures"
    figdir.mkdir(exist_ok=True)
    for name, _, png in figs:
        atomic_write_bytes(figdir / f"{name}.png", png)
    task, command = str(config["task"]), store.get_meta("command")
    env = store.get_meta("environment") or {}
    skipped = store.get_meta("checks_skipped") or ""
    md = [f"# Robustness report: {config['model']} on {config['dataset']} ({task})", "",
          *md_table(["setting", "value"], setting_rows(config, command)), "", "## Results", "",
          format_dense_table(rows, markdown=True), "", LEGEND[task], "", skipped, "", "## Figures", ""]
    md += [f"![{cap}](figures/{name}.png)\n" for name, cap, _ in figs]
    md += ["## Environment", "", *md_table(["", "version / value"], environment_rows(env))]
    atomic_write_text(directory / "report.md", "\n".join(md) + "\n")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>advlab report: {html.escape(str(config['model']))}</title><style>{PAGE_CSS}</style></head><body>
<h1>Robustness report: {html.escape(str(config['model']))} on {html.escape(str(config['dataset']))} ({task})</h1>
{html_table(["setting", "value"], setting_rows(config, command), "settings")}
<h2>Results</h2>
{html_table(dense_head(task), [dense_cells(r) for r in rows], "results")}
<p>{html.escape(LEGEND[task])}</p><p>{html.escape(skipped)}</p>
<h2>Figures</h2>
{embedded_figures(figs)}
<h2>Environment</h2>
{html_table(["", "version / value"], environment_rows(env), "environment")}
</body></html>
"""
    atomic_write_text(directory / "report.html", page)
    return directory / "report.md", directory / "report.html"


__all__ = ["dense_cells", "dense_figures", "dense_head", "format_dense_table", "metric_figure", "render_dense"]
