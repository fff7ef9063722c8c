"""The report's figures as PNG bytes, drawn with matplotlib's object-oriented API.

Each figure is a ``matplotlib.figure.Figure`` rendered straight to PNG: no pyplot, no global
figure manager and no ``matplotlib.use``, so drawing a report never switches the backend of a
notebook or an application that imported advlab. matplotlib is imported on first use only.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advlab.report.settings import norm_label
from advlab.results.plan import Job
from advlab.results.records import Row, TransferRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure that belongs to no pyplot state (garbage-collected like any object)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def png_bytes(fig: Figure, **savefig: Any) -> bytes:
    """The figure rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


def _image(a: np.ndarray) -> np.ndarray:
    """C×H×W (one or three channels) as an image matplotlib shows: H×W or H×W×3."""
    if a.shape[0] == 1:
        return np.asarray(a[0])
    return a.transpose(1, 2, 0) if a.shape[0] == 3 else a


def triplet_figure(examples: list[tuple[int, np.ndarray, np.ndarray]], clean: dict[str, Any],
                   outcome: dict[str, Any], title: str) -> bytes:
    """Original (label, confidence) | perturbation rescaled | adversarial (label, confidence), per row."""
    k = len(examples)
    fig = new_figure((5.4, 1.9 * k))
    axes = fig.subplots(k, 3, squeeze=False)
    for row, (idx, x, xa) in enumerate(examples):
        d = xa - x
        scale = float(np.abs(d).max()) or 1.0
        y = int(clean["label"][idx])
        panels = [
            (x, f"original: {int(clean['pred'][idx])} ({float(clean['conf'][idx]):.0%}), true {y}"),
            (d / (2 * scale) + 0.5, f"perturbation ×{0.5 / scale:.1f}, L∞ {scale:.3f}"),
            (xa, f"adversarial: {int(outcome['pred'][idx])} ({float(outcome['conf'][idx]):.0%})"),
        ]
        for col, (img, t) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(_image(img), cmap="gray", vmin=0, vmax=1)
            ax.set_title(t, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, dpi=90, bbox_inches="tight")


NORM_ORDER = ("linf", "l2", "l1", "l0")
HIST_COLUMNS = 4  # histograms per row of the grid: the figure stays about 950 px wide


def plain_axes(ax: Axes) -> None:
    """Tick labels as plain numbers: no offset (``1e-8+3e-1``) and no scientific notation on either axis."""
    for axis in ("x", "y"):
        try:
            ax.ticklabel_format(axis=axis, useOffset=False, style="plain")
        except AttributeError:  # an axis without a ScalarFormatter (categorical, log): nothing to turn off
            pass


def accuracy_axes(ax: Axes, xlabel: str, ylabel: str, legend_columns: int) -> None:
    """An accuracy-against-ε panel's frame: labels, ε from 0, accuracy in [0, 1], grid, legend below."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0.0)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=legend_columns, frameon=False)
    plain_axes(ax)


def accuracy_plot(rows: list[Row], norm: str | None = None) -> Figure:
    """Acc@1 under attack against ε, one panel per norm (its own ε axis), one line per attack; ε = 0 is clean.

    Args:
        rows: The table's rows; rows without a budget (the negative image) have no point.
        norm: The evaluation's norm, whose panel comes first (default: the first row's).
    """
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        if r.eps is not None and r.attack != "clean":  # (the reject option's clean row: the curves start there)
            series.setdefault(r.norm, {}).setdefault(r.attack, []).append((r.eps, r.acc1_adv))
    first = norm if norm is not None else (rows[0].norm if rows else None)
    norms = sorted(series, key=lambda n: (n != first, NORM_ORDER.index(n) if n in NORM_ORDER else 9, n))
    cols = min(len(norms), 2) or 1
    fig = new_figure((5.2 * cols, 3.6 * max(1, math.ceil(len(norms) / cols))))
    axes = fig.subplots(max(1, math.ceil(len(norms) / cols)), cols, squeeze=False).ravel()
    clean = rows[0].acc1_clean if rows else math.nan
    order = list(dict.fromkeys(r.attack for r in rows))  # the table's order; one colour per attack in every panel
    for ax, nm in zip(axes, norms, strict=False):
        for attack, pts in sorted(series[nm].items(), key=lambda kv: order.index(kv[0])):
            pts = sorted(pts)
            ax.plot([0.0] + [p[0] for p in pts], [clean] + [p[1] for p in pts], marker="o", label=attack,
                    color=f"C{order.index(attack) % 10}", linestyle="--" if attack == "worst-case" else "-")
        ax.set_title(f"{norm_label(nm)} budget", fontsize=10)
        accuracy_axes(ax, f"ε ({norm_label(nm)})", "Acc@1 under attack", legend_columns=4)
    for ax in axes[len(norms):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def accuracy_figure(rows: list[Row], norm: str | None = None) -> bytes:
    """:func:`accuracy_plot` as PNG."""
    return png_bytes(accuracy_plot(rows, norm), dpi=90, bbox_inches="tight")


def _histogram(ax: Axes, v: np.ndarray) -> None:
    """A histogram that reads plainly even when every value is (nearly) the same, e.g. L∞ = ε for PGD."""
    from matplotlib.ticker import MaxNLocator

    if v.size == 0:
        ax.text(0.5, 0.5, "no successful example", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):  # one value up to float rounding: one bar, a readable axis around it
        mid = float(f"{(lo + hi) / 2:.6g}")  # 0.30000001 (ε in float32) is read as 0.3
        half = max(abs(mid) * 0.1, 1e-3)
        ax.hist(np.full(v.shape, mid), bins=1, range=(mid - half / 10, mid + half / 10), color="#3b6ea8")
        ax.set_xlim(mid - half, mid + half)
    else:
        ax.hist(v, bins=30, color="#3b6ea8")
    # a few round ticks whose labels never run into each other; counts are integers
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10], integer=True))


def norm_histogram_plot(jobs: list[tuple[Job, dict[str, torch.Tensor]]]) -> Figure:
    """Histograms of the perturbation norm (the attack's own norm) of successful examples, one per job.

    A grid of at most :data:`HIST_COLUMNS` per row, so the figure never grows wider with more attacks.
    """
    cols = max(1, min(len(jobs), HIST_COLUMNS))
    nrows = max(1, math.ceil(len(jobs) / cols))
    fig = new_figure((2.6 * cols, 2.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (job, o) in zip(axes, jobs, strict=False):
        v = o[job.norm][o["adv"].bool()].double().numpy()
        _histogram(ax, v[np.isfinite(v)])
        ax.set_title(f"{job.name}: {norm_label(job.norm)} of successful", fontsize=8)
        ax.set_xlabel(f"{norm_label(job.norm)} norm", fontsize=7)
        ax.tick_params(labelsize=7)
        plain_axes(ax)
    for ax in axes[len(jobs):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def norm_histograms(jobs: list[tuple[Job, dict[str, torch.Tensor]]]) -> bytes:
    """:func:`norm_histogram_plot` as PNG."""
    return png_bytes(norm_histogram_plot(jobs), dpi=90, bbox_inches="tight")


def adversarial_grid(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
                     pred_adv: torch.Tensor, k: int = 8) -> bytes:
    """Up to ``k`` columns of clean image (label, prediction) | perturbation rescaled | adversarial."""
    k = min(k, len(x))
    fig = new_figure((1.6 * k, 5.2))
    axes = fig.subplots(3, k, squeeze=False)
    delta = x_adv - x
    for i in range(k):
        scale = float(delta[i].abs().max()) or 1.0
        panels = [
            (x[i], f"y={int(y[i])} pred={int(pred[i])}"),
            (delta[i] / (2 * scale) + 0.5, f"δ ×{0.5 / scale:.1f}"),
            (x_adv[i], f"adv pred={int(pred_adv[i])}"),
        ]
        for row, (img, title) in enumerate(panels):
            ax = axes[row][i]
            ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def transfer_heatmap(record: TransferRecord) -> bytes:
    """The transfer-success matrix as a heat-map (sources down, targets across; — where a model cannot craft)."""
    data = np.array([[np.nan if v is None else v for v in row] for row in record.success])
    fig = new_figure((1.3 * len(record.targets) + 2.5, 0.7 * len(record.sources) + 2))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(record.targets)), record.targets, rotation=30, ha="right")
    ax.set_yticks(range(len(record.sources)), record.sources)
    ax.set_xlabel("target model")
    ax.set_ylabel("source model (crafted on)")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if np.isnan(v) or v < 0.6 else "black", fontsize=9)
    ax.set_title(f"Transfer success: {record.attack} {record.norm} ε={record.eps:g}, n={record.n}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return png_bytes(fig, dpi=110)


__all__ = [
    "HIST_COLUMNS",
    "accuracy_axes",
    "accuracy_figure",
    "accuracy_plot",
    "adversarial_grid",
    "new_figure",
    "norm_histogram_plot",
    "norm_histograms",
    "plain_axes",
    "png_bytes",
    "transfer_heatmap",
    "triplet_figure",
]
