"""Which part of Defense-GAN's projection of a transferred example fools lenet: δ carried, or the rest (issue 16).

    python benchmarks/defense_gan_parts.py --threads 1 --n 250

PGD-40 at L∞ 0.3 on bare lenet-mnist (benchmarks/defense_gan.py's transfer stage: step 0.01, seed 0)
on the first --n MNIST test images gives x + δ. The shipped generator projects x and x + δ with the
shipped projection (L = 200 Adam steps × R = 10 restarts, seed 0). Per image, the move of the
projection splits into the part along δ and the rest:

    P(x + δ) − P(x) = c·δ + r,   c = ⟨P(x + δ) − P(x), δ⟩ / ‖δ‖₂²,   r ⟂ δ.

The classifiers (lenet, which the attack saw; mlp-mnist and googlenet-mnist, which it did not) then
read P(x), P(x + δ), P(x) + c·δ (only what the projection carried of δ) and P(x) + r (only the rest),
each clipped to [0, 1]; and, for scale, x + α·δ for a few α. If P(x) + c·δ is read correctly and
P(x) + r is not, the projection does not fail by letting the perturbation through: it moves the
digit somewhere else in the generator's range. Written to benchmarks/results/defense_gan/parts.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from advlab import ThreatModel
from advlab.attacks import pgd
from advlab.data import load_dataset
from advlab.models import load_model
from advlab.models.defense_gan import project
from advlab.models.gan import load_generator

OUT = Path(__file__).resolve().parent / "results" / "defense_gan" / "parts.json"
EPS = 0.3
ALPHAS = (0.1, 0.2, 0.3, 0.5)
READERS = ("lenet-mnist", "mlp-mnist", "googlenet-mnist")


def split(moved: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, (c, r): the coefficient of ``moved`` along ``delta`` and the remainder orthogonal to it."""
    m, d = moved.flatten(1), delta.flatten(1)
    c = (m * d).sum(1) / d.square().sum(1).clamp_min(1e-12)
    r = m - c[:, None] * d
    return c, r.view_as(moved)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    x, y = (t[: args.n] for t in load_dataset("mnist"))
    bare = load_model("lenet-mnist")
    xa = pgd(bare, x, y, ThreatModel("linf", EPS), steps=40, step_size=0.01,
             generator=torch.Generator().manual_seed(0)).x_adv
    delta = xa - x
    g = load_generator("wgan-mnist")
    px = project(g, x, rng=torch.Generator().manual_seed(0))[0]
    pa = project(g, xa, rng=torch.Generator().manual_seed(0))[0]
    c, r = split(pa - px, delta)
    views = {"P(x)": px, "P(x + δ)": pa, "P(x) + c·δ": (px + c.view(-1, 1, 1, 1) * delta).clamp(0, 1),
             "P(x) + r": (px + r).clamp(0, 1), **{f"x + {a:g}·δ": (x + a * delta).clamp(0, 1) for a in ALPHAS}}
    acc: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name in READERS:
            model = load_model(name)
            acc[name] = {v: float((model(img).argmax(1) == y).float().mean()) for v, img in views.items()}
    record = {"n": args.n, "eps": EPS, "projection": "L 200 × R 10, Adam, seed 0", "generator": "wgan-mnist",
              "c_mean": float(c.mean()), "c_quantiles": [float(q) for q in c.quantile(torch.tensor([0.1, 0.5, 0.9]))],
              "l2": {"delta": float(delta.flatten(1).norm(dim=1).mean()),
                     "moved": float((pa - px).flatten(1).norm(dim=1).mean()),
                     "along_delta": float((c.abs() * delta.flatten(1).norm(dim=1)).mean()),
                     "rest": float(r.flatten(1).norm(dim=1).mean())},
              "acc1": acc, "seconds": round(time.perf_counter() - t0, 1)}
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
