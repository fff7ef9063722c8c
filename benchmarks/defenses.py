"""Training-defense acceptance runs (issue 6) on MNIST, LeNet-5, seed 0.

    python benchmarks/defenses.py negative    # negative-image sweep: from scratch and fine-tuned
    python benchmarks/defenses.py distill     # defensive distillation at T=100: FGSM/PGD vs CW
    python benchmarks/defenses.py parseval    # Parseval: largest singular values and robustness
    python benchmarks/defenses.py all

Each part writes benchmarks/results/defenses-<part>.json and its section of docs/defenses.md
(the negative-image sweep also docs/figures/negative-sweep.png). Options: --threads, --epochs.
Every model is trained through advlab's own loop (advlab.train.fit with a training defense),
exactly as `advlab train --defense ...` does.
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
from advlab.defenses import distill, make_training_defense, spectral_norms
from advlab.metrics import clean_accuracy, predict_logits
from advlab.models import create_model
from advlab.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
SEED = 0


def _save(part: str, record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"defenses-{part}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _lenet() -> torch.nn.Module:
    return create_model("lenet", in_shape=(1, 28, 28), num_classes=10)


def _robust_acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float,
                **params: object) -> float:
    gen = torch.Generator().manual_seed(SEED)
    out = []
    for i in range(0, len(x), 500):
        res = get_attack(attack)(model, x[i : i + 500], y[i : i + 500], advlab.ThreatModel("linf", eps),
                                 generator=gen, **params)
        out.append(res.x_adv)
    return float((predict_logits(model, torch.cat(out)).argmax(1) == y).float().mean())


def part_negative(epochs: int) -> None:
    """Accuracy on regular and negative test images against the number of negative training images."""
    train = advlab.load_dataset("mnist", "train")
    xte, yte = advlab.load_dataset("mnist", "test")
    counts = [0, 300, 1000, 3000, 10000, 60000]
    rows = []
    for mode in ("scratch", "fine-tune"):
        for count in counts:
            t0 = time.perf_counter()
            if mode == "scratch":
                model = _lenet()
                cfg = TrainConfig(epochs=epochs, seed=SEED)
                fit(model, train, None, cfg, defense=make_training_defense("negative", count=count), progress=False)
            else:
                model = advlab.load_model("lenet-mnist")
                cfg = TrainConfig(epochs=1, lr=5e-4, seed=SEED)
                fit(model, train, None, cfg, defense=make_training_defense("negative", count=count),
                    progress=False, init_seed=False)
            regular = clean_accuracy(model, xte, yte)[0]
            negative = clean_accuracy(model, 1 - xte, yte)[0]
            rows.append({"mode": mode, "negatives": count, "acc1_regular": regular, "acc1_negative": negative,
                         "epochs": cfg.epochs, "lr": cfg.lr, "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    _save("negative", {"environment": environment(), "rows": rows})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for mode, style in (("scratch", "-"), ("fine-tune", "--")):
        pts = [r for r in rows if r["mode"] == mode]
        xs = [max(r["negatives"], 100) for r in pts]
        ax.plot(xs, [r["acc1_regular"] for r in pts], style + "o", color="tab:blue", label=f"regular test, {mode}")
        ax.plot(xs, [r["acc1_negative"] for r in pts], style + "s", color="tab:red", label=f"negative test, {mode}")
    ax.set_xscale("log")
    ax.set_xlabel("negative training images (0 plotted at 100)")
    ax.set_ylabel("Acc@1 (full MNIST test split)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("LeNet-5 on MNIST: negative-image training (Hosseini et al. 2017)")
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIGURES / "negative-sweep.png", dpi=110)
    table = ["| mode | negative training images | Acc@1 regular | Acc@1 negative (= under the semantic attack) | s |",
             "|---|---|---|---|---|"]
    table += [f"| {r['mode']} | {r['negatives']} | {r['acc1_regular']:.4f} | {r['acc1_negative']:.4f} | {r['seconds']} |"
              for r in rows]
    write_defenses_section("negative", "\n".join([
        "## Negative-image training", "",
        f"`python benchmarks/defenses.py negative --epochs {epochs}` · {environment()}", "",
        f"From scratch: LeNet-5, {epochs} epochs, Adam 2e-3. Fine-tuned: the shipped lenet-mnist, 1 epoch, Adam 5e-4.",
        "Both on the 60 000 training images plus the negatives of `count` of them (same labels).",
        "", *table, "", "![negative-image sweep](figures/negative-sweep.png)",
    ]))


def part_distill(epochs: int, temperature: float = 100.0, n: int = 1000) -> None:
    """Distillation at T: naive FGSM/PGD look strong (masked gradients); CW still succeeds."""
    train = advlab.load_dataset("mnist", "train")
    xte, yte = advlab.load_dataset("mnist", "test")
    cfg = TrainConfig(epochs=epochs, seed=SEED)
    t0 = time.perf_counter()
    student, teacher = _lenet(), _lenet()
    res, tres = distill(teacher, student, train, (xte, yte), cfg, temperature=temperature)
    seconds = time.perf_counter() - t0
    plain = advlab.load_model("lenet-mnist")
    x, y = xte[:n], yte[:n]
    record: dict = {"environment": environment(), "temperature": temperature, "epochs": epochs, "n": n,
                    "seconds": round(seconds, 1), "student_acc1": res.acc1,
                    "teacher_acc1": tres.acc1 if tres else None, "models": {}}
    inf = advlab.ThreatModel("l2", float("inf"))
    for name, model in (("lenet-mnist (undefended)", plain), (f"distilled T={temperature:g}", student)):
        row = {
            "clean": clean_accuracy(model, x, y)[0],
            "fgsm@0.3": _robust_acc(model, x, y, "fgsm", 0.3),
            "pgd40@0.3": _robust_acc(model, x, y, "pgd", 0.3, steps=40, step_size=0.01),
        }
        gen = torch.Generator().manual_seed(SEED)
        cw = torch.cat([get_attack("cw")(model, x[i : i + 500], y[i : i + 500], inf, generator=gen).x_adv
                        for i in range(0, n, 500)])
        pred = predict_logits(model, cw).argmax(1)
        d = (cw - x).flatten(1).norm(dim=1)
        ok = pred != y
        row["cw_success"] = float(ok.float().mean())
        row["cw_median_l2"] = float(d[ok].median()) if ok.any() else None
        record["models"][name] = row
        print(name, row, flush=True)
    _save("distill", record)
    lines = ["| model | clean Acc@1 | FGSM ε=0.3 Acc@1 | PGD-40 ε=0.3 Acc@1 | CW-L2 success | CW median L2 |",
             "|---|---|---|---|---|---|"]
    for name, r in record["models"].items():
        lines.append(f"| {name} | {r['clean']:.3f} | {r['fgsm@0.3']:.3f} | {r['pgd40@0.3']:.3f} | "
                     f"{r['cw_success']:.3f} | {r['cw_median_l2']:.3f} |")
    write_defenses_section("distill", "\n".join([
        "## Defensive distillation", "",
        f"`python benchmarks/defenses.py distill --epochs {epochs}` · {environment()}", "",
        f"Teacher and student LeNet-5 at T = {temperature:g}, {epochs} epochs each ({record['seconds']} s); "
        f"teacher Acc@1 {record['teacher_acc1']:.4f}, student (deployed at T = 1) {record['student_acc1']:.4f} "
        f"on the full test split. Attacks on the first {n} test images:", "", *lines, "",
        "FGSM and PGD with the cross-entropy loss see a saturated softmax (logits about T times larger), so their",
        "gradients vanish and the model looks robust; CW's margin loss on the logits is unaffected.",
    ]))


def part_parseval(epochs: int, beta: float = 0.003, n: int = 1000) -> None:
    """Largest singular values before/after and the robustness change, both reported."""
    train = advlab.load_dataset("mnist", "train")
    xte, yte = advlab.load_dataset("mnist", "test")
    cfg = TrainConfig(epochs=epochs, seed=SEED)
    models = {}
    for name, defense in (("plain", None), (f"parseval β={beta:g}", make_training_defense("parseval", retraction=beta))):
        m = _lenet()
        r = fit(m, train, (xte, yte), cfg, defense=defense, progress=False)
        models[name] = (m, r)
    x, y = xte[:n], yte[:n]
    inf = advlab.ThreatModel("l2", float("inf"))
    record: dict = {"environment": environment(), "epochs": epochs, "beta": beta, "n": n, "models": {}}
    for name, (m, r) in models.items():
        df = get_attack("deepfool")(m, x, y, inf)
        d = (df.x_adv - x).flatten(1).norm(dim=1)
        row = {
            "clean_acc1": r.acc1, "train_seconds": round(r.seconds, 1),
            "spectral_norms": [round(s, 4) for s in spectral_norms(m)],
            **{f"fgsm@{e}": _robust_acc(m, x, y, "fgsm", e) for e in (0.1, 0.2)},
            **{f"pgd40@{e}": _robust_acc(m, x, y, "pgd", e, steps=40, step_size=0.01) for e in (0.1, 0.2)},
            "deepfool_median_l2": float(d[df.success].median()),
        }
        record["models"][name] = row
        print(name, row, flush=True)
    _save("parseval", record)
    lines = ["| training | clean Acc@1 | largest singular value per layer (conv1, conv2, fc1, fc2) | FGSM ε=0.1 | "
             "FGSM ε=0.2 | PGD-40 ε=0.1 | PGD-40 ε=0.2 | DeepFool median L2 |", "|---|---|---|---|---|---|---|---|"]
    for name, r in record["models"].items():
        lines.append(f"| {name} | {r['clean_acc1']:.4f} | {', '.join(f'{s:.2f}' for s in r['spectral_norms'])} | "
                     f"{r['fgsm@0.1']:.3f} | {r['fgsm@0.2']:.3f} | {r['pgd40@0.1']:.3f} | {r['pgd40@0.2']:.3f} | "
                     f"{r['deepfool_median_l2']:.3f} |")
    write_defenses_section("parseval", "\n".join([
        "## Parseval regularisation", "",
        f"`python benchmarks/defenses.py parseval --epochs {epochs}` · {environment()}", "",
        f"LeNet-5, {epochs} epochs, same seed, with and without the Parseval retraction (β = {beta:g}) on every layer "
        f"but the output layer. Attacks on the first {n} test images.", "", *lines,
    ]))


PARTS = {"negative": part_negative, "distill": part_distill, "parseval": part_parseval}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("part", choices=[*PARTS, "all"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name, fn in PARTS.items():
        if args.part in (name, "all"):
            fn(args.epochs)


if __name__ == "__main__":
    main()
