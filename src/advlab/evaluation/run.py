"""Executing an evaluation's jobs batch by batch into the results store, after one clean pass.

Each finished batch is one transaction of the store, so an interrupted run resumes at the first
batch it had not finished, and each batch's generator is seeded from (seed, job, batch), so the
resumed batch draws what it would have drawn in an uninterrupted run.

The run sees :func:`~advlab.attacks.inference_view` of the model (an eval-mode copy where the model
is in training mode): the clean pass, every attack, the scoring of x_adv and the gradient-masking
checks run on it, so an evaluation never changes the model. A model whose clean logits are not
finite is refused before any job runs.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from advlab._deprecation import caller_level
from advlab._device import module_device
from advlab.attacks import AttackInfo, AttackResult, get_attack, inference_view
from advlab.attacks.guard import check_io
from advlab.attacks.input_errors import layout_message
from advlab.attacks.registry import check_finite_logits
from advlab.detect.adaptive import adaptive_attack
from advlab.detect.base import Detector
from advlab.evaluation.defaults import attack_params
from advlab.metrics import perturbation_norms, predict_logits, topk_correct
from advlab.results.plan import Job, batch_seed, json_params
from advlab.results.store import CLEAN_JOB, Store
from advlab.threat import ThreatModel

# the C&W 2017 joint attacks an evaluation with a detector adds (advlab.evaluation.detect_adaptive):
# row name → the attack advlab.detect.adaptive.adaptive_attack runs on classifier and detector together
JOINT: dict[str, Literal["pgd", "apgd", "cw"]] = {"pgd-joint": "pgd", "pgd-joint-hc": "pgd", "cw-joint": "cw",
                                                  "cw-joint-hc": "cw"}


@dataclass
class Run:
    """One evaluation's model, data and settings, writing into ``store``.

    ``net`` is a torch model (logits) or a :class:`~advlab.models.blackbox.BlackBox` with scores;
    a torch model in training mode is replaced by its eval-mode copy when the run is made.
    """

    net: Any
    x: torch.Tensor
    y: torch.Tensor
    bounds: tuple[float, float]
    params: dict[str, dict[str, Any]]
    config: dict[str, Any]
    store: Store
    progress: bool = True
    keep: int = 6  # (x, x_adv) pairs of each job kept for the report's figures
    target: torch.Tensor | None = None  # a targeted evaluation's target per example (success: reaching it)
    detector: Detector | None = None  # the reject option: each input's score and decision are stored too

    def __post_init__(self) -> None:
        # Warns for a model in training mode, one whose forward changes its input in place, one in another
        # dtype, one that returns probabilities or depends on its batch; what advlab adapted is also kept
        # for the report (the store's meta "model_notes"), where the warnings on a terminal do not reach.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.net = check_io(inference_view(self.net), self.x)
        notes = []
        for w in caught:
            warnings.warn(w.message, stacklevel=caller_level())
            if w.category.__module__.startswith("advlab."):
                notes.append(f"{w.category.__name__}: {w.message}")
        notes += getattr(getattr(self.x, "source", None), "notes", [])  # (a folder's: FolderLabels)
        if notes:
            self.store.set_meta("model_notes", notes)

    @property
    def batch_size(self) -> int:
        """Examples per batch (the store's unit of work)."""
        return int(self.config["batch_size"])

    def clean_pass(self) -> None:
        """Store the clean predictions and detector scores (once: a resumed run reads them back)."""
        n = len(self.y)
        if not self.store.has_clean(n):
            self.clean_predictions()
        if self.detector is not None and len(self.store.detect(CLEAN_JOB)["idx"]) != n:
            found = [self.detect(self.x[i : i + self.batch_size]) for i in range(0, n, self.batch_size)]
            self.store.put_detect(CLEAN_JOB, list(range(n)), [v for f in found for v in f["det_score"]],
                                  [v for f in found for v in f["det_rejected"]])

    def detect(self, x: torch.Tensor) -> dict[str, list[Any]]:
        """The detector's score and decision (1 = rejected) per input, on the model's device."""
        assert self.detector is not None
        score = self.detector.score(x.to(module_device(self.net)), self.batch_size).double().cpu()
        rejected = score > float(self.detector.threshold)
        return {"det_score": score.tolist(), "det_rejected": rejected.int().tolist()}

    def clean_predictions(self) -> None:
        """Store the clean predictions; non-finite logits end the run."""
        n = len(self.y)
        try:
            with torch.no_grad():
                logits = predict_logits(self.net, self.x, self.batch_size)
        except Exception as e:  # (a layout the model does not take: named, with the permutation)
            layout = layout_message(self.net, self.x, e, "data")
            if layout is None:
                raise
            raise ValueError(layout) from e
        bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten()
        if len(bad):
            check_finite_logits(logits, f"on {len(bad)} of {n} clean inputs (first: example {int(bad[0])}); "
                                        "advlab does not score a model whose outputs are not numbers")
        self.store.set_meta("classes", int(logits.shape[1]))
        self.store.put_clean(self.y, topk_correct(logits, self.y, 1), topk_correct(logits, self.y, 5),
                             logits.argmax(1), logits.softmax(dim=1).amax(dim=1))

    @property
    def n_batches(self) -> int:
        """Batches per job."""
        return math.ceil(len(self.y) / self.batch_size)

    def jobs(self, jobs: list[Job]) -> None:
        """Run every batch of ``jobs`` the store does not hold yet, storing each as it finishes."""
        self.clean_pass()
        nb = self.n_batches
        todo = [(job, b) for job in jobs for b in sorted(set(range(nb)) - self.store.done_batches(job.key))]
        self.run_batches(todo, len(jobs) * nb)

    def run_batches(self, todo: list[tuple[Job, int]], total: int) -> None:
        """Attack and store each (job, batch) of ``todo`` in order; the bar counts up to ``total``."""
        bar = tqdm(total=total, initial=total - len(todo), desc="evaluate", unit="batch",
                   disable=not self.progress, dynamic_ncols=True)
        for job, b in todo:
            bar.set_postfix_str(f"{job.attack} {'' if job.eps is None else job.eps}")
            self.batch(get_attack(job.attack), job, b)
            bar.update(1)
        bar.close()

    def batch(self, info: AttackInfo, job: Job, b: int) -> None:
        """Attack batch ``b`` of ``job``, judge x_adv by the model's own prediction, store the outcomes."""
        sl = slice(b * self.batch_size, min(len(self.y), (b + 1) * self.batch_size))
        dev = module_device(self.net)  # where the model computes; the images stay on the CPU
        xb, yb = self.x[sl].to(dev), self.y[sl].to(dev)
        tb = self.batch_target(info, sl, dev)
        threat = ThreatModel(job.norm, math.inf if job.eps is None else job.eps, bounds=self.bounds,  # type: ignore[arg-type]
                             targeted=tb is not None)
        gen = torch.Generator().manual_seed(batch_seed(self.config["seed"], job.key, b))
        t0 = time.perf_counter()
        res = self.attack(info, job, xb, yb, threat, tb, gen)
        seconds = time.perf_counter() - t0
        outcome, stats = self.judge(xb, yb, res, tb, sl)
        examples = [(i, self.x[i].cpu().numpy(), res.x_adv[i - sl.start].detach().cpu().numpy())
                    for i in range(sl.start, min(sl.stop, self.keep))]
        self.store.put_batch(job.key, b, seconds, list(range(sl.start, sl.stop)), outcome, examples, stats)

    def attack(self, info: AttackInfo, job: Job, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               target: torch.Tensor | None, generator: torch.Generator) -> AttackResult:
        """Run ``job``'s attack on a batch; a joint job (:data:`JOINT`) attacks the classifier and the detector."""
        params = self.job_params(info, job)
        if job.name not in JOINT:
            return info(self.net, x, y, threat, target=target, generator=generator, **params)
        if self.detector is None:
            raise RuntimeError(f"{job.name}: the joint attack needs the run's detector")
        return adaptive_attack(self.net, self.detector, x, y, threat, JOINT[job.name], target=target,
                               generator=generator, **params)

    def batch_target(self, info: AttackInfo, sl: slice, dev: torch.device) -> torch.Tensor | None:
        """The targets of the examples ``sl`` (None: the job is untargeted)."""
        return None if self.target is None else self.target[sl].to(dev)

    def job_params(self, info: AttackInfo, job: Job) -> dict[str, Any]:
        """The parameters ``job``'s attack runs with."""
        return attack_params(info, job, self.params)

    def judge(self, xb: torch.Tensor, yb: torch.Tensor, res: AttackResult, tb: torch.Tensor | None, sl: slice
              ) -> tuple[dict[str, list[Any]], list[np.ndarray] | None]:
        """A batch's per-example outcomes and (a dense task's) per-image stats records."""
        return self.score(xb, yb, res.x_adv, res.queries, tb), None

    def score(self, xb: torch.Tensor, yb: torch.Tensor, x_adv: torch.Tensor, queries: torch.Tensor | None,
              target: torch.Tensor | None = None) -> dict[str, list[Any]]:
        """The per-example outcome of ``x_adv``, judged by the model's own prediction.

        ``adv`` is "misclassified", or given the ``target`` per example, "classified as the target".
        """
        with torch.no_grad():
            logits = self.net(x_adv)
        pred = logits.argmax(dim=1)
        norms = perturbation_norms(xb, x_adv)
        return {
            **(self.detect(x_adv) if self.detector is not None else {}),
            "adv": (pred != yb if target is None else pred == target).int().tolist(),
            "top1": topk_correct(logits, yb, 1).int().tolist(),
            "top5": topk_correct(logits, yb, 5).int().tolist(), "pred": pred.tolist(),
            "conf": logits.softmax(dim=1).amax(dim=1).tolist(),
            **{k: v.tolist() for k, v in norms.items()},
            "queries": queries.tolist() if queries is not None else [None] * len(yb),
        }

    def add_jobs(self, jobs: list[Job]) -> None:
        """Record jobs the evaluation adds on its own (and the parameters they run with), then run them."""
        added = self.store.get_meta("added") or []
        known = {Job.from_dict(d).key for d in added}
        params = self.store.get_meta("added_params") or {}
        for job in jobs:
            if job.key not in known:
                added.append(job.as_dict())
            params[job.key] = json_params(attack_params(get_attack(job.attack), job, self.params))
        self.store.set_meta("added", added)
        self.store.set_meta("added_params", params)
        self.jobs(jobs)

    def forget_added(self, job: Job) -> None:
        """Take back an added job that could not run (kept where any of its batches was stored)."""
        if self.store.done_batches(job.key):
            return
        self.store.set_meta("added", [d for d in self.store.get_meta("added") or [] if Job.from_dict(d).key != job.key])
        params = self.store.get_meta("added_params") or {}
        params.pop(job.key, None)
        self.store.set_meta("added_params", params)

    def put_partial(self, name: str, idx: torch.Tensor, x_adv: torch.Tensor, eps: float, minimal: bool,
                    seconds: float = 0.0) -> dict[str, Any]:
        """Store an attack that ran on the examples ``idx`` only (a check's); returns its meta entry."""
        norm = self.config["norm"]
        key = Job(name, norm, eps, (eps,)).key
        if not self.store.done_batches(key):
            outcome = self.score(self.x[idx], self.y[idx], x_adv, None)
            self.store.put_batch(key, 0, seconds, idx.tolist(), outcome, [])
        return {"key": key, "name": name, "norm": norm, "eps": eps, "minimal": minimal}


__all__ = ["JOINT", "Run"]
