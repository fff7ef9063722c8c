"""The poisoning transforms' cost against a training run (part of benchmarks/poisoning.py and docs/poisoning.md).

Each transform runs REPEATS times on the full MNIST training split (the median counts); the training
run is the page's clean model (lenet, 5 epochs, the same process). Both are timed twice: process CPU
time (one thread: the work this process did, nearly blind to other jobs on a shared machine) and wall
time. The concentrated flip now reads its margins from the model's fast view; the check below makes
sure it still flips exactly the examples (and to exactly the labels) the plain model's margins give.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from poisoning_notes import pct, verdict

from advlab.metrics import predict_logits
from advlab.models import load_model
from advlab.poison import concentrated_flip
from advlab.poison.experiment import make_poison

REPEATS = 3


def _items(clean: Any, robust: Any) -> list[tuple[str, str, dict[str, Any], Any]]:
    cl = {"fraction": 0.01, "target": 7}
    return [("BadNets pattern 1 %", "badnets", dict(cl), None),
            ("BadNets pixel 1 %", "badnets", {**cl, "trigger": "pixel"}, None),
            ("clean-label: trigger only (no perturbation)", "clean-label", {**cl, "eps": 0.0}, clean),
            ("clean-label: PGD ε = 0.3 vs the clean lenet", "clean-label", {**cl, "eps": 0.3}, clean),
            ("clean-label: PGD ε = 0.3 vs cnn-mnist-robust", "clean-label", {**cl, "eps": 0.3}, robust),
            ("clean-label: PGD ε = 0.5 vs cnn-mnist-robust", "clean-label", {**cl, "eps": 0.5}, robust),
            ("flip-uniform 0.1", "flip-uniform", {"fraction": 0.1}, None),
            ("flip-pair 0.1", "flip-pair", {"fraction": 0.1, "source": 3, "target": 8}, None),
            ("flip-concentrated 0.1", "flip-concentrated", {"fraction": 0.1}, clean)]


def _time(setup: Any, attack: str, options: dict[str, Any], surrogate: Any) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(REPEATS):
        c0, w0 = time.process_time(), time.perf_counter()
        make_poison(setup, attack, options, surrogate, 0)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def same_as_plain(model: Any, x: torch.Tensor, y: torch.Tensor, fractions: tuple[float, ...]) -> dict[str, bool]:
    """Per fraction: the concentrated flip (fast view) picks the same examples and labels as the plain model's margins."""
    with torch.no_grad():
        logits = predict_logits(model, x, 1000)
    true = logits.gather(1, y[:, None]).squeeze(1)
    best, runner_up = logits.scatter(1, y[:, None], float("-inf")).max(1)
    order = torch.sort((true - best).double(), stable=True).indices
    out = {}
    for f in fractions:
        p = concentrated_flip(x, y, fraction=f, model=model)
        idx = order[: len(p.poisoned_idx)].sort().values
        out[f"{f:g}"] = bool(torch.equal(idx, p.poisoned_idx) and torch.equal(runner_up[idx], p.y[idx]))
    return out


def cost(b: Any, flip_fractions: tuple[float, ...]) -> dict[str, Any]:
    """Each transform's median CPU and wall time, the clean training run's, and the concentrated flip's check."""
    clean = b.clean
    robust = load_model("cnn-mnist-robust")
    rows = []
    for name, attack, options, surrogate in _items(clean.model, robust):
        cpu, wall = _time(b.setup, attack, options, surrogate)
        rows.append({"name": name, "cpu": cpu, "wall": wall})
    return {"train_cpu": b.clean_cpu, "train_wall": clean.seconds, "rows": rows, "repeats": REPEATS,
            "concentrated_same_as_plain": same_as_plain(clean.model, *b.setup.train, flip_fractions)}


def acceptance_row(c: dict[str, Any]) -> list[str]:
    worst = max(c["rows"], key=lambda v: v["cpu"])
    wall = max(c["rows"], key=lambda v: v["wall"])
    return ["Poisoning transform ≤ 5 % of a training run (CPU time; wall time shown too)",
            f"largest: {worst['name']} {pct(worst['cpu'] / c['train_cpu'], 1)} of the run's CPU time "
            f"({worst['cpu']:.2f} s of {c['train_cpu']:.1f} s); by wall time the largest is {wall['name']} "
            f"{pct(wall['wall'] / c['train_wall'], 1)}", verdict(worst["cpu"] <= 0.05 * c["train_cpu"])]


def section(c: dict[str, Any], table: Any) -> list[str]:
    rows = [[v["name"], f"{v['cpu']:.2f}", pct(v["cpu"] / c["train_cpu"], 2), f"{v['wall']:.2f}",
             pct(v["wall"] / c["train_wall"], 2)] for v in c["rows"]]
    same = c["concentrated_same_as_plain"]
    return [
        "## Cost of the poisoning transform", "",
        f"Median of {c['repeats']} runs of each transform on the 60 000 training images, against the clean "
        f"model's 5-epoch training run in the same process: {c['train_cpu']:.1f} s of CPU time, "
        f"{c['train_wall']:.1f} s of wall time (one thread). The verdict reads CPU time: on this shared 2-core "
        "machine the wall time of a one-thread job measures the other jobs as much as its own work.", "",
        table(["transform", "CPU (s)", "share of training (CPU)", "wall (s)", "share of training (wall)"], rows), "",
        "Changed to get here (issue 17's ≤ 5 % line): the concentrated flip's margins are one pass without "
        "gradients over the model's fast view (`advlab.attacks.fastview`: a detached copy with channels-last "
        "weights; logits equal up to float32 rounding) in batches of 512, where it was a pass over the plain model in batches of 1 000 — it flips "
        "the same examples to the same labels as the plain model's margins at every fraction on this page ("
        + ", ".join(f"{k}: {'same' if v else 'DIFFERENT'}" for k, v in same.items()) + "). The clean-label "
        "backdoor's PGD takes 20 steps (step size 2.5·ε/20) where it took 40: **a parameter change**, so the "
        "clean-label rows above were measured again with 20 steps. The data-only transforms (BadNets, uniform "
        "and pair flips) were already cheap; most of their time is the input checks and the copy of the set.", "",
    ]


__all__ = ["acceptance_row", "cost", "same_as_plain", "section"]
