"""Universal perturbations (UAP) and the universal patch, measured on a shipped classifier (issue 18).

* UAP (Moosavi-Dezfooli et al. 2017, ``advlab.attacks.universal_perturbation``) crafted on the
  first ``--craft`` test images and scored on the next ``--held`` (the paper's fooling rate: the
  share whose prediction changes; and accuracy), at each L∞ and L2 ε; next to a random
  perturbation of the same norm and per-image PGD (40 steps, advlab's ``pgd``) at the same ε on
  the same held-out images. The mean-of-chunk update (``--batch``) runs for every ε, the paper's
  per-image update (batch 1) for ``--paper-passes`` passes at the largest L∞ ε; ``--parts art``
  adds ART's ``UniversalPerturbation`` (the same per-image algorithm) at that ε as a cross-check.
* The universal patch (Brown et al. 2017, ``advlab.attacks.universal_patch``): a disc covering at
  most ``--fractions`` of the image, any position, rotation ±``--rotation``° (180), scale 0.9–1.1, targeted;
  trained on the crafting images, scored on the held-out images (true class ≠ target) at
  ``--draws`` fresh placements each (another seed); next to a grey disc at the same placements, and
  (an ablation) the largest area trained and scored without rotation and at scale 1.

Writes the section ``universal`` (``--section``) of docs/benchmarks.md and docs/figures/<section>.png.

    PYTHONPATH=src python benchmarks/universal.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

from advlab import ThreatModel
from advlab._checks import parse_budget
from advlab.attacks import pgd, universal_patch, universal_perturbation, universal_score
from advlab.attacks.adversarial_patch import Patch, patch_success
from advlab.data import load_dataset
from advlab.lab.images import random_like
from advlab.metrics import acc_at_k, fooling_rate, predict_logits
from advlab.models import load_model

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="lenet-mnist")
    p.add_argument("--data", default="mnist", help="dataset whose test split is used")
    p.add_argument("--craft", type=int, default=2000, help="crafting images: the first of the test split")
    p.add_argument("--held", type=int, default=2000, help="held-out images: the ones after the crafting images")
    p.add_argument("--linf", default="0.1,0.2", help="L∞ budgets (numbers or fractions like 8/255)")
    p.add_argument("--l2", default="3.0", help="L2 budgets")
    p.add_argument("--passes", type=int, default=10, help="max passes of the batched UAP")
    p.add_argument("--batch", type=int, default=32, help="images per DeepFool call of the batched UAP")
    p.add_argument("--paper-passes", type=int, default=1, help="passes of the per-image UAP (0: skip)")
    p.add_argument("--target-rate", type=float, default=0.8)
    p.add_argument("--target", default="0", help="the patch's target class: an index, or a sign's name (speed-80)")
    p.add_argument("--fractions", default="0.1,0.2,0.3", help="patch areas (share of the image)")
    p.add_argument("--patch-steps", type=int, default=1000)
    p.add_argument("--patch-lr", type=float, default=0.05)
    p.add_argument("--patch-schedule", default="constant", choices=("constant", "cosine"),
                   help="Adam's rate: constant, or cosine-annealed to 0")
    p.add_argument("--rotation", type=float, default=180.0, help="the patch's rotation range ±this, degrees")
    p.add_argument("--no-ablation", dest="ablation", action="store_false",
                   help="skip the largest area without rotation and at scale 1")
    p.add_argument("--draws", type=int, default=3, help="held-out placements per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default="uap,patch")
    p.add_argument("--section", default="universal")
    p.add_argument("--no-figure", dest="figure", action="store_false")
    p.add_argument("--no-doc", action="store_true", help="print, do not write docs/benchmarks.md")
    return p.parse_args(argv)


def class_index(spec: str) -> int:
    """A class index from its number or, for the signs, its name (``advlab.data.SIGN_CLASSES``)."""
    if spec.isdigit():
        return int(spec)
    import advlab.data

    names = tuple(getattr(advlab.data, "SIGN_CLASSES", ()))
    if spec not in names:
        raise SystemExit(f"--target: expected a class index or one of {', '.join(names) or '(no named classes)'}")
    return names.index(spec)


def budgets(spec: str) -> list[float]:
    """Comma-separated budgets; each a number or a fraction ``a/b`` (advlab's own parser)."""
    return [parse_budget("budget", item) for item in filter(None, spec.split(","))]


def random_perturbation(norm: str, eps: float, shape: torch.Size, seed: int) -> torch.Tensor:
    """A random perturbation on the ball's surface: random signs × ε (L∞), a Gaussian direction (L2)."""
    return random_like(torch.zeros(shape), ThreatModel(norm, eps), torch.Generator().manual_seed(seed))


def uap_row(args, model, data, norm: str, eps: float, batch: int, passes: int) -> dict:
    xc, xh, yh, yc = data
    t = time.perf_counter()
    v = universal_perturbation(model, xc, None, ThreatModel(norm, eps), max_passes=passes, batch=batch,
                               target_rate=args.target_rate, generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - t
    return {"norm": norm, "eps": eps, "batch": batch, "passes": passes, "seconds": seconds, "v": v,
            "craft": universal_score(model, xc, yc, v), "held": universal_score(model, xh, yh, v),
            "noise": universal_score(model, xh, yh, random_perturbation(norm, eps, v.shape, args.seed + 1))}


def pgd_row(args, model, xh: torch.Tensor, yh: torch.Tensor, norm: str, eps: float) -> dict:
    t = time.perf_counter()
    res = pgd(model, xh, yh, ThreatModel(norm, eps), generator=torch.Generator().manual_seed(args.seed))
    clean, adv = predict_logits(model, xh), predict_logits(model, res.x_adv)
    return {"fool": fooling_rate(clean, adv), "acc": acc_at_k(adv, yh), "seconds": time.perf_counter() - t}


def uap_study(args, model, data) -> list[dict]:
    pairs = [("linf", e) for e in budgets(args.linf)] + [("l2", e) for e in budgets(args.l2)]
    rows = []
    for norm, eps in pairs:
        row = uap_row(args, model, data, norm, eps, args.batch, args.passes)
        row["pgd"] = pgd_row(args, model, data[1], data[2], norm, eps)
        rows.append(row)
        print(f"uap {norm} {eps}: {row['held']} pgd {row['pgd']}", flush=True)
    linf = [eps for norm, eps in pairs if norm == "linf"]
    if args.paper_passes and linf:
        row = uap_row(args, model, data, "linf", max(linf), 1, args.paper_passes)
        rows.append(row)
        print(f"uap per-image linf {max(linf)}: {row['held']}", flush=True)
    return rows


def art_row(args, model, data) -> dict:
    """ART's UniversalPerturbation (its L2 DeepFool, 10 iterations, overshoot 0.02) at the largest L∞ ε, per image."""
    import random

    import numpy as np
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    xc, xh, yh, yc = data
    eps = max(budgets(args.linf))
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(xc.shape[1:]),
                            nb_classes=int(predict_logits(model, xc[:1]).shape[1]), clip_values=(0.0, 1.0))
    random.seed(args.seed)  # ART shuffles with Python's random module
    attack = UniversalPerturbation(clf, attacker="deepfool", attacker_params={"max_iter": 10, "epsilon": 0.02,
                                                                              "verbose": False},
                                   delta=1 - args.target_rate, max_iter=args.paper_passes, eps=eps, norm=np.inf,
                                   verbose=False)
    t = time.perf_counter()
    attack.generate(xc.numpy())
    seconds = time.perf_counter() - t
    v = torch.from_numpy(attack.noise[0]).float()
    return {"norm": "linf", "eps": eps, "batch": "art", "passes": args.paper_passes, "seconds": seconds, "v": v,
            "craft": universal_score(model, xc, yc, v), "held": universal_score(model, xh, yh, v),
            "noise": universal_score(model, xh, yh, random_perturbation("linf", eps, v.shape, args.seed + 1))}


def patch_study(args, model, data) -> list[dict]:
    xc, xh, yh = data[:3]
    rows = []
    fractions = [float(f) for f in args.fractions.split(",")]
    fixed = {"rotation": (0.0, 0.0), "scale": (1.0, 1.0)}
    free = {"rotation": (-args.rotation, args.rotation)}
    ablation = [(max(fractions), fixed)] if args.ablation else []
    for frac, placement in [*((f, free) for f in fractions), *ablation]:
        t = time.perf_counter()
        patch = universal_patch(model, xc, class_index(args.target), size_fraction=frac, steps=args.patch_steps,
                                lr=args.patch_lr, schedule=args.patch_schedule,
                                generator=torch.Generator().manual_seed(args.seed), **placement)
        seconds = time.perf_counter() - t
        grey = replace(patch, image=torch.full_like(patch.image, 0.5))
        scores = {name: patch_success(model, xh, yh, p, draws=args.draws,
                                      generator=torch.Generator().manual_seed(args.seed + 1))
                  for name, p in (("patch", patch), ("grey", grey))}
        train = patch_success(model, xc, data[3], patch, draws=args.draws,
                              generator=torch.Generator().manual_seed(args.seed + 1))
        rows.append({"fraction": frac, "patch": patch, "seconds": seconds, "train": train, "score": scores["patch"],
                     "grey": scores["grey"], "fixed": placement is fixed})
        print(f"patch {frac}: {scores['patch']} train {train.success:.3f} grey {scores['grey'].success:.3f}",
              flush=True)
    return rows


def uap_lines(args, rows: list[dict]) -> list[str]:
    lines = [f"**Universal perturbations** on `{args.model}`: crafted on test images 0–{args.craft - 1} (reference: "
             f"the clean predictions; target rate {args.target_rate:g}), scored on test images {args.craft}–"
             f"{args.craft + args.held - 1}. Fooling rate = share of held-out images whose prediction changes "
             "(Moosavi-Dezfooli et al.); per-image PGD (40 steps, random start) at the same ε on the same images; "
             "random = random signs × ε (L∞) or a random direction of length ε (L2).", "",
             "| norm | ε | update | passes | ‖v‖ | s | fooling (craft) | fooling (held-out) | acc (held-out) | "
             "random fooling | PGD fooling | PGD acc |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        update = {1: "per image (paper)", "art": "ART 1.20 UniversalPerturbation"}.get(r["batch"],
                                                                                   f"mean of {r['batch']}")
        pg = r.get("pgd")
        tail = f"{pg['fool']:.3f} | {pg['acc']:.3f}" if pg else "– | –"
        size = float(r["v"].abs().max() if r["norm"] == "linf" else r["v"].norm())
        lines.append(f"| {r['norm']} | {r['eps']:.4g} | {update} | {r['passes']} | {size:.3f} | {r['seconds']:.0f} | "
                     f"{r['craft'].fooling_rate:.3f} | {r['held'].fooling_rate:.3f} | {r['held'].accuracy:.3f} | "
                     f"{r['noise'].fooling_rate:.3f} | {tail} |")
    clean = rows[0]["held"].clean_accuracy if rows else float("nan")
    return [*lines, "", f"Clean accuracy of the held-out images: {clean:.3f}. ‖v‖ in the row's norm. passes = the cap "
            "`max_passes`; all of them ran wherever the crafting fooling rate is below the target rate."]


def patch_lines(args, rows: list[dict]) -> list[str]:
    lines = [f"**The universal patch** on `{args.model}`, target class {args.target}: a disc, any position "
             f"(its square inside the image), rotation ±{args.rotation:g}°, scale 0.9–1.1{' (last row: neither)' if args.ablation else ''}; Adam (lr "
             f"{args.patch_lr:g}{', cosine-annealed' if args.patch_schedule == 'cosine' else ''}, 32 images per step, "
             f"{args.patch_steps} steps) on the crafting images; success = "
             f"share of (image, placement) trials answering the target, {args.draws} fresh placements (another seed) "
             "per image whose true class is not the target.", "", "| area ≤ | placements | disc width at scale 1 (px) | s | success (held-out) | success "
             "(crafting images) | grey disc (held-out) | held-out trials |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = "no rotation, scale 1" if r["fixed"] else f"rotation ±{args.rotation:g}°, scale 0.9–1.1"
        lines.append(f"| {100 * r['fraction']:g}% | {kind} | {r['patch'].width:.2f} | {r['seconds']:.0f} | "
                     f"{r['score'].success:.3f} | {r['train'].success:.3f} | {r['grey'].success:.3f} | "
                     f"{r['score'].trials} |")
    return lines


def figure(uaps: list[dict], patches: list[dict], xh: torch.Tensor, path: Path) -> bool:
    """The batched UAPs (v in red/blue) and the patches, each on one held-out image; False: nothing to draw."""
    from matplotlib.figure import Figure

    shown = [r for r in uaps if r["batch"] not in (1, "art")]
    n = len(shown) + len(patches)
    if n == 0:
        return False
    fig = Figure(figsize=(1.6 * n, 3.4))
    axes = fig.subplots(2, n, squeeze=False)
    for i, r in enumerate(shown):
        v = r["v"].mean(0)
        axes[0, i].imshow(v.numpy(), cmap="RdBu", vmin=-float(v.abs().max()), vmax=float(v.abs().max()))
        axes[0, i].set_title(f"UAP {r['norm']} {r['eps']:g}", fontsize=8)
        axes[1, i].imshow(xh[0].add(r["v"]).clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0,
                          vmax=1)
    for j, r in enumerate(patches, start=len(shown)):
        p: Patch = r["patch"]
        axes[0, j].imshow((p.image * p.alpha).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"patch {100 * r['fraction']:g}%{' fixed' if r['fixed'] else ''}", fontsize=8)
        cond = p.placements(1, (xh.shape[-2], xh.shape[-1]), generator=torch.Generator().manual_seed(7))
        axes[1, j].imshow(p.paste(xh[:1], cond)[0].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model)
    x, y = load_dataset(args.data, "test")
    xc, yc = x[:args.craft], y[:args.craft]
    xh, yh = x[args.craft:args.craft + args.held], y[args.craft:args.craft + args.held]
    data = (xc, xh, yh, yc)
    parts = set(args.parts.split(","))
    uaps = uap_study(args, model, data) if "uap" in parts else []
    if "art" in parts:
        uaps.append(art_row(args, model, data))
    patches = patch_study(args, model, data) if "patch" in parts else []
    command = "PYTHONPATH=src python benchmarks/universal.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = "\n".join([f"### Universal perturbations and the universal patch ({args.model})", "", f"`{command}`", "",
                      environment(), "", *(uap_lines(args, uaps) if uaps else []), "",
                      *(patch_lines(args, patches) if patches else []), "",
                      f"Wall time {time.perf_counter() - t0:.0f} s."])
    FIGURES.mkdir(parents=True, exist_ok=True)
    if args.figure and figure(uaps, patches, xh, FIGURES / f"{args.section}.png"):
        body += f" Figure: `docs/figures/{args.section}.png`."
    print(body)
    if not args.no_doc:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
