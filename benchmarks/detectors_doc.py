"""The ``detectors-auc`` section of docs/defenses.md, rendered from benchmarks/detectors.py's JSON records.

benchmarks/results/detectors.json is the main table (Feinman et al.'s settings); each
benchmarks/results/detectors-<settings>.json (a run with ``--eps``, ``--noise`` or ``--positives``) is a
column of the settings table; benchmarks/results/detectors-papernet*.json (benchmarks/detectors_papernet.py)
are the papers'-network tables.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULTS = {"eps": 0.3, "noise": "l2", "positives": "successful"}


def variant_name(args: dict[str, Any]) -> str:
    """The results-file suffix of a run's settings: "" for Feinman et al.'s defaults, else e.g. ``-eps0.4-noise-ma``."""
    parts = [f"eps{args['eps']:g}" if args.get("eps", 0.3) != 0.3 else "",
             f"noise-{args['noise']}" if args.get("noise", "l2") != "l2" else "",
             "pos-all" if args.get("positives", "successful") != "successful" else "", args.get("tag", "")]
    return "".join(f"-{p}" for p in parts if p)


def variant_label(args: dict[str, Any]) -> str:
    """A column header naming a run's settings."""
    noise = {"l2": "", "feinman": " · Feinman's noise σ", "ma": " · Ma's noise σ"}[args.get("noise", "l2")]
    pos = " · all positives" if args.get("positives", "successful") == "all" else ""
    tag = f" · {args['tag']}" if args.get("tag") else ""
    return f"ε {args.get('eps', 0.3):g}{noise}{pos}{tag}"


def command(script: str, args: dict[str, Any], keys: list[str]) -> str:
    """The command line that reproduces a record (the options in ``keys`` that are set)."""
    opts = []
    for k in keys:
        v = args.get(k)
        if v in (None, False, "") or DEFAULTS.get(k) == v:
            continue
        opts.append(f"--{k.replace('_', '-')}" + ("" if v is True else f" {shlex.quote(str(v))}"))
    return f"PYTHONPATH=src python benchmarks/{script} " + " ".join(opts)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _setup(record: dict[str, Any]) -> list[str]:
    a = record["args"]
    cmd = (f"PYTHONPATH=src python benchmarks/detectors.py --threads {a['threads']} --n {a['n']} "
           f"--n-fit {a['n_fit']} --clean {a['clean']}{' --lid-protocol' if a.get('lid_protocol') else ''}")
    return [
        "### Detection ROC-AUC on lenet-mnist (KD, BU, KD+BU, LID, the detector network)", "",
        f"`{cmd}` · {record['environment']} · {record['seconds'] / 60:.1f} min (shared, loaded machine)", "",
        f"Fitted on the MNIST training split only: the first {a['clean']} training images are the clean set (KD's "
        "reference features, ≤ 1 000 per predicted class; the BU dropout variant's training set; LID's reference "
        "batch of 100 and the clean negatives); adversarial and noisy images for fitting come from the next "
        f"{a['n_fit']} training images; one detector per attack, as both papers do. Evaluated on the first "
        f"{a['n']} test images. Positives: the successful adversarial examples of correctly classified images "
        "(as the papers); negatives: their clean originals plus one noisy copy each (Gaussian noise with the "
        "adversarial perturbation's L2 norm, clipped), the papers' *normal + noisy vs adversarial* AUC; "
        "\"vs clean\" drops the noisy copies.", "",
        "Attacks (advlab registry): FGSM L∞ ε=0.3; BIM L∞ ε=0.3, 50 steps of 0.01 (Feinman et al.'s MNIST "
        "settings; BIM-A: each image stops at its first misclassified iterate, `early_stop=True`; BIM-B: the "
        "last iterate); PGD L∞ ε=0.3, 40 steps of 0.01, random start; DeepFool L2 (50 steps, overshoot 0.02); "
        "C&W L2 (f6, 5 binary-search steps × 100 Adam steps of lr 0.1: capped from the papers' 9 × 1 000 for "
        "time). Detectors: KD σ = 1.20 (Feinman's MNIST bandwidth) on lenet's 84-unit last hidden layer; BU "
        "T = 50 passes through a dropout variant of lenet (p = 0.5 before the 120→84 and 84→10 layers, "
        "fine-tuned 5 epochs from lenet's weights on the clean set with lenet's own labels); KD+BU their "
        "logistic regression; every regression z-scores its features and picks its L2 penalty by 5-fold "
        "cross-validation, as the papers' `LogisticRegressionCV`; LID k = 20 against a fixed reference batch of 100 over lenet's 12 distinct leaf "
        "outputs (input normalisation, conv/ReLU/max-pool twice, linear/ReLU twice, the logits) plus the "
        "softmax (the paper's networks end in a softmax layer); \"LID (no softmax)\" the leaves only; \"net\" the "
        "detector network (Metzen et al. 2017) with its defaults: a small conv net on lenet's first pooling output, "
        "trained 10 epochs on the clean (+ noisy) fitting images against the adversarial ones.", "",
    ]


def _attack_table(rows: list[dict[str, Any]]) -> list[str]:
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r["attack"], r)
    lines = ["| attack | positives: fit · test (of correctly classified test images) | median L2 (test) | "
             "median top-1 softmax of the positives | crafting 1 000 test images |", "|---|---:|---:|---:|---:|"]
    for name, r in first.items():
        lines.append(f"| {name} | {r['n_pos_fit']} · {r['n_pos_test']}/{r['n_correct_test']} | {r['median_l2']:.2f} | "
                     f"{r['adv_conf']:.3f} | {r['craft_test_s']:.0f} s |")
    return lines


def _auc_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| attack | detector | AUC % | AUC % vs clean | paper % | Δ (ours − paper) | LID, Ma et al.'s protocol % "
             "| fit s | scored img/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        delta = "" if r["paper"] is None else f"{r['auc'] - r['paper']:+.2f}"
        lines.append(f"| {r['attack']} | {r['detector']} | {r['auc']:.2f} | {r['auc_clean']:.2f} | {_fmt(r['paper'])} "
                     f"| {delta} | {_fmt(r.get('lid_protocol'))} | {r['fit_s']:.0f} | {r['score_per_s']:.0f} |")
    return lines


def render(record: dict[str, Any]) -> str:
    """The docs/defenses.md section: setup, the per-attack sets, the AUC table next to the papers', notes."""
    rows = record["rows"]
    return "\n".join(_setup(record) + _attack_table(rows) + [""] + _auc_table(rows) + [""]
                     + _layer_table(record.get("per_layer", {})) + _variants(record) + ["", PAPERS, "", *_notes(record)]
                     + _papernet())


def _records(prefix: str) -> list[dict[str, Any]]:
    """The saved records ``benchmarks/results/<prefix>*.json``, each with its file name under ``"file"``."""
    out = []
    for path in sorted(RESULTS.glob(f"{prefix}*.json")):
        rec = json.loads(path.read_text())
        rec["file"] = path.name
        out.append(rec)
    return out


def _variants(main: dict[str, Any]) -> list[str]:
    """The settings table: lenet at each saved variant of the papers' code settings, next to the main table."""
    recs = sorted((r for r in _records("detectors-") if not r["file"].startswith("detectors-papernet")),
                  key=lambda r: (r["args"]["eps"], r["args"]["noise"] != "l2", r["args"]["positives"] == "all",
                                 r["args"].get("tag", "")))
    if not recs:
        return []
    keys = ["threads", "n", "n_fit", "clean", "attacks", "eps", "noise", "positives", "lid_protocol", "detectors", "tag"]
    lines = ["", "**The papers' code settings on lenet-mnist** (each column one run of `benchmarks/detectors.py`; "
             "otherwise the protocol above; AUC %, normal + noisy vs adversarial):", ""]
    lines += [f"- {variant_label(r['args'])}: `{command('detectors.py', r['args'], keys)}` · {r['environment']} · "
              f"{r['seconds'] / 60:.1f} min" for r in recs]
    cols = [{(x["detector"], x["attack"]): x for x in r["rows"]} for r in recs]
    base = {(x["detector"], x["attack"]): x for x in main["rows"]}
    order = list(dict.fromkeys([*base, *(k for c in cols for k in c)]))
    pairs = sorted(dict.fromkeys(k for c in cols for k in c),
                   key=lambda k: ([a for _, a in order].index(k[1]), order.index(k)))
    lines += ["", "| attack | detector | ε 0.3 (main table) | " + " | ".join(variant_label(r["args"]) for r in recs)
              + " | paper % |", "|---|---|" + "---:|" * (len(recs) + 2)]
    for det, att in pairs:
        for label, key in ((det, "auc"), (f"{det}, Ma et al.'s protocol", "lid_protocol")):
            vals = [c.get((det, att), {}).get(key) for c in cols]
            if all(v is None for v in vals):
                continue
            paper = base.get((det, att), {}).get("paper") if key == "auc" else None
            lines.append(f"| {att} | {label} | {_fmt(base.get((det, att), {}).get(key))} | "
                         + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(paper)} |")
    return [*lines, "", *_variant_sets(recs)]


def _variant_sets(recs: list[dict[str, Any]]) -> list[str]:
    """Per variant and attack: the positives and the noisy negatives they are scored against."""
    lines = ["| settings | attack | positives (test, of correctly classified) | fooled % of correctly classified | "
             "median L2 adversarial | median L2 noisy | noise σ per pixel | median top-1 softmax of the positives |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for rec in recs:
        first: dict[str, dict[str, Any]] = {}
        for r in rec["rows"]:
            first.setdefault(r["attack"], r)
        for att, r in first.items():
            sigma = "per-image L2" if r.get("noise_sigma") is None else f"{r['noise_sigma']:.3f}"
            lines.append(f"| {variant_label(rec['args'])} | {att} | {r['n_pos_test']}/{r['n_correct_test']} | "
                         f"{100 * r['fooled_rate']:.1f} | {r['median_l2']:.2f} | {r['median_noisy_l2']:.2f} | {sigma} | "
                         f"{r['adv_conf']:.3f} |")
    shown = {(0.3, "successful")}  # the per-layer AUCs (adversarial vs clean) do not depend on the noise
    for rec in recs:
        key = (rec["args"]["eps"], rec["args"]["positives"])
        if rec.get("per_layer") and key not in shown:
            shown.add(key)
            lines += ["", f"Single-layer LID ROC-AUC % at {variant_label(rec['args'])} (as the per-layer table above):", "",
                      *_layer_table(rec["per_layer"])[2:]]
    return lines


def _papernet_label(a: dict[str, Any]) -> str:
    recipe = "papers' recipe" if a.get("recipe") == "papers" else "Adam"
    return f"{recipe}, {a['epochs']} ep on {a['train_n']} · {variant_label(a)}"


def _papernet() -> list[str]:
    """The same detectors on the papers' network (benchmarks/detectors_papernet.py's JSON records), if run."""
    recs = sorted(_records("detectors-papernet"), key=lambda r: (r["args"].get("recipe", "adam") == "papers",
                                                                   r["args"].get("eps", 0.3), r["args"].get("noise", "l2")))
    if not recs:
        return []
    keys = ["threads", "n", "n_fit", "clean", "recipe", "epochs", "train_n", "eps", "noise", "positives", "detectors",
            "lid_protocol"]
    lines = ["", "**The papers' network.** Feinman et al.'s MNIST CNN (conv 64-conv 64-max-pool-dropout-dense "
             "128-dropout-dense 10) rebuilt in torch; BU samples its own two dropout layers; `--clean` clean "
             "training images, `--n` more attacked for fitting, `--n` test images; otherwise the protocol above. "
             "\"Adam\": advlab.train.fit (Adam, lr 1e-3, one-cycle, batch 128, PyTorch's initialisation); \"papers' "
             "recipe\": their released code's training — Keras initialisation (Glorot-uniform, zero biases), "
             "Adadelta (lr 1.0, ρ 0.95), batch 128, shuffled, no augmentation, inputs shifted to [−0.5, 0.5] inside "
             "the network as Ma et al.'s code feeds them (ε stays in [0, 1] units).", ""]
    train = RESULTS / "papernet-papers-training.json"
    if train.exists():
        t = json.loads(train.read_text())
        lines += [f"Training by the papers' recipe: `{t['command']}` · {t['environment']} · per epoch (seconds, test "
                  "Acc@1): " + ", ".join(f"{e['epoch']}: {e['seconds']:.0f} s, {e['acc1']:.4f}" for e in t["log"])
                  + f" — {len(t['log'])} of the 50 epochs of Ma et al.'s README (20 in Feinman's code) fitted in the ~30 min "
                  f"allowed; {t['note']}.", ""]
    for r in recs:
        a = r["args"]
        lines.append(f"- {_papernet_label(a)}: `{command('detectors_papernet.py', a, keys)}` · {r['environment']} · "
                     f"{r['seconds'] / 60:.1f} min · test Acc@1 {r['acc1']:.4f}"
                     + (" · **partial**: stopped at the deadline, only the attacks with figures in its column were run" if r.get("partial") else ""))
    cols = [{(x["detector"], x["attack"]): x for x in r["rows"]} for r in recs]
    seen = list(dict.fromkeys(k for c in cols for k in c))
    dets = list(dict.fromkeys(d for d, _ in seen))
    pairs = sorted(seen, key=lambda k: (["fgsm", "bim-a", "bim-b"].index(k[1]), dets.index(k[0])))
    lines += ["", "| attack | detector | " + " | ".join(_papernet_label(r["args"]) for r in recs) + " | paper % |",
              "|---|---|" + "---:|" * (len(recs) + 1)]
    for det, att in pairs:
        paper = next((c[(det, att)]["paper"] for c in cols if (det, att) in c), None)
        lines.append(f"| {att} | {det} | " + " | ".join(_fmt(c.get((det, att), {}).get("auc")) for c in cols)
                     + f" | {_fmt(paper)} |")
        if any(c.get((det, att), {}).get("lid_protocol") is not None for c in cols):
            lines.append(f"| {att} | {det}, Ma et al.'s protocol | "
                         + " | ".join(_fmt(c.get((det, att), {}).get("lid_protocol")) for c in cols) + " | — |")
    for r in recs:
        if r.get("per_layer"):
            lines += ["", f"Single-layer LID ROC-AUC % on the papers' network, {_papernet_label(r['args'])} (layers by "
                      "index: 0 the input shift, i.e. the pixels; 1 conv, 2 ReLU, 3 conv, 4 ReLU, 5 max-pool, 6 dropout, "
                      "7 flatten, 8 dense 128, 9 ReLU, 10 dropout, 11 the logits):", "",
                      *_layer_table(r["per_layer"])[2:]]
    lines += ["", "Median top-1 softmax of the test positives: " + "; ".join(
        f"{_papernet_label(r['args'])}: " + ", ".join(f"{x['attack']} {x['adv_conf']:.3f}" for x in r["rows"]
                                                     if x["detector"] == r["rows"][0]["detector"]) for r in recs) + "."]
    return lines


PAPERS = (
    "**The papers' figures** (MNIST, ROC-AUC %). Feinman et al. 2017, combined KD+BU detector (their table of "
    "the logistic-regression detector's ROC-AUC): FGM 90.57, BIM-A 97.23, BIM-B 82.06, JSMA 98.13, C&W 98.94 "
    "(their abstract: 85–93 % across MNIST, CIFAR-10 and SVHN). Ma et al. 2018, Table 1 (KD, BU and LID each "
    "alone; \"Opt\" = C&W L2): KD 78.12 / 98.14 / 98.61 / 68.77 / 95.15, BU 32.37 / 91.55 / 25.46 / 88.74 / "
    "71.30, LID 96.89 / 99.60 / 99.83 / 92.24 / 99.24 for FGM / BIM-a / BIM-b / JSMA / Opt. Settings (Ma et "
    "al.'s code builds on Feinman's): a Keras CNN (conv 64-conv 64-max-pool-dropout-dense 128-dropout-dense "
    "10-softmax), FGM and BIM with BIM steps of 0.01 × 50 (ε below), C&W L2 with its default search, "
    "T = 50, LID k = 20 in minibatches of 100; the detectors are fitted on features of the *test* images (Feinman "
    "scores the same images it fits, Ma et al. fit on 80 % and score 20 %). These numbers are quoted from memory "
    "of the two papers' tables: the PDFs could not be opened from this machine, so the decimals are uncertain. "
    "The settings are checked against the released code. Feinman et al.'s (rfeinman/detecting-adversarial-samples): "
    "ε = 0.3 on [0, 1] images, noisy negatives with a preset per-pixel σ (FGSM 0.310, BIM-A 0.128, BIM-B 0.265; "
    "C&W and JSMA: as many pixels set to 1 as the attack changed), Adadelta training (20 epochs by default), KD "
    "σ = 1.20. Ma et al.'s (xingjunm/lid_adversarial_subspace_detection), *already in its first commit of "
    "2018-02-14*, a month after the paper's acceptance: images in [−0.5, 0.5] and FGSM/BIM at **ε = 0.40** with "
    "BIM steps of 0.01 × 50 (an L∞ budget of 0.4 in [0, 1] units, not Feinman's 0.3), noise σ FGSM 0.271 / BIM-A "
    "0.111 / BIM-B 0.167 / C&W 0.207, KD σ = 3.79, the same CNN trained by Adadelta with batch 128 (the README: "
    "50 epochs), no augmentation; LID over the input and every Keras layer's output (conv, ReLU, conv, ReLU, "
    "max-pool, dropout, flatten, dense, ReLU, dropout, dense, softmax: 10 distinct ones), k = 20, minibatches of "
    "100 test images with the noisy and adversarial versions of the same images, each point's nearest neighbour "
    "skipped; min-max scaling and `LogisticRegressionCV` on an 80/20 block split; positives are *all* adversarial "
    "versions of correctly classified test images (neither code drops the unsuccessful ones). Its later versions "
    "(Sept. 2018: batch norm after each ReLU, training with rotation/shift/flip augmentation) postdate the paper. "
    "Neither paper ran PGD or DeepFool, and "
    "JSMA is not run here: those cells have no paper figure."
)


NOTES = [
    "- **The two papers ran different budgets.** Ma et al.'s released code attacks at ε = 0.4 (see above), "
    "Feinman et al.'s at 0.3; so Ma et al.'s KD, BU and LID figures belong next to our ε 0.4 column of the settings "
    "table, Feinman et al.'s KD+BU next to the main table. This also accounts for the two papers' 16-point "
    "disagreement on KD for BIM-B (Ma et al.'s KD alone 98.61, Feinman et al.'s KD+BU 82.06): on lenet, KD on "
    "BIM-B rises from 80.52 at ε 0.3 to 88.52 at ε 0.4.",
    "- **LID on FGSM (−5.6): closed by the budget.** At ε 0.4 LID scores 92.53; with Ma et al.'s noise σ 93.61; "
    "with all positives (their code keeps the 8 % of FGSM examples that fail) 93.74, −3.2 from 96.89. The papers' network trained their way (5 epochs on 60 000, Acc@1 0.9902; last table) closes it at either budget: LID 96.83 at ε 0.3 (−0.1) and 98.54 at ε 0.4 with their σ and all positives (+1.7), where the same network trained 3 epochs by Adam on 20 000 images scored 91.91.",
    "- **LID on BIM-B (−19.3): the budget and the noise explain 7 points; the number of neighbours k most of the "
    "rest, if the paper used a larger k than its code's default; ≥ 3.5 points stay unexplained.** ε 0.4 lifts LID "
    "from 80.54 to 86.00 and Ma et al.'s noise σ to 87.47 (all positives changes nothing: every BIM-B example "
    "succeeds), −12.4 from 99.83. Ma et al.'s protocol (paired test minibatches, 80/20 split) agrees within 1 "
    "point in every lenet column (within 2.5 on the papers' network), so neither our fixed reference batch nor fitting on the training split matters. "
    "What moves it most is k: on the same ε 0.4 sets, k = 10 / 20 / 40 / 80 give 79.5 / 87.5 / 90.5 / 94.4 "
    "(Ma et al.'s protocol 82.6 / 87.4 / 90.8 / 96.4), at ε 0.3 75.8 / 80.5 / 83.5 / 88.6 (the k-sweep columns). "
    "Their code's default and README use k = 20, as our tables do, but it writes LID features to "
    "`data_grid_search/lid_large_batch/lid_<dataset>_<attack>_<k>.npy`, one file per k: a grid search, whose "
    "chosen k the paper's row may reflect. We keep k = 20 and do not pick k by the test AUC; at k = 80 the gap "
    "is 5.4 (our detector) and 3.5 (their protocol). Nor does the papers' network trained their way close it: LID on BIM-B 81.35 at ε 0.3 and 89.82 at ε 0.4 with their σ and all positives (Ma et al.'s protocol 82.65 / 87.36; k = 80: 84.10 / 93.98), so −10.0 at k = 20 and −5.9 at k = 80 in Ma et al.'s own settings. Training that network three times longer (15 epochs on 60 000 in 1 788 s on one thread, test Acc@1 0.9917; their README trains 50) moves it little: 90.53 (Ma et al.'s protocol 91.29; k = 80: 95.77 / 96.50), so −9.3 / −8.5 at k = 20 and −4.1 / −3.3 at k = 80, the only setting measured within 5 points. The single-layer table shows why k matters: at "
    "ε 0.4 the best single layer for BIM-B is still the pixels (77), where the perturbation's size shows, and a "
    "larger k reads that size over more neighbours. The noise shows the same: with Feinman et al.'s σ, whose "
    "clipped copies are as large as the adversarial perturbations (L2 6.25 vs 6.17 on FGSM, 5.37 vs 4.91 on BIM-B), "
    "LID at ε 0.3 falls to 82.88 (FGSM) and 75.53 (BIM-B); Ma et al.'s σ, tuned on their network, give lenet's "
    "copies less than its adversarial L2 (FGSM 5.48 vs 8.16, BIM-B 3.41 vs 5.70), so part of what LID separates "
    "here is the perturbation's size. Unexplained: whether the paper's k was 20, and the rest of the gap at any k "
    "measured.",
    "- **LID on BIM-A, DeepFool and C&W: the softmax layer and the cross-validated penalty.** These attacks leave "
    "their examples at the decision boundary (median top-1 softmax 0.50–0.68), and the softmax output's LID alone "
    "separates them almost perfectly (per-layer table: 99–100). With the softmax among the layers, as in the "
    "paper's networks, and the penalty cross-validated, as in the paper's code, LID is within 0.3 points of Ma et "
    "al. on BIM-A (BIM-A is the same at ε 0.3 and 0.4: it stops at the first misclassified iterate) and above "
    "them on C&W; without the softmax (\"LID (no softmax)\") it loses 8–9 points. The softmax layer's LID is "
    "heavy-tailed, so after z-scoring it needs a large weight: with a fixed penalty of 1e-3 instead of "
    "cross-validation, C&W's LID measured 93.6 on the same sets (`make_detector(\"lid:l2=0.001\")`, one run, not "
    "in the table).",
    "- **KD on FGSM (+8.4) and BIM-B (−18.1).** The budget explains 8 of BIM-B's 18 points (88.52 at ε 0.4, "
    "88.90 with Ma et al.'s noise; −9.7 from 98.61) and none of FGSM's (84.4–86.5 at ε 0.4, still +6 to +8 over "
    "78.12). On the papers' network, KD (σ 1.20) scores 90.29 / 85.05 on FGSM / BIM-B at ε 0.3 and 91.39 / 91.78 at ε 0.4 (BIM-B −6.8 from 98.61, FGSM +13 over 78.12); Ma et al.'s own bandwidth σ = 3.79 gives 95.67 (FGSM) and 79.89 (BIM-B), further from both figures; KD on BIM-A is below Ma et al.'s 98.14 on both networks (lenet 95.05, the papers' network 91.62 at ε 0.4). Feinman et al.'s own KD+BU figures are matched at ε 0.3 (−2.3 / +0.7 / +1.1) with our "
    "per-image noise; with his preset noise σ, whose clipped copies carry the adversarial L2 (FGSM 6.25 vs "
    "6.17), FGSM's KD+BU falls to 85.13 (−5.4), BIM-A 97.94 and BIM-B 81.36 stay within 1. The FGSM KD gaps "
    "stay unexplained.",
    "- **BU** (Ma et al.'s is below chance on FGM, 32.37, and BIM-b, 25.46; ours is 85 and 50). Neither the budget "
    "nor their noise moves it (ε 0.4 and their σ: FGSM 84.0, BIM-B 47.0 on lenet's dropout variant). Nor does the papers' network sampled through its own two dropout layers (ε 0.4, their σ: FGSM 92.86, BIM-B 44.62). "
    "Below chance would need the noisy copies to vary more under dropout than the adversarial examples; with "
    "their σ they do not, here. No measured explanation for the papers' below-chance BU (nor for the C&W gap, "
    "97.30 vs 71.30; C&W was not re-run under the code settings).",
    "- **The detector network** (\"net\", Metzen et al. 2017) has no MNIST per-attack figure in its paper (CIFAR-10 "
    "and an ImageNet subset), so its rows have no paper column. It separates the large perturbations (FGSM, "
    "BIM-B, PGD: 100) and the boundary attacks from clean images (vs clean 96–99) but flags noisy copies too "
    "(normal + noisy AUC 79–93 on BIM-A, DeepFool, C&W).",
    "- **The recalled figures** still could not be checked against the papers' PDFs; the code facts above are "
    "read from the released repositories. **Ma et al.'s ordering** (LID above KD+BU on every attack) holds here "
    "for FGSM, BIM-A, PGD, DeepFool and C&W, not for BIM-B at k = 20 (on the papers' network at ε 0.4, LID "
    "passes KD+BU on BIM-B only at k = 80: 93.98 vs 93.35).",
]


def _notes(record: dict[str, Any]) -> list[str]:
    """Where ours and the papers' differ by more than 5 points, what the measurements here say about why."""
    auc = {(r["detector"], r["attack"]): r for r in record["rows"]}
    big = [f"{d} {a} ({r['auc'] - r['paper']:+.1f})" for (d, a), r in auc.items()
           if r["paper"] is not None and abs(r["auc"] - r["paper"]) > 5]
    conf = {a: auc[("KD", a)]["adv_conf"] for d, a in auc if d == "KD"}
    t = [r["dropout_train_s"] for r in record["rows"] if r["dropout_train_s"] > 0] or [0.0]
    return ["**Differences over 5 points:** " + (", ".join(big) if big else "none") + ".", "",
            "**The same under each paper's own code settings** (lenet, settings table, k = 20): Ma et al.'s figures (KD, "
            "BU, LID) at ε 0.4 with their noise σ and all positives: " + _gaps("detectors-eps0.4-noise-ma-pos-all.json",
                                                                              {"KD", "BU", "LID"})
            + "; Feinman et al.'s (KD+BU) at ε 0.3 with his noise σ: " + _gaps("detectors-noise-feinman.json", {"KD+BU"})
            + ". On the papers' network trained their way (last table): Ma et al.'s settings "
            + _gaps("detectors-papernet-papers-5ep-eps0.4-noise-ma-pos-all.json", {"KD", "BU", "LID"})
            + "; Feinman et al.'s KD+BU at ε 0.3 (our per-image noise) "
            + _gaps("detectors-papernet-papers-5ep.json", {"KD+BU"}) + ".", "", *NOTES,
            "", "Training BU's dropout variant (5 epochs on the clean set, inside each BU / KD+BU fit): median "
            f"{sorted(t)[len(t) // 2]:.0f} s over {len(t)} fits. Median top-1 softmax of the positives: " + ", ".join(f"{a} {c:.3f}" for a, c in conf.items()) + "."]


def _gaps(file: str, detectors: set[str]) -> str:
    """The (detector, attack) pairs of a saved run that differ from the paper's figure by more than 5 points."""
    path = RESULTS / file
    if not path.exists():
        return "not run"
    rows = [r for r in json.loads(path.read_text())["rows"] if r["detector"] in detectors and r["paper"] is not None]
    big = [f"{r['detector']} {r['attack']} ({r['auc'] - r['paper']:+.1f})" for r in rows if abs(r["auc"] - r["paper"]) > 5]
    return (", ".join(big) if big else "none") + f" ({len(rows) - len(big)} of {len(rows)} within 5)"


def _layer_table(per_layer: dict[str, dict[str, float]]) -> list[str]:
    if not per_layer:
        return []
    names = list(next(iter(per_layer.values())))
    lines = ["Single-layer LID ROC-AUC % (adversarial vs clean, test positives, either sign), one column per layer:", "",
             "| attack | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {a} | " + " | ".join(f"{v[n]:.0f}" for n in names) + " |" for a, v in per_layer.items()]
    return lines


