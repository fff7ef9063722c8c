"""Attacks on segmentation and detection, measured on the shipped mnist-scenes models (issue 19).

* DAG on ``segnet-mnist-scenes``, targeted to a fixed pattern: scene i's target is the true label
  map of another test scene (test scene n + i). Scored over the pixels whose target label differs
  from the clean prediction: the share that take the target label, at each L∞ ε.
* The vanishing attack on ``detnet-mnist-scenes`` at L∞ ε = 0.1: recall before and after (and,
  for reference, untargeted PGD on CenterNet's loss through the same loop).
* The hiding patch (28×28 = 8.5% of a 96×96 scene): trained on training scenes, evaluated on held-out
  test scenes at held-out placements beside a chosen digit; the chosen digit's recall without a
  patch, with the trained patch and with a uniform-noise patch at the same places.

Writes the section ``dense-attacks`` of docs/benchmarks.md and two figures under docs/figures/.

    PYTHONPATH=src python benchmarks/dense_attacks.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

from advlab import ThreatModel
from advlab.attacks import DetectionLoss, dag, pgd, vanishing
from advlab.attacks.patch import apply_patch, beside, chosen_recovered, train_patch
from advlab.data import load_dataset
from advlab.metrics_dense import recall
from advlab.models import load_model
from advlab.models.dense import decode

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=200, help="test scenes for DAG and vanishing")
    p.add_argument("--eps", default="0.05,0.1,0.15,0.2,0.3", help="DAG's L∞ budgets (the stripes target)")
    p.add_argument("--eps-scene", default="0.2,0.3", help="DAG's L∞ budgets for another scene's map")
    p.add_argument("--dag-steps", type=int, default=80)
    p.add_argument("--dag-gamma", type=float, default=0.25, help="DAG's step γ as a fraction of ε")
    p.add_argument("--dag-gamma-end", type=float, default=None,
                   help="anneal γ (cosine) to this fraction of ε (default: constant γ)")
    p.add_argument("--patch-train", type=int, default=1000, help="training scenes for the patch")
    p.add_argument("--patch-test", type=int, default=500, help="held-out test scenes for the patch")
    p.add_argument("--patch-steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--parts", default="scene,stripes,detection,patch", help="what to measure")
    p.add_argument("--section", default="dense-attacks", help="the section of docs/benchmarks.md written")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="do not redraw docs/figures/")
    p.add_argument("--no-doc", action="store_true", help="print, do not write docs/benchmarks.md")
    return p.parse_args(argv)


def batched(fn, n: int, size: int) -> list:
    return [fn(slice(i, min(i + size, n))) for i in range(0, n, size)]


def dag_targets(kind: str, n: int, clean: torch.Tensor, y_all: torch.Tensor) -> torch.Tensor:
    """``scene``: the true map of test scene n + i; ``stripes``: the clean digit pixels relabelled in stripes."""
    if kind == "scene":
        return y_all[n: 2 * n]
    stripes = (torch.arange(clean.shape[-1]) // 10 % 10 + 1).view(1, 1, -1).expand_as(clean)
    return torch.where(clean > 0, stripes, torch.zeros_like(clean))


def dag_curve(args: argparse.Namespace, kind: str, eps_list: list[float]) -> tuple[list[dict], dict]:
    """DAG at each ε: the share of the pixels to change that take their target label (and per kind of change)."""
    model = load_model("segnet-mnist-scenes")
    x_all, y_all = load_dataset("mnist-scenes", "test", task="segmentation")
    x, y = x_all[: args.n], y_all[: args.n]
    with torch.no_grad():
        clean = torch.cat(batched(lambda s: model(x[s]).argmax(1), args.n, args.batch))
    target = dag_targets(kind, args.n, clean, y_all)
    todo = target != clean
    kinds = {"bg→digit": todo & (clean == 0), "digit→bg": todo & (target == 0),
             "digit→digit": todo & (clean > 0) & (target > 0)}
    rows, example = [], {"pixels": int(todo.sum()), "kinds": {k: int(v.sum()) for k, v in kinds.items()}}
    for eps in eps_list:
        threat = ThreatModel("linf", eps, targeted=True)
        t0 = time.perf_counter()

        def attack(s: slice, threat: ThreatModel = threat, eps: float = eps) -> torch.Tensor:
            end = None if args.dag_gamma_end is None else args.dag_gamma_end * eps
            return dag(model, x[s], y[s], threat, target=target[s], steps=args.dag_steps,
                       gamma=args.dag_gamma * eps, gamma_end=end).x_adv

        x_adv = torch.cat(batched(attack, args.n, args.batch))
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            pred = torch.cat(batched(lambda s, xa=x_adv: model(xa[s]).argmax(1), args.n, args.batch))
        took = (pred == target) & todo
        per_scene = took.flatten(1).sum(1).float() / todo.flatten(1).sum(1).clamp_min(1)
        rows.append({"eps": eps, "share": float(took.sum()) / float(todo.sum()),
                     "median": float(per_scene.median()), "ge90": float((per_scene >= 0.9).float().mean()),
                     **{k: float((took & v).sum()) / max(1, int(v.sum())) for k, v in kinds.items()},
                     "seconds": seconds})
        print(kind, rows[-1], flush=True)
        if abs(eps - 0.2) < 1e-9:
            example.update({"x": x[:1], "clean": clean[:1], "target": target[:1], "x_adv": x_adv[:1],
                            "adv": pred[:1], "eps": eps})
    return rows, example


def detection_study(args: argparse.Namespace) -> dict:
    """Vanishing (and PGD on CenterNet's loss) at L∞ ε = 0.1: recall before and after."""
    model = load_model("detnet-mnist-scenes")
    x_all, b_all = load_dataset("mnist-scenes", "test", task="detection")
    x, boxes = x_all[: args.n], b_all[: args.n]
    threat = ThreatModel("linf", 0.1)
    out: dict = {}

    def dets(xs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(batched(lambda s: decode(model(xs[s])), len(xs), args.batch))

    out["clean"] = recall(dets(x), boxes)
    for name, run in (("vanishing", lambda s: vanishing(model, x[s], boxes[s], threat,
                                                        generator=torch.Generator().manual_seed(0))),
                      ("pgd", lambda s: pgd(model, x[s], boxes[s], threat, loss=DetectionLoss(),
                                            generator=torch.Generator().manual_seed(0)))):
        t0 = time.perf_counter()
        res = batched(run, args.n, args.batch)
        x_adv = torch.cat([r.x_adv for r in res])
        out[name] = recall(dets(x_adv), boxes)
        out[f"{name}_success"] = float(torch.cat([r.success for r in res]).float().mean())
        out[f"{name}_seconds"] = time.perf_counter() - t0
        print(name, out[name], flush=True)
    return out


def patch_study(args: argparse.Namespace) -> dict:
    """The hiding patch: the chosen digit's recall with no patch, the trained patch, a noise patch."""
    model = load_model("detnet-mnist-scenes").requires_grad_(False)
    xtr, btr = load_dataset("mnist-scenes", "train", task="detection")
    xte, bte = load_dataset("mnist-scenes", "test", task="detection")
    xtr, btr = xtr[: args.patch_train], btr[: args.patch_train]
    xte, bte = xte[-args.patch_test:], bte[-args.patch_test:]  # the last test scenes: none of DAG's
    t0 = time.perf_counter()
    patch = train_patch(model, xtr, btr, size=28, steps=args.patch_steps, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    place = beside(bte, 28, 96)(torch.arange(len(xte)), torch.Generator().manual_seed(1))
    ok = place.positions[:, 0] >= 0
    noise = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(2))
    out = {"placed": int(ok.sum()), "scenes": len(xte), "seconds": seconds}
    images = {"none": xte, "patch": apply_patch(xte, patch, place.positions),
              "noise": apply_patch(xte, noise, place.positions)}
    others = bte.clone()  # every digit but the chosen one: what the patch does to its neighbours
    others[torch.arange(len(xte)), place.chosen.clamp_min(0), 0] = -1.0
    for key, xs in images.items():
        found = torch.cat(batched(lambda s, xs=xs: chosen_recovered(model, xs[s], bte[s], place.__class__(
            place.positions[s], place.chosen[s])), len(xte), args.batch))
        out[key] = float(found[ok].float().mean())
        with torch.no_grad():
            dets = torch.cat(batched(lambda s, xs=xs: decode(model(xs[s])), len(xte), args.batch))
        out[f"{key}_others"] = recall(dets[ok], others[ok])
        print(key, out[key], out[f"{key}_others"], flush=True)
    out["figure"] = {"x": images["none"][:3], "xp": images["patch"][:3], "pos": place.positions[:3],
                     "chosen": place.chosen[:3], "boxes": bte[:3], "model": model, "patch": patch}
    return out


def label_cmap():
    from matplotlib.colors import ListedColormap

    colours = ["#000000", *[__import__("matplotlib").colormaps["tab10"](i) for i in range(10)]]
    return ListedColormap(colours)


def dag_figure(examples: list[tuple[str, dict]], path: Path) -> None:
    """Per target: the scene, the clean map, the target, the adversarial map, the perturbation."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.5 * len(examples)))
    axes = fig.subplots(len(examples), 5, squeeze=False)
    cmap = label_cmap()
    for r, (name, ex) in enumerate(examples):
        d = (ex["x_adv"][0, 0] - ex["x"][0, 0]).numpy()
        panels = [(ex["x"][0, 0].numpy(), "gray", (0, 1), "scene"),
                  (ex["clean"][0].numpy(), cmap, (0, 10), "clean prediction"),
                  (ex["target"][0].numpy(), cmap, (0, 10), f"target: {name}"),
                  (ex["adv"][0].numpy(), cmap, (0, 10), f"DAG's prediction at ε = {ex['eps']:g}"),
                  (d, "RdBu", (-ex["eps"], ex["eps"]), f"perturbation (L∞ {np.abs(d).max():.2f})")]
        for ax, (img, cm, (lo, hi), title) in zip(axes[r], panels, strict=True):
            panel(ax, img, title, cmap=cm, vmin=lo, vmax=hi)
    save(fig, "DAG (Xie et al. 2017) on segnet-mnist-scenes (black: background; colours: digits 0–9)", path)


def panel(ax, img: np.ndarray, title: str, **imshow) -> None:
    ax.imshow(img, interpolation="nearest", **imshow)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, title: str, path: Path) -> None:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_boxes(ax, dets: torch.Tensor, chosen: torch.Tensor | None = None) -> None:
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1, score, cls in dets.tolist():
        if cls < 0:
            continue
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1))
        ax.text(x0, y0 - 1, f"{int(cls)} {score:.2f}", color="lime", fontsize=6)
    if chosen is not None:
        _, x0, y0, x1, y1 = chosen.tolist()
        ax.add_patch(Rectangle((x0 - 1, y0 - 1), x1 - x0 + 2, y1 - y0 + 2, fill=False, color="red", lw=1, ls="--"))


def patch_figure(fig_data: dict, path: Path) -> None:
    """Held-out scenes: detections without the patch and with it (the chosen digit dashed red)."""
    from matplotlib.figure import Figure

    model, k = fig_data["model"], len(fig_data["x"])
    fig = Figure(figsize=(6.6, 3.1 * k))
    axes = fig.subplots(k, 2, squeeze=False)
    with torch.no_grad():
        before, after = decode(model(fig_data["x"])), decode(model(fig_data["xp"]))
    for r in range(k):
        chosen = fig_data["boxes"][r, fig_data["chosen"][r]]
        for ax, img, dets, title in ((axes[r, 0], fig_data["x"], before, "clean: detections"),
                                     (axes[r, 1], fig_data["xp"], after, "with the patch beside the red digit")):
            panel(ax, img[r, 0].numpy(), title, cmap="gray", vmin=0, vmax=1)
            draw_boxes(ax, dets[r], chosen)
    save(fig, "The hiding patch (28×28, 8.5% of the scene) on detnet-mnist-scenes", path)


def dag_table(rows: list[dict], kinds: bool) -> list[str]:
    head = "| L∞ ε | pixels taking the target | median per scene | scenes ≥ 90% |"
    lines = [head + (" bg→digit | digit→bg | digit→digit |" if kinds else "") + " seconds |",
             "|---" * (5 + 3 * kinds) + "|"]
    for r in rows:
        extra = "".join(f" {r[k]:.1%} |" for k in ("bg→digit", "digit→bg", "digit→digit")) if kinds else ""
        lines.append(f"| {r['eps']:g} | {r['share']:.1%} | {r['median']:.1%} | {r['ge90']:.1%} |{extra} "
                     f"{r['seconds']:.0f} |")
    return lines


def report(args: argparse.Namespace, dags: dict, det: dict | None, patch: dict | None) -> str:
    command = " ".join(["PYTHONPATH=src python benchmarks/dense_attacks.py", *args.argv])
    lines = [f"## Attacks on segmentation and detection (issue 19)\n\n{environment()}\n\n`{command}`\n"]
    if dags:
        lines += [f"**DAG, targeted** on `segnet-mnist-scenes`, the first {args.n} test scenes; scored over the "
                  f"pixels whose target differs from the clean prediction. {args.dag_steps} steps of γ = "
                  f"{args.dag_gamma:g}·ε (γ·g/‖g‖∞ on the active pixels)"
                  + ("" if args.dag_gamma_end is None else f", cosine-annealed to {args.dag_gamma_end:g}·ε")
                  + ", projected into the L∞ ε-ball, each scene's answer its iterate with the fewest active "
                  "pixels (advlab's extensions; `dag`'s defaults are the paper's γ = 0.5/255 and 200 steps).\n"]
    if "scene" in dags:
        rows, ex = dags["scene"]
        lines += [f"Target: another scene's map (the true map of test scene {args.n} + i; {ex['pixels']} pixels to "
                  f"change: {', '.join(f'{k} {v}' for k, v in ex['kinds'].items())}):\n", *dag_table(rows, True), ""]
    if "stripes" in dags:
        rows, ex = dags["stripes"]
        lines += ["Target: a fixed pattern on the digits (every clean digit pixel relabelled to digit ⌊column/10⌋ "
                  f"mod 10, vertical stripes; background kept; {ex['pixels']} pixels to change):\n",
                  *dag_table(rows, False), ""]
    if det is not None:
        lines += [f"**Detection** on `detnet-mnist-scenes`, {args.n} test scenes, L∞ ε = 0.1, recall at IoU 0.5 "
                  "(decode threshold 0.3):", "", "| attack | recall | examples with success | seconds |",
                  "|---|---|---|---|", f"| none | {det['clean']:.3f} | | |",
                  f"| vanishing (40 PGD steps, hinge on every heat-map logit) | {det['vanishing']:.3f} | "
                  f"{det['vanishing_success']:.1%} | {det['vanishing_seconds']:.0f} |",
                  f"| pgd, loss = DetectionLoss() (40 steps) | {det['pgd']:.3f} | {det['pgd_success']:.1%} | "
                  f"{det['pgd_seconds']:.0f} |", ""]
    if patch is not None:
        lines += patch_lines(args, patch)
    return "\n".join(lines)


def patch_lines(args: argparse.Namespace, patch: dict) -> list[str]:
    return [f"**The hiding patch** (28×28 = 8.5% of the scene), trained {args.patch_steps} Adam steps (batch 32, "
            f"lr 0.05) on {args.patch_train} training scenes ({patch['seconds']:.0f} s); held out: the last "
            f"{patch['scenes']} test scenes, placements drawn with another seed ({patch['placed']} placed). "
            "Recall (IoU 0.5, same class) of the digit beside the patch, and of the scene's other digits (the "
            "patch may cover some of them):", "", "| patch | chosen digit | other digits |", "|---|---|---|",
            *[f"| {name} | {patch[key]:.3f} | {patch[key + '_others']:.3f} |" for name, key in
              (("none", "none"), ("uniform noise, same size and places", "noise"), ("trained", "patch"))], "",
            f"Drop: {100 * (patch['none'] - patch['patch']):.1f} points (noise: "
            f"{100 * (patch['none'] - patch['noise']):.1f}). Figures: `docs/figures/dag-segmentation.png`, "
            "`docs/figures/hiding-patch.png`."]


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    dags = {kind: dag_curve(args, kind, [float(e) for e in eps.split(",")])
            for kind, eps in (("scene", args.eps_scene), ("stripes", args.eps)) if kind in parts}
    det = detection_study(args) if "detection" in parts else None
    patch = patch_study(args) if "patch" in parts else None
    FIGURES.mkdir(parents=True, exist_ok=True)
    shown = [(name, dags[kind][1]) for kind, name in (("scene", "another scene's map"),
                                                      ("stripes", "stripes on the digits"))
             if kind in dags and "x" in dags[kind][1]]
    if shown and args.figures:
        dag_figure(shown, FIGURES / "dag-segmentation.png")
    if patch is not None and args.figures:
        patch_figure(patch.pop("figure"), FIGURES / "hiding-patch.png")
    body = report(args, dags, det, patch) + f"\n\nWall time {time.perf_counter() - t0:.0f} s."
    print(body)
    if not args.no_doc:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
