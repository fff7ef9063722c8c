"""advlab.physical measured: the EOT pipeline's speed and accuracy, and Kurakin's print-and-photo experiment.

    python benchmarks/physical.py speed --threads 1,2          # section "physical" of docs/benchmarks.md
    python benchmarks/physical.py print-photo --threads 1      # section "print-photo"
    python benchmarks/physical.py eot --threads 1 --draws 10   # section "physical-eot"

``speed``: a 4×64×64 RGBA object rendered onto N 48×48 RGB backgrounds at conditions freshly drawn
from ``TransformDistribution.signs(48)`` (the EOT loop of a sticker or patch attack), forward and
forward + backward with respect to the object (what RP2 and the patch do each step), and
``transform_images`` of N 48×48 images at ``TransformDistribution.image()`` (whole-image EOT).
"before" is the lead's first version (src/advlab/physical/render.py at commit dbb7421, read from git) at its default
supersample=2; "after" is the package at its default (mip pre-filter, supersample=1). Variants
are interleaved repeat by repeat; medians of wall-clock images per second and of CPU seconds per
1 000 images (the latter is what a busy machine changes least). Accuracy: the mean absolute
pixel error of each variant against the before-version at supersample=8 (a box filter over 64
bilinear samples per pixel), on a smooth sign-like object and on a random-noise sticker.

``print-photo``: lenet-mnist on the first 1 000 MNIST test images it classifies correctly (and
signnet-signs on signs test images if that model is shipped), FGSM and BIM (Kurakin et al.'s
step 1/255 and min(255ε + 4, 1.25·255ε) steps) at each ε, clean and adversarial images through
the same simulated prints and photos, Kurakin's destruction rate; then the same rates split by how
deep the adversarial examples were in the wrong class before the photo (logit margin), and how
much of each perturbation a 0.5-pixel blur keeps.

``eot``: PGD on lenet-mnist with the plain gradient and through ``eot_grad_fn``, scored by
``Transformed`` (the model under held-out random transformations).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab import ThreatModel
from advlab.attacks import eot_grad_fn, fgsm, pgd
from advlab.lab.images import DESTRUCTION_HEAD, MARGIN_BINS, bim_paper, destruction_rows, margin_head, margin_rows
from advlab.physical import (
    PhotoRun,
    TransformDistribution,
    Transformed,
    blur,
    print_photo_runs,
    render,
    summarise,
    transform_images,
)

SIZE = 48


BEFORE = ("dbb7421", "src/advlab/physical/render.py")  # the first renderer, the speed comparison's "before"


def _before() -> types.ModuleType:
    """The first renderer, read from git history (it imports only advlab.physical.conditions, unchanged since)."""
    rev, path = BEFORE
    text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=Path(__file__).resolve().parent, check=True,
                          capture_output=True, text=True).stdout
    module = types.ModuleType("advlab_physical_before")
    exec(compile(text, f"{rev}:{path}", "exec"), module.__dict__)
    return module


before = _before()


def sign_like(side: int = 64) -> torch.Tensor:
    """A smooth test object: a red disc with a white ring and dark bars (a sign's kind of detail), RGBA."""
    t = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    r = (xx ** 2 + yy ** 2).sqrt()
    alpha = (1 - r).mul(side / 2).clamp(0, 1)
    ring = ((r > 0.7) & (r < 0.85)).float()
    bars = ((xx.abs() < 0.5) & (((yy + 0.3).abs() < 0.08) | ((yy - 0.2).abs() < 0.08))).float()
    red = torch.stack([torch.full_like(r, 0.8), torch.full_like(r, 0.1), torch.full_like(r, 0.1)])
    rgb = red * (1 - ring) + ring - red * bars * 0.9
    return torch.cat([rgb.clamp(0, 1), alpha[None]])[None]


def noise_sticker(side: int = 64, seed: int = 0) -> torch.Tensor:
    """The worst case for aliasing: independent random texels, opaque."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(1, 3, side, side, generator=g), torch.ones(1, 1, side, side)], 1)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _cases(n: int, seed: int) -> dict[str, Callable[[bool], Callable[[], object]]]:
    """name → (backward?) → a call; conditions are drawn inside each call, as in an EOT step."""
    g = torch.Generator().manual_seed(seed)
    obj = noise_sticker(seed=seed)
    bg = torch.rand(n, 3, SIZE, SIZE, generator=g)
    images = torch.rand(n, 3, SIZE, SIZE, generator=g)
    signs, image = TransformDistribution.signs(SIZE), TransformDistribution.image()

    def paste(fn: Callable[..., torch.Tensor], **kw: int) -> Callable[[bool], Callable[[], object]]:
        def make(backward: bool) -> Callable[[], object]:
            def call() -> object:
                o = obj.clone().requires_grad_(backward)
                with torch.set_grad_enabled(backward):
                    out = fn(o, bg, signs.sample(n, SIZE, generator=g), generator=g, **kw)
                    if backward:
                        out.sum().backward()
                return out
            return call
        return make

    def whole(fn: Callable[..., torch.Tensor]) -> Callable[[bool], Callable[[], object]]:
        def make(backward: bool) -> Callable[[], object]:
            def call() -> object:
                x = images.clone().requires_grad_(backward)
                with torch.set_grad_enabled(backward):
                    out = fn(x, image.sample(n, SIZE, relative_width=True, generator=g), generator=g)
                    if backward:
                        out.sum().backward()
                return out
            return call
        return make

    return {"render, before (supersample 2)": paste(before.render, supersample=2),
            "render, after (mip, supersample 1)": paste(render),
            "transform_images, before": whole(before.transform_images),
            "transform_images, after": whole(transform_images)}


def _speed_rows(n: int, repeats: int, seed: int) -> list[str]:
    cases = _cases(n, seed)
    calls = {(name, bwd): make(bwd) for name, make in cases.items() for bwd in (False, True)}
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {k: [] for k in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for key, call in calls.items():
            times[key].append(_timed(call))
    rows = []
    for name in cases:
        cells = []
        for bwd in (False, True):
            wall = statistics.median(t for t, _ in times[(name, bwd)])
            cpu = statistics.median(c for _, c in times[(name, bwd)])
            cells += [f"{n / wall:,.0f}", f"{cpu / n * 1000:.2f}"]
        rows.append(f"| {torch.get_num_threads()} | {name} | " + " | ".join(cells) + " |")
    return rows


def _accuracy_rows(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.5 + 0.25
    cond = TransformDistribution.signs(SIZE).sample(n, SIZE, generator=g)
    cond = cond._replace(blur=torch.zeros(n), noise=torch.zeros(n))  # the geometry alone
    variants = {"before, supersample 1": lambda o: before.render(o, bg, cond, supersample=1),
                "before, supersample 2 (its default)": lambda o: before.render(o, bg, cond, supersample=2),
                "after, supersample 1 (its default)": lambda o: render(o, bg, cond),
                "after, supersample 2": lambda o: render(o, bg, cond, supersample=2)}
    rows = []
    objects = {"sign-like": sign_like(), "noise sticker": noise_sticker(seed=seed + 1)}
    refs = {k: before.render(o, bg, cond, supersample=8) for k, o in objects.items()}
    small = cond.width < 24
    for label, fn in variants.items():
        cells = []
        for key, obj in objects.items():
            err = (fn(obj) - refs[key]).abs().mean((1, 2, 3))
            cells += [f"{err.mean() * 255:.2f}", f"{err[small].mean() * 255:.2f}"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def speed(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += _speed_rows(args.n, args.repeats, args.seed)
        print("\n".join(rows[-4:]), flush=True)
    load_after = os.getloadavg()[0]
    accuracy = _accuracy_rows(args.n, args.seed)
    print("\n".join(accuracy))
    body = "\n".join([
        "## advlab.physical: the EOT pipeline's speed (issue 18)", "",
        f"`python benchmarks/physical.py speed --threads {','.join(map(str, args.threads))} --n {args.n} "
        f"--repeats {args.repeats}` — {args.n} images per call: a 4×64×64 RGBA sticker rendered onto 48×48 RGB "
        "backgrounds at conditions drawn in the call from `TransformDistribution.signs(48)`, and whole 48×48 "
        "images through `transform_images` at `TransformDistribution.image()`; forward only, and forward + "
        "backward with respect to the object (images). Median of "
        f"{args.repeats} interleaved repeats. Load average {load:.1f} when it started, {load_after:.1f} when it "
        f"ended, on {os.cpu_count()} cores: the machine is shared, so the wall-clock figures are the noisy ones, "
        f"and the CPU seconds the steadier. {environment()}.",
        "", "| threads | pipeline | forward img/s | forward CPU s / 1 000 img | fwd + bwd img/s "
        "| fwd + bwd CPU s / 1 000 img |", "|---|---|---|---|---|---|", *rows, "",
        "Accuracy of the geometry (no blur or noise), mean absolute error in 8-bit levels against the "
        f"before-version at supersample 8, over the same {args.n} conditions (and over those with the sign "
        "narrower than 24 px):", "",
        "| variant | sign-like | sign-like, < 24 px | noise sticker | noise sticker, < 24 px |",
        "|---|---|---|---|---|", *accuracy, "",
        "What the after-version does (src/advlab/physical/camera.py): the object is pre-filtered (antialiased "
        "`F.interpolate`) to a half-octave mip level per axis and row, chosen from the homography's Jacobian at "
        "the object's largest corner; all levels sit in one atlas sampled by one `grid_sample` call for every "
        "row, on a grid computed by one batched matrix product (the atlas placement folded into H⁻¹); the "
        "photometry's contrast, light and colour are one multiply-add, and the blur is two batched products with "
        "banded matrices (replicate padding folded in). One bilinear sample per pixel from the right level "
        "avoids aliasing (the small-sign columns) at the cost of a slightly softer image than an 8×8 "
        "supersampled box filter where the sign is large.",
    ])
    write_section("physical", body)


def _subjects(n: int) -> list[tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor, tuple[float, ...]]]:
    """(model name, model, the first n test images it classifies correctly, labels, ε list) per model."""
    out = []
    for model_name, data, eps in (("lenet-mnist", "mnist", (0.05, 0.1, 0.2, 0.3)),
                                  ("signnet-signs", "signs", (0.05, 0.1, 0.2))):
        try:
            model = advlab.load_model(model_name)
            x, y = advlab.load_dataset(data, "test")
        except (ValueError, FileNotFoundError, KeyError) as err:
            print(f"{model_name}: skipped ({str(err).splitlines()[0]})", flush=True)
            continue
        with torch.no_grad():
            ok = torch.cat([model(x[i:i + 500]).argmax(1) == y[i:i + 500] for i in range(0, min(len(x), 3 * n), 500)])
        keep = ok.nonzero()[:n, 0]
        out.append((model_name, model, x[keep], y[keep], eps))
    return out


def _evidence(runs: list[PhotoRun], x: torch.Tensor) -> tuple[list[str], list[str]]:
    """Destruction by margin bin (pooled over ε) per attack; and the share of each perturbation a 0.5 px blur keeps."""
    blur_rows = []
    for r in runs[1:]:
        delta = (r.x_adv - x).flatten(1)
        kept = blur(r.x_adv - x, torch.full((len(x),), 0.5)).flatten(1).norm(dim=1) / delta.norm(dim=1).clamp_min(1e-12)
        blur_rows.append(f"| {r.attack} | {r.eps:g} | {float(kept.mean()):.3f} | {float(delta.abs().mean()):.4f} |")
    return [_md_row(row) for row in margin_rows(runs)], blur_rows


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_photo_section(args: argparse.Namespace) -> None:
    parts = []
    for name, model, x, y, eps in _subjects(args.images):
        t0 = time.perf_counter()
        runs = print_photo_runs(model, x, y, eps, {"FGSM": fgsm, "BIM": bim_paper}, draws=args.draws,
                                seed=args.seed)
        table, (margins, blurs) = [_md_row(r) for r in destruction_rows(runs)], _evidence(runs, x)
        clean = summarise(runs[0], runs[0])
        parts += [f"### {name}: {len(x)} test images it classifies correctly ({time.perf_counter() - t0:.0f} s)", "",
                  f"Clean accuracy after the print and photo: {clean['clean_photo_acc']:.3f}.", "",
                  _md_row(DESTRUCTION_HEAD), "|---" * len(DESTRUCTION_HEAD) + "|", *table, "",
                  "Destruction rate by the adversarial example's logit margin before the photo (max_{i≠y} z_i − "
                  "z_y), pooled over ε (counted pairs in brackets):", "",
                  _md_row(margin_head()), "|---|" + "---|" * (len(MARGIN_BINS) - 1), *margins, "",
                  "Share of the perturbation's L2 norm a Gaussian blur of 0.5 px keeps (mean over images), and its "
                  "mean |δ|:", "", "| attack | ε | kept by blur | mean abs δ |", "|---|---|---|---|", *blurs, ""]
        print("\n".join(parts[-40:]), flush=True)
    body = "\n".join([
        "## Print and photo: Kurakin et al.'s destruction rate, FGSM vs BIM (issue 18)", "",
        f"`python benchmarks/physical.py print-photo --threads {args.threads[0]} --images {args.images} "
        f"--draws {args.draws} --seed {args.seed}` — `advlab.physical.print_photo_runs` at severity 1: each image "
        f"printed and photographed {args.draws}× (photo k of an image and of its adversarial versions share the "
        "print and camera draws), L∞ FGSM and BIM (step 1/255, min(255ε + 4, 1.25·255ε) steps, as in the paper). "
        "Destruction rate: of the pairs whose clean image is right before and after the photo and whose "
        f"adversarial image fooled the model before it, the share classified right after it. {environment()}.",
        "", *parts])
    write_section("print-photo", body)


def eot_section(args: argparse.Namespace) -> None:
    """PGD with and without EOT (TransformDistribution.image()) on lenet-mnist, scored through Transformed."""
    model = advlab.load_model("lenet-mnist")
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.images], y[: args.images]
    dist = TransformDistribution.image()
    seen = Transformed(model, dist, seed=args.seed + 100)  # held-out draws: not the attack's generator

    def fooled(images: torch.Tensor) -> float:
        with torch.no_grad():
            return torch.stack([seen(images).argmax(1) != y for _ in range(args.draws)]).float().mean().item()

    rows = [f"| clean | – | – | {fooled(x):.3f} | – |"]
    for eps in (0.1, 0.2, 0.3):
        threat = ThreatModel("linf", eps)
        for label, kw in (("PGD", {}), (f"PGD + EOT×{args.samples}",
                                        {"grad_fn": eot_grad_fn(dist, args.samples,
                                                                generator=torch.Generator().manual_seed(args.seed))})):
            t0 = time.perf_counter()
            r = pgd(model, x, y, threat, steps=40, generator=torch.Generator().manual_seed(args.seed), **kw)
            rows.append(f"| {label} | {eps:g} | {float(r.success.float().mean()):.3f} | {fooled(r.x_adv):.3f} | "
                        f"{time.perf_counter() - t0:.0f} |")
            print(rows[-1], flush=True)
    body = "\n".join([
        "## EOT through the grad_fn seam: PGD vs PGD + EOT under random transformations (issue 18)", "",
        f"`python benchmarks/physical.py eot --threads {args.threads[0]} --images {args.images} --draws {args.draws} "
        f"--samples {args.samples} --seed {args.seed}` — lenet-mnist, the first {args.images} MNIST test images, L∞ "
        "PGD (40 steps, random start) with the plain gradient and with "
        f"`eot_grad_fn(TransformDistribution.image(), {args.samples})` (rotation ±10°, scale 0.9–1.1, shift, light, "
        "contrast, blur, noise). Fooled: the share of (image, draw) pairs misclassified by "
        f"`Transformed(model, TransformDistribution.image())` over {args.draws} held-out draws per image (clean "
        f"images included: the first row is the transformations alone). {environment()}.", "",
        "| attack | ε | success on the plain model | fooled under the transformations | seconds |",
        "|---|---|---|---|---|", *rows])
    write_section("physical-eot", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["speed", "print-photo", "eot"])
    ap.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1])
    ap.add_argument("--n", type=int, default=512, help="speed: images per call")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=1000, help="print-photo: images per model")
    ap.add_argument("--draws", type=int, default=2, help="print-photo: photos per image; eot: draws per image")
    ap.add_argument("--samples", type=int, default=8, help="eot: EOT samples per gradient")
    args = ap.parse_args()
    torch.set_num_threads(args.threads[0])
    {"speed": speed, "print-photo": print_photo_section, "eot": eot_section}[args.what](args)


if __name__ == "__main__":
    main()
