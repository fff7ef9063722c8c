"""The default ``advlab evaluate`` timed on a base commit and on this tree, interleaved, with its results compared.

    python benchmarks/default_speed.py                    # full default run (10 000 images), 2 rounds
    python benchmarks/default_speed.py --rounds 1 --n 1000 --threads 1   # a quick look on a busy machine

Each round runs ``python -m advlab evaluate --out DIR --force --no-progress`` (every other option at
its default: lenet-mnist, all MNIST test images, the default attacks, ε 0.1/0.2/0.3 L∞, the
gradient-masking checks, batch 500, 2 torch threads, report.md/html with figures) once with the
base commit's code (a ``git worktree`` of it, run with its own ``PYTHONPATH``) and once with this
tree's, base first, then alternately (base, this, base, this ...), so the machine's drift hits both
alike. Reported: each wall time (the whole command, start-up and report included) with the load
average before it, the ratio of the medians, and whether results.json (every key but ``seconds``)
and checks.json are identical between every run and the first base run. Writes the
``default-speed`` section of docs/benchmarks.md and benchmarks/results/default_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

ROOT = Path(__file__).resolve().parent.parent
BASE = "8cce061"  # main when the speed work started (issue #21 part 4)
RESULTS = ROOT / "benchmarks" / "results" / "default_speed.json"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def _run(src: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """Wall seconds of one ``advlab evaluate`` with the code under ``src``, and the 1-minute load before it."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "advlab", "evaluate", "--out", str(out), "--force", "--no-progress", *extra]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=out.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={src}) failed:\n{proc.stderr[-2000:]}")
    return seconds, load


def _attack_seconds(out: Path) -> dict[str, float]:
    """Seconds per attack from results.json: the sum of its jobs' times (a minimal attack's rows share one job)."""
    jobs: dict[str, set[float]] = {}
    for r in json.loads((out / "results.json").read_text()):
        if not r["attack"].startswith("worst-case"):
            jobs.setdefault(r["attack"], set()).add(r["seconds"])
    return {a: round(sum(s), 1) for a, s in jobs.items()}


def _outputs(out: Path) -> tuple[list[dict[str, Any]], Any]:
    """results.json without ``seconds``, and checks.json (None where absent)."""
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((out / "results.json").read_text())]
    checks = out / "checks.json"
    return rows, json.loads(checks.read_text()) if checks.exists() else None


def _table(runs: list[dict[str, Any]]) -> str:
    names = list(runs[0]["attacks"])
    lines = ["| round | code | wall time (s) | load before | results.json = base's | checks.json = base's | "
             + " | ".join(f"{a} (s)" for a in names) + " |", "|---" * (6 + len(names)) + "|"]
    for r in runs:
        lines.append(f"| {r['round']} | {r['code']} | {r['seconds']:.1f} | {r['load']:.2f} | "
                     f"{'yes' if r['same_results'] else 'NO'} | {'yes' if r['same_checks'] else 'NO'} | "
                     + " | ".join(str(r["attacks"].get(a, "—")) for a in names) + " |")
    return "\n".join(lines)


def _write(args: argparse.Namespace, extra: list[str], base: str, head: str, runs: list[dict[str, Any]],
           identical: bool) -> None:
    """The docs section and the JSON of the measurement."""
    t_base = statistics.median(r["seconds"] for r in runs if r["code"].startswith("base"))
    t_this = statistics.median(r["seconds"] for r in runs if r["code"].startswith("this"))
    command = "python benchmarks/default_speed.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    body = (f"## The default `advlab evaluate`: base {base} vs this tree\n\n{environment()}\n\n"
            f"Command: `{command}` — each run is `python -m advlab evaluate --out DIR --force --no-progress`"
            f"{' ' + ' '.join(extra) if extra else ''} (defaults: lenet-mnist, "
            f"{'all 10 000' if args.n is None else f'the first {args.n}'} MNIST test images, noise, semantic, fgsm, "
            f"bim, pgd, deepfool, cw, ε 0.1/0.2/0.3 L∞, checks, batch 500, {args.threads or 2} torch thread(s), "
            "report with figures), "
            "base and this tree alternately; wall time of the whole command, and each attack's seconds as "
            "results.json records them (the rest is start-up, the clean pass, the checks and the report).\n\n"
            f"{_table(runs)}\n\nMedian wall time: base {t_base:.1f} s, this tree {t_this:.1f} s — "
            f"**{t_base / t_this:.2f}×**. results.json (every key but `seconds`) and checks.json identical "
            f"in every run: **{'yes' if identical else 'NO'}**.\n")
    write_section("default-speed", body)
    RESULTS.write_text(json.dumps({"base": base, "this": head, "command": command, "runs": runs,
                                   "median_base": t_base, "median_this": t_this, "identical": identical},
                                  indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default=BASE, help=f"commit to compare against (default {BASE}, main at the start)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n", type=int, default=None, help="first n test images (default all: the default run)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of every run (default: the command's own, 2); 1 is steadier on a loaded machine")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md and the JSON")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its worktree
    extra = ([] if args.n is None else ["--n", str(args.n)]) + ([] if args.threads is None else
                                                                 ["--threads", str(args.threads)])
    base = _git("rev-parse", "--short", args.base)
    head = _git("rev-parse", "--short", "HEAD") + ("+changes" if _git("status", "--porcelain", "src") else "")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="advlab-speed-") as tmp:
        tree = Path(tmp) / "base"
        _git("worktree", "add", "--detach", str(tree), base)
        try:
            first: tuple[list[dict[str, Any]], Any] | None = None
            for rnd in range(1, args.rounds + 1):
                for code, src in (("base " + base, tree / "src"), ("this " + head, ROOT / "src")):
                    out = Path(tmp) / f"run-{rnd}-{code.split()[0]}"
                    out.mkdir()
                    seconds, load = _run(src, out / "out", extra)
                    got = _outputs(out / "out")
                    first = first or got
                    runs.append({"round": rnd, "code": code, "seconds": seconds, "load": load,
                                 "same_results": got[0] == first[0], "same_checks": got[1] == first[1],
                                 "attacks": _attack_seconds(out / "out")})
                    print(f"round {rnd} {code}: {seconds:.1f} s (load {load:.2f}), results.json same: "
                          f"{got[0] == first[0]}, checks.json same: {got[1] == first[1]}", flush=True)
        finally:
            _git("worktree", "remove", "--force", str(tree))
    t_base = statistics.median(r["seconds"] for r in runs if r["code"].startswith("base"))
    t_this = statistics.median(r["seconds"] for r in runs if r["code"].startswith("this"))
    identical = all(r["same_results"] and r["same_checks"] for r in runs)
    print(f"median base {t_base:.1f} s, this {t_this:.1f} s: {t_base / t_this:.2f}x; identical: {identical}")
    if args.no_doc:
        return
    _write(args, extra, base, head, runs, identical)


if __name__ == "__main__":
    main()
