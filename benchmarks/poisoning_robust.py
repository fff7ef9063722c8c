"""The robust detector variants on BadNets 1 % runs (part of benchmarks/poisoning.py and docs/poisoning.md).

Each run (seed s, target t): BadNets pattern at 1 % toward t with the poisons drawn by seed s, lenet
trained with seed s; both robust variants (advlab.poison.robust) on the poisoned model's 120-unit
features; a fresh model trained on each cleaned set (one training where both variants flag the same
set: training is deterministic). The rule's history, so the figures can be judged:

- v1 (commit 4fb10d0): flag when Fisher separation ≥ 4; fixed on runs (0,7), (1,3), (2,0); then
  held out (3,5), (4,1), (5,9): it missed (5,9).
- v2 (commit ce7660d, the library's default): flag when the valley ≤ 0.5; fixed on the six runs
  above (so they are all development runs for v2); then held out (6,2), (7,4), (8,6), never run
  before that commit.

Every run is measured with both rules (v1 detection only) and every run counts in the verdict.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch
from poisoning_notes import pct

from advlab.poison import attack_success_rate, detection_rates, penultimate_features, remove_flagged
from advlab.poison.experiment import DEFENSES, Setup, make_poison, train_on
from advlab.poison.robust import DEFAULT_DEPTH

RUNS = ((0, 7, "development (v1, v2)"), (1, 3, "development (v1, v2)"), (2, 0, "development (v1, v2)"),
        (3, 5, "held out for v1; development for v2"), (4, 1, "held out for v1; development for v2"),
        (5, 9, "held out for v1; development for v2"),
        (6, 2, "held out for v2"), (7, 4, "held out for v2"), (8, 6, "held out for v2"))
METHODS = ("spectral-robust", "activation-clustering-robust")
V1 = {"min_separation": 4.0, "max_valley": 1e9}
V1_COMMIT, V2_COMMIT = "4fb10d0", "ce7660d"


def _digest(mask: torch.Tensor) -> str:
    return hashlib.sha256(mask.cpu().numpy().tobytes()).hexdigest()


def _clean_splits(details: dict[int, list[dict[str, float]]], target: int) -> dict[str, float]:
    """The splits of every class but the target: the emptiest valley and the largest separation among them."""
    rounds = [d for c, rs in details.items() if c != target for d in rs]
    return {"clean_min_valley": min(d["valley"] for d in rounds),
            "clean_max_separation": max(d["separation"] for d in rounds),
            "classes_flagged": sorted(c for c, rs in details.items() if any(d["flagged"] for d in rs))}


def robust_run(setup0: Setup, seed: int, target: int) -> dict[str, Any]:
    """One BadNets 1 % run: both robust variants (v2, and v1 for the record), retraining on each cleaned set."""
    setup = dataclasses.replace(setup0, seed=seed)
    p, _ = make_poison(setup, "badnets", {"fraction": 0.01, "target": target}, None, seed)
    poisoned = train_on(setup, p.x, p.y)
    feats = {d: penultimate_features(poisoned.model, p.x, depth=d) for d in (1, DEFAULT_DEPTH)}
    out: dict[str, Any] = {"seed": seed, "target": target, "poisons": len(p.poisoned_idx), "acc1": poisoned.acc1,
                           "asr": attack_success_rate(poisoned.model, *setup.test, p.trigger, p.target),
                           "class_share": float(p.mask.sum() / (p.y == target).sum())}
    retrained: dict[str, dict[str, float]] = {}
    for name in METHODS:
        det = DEFENSES[name](feats[DEFAULT_DEPTH], p.y)
        m: dict[str, Any] = {**detection_rates(det, p.mask, p.y, target), "target_rounds": det.details[target],
                             **_clean_splits(det.details, target)}
        m["v1"] = detection_rates(DEFENSES[name](feats[DEFAULT_DEPTH], p.y, **V1), p.mask, p.y, target)
        m["depth1"] = detection_rates(DEFENSES[name](feats[1], p.y), p.mask, p.y, target)
        key = _digest(det.flagged)
        if key not in retrained:
            result = train_on(setup, *remove_flagged(p.x, p.y, det))
            retrained[key] = {"retrained_acc1": result.acc1, "seconds": result.seconds,
                              "asr_after": attack_success_rate(result.model, *setup.test, p.trigger, p.target)}
        m.update(retrained[key], flagged_set=key[:12])
        out[name] = m
    return out


def acceptance_rows(runs: list[dict[str, Any]], verdict: Any) -> list[list[str]]:
    """Acceptance lines for the two robust variants: every run, development and held-out."""
    rows = []
    for name in METHODS:
        for what, key, ok in (("≥ 90 % of poisons found", "tpr", lambda v: v >= 0.9),
                              ("≤ 5 % of the target class's clean images flagged", "fpr_class", lambda v: v <= 0.05),
                              ("ASR < 5 % after retraining", "asr_after", lambda v: v < 0.05)):
            vals = [r[name][key] for r in runs]
            held = [r[name][key] for r, (_, _, role) in zip(runs, RUNS, strict=False) if role == "held out for v2"]
            worst = min(vals) if key == "tpr" else max(vals)
            rows.append([f"{name} (variant, see below): {what}",
                         f"worst of {len(vals)} runs {pct(worst)}; v2's held-out runs " + ", ".join(pct(v) for v in held),
                         verdict(all(ok(v) for v in vals))])
    return rows


def _rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r, (_, _, role) in zip(runs, RUNS, strict=False):
        for name in METHODS:
            m = r[name]
            first = m["target_rounds"][0]
            rows.append([f"{r['seed']}, {r['target']}", role, f"{r['poisons']} ({pct(r['class_share'], 1)})",
                         pct(r["asr"]), name, pct(m["tpr"]), pct(m["fpr_class"]), pct(m["fpr_all"]),
                         f"{first['valley']:.2f} / {first['separation']:.2f}",
                         f"{m['clean_min_valley']:.2f} / {m['clean_max_separation']:.2f}",
                         pct(m["retrained_acc1"]), pct(m["asr_after"])])
    return rows


def _history_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in runs:
        for name in METHODS:
            m = r[name]
            rows.append([f"{r['seed']}, {r['target']}", name, pct(m["v1"]["tpr"]), pct(m["v1"]["fpr_class"]),
                         pct(m["depth1"]["tpr"]), pct(m["depth1"]["fpr_class"])])
    return rows


def _v1_note(runs: list[dict[str, Any]]) -> str:
    held = [r for r, (_, _, role) in zip(runs, RUNS, strict=False) if role.startswith("held out for v1")]
    found = "; ".join(f"({r['seed']},{r['target']}) " + " / ".join(pct(r[n]["v1"]["tpr"]) for n in METHODS)
                      for r in held)
    seps = ", ".join(f"({r['seed']},{r['target']}) {r[METHODS[0]]['target_rounds'][0]['separation']:.2f}" for r in held)
    return (f"How the rule was fixed: v1 (commit {V1_COMMIT}) used Fisher's separation ≥ 4 instead of the valley, "
            "chosen on runs (0,7), (1,3), (2,0). On its held-out runs it found (spectral-robust / "
            f"activation-clustering-robust) {found} of the poisons; the separation of the target class's first "
            f"split (spectral-robust) was {seps}. Where it missed, the split itself was right but the poisons spread "
            "out along the direction by source class (those from 4s and 7s lie nearer the 9s), which Fisher's "
            f"ratio penalises. v2 (commit {V2_COMMIT}, the library's default) replaced only that test, chosen on "
            "those six runs, and was committed before (6,2), (7,4), (8,6) were ever run. " + _margin_note(runs)
            + " Each variant's row below: detection, then a fresh model trained on the cleaned set.")


def _margin_note(runs: list[dict[str, Any]]) -> str:
    v1_missed = [f"({r['seed']},{r['target']})" for r in runs if min(r[n]["v1"]["tpr"] for n in METHODS) < 0.9]
    poison = max(r[n]["target_rounds"][0]["valley"] for r in runs for n in METHODS)
    clean = min(r[n]["clean_min_valley"] for r in runs for n in METHODS)
    return (f"Over all nine runs v1 would have missed {', '.join(v1_missed) or 'none'}; under v2 the target class's "
            f"first split has a valley of at most {poison:.2f} and no split of another class one below {clean:.2f} "
            "(the cut is 0.5: that is the margin the rule has, on these runs).")


def section(runs: list[dict[str, Any]], table: Any) -> list[str]:
    """The page's section on the robust variants."""
    return [
        "### Robust variants: `spectral-robust` and `activation-clustering-robust`", "",
        "What changed against the papers' rules (`advlab.poison.robust`; `advlab poison --defense spectral-robust`): "
        "(1) robust whitening, the first step of SPECTRE (Hayase, Kong, Somani, Oh 2021): per class, the top 20 "
        "principal components, then the mean and covariance of the class's bulk estimated by minimum-covariance-"
        "determinant concentration steps (Rousseeuw & Van Driessen 1999) that leave out 15 % of the class (an "
        "assumed bound, 1.5 × ε with ε = 0.1, never the true rate), and whitening with them; (2) the split: "
        "spectral-robust projects on the top singular vector of the whitened class (Tran et al.'s score in "
        "whitened space) and splits the projections by exact 1-D 2-means; activation-clustering-robust runs Chen "
        "et al.'s 2-means on the top 10 whitened principal components instead of 10 ICA components; (3) a "
        "data-adaptive cut instead of a fixed share: the smaller group is flagged when it holds ≤ 35 % of the "
        "examples in play (Chen et al.'s relative size) and the *valley* between the groups is ≤ 0.5 — the count "
        "of examples within 0.1 × (distance between the groups' means) of the midpoint, over the smaller of the "
        "counts around each group's median; (4) peeling: the smaller group is set aside, flagged or not, and the "
        "class is split again, 3 rounds (Tran et al. suggest looking past the top singular vector: MNIST's "
        "class 1 holds a tight natural 2 % group that could otherwise mask poisons). Both read lenet's 120-unit "
        "layer (`depth` 2). No poison rate is read anywhere.", "",
        _v1_note(runs), "",
        table(["seed, target", "role", "poisons (share of class)", "poisoned ASR", "variant", "TPR", "FPR (class)",
               "FPR (all)", "poison group: valley / separation", "other classes: emptiest valley / largest "
               "separation", "retrained clean Acc@1", "ASR after"], _rows(runs)), "",
        "The first valley / separation column is the target class's first split (flagged when the valley is "
        "≤ 0.5); the next is the most poison-like split in any other class, which the cut must leave alone. "
        "The same runs under rule v1 (detection only), and under v2 on the 84-unit penultimate layer (depth 1):",
        "",
        table(["seed, target", "variant", "v1 TPR", "v1 FPR (class)", "v2 at depth 1: TPR", "FPR (class)"],
              _history_rows(runs)), "",
        "Limits, stated: the valley is a ratio of counts, and its cut (0.5) was set on MNIST classes of about "
        "6 000 images. On the 8×8 digits set (about 150 images a class) the counts are small: the variants still "
        "flag all 14 relabelled images of tests/test_poison_robust.py, but clean images too (spectral-robust 5 % "
        "of the class inspected, activation-clustering-robust about 20 % of every class). Measured here are "
        "BadNets pattern poisons at 1 % of the set (8–10 % of the target class); other triggers, poison shares "
        "above the 15 % the robust estimate leaves out, and poisons crafted to sit inside the class's spread were "
        "not.", "",
    ]


__all__ = ["METHODS", "RUNS", "acceptance_rows", "robust_run", "section"]
