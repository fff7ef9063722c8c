"""Detection ROC-AUC of KD, BU, KD+BU, LID (and any other registered detector) on lenet-mnist (issue 16).

    python benchmarks/detectors.py --threads 1 --n 1000

Fitting uses the MNIST TRAINING split only: the first ``--clean`` training images are the clean set
(KD's reference features, the dropout variant's training set, LID's reference batch and clean
negatives); adversarial and noisy images for fitting are made from the next ``--n-fit`` training
images. One detector is fitted per attack, as both papers do. Evaluation: the first ``--n`` TEST
images. Positives are the successful adversarial examples of correctly classified images; negatives
their clean originals plus one noisy copy each (Gaussian noise scaled to the adversarial
perturbation's L2 norm, clipped to [0, 1]), as in both papers' code (normal + noisy vs adversarial);
the AUC against the clean originals alone is reported too. Crafted sets are cached under
benchmarks/results/detectors/ (safetensors, gitignored). Writes benchmarks/results/detectors.json
and the ``detectors-auc`` section of docs/defenses.md (rendered by benchmarks/detectors_doc.py).

The papers' code differs from this protocol in three settings, each an option here (a run with any
of them writes benchmarks/results/detectors-<settings>.json, a column of the doc's settings table):
``--eps 0.4`` (Ma et al.'s released code: FGSM/BIM at ε = 0.40, BIM steps of 0.01; Feinman et al.'s
0.3 is the default), ``--noise feinman|ma`` (the noisy negatives as their code makes them: i.i.d.
Gaussian noise of a preset per-attack σ per pixel, clipped, instead of per-image L2 matching), and
``--positives all`` (their code keeps every correctly classified image's adversarial version as a
positive, successful or not; the default keeps the successful ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import DEFENSES_DOC, DEFENSES_HEADER, environment, write_section
from detectors_doc import render, variant_name

import advlab
from advlab.attacks import get_attack
from advlab.data import load_dataset
from advlab.detect import DETECTORS, make_detector
from advlab.detect.lid import mle_lid
from advlab.detect.logistic import LogisticRegression
from advlab.metrics import predict_logits, roc_auc
from advlab.models import load_model
from advlab.models.features import layer_outputs

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "results" / "detectors"
SEED = 0
INF = float("inf")
# name: (registered attack, norm, ε, parameters) — Feinman et al.'s MNIST settings (their code's
# ATTACK_PARAMS: ε = 0.3, BIM step 0.01 × 50 iterations; BIM-A stops each image at its first
# misclassified iterate, BIM-B keeps the last), Madry et al.'s PGD (40 steps of 0.01, random start),
# DeepFool with its defaults, and C&W L2 with its step count capped (the papers ran 1 000 × 9).
ATTACKS: dict[str, tuple[str, str, float, dict[str, Any]]] = {
    "fgsm": ("fgsm", "linf", 0.3, {}),
    "bim-a": ("bim", "linf", 0.3, {"steps": 50, "step_size": 0.01, "early_stop": True}),
    "bim-b": ("bim", "linf", 0.3, {"steps": 50, "step_size": 0.01}),
    "pgd": ("pgd", "linf", 0.3, {"steps": 40, "step_size": 0.01}),
    "deepfool": ("deepfool", "l2", INF, {"steps": 50, "overshoot": 0.02}),
    "cw": ("cw", "l2", INF, {"steps": 100, "binary_search_steps": 5, "lr": 0.1}),
}
# The noisy negatives' per-pixel σ in the papers' code (MNIST; Feinman et al.'s detect/util.py for ε = 0.3 in
# [0, 1], Ma et al.'s util.py for ε = 0.4 in [−0.5, 0.5], the same units). Attacks without a preset keep L2 matching.
NOISE = {"feinman": {"fgsm": 0.310, "bim-a": 0.128, "bim-b": 0.265},
         "ma": {"fgsm": 0.271, "bim-a": 0.111, "bim-b": 0.167, "cw": 0.207}}
# Detector rows: label -> make_detector spec. Other registered detectors are added by name.
SPECS = {"KD": "kdbu:use=kd", "BU": "kdbu:use=bu", "KD+BU": "kdbu", "LID": "lid", "LID (no softmax)": "lid:softmax=false"}
# The papers' MNIST ROC-AUC (%), as recalled from the papers' tables (not re-read here; see the doc section).
# Feinman et al. 2017 (combined KD+BU, Table 3); Ma et al. 2018 Table 1 (KD, BU, LID; "Opt" = C&W L2).
PAPER = {
    ("KD+BU", "fgsm"): 90.57, ("KD+BU", "bim-a"): 97.23, ("KD+BU", "bim-b"): 82.06, ("KD+BU", "cw"): 98.94,
    ("KD", "fgsm"): 78.12, ("KD", "bim-a"): 98.14, ("KD", "bim-b"): 98.61, ("KD", "cw"): 95.15,
    ("BU", "fgsm"): 32.37, ("BU", "bim-a"): 91.55, ("BU", "bim-b"): 25.46, ("BU", "cw"): 71.30,
    ("LID", "fgsm"): 96.89, ("LID", "bim-a"): 99.60, ("LID", "bim-b"): 99.83, ("LID", "cw"): 99.24,
}


def settings(name: str, eps: float = 0.3) -> tuple[str, str, float, dict[str, Any]]:
    """Attack ``name``'s (registered attack, norm, ε, parameters), with ``eps`` for the L∞ ones (steps unchanged)."""
    attack, norm, default, params = ATTACKS[name]
    return attack, norm, eps if norm == "linf" else default, params


def craft(model: torch.nn.Module, name: str, split: str, x: torch.Tensor, y: torch.Tensor,
          tag: str = "", eps: float = 0.3) -> dict[str, torch.Tensor]:
    """Adversarial examples of ``x`` by attack ``name`` (cached under ``tag``): x_adv, success, correct per image."""
    attack, norm, eps, params = settings(name, eps)
    path = CACHE / f"{tag}{split}-{name}{'' if eps in (0.3, INF) else f'-eps{eps:g}'}-{len(x)}.safetensors"
    if path.exists():
        return load_file(str(path))
    gen = torch.Generator().manual_seed(SEED)
    start, parts, success = time.perf_counter(), [], []
    for i in range(0, len(x), 250):
        res = get_attack(attack)(model, x[i : i + 250], y[i : i + 250], advlab.ThreatModel(norm, eps),
                                 generator=gen, **params)
        parts.append(res.x_adv)
        success.append(res.success)
    x_adv = torch.cat(parts)
    out = {"x_adv": x_adv.contiguous(), "success": torch.cat(success),
           "correct": predict_logits(model, x).argmax(1) == y,
           "fooled": predict_logits(model, x_adv).argmax(1) != y,
           "seconds": torch.tensor(time.perf_counter() - start)}
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    print(f"  crafted {split} {name}: {out['seconds']:.0f} s", flush=True)
    return out


def noisy_like(x: torch.Tensor, x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise with each image's L2 norm equal to its adversarial perturbation's, clipped."""
    noise = torch.randn(x.shape, generator=gen)
    scale = (x_adv - x).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    return (x + noise * scale.view(-1, *([1] * (x.ndim - 1)))).clamp(0, 1)


def noisy_preset(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """``x`` plus i.i.d. Gaussian noise of standard deviation ``sigma`` per pixel, clipped (the papers' code)."""
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def sets(model: torch.nn.Module, name: str, split: str, x: torch.Tensor, y: torch.Tensor, tag: str = "",
         eps: float = 0.3, noise: str = "l2", positives: str = "successful") -> dict[str, Any]:
    """Positives (adversarial examples of correctly classified images: the successful ones, or with ``positives="all"``
    every one), their clean and noisy versions (``noise``: ``"l2"`` per-image L2 matching, or a key of NOISE)."""
    c = craft(model, name, split, x, y, tag, eps)
    ok = c["correct"] & c["success"] & c["fooled"] if positives == "successful" else c["correct"].clone()
    x_adv = c["x_adv"][ok]
    l2 = (x_adv - x[ok]).flatten(1).norm(dim=1)
    gen = torch.Generator().manual_seed(SEED + (split == "test"))
    sigma = NOISE.get(noise, {}).get(name)
    noisy = noisy_like(x[ok], x_adv, gen) if sigma is None else noisy_preset(x[ok], sigma, gen)
    noisy_l2 = (noisy - x[ok]).flatten(1).norm(dim=1)
    return {"adv": x_adv, "clean": x[ok], "noisy": noisy, "n_correct": int(c["correct"].sum()), "noise_sigma": sigma,
            "n_pos": int(ok.sum()), "median_l2": float(l2.median()) if len(l2) else float("nan"),
            "median_noisy_l2": float(noisy_l2.median()) if len(l2) else float("nan"),
            "fooled_rate": float((c["fooled"] & c["correct"]).sum() / c["correct"].sum().clamp_min(1)),
            "craft_s": float(c["seconds"]),
            "adv_conf": float(predict_logits(model, x_adv).softmax(1).amax(1).median()) if len(x_adv) else float("nan")}


def evaluate(model: torch.nn.Module, spec: str, x_clean: torch.Tensor, fit_set: dict[str, Any],
             test_set: dict[str, Any]) -> dict[str, float]:
    """Fit one detector on the training sets and score the test sets: AUCs (%) and times."""
    start = time.perf_counter()
    det = make_detector(spec).fit(model, x_clean, fit_set["adv"], fit_set["noisy"],
                                  generator=torch.Generator().manual_seed(SEED))
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pos, clean, noisy = (det.score(test_set[k]) for k in ("adv", "clean", "noisy"))
    score_s = time.perf_counter() - start
    return {"auc": 100 * roc_auc(pos, torch.cat([clean, noisy])), "auc_clean": 100 * roc_auc(pos, clean),
            "fit_s": fit_s, "score_per_s": 3 * len(pos) / score_s,
            "dropout_train_s": float(getattr(det, "train_seconds", 0.0))}


def _lid_layers(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    logits, outs = layer_outputs(model, x)
    return [o.flatten(1) for _, o in outs] + [logits.softmax(1)]


def _minibatch_lids(model: torch.nn.Module, layers: list[int], groups: list[torch.Tensor], k: int = 20,
                    batch: int = 100) -> list[torch.Tensor]:
    """Ma et al.'s code's LID features: per minibatch of ``batch`` normal images and the noisy and adversarial
    versions of the same images, each point's LID among the normal minibatch's activations, nearest one skipped."""
    out: list[list[torch.Tensor]] = [[] for _ in groups]
    with torch.no_grad():
        for i in range(0, len(groups[0]), batch):
            acts = [[o.double() for o in _lid_layers(model, g[i : i + batch])] for g in groups]
            ref = acts[0]
            for g, a in enumerate(acts):
                cols = []
                for j in layers:
                    d = torch.cdist(a[j], ref[j]).sort(1).values[:, 1 : k + 1].clamp_min(1e-12)
                    cols.append(-k / torch.log(d / d[:, -1:]).sum(1).clamp_max(-1e-12))
                out[g].append(torch.stack(cols, 1))
    return [torch.cat(o) for o in out]


def lid_protocol(model: torch.nn.Module, layers: list[int], test_set: dict[str, Any], k: int = 20) -> float:
    """ROC-AUC (%) of LID fitted and scored as Ma et al.'s code does, on the test images themselves.

    Features from paired minibatches (:func:`_minibatch_lids`), logistic regression on the first 80%
    of each group (normal, noisy, adversarial; blocks of 100), AUC on the remaining 20%.
    """
    clean, noisy, adv = _minibatch_lids(model, layers, [test_set["clean"], test_set["noisy"], test_set["adv"]], k)
    cut = int(len(clean) * 0.008) * 100
    train = torch.cat([clean[:cut], noisy[:cut], adv[:cut]])
    labels = torch.cat([torch.zeros(2 * cut), torch.ones(cut)])
    reg = LogisticRegression(train.shape[1]).fit_cv(train, labels)  # their code: LogisticRegressionCV
    with torch.no_grad():
        return 100 * roc_auc(reg(adv[cut:]), torch.cat([reg(clean[cut:]), reg(noisy[cut:])]))


def layer_aucs(model: torch.nn.Module, x_ref: torch.Tensor, test_set: dict[str, Any]) -> dict[str, float]:
    """ROC-AUC (%, adversarial vs clean) of each single layer's LID (k = 20, reference batch ``x_ref``), either sign."""
    names = [n for n, _ in layer_outputs(model, x_ref[:1])[1]] + ["softmax"]
    with torch.no_grad():
        refs = _lid_layers(model, x_ref)
        adv, clean = (_lid_layers(model, test_set[k]) for k in ("adv", "clean"))
        aucs = [roc_auc(mle_lid(a, r, 20), mle_lid(c, r, 20)) for a, c, r in zip(adv, clean, refs, strict=True)]
    return {n: 100 * max(v, 1 - v) for n, v in zip(names, aucs, strict=True)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every (attack, detector) pair: fit on train, AUC on test."""
    model = load_model("lenet-mnist")
    xtr, ytr = load_dataset("mnist", "train")
    xte, yte = load_dataset("mnist", "test")
    x_clean = xtr[: args.clean]
    x_fit, y_fit = xtr[args.clean : args.clean + args.n_fit], ytr[args.clean : args.clean + args.n_fit]
    specs = dict(SPECS)
    specs.update({name: name for name in sorted(DETECTORS) if name not in ("kdbu", "lid") and not name.startswith("test")})
    if args.detectors:
        specs = {label: specs.get(label, label) for label in args.detectors.split(",")}  # a label or a detector spec
    rows: list[dict[str, Any]] = []
    per_layer: dict[str, dict[str, float]] = {}
    options = {"eps": args.eps, "noise": args.noise, "positives": args.positives}
    for attack in args.attacks.split(","):
        fit_set = sets(model, attack, "train", x_fit, y_fit, **options)
        test_set = sets(model, attack, "test", xte[: args.n], yte[: args.n], **options)
        if args.lid_protocol:
            gen = torch.Generator().manual_seed(SEED)
            per_layer[attack] = layer_aucs(model, x_clean[torch.randperm(len(x_clean), generator=gen)[:100]], test_set)
        for label, spec in specs.items():
            r = evaluate(model, spec, x_clean, fit_set, test_set)
            r.update(attack=attack, detector=label, spec=spec, n_pos_fit=fit_set["n_pos"], n_pos_test=test_set["n_pos"],
                     n_correct_test=test_set["n_correct"], median_l2=test_set["median_l2"],
                     craft_test_s=test_set["craft_s"], adv_conf=test_set["adv_conf"], paper=PAPER.get((label, attack)),
                     median_noisy_l2=test_set["median_noisy_l2"], noise_sigma=test_set["noise_sigma"],
                     fooled_rate=test_set["fooled_rate"])
            if spec.startswith("lid") and args.lid_protocol:
                det = make_detector(spec).fit(model, x_clean[:200], fit_set["adv"][:10])
                r["lid_protocol"] = lid_protocol(model, det.layers.tolist(), test_set, det.k)
            rows.append(r)
            print(f"{attack:9s} {label:6s} AUC {r['auc']:.2f} (vs clean {r['auc_clean']:.2f}) fit {r['fit_s']:.0f} s "
                  f"score {r['score_per_s']:.0f}/s", flush=True)
    return {"environment": environment(), "args": vars(args), "rows": rows, "per_layer": per_layer}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=1000, help="test images")
    p.add_argument("--n-fit", type=int, default=1000, help="training images attacked for fitting")
    p.add_argument("--clean", type=int, default=10000, help="clean training images (KD reference, dropout variant)")
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--doc-only", action="store_true", help="rewrite the doc section from the saved JSON")
    p.add_argument("--lid-protocol", action="store_true", help="also LID as Ma et al.'s code fits and scores it")
    p.add_argument("--eps", type=float, default=0.3, help="ε of the L∞ attacks (Ma et al.'s code: 0.4)")
    p.add_argument("--noise", choices=["l2", *NOISE], default="l2", help="noisy negatives: per-image L2, or a code's σ")
    p.add_argument("--positives", choices=["successful", "all"], default="successful")
    p.add_argument("--detectors", default="", help="comma-separated row labels or detector specs (default: all)")
    p.add_argument("--tag", default="", help="names a run whose settings repeat another's (its own results file)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = ROOT / "benchmarks" / "results" / f"detectors{variant_name(vars(args))}.json"
    if args.doc_only:
        record = json.loads(out.read_text())
    else:
        start = time.perf_counter()
        record = run(args)
        record["seconds"] = time.perf_counter() - start
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    if not args.no_doc:
        main_record = json.loads((ROOT / "benchmarks" / "results" / "detectors.json").read_text())
        write_section("detectors-auc", render(main_record), DEFENSES_DOC, DEFENSES_HEADER)


if __name__ == "__main__":
    main()
