"""Issue 16's speed line: each detector fitted on 10 000 MNIST training images (and their PGD copies) and scored.

    PYTHONPATH=src python benchmarks/detector_speed.py --threads 2

lenet-mnist; x_clean = the first 10 000 training images, x_adv = their PGD-40 copies (L∞ 0.3, not
timed), x_noisy = Gaussian copies (σ 0.3, clipped); each detector at its defaults (kdbu: T = 50
dropout passes, the number in the AUC table). Fit: wall seconds of ``fit``; scoring: images/s of
``score`` on the first 10 000 test images (batches of 500). Writes the `detector-speed` section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

from advlab.attacks import pgd
from advlab.data import load_dataset
from advlab.detect import make_detector
from advlab.models import load_model
from advlab.threat import ThreatModel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=10000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("lenet-mnist")
    x, y = load_dataset("mnist", "train")
    x, y = x[: args.n], y[: args.n]
    g = torch.Generator().manual_seed(0)
    x_adv = pgd(model, x, y, ThreatModel("linf", 0.3), generator=g).x_adv
    x_noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    xt = load_dataset("mnist", "test")[0][:10000]
    rows = []
    for name in ("kdbu", "lid", "net"):
        det = make_detector(name)
        t = time.perf_counter()
        det.fit(model, x, x_adv, x_noisy)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        det.score(xt)
        rate = len(xt) / (time.perf_counter() - t)
        rows.append(f"| {name} | {fit_s:.1f} | {rate:.0f} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "## Detectors: fit and scoring speed (issue 16)", "",
        f"`PYTHONPATH=src python benchmarks/detector_speed.py --threads {args.threads} --n {args.n}` — {environment()}.",
        "", f"lenet-mnist; fitted on the first {args.n} MNIST training images, their PGD-40 copies (L∞ 0.3, not "
        "timed) and Gaussian copies; defaults (kdbu: T = 50 dropout passes, as in the AUC table). Scoring: the "
        "first 10 000 test images, batches of 500. Issue 16: fit ≤ 5 min on 2 cores, score ≥ 2 000 images/s "
        "(KD+BU and the detector network).", "",
        "| detector | fit (s) | scoring (images/s) |", "|---|---|---|", *rows])
    write_section("detector-speed", body)


if __name__ == "__main__":
    main()
