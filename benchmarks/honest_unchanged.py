"""Honest models keep their rows, raise no flag and pay little for the checks (issue 14).

    python benchmarks/honest_unchanged.py --old-src /path/to/old/checkout/src --n 500
    python benchmarks/honest_unchanged.py --old-src ... --reuse /tmp/cmp      # compare runs already made

For each model (default: lenet-mnist, googlenet-mnist, cnn-mnist-robust) runs the default
``advlab evaluate --model M --n N`` twice in subprocesses — with this checkout's ``src`` and with
``--old-src`` (an earlier advlab, e.g. a ``git worktree`` of the commit before the change) — and
reports: the rows of the old run that changed in the new one (every key but ``seconds``), the rows
the new one added, the checks that fired, what the escalation ran, and the cost of the checks and
the escalation as a share of the run (from the store's meta ``costs``). Writes
benchmarks/results/honest_unchanged.json and the "honest-unchanged" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("lenet-mnist", "googlenet-mnist", "cnn-mnist-robust")


def evaluate(src: Path, model: str, n: int, out: Path, threads: int) -> float:
    """``python -m advlab evaluate`` with ``src`` first on the path; its wall time."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "advlab", "evaluate", "--model", model, "--n", str(n), "--threads",
                    str(threads), "--no-progress", "--out", str(out)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def meta(out: Path) -> dict[str, Any]:
    """The store's meta entries of what the evaluation added and what it cost."""
    con = sqlite3.connect(out / "results.sqlite")
    try:
        rows = dict(con.execute("SELECT key, value FROM config").fetchall())
    finally:
        con.close()
    return {k: json.loads(rows[k]) for k in ("costs", "escalation", "ensemble", "skipped") if k in rows}


def records(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out``: its results.json, else computed from its store (an ``advlab.evaluate(out=...)`` run)."""
    if (out / "results.json").exists():
        return json.loads((out / "results.json").read_text())
    from advlab.results.aggregate import compute_rows
    from advlab.results.store import Store

    store = Store(out / "results.sqlite")
    try:
        return [r.as_dict() for r in compute_rows(store, store.get_config())]
    finally:
        store.close()


def fired(out: Path) -> list[str]:
    """The codes of the checks that fired (checks.json, else the store's meta)."""
    if (out / "checks.json").exists():
        checks = json.loads((out / "checks.json").read_text())
    else:
        con = sqlite3.connect(out / "results.sqlite")
        try:
            row = con.execute("SELECT value FROM config WHERE key = 'checks'").fetchone()
        finally:
            con.close()
        checks = json.loads(row[0]) if row else []
    return [c["code"] for c in checks if c["fired"]]


def compare(old: Path, new: Path) -> dict[str, Any]:
    """Changed rows (by attack, norm, ε; every key but seconds), added rows, fired checks, costs."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["attack"].split(" [")[0], r["norm"], r["eps"])

    a = {key(r): r for r in records(old)}
    b = {key(r): r for r in records(new)}
    changed = []
    for k, r in a.items():
        diff = {f: (r[f], b[k][f]) for f in r if f != "seconds" and k in b and r[f] != b[k][f]}
        if k not in b or diff:
            changed.append({"row": list(k), "diff": diff if k in b else "missing"})
    m = meta(new)
    costs = m.get("costs") or {}
    total = sum(costs.values())
    return {"changed": changed, "added": [list(k) for k in b if k not in a],
            "fired": fired(new), "escalation": m.get("escalation"),
            "ensemble": m.get("ensemble"), "costs": costs,
            "checks_share": (costs.get("checks", 0.0) + costs.get("escalation", 0.0)) / total if total else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-src", type=Path, required=True, help="src/ of the advlab to compare with")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/honest-unchanged"), help="where the runs go")
    ap.add_argument("--reuse", type=Path, default=None, help="a --work directory of runs already made")
    args = ap.parse_args()
    work = args.reuse or args.work
    records = []
    for model in args.models.split(","):
        old, new = work / f"old-{model}", work / f"bench-{model}"
        seconds = {}
        if args.reuse is None:
            seconds = {"old": evaluate(args.old_src, model, args.n, old, args.threads),
                       "new": evaluate(ROOT / "src", model, args.n, new, args.threads)}
        records.append({"model": model, **compare(old, new), "seconds": seconds})
        print(json.dumps(records[-1]), flush=True)
    command = "python benchmarks/honest_unchanged.py " + " ".join(sys.argv[1:])
    (ROOT / "benchmarks" / "results" / "honest_unchanged.json").write_text(
        json.dumps({"command": command, "n": args.n, "environment": environment(), "models": records}, indent=2)
        + "\n")
    lines = ["| model | rows changed (besides seconds) | rows added | checks fired | escalation | "
             "checks + escalation share of the run |", "|---|---|---|---|---|---|"]
    for r in records:
        changed = "; ".join(f"{' '.join(map(str, c['row']))}: {c['diff']}" for c in r["changed"]) or "none"
        share = "—" if r["checks_share"] is None else f"{r['checks_share']:.0%}"
        lines.append(f"| {r['model']} | {changed} | {', '.join(' '.join(map(str, a)) for a in r['added']) or 'none'} "
                     f"| {', '.join(r['fired']) or 'none'} | {'none' if not r['escalation'] else r['escalation']} "
                     f"| {share} ({r['costs']}) |")
    write_section("honest-unchanged", "\n".join([
        "## Honest models: rows unchanged, no flag, cheap checks (issue #14)", "",
        f"`{command}` · {environment()}", "",
        f"The default `advlab evaluate --n {args.n}` of each model with advlab before issue 14 and after it.",
        "", *lines]))


if __name__ == "__main__":
    main()
