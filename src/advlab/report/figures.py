"""The report's figures as PNG bytes, drawn with matplotlib's object-oriented API.

Each figure is a ``matplotlib.figure.Figure`` rendered straight to PNG: no pyplot, no global
figure manager and no ``matplotlib.use``, so drawing a report never switches the backend of a
notebook or an application that imported advlab. matplotlib is imported on first use only.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advlab.results.plan import Job
from advlab.results.records import Row, TransferRecord

if TYPE_CHECKING:
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
    return a.transpose(1, 2, 0).squeeze(-1) if a.shape[0] in (1, 3) else a


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


def accuracy_figure(rows: list[Row]) -> bytes:
    """Acc@1 under attack against ε for every attack, one line per (attack, norm)."""
    fig = new_figure((6, 3.6))
    ax = fig.subplots()
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r.eps is not None:
            series.setdefault((r.attack, r.norm), []).append((r.eps, r.acc1_adv))
    for (attack, norm), pts in sorted(series.items()):
        pts = sorted(pts)
        clean = rows[0].acc1_clean
        ax.plot([0.0] + [p[0] for p in pts], [clean] + [p[1] for p in pts], marker="o",
                label=f"{attack} ({norm})", linestyle="--" if attack == "worst-case" else "-")
    ax.set_xlabel("ε")
    ax.set_ylabel("Acc@1 under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_bytes(fig, dpi=90, bbox_inches="tight")


def norm_histograms(jobs: list[tuple[Job, dict[str, torch.Tensor]]]) -> bytes:
    """Histograms of the perturbation norm (the attack's own norm) of successful examples, one per job."""
    fig = new_figure((2.6 * len(jobs), 2.4))
    axes = fig.subplots(1, len(jobs), squeeze=False)
    for ax, (job, o) in zip(axes[0], jobs, strict=True):
        v = o[job.norm][o["adv"]].numpy()
        v = v[np.isfinite(v)]
        ax.hist(v, bins=30, color="#3b6ea8")
        ax.set_title(f"{job.attack}: {job.norm} of successful", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return png_bytes(fig, dpi=90, bbox_inches="tight")


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
    "accuracy_figure",
    "adversarial_grid",
    "new_figure",
    "norm_histograms",
    "png_bytes",
    "transfer_heatmap",
    "triplet_figure",
]
