"""The shipped adversarially trained model against PGD, PGD with restarts and the APGD ensemble.

    python benchmarks/robust.py                      # cnn-mnist-robust, full MNIST test split, ε = 0.3
    python benchmarks/robust.py --ensemble-n 1000    # APGD ensemble on the first 1000 (default)

Measures, at L∞ ε = 0.3: clean Acc@1; Acc@1 under PGD-40 (step 0.01, random start) and under
PGD-40 with 10 restarts (each restart on the examples still robust), on all 10 000 test images;
Acc@1 under APGD-CE (100 steps) on all of them; and the APGD ensemble (APGD-CE → APGD-T with 9
target classes → Square 5 000 queries) on the first --ensemble-n images, next to PGD-40 on the
same images. Writes benchmarks/results/robust.json and the "robust" section of docs/defenses.md.
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
from advlab.metrics import clean_accuracy, predict_logits

ROOT = Path(__file__).resolve().parent.parent
SEED = 0


def _robust_acc(model, x, y, attack: str, eps: float, batch: int = 500, **params) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    outs = []
    for i in range(0, len(x), batch):
        res = get_attack(attack)(model, x[i : i + batch], y[i : i + batch], advlab.ThreatModel("linf", eps),
                                 generator=gen, **params)
        outs.append(res.x_adv)
    x_adv = torch.cat(outs)
    if float((x_adv - x).abs().max()) > eps + 1e-6 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
        raise RuntimeError(f"{attack}: x_adv outside the ε-ball or the bounds")
    return float((predict_logits(model, x_adv).argmax(1) == y).float().mean()), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="cnn-mnist-robust")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--ensemble-n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = advlab.load_model(args.model)
    meta = model.advlab_meta
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    rec: dict = {"environment": environment(), "model": args.model, "eps": args.eps, "n": len(y),
                 "train_seconds": meta.get("train_seconds"), "command": meta.get("command")}
    rec["clean_acc1"], rec["clean_acc5"] = clean_accuracy(model, x, y)
    print("clean", rec["clean_acc1"], flush=True)
    pgd = {"steps": 40, "step_size": 0.01}
    rec["pgd40"], rec["pgd40_seconds"] = _robust_acc(model, x, y, "pgd", args.eps, **pgd)
    print("pgd40", rec["pgd40"], flush=True)
    rec["pgd40_restarts10"], rec["pgd40_restarts10_seconds"] = _robust_acc(model, x, y, "pgd", args.eps, restarts=10,
                                                                           **pgd)
    print("pgd40 x10", rec["pgd40_restarts10"], flush=True)
    rec["apgd_ce"], rec["apgd_ce_seconds"] = _robust_acc(model, x, y, "apgd", args.eps, loss="ce")
    print("apgd-ce", rec["apgd_ce"], flush=True)
    m = args.ensemble_n
    xs, ys = x[:m], y[:m]
    rec["subset_n"] = m
    rec["subset_pgd40"], _ = _robust_acc(model, xs, ys, "pgd", args.eps, **pgd)
    rec["subset_ensemble"], rec["subset_ensemble_seconds"] = _robust_acc(
        model, xs, ys, "apgd-ensemble", args.eps, batch=250, max_queries=5000)
    print("ensemble", rec["subset_ensemble"], "vs pgd40", rec["subset_pgd40"], flush=True)
    (ROOT / "benchmarks" / "results" / "robust.json").write_text(json.dumps(rec, indent=2) + "\n")
    write_defenses_section("robust", "\n".join([
        f"## The shipped robust model: `{args.model}`", "",
        f"`python benchmarks/robust.py --model {args.model}` · {environment()}", "",
        f"Trained by `{meta.get('command')}` in {meta.get('train_seconds')} s (wall time on the shared 2-core "
        "machine).", "",
        f"| attack (L∞ ε = {args.eps}) | images | Acc@1 | time (s) |", "|---|---|---|---|",
        f"| none (clean) | {len(y)} | {rec['clean_acc1']:.4f} | — |",
        f"| PGD-40, step 0.01, random start | {len(y)} | {rec['pgd40']:.4f} | {rec['pgd40_seconds']:.0f} |",
        f"| PGD-40 × 10 restarts | {len(y)} | {rec['pgd40_restarts10']:.4f} | {rec['pgd40_restarts10_seconds']:.0f} |",
        f"| APGD-CE, 100 steps | {len(y)} | {rec['apgd_ce']:.4f} | {rec['apgd_ce_seconds']:.0f} |",
        f"| PGD-40 (same subset as the ensemble) | {m} | {rec['subset_pgd40']:.4f} | — |",
        f"| **APGD ensemble** (APGD-CE → APGD-T ×9 → Square 5 000) — headline | {m} | **{rec['subset_ensemble']:.4f}** "
        f"| {rec['subset_ensemble_seconds']:.0f} |",
    ]))


if __name__ == "__main__":
    main()
