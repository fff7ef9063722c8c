"""The phases of one evaluation around its jobs: open the store, start the run, finish it.

:func:`advlab.evaluation.engine.run_plan` runs them in one process; under ``torchrun``
:mod:`advlab.evaluation.distributed` runs the same phases, rank 0 opening and finishing, every rank
attacking its share of the batches in between.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advlab.evaluation.certified import certify_step
from advlab.evaluation.dense import DenseEvaluation, DenseRun, finish_dense
from advlab.evaluation.detect_adaptive import add_joint
from advlab.evaluation.detection import check_fitted_file, ready_detector
from advlab.evaluation.respond import add_cost, respond, white_box_cut
from advlab.evaluation.result import Evaluation, evaluation_meta
from advlab.evaluation.run import Run
from advlab.results.aggregate import aggregate
from advlab.results.plan import Job
from advlab.results.records import environment, table_notes
from advlab.results.store import Store, open_store

if TYPE_CHECKING:
    from advlab.evaluation.settings import Plan, Settings

# Files written from a directory's store (Evaluation.save, advlab evaluate, the report): stale once
# the store is replaced, so they are removed then rather than left beside results they do not describe.
DERIVED = ("results.json", "results.csv", "checks.json", "config.json", "report.md", "report.html",
           "detector.safetensors")


def open_run_store(p: Plan, s: Settings, directory: Path) -> Store:
    """The directory's store for the plan (refused, started afresh or replaced: :func:`open_store`)."""
    store = open_store(directory, p.config, s.force)
    check_fitted_file(store, p.detector, p.config, directory, s.force)
    if store.replaced:  # (a new store removes nothing: files already there are not known to be advlab's)
        for name in DERIVED:
            (directory / name).unlink(missing_ok=True)
    return store


def start_run(p: Plan, s: Settings, store: Store, *, progress: bool | None = None,
              extra_env: dict[str, Any] | None = None) -> tuple[Run, list[Job]]:
    """Record the environment and the command, make the :class:`Run`; returns it and the jobs that can run."""
    store.set_meta("environment", {**environment(), "device": str(p.device), **(extra_env or {})})
    store.set_meta("command", s.command)
    if p.checks_skipped:
        store.set_meta("checks_skipped", p.checks_skipped)
    make = DenseRun if p.config.get("task") else Run
    run = make(p.net, p.x, p.y, s.bounds, p.params, p.config, store, s.progress if progress is None else progress,
              s.examples_per_job, p.target)
    return run, white_box_cut(run, p.jobs)


def attach_detector(run: Run, p: Plan, s: Settings, directory: Path) -> None:
    """Give the run its detector (loaded, or fitted and saved in ``directory``; time in the meta ``costs``)."""
    if p.detector is None:
        return
    t0 = time.perf_counter()
    run.detector = ready_detector(run, p.detector, directory)
    add_cost(run, "detector", time.perf_counter() - t0)


def finish_run(run: Run, s: Settings, keep: bool) -> Evaluation | DenseEvaluation:
    """The checks (and what they add), the rows, the certificates: the :class:`Evaluation`."""
    if run.config.get("task"):  # a segmentation or detection model: the task's rows, no checks
        return finish_dense(run, keep)
    add_joint(run)  # with a detector: the C&W 2017 joint attacks on classifier and detector
    respond(run, run.config["checks"], s.check_n)
    store = run.store
    rows, worst = aggregate(store, run.config)
    if run.config.get("certify"):
        certify_step(run, worst)
    meta = {**evaluation_meta(store), "notes": table_notes(store.clean(), store.get_meta("classes"))}
    return Evaluation(rows, run.config, store.path if keep else None, store.get_meta("environment"),
                      store.get_meta("checks") or [], store.get_meta("checks_skipped"), worst=worst, meta=meta)


__all__ = ["DERIVED", "attach_detector", "finish_run", "open_run_store", "start_run"]
