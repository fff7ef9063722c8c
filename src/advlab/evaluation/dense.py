"""Evaluating a segmentation or detection model: the same plan, store, resume and report, the task's metrics.

:func:`advlab.evaluation.engine.plan` hands a model whose checkpoint declares a dense task
(``advlab_meta["task"]``: ``"segmentation"`` or ``"detection"``) to :func:`plan_dense`. The jobs
are the same (attack, norm, ε) jobs, run batch by batch into the same resumable store under the same
lock, with the same per-batch seeds; what differs is what an image's outcome is:

* the gradient attacks (FGSM, BIM, PGD, APGD) run with the task's loss (``loss=`` a
  :class:`~advlab.attacks.tasks.TaskLoss`), DAG and the vanishing attack are the task's own;
* each image's outcome is judged by the model's own output on x_adv — its confusion matrix
  (segmentation) or its decoded detections (detection) — and the rows give mIoU and pixel accuracy,
  or mAP@0.5 and recall, with and without attack (:mod:`advlab.results.dense`);
* DAG on a segmentation model is targeted, as in Xie et al.: each scene's target is the label map
  of the previous test scene, and its row adds the share of the pixels to change that took the target.

The gradient-masking checks, the escalation and certificates are classification's and are not run
(the store records why).
"""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab._device import module_device
from advlab._io import atomic_write_text
from advlab.attacks import get_attack, list_attacks
from advlab.attacks.detection import DetectionLoss
from advlab.attacks.registry import AttackInfo, AttackResult
from advlab.attacks.tasks import SegmentationLoss, TaskLoss
from advlab.evaluation.defaults import attack_params, bind_params
from advlab.evaluation.inputs import resolve_data, validate_eps
from advlab.evaluation.run import Run
from advlab.evaluation.settings import Plan, Settings
from advlab.metrics import perturbation_norms
from advlab.metrics_dense import confusion
from advlab.models.blackbox import BlackBox
from advlab.models.dense import decode
from advlab.report.dense import format_dense_table
from advlab.results.dense import CLEAN, DenseRow, dense_rows, det_stats, seg_stats, with_map
from advlab.results.plan import DEFAULT_EPS, Job, plan_jobs
from advlab.results.records import data_fingerprint, model_fingerprint

DENSE_TASKS = ("segmentation", "detection")
TASK_ATTACKS: dict[str, tuple[str, ...]] = {
    "segmentation": ("fgsm", "pgd", "dag"),
    "detection": ("fgsm", "pgd", "vanishing", "dag-detection"),
}
TASK_EPS: dict[str, tuple[float, ...]] = {"linf": (0.05, 0.1, 0.2)}
LOSS_ATTACKS = ("fgsm", "bim", "pgd", "apgd")  # classification attacks that take a task loss
TARGETED_DENSE = ("dag",)  # run targeted on a segmentation model: towards the previous scene's label map
CHECKS_SKIPPED_DENSE = ("the gradient-masking checks, the escalation and the ensemble are classification's; "
                        "they do not run on a {task} model")


# DAG on a segmentation model, in the evaluation: 80 steps of L∞ length γ cosine-annealed from ε/4 to
# ε/40 (the user's params win). The paper's γ = 0.5/255 is for an unbounded attack: its normalised
# steps move most pixels far less than γ, and inside ε = 0.2 it turned 7 % of the pixels to their target
# on 20 test scenes.
DAG_STEPS, DAG_GAMMA_SHARE, DAG_GAMMA_END_SHARE = 80, 0.25, 0.025


def dense_attack_params(info: AttackInfo, job: Job, user: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parameters an attack runs with in a dense evaluation: DAG's per-ε step, then as :func:`attack_params`."""
    params = attack_params(info, job, user)
    if info.name == "dag" and job.eps is not None:
        params = {"steps": DAG_STEPS, "gamma": DAG_GAMMA_SHARE * job.eps,
                  "gamma_end": DAG_GAMMA_END_SHARE * job.eps, **params}
    return params


def task_loss(task: str) -> TaskLoss:
    """The loss the gradient attacks ascend on a ``task`` model, and whose rule says which scenes are fooled."""
    return SegmentationLoss() if task == "segmentation" else DetectionLoss()


def model_task(net: nn.Module | BlackBox) -> str:
    """The task a model declares in its checkpoint metadata (``advlab_meta["task"]``); else classification."""
    meta = getattr(net, "advlab_meta", None)
    task = meta.get("task") if isinstance(meta, dict) else None
    return str(task) if task in DENSE_TASKS else "classification"


def dense_attacks(names: list[str] | None, task: str) -> list[str]:
    """The attacks of a dense evaluation (default :data:`TASK_ATTACKS`), each one that can attack the task."""
    infos = [get_attack(name) for name in dict.fromkeys(names or TASK_ATTACKS[task])]
    for info in infos:
        if info.name not in LOSS_ATTACKS and info.task != task:
            able = [*LOSS_ATTACKS, *list_attacks(task=task)]
            raise ValueError(f"attacks: {info.name} does not attack a {task} model; these do: {', '.join(able)}")
    return [info.name for info in infos]


def plan_dense(s: Settings, net: nn.Module, default_name: str, task: str) -> Plan:
    """Validate a dense evaluation and plan its jobs (nothing runs, nothing is written)."""
    if s.targeted is not None:
        raise ValueError(f"targeted: a {task} model's evaluation has no targeted mode; its targeted attack is "
                         "DAG (towards another scene's label map), run by default")
    if s.certify:
        raise ValueError(f"certify: certificates are for classifiers, got a {task} model")
    x, y, dataset = resolve_data(s.data, s.data_dir, s.n, s.bounds, net, task)
    sweep = validate_eps(s.norm, s.eps if s.eps is not None else TASK_EPS.get(s.norm, DEFAULT_EPS[s.norm]), s.bounds)
    attacks = dense_attacks(list(s.attacks) if s.attacks else None, task)
    jobs = plan_jobs(attacks, s.norm, sweep)
    params = bind_params(s.params, jobs, [])
    config: dict[str, Any] = {
        "model": s.model_name or default_name, "dataset": dataset, "n": len(y), "batch_size": s.batch_size,
        "seed": s.seed, "attacks": attacks, "norm": s.norm, "eps": list(sweep), "bounds": list(s.bounds),
        "params": params, "checks": False, "ensemble": False, "surrogate": None, "targeted": None,
        "untargetable": [], "task": task,
        "dag_target": "the label map of the previous test scene" if task == "segmentation" else None,
        "effective_params": {j.key: dense_attack_params(get_attack(j.attack), j, params) for j in jobs},
        "model_fingerprint": model_fingerprint(net), "data_fingerprint": data_fingerprint(x, y, s.data_dir),
    }
    return Plan(net, x, y, params, config, jobs, CHECKS_SKIPPED_DENSE.format(task=task))


class DenseRun(Run):
    """A :class:`Run` whose outcomes are a dense task's: confusion matrices or detections per image."""

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"detection"``."""
        return str(self.config["task"])

    def clean_pass(self) -> None:
        """Store the clean outcome of every image once (a resumed run reads it back)."""
        if len(self.store.dense(CLEAN)) == len(self.y):
            return
        dev, stats = module_device(self.net), []
        for start in range(0, len(self.y), self.batch_size):  # (a whole split's maps would not fit in memory)
            sl = slice(start, min(len(self.y), start + self.batch_size))
            with torch.no_grad():
                out = self.net(self.x[sl].to(dev))
            stats += self.stats(out, self.y[sl].to(dev), None, None, range(sl.start, sl.stop), clean=True)
        self.store.put_dense(CLEAN, stats)

    def stats(self, out: torch.Tensor, y: torch.Tensor, hit: torch.Tensor | None, eligible: torch.Tensor | None,
              idx: range, *, clean: bool = False) -> list[np.ndarray]:
        """Per image: its stats record.

        Segmentation: with the predicted map for the first ``keep`` images; detection: with the true
        boxes on the clean pass.
        """
        if self.task == "segmentation":
            pred = out.argmax(dim=1)
            rows = seg_stats(confusion(pred, y), hit, eligible)
            kept = [i < self.keep for i in idx]
            return [with_map(r, pred[k]) if kept[k] else r for k, r in enumerate(rows)]
        return det_stats(decode(out), y if clean else None)

    @functools.cached_property
    def loss(self) -> TaskLoss:
        """The task's loss: the gradient attacks ascend it, and its rule says which scenes are fooled."""
        return task_loss(self.task)

    def batch_target(self, info: AttackInfo, sl: slice, dev: torch.device) -> torch.Tensor | None:
        """DAG's targets on a segmentation model: the label map of the previous scene (None: untargeted)."""
        if self.task != "segmentation" or info.name not in TARGETED_DENSE:
            return None
        prev = torch.arange(sl.start, sl.stop) - 1
        return self.y[prev % len(self.y)].to(dev)

    def job_params(self, info: AttackInfo, job: Job) -> dict[str, Any]:
        """:func:`dense_attack_params`, and the task's loss for the gradient attacks."""
        params = dense_attack_params(info, job, self.params)
        return {**params, "loss": self.loss} if info.name in LOSS_ATTACKS else params

    def judge(self, xb: torch.Tensor, yb: torch.Tensor, res: AttackResult, tb: torch.Tensor | None, sl: slice
              ) -> tuple[dict[str, list[Any]], list[np.ndarray]]:
        """The outcome of x_adv by the model's own output: success by the task's rule, norms, stats."""
        with torch.no_grad():
            out = self.net(res.x_adv)
            hit = eligible = None
            if tb is not None:  # a targeted segmentation job: the pixels whose target differs from the clean map
                eligible = (tb != self.net(xb).argmax(dim=1))
                hit = (eligible & (out.argmax(dim=1) == tb)).flatten(1).sum(1)
                eligible = eligible.flatten(1).sum(1)
            fooled = self.loss.success(out, yb, tb)
        stats = self.stats(out, yb, hit, eligible, range(sl.start, sl.stop))
        none = [None] * len(yb)
        outcome = {"adv": fooled.int().tolist(), "top1": none, "top5": none, "pred": none, "conf": none,
                   **{k: v.tolist() for k, v in perturbation_norms(xb, res.x_adv).items()}, "queries": none}
        return outcome, stats


@dataclass
class DenseEvaluation:
    """The result of evaluating a segmentation or detection model: a :class:`DenseRow` per (attack, ε)."""

    rows: list[DenseRow]
    config: dict[str, Any]
    store_path: Path | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_skipped: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as dicts with the public keys (the task's metrics under ``metrics``)."""
        return [r.as_dict() for r in self.rows]

    def to_markdown(self) -> str:
        """The task's robustness table as Markdown."""
        return format_dense_table(self.rows, markdown=True)

    def __str__(self) -> str:
        return format_dense_table(self.rows, markdown=False) + f"\n{self.checks_skipped}"

    def save(self, directory: str | Path) -> None:
        """Write ``results.json`` and ``results.csv`` (one column per metric) into ``directory`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        records = self.to_records()
        atomic_write_text(d / "results.json", json.dumps(records, indent=2) + "\n")
        flat = [{**{k: v for k, v in r.items() if k != "metrics"}, **r["metrics"]} for r in records]
        names = list(dict.fromkeys(k for r in flat for k in r))
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=names)
        w.writeheader()
        w.writerows(flat)
        atomic_write_text(d / "results.csv", buf.getvalue())


def finish_dense(run: Run, keep: bool) -> DenseEvaluation:
    """The rows of a dense evaluation, from its store alone."""
    store = run.store
    rows = dense_rows(store, run.config)
    return DenseEvaluation(rows, run.config, store.path if keep else None, store.get_meta("environment"), [],
                           store.get_meta("checks_skipped"),
                           {"costs": store.get_meta("costs")})


__all__ = ["CHECKS_SKIPPED_DENSE", "DENSE_TASKS", "TASK_ATTACKS", "TASK_EPS", "DenseEvaluation", "DenseRun",
           "dense_attacks", "finish_dense", "model_task", "plan_dense"]
