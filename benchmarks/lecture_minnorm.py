"""Minimal-norm attacks beyond DeepFool and CW on the shipped lenet-mnist: FMN, EAD, L-BFGS (issue 15).

    python benchmarks/lecture_minnorm.py                 # first 1000 MNIST test images, 1 thread, 3 repeats
    python benchmarks/lecture_minnorm.py --quick         # 100 images, 1 repeat: for development; writes nothing

FMN-L2, DeepFool-L2 (steps 50, overshoot 0.02) and CW-L2 (``advlab evaluate``'s settings: steps 100,
5 binary-search steps, lr 0.1) are timed ``--repeats`` times, interleaved (repeat r runs all three
before repeat r+1), and the median time is reported; EAD, L-BFGS and FMN in its other norms run once.
Every x_adv is scored here from the model's prediction on it (success = prediction ≠ label; medians
over successful examples). Acceptance (issue 15): FMN-L2's median L2 ≤ DeepFool's and ≤ 1.05 × CW's in
≤ 0.5 × CW's time; EAD's median L1 below CW-L2's median L1.

Writes the "lecture-minnorm" section of docs/benchmarks.md and benchmarks/results/lecture_minnorm.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.attacks import get_attack
from advlab.metrics import predict_logits
from advlab.threat import distance

INF = float("inf")
RESULTS = Path(__file__).resolve().parent / "results" / "lecture_minnorm.json"
CW = {"steps": 100, "binary_search_steps": 5, "lr": 0.1}
EAD = {"steps": 100}  # 9 binary-search steps, lr 0.01, β 1e-3, c0 1e-3, EN rule: the defaults
# key, label, attack, norm, params; the first three are timed with repeats
ROWS = [
    ("fmn-l2", "FMN-L2 (100 steps)", "fmn", "l2", {}),
    ("deepfool", "DeepFool-L2 (≤ 50 steps, overshoot 0.02)", "deepfool", "l2", {"steps": 50, "overshoot": 0.02}),
    ("cw", "CW-L2 (100 steps × 5 binary-search steps, lr 0.1)", "cw", "l2", CW),
    ("ead", "EAD (EN rule, β 1e-3, 100 steps × 9 binary-search steps)", "ead", "l1", EAD),
    ("ead-l1", "EAD (L1 rule, otherwise as above)", "ead", "l1", {**EAD, "decision_rule": "L1"}),
    ("ead-warm", "EAD (EN rule, each round continuing from the last: `warm_start=True`)", "ead", "l1",
     {**EAD, "warm_start": True}),
    ("lbfgs", "L-BFGS (≤ 50 iterations × 10 searches over c)", "lbfgs", "l2", {}),
    ("fmn-linf", "FMN-L∞ (100 steps)", "fmn", "linf", {}),
    ("fmn-l1", "FMN-L1 (100 steps)", "fmn", "l1", {}),
    ("fmn-l0", "FMN-L0 (100 steps)", "fmn", "l0", {}),
]
TIMED = 3


def run_row(model, x, y, attack: str, norm: str, params: dict) -> tuple[dict, float]:
    threat = advlab.ThreatModel(norm, INF)
    t0 = time.perf_counter()
    res = get_attack(attack)(model, x, y, threat, generator=torch.Generator().manual_seed(0), **params)
    seconds = time.perf_counter() - t0
    logits = predict_logits(model, res.x_adv)
    ok = logits.argmax(1) != y

    def med(v: torch.Tensor) -> float:
        return float(v[ok].median()) if ok.any() else float("nan")

    scores = {f"median_{p}": med(distance(x, res.x_adv, p)) for p in ("l0", "l1", "l2", "linf")}
    # Where the attack's flag and this scoring disagree: the example and its gap between the top two logits.
    top2 = logits.topk(2, dim=1).values
    disagree = [(int(i), float(top2[i, 0] - top2[i, 1])) for i in (ok != res.success).nonzero().flatten()]
    return {"success": float(ok.float().mean()), "agrees_with_flags": not disagree, "disagreements": disagree,
            **scores}, seconds


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    model = advlab.load_model(args.model)
    rows: dict[str, dict] = {}
    times: dict[str, list[float]] = {key: [] for key, *_ in ROWS}
    t_start = time.perf_counter()
    for r in range(args.repeats):
        for key, label, attack, norm, params in ROWS[: TIMED if r else len(ROWS)]:
            scores, seconds = run_row(model, x, y, attack, norm, params)
            times[key].append(seconds)
            rows.setdefault(key, {"key": key, "label": label, "attack": attack, "norm": norm, "params": params,
                                  **scores})
            print(f"repeat {r + 1} {key:9s} {seconds:7.1f} s  success {scores['success']:.3f}  median L2 "
                  f"{scores['median_l2']:.3f}  L1 {scores['median_l1']:.2f}", flush=True)
    for key, row in rows.items():
        row["times"] = times[key]
        row["seconds"] = statistics.median(times[key])
    return {"model": args.model, "n": len(x), "threads": args.threads, "repeats": args.repeats,
            "environment": environment(), "total_seconds": time.perf_counter() - t_start,
            "rows": list(rows.values())}


def acceptance(res: dict) -> list[tuple[str, bool]]:
    by = {r["key"]: r for r in res["rows"]}
    fmn, df, cw, ead = by["fmn-l2"], by["deepfool"], by["cw"], by["ead"]
    time_ratio = fmn["seconds"] / cw["seconds"]
    return [
        (f"FMN-L2 median L2 ≤ DeepFool's: {fmn['median_l2']:.4f} vs {df['median_l2']:.4f}",
         fmn["median_l2"] <= df["median_l2"]),
        (f"FMN-L2 median L2 within 5% of CW-L2's: {fmn['median_l2']:.4f} vs {cw['median_l2']:.4f} "
         f"({100 * (fmn['median_l2'] / cw['median_l2'] - 1):+.1f}%)", fmn["median_l2"] <= 1.05 * cw["median_l2"]),
        (f"FMN-L2 time ≤ 0.5× CW-L2's: {fmn['seconds']:.1f} s vs {cw['seconds']:.1f} s ({time_ratio:.2f}×)",
         time_ratio <= 0.5),
        (f"EAD median L1 below CW-L2's median L1: {ead['median_l1']:.2f} vs {cw['median_l1']:.2f}",
         ead["median_l1"] < cw["median_l1"]),
    ]


def report(res: dict, checks: list[tuple[str, bool]]) -> str:
    n = res["n"]
    lines = [
        "## lecture-minnorm: FMN, EAD and L-BFGS against DeepFool and CW",
        "",
        f"`python benchmarks/lecture_minnorm.py --n {n} --repeats {res['repeats']} --threads {res['threads']}` — "
        f"`{res['model']}`, first {n} MNIST test images, seed 0. {res['environment']}. Whole run "
        f"{res['total_seconds'] / 60:.1f} min on a machine shared with other jobs (times are noisy).",
        "",
        f"FMN-L2, DeepFool and CW-L2 were timed {res['repeats']} times, interleaved; their time is the median. "
        "The other rows ran once. Every x_adv is scored from the model's prediction on it: success = "
        "prediction ≠ label; medians over successful examples (images the model already misclassifies count "
        "with norm 0 for every attack). All attacks untargeted, run unbounded (ε = ∞).",
        "",
        "| attack | norm | success | median L2 | median L1 | median L∞ | median L0 | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['label']} | {r['norm']} | {r['success']:.3f} | {r['median_l2']:.4f} | "
                     f"{r['median_l1']:.2f} | {r['median_linf']:.4f} | {r['median_l0']:.0f} | {r['seconds']:.1f} |")
    lines += ["", "Acceptance (issue 15):", ""]
    lines += [f"- **{'PASS' if ok else 'MISS'}** {text}" for text, ok in checks]
    bad = [f"{r['key']} on example{'s' if len(r['disagreements']) > 1 else ''} "
           + ", ".join(f"{i} (top-two logit gap {g:.2g})" for i, g in r["disagreements"])
           for r in res["rows"] if r["disagreements"]]
    lines += ["", "Every attack's own success flags agree with the scoring above"
              + (f", except {'; '.join(bad)}: x_adv on the decision boundary to within float rounding, which the "
                 "attack saw through advlab's fast view of the model (`advlab.attacks.fast_view`) as just past it "
                 "and this scoring, through the model itself, as not (κ = 0 accepts any margin)." if bad else ".")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images (the first n of the MNIST test set)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats of FMN-L2, DeepFool and CW")
    ap.add_argument("--model", default="lenet-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="100 images, 1 repeat, nothing written")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = min(args.n, 100), 1
    res = run(args)
    checks = acceptance(res)
    res["acceptance"] = [{"check": text, "pass": ok} for text, ok in checks]
    text = report(res, checks)
    print("\n" + text)
    if args.quick:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    write_section("lecture-minnorm", text)


if __name__ == "__main__":
    main()
