"""SIGKILL an `advlab evaluate` run three times at random moments, resume it, compare with a clean run.

    python benchmarks/kill_resume.py [--n 1000] [--seed 0]

Prints whether the resumed results.json equals the uninterrupted one (all keys but `seconds`, which is
wall time) and writes the "Kill and resume" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section


def command(out: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "advlab", "evaluate", "--n", str(n), "--batch-size", "100", "--out", str(out),
            "--no-progress", "--threads", "1"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="advlab-kill-"))
    t0 = time.perf_counter()
    subprocess.run(command(work / "clean", args.n), check=True, capture_output=True)
    clean_seconds = time.perf_counter() - t0
    kills = []
    for _ in range(3):
        # each kill lands within the first third of a full run, so three kills all interrupt real work
        delay = rng.uniform(0.05, 0.3) * clean_seconds
        proc = subprocess.Popen(command(work / "killed", args.n), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
            kills.append(f"finished before the kill at {delay:.0f} s")
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append(f"SIGKILL at {delay:.0f} s")
    subprocess.run(command(work / "killed", args.n), check=True, capture_output=True)

    def load(d: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((d / "results.json").read_text())]

    same = load(work / "clean") == load(work / "killed")
    lines = [
        "## Kill and resume (issue 4)",
        "",
        f"`python benchmarks/kill_resume.py --n {args.n}` — `advlab evaluate --n {args.n} --batch-size 100 --threads 1` with the "
        f"default attacks, killed with SIGKILL three times at random moments ({'; '.join(kills)}), then "
        f"re-run to completion. {environment()}.",
        "",
        f"- uninterrupted run: {clean_seconds:.0f} s",
        f"- resumed results.json equals the uninterrupted one (every key but `seconds`): **{same}**",
    ]
    write_section("killresume", "\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
