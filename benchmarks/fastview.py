"""What the attacks' fast view of a model gains: one forward+backward (input gradient) pass, plain vs view.

    python benchmarks/fastview.py                 # shipped models, first 1000 MNIST test images, 2 threads
    python benchmarks/fastview.py --repeats 9 --n 500

For each shipped MNIST model, the same input-gradient pass (``advlab.attacks.loss_grad``) is timed on
the model as given and on ``advlab.attacks.fast_view(model)`` (detached parameters, channels_last
convolution weights), interleaved repeat by repeat so the machine's drift hits both alike; the
median is reported, with the largest logit difference between the two. Writes the "fastview"
section of docs/benchmarks.md.
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
from advlab.attacks import fast_view, loss_grad

MODELS = ("lenet-mnist", "cnn-mnist-robust", "googlenet-mnist", "mlp-mnist")


def _time(model, x, y) -> float:
    t0 = time.perf_counter()
    loss_grad(model, x, y)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    rows = []
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
    body = "\n".join([
        "## The attacks' fast view of a model",
        "",
        f"`python benchmarks/fastview.py --n {args.n} --repeats {args.repeats} --threads {args.threads}` — one "
        f"forward+backward (input gradient) pass over the first {args.n} MNIST test images, on the model as "
        f"given and through `advlab.attacks.fast_view` (detached parameters, channels_last convolution weights), "
        f"median of {args.repeats} interleaved repeats. {environment()}.",
        "",
        "| model | plain (ms) | view (ms) | speed-up | max logit difference | view used |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print("\n" + body)
    write_section("fastview", body)


if __name__ == "__main__":
    main()
