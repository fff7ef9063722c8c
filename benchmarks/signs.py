"""The signs world (issue 18): how long the dataset takes to generate, and signnet's accuracy per lab cell.

* Generation: both splits of ``load_dataset("signs")`` generated from scratch (the per-process cache
  cleared) with each of ``--gen-threads`` torch threads set (the generator itself runs on one thread
  and restores the setting): wall and CPU seconds per split, and a digest of each split's bytes.
* signnet: test Acc@1 of the shipped ``signnet-signs``, and its accuracy in every cell of the lab grid
  (``advlab.physical.lab_grid(draws=3)``: width 40/32/24/16 px × viewing angle 0/15/30/45° × light
  0.6/1.0/1.4, three held-out draws of the rest per cell): every class's canonical sign rendered at
  every lab row on each of ``--backgrounds`` held-out backgrounds (a seed no split uses), classified.
  A cell's accuracy is over 3 draws × 12 classes × the backgrounds.

Writes the section ``signs`` of docs/benchmarks.md and the figures docs/figures/signs-examples.png
(test images per class) and docs/figures/signs-lab.png (one sign at every lab cell).

    PYTHONPATH=src python benchmarks/signs.py --threads 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

from advlab.data import load_dataset
from advlab.data import signs as signs_mod
from advlab.data.sign_art import SIGN_CLASSES, all_signs
from advlab.data.sign_backgrounds import make_backgrounds
from advlab.metrics import clean_accuracy
from advlab.models import load_model
from advlab.physical import LAB, Conditions, lab_grid, render

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
LAB_BACKGROUND_SEED = 18_777  # used by no split


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads for the model passes")
    p.add_argument("--gen-threads", default="2", help="thread counts to time the generation at, e.g. 1,2")
    p.add_argument("--model", default="signnet-signs")
    p.add_argument("--backgrounds", type=int, default=6,
                   help="held-out backgrounds per lab row and class (6: one of each kind)")
    p.add_argument("--draws", type=int, default=3, help="lab draws per cell")
    p.add_argument("--parts", default="generation,accuracy,lab,figures")
    p.add_argument("--no-doc", action="store_true", help="print, do not write docs/benchmarks.md")
    return p.parse_args(argv)


def time_generation() -> dict[str, tuple[float, float, str]]:
    """Wall and CPU seconds to generate each split from scratch, and the SHA-256 (first 12 hex) of its bytes."""
    out = {}
    for split in ("train", "test"):
        signs_mod.signs_split.cache_clear()
        t, c = time.perf_counter(), time.process_time()
        x, y = signs_mod.signs_split(split)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:12]
        out[split] = (wall, cpu, digest)
    return out


def generation_lines(thread_counts: list[int]) -> list[str]:
    """Time the generation at each thread count; one line each, with the load average around it."""
    lines = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0]
        gen = time_generation()
        total = sum(w for w, _, _ in gen.values())
        lines += [f"- Generation with {threads} torch thread(s) set, from scratch: "
                  + "; ".join(f"{s} ({signs_mod.SIGNS[s]} images, sha256 {h}…) {w:.1f} s wall / {c:.1f} s CPU"
                              for s, (w, c, h) in gen.items())
                  + f"; **both splits {total:.1f} s wall** (load average {load:.1f} → {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} cores)."]
        print(lines[-1], flush=True)
    return [*lines, ""]


def lab_rows(draws: int, backgrounds: int) -> tuple[Conditions, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (lab row, class, background): conditions, class, background index, and the lab cell index."""
    cond, cell = lab_grid(draws)
    n, k, b = cond.rows, len(SIGN_CLASSES), backgrounds
    row = torch.arange(n).repeat_interleave(k * b)
    cls = torch.arange(k).repeat_interleave(b).repeat(n)
    bg = torch.arange(b).repeat(n * k)
    return cond.select(row), cls, bg, cell[row]


def lab_accuracy(model: torch.nn.Module, draws: int, backgrounds: int, batch: int = 512) -> torch.Tensor:
    """Accuracy per lab cell, a widths × angles × lights tensor."""
    cond, cls, bg, cell = lab_rows(draws, backgrounds)
    signs, bgs = all_signs(), make_backgrounds(backgrounds, seed=LAB_BACKGROUND_SEED)
    g = torch.Generator().manual_seed(LAB_BACKGROUND_SEED)
    right = torch.empty(len(cls))
    with torch.no_grad():
        for i in range(0, len(cls), batch):
            s = slice(i, min(i + batch, len(cls)))
            x = render(signs[cls[s]], bgs[bg[s]], cond.select(s), generator=g)
            right[s] = (model(x).argmax(1) == cls[s]).float()
    shape = (len(LAB["widths"]), len(LAB["angles"]), len(LAB["lights"]))
    flat = cell[:, 0] * shape[1] * shape[2] + cell[:, 1] * shape[2] + cell[:, 2]
    total = torch.zeros(shape[0] * shape[1] * shape[2]).index_add_(0, flat, right)
    count = torch.zeros_like(total).index_add_(0, flat, torch.ones_like(right))
    return (total / count).view(shape)


def lab_table(acc: torch.Tensor) -> list[str]:
    """One Markdown table per light level: widths down, angles across."""
    lines = []
    for li, light in enumerate(LAB["lights"]):
        lines += [f"Light ×{light:g}:", "", "| width \\ angle | " + " | ".join(f"{a:g}°" for a in LAB["angles"]) + " |",
                  "|---|" + "---:|" * len(LAB["angles"])]
        for wi, w in enumerate(LAB["widths"]):
            lines.append(f"| {w:g} px | " + " | ".join(f"{float(acc[wi, ai, li]):.3f}" for ai in
                                                     range(len(LAB["angles"]))) + " |")
        lines.append("")
    return lines


def examples_figure(path: Path, per_class: int = 6) -> None:
    """Test images, one column per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = load_dataset("signs", "test")
    fig, ax = plt.subplots(per_class, len(SIGN_CLASSES), figsize=(1.2 * len(SIGN_CLASSES), 1.25 * per_class))
    for c, name in enumerate(SIGN_CLASSES):
        for r, i in enumerate((y == c).nonzero()[:per_class, 0].tolist()):
            ax[r, c].imshow(x[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax[r, c].axis("off")
        ax[0, c].set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def lab_figure(path: Path, cls: str = "stop") -> None:
    """One sign at every lab cell (first draw, first held-out background): widths down, angles × lights across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cond, cell = lab_grid(1)
    bgs = make_backgrounds(1, seed=LAB_BACKGROUND_SEED)
    x = render(all_signs()[SIGN_CLASSES.index(cls)][None], bgs.expand(cond.rows, -1, -1, -1), cond,
               generator=torch.Generator().manual_seed(0))
    nw, na, nl = len(LAB["widths"]), len(LAB["angles"]), len(LAB["lights"])
    fig, ax = plt.subplots(nw, na * nl, figsize=(1.0 * na * nl, 1.1 * nw))
    for i in range(cond.rows):
        w, a, li = cell[i].tolist()
        axis = ax[w, li * na + a]
        axis.imshow(x[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        if w == 0:
            axis.set_title(f"{LAB['angles'][a]:g}° ×{LAB['lights'][li]:g}", fontsize=7)
        if li == 0 and a == 0:
            axis.set_ylabel(f"{LAB['widths'][w]:g} px", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    command = " ".join(["PYTHONPATH=src python benchmarks/signs.py", *(argv if argv is not None else sys.argv[1:])])
    lines = ["## signs: generation and signnet per lab cell", "", environment(), "", f"Command: `{command}`", ""]
    if "generation" in parts:
        lines += generation_lines([int(t) for t in args.gen_threads.split(",")])
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if "accuracy" in parts:
        x, y = load_dataset("signs", "test")
        acc1, acc5 = clean_accuracy(model, x, y)
        lines += [f"`{args.model}` on the test split ({len(y)} images): Acc@1 {acc1:.4f}, Acc@5 {acc5:.4f}.", ""]
        print(lines[-2], flush=True)
    if "lab" in parts:
        acc = lab_accuracy(model, args.draws, args.backgrounds)
        start = len(lines)
        worst = divmod(int(acc.flatten().argmin()), acc.shape[2])
        lines += [f"Lab grid (`lab_grid(draws={args.draws})`, {len(SIGN_CLASSES)} classes × {args.backgrounds} "
                  f"held-out backgrounds: {args.draws * len(SIGN_CLASSES) * args.backgrounds} images per cell): "
                  f"mean {float(acc.mean()):.3f}, worst cell {float(acc.min()):.3f} (width "
                  f"{LAB['widths'][worst[0] // acc.shape[1]]:g} px, angle {LAB['angles'][worst[0] % acc.shape[1]]:g}°, "
                  f"light ×{LAB['lights'][worst[1]]:g}); cells ≥ 0.90: {int((acc >= 0.9).sum())} of {acc.numel()}.",
                  "", *lab_table(acc)]
        print("\n".join(lines[start:]), flush=True)
    if "figures" in parts:
        FIGURES.mkdir(exist_ok=True)
        examples_figure(FIGURES / "signs-examples.png")
        lab_figure(FIGURES / "signs-lab.png")
    if not args.no_doc:
        write_section("signs", "\n".join(lines))


if __name__ == "__main__":
    main()
