"""`advlab evaluate` under torchrun: same results as one process, resumes after a SIGKILLed rank, and its speed.

    python benchmarks/torchrun.py [--n 2000] [--nproc 2] [--repeats 2]

1. identity: `torchrun --nproc_per_node=N -m advlab -- evaluate --n N ...` (defaults otherwise) against the
   same evaluation in one process with one thread: results.json equal in every key but `seconds`;
2. kill and resume: the torchrun run again, rank 1 SIGKILLed once its shard holds a few batches, then the same
   command to completion: results.json equal to the single process's;
3. speed: the torchrun run's wall time against two independent half-size runs (`--n N/2`, one thread each)
   started at the same moment, interleaved `--repeats` times (the machine is shared: ratios within one run).

Writes the "torchrun" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def single(out: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "advlab", "evaluate", "--n", str(n), "--out", str(out), "--no-progress",
            "--threads", "1"]


def torchrun(out: Path, n: int, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "advlab",
            "--", "evaluate", "--n", str(n), "--out", str(out), "--no-progress"]


def rows(d: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((d / "results.json").read_text())]


def timed(cmds: list[list[str]]) -> float:
    """Start every command at once; the wall time until the last one ends (each must succeed)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p, c in zip(procs, cmds, strict=True):
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{' '.join(c)} failed ({p.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker with RANK=rank among the descendants of ``parent``."""
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split("\n")[1:]
    children: dict[int, list[int]] = {}
    for line in out:
        if line.strip():
            pid, ppid = map(int, line.split())
            children.setdefault(ppid, []).append(pid)
    todo, seen = [parent], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children.get(p, []))
    for pid in seen:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    return None


def shard_batches(out: Path) -> int:
    db = out / "shards" / "rank-1" / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return int(con.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_and_resume(out: Path, n: int, nproc: int, after: int) -> str:
    """Run under torchrun, SIGKILL rank 1 once its shard holds ``after`` batches, rerun; what happened."""
    proc = subprocess.Popen(torchrun(out, n, nproc), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and shard_batches(out) < after:
        time.sleep(0.5)
    pid = rank_pid(proc.pid, 1)
    if proc.poll() is not None or pid is None:
        proc.communicate()
        return "the run ended before the kill"
    held = shard_batches(out)
    os.kill(pid, signal.SIGKILL)
    proc.communicate()
    resumed_from = held
    t0 = time.perf_counter()
    timed([torchrun(out, n, nproc)])
    return (f"rank 1 SIGKILLed with {resumed_from} batches in its shard; torchrun exited {proc.returncode}; "
            f"the same command then finished in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="advlab-torchrun-"))
    half = args.n // args.nproc
    t_single = timed([single(work / "single", args.n)])
    dist_times, half_times = [], []
    for r in range(args.repeats):  # interleaved: torchrun, halves, torchrun, halves, ...
        dist_times.append(timed([torchrun(work / f"dist{r}", args.n, args.nproc)]))
        half_times.append(timed([single(work / f"half{r}-{k}", half) for k in range(args.nproc)]))
    same = all(rows(work / f"dist{r}") == rows(work / "single") for r in range(args.repeats))
    story = kill_and_resume(work / "killed", args.n, args.nproc, after=3)
    resumed_same = rows(work / "killed") == rows(work / "single")
    ratio = sum(dist_times) / sum(half_times)
    lines = [
        "## Evaluation under torchrun (issue 21)",
        "",
        f"`python benchmarks/torchrun.py --n {args.n} --nproc {args.nproc} --repeats {args.repeats}` — {environment()}.",
        "",
        f"- **Identity**: `torchrun --standalone --nproc_per_node={args.nproc} -m advlab -- evaluate --n {args.n}` "
        f"(default attacks, checks on; one thread per process) against `advlab evaluate --n {args.n} --threads 1`: "
        f"results.json {'identical' if same else 'DIFFERENT'} in every key but `seconds` "
        f"({len(rows(work / 'single'))} rows, {args.repeats} torchrun runs).",
        f"- **Kill and resume**: {story}; results.json {'identical' if resumed_same else 'DIFFERENT'} to the "
        "single process's.",
        f"- **Speed**: torchrun with {args.nproc} processes "
        f"{', '.join(f'{t:.1f} s' for t in dist_times)}; {args.nproc} independent `--n {half}` runs started "
        f"together {', '.join(f'{t:.1f} s' for t in half_times)} (interleaved); ratio {ratio:.3f} "
        f"(torchrun / halves). One process, one thread, all {args.n}: {t_single:.1f} s.",
        "- Why torchrun is not slower than the halves: both split the attacks' batches in two, but each half-size "
        "run also runs the gradient-masking checks on its own 200 examples and renders its own report, which the "
        "torchrun run does once (on rank 0, while rank 1 has finished).",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("torchrun", body)


if __name__ == "__main__":
    main()
