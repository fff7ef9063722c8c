"""White-box attacks on the shipped lenet-mnist: the acceptance figures of issue 3.

    python benchmarks/whitebox.py                    # first 1000 MNIST test images, seed 0, 2 threads
    python benchmarks/whitebox.py --batching-only    # only DeepFool/CW time on 1000 vs 250 images

Writes the "White-box attacks" section of docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.attacks import choose_targets, get_attack
from advlab.metrics import acc_at_k, predict_logits

INF = float("inf")
CASES = [
    # label, attack, norm, eps, params, targeted
    ("noise σ=ε", "noise", "linf", 0.3, {}, False),
    ("semantic (negative image)", "semantic", "linf", 0.3, {}, False),
    ("FGSM", "fgsm", "linf", 0.3, {}, False),
    ("BIM 40×0.01", "bim", "linf", 0.3, {"steps": 40, "step_size": 0.01}, False),
    ("PGD 40×0.01, random start", "pgd", "linf", 0.3, {"steps": 40, "step_size": 0.01}, False),
    ("PGD 40×0.01, early stop", "pgd", "linf", 0.3, {"steps": 40, "step_size": 0.01, "early_stop": True}, False),
    ("PGD targeted (random other class)", "pgd", "linf", 0.3, {"steps": 40, "step_size": 0.01}, True),
    ("DeepFool L2 (overshoot 0.02, ≤ 50 it.)", "deepfool", "l2", INF, {"steps": 50, "overshoot": 0.02}, False),
    ("CW-L2 κ=0 (defaults)", "cw", "l2", INF, {}, False),
    ("CW-L2 targeted (random other class)", "cw", "l2", INF, {}, True),
]


def run_case(model, x, y, attack, norm, eps, params, targeted, seed=0):
    gen = torch.Generator().manual_seed(seed)
    threat = advlab.ThreatModel(norm, eps, targeted=targeted)
    target = choose_targets(model, x, y, "random", generator=gen) if targeted else None
    t0 = time.perf_counter()
    res = get_attack(attack)(model, x, y, threat, target=target, generator=gen, **params)
    seconds = time.perf_counter() - t0
    logits = predict_logits(model, res.x_adv)
    d2 = threat.distance(x, res.x_adv) if norm == "l2" else (res.x_adv - x).flatten(1).norm(dim=1)
    ok = (logits.argmax(1) == target) if targeted else (logits.argmax(1) != y)
    return {
        "acc1": acc_at_k(logits, y, 1), "acc5": acc_at_k(logits, y, 5), "success": float(ok.float().mean()),
        "median_l2": float(d2[ok].median()) if ok.any() else float("nan"),
        "median_linf": float((res.x_adv - x).flatten(1).abs().amax(1)[ok].median()) if ok.any() else float("nan"),
        "seconds": seconds,
    }


def batching(model, x, y) -> list[str]:
    """Time on 1000 images ÷ time on 250, for the two attacks with per-example inner loops."""
    lines = []
    for label, attack, params in (("DeepFool", "deepfool", {"steps": 50, "overshoot": 0.02}), ("CW-L2", "cw", {})):
        small = run_case(model, x[:250], y[:250], attack, "l2", INF, params, False)["seconds"]
        big = run_case(model, x, y, attack, "l2", INF, params, False)["seconds"]
        lines.append(f"- {label}: {big:.1f} s / {small:.1f} s = {big / small:.2f}× ({torch.get_num_threads()} threads)")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batching-only", action="store_true", help="only the 1000-vs-250 timing; prints, writes nothing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[:1000], y[:1000]
    model = advlab.load_model("lenet-mnist")
    if args.batching_only:
        batching(model, x, y)
        return
    clean = predict_logits(model, x)
    lines = [
        "## White-box attacks (issue 3)",
        "",
        f"`python benchmarks/whitebox.py` — shipped `lenet-mnist`, first 1000 MNIST test images, seed 0. "
        f"{environment()}.",
        f"Clean: Acc@1 {acc_at_k(clean, y, 1):.3f}, Acc@5 {acc_at_k(clean, y, 5):.3f}. "
        "Success = misclassified (untargeted) or classified as the target (targeted), judged by the "
        "model's prediction on the returned x_adv; medians over successful examples.",
        "",
        "| attack | threat | Acc@1 w/ | Acc@5 w/ | success | median L2 | median L∞ | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for label, attack, norm, eps, params, targeted in CASES:
        r = run_case(model, x, y, attack, norm, eps, params, targeted)
        results[label] = r
        threat = f"{norm} ε={eps:g}" if eps != INF else f"{norm} minimal"
        lines.append(
            f"| {label} | {threat} | {r['acc1']:.3f} | {r['acc5']:.3f} | {r['success']:.3f} | "
            f"{r['median_l2']:.3f} | {r['median_linf']:.3f} | {r['seconds']:.1f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", "Batching check (time on 1000 images ÷ time on 250; linear scaling would be 4):", ""]
    lines += batching(model, x, y)
    write_section("whitebox", "\n".join(lines))


if __name__ == "__main__":
    main()
