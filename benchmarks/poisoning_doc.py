"""Render docs/poisoning.md (and its figures) from the measurements of benchmarks/poisoning.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import poisoning_cost
import poisoning_robust
import torch
from _doc import environment
from poisoning_notes import (
    backdoor_note,
    clean_label_note,
    first_over,
    flip_note,
    held_out_note,
    pct,
    pts,
    spectral_note,
    verdict,
)

from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.models import load_model
from advlab.poison import badnets, clean_label
from advlab.poison.report import sweep_figure
from advlab.report.figures import new_figure, png_bytes
from advlab.report.settings import md_table

COMMAND = "python benchmarks/poisoning.py --threads {threads} --fresh"


def acceptance(r: dict[str, Any]) -> list[list[str]]:
    c, bd, d = r["clean"]["acc1"], r["badnets"], r["defenses"]
    gap = bd["acc1"] - c
    over = first_over(r["sweep"])
    best_cl = max(r["clean_label"], key=lambda v: v["asr"])
    rows = [
        ["BadNets pattern, 1 %: ASR ≥ 99 %", pct(bd["asr"]), verdict(bd["asr"] >= 0.99)],
        ["BadNets pattern, 1 %: clean Acc@1 within 0.5 points of the clean model",
         f"{pct(bd['acc1'])} vs {pct(c)} ({pts(bd['acc1'], c)} points)", verdict(abs(gap) <= 0.005)],
        ["Sweep 0.05 %…5 %: fraction where ASR first exceeds 90 %",
         f"{over['fraction']:g} ({over['poisons']} poisons, ASR {pct(over['asr'])})" if over else "never in the sweep",
         "reported"],
        ["All-to-all: ASR and clean accuracy reported",
         "; ".join(f"{v['fraction']:g}: ASR {pct(v['asr'])}, Acc@1 {pct(v['acc1'])}" for v in r["a2a"]), "reported"],
        ["Clean-label: ASR ≥ 80 % with poisons ≤ 10 % of the target class",
         f"best {pct(best_cl['asr'])} ({best_cl['variant']}, {best_cl['poisons']} poisons = "
         f"{pct(best_cl['poisons'] / r['class_count'], 1)} of class {r['target']})", verdict(best_cl["asr"] >= 0.8)],
        ["Label flipping: accuracy vs fraction for uniform / pair / concentrated", "table and figure below", "reported"],
    ]
    runs = [("seed 0, target 7", d)] + [(f"held-out seed {h['seed']}, target {h['target']}", h) for h in r["held_out"]]
    for name in ("spectral", "activation-clustering"):
        for what, key, ok in (("≥ 90 % of poisons found", "tpr", lambda v: v >= 0.9),
                              ("≤ 5 % of the target class's clean images flagged", "fpr_class", lambda v: v <= 0.05),
                              ("ASR < 5 % after retraining", "asr", lambda v: v < 0.05)):
            vals = [(label, run[name][key]) for label, run in runs]
            rows.append([f"{name} (the paper's rule): {what}", "; ".join(f"{pct(v)} ({label})" for label, v in vals),
                         verdict(all(ok(v) for _, v in vals))])
    rows += poisoning_robust.acceptance_rows(r["robust"], verdict)
    rows.append(["STRIP AUC, triggered vs clean test inputs", f"{bd['strip_auc']:.4f}", "reported"])
    best_fc = max(r["collision"], key=lambda v: (v["success"], -v["poisons"]))
    rows.append(["Feature collision (not an acceptance figure): best success",
                 f"{pct(best_fc['success'], 0)} with {best_fc['poisons']} poisons in a {best_fc['n']}-image "
                 "fine-tuning set", "reported"])
    rows.append(poisoning_cost.acceptance_row(r["cost"]))
    if r["wall_parts"][1] == 0:  # one run of --fresh measured the whole page
        counted = (f"{r['wall_minutes']:.1f} min: one from-scratch run (`--fresh`) of the whole page on "
                   f"{r['threads']} thread(s)")
    else:
        counted = (f"{r['wall_minutes']:.1f} min counted on {r['threads']} thread(s): the last fresh run "
                   f"({r['wall_parts'][0]:.1f} min) plus the runs that added or re-measured sections since "
                   f"({r['wall_parts'][1]:.1f} min; re-measured sections count twice), on a machine shared with "
                   "other jobs; not re-measured from scratch")
    rows.append(["Whole doc regenerated in ≤ 60 min on 2 cores", counted,
                 verdict(r["wall_minutes"] <= 60) + ("" if r["threads"] >= 2 else " (as counted, 1 thread)")])
    return rows


def badnets_rows(r: dict[str, Any]) -> list[list[str]]:
    c = r["clean"]["acc1"]
    rows = [["clean model", "0", pct(c), "+0.00", pct(r["badnets"]["clean_model_asr"]), "—"]]
    for name, v in [("pattern, single target 7, 1 %", r["badnets"]), ("single pixel, single target 7, 1 %", r["pixel"]),
                    ("single pixel, single target 7, 5 %", r["pixel5"])]:
        rows.append([name, str(v["poisons"]), pct(v["acc1"]), pts(v["acc1"], c), pct(v["asr"]), f"{v['strip_auc']:.4f}"])
    for v in r["a2a"]:
        rows.append([f"pattern, all-to-all (i → i+1), {pct(v['fraction'], 0)}",
                     str(v["poisons"]), pct(v["acc1"]), pts(v["acc1"], c), pct(v["asr"]), f"{v['strip_auc']:.4f}"])
    return rows


def examples_png(x: torch.Tensor, y: torch.Tensor) -> bytes:
    """Poisons of each kind next to their originals (the first three poisons each attack picks)."""
    robust = load_model("cnn-mnist-robust")
    kinds = [("BadNets pattern", badnets(x, y, fraction=0.01, target=7)),
             ("BadNets pixel", badnets(x, y, fraction=0.01, target=7, trigger="pixel")),
             ("clean-label, PGD vs robust CNN", clean_label(x[:3000], y[:3000], fraction=0.001, target=7,
                                                            model=robust))]
    fig = new_figure((8.0, 1.7 * len(kinds)))
    axes = fig.subplots(len(kinds), 6, squeeze=False)
    for row, (name, p) in enumerate(kinds):
        for j, i in enumerate(p.poisoned_idx[:3].tolist()):
            for k, (img, lab, tag) in enumerate([(x[i], y[i], "original"), (p.x[i], p.y[i], "poison")]):
                ax = axes[row][2 * j + k]
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{tag}, label {int(lab)}", fontsize=7)
                ax.axis("off")
        axes[row][0].text(-0.3, 0.5, name, transform=axes[row][0].transAxes, rotation=90, va="center", fontsize=8)
    fig.tight_layout()
    return png_bytes(fig, dpi=90, bbox_inches="tight")


def flips_png(flips: list[dict[str, Any]], clean: float) -> bytes:
    fig = new_figure((5.5, 3.4))
    ax = fig.subplots()
    for attack, style in (("flip-uniform", "o-"), ("flip-pair", "s-"), ("flip-concentrated", "^-")):
        pts_ = [(v["fraction"], v["acc1"]) for v in flips if v["attack"] == attack]
        ax.plot([0.0] + [f for f, _ in pts_], [clean] + [a for _, a in pts_], style, label=attack.replace("flip-", ""))
    ax.set_xlabel("flipped fraction of the training set")
    ax.set_ylabel("clean test Acc@1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig, dpi=90)


def flip_rows(flips: list[dict[str, Any]], clean: float) -> list[list[str]]:
    fractions = sorted({v["fraction"] for v in flips})
    rows = []
    for f in fractions:
        by = {v["attack"]: v for v in flips if v["fraction"] == f}
        pair = by["flip-pair"]
        rows.append([f"{f:g}", str(by["flip-uniform"]["poisons"]),
                     *(f"{pct(by[a]['acc1'])} ({pts(by[a]['acc1'], clean)})" for a in
                       ("flip-uniform", "flip-pair", "flip-concentrated")),
                     pct(pair["source_acc1"])])
    return rows


def defense_rows(r: dict[str, Any]) -> list[list[str]]:
    d, c = r["defenses"], r["clean"]["acc1"]
    rows = [["none (poisoned model)", "—", "—", "—", "0", pct(r["badnets"]["acc1"]), pct(r["badnets"]["asr"])]]
    for name in ("spectral", "activation-clustering"):
        m = d[name]
        rows.append([f"{name} {m['options'] or '(defaults)'}", pct(m["tpr"]), pct(m["fpr_class"]), pct(m["fpr_all"]),
                     str(int(m["flagged"])), f"{pct(m['acc1'])} ({pts(m['acc1'], c)})", pct(m["asr"])])
    return rows


def sensitivity_rows(r: dict[str, Any]) -> list[list[str]]:
    return [[s["method"], s["setting"], pct(s["tpr"]), pct(s["fpr_class"]), pct(s["fpr_all"]), str(int(s["flagged"]))]
            for s in r["defenses"]["sensitivity"]]


def sweep_rows(r: dict[str, Any]) -> list[list[str]]:
    c = r["clean"]["acc1"]
    return [[f"{v['fraction']:g}", str(v["poisons"]), pct(v["acc1"]), pts(v["acc1"], c), pct(v["asr"])]
            for v in r["sweep"]]


def clean_label_rows(r: dict[str, Any]) -> list[list[str]]:
    c = r["clean"]["acc1"]
    return [[v["variant"], str(v["poisons"]), pct(v["poisons"] / r["class_count"], 1),
             pct(v["surrogate_acc_on_poisons"], 1), pct(v["clean_acc_on_poisons"], 1), pct(v["acc1"]),
             pts(v["acc1"], c), pct(v["asr"]), f"{v['poison_seconds']:.1f}"] for v in r["clean_label"]]


def collision_rows(r: dict[str, Any]) -> list[list[str]]:
    return [[f"{v['n']:,}".replace(",", " "), str(v["poisons"]), f"{v['fraction']:.2g}", str(v["trials"]),
             pct(v["success"], 0), f"{v['feature_distance_ratio']:.3f}"] for v in r["collision"]]


def write_figures(doc: Path, r: dict[str, Any], b: Any) -> dict[str, str]:
    figdir = doc.parent / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    stem = "poisoning-quick" if b.args.quick else "poisoning"
    figs = {"sweep": sweep_figure(r["sweep"], "BadNets pattern, target 7, lenet / MNIST"),
            "flips": flips_png(r["flips"], r["clean"]["acc1"]),
            "examples": examples_png(*b.setup.train)}
    names = {}
    for key, png in figs.items():
        path = figdir / f"{stem}-{key}.png"
        atomic_write_bytes(path, png)
        names[key] = path.relative_to(doc.parent).as_posix()
    return names


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(md_table(head, rows))


PUBLISHED = """\
- **Gu, Dolan-Gavitt, Garg 2017 (BadNets), MNIST**: a 4-layer CNN (2 conv + 2 FC) trained on a
  training set with backdoored images added; single-target attacks with the single-pixel and the
  pattern trigger keep the clean error at the baseline's (≈ 0.5 %) while the error on backdoored
  images (inputs not classified as the target) is at most about 0.1 %; the all-to-all attack keeps
  clean error ≈ baseline with backdoored error ≈ 0.6 %. The paper's poisoned share is larger than
  1 % (it adds backdoored copies rather than replacing 1 % of the set).
- **Rolnick, Veit, Belongie, Shavit 2017**: on MNIST, a conv net still reaches ≈ 90 % test
  accuracy with 100 uniformly-noisy labels *per clean label* (i.e. > 99 % noise by count);
  structured (non-uniform) noise hurts more. The fractions here (≤ 10 %) are far milder.
- **Tran, Li, Madry 2018 (spectral signatures)**: CIFAR-10, ResNet, pattern backdoors at ε = 5 %
  and 10 % of the target class; removing 1.5ε of each class by spectral score removed (nearly)
  all poisons for most source/target pairs, and retrained models' backdoor success fell to ≈ 0–1 %.
- **Chen et al. 2018 (activation clustering)**: on MNIST backdoors (10 %–33 % poisons per class)
  2-means on 10 ICA components of the last hidden layer separated poisons with near-100 %
  accuracy and F1.
- **Gao et al. 2019 (STRIP)**: on MNIST, at a preset FRR of 1 % (clean inputs wrongly flagged),
  FAR (trojaned inputs missed) of 0 %–≈ 1 %.
- **Turner, Tsipras, Madry 2019 (clean-label)**: CIFAR-10; PGD perturbations computed on an
  *adversarially trained* model (ε = 8/255 or 16/255 in L∞) make poisons "hard", and a few hundred
  poisons (≈ 5–10 % of the target class) give high ASR, where trigger-only poisons barely work.
- **Shafahi et al. 2018 (poison frogs)**: transfer learning (frozen InceptionV3 features, dog vs
  fish): one poison per target reached 100 % success.
"""


def header(r: dict[str, Any], args: Any) -> list[str]:
    cmd = COMMAND.format(threads=args.threads) + (" --quick" if args.quick else "")
    return [
        "# Poisoning and backdoors: measured", "",
        "<!-- Written by benchmarks/poisoning.py; do not edit by hand: rerun the command. -->", "",
        f"Regenerate the whole page: `{cmd}` ({r['wall_minutes']:.1f} min wall time from scratch on "
        f"{args.threads} thread(s), on a machine shared with other jobs: the last fresh run plus the measured runs "
        "of the sections added since). "
        f"{environment()}.", "",
        "Setup: lenet (LeNet-5, advlab's `create_model(\"lenet\")`) trained by `advlab.train.fit` — Adam, lr 2e-3, "
        f"batch 64, one-cycle cosine, seed 0, {args.epochs} epochs — on the full MNIST training split (60 000 "
        "images), clean or poisoned; every accuracy is on the 10 000 test images. Poison fractions are of the "
        "whole training set: an attack changes exactly round(fraction · 60 000) examples (halves rounded up) and "
        "nothing else. ASR (attack success rate) = share of triggered test images whose true class is not the "
        "target that the model classifies as the target (all-to-all: share classified as (y + 1) mod 10). The "
        "single clean model of the recipe is the baseline, the concentrated flip's margin model, and the "
        "feature-collision backbone. Library: `advlab.poison`; command: `advlab poison` (end of the page).", "",
    ]


def body(r: dict[str, Any], figs: dict[str, str]) -> list[str]:
    c, t = r["clean"]["acc1"], r["target"]
    over = first_over(r["sweep"])
    return [
        "## Acceptance (issue 17)", "", table(["criterion", "measured", "verdict"], acceptance(r)), "",
        f"Clean model: Acc@1 {pct(c)} ({r['clean']['seconds']:.0f} s of training).", "",
        "## BadNets (Gu et al. 2017)", "",
        "Trigger: a 3×3 checkerboard of bright pixels 1 px from the bottom-right corner, or one bright pixel "
        "there (`advlab.poison.make_trigger`); poisons are drawn uniformly from the non-target classes, "
        "stamped, relabelled. STRIP (Gao et al. 2019): mean prediction entropy over 32 superimpositions "
        "(pixel-wise sum, clipped) with held-out clean test images (the last 1 000); AUC of −entropy on the "
        "first 1 000 test images, triggered (non-target classes) vs clean; 'missed at 1 %' = triggered "
        "inputs not flagged at the threshold that flags 1 % of clean inputs (Gao et al.'s FAR at FRR 1 %).", "",
        table(["model", "poisons", "clean Acc@1", "Δ (points)", "ASR", "STRIP AUC"], badnets_rows(r)), "",
        f"STRIP on the 1 % pattern backdoor: triggered inputs missed at 1 % clean flagged: "
        f"{pct(r['badnets']['strip_miss_at_1pct'])}.", "", backdoor_note(r), "",
        "### ASR against the poison fraction", "",
        table(["fraction", "poisons", "clean Acc@1", "Δ (points)", "ASR"], sweep_rows(r)), "",
        (f"ASR first exceeds 90 % at fraction {over['fraction']:g} ({over['poisons']} poisons)." if over else
         "ASR never exceeds 90 % in the sweep."), "", f"![ASR against poison fraction]({figs['sweep']})", "",
        f"![poisons]({figs['examples']})", "",
        "## Clean-label backdoor (Turner et al. 2019)", "",
        f"600 poisons = 1 % of the training set, all drawn from class {t} ({r['class_count']} images, so "
        f"{pct(600 / r['class_count'], 1)} of the class); labels untouched; PGD-20 (advlab's `pgd`, L∞, "
        "untargeted, random start, step 2.5·ε/20; 40 steps before the transform's cost was cut, see 'Cost of the "
        "poisoning transform') on the surrogate named, then the pattern trigger at full amplitude.", "",
        table(["variant", "poisons", "share of class", "surrogate: poisons called 7", "clean lenet: poisons called 7",
               "clean Acc@1", "Δ (points)", "ASR", "craft (s)"],
              clean_label_rows(r)), "",
        clean_label_note(r), "",
    ]


def body2(r: dict[str, Any], figs: dict[str, str]) -> list[str]:
    c, t, d = r["clean"]["acc1"], r["target"], r["defenses"]
    src, dst = r["flip_pair"]
    return [
        "## Label flipping", "",
        "Same fractions for the three flips. uniform: labels drawn uniformly from the whole set, each set to a "
        f"uniformly drawn other class; pair: class {src} → {dst} (the pair flip can take at most the "
        f"{r['source_count']} examples of class {src}, {pct(r['source_count'] / 60000, 1)} of the set); "
        "concentrated: the examples of smallest margin under the clean model, each relabelled as its "
        "runner-up class. Cells: clean test Acc@1 (Δ in points vs the clean model).", "",
        table(["fraction", "flipped", "uniform", "pair", "concentrated", f"pair: Acc@1 on test class {src}"],
              flip_rows(r["flips"], c)), "",
        f"![accuracy against flipped fraction]({figs['flips']})", "",
        flip_note(r["flips"], c, src), "",
        "## Data-level defenses against BadNets 1 % (pattern, target 7)", "",
        "The papers' rules first (they miss); then their robust variants, `spectral-robust` and "
        "`activation-clustering-robust`, on nine runs (last subsection).", "",
        f"The poisoned model's penultimate features (lenet: the 84-unit layer feeding the classifier; `-o depth=2` "
        "reads the 120-unit layer before it) for every "
        f"training example; each class inspected separately; flagged examples removed and a fresh model trained "
        f"with the same recipe. Poisons are {pct(d['class_share'], 1)} of class {t}'s training labels. Fixed in "
        f"advance, never from the true rate: spectral removal = 1.5 × ε with ε = 0.1 (an assumed bound on the "
        "poisons' share of a class, Tran et al.'s rule); activation clustering: 10 ICA components, 2-means, the "
        "smaller cluster flagged when it holds ≤ 35 % of its class (Chen et al.'s relative size). "
        f"TPR = poisons flagged; FPR (class {t}) = clean class-{t} images flagged; FPR (all) = clean images "
        "flagged in all classes. This run (seed 0, target 7) is the one the settings were first judged on; the "
        "held-out runs below check whether they carry over.", "",
        table(["defense", "TPR", f"FPR (class {t})", "FPR (all)", "removed", "retrained clean Acc@1", "ASR"],
              defense_rows(r)), "",
        spectral_note(r), "",
        table(["method", "features, setting", "TPR", f"FPR (class {t})", "FPR (all)", "flagged"],
              sensitivity_rows(r)), "",
        "### Held-out runs", "",
        "The same two detectors, settings unchanged, on BadNets 1 % runs they were not judged on: another poison "
        "draw (seed s), another target class and another training seed (s), each (seed, target) fixed before it "
        "ran. Diagnostic as above, for the target class.", "",
        table(["run", "poisons (share of class)", "poisoned ASR", "defense", "TPR", "FPR (class)", "FPR (all)",
               "retrained clean Acc@1", "ASR after", "|cos| top vector / shift"], held_out_rows(r)), "",
        held_out_note(r), "",
        *poisoning_robust.section(r["robust"], table),
    ]


def held_out_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for h in r["held_out"]:
        for name in ("spectral", "activation-clustering"):
            m = h[name]
            rows.append([f"seed {h['seed']}, target {h['target']}",
                         f"{h['poisons']} ({pct(h['class_share'], 1)})", pct(h["asr"]), name, pct(m["tpr"]),
                         pct(m["fpr_class"]), pct(m["fpr_all"]), pct(m["acc1"]), pct(m["asr"]),
                         f"{h['diagnostic']['cos_top']:.2f}" if name == "spectral" else "—"])
    return rows


def body3(r: dict[str, Any]) -> list[str]:
    return [
        "## Feature collision (Shafahi et al. 2018), lenet backbone frozen", "",
        "The victim fine-tunes the clean lenet's last layer (from its trained weights, `fit` with "
        "`init_seed=False`, same recipe) on the frozen 84-d features of a fine-tuning set with the poisons in "
        "it: the full training split, or its first 1 000 images (Shafahi et al.'s transfer setting fine-tunes "
        "on a small set; there the head trains for 30 epochs, on the full split for the recipe's). "
        f"Each trial takes one target test image (the first test images not of class {r['collision_base']} that the "
        "clean model classifies correctly) "
        f"and crafts the poisons from randomly drawn class-{r['collision_base']} training images by "
        "forward–backward splitting (200 steps, β = 0.25·(84/784)², labels untouched); success = the "
        f"fine-tuned model classifies the target as {r['collision_base']}. Feature ratio = mean over poisons "
        "of ‖f(p) − f(t)‖ / ‖f(b) − f(t)‖ (how far the collision got).", "",
        table(["fine-tuning set", "poisons", "fraction", "trials", "success", "feature ratio"], collision_rows(r)),
        "",
        *poisoning_cost.section(r["cost"], table),
        "## Changed after first results", "",
        "Stated so the figures can be judged: (1) the recipe's 5 epochs were chosen after a 2-epoch probe of "
        "BadNets 1 % (ASR 98.95 %, spectral TPR about 41 %); every model on this page uses the same 5. (2) The "
        "feature-collision rows on a 1 000-image fine-tuning set (head trained 30 epochs) were added after the "
        "full-split rows gave 0 % success in a 1-epoch smoke run; the full-split rows are kept. (3) The clean-label "
        "ε = 0.5 variant and the 5 % single-pixel row were added after the first results missed. The defenses' "
        "settings (spectral ε = 0.1, activation clustering's ICA-10 / 2-means / 35 %) were fixed before their "
        "first measurement and not changed. (4) After the fixed-share spectral rule missed, two variants were tried on "
        "this run: the 120-unit layer (`-o depth=2`) and a rate-free cut (robust z-score of the projection on the top "
        "singular vector > 3, on the side the mean leans to; the sensitivity table's rows). On this run the z-cut at "
        "the 120-unit layer found 97 % of the poisons with under 4 % of class 7 flagged (its row); on a held-out "
        "poison draw (seed 1, target 3, training seed 0; a scratch run, not on this page) it found none, so it "
        "was dropped and the library keeps Tran et al.'s rule. The held-out runs were added then, for both "
        "detectors, to show which figures carry over: activation clustering's, met on this run, do not. (5) The "
        "robust variants (spectral-robust, activation-clustering-robust) were written after all of that, on the "
        "development runs named in their section; their rule changed once (v1 → v2) after a held-out miss, and "
        "the section gives both, with which runs each version had seen. (6) The clean-label PGD went from 40 to "
        "20 steps to hold its cost under 5 % of a training run (its rows were measured again with 20 steps); the "
        "concentrated flip's margins moved to the model's fast view (the same flips, checked).", "",
        "## Published figures (for comparison; settings differ)", "", PUBLISHED,
        "## Reproduce one row with the command", "",
        "```", "advlab poison --attack badnets -o fraction=0.01 -o target=7 --model lenet --epochs 5 "
        "--defense activation-clustering --sweep 0.001,0.005,0.01 --out runs/badnets", "advlab poison --attack flip-pair "
        "-o fraction=0.05 -o source=3 -o target=8 --epochs 5 --out runs/flip",
        "advlab poison --attack badnets -o fraction=0.01 -o target=7 --epochs 5 --defense spectral-robust "
        "--out runs/robust", "```", "",
        "Each writes `report.md`, `report.html` (self-contained, with example images and, for a sweep, ASR "
        "against fraction) and `results.json` into `--out`. Training is deterministic under the seed, so the "
        "first command reproduces this page's BadNets 1 % row, its activation-clustering row and the sweep's "
        "0.001 / 0.005 / 0.01 rows (checked once by hand when this page was written); the third is the robust "
        "section's run (0, 7) with spectral-robust (same seeds; not run separately for this page).", "",
    ]


def write(doc: Path, r: dict[str, Any], args: Any, b: Any) -> None:
    y = b.setup.train[1]
    r.update(target=7, class_count=int((y == 7).sum()), threads=args.threads, flip_pair=(3, 8), epochs=args.epochs,
             source_count=int((y == 3).sum()), collision_base=3)
    figs = write_figures(doc, r, b)
    lines = header(r, args) + body(r, figs) + body2(r, figs) + body3(r)
    atomic_write_text(doc, "\n".join(lines).rstrip() + "\n")
