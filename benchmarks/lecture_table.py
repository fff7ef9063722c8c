"""The lecture's LeNet/MNIST table and its GoogLeNet claim, reproduced with `advlab.evaluate` (issue 15).

    python benchmarks/lecture_table.py                 # first 1000 MNIST test images (GoogLeNet: 500)
    python benchmarks/lecture_table.py --n 200 --googlenet-n 100 --threads 1

The lecture's table (LeNet on MNIST; Acc@1 / Acc@5 with the attack, then without) states no ε.
This script evaluates two LeNets — the shipped `lenet-mnist` (10 epochs) and a one-epoch LeNet
trained here by `advlab train --model lenet --dataset mnist --epochs 1 --seed 0` (its clean Acc@1
on the full test split is the lecture's 0.9858) — with the lecture's five attacks: Gaussian noise
and FGSM / PGD over a fine L∞ sweep, the negative image (semantic), and DeepFool unbounded (the
lecture's DeepFool row is a minimal attack: Acc@1 0.012 is 1 − its success rate). For FGSM and PGD
it finds the ε at which Acc@1 equals the lecture's figure (linear interpolation between the two
sweep points around it) and reports Acc@5 there. The GoogLeNet claim (clean ~98% → PGD ~18%,
DeepFool ~1%) is measured on `googlenet-mnist` the same way.

It also draws the lecture's "DeepFool leads to a smaller perturbation than FGSM" figure:
docs/figures/fgsm-vs-deepfool.png (four test digits: the image, FGSM at the smallest sweep ε that
fools it, DeepFool-L∞), and measures the median L∞ of both over the images both fool.

Writes benchmarks/results/lecture_table.json and the "lecture-table" section of docs/lecture.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.attacks import get_attack
from advlab.data import load_dataset
from advlab.metrics import topk_correct
from advlab.models import load_model, read_metadata

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ONE_EPOCH = RESULTS / "lecture" / "lenet-1epoch.safetensors"
TRAIN_ONE_EPOCH = ["train", "--model", "lenet", "--dataset", "mnist", "--epochs", "1", "--seed", "0",
                   "--threads", "1", "--no-progress", "--out", "benchmarks/results/lecture/lenet-1epoch.safetensors"]
FIGURE = ROOT / "docs" / "figures" / "fgsm-vs-deepfool.png"
LECTURE_DOC = ROOT / "docs" / "lecture.md"
LECTURE_HEADER = "# The lecture, reproduced\n\nEach section is written by the script named in it.\n"
SWEEP = tuple(round(0.025 * k, 3) for k in range(1, 13))  # 0.025 … 0.3
# The lecture's rows: (Acc@1 w/, Acc@5 w/, Acc@1 w/o, Acc@5 w/o)
LECTURE = {"noise": (0.984, 1.0, 0.9858, 1.0), "semantic": (0.233, 0.645, 0.986, 1.0),
           "fgsm": (0.509, 0.993, 0.986, 1.0), "pgd": (0.187, 0.982, 0.986, 1.0),
           "deepfool": (0.012, 1.0, 0.9858, 1.0)}
GOOGLENET_CLAIM = {"clean": 0.98, "pgd": 0.18, "deepfool": 0.01}


def one_epoch_lenet() -> Path:
    """The one-epoch LeNet, trained by advlab's own command when it is not there yet (about 20 s)."""
    if not ONE_EPOCH.exists():
        ONE_EPOCH.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "advlab", *TRAIN_ONE_EPOCH], check=True, cwd=ROOT)
    return ONE_EPOCH


def sweep_rows(model: Any, n: int, attacks: list[str], eps: tuple[float, ...]) -> dict[str, dict[float, Any]]:
    """Acc@1, Acc@5 (with, without) per attack and ε from one `advlab.evaluate` (checks off: honest models).

    PGD runs all its 40 steps (no early stop), as the peers' PGD does: Acc@5 under attack depends on it.
    """
    ev = advlab.evaluate(model, "mnist", attacks, list(eps), n=n, progress=False, checks=False, ensemble=False,
                         params={"pgd": {"early_stop": False}})
    out: dict[str, dict[float, Any]] = {}
    for r in ev.rows:
        if r.attack in attacks:
            out.setdefault(r.attack, {})[r.eps] = {"acc1": r.acc1_adv, "acc5": r.acc5_adv, "acc1_clean": r.acc1_clean,
                                                   "acc5_clean": r.acc5_clean, "seconds": r.seconds}
    return out


def matching_eps(curve: dict[float, Any], target: float) -> dict[str, Any] | None:
    """The ε where Acc@1 crosses ``target`` (linear between sweep points), and Acc@5 there."""
    pts = sorted((e, v) for e, v in curve.items() if e is not None)
    for (e0, v0), (e1, v1) in itertools.pairwise(pts):
        if v0["acc1"] >= target >= v1["acc1"]:
            t = 0.0 if v0["acc1"] == v1["acc1"] else (v0["acc1"] - target) / (v0["acc1"] - v1["acc1"])
            return {"eps": e0 + t * (e1 - e0), "between": [e0, e1], "acc1": [v0["acc1"], v1["acc1"]],
                    "acc5": v0["acc5"] + t * (v1["acc5"] - v0["acc5"])}
    return None


def deepfool_unbounded(model: Any, x: torch.Tensor, y: torch.Tensor, norm: str = "l2") -> dict[str, Any]:
    """DeepFool with no budget (its only limit: 50 iterations, overshoot 0.02), as the lecture's row."""
    t0 = time.perf_counter()
    res = get_attack("deepfool")(model, x, y, advlab.ThreatModel(norm, float("inf")), steps=50, overshoot=0.02)
    with torch.no_grad():
        z, z0 = model(res.x_adv), model(x)
    return {"acc1": float(topk_correct(z, y, 1).double().mean()), "acc5": float(topk_correct(z, y, 5).double().mean()),
            "acc1_clean": float(topk_correct(z0, y, 1).double().mean()),
            "acc5_clean": float(topk_correct(z0, y, 5).double().mean()), "seconds": time.perf_counter() - t0,
            "x_adv": res.x_adv}


def lenet_table(model: Any, n: int) -> dict[str, Any]:
    """The lecture's five rows for one LeNet: the sweeps, the semantic row, DeepFool, the matching ε."""
    x, y = load_dataset("mnist", "test")
    x, y = x[:n], y[:n]
    rows = sweep_rows(model, n, ["noise", "fgsm", "pgd"], SWEEP)
    rows.update(sweep_rows(model, n, ["semantic"], (0.3,)))
    df = deepfool_unbounded(load_model(model) if isinstance(model, (str, Path)) else model, x, y)
    df.pop("x_adv")
    joint = min(SWEEP, key=lambda e: abs(rows["fgsm"][e]["acc1"] - LECTURE["fgsm"][0])
                + abs(rows["pgd"][e]["acc1"] - LECTURE["pgd"][0]))
    return {"rows": rows, "deepfool": df, "joint_eps": joint,
            "match": {a: matching_eps(rows[a], LECTURE[a][0]) for a in ("fgsm", "pgd")}}


def googlenet_claim(n: int) -> dict[str, Any]:
    """googlenet-mnist: clean, PGD over the sweep (ε matching 18%), DeepFool unbounded."""
    x, y = load_dataset("mnist", "test")
    rows = sweep_rows("googlenet-mnist", n, ["pgd"], (0.05, 0.075, 0.1, 0.15, 0.2, 0.3))
    df = deepfool_unbounded(load_model("googlenet-mnist"), x[:n], y[:n])
    df.pop("x_adv")
    return {"pgd": rows["pgd"], "deepfool": df, "match": matching_eps(rows["pgd"], GOOGLENET_CLAIM["pgd"])}


def fgsm_vs_deepfool(n: int) -> dict[str, Any]:
    """Per image: FGSM at the smallest sweep ε that fools it vs DeepFool-L∞; medians and the figure."""
    model = load_model("lenet-mnist")
    x, y = load_dataset("mnist", "test")
    x, y = x[:n], y[:n]
    best = torch.full((n,), float("inf"))
    x_fgsm = x.clone()
    for e in SWEEP:  # the smallest ε of the sweep at which FGSM fools each image
        r = get_attack("fgsm")(model, x, y, advlab.ThreatModel("linf", e))
        with torch.no_grad():
            fooled = model(r.x_adv).argmax(1) != y
        new = fooled & torch.isinf(best)
        best[new], x_fgsm[new] = e, r.x_adv[new]
    df = get_attack("deepfool")(model, x, y, advlab.ThreatModel("linf", float("inf")), steps=50, overshoot=0.02)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        df_ok = model(df.x_adv).argmax(1) != y
    both = clean_ok & torch.isfinite(best) & df_ok
    df_linf = (df.x_adv - x).flatten(1).abs().amax(1)
    draw_figure(model, x, x_fgsm, df.x_adv, both.nonzero().flatten()[:4].tolist())
    return {"n_both": int(both.sum()), "fgsm_median_linf": float(best[both].median()),
            "deepfool_median_linf": float(df_linf[both].median()),
            "fgsm_median_l2": float((x_fgsm - x).flatten(1).norm(dim=1)[both].median()),
            "deepfool_median_l2": float((df.x_adv - x).flatten(1).norm(dim=1)[both].median())}


def draw_figure(model: Any, x: torch.Tensor, x_fgsm: torch.Tensor, x_df: torch.Tensor, idx: list[int]) -> None:
    """Rows: four digits; columns: original, FGSM, FGSM's perturbation, DeepFool, DeepFool's perturbation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(idx), 5, figsize=(9, 2 * len(idx)))
    with torch.no_grad():
        preds = [model(t[idx]).argmax(1).tolist() for t in (x, x_fgsm, x_df)]
    for r, i in enumerate(idx):
        d_f, d_d = x_fgsm[i] - x[i], x_df[i] - x[i]
        lim = float(max(d_f.abs().max(), d_d.abs().max()))
        panels = [(x[i][0], "gray", 0, 1, f"original: {preds[0][r]}"),
                  (x_fgsm[i][0], "gray", 0, 1, f"FGSM: {preds[1][r]}"),
                  (d_f[0], "seismic", -lim, lim, f"L∞ {float(d_f.abs().max()):.3f}"),
                  (x_df[i][0], "gray", 0, 1, f"DeepFool: {preds[2][r]}"),
                  (d_d[0], "seismic", -lim, lim, f"L∞ {float(d_d.abs().max()):.3f}")]
        for c, (img, cmap, lo, hi, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img.numpy(), cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("FGSM (smallest ε of the sweep that fools) vs DeepFool (L∞) on lenet-mnist", fontsize=9)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--googlenet-n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"n": args.n, "googlenet_n": args.googlenet_n, "sweep": list(SWEEP)}
    res["lenet-mnist"] = lenet_table("lenet-mnist", args.n)
    path = one_epoch_lenet()
    res["one_epoch_clean"] = read_metadata(path).get("acc1")
    res["lenet-1epoch"] = lenet_table(str(path), args.n)
    res["googlenet"] = googlenet_claim(args.googlenet_n)
    res["fgsm_vs_deepfool"] = fgsm_vs_deepfool(args.n)
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lecture_table.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    from lecture_table_doc import section

    write_section("lecture-table", section(res, environment(), " ".join(sys.argv[1:])), doc=LECTURE_DOC,
                  header=LECTURE_HEADER)
    print(f"done in {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
