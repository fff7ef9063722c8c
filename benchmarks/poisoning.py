"""Poisoning and backdoors on MNIST / lenet: regenerates the whole of docs/poisoning.md.

    python benchmarks/poisoning.py --threads 1            # full run, writes docs/poisoning.md
    python benchmarks/poisoning.py --threads 1 --quick    # 1 epoch, fewer points: a smoke run

Every model is lenet trained by advlab.train.fit with one recipe (Adam, lr 2e-3, batch 64, one-cycle
cosine, seed 0, --epochs epochs) on the full 60 000-image MNIST training split, poisoned or not;
accuracies on the 10 000 test images. One clean model serves every measurement that needs one
(baseline accuracy, the concentrated flip's margins, the clean-label PGD surrogate, the frozen
features of the feature-collision victim). Measurements are cached by key in
benchmarks/results/poisoning[-quick].json; --fresh recomputes everything (the timed full run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import poisoning_cost
import poisoning_doc
import poisoning_robust

from advlab.models import load_model
from advlab.poison import (
    activation_clustering,
    attack_success_rate,
    collision_success,
    detection_rates,
    feature_collision,
    fine_tune_head,
    penultimate_features,
    spectral_signatures,
)
from advlab.poison.detect import Detection
from advlab.poison.experiment import Setup, backdoor_metrics, defend, make_poison, train_on

ROOT = Path(__file__).resolve().parent.parent
TARGET = 7  # the backdoor's target class (the example)
SWEEP = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
FLIP_FRACTIONS = (0.01, 0.02, 0.05, 0.1)
FLIP_PAIR = (3, 8)  # source → target of the pair flip
SPECTRAL_EPS = 0.1  # assumed upper bound on the poisons' share of a class, fixed before any run
HELD_OUT = ((1, 3), (2, 0))  # (seed, target) of the detectors' held-out BadNets runs, fixed before they ran
# Feature collision: poison counts on the full training split, and on a small fine-tuning set (the
# first small_n training images: Shafahi et al.'s transfer setting fine-tunes on a small set).
# The head is fine-tuned with the recipe's epochs on the full split, with head_epochs on the small set.
COLLISION = {"full": (1, 10, 50), "small_n": 1000, "small": (1, 5, 20, 50), "trials": 10, "base_class": 3,
             "head_epochs": 30}


class Bench:
    """The recipe, the cache of measurements, and the one clean model."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.setup = Setup(epochs=args.epochs).load()
        self.path = ROOT / "benchmarks" / "results" / f"poisoning{'-quick' if args.quick else ''}.json"
        self.cache: dict[str, Any] = {} if args.fresh or not self.path.exists() else json.loads(self.path.read_text())
        self.cache.setdefault("_setup", self.setup.describe())
        if self.cache["_setup"] != self.setup.describe():
            self.cache = {"_setup": self.setup.describe()}
        self._clean = None
        self.clean_cpu = float("nan")  # CPU seconds of the clean model's training run (this process)
        self.examples: dict[str, Any] = {}

    @property
    def clean(self):
        if self._clean is None:
            start = time.process_time()
            self._clean = train_on(self.setup, *self.setup.train)
            self.clean_cpu = time.process_time() - start
        return self._clean

    def measure(self, key: str, fn) -> Any:
        if key not in self.cache:
            t0 = time.perf_counter()
            value = fn()
            print(f"{key}: {json.dumps(value, default=str)[:300]} ({time.perf_counter() - t0:.0f} s)", flush=True)
            self.cache[key] = value
            self.path.write_text(json.dumps(self.cache, indent=1, default=str))
        return self.cache[key]


def clean_baseline(b: Bench) -> dict[str, Any]:
    return {"acc1": b.clean.acc1, "seconds": b.clean.seconds}


def backdoor(b: Bench, options: dict[str, Any], *, strip: bool = True, attack: str = "badnets",
             surrogate=None) -> dict[str, Any]:
    """Poison, train, measure clean Acc@1, ASR (and STRIP); the transform's time against the training's."""
    p, seconds = make_poison(b.setup, attack, options, surrogate if surrogate is not None else b.clean.model, 0)
    result = train_on(b.setup, p.x, p.y)
    out = {"poisons": len(p.poisoned_idx), "acc1": result.acc1, "train_seconds": result.seconds,
           "poison_seconds": seconds,
           "clean_model_asr": attack_success_rate(b.clean.model, *b.setup.test, p.trigger, p.target)}
    if attack == "clean-label":  # how hard the poisons are: the share the surrogate and the clean model still call 7
        xp = p.x[p.poisoned_idx]
        sur = surrogate if surrogate is not None else b.clean.model
        out["surrogate_acc_on_poisons"] = float((sur(xp).argmax(1) == p.target).float().mean())
        out["clean_acc_on_poisons"] = float((b.clean.model(xp).argmax(1) == p.target).float().mean())
    if strip:
        out.update(backdoor_metrics(result.model, p, b.setup))
    else:
        out["asr"] = attack_success_rate(result.model, *b.setup.test, p.trigger, p.target)
    return out


def badnets_defended(b: Bench) -> dict[str, Any]:
    """BadNets 1 %: both detectors on the poisoned model's features, retraining, and a detection-only sensitivity table."""
    p, _ = make_poison(b.setup, "badnets", {"fraction": 0.01, "target": TARGET}, None, 0)
    poisoned = train_on(b.setup, p.x, p.y)
    b.examples["badnets"] = (p, poisoned.model)
    out: dict[str, Any] = {
        "spectral": defend(b.setup, "spectral", {"removal": round(1.5 * SPECTRAL_EPS, 6)}, poisoned.model, p),
        "activation-clustering": defend(b.setup, "activation-clustering", {}, poisoned.model, p),
        "class_share": float(p.mask.sum() / (p.y == TARGET).sum()),
    }
    sens = []
    for depth in (1, 2):
        feats = penultimate_features(poisoned.model, p.x, depth=depth)
        layer = f"{feats.shape[1]}-d (depth {depth})"
        for eps in (0.05, 0.1, 0.2):
            d = spectral_signatures(feats, p.y, removal=round(1.5 * eps, 6))
            sens.append({"method": "spectral", "setting": f"{layer}, ε = {eps:g} (removal {1.5 * eps:g})",
                         **detection_rates(d, p.mask, p.y, TARGET)})
        d = Detection(robust_z_flags(feats, p.y, 3.0), torch.zeros(len(p.y)), "spectral-z")
        sens.append({"method": "spectral, robust z (tried, dropped)", "setting": f"{layer}, z > 3",
                     **detection_rates(d, p.mask, p.y, TARGET)})
        out[f"diagnostic_depth{depth}"] = spectral_diagnostic(feats, p, TARGET)
    feats = penultimate_features(poisoned.model, p.x)
    for reduce in ("ica", "pca"):
        d = activation_clustering(feats, p.y, reduce=reduce, max_share=0.35)
        sens.append({"method": "activation-clustering", "setting": f"84-d (depth 1), {reduce.upper()} to 10, "
                     "max_share 0.35", **detection_rates(d, p.mask, p.y, TARGET)})
    out["sensitivity"] = sens
    return out


def robust_z_flags(feats: torch.Tensor, y: torch.Tensor, z: float) -> torch.Tensor:
    """A rate-free cut tried after the fixed share missed: per class, the projections on the top singular
    vector more than ``z``·1.4826·MAD beyond the median, on the side the mean leans to."""
    flagged = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y).tolist():
        rows = (y == c).nonzero().flatten()
        r = feats[rows].double() - feats[rows].double().mean(0)
        proj = r @ torch.linalg.svd(r, full_matrices=False).Vh[0]
        med = proj.median()
        side = 1.0 if float(proj.mean()) >= float(med) else -1.0
        flagged[rows] = side * (proj - med) / (1.4826 * (proj - med).abs().median()) > z
    return flagged


def held_out(b: Bench, seed: int, target: int) -> dict[str, Any]:
    """Both detectors, unchanged, on runs their settings were not judged on: another poison draw, target, training seed."""
    setup = Setup(epochs=b.setup.epochs, seed=seed, train=b.setup.train, test=b.setup.test)
    p, _ = make_poison(setup, "badnets", {"fraction": 0.01, "target": target}, None, seed)
    poisoned = train_on(setup, p.x, p.y)
    feats = penultimate_features(poisoned.model, p.x)
    return {"seed": seed, "target": target, "poisons": len(p.poisoned_idx), "acc1": poisoned.acc1,
            "asr": attack_success_rate(poisoned.model, *setup.test, p.trigger, p.target),
            "class_share": float(p.mask.sum() / (p.y == target).sum()),
            "spectral": defend(setup, "spectral", {"removal": round(1.5 * SPECTRAL_EPS, 6)}, poisoned.model, p),
            "activation-clustering": defend(setup, "activation-clustering", {}, poisoned.model, p),
            "diagnostic": spectral_diagnostic(feats, p, target)}


def spectral_diagnostic(feats, p, target: int) -> dict[str, float]:
    """The target class: is the poisons' mean shift the top singular direction? (Tran et al.'s condition.)"""
    rows = p.y == target
    f = feats[rows].double()
    r = f - f.mean(0)
    _, sv, vh = torch.linalg.svd(r, full_matrices=False)
    pm = p.mask[rows]
    diff = f[pm].mean(0) - f[~pm].mean(0)
    share = float(pm.double().mean())
    return {"cos_top": float((vh[0] @ diff).abs() / diff.norm()), "sv1": float(sv[0]), "sv2": float(sv[1]),
            "signal": float(diff.norm() * (len(f) * share * (1 - share)) ** 0.5)}


def label_flips(b: Bench) -> list[dict[str, Any]]:
    rows = []
    for f in b.args.flip_fractions:
        for attack, kw in (("flip-uniform", {}), ("flip-pair", {"source": FLIP_PAIR[0], "target": FLIP_PAIR[1]}),
                           ("flip-concentrated", {})):
            key = f"flip/{attack}/{f:g}"

            def run(attack=attack, kw=kw, f=f):
                p, seconds = make_poison(b.setup, attack, {"fraction": f, **kw}, b.clean.model, 0)
                r = train_on(b.setup, p.x, p.y)
                out = {"attack": attack, "fraction": f, "poisons": len(p.poisoned_idx), "acc1": r.acc1,
                       "poison_seconds": seconds}
                if attack == "flip-pair":
                    xt, yt = b.setup.test
                    src = yt == FLIP_PAIR[0]
                    out["source_acc1"] = float((r.model(xt[src]).argmax(1) == FLIP_PAIR[0]).float().mean())
                return out

            rows.append(b.measure(key, run))
    return rows


def collision_trial(b: Bench, x, y, f: float, i: int) -> tuple[bool, float]:
    """One target: craft the poisons into (x, y), fine-tune the head, check; and how close the features got."""
    p = feature_collision(x, y, fraction=f, model=b.clean.model, target_x=b.setup.test[0][i],
                          base_class=COLLISION["base_class"], generator=torch.Generator().manual_seed(i))
    config = b.setup.config()
    if len(x) < len(b.setup.train[0]):
        config.epochs = COLLISION["head_epochs"]
    victim = fine_tune_head(b.clean.model, p.x, p.y, config)
    goal = penultimate_features(b.clean.model, p.extra["target_x"])
    before = (penultimate_features(b.clean.model, x[p.poisoned_idx]) - goal).norm(dim=1)
    after = (penultimate_features(b.clean.model, p.x[p.poisoned_idx]) - goal).norm(dim=1)
    return collision_success(victim, p), float((after / before).mean())


def collision(b: Bench) -> list[dict[str, Any]]:
    """Feature collision: per fine-tuning set and poison count, ``trials`` targets; success = the head gives the base class."""
    xt, yt = b.setup.test
    right = b.clean.model(xt[:200]).argmax(1) == yt[:200]  # targets the clean model gets right
    targets = ((yt[:200] != COLLISION["base_class"]) & right).nonzero().flatten()[: b.args.collision_trials].tolist()
    out = []
    for n, counts in ((len(b.setup.train[0]), COLLISION["full"]), (COLLISION["small_n"], COLLISION["small"])):
        x, y = b.setup.train[0][:n], b.setup.train[1][:n]
        for k in counts:
            def run(x=x, y=y, k=k, n=n):
                t0 = time.perf_counter()
                trials = [collision_trial(b, x, y, k / n, i) for i in targets]
                return {"n": n, "fraction": k / n, "poisons": k, "trials": len(trials),
                        "success": sum(w for w, _ in trials) / len(trials),
                        "feature_distance_ratio": sum(d for _, d in trials) / len(trials),
                        "seconds": time.perf_counter() - t0}
            out.append(b.measure(f"collision/{n}/{k}", run))
    return out


def clean_label_runs(b: Bench) -> list[dict[str, Any]]:
    """Turner et al.'s label-consistent backdoor, 1 % of N = 9.6 % of class 7: trigger only, PGD vs lenet, PGD vs a robust CNN."""
    robust = load_model("cnn-mnist-robust")
    runs = [("trigger only (no perturbation)", {"eps": 0.0}, None),
            ("PGD ε = 0.3 vs the clean lenet", {"eps": 0.3}, b.clean.model),
            ("PGD ε = 0.3 vs cnn-mnist-robust", {"eps": 0.3}, robust),
            ("PGD ε = 0.5 vs cnn-mnist-robust", {"eps": 0.5}, robust)]
    out = []
    for name, kw, surrogate in runs:
        opts = {"fraction": 0.01, "target": TARGET, **kw}
        res = b.measure(f"clean-label/steps20/{name}", lambda opts=opts, s=surrogate: backdoor(
            b, opts, strip=False, attack="clean-label", surrogate=s if s is not None else b.clean.model))
        out.append({"variant": name, **res})
    return out


def run_all(b: Bench) -> dict[str, Any]:
    a = b.args
    r: dict[str, Any] = {"clean": b.measure("clean", lambda: clean_baseline(b))}
    r["badnets"] = b.measure("badnets/pattern/0.01", lambda: backdoor(b, {"fraction": 0.01, "target": TARGET}))
    r["pixel"] = b.measure("badnets/pixel/0.01", lambda: backdoor(
        b, {"fraction": 0.01, "target": TARGET, "trigger": "pixel"}))
    r["pixel5"] = b.measure("badnets/pixel/0.05", lambda: backdoor(
        b, {"fraction": 0.05, "target": TARGET, "trigger": "pixel"}))
    r["a2a"] = [dict(fraction=f, **b.measure(f"badnets/all-to-all/{f:g}", lambda f=f: backdoor(
        b, {"fraction": f, "mode": "all-to-all"}))) for f in a.a2a_fractions]
    r["sweep"] = [dict(fraction=f, **(r["badnets"] if f == 0.01 else b.measure(
        f"badnets/sweep/{f:g}", lambda f=f: backdoor(b, {"fraction": f, "target": TARGET}, strip=False))))
        for f in a.sweep]
    r["clean_label"] = clean_label_runs(b)
    r["flips"] = label_flips(b)
    r["defenses"] = b.measure("defenses/badnets-0.01/v2", lambda: badnets_defended(b))
    r["held_out"] = [b.measure(f"defenses/held-out/{s}-{t}", lambda s=s, t=t: held_out(b, s, t))
                     for s, t in HELD_OUT]
    r["cost"] = b.measure("cost/v2", lambda: poisoning_cost.cost(b, tuple(a.flip_fractions)))
    r["robust"] = [b.measure(f"defenses/robust/{s}-{t}", lambda s=s, t=t: poisoning_robust.robust_run(b.setup, s, t))
                   for s, t, _ in poisoning_robust.RUNS]
    r["collision"] = collision(b)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 5; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="1 epoch, 3 sweep points, 2 flip fractions; writes "
                                                        "benchmarks/results/poisoning-quick.md")
    p.add_argument("--fresh", action="store_true", help="ignore the cache of measurements")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.epochs = args.epochs or (1 if args.quick else 5)
    args.sweep = (0.001, 0.01, 0.05) if args.quick else SWEEP
    args.flip_fractions = (0.01, 0.1) if args.quick else FLIP_FRACTIONS
    args.a2a_fractions = (0.01,) if args.quick else (0.01, 0.05)
    args.collision_trials = 3 if args.quick else COLLISION["trials"]
    t0 = time.perf_counter()
    b = Bench(args)
    fresh = len(b.cache) == 1  # nothing measured yet: this run's wall time is the whole page's cost
    known = set(b.cache)
    results = run_all(b)
    minutes = (time.perf_counter() - t0) / 60
    if fresh:
        b.cache["_wall_minutes"] = minutes
    elif set(b.cache) - known:  # sections added since the last fresh run: their measured time adds up
        b.cache["_added_minutes"] = b.cache.get("_added_minutes", 0.0) + minutes
    b.path.write_text(json.dumps(b.cache, indent=1, default=str))
    results["wall_minutes"] = b.cache.get("_wall_minutes", float("nan")) + b.cache.get("_added_minutes", 0.0)
    results["wall_parts"] = (b.cache.get("_wall_minutes", float("nan")), b.cache.get("_added_minutes", 0.0))
    doc = ROOT / ("benchmarks/results/poisoning-quick.md" if args.quick else "docs/poisoning.md")
    poisoning_doc.write(doc, results, args, b)
    print(f"wrote {doc} ({(time.perf_counter() - t0) / 60:.1f} min; from scratch: {results['wall_minutes']:.1f} min)")


if __name__ == "__main__":
    main()
