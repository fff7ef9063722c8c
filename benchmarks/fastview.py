"""What the attacks' fast view of a model gains, and what building it costs per attack call.

    python benchmarks/fastview.py                 # shipped models, first 1000 MNIST test images, 2 threads
    python benchmarks/fastview.py --repeats 9 --n 500

For each shipped MNIST model, the same input-gradient pass (``advlab.attacks.loss_grad``) is timed on
the model as given and on ``advlab.attacks.fast_view(model)`` (detached parameter clones, channels_last
convolution weights), interleaved repeat by repeat so the machine's drift hits both alike; the
median is reported, with the largest logit difference between the two. The view is built (copied
and probed) at every attack call, so the script also times ``fast_view`` itself and a whole
``get_attack("pgd")`` call with one step on the first ``--small`` images, with ``fast_views`` on and
off. Writes the "fastview" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.attacks import fast_view, fast_views, get_attack, loss_grad

MODELS = ("lenet-mnist", "cnn-mnist-robust", "googlenet-mnist", "mlp-mnist")


def _time(model, x, y) -> float:
    t0 = time.perf_counter()
    loss_grad(model, x, y)
    return time.perf_counter() - t0


def _time_view(model, x) -> float:
    t0 = time.perf_counter()
    fast_view(model, x[:2])
    return time.perf_counter() - t0


def _time_pgd(model, x, y, enabled: bool) -> float:
    threat = advlab.ThreatModel("linf", 0.1)
    t0 = time.perf_counter()
    with fast_views(enabled):
        get_attack("pgd")(model, x, y, threat, steps=1, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t0


def _per_call(model, x, y, repeats: int) -> tuple[float, float, float]:
    """Median seconds of building the view, and of a 1-step PGD call with the view off and on (interleaved)."""
    _time_pgd(model, x, y, True), _time_pgd(model, x, y, False)  # warm-up
    build, off, on = [], [], []
    for _ in range(repeats):
        build.append(_time_view(model, x))
        off.append(_time_pgd(model, x, y, False))
        on.append(_time_pgd(model, x, y, True))
    return statistics.median(build), statistics.median(off), statistics.median(on)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--small", type=int, default=100, help="images per 1-step PGD call (the per-call overhead)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    rows, calls = [], []
    for name in MODELS:
        model = advlab.load_model(name)
        view = fast_view(model, x[:2])
        with torch.no_grad():
            diff = float((view(x) - model(x)).abs().max())
        _time(model, x, y), _time(view, x, y)  # warm-up
        plain, fast = [], []
        for _ in range(args.repeats):
            plain.append(_time(model, x, y))
            fast.append(_time(view, x, y))
        p, f = statistics.median(plain), statistics.median(fast)
        rows.append(f"| {name} | {p * 1000:.1f} | {f * 1000:.1f} | {p / f:.2f}× | {diff:.1e} | "
                    f"{'yes' if view is not model else 'no (fallback)'} |")
        print(rows[-1], flush=True)
        build, off, on = _per_call(model, x[: args.small], y[: args.small], 2 * args.repeats + 1)
        calls.append(f"| {name} | {build * 1000:.1f} | {off * 1000:.1f} | {on * 1000:.1f} | {on / off:.2f}× |")
        print(calls[-1], flush=True)
    body = "\n".join([
        "## The attacks' fast view of a model",
        "",
        f"`python benchmarks/fastview.py --n {args.n} --repeats {args.repeats} --threads {args.threads}` — one "
        f"forward+backward (input gradient) pass over the first {args.n} MNIST test images, on the model as "
        f"given and through `advlab.attacks.fast_view` (detached parameter clones, channels_last convolution weights), "
        f"median of {args.repeats} interleaved repeats. {environment()}.",
        "",
        "| model | plain (ms) | view (ms) | speed-up | max logit difference | view used |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"The view is built at every attack call: copied (parameter and buffer clones), its copy run twice on two "
        f"of the attacked images (hooks, state changes and undeclared randomness rule it out), then run once with "
        f"channels_last weights. What that costs: building it alone, and a whole `get_attack(\"pgd\")` call with "
        f"one step on the first {args.small} images with `fast_views(False)` and `fast_views(True)`, median of "
        f"{2 * args.repeats + 1} interleaved repeats (a 1-step call is where the building weighs most; the 40-step "
        f"default spreads it over 40 gradient passes).",
        "",
        f"| model | build + probe (ms) | PGD 1 step, {args.small} images, view off (ms) | view on (ms) | on / off |",
        "|---|---|---|---|---|",
        *calls,
    ])
    print("\n" + body)
    write_section("fastview", body)


if __name__ == "__main__":
    main()
