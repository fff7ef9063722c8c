"""What an evaluation of a segmentation or detection model stores per image, and the rows it aggregates to.

A dense task's per-image outcome does not fit classification's Acc@1/Acc@5 columns, so each image
of each job (and of the clean pass, job ``"clean"``) also gets a *stats* record in the store's
``dense`` table, written in the batch's transaction:

* segmentation — the image's 11×11 confusion matrix (rows: label, columns: prediction; summed over
  images it gives mIoU and pixel accuracy) and, for a targeted job, how many of the pixels whose
  target label differs from the clean prediction took the target label;
* detection — the decoded detections (``max_det``×6: x0, y0, x1, y1, score, class), and for the
  clean pass also the image's true boxes, so mAP and recall are computed from the store alone.

A few images per job also keep their predicted label map, for the report's figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from advlab.metrics import median_or_none
from advlab.metrics_dense import mean_average_precision, miou, pixel_accuracy, recall
from advlab.results.plan import Job, plan_jobs
from advlab.results.store import Store

CLEAN = "clean"  # the job name of the clean pass in the dense table
SEG_CLASSES = 11
MAX_DET = 20
BOX_ROWS, BOX_COLS = 5, 5
METRICS = {
    "segmentation": ("miou", "pixel_acc"),
    "detection": ("map50", "recall"),
}
TARGET_METRIC = "target_pixels"  # segmentation, targeted jobs: share of the pixels to change that took the target
DENSE_KEYS = ("attack", "dataset", "model", "task", "norm", "eps", "n", "metrics", "success_rate", "median_l2",
              "median_linf", "seconds", "seed")


@dataclass
class DenseRow:
    """One row of a dense task's robustness table: the task's metrics with and without attack.

    ``metrics`` maps ``NAME_adv`` and ``NAME_clean`` for each of the task's metrics (segmentation:
    ``miou``, ``pixel_acc``; detection: ``map50`` (VOC all-point AP at IoU 0.5, mean over the 10
    classes), ``recall`` (IoU 0.5)) and, for a targeted segmentation job, ``target_pixels``.
    """

    attack: str
    dataset: str
    model: str
    task: str
    norm: str
    eps: float | None
    n: int
    metrics: dict[str, float]
    success_rate: float
    median_l2: float | None
    median_linf: float | None
    seconds: float
    seed: int
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The row's public keys."""
        d = asdict(self)
        return {k: d[k] for k in DENSE_KEYS}


def seg_stats(conf: torch.Tensor, hit: torch.Tensor | None = None, eligible: torch.Tensor | None = None,
              ) -> list[np.ndarray]:
    """Per image: the flattened confusion matrix, then the targeted pixels taken and to be taken (int64)."""
    n = len(conf)
    extra = torch.zeros(n, 2, dtype=torch.int64)
    if hit is not None and eligible is not None:
        extra = torch.stack([hit.long().cpu(), eligible.long().cpu()], dim=1)
    rows = torch.cat([conf.long().cpu().reshape(n, -1), extra], dim=1).numpy()
    return list(rows)


def det_stats(dets: torch.Tensor, boxes: torch.Tensor | None = None) -> list[np.ndarray]:
    """Per image: the detections (``MAX_DET``×6) and, for the clean pass, the true boxes (5×5), as float32."""
    parts = [dets.float().cpu().reshape(len(dets), -1)]
    if boxes is not None:
        parts.append(boxes.float().cpu().reshape(len(boxes), -1))
    return list(torch.cat(parts, dim=1).numpy())


def with_map(stats: np.ndarray, label_map: torch.Tensor) -> np.ndarray:
    """A stats record followed by a predicted label map (kept for a few images per job, for figures)."""
    return np.concatenate([stats, label_map.cpu().numpy().astype(stats.dtype).reshape(-1)])


def stats_dtype(task: str) -> type[np.generic]:
    """The element type of a task's stats records."""
    return np.int64 if task == "segmentation" else np.float32


def stats_size(task: str, clean: bool) -> int:
    """Elements of a stats record before an optional label map."""
    if task == "segmentation":
        return SEG_CLASSES * SEG_CLASSES + 2
    return MAX_DET * 6 + (BOX_ROWS * BOX_COLS if clean else 0)


def read_stats(store: Store, job: str, task: str) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """A job's stats records in example order, and the label maps kept with some of them (by example index)."""
    dtype, size = stats_dtype(task), stats_size(task, job == CLEAN)
    rows, maps = [], {}
    for idx, blob in store.dense(job):
        a = np.frombuffer(blob, dtype=dtype)
        rows.append(a[:size])
        if len(a) > size:
            maps[idx] = torch.from_numpy(a[size:].copy())
    stacked = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, size)
    return stacked, maps


def seg_metrics(stats: torch.Tensor) -> dict[str, float]:
    """MIoU and pixel accuracy of summed confusion matrices; the targeted pixel share where any was to change."""
    conf = stats[:, : SEG_CLASSES * SEG_CLASSES].sum(dim=0).reshape(SEG_CLASSES, SEG_CLASSES)
    out = {"miou": float(miou(conf)), "pixel_acc": float(pixel_accuracy(conf))}
    hit, eligible = stats[:, -2].sum(), stats[:, -1].sum()
    if int(eligible) > 0:
        out[TARGET_METRIC] = float(hit) / float(eligible)
    return out


def det_metrics(stats: torch.Tensor, boxes: torch.Tensor) -> dict[str, float]:
    """mAP@0.5 and recall@0.5 of the stored detections against the true boxes."""
    dets = stats[:, : MAX_DET * 6].reshape(-1, MAX_DET, 6).float()
    return {"map50": float(mean_average_precision(dets, boxes)), "recall": float(recall(dets, boxes))}


def job_metrics(stats: torch.Tensor, task: str, boxes: torch.Tensor | None) -> dict[str, float]:
    """The task's metrics over one job's stats records (or the clean pass's); ``boxes``: detection's truth."""
    if task == "segmentation":
        return seg_metrics(stats)
    assert boxes is not None  # (read from the clean pass by dense_rows)
    return det_metrics(stats, boxes)


def dense_jobs(config: dict[str, Any]) -> list[Job]:
    """A dense evaluation's jobs, from its configuration."""
    return plan_jobs(config["attacks"], config["norm"], config["eps"])


def dense_rows(store: Store, config: dict[str, Any]) -> list[DenseRow]:
    """One row per job: the task's metrics with and without attack, success, perturbation sizes, time."""
    task = str(config["task"])
    clean_stats, _ = read_stats(store, CLEAN, task)
    boxes = None
    if task == "detection":  # the true boxes are stored with the clean pass's detections
        boxes = clean_stats[:, MAX_DET * 6:].reshape(-1, BOX_ROWS, BOX_COLS).float()
    clean = job_metrics(clean_stats, task, boxes)
    rows = []
    for job in dense_jobs(config):
        adv = job_metrics(read_stats(store, job.key, task)[0], task, boxes)
        metrics = {f"{k}_adv": adv[k] for k in METRICS[task]} | {f"{k}_clean": clean[k] for k in METRICS[task]}
        if TARGET_METRIC in adv:
            metrics[TARGET_METRIC] = adv[TARGET_METRIC]
        o = store.outcomes(job.key)
        fooled = o["adv"]
        rows.append(DenseRow(
            job.attack, str(config["dataset"]), str(config["model"]), task, job.norm, job.eps, len(fooled),
            metrics, float(fooled.float().mean()) if len(fooled) else float("nan"),
            median_or_none(o["l2"][fooled]), median_or_none(o["linf"][fooled]), store.seconds(job.key),
            int(config["seed"]),
        ))
    return rows


__all__ = ["CLEAN", "DENSE_KEYS", "METRICS", "TARGET_METRIC", "DenseRow", "dense_jobs", "dense_rows", "det_stats",
           "job_metrics", "read_stats", "seg_stats", "with_map"]
