"""Masked defenses against naive and adaptive attacks, and the checks on each (issue 7).

    python benchmarks/masking.py                 # first 1000 MNIST test images, ε = 0.3 (L∞)
    python benchmarks/masking.py --n 500 --threads 2

For each input-transformation defense wrapped around the shipped lenet-mnist, for the distilled
LeNet and the thermometer-encoded LeNet (trained here by advlab's own loop, or loaded from
--distilled / --thermometer checkpoints), and for the undefended and the adversarially trained
models: clean Acc@1, Acc@1 under the naive PGD-40 (step 0.01, cross-entropy), under the adaptive
attack (pgd-adaptive: margin loss, BPDA, EOT as the model declares), and which gradient-masking
checks fire. Writes benchmarks/results/masking.json and the "masking" section of docs/defenses.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_defenses_section

import advlab
from advlab.attacks import get_attack
from advlab.attacks.adaptive import describe_adaptive
from advlab.defenses import distill
from advlab.defenses.wrappers import Defended, Thermometer, wrap_defense
from advlab.evaluation.checks import run_checks
from advlab.metrics import predict_logits
from advlab.models import create_model
from advlab.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parent.parent
SEED = 0


def _acc(model, x, y) -> float:
    return float((predict_logits(model, x).argmax(1) == y).float().mean())


def _attack(model, x, y, name, eps, **params) -> float:
    gen = torch.Generator().manual_seed(SEED)
    outs = [get_attack(name)(model, x[i : i + 250], y[i : i + 250], advlab.ThreatModel("linf", eps), generator=gen,
                             **params).x_adv for i in range(0, len(x), 250)]
    return _acc(model, torch.cat(outs), y)


def _distilled(path: str | None, epochs: int) -> torch.nn.Module:
    if path:
        return advlab.load_model(path)
    train = advlab.load_dataset("mnist", "train")
    student = create_model("lenet")
    distill(create_model("lenet"), student, train, None, TrainConfig(epochs=epochs, seed=SEED), temperature=100.0)
    return student


def _thermometer(path: str | None, epochs: int, levels: int = 16) -> torch.nn.Module:
    if path:
        return advlab.load_model(path)
    train = advlab.load_dataset("mnist", "train")
    model = Defended(create_model("lenet", in_shape=(levels, 28, 28)), Thermometer(levels))
    fit(model, train, None, TrainConfig(epochs=epochs, seed=SEED), progress=False)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3, help="epochs of the distilled/thermometer nets trained here")
    p.add_argument("--distilled", default=None, help="checkpoint of a distilled model (else trained here)")
    p.add_argument("--thermometer", default=None, help="checkpoint of a thermometer model (else trained here)")
    p.add_argument("--robust", default="cnn-mnist-robust", help="the adversarially trained model")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    base = advlab.load_model("lenet-mnist")
    models: list[tuple[str, torch.nn.Module]] = [("lenet-mnist (undefended)", base)]
    models += [(f"lenet-mnist + {s}", wrap_defense(base, s))
               for s in ("bitdepth:3", "bitdepth:1", "jpeg:75", "median:3", "gaussian:1", "resize:22")]
    t0 = time.perf_counter()
    models.append(("distilled LeNet, T=100", _distilled(args.distilled, args.epochs).eval().requires_grad_(False)))
    models.append(("thermometer:16 LeNet", _thermometer(args.thermometer, args.epochs).eval().requires_grad_(False)))
    train_seconds = time.perf_counter() - t0
    if args.robust in advlab.list_pretrained() or Path(args.robust).exists():
        models.append((f"{args.robust} (adversarially trained)", advlab.load_model(args.robust)))
    rows = []
    for name, model in models:
        t = time.perf_counter()
        checks = run_checks(model, x, y, "linf", args.eps, n=200, seed=SEED)
        row = {
            "model": name, "clean": _acc(model, x, y),
            "pgd40": _attack(model, x, y, "pgd", args.eps, steps=40, step_size=0.01),
            "adaptive": _attack(model, x, y, "pgd-adaptive", args.eps),
            "adaptive_label": describe_adaptive(model),
            "fired": [c.code for c in checks if c.fired],
            "checks": [c.as_dict() for c in checks],
        }
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "checks"}), flush=True)
    record = {"environment": environment(), "n": args.n, "eps": args.eps, "train_seconds": round(train_seconds, 1),
              "rows": rows}
    out = ROOT / "benchmarks" / "results" / "masking.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    undef = rows[0]
    lines = ["| model | clean Acc@1 | naive PGD-40 Acc@1 | adaptive Acc@1 (attack) | undefended, adaptive | "
             "gap to undefended | checks fired |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['clean']:.3f} | {r['pgd40']:.3f} | {r['adaptive']:.3f} "
                     f"({r['adaptive_label']}) | {undef['adaptive']:.3f} | {r['adaptive'] - undef['adaptive']:+.3f} | "
                     f"{', '.join(r['fired']) or 'none'} |")
    write_defenses_section("masking", "\n".join([
        "## Masked defenses: naive vs adaptive attack", "",
        f"`python benchmarks/masking.py --n {args.n} --epochs {args.epochs}` · {environment()}", "",
        f"First {args.n} MNIST test images, L∞ ε = {args.eps}. Naive: PGD-40, step 0.01, cross-entropy, random "
        "start, through the defended model's own gradient. Adaptive: `pgd-adaptive` (100 steps, margin loss; BPDA "
        "where the model is non-differentiable, EOT×10 where it is random). Checks: docs/warnings.md, on 200 "
        f"correctly classified images. The distilled and thermometer LeNets were trained here ({args.epochs} epochs).",
        "", *lines,
    ]))


if __name__ == "__main__":
    main()
