"""How much of a transferred perturbation survives Defense-GAN's projection, per generator (issue 16).

    python benchmarks/defense_gan_kept.py --threads 1 --conv PATH_TO_CONV_GENERATOR

PGD-40 at L∞ 0.3 on bare lenet-mnist (as benchmarks/defense_gan.py's transfer stage) on the first
--n test images; each generator projects the clean image x and the adversarial image x + δ
(L = --steps × R = --restarts, seed 0; default 100 × 5, the projection this record was measured with
before the shipped default became the paper's 200 × 10). Reported per generator: mean ‖P(x) − x‖₂, ‖P(x + δ) − P(x)‖₂,
and the share of δ carried through, mean of ⟨P(x + δ) − P(x), δ⟩ / ‖δ‖₂², plus lenet's Acc@1 on
P(x + δ). Written to benchmarks/results/defense_gan_conv/kept.json (read by defense_gan.py's report).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from advlab import ThreatModel
from advlab.attacks import pgd
from advlab.data import load_dataset
from advlab.models import load_model
from advlab.models.defense_gan import project
from advlab.models.gan import load_generator

OUT = Path(__file__).resolve().parent / "results" / "defense_gan_conv" / "kept.json"


def measure(name: str, bare: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor,
            steps: int, restarts: int) -> dict[str, float]:
    """The projection's figures for one generator."""
    g = load_generator(name)
    d = (xa - x).flatten(1)
    px = project(g, x, steps=steps, restarts=restarts, rng=torch.Generator().manual_seed(0))[0]
    pa = project(g, xa, steps=steps, restarts=restarts, rng=torch.Generator().manual_seed(0))[0]
    moved = (pa - px).flatten(1)
    with torch.no_grad():
        acc = float((bare(pa).argmax(1) == y).float().mean())
    return {"proj_clean_l2": float((px - x).flatten(1).norm(dim=1).mean()),
            "proj_moved_l2": float(moved.norm(dim=1).mean()),
            "kept": float(((moved * d).sum(1) / d.pow(2).sum(1)).mean()), "acc_purified": acc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=250)
    p.add_argument("--steps", type=int, default=100, help="L of the projection (default 100)")
    p.add_argument("--restarts", type=int, default=5, help="R of the projection (default 5)")
    p.add_argument("--conv", required=True, help="path of the convolutional generator")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_dataset("mnist", "test")
    x, y = x[:args.n], y[:args.n]
    bare = load_model("lenet-mnist")
    xa = pgd(bare, x, y, ThreatModel("linf", 0.3), steps=40, step_size=0.01,
             generator=torch.Generator().manual_seed(0)).x_adv
    lr = (args.steps, args.restarts)
    out = {"n": args.n, "steps": args.steps, "restarts": args.restarts,
           "mlp": measure("wgan-mnist", bare, x, y, xa, *lr), "conv": measure(args.conv, bare, x, y, xa, *lr)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
