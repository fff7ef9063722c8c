"""Where one CW iteration on lenet-mnist spends its time: torch.profiler over CW's own steps.

    python benchmarks/cw_profile.py [--n 500] [--steps 20] [--threads 1]

Runs the `cw` attack (the evaluation's objective, one binary-search round of `--steps` Adam steps) on
the first n MNIST test images through the fast view, under torch.profiler, and writes the share of
self CPU time per operator into the "cw-profile" section of docs/benchmarks.md — the evidence for
where the default evaluation's time goes (default-speed section).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.attacks import get_attack
from advlab.threat import ThreatModel

TOP = 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    model, cw = advlab.load_model("lenet-mnist"), get_attack("cw")
    threat = ThreatModel("l2", math.inf)
    cw(model, x[:10], y[:10], threat, steps=2, binary_search_steps=1)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        cw(model, x, y, threat, steps=args.steps, binary_search_steps=1, early_stop=False)
        seconds = time.perf_counter() - t0
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = [
        "## Where CW's time goes (lenet-mnist, one iteration = forward + input gradient)",
        "",
        f"`python benchmarks/cw_profile.py --n {args.n} --steps {args.steps} --threads {args.threads}` — "
        f"{environment()}. CW (f6, one round of {args.steps} Adam steps, no early abort) on the first {args.n} "
        f"MNIST test images through the fast view: {seconds:.2f} s, {1000 * seconds / args.steps:.1f} ms per "
        "iteration. Share of self CPU time per operator (torch.profiler):",
        "",
        "| operator | calls | share |",
        "|---|---:|---:|",
        *[f"| `{e.key}` | {e.count} | {100 * e.self_cpu_time_total / total:.1f} % |" for e in events[:TOP]],
        "",
        "`aten::convolution_backward` is the input gradient of both convolutions (the weights need none); "
        "lenet's first convolution has one input channel.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("cw-profile", body)


if __name__ == "__main__":
    main()
