"""One evaluation over many processes and machines: ``torchrun ... -m advlab evaluate ...``.

Every rank plans the same evaluation (the plan is deterministic), then the work is shared out:

1. Rank 0 takes the output directory's lock (one lock per run, held by rank 0 only) and opens the
   run's store; a refusal (another process writing, a store of another configuration) is
   broadcast, and every rank stops with the same message.
2. Every other rank opens its own shard store, ``OUT/shards/rank-R/results.sqlite`` (the same
   schema, resumable), and sends what it holds to rank 0 — batches a killed run had finished.
3. The (job, batch) pairs of the planned jobs, in their fixed order, are dealt out round-robin:
   pair *i* belongs to rank *i* mod *world size*. Each rank attacks its pairs that no store holds
   yet. A batch's generator is seeded from (seed, job, batch) alone, so the same batch gives the
   same numbers on whichever rank runs it: the results do not depend on the number of processes.
4. The shards travel to rank 0 over ``torch.distributed`` (``gather_object``: no shared file
   system is needed) and are written into the store; each worker then deletes its shard.
5. With a detector (the reject option), rank 0 fits or loads it before the batches are dealt out
   and sends its file's bytes with them; every rank scores its own batches with it.
6. Rank 0 alone runs the gradient-masking checks, what they add, the ensemble and the certificates
   (they are decided from the merged results) and sends the evaluation to every rank; the command
   writes the table and the report on rank 0 only.

A rank killed at any moment (SIGKILL included) loses at most the batch it was attacking; torchrun
then stops the others, and the same command resumes from the store and the shards. The collective
calls wait up to :data:`TIMEOUT` (a slow rank's share, or rank 0's lock, is waited for).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from advlab._io import locked_directory
from advlab.evaluation.detection import detector_bytes, detector_from_bytes
from advlab.evaluation.respond import add_cost
from advlab.evaluation.session import attach_detector, finish_run, open_run_store, start_run
from advlab.results import shards
from advlab.results.plan import Job
from advlab.results.store import Store, config_changes, open_store

if TYPE_CHECKING:
    from advlab.evaluation.dense import DenseEvaluation
    from advlab.evaluation.result import Evaluation
    from advlab.evaluation.run import Run
    from advlab.evaluation.settings import Plan, Settings

TIMEOUT = timedelta(hours=24)
SHARDS = "shards"


class RankZeroFailed(ValueError):
    """Rank 0 could not start the run (its one-line message is repeated on every rank)."""


@dataclass(frozen=True)
class World:
    """This process's place in its ``torchrun`` group: ``rank`` of ``size`` (0 of 1 alone)."""

    rank: int = 0
    size: int = 1


def launched_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def current_world(backend: str | None = None) -> World:
    """The group this process runs in: torchrun's ``WORLD_SIZE``/``RANK``, its process group made once.

    Args:
        backend: ``"gloo"`` (CPU, the default) or ``"nccl"`` (CUDA); used when the group is made.
    """
    if launched_size() <= 1:
        return World()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build; run advlab without torchrun")
    if not dist.is_initialized():
        if backend == "nccl":  # one GPU per process: the collectives run on this rank's own
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend or "gloo", timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size())


def assigned(jobs: list[Job], n_batches: int, world: World) -> list[tuple[Job, int]]:
    """The (job, batch) pairs of ``world.rank``: pair i of the jobs' fixed order goes to rank i mod size."""
    pairs = [(job, b) for job in jobs for b in range(n_batches)]
    return [pair for i, pair in enumerate(pairs) if i % world.size == world.rank]


def shard_dir(out: str | os.PathLike[str], rank: int) -> Path:
    """The directory of rank ``rank``'s shard store inside the output directory."""
    return Path(out) / SHARDS / f"rank-{rank}"


def run_sharded(p: Plan, s: Settings, world: World) -> Evaluation | DenseEvaluation:
    """Run the plan as rank ``world.rank`` of ``world.size``; every rank returns rank 0's evaluation."""
    if s.out is None:
        raise ValueError("out: an evaluation under torchrun needs an output directory (--out)")
    if world.rank != 0:
        return _work(p, s, world)
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(locked_directory(s.out, arg="out", command=s.command or "advlab.evaluate()"))
            store = open_run_store(p, s, out)
        except Exception as e:
            _broadcast(f"{type(e).__name__}: {e}")
            raise
        stack.callback(store.close)
        _broadcast(None)
        return _lead(p, s, world, store, out)
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: ExitStack may swallow exceptions)


def _lead(p: Plan, s: Settings, world: World, store: Store, out: Path) -> Evaluation | DenseEvaluation:
    """Rank 0: merge what the shards hold, deal out and attack the batches, merge again, finish the run."""
    run, jobs = start_run(p, s, store, extra_env={"world_size": world.size})
    attach_detector(run, p, s, out)  # fitted (or loaded) here once; its file travels to the other ranks
    configs = _gather_into(store, None)  # batches a killed run had finished in the shards
    other = [r for r, c in enumerate(configs) if c is not None and config_changes(c, p.config)]
    if other:  # another model, other data or other arguments on a rank: its batches are not this run's
        message = (f"rank(s) {', '.join(map(str, other))} planned another evaluation than rank 0 (model, data or "
                   "arguments differ); give every rank the same command, model and data")
        _broadcast({"error": message})
        raise ValueError(message)
    run.clean_pass()
    done = {job.key: sorted(store.done_batches(job.key)) for job in jobs}
    _broadcast({"done": done, "detector": None if run.detector is None else detector_bytes(out, run.detector)})
    t0 = time.perf_counter()
    _attack(run, jobs, world, done)
    _gather_into(store, None)
    _broadcast("merged")
    add_cost(run, "attacks", time.perf_counter() - t0)
    ev = finish_run(run, s, keep=True)
    dist.barrier()  # every worker has removed its shard
    with contextlib.suppress(OSError):
        (out / SHARDS).rmdir()  # empty unless a shard of a larger group is left (merged by nobody: a cache)
    _broadcast(ev)
    return ev


def _work(p: Plan, s: Settings, world: World) -> Evaluation | DenseEvaluation:
    """A rank other than 0: attack its share of the batches into its shard, send it to rank 0, delete it.

    Returns rank 0's evaluation once it is finished (the checks run there, on the merged results).
    """
    failed = _receive()
    if failed is not None:
        raise RankZeroFailed(f"rank 0 could not start the run: {failed}")
    directory = shard_dir(str(s.out), world.rank)
    directory.mkdir(parents=True, exist_ok=True)
    store = open_store(directory, p.config, force=True)  # a shard of another configuration is only a cache
    try:
        run, jobs = start_run(p, s, store, progress=False, extra_env={"world_size": world.size})
        _gather_into(None, shards.dump(store), p.config)
        answer = _receive()
        if "error" in answer:
            raise RankZeroFailed(answer["error"])
        if answer.get("detector") is not None:
            run.detector = detector_from_bytes(answer["detector"], run.net)
        _attack(run, jobs, world, answer["done"])
        _gather_into(None, shards.dump(store))
        _receive()  # rank 0 has written the shard into the run's store
    finally:
        store.close()
    shutil.rmtree(directory, ignore_errors=True)  # the shard with its write-ahead log
    dist.barrier()
    ev: Evaluation | DenseEvaluation = _receive()
    return ev


def _attack(run: Run, jobs: list[Job], world: World, done: dict[str, list[int]]) -> None:
    """Attack this rank's pairs that neither the run's store (``done``) nor this rank's own store holds."""
    mine = assigned(jobs, run.n_batches, world)
    have = {job.key: run.store.done_batches(job.key) | set(done.get(job.key, ())) for job in jobs}
    todo = [(job, b) for job, b in mine if b not in have[job.key]]
    run.run_batches(todo, len(mine))


def _gather_into(store: Store | None, rows: dict[str, list[tuple[Any, ...]]] | None,
                 config: dict[str, Any] | None = None) -> list[dict[str, Any] | None]:
    """Every worker's shard rows to rank 0, written into ``store`` there (workers pass their rows).

    Returns, on rank 0, the configuration each rank sent with its rows (None where none was).
    """
    received: list[Any] | None = [None] * dist.get_world_size() if store is not None else None
    dist.gather_object((config, rows), received, dst=0)
    configs: list[dict[str, Any] | None] = []
    for part in received or []:
        sent, part_rows = part if part is not None else (None, None)
        configs.append(sent)
        if store is not None and part_rows:
            shards.load(store, part_rows)
    return configs


def _broadcast(obj: Any) -> None:
    """Send ``obj`` from rank 0 to every other rank."""
    dist.broadcast_object_list([obj], src=0)


def _receive() -> Any:
    """What rank 0 broadcast."""
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["SHARDS", "TIMEOUT", "RankZeroFailed", "World", "assigned", "current_world", "run_sharded", "shard_dir"]
