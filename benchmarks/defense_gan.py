"""Defense-GAN on lenet-mnist and the adaptive attacks that bypass it (issue 16).

    python benchmarks/defense_gan.py --threads 1

One fixed projection throughout: the shipped ``wgan-mnist`` generator, L = STEPS Adam steps × R = RESTARTS
random restarts (advlab.models.defense_gan; Samangouei et al.'s MNIST setting L = 200, R = 10). Two
classifiers behind it (``--variant``): ``orig`` = lenet-mnist (Defense-GAN-Orig) and ``rec`` =
lenet-mnist-defgan-rec, lenet-mnist fine-tuned on the generator's projections of training images
(Defense-GAN-Rec; `advlab train --defense defensegan-rec`). Every attack is crafted on the variant's own
classifier. Stages, each cached in benchmarks/results/defense_gan/ (orig) or defense_gan_rec/ (rec)
(rerun with --fresh to recompute); ``--projection momentum`` uses the authors' released projection instead
(DefenseGAN(optimizer="momentum")) and caches in the same directories suffixed ``_momentum``:

* clean     — Acc@1 of the bare and the defended classifier on the first --n test images;
* transfer  — PGD-40 at L∞ ε = 0.3 crafted on the bare classifier, then purified (the paper's claim);
* transfer_fgsm — the same with FGSM;
* carried   — on the first --n-carried images: how often a wrong purified label is the attacker's, and
              how mlp-mnist and googlenet-mnist read the same purified images;
* checks    — advlab.evaluation.checks.check_model on the wrapper, as `advlab evaluate` runs it;
* bpda      — PGD with BPDA through the projection (pgd-adaptive, identity backward) at the same ε;
* latent, latent_margin — the latent attack (defensegan-latent, Athalye et al. 2018 §5.3) at κ = 0 and
              κ = 5: its L2 and the defended model's verdict on its output, at Athalye et al.'s small L2 budget;
* bare_cw   — CW-L2 on the bare classifier, for the scale of that budget;
* figure    — docs/figures/defense-gan.png (8 images, the Orig variant; not cached).

`--variant V --only a,b` runs some stages of one variant and stops (processes can share the work); the
full command runs what is not cached — every stage for orig, FULL["rec"] for rec (all but bare_cw, whose
scale figure is the bare lenet-mnist's) — draws the figure and writes the ``defense-gan``
section of docs/defenses.md (benchmarks/defense_gan_report.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import DEFENSES_DOC, DEFENSES_HEADER, environment, write_section
from defense_gan_report import (
    NAMES,
    OTHERS,
    RESULTS,
    TRIED,
    athalye_text,
    budget_text,
    carried_text,
    checks_text,
    kept_text,
    latent_text,
    load_records,
    reference_text,
    table,
    tried_line,
)

from advlab import ThreatModel
from advlab.attacks import cw, defensegan_latent, fgsm, pgd, pgd_adaptive
from advlab.data import load_dataset
from advlab.evaluation.checks import check_model
from advlab.models import Defended, load_model
from advlab.models.defense_gan import LR, RESTARTS, STEPS, DefenseGAN
from advlab.models.gan import load_generator

ROOT = Path(__file__).resolve().parent.parent
REC = "lenet-mnist-defgan-rec"
VARIANTS = {"orig": ("lenet-mnist", RESULTS / "defense_gan"), "rec": (REC, RESULTS / "defense_gan_rec")}
SUFFIX = {"adam": "", "momentum": "_momentum"}  # --projection momentum caches in defense_gan_momentum/, ...
FIGURES = ROOT / "docs" / "figures"
COMMAND = "python benchmarks/defense_gan.py --threads 1"
EPS = 0.3
FULL = {"rec": ("clean", "transfer", "transfer_fgsm", "bpda", "latent", "latent_margin", "carried", "checks")}  # Rec's


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean())


def _predict(model: Any, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def _cached(cache: Path, name: str, fresh: bool, run: Any) -> dict[str, Any]:
    """The stage's record from ``cache``, else ``run()`` timed and written there."""
    path = cache / f"{name}.json"
    if path.exists() and not fresh:
        out: dict[str, Any] = json.loads(path.read_text())
        return out
    t0 = time.perf_counter()
    record = run()
    record["seconds"] = round(time.perf_counter() - t0, 1)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"{name}: {json.dumps({k: v for k, v in record.items() if not isinstance(v, list)})}", flush=True)
    return record


def stage_clean(bare: Any, net: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    out, _, err = net.transform.project(x)
    with torch.no_grad():
        pred = bare(out).argmax(1)
    return {"n": len(x), "bare": _acc(_predict(bare, x), y), "defended": _acc(pred, y),
            "defended_correct": (pred == y).tolist(), "proj_l2": err.sqrt().tolist(),
            "proj_l2_mean": float(err.sqrt().mean()),
            "proj_l2_median": float(err.sqrt().median())}


def stage_transfer(bare: Any, net: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    res = pgd(bare, x, y, ThreatModel("linf", EPS), steps=40, step_size=0.01,
              generator=torch.Generator().manual_seed(0))
    return {"n": len(x), "bare": _acc(_predict(bare, res.x_adv), y), "defended": _acc(_predict(net, res.x_adv), y)}


def stage_transfer_fgsm(bare: Any, net: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    x_adv = fgsm(bare, x, y, ThreatModel("linf", EPS)).x_adv
    return {"n": len(x), "bare": _acc(_predict(bare, x_adv), y), "defended": _acc(_predict(net, x_adv), y)}


def stage_carried(bare: Any, net: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """What the projection of a transferred PGD-40 example keeps: the attacker's label, read by lenet and by others."""
    xa = pgd(bare, x, y, ThreatModel("linf", EPS), steps=40, step_size=0.01,
             generator=torch.Generator().manual_seed(0)).x_adv
    pa = net.transform.project(xa)[0]
    adv_label, pred = _predict(bare, xa), _predict(bare, pa)
    wrong = pred != y
    out: dict[str, Any] = {"n": len(x), "defended": _acc(pred, y), "wrong": int(wrong.sum()),
                           "wrong_is_attack_label": float((pred[wrong] == adv_label[wrong]).float().mean())}
    for name in OTHERS:
        other = load_model(name)
        q = _predict(other, pa)
        out[name] = {"on_adv": _acc(_predict(other, xa), y), "on_projection": _acc(q, y),
                     "agrees_when_wrong": float((q[wrong] == pred[wrong]).float().mean())}
    return out


def stage_checks(net: Any, x: torch.Tensor, y: torch.Tensor, n: int, queries: int) -> dict[str, Any]:
    run = check_model(net, x, y, "linf", EPS, n=n, max_queries=queries)
    return {"n": len(run.idx), "max_queries": queries,
            "results": [{"code": r.code, "name": r.name, "fired": r.fired, "detail": r.detail} for r in run.results]}


def stage_bpda(net: Any, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, Any]:
    res = pgd_adaptive(net, x, y, ThreatModel("linf", EPS), steps=steps, step_size=2.5 * EPS / steps,
                       eot_samples=1, generator=torch.Generator().manual_seed(0))
    pred = _predict(net, res.x_adv)  # a fresh projection (new restarts) of the attack's answer
    return {"n": len(x), "steps": steps, "attack_success": float(res.success.float().mean()),
            "defended": _acc(pred, y), "linf_max": float((res.x_adv - x).abs().amax())}


def stage_latent(net: Any, x: torch.Tensor, y: torch.Tensor, kappa: float) -> dict[str, Any]:
    res = defensegan_latent(net, x, y, ThreatModel("l2", math.inf), kappa=kappa,
                            generator=torch.Generator().manual_seed(0))
    l2 = (res.x_adv - x).flatten(1).norm(dim=1)
    linf = (res.x_adv - x).flatten(1).abs().amax(1)
    again = _predict(net, res.x_adv) != y  # a second, independent projection of the answer
    ok = res.success
    return {"n": len(x), "kappa": kappa, "success": float(ok.float().mean()), "success_reprojected": float(again.float().mean()),
            "l2": l2.tolist(), "ok": ok.tolist(), "linf_le_eps": float((linf <= EPS + 1e-6).float().mean()),
            "l2_median_success": float(l2[ok].median()) if bool(ok.any()) else None,
            "l2_mean_success": float(l2[ok].mean()) if bool(ok.any()) else None}


def stage_bare_cw(bare: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    res = cw(bare, x, y, ThreatModel("l2", math.inf), steps=100, binary_search_steps=5)
    l2 = (res.x_adv - x).flatten(1).norm(dim=1)
    return {"n": len(x), "success": float(res.success.float().mean()), "l2": l2.tolist(), "ok": res.success.tolist(),
            "l2_median_success": float(l2[res.success].median())}


def figure(bare: Any, net: Any, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> None:
    """docs/figures/defense-gan.png: images, their projections, BPDA and latent answers and their projections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(0)
    bp = pgd_adaptive(net, x, y, ThreatModel("linf", EPS), steps=args.bpda_steps, step_size=2.5 * EPS / args.bpda_steps,
                      eot_samples=1, generator=gen).x_adv
    lat = defensegan_latent(net, x, y, ThreatModel("l2", math.inf), kappa=args.margin_kappa, generator=gen).x_adv
    rows = [("test image", x), ("its projection", net.transform.project(x)[0]), ("BPDA, L∞ 0.3", bp),
            ("its projection", net.transform.project(bp)[0]), (f"latent, κ = {args.margin_kappa:g}", lat),
            ("its projection", net.transform.project(lat)[0])]
    fig, axes = plt.subplots(len(rows), len(x), figsize=(1.2 * len(x), 1.35 * len(rows)))
    for i, (label, imgs) in enumerate(rows):
        with torch.no_grad():
            pred = bare(imgs).argmax(1)
        for j in range(len(x)):
            ax = axes[i, j]
            ax.imshow(imgs[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(int(pred[j])), fontsize=8, color="black" if int(pred[j]) == int(y[j]) else "red")
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("Defense-GAN (Orig) on lenet-mnist (title: lenet's label; red = wrong)", fontsize=9)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "defense-gan.png", dpi=100)
    plt.close(fig)


def _gen_line(name: str) -> str:
    meta = load_generator(name).advlab_meta
    g, kw = meta["gan"], meta["arch_kwargs"]
    arch = f"MLP z ∈ R^{kw['latent_dim']} → {kw['hidden']} → {kw['hidden']} → 784"
    if kw.get("arch") == "conv":
        arch = f"DCGAN-style z ∈ R^{kw['latent_dim']} → {2 * kw['channels']}×7×7 → {kw['channels']}×14×14 → 28×28"
    return (f"Generator `{name}` (src/advlab/weights/generators/): {arch}, WGAN-GP "
            f"(λ = {g['gp_weight']:g}, n_critic = {g['n_critic']}, Adam lr {g['lr']:g}, batch {g['batch_size']}, "
            f"{g['iterations']} generator steps, seed {g['seed']}), trained by `{meta['command']}` in "
            f"{meta['train_seconds']:.0f} s wall on one thread of the shared 2-core machine.")


def _rec_line(rec: dict[str, Any]) -> str:
    meta = load_model(REC).advlab_meta
    d = meta["defense"]
    return (f"Classifiers: **Orig** = `lenet-mnist` (trained on the MNIST images); **Rec** = `{REC}` "
            f"(src/advlab/weights/), Samangouei et al.'s Defense-GAN-Rec: lenet-mnist fine-tuned for {meta['epochs']} "
            f"epochs on the generator's projections (L = {d['steps']}, R = {d['restarts']}) of the first {d['images']} "
            f"training images, by `{meta['command']}` ({meta['projection_seconds']:.0f} s projecting, "
            f"{meta['train_seconds']:.0f} s training; Acc@1 {meta['acc1']:.4f} on {meta['acc1_on']}). The paper trains "
            f"its Rec classifier on the reconstructions of the whole training set; here {d['images']} images, for "
            f"time. Each variant is attacked through its own classifier (PGD and FGSM are crafted on it, BPDA "
            f"differentiates it, the latent attack differentiates it through G)." + _rec_missing(rec))


def _rec_missing(rec: dict[str, Any]) -> str:
    """Which of Rec's stages were not run, and why (it does not reach the transfer bar)."""
    missing = [s for s in ("latent", "latent_margin", "checks") if s not in rec]
    if not missing:
        return ""
    return (f" Not run for Rec: {', '.join(missing)} — it does not reach the transfer bar either, so it claims "
            f"nothing the Orig rows do not already show.")


def report(rs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    """The section: both variants' rows, why the bar is missed, what was tried, checks, latent attack, Athalye et al."""
    orig = rs["orig"]
    tr = {k: r["transfer"]["defended"] for k, r in rs.items() if "transfer" in r}
    verdict = "meets" if max(tr.values()) >= 0.80 else "falls short of"
    tried = [tried_line(label, load_records(RESULTS / d)) for label, d in TRIED]
    tried += [tried_line(f"MLP generator, L = {STEPS}, R = {RESTARTS}, {NAMES[k]} (this section's table)", r)
              for k, r in rs.items()]
    checks = [f"{NAMES[k]}: {checks_text(r['checks'])}" for k, r in rs.items() if "checks" in r]
    return "\n".join([
        "### Defense-GAN", "",
        f"Command: `{COMMAND}` (run here as several processes, `--variant orig|rec --only STAGES`, then the command "
        f"itself, which reads their cached records, draws the figure and writes this section) · {environment()} · "
        f"first {orig['clean']['n']} MNIST test images.", "",
        _gen_line(args.generator), "", _rec_line(rs.get("rec", {})), "",
        f"**One fixed projection throughout: L = {STEPS} Adam steps (lr {LR:g}) on ‖G(z) − x‖² × R = {RESTARTS} "
        f"random restarts** (Samangouei et al.'s MNIST setting), best restart kept (`wrap_defense(model, "
        f"\"defensegan\")`; `load_model(\"{REC}\")` returns the Rec classifier behind it). Mean projection distance of "
        f"clean images ‖G(z*) − x‖₂ = {orig['clean']['proj_l2_mean']:.2f}. Cost: the clean stage projected "
        f"{orig['clean']['n']} images in {orig['clean']['seconds']:.0f} s wall on one thread of the shared machine "
        f"({orig['clean']['seconds'] / orig['clean']['n']:.2f} s per image, {STEPS * RESTARTS} generator passes "
        f"forward and backward each).", "",
        *table(rs), "",
        "![Defense-GAN: test images, projections, BPDA and latent answers](figures/defense-gan.png)", "",
        f"Zero-knowledge purification {verdict} the 0.80 bar against PGD-40: "
        + ", ".join(f"{NAMES[k]} {v:.3f}" for k, v in tr.items()) + ". L, R and the Rec recipe were fixed from the "
        "paper (Rec: from lenet-mnist, before measuring), not tuned on the figure. "
        + (carried_text(orig["carried"]) if "carried" in orig else "") + " " + _rec_carried(rs) + _fit_text(orig)
        + kept_text(), "",
        "What was tried (the same first 1000 test images for clean and transfer, 200 for the adaptive rows):", "",
        *tried, "",
        reference_text(orig), "",
        "What the tried rows say: across the generators and descents measured, a closer fit carries more of "
        "the perturbation (conv, distance 1.58: 0.574; this table, 2.12: 0.608; the authors' descent, 2.25: 0.635; "
        "L = 100 × R = 5, 2.40: 0.680), and the looser fit of the generator without batch norm (3.31) gives "
        "0.676 while clean accuracy falls below the 0.95 bar (0.947). Training either recipe 4× longer (20 000 "
        "steps) fits closer and carries more: with batch norm distance 1.59, clean 0.986, transfer 0.518; without, "
        "2.52, 0.975, 0.686. No generator or descent measured here meets "
        "both bars. The authors' own generator (a DCGAN of width 64, latent 128, 200 000 WGAN-GP steps by their "
        "config) is beyond the issue's 2 h of training on 2 cores, and it was not measured. None of these was "
        "tuned on the figure.", "",
        "Gradient-masking checks (`advlab.evaluation.checks.check_model`, as `advlab evaluate` runs them, L∞ 0.3): "
        + " ".join(checks), "",
        *[t + "\n" for t in (latent_text(NAMES[k], r[s], r["bpda"]) for k, r in rs.items()
                              for s in ("latent", "latent_margin") if s in r)],
        athalye_text(), "", budget_text(orig, orig["bare_cw"]), "",
        "Wall times (s, shared machine): " + "; ".join(
            f"{NAMES[k]}: " + ", ".join(f"{s} {v['seconds']}" for s, v in r.items()) for k, r in rs.items()) + ".",
    ])


def _fit_text(orig: dict[str, Any]) -> str:
    """The longer projection against the shorter one, for the same generator and classifier."""
    old = load_records(RESULTS / "defense_gan_l100r5")
    if "clean" not in old or "transfer" not in old:
        return ""
    return (f"The paper's longer projection fits closer and keeps more: with L = 100, R = 5 the mean projection "
            f"distance of clean images was {old['clean']['proj_l2_mean']:.2f} and PGD-40 transferred then purified "
            f"{old['transfer']['defended']:.3f}; with L = {STEPS}, R = {RESTARTS} {orig['clean']['proj_l2_mean']:.2f} "
            f"and {orig['transfer']['defended']:.3f}. ")


def _rec_carried(rs: dict[str, dict[str, Any]]) -> str:
    """The same reading for the Rec classifier, where measured."""
    c = rs.get("rec", {}).get("carried")
    if c is None:
        return ""
    return (f"Training the classifier on projections (Rec) does not change this: crafted on the Rec classifier and "
            f"purified, the first {c['n']} are read correctly on {c['defended']:.3f}, and {c['wrong_is_attack_label']:.0%} "
            f"of its {c['wrong']} wrong labels are the attack's (`mlp-mnist` reads the same projections at "
            f"{c['mlp-mnist']['on_projection']:.3f}, `googlenet-mnist` at {c['googlenet-mnist']['on_projection']:.3f}). ")


def _stages(name: str, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any, dict[str, Any]]:
    """The variant's bare classifier, its defended model and its stages (name → thunk)."""
    loaded = load_model(name)
    bare = loaded.model if isinstance(loaded, Defended) else loaded
    net = Defended(bare, DefenseGAN(args.generator, optimizer=args.projection)).eval()  # = wrap_defense(bare, spec)
    m = args.n_adaptive
    stages = {
        "clean": lambda: stage_clean(bare, net, x, y),
        "transfer": lambda: stage_transfer(bare, net, x, y),
        "transfer_fgsm": lambda: stage_transfer_fgsm(bare, net, x, y),
        "bpda": lambda: stage_bpda(net, x[:m], y[:m], args.bpda_steps),
        "latent": lambda: stage_latent(net, x[:m], y[:m], args.latent_kappa),
        "latent_margin": lambda: stage_latent(net, x[:m], y[:m], args.margin_kappa),
        "bare_cw": lambda: stage_bare_cw(bare, x[:m], y[:m]),
        "carried": lambda: stage_carried(bare, net, x[:args.n_carried], y[:args.n_carried]),
        "checks": lambda: stage_checks(net, x, y, args.n_checks, args.check_queries),
    }
    return bare, net, stages


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=1000, help="images for clean and transfer (default 1000)")
    p.add_argument("--n-adaptive", type=int, default=200, help="images for BPDA and the latent attack")
    p.add_argument("--n-carried", type=int, default=500, help="images for the `carried` stage")
    p.add_argument("--bpda-steps", type=int, default=20)
    p.add_argument("--latent-kappa", type=float, default=0.0, help="the latent attack's κ (Athalye et al.: 0)")
    p.add_argument("--margin-kappa", type=float, default=5.0, help="κ of its second run, with a logit margin")
    p.add_argument("--variant", choices=["orig", "rec", "both"], default="both")
    p.add_argument("--only", default=None, help="comma-separated stages to run now, then stop")
    p.add_argument("--n-checks", type=int, default=5)
    p.add_argument("--check-queries", type=int, default=20)
    p.add_argument("--fresh", action="store_true", help="recompute every stage")
    p.add_argument("--generator", default="wgan-mnist", help="generator name or path (default the shipped one)")
    p.add_argument("--projection", choices=list(SUFFIX), default="adam",
                   help="the projection's descent: adam (advlab's) or momentum (the authors' released code); "
                        "momentum caches in defense_gan_momentum/ and defense_gan_rec_momentum/")
    p.add_argument("--no-doc", action="store_true", help="print the section, do not write docs/defenses.md")
    p.add_argument("--cache", default=None, help="directory of the stages' records (default by variant and "
                   "--projection); required with another --generator, whose records must not mix with the shipped one's")
    args = p.parse_args()
    if args.projection != "adam" and not args.only:
        p.error("--projection momentum needs --only STAGES (the section reports the shipped Adam projection and "
                "reads the momentum records from their own directory)")
    if args.generator != "wgan-mnist" and not (args.cache and args.only):
        p.error("--generator other than wgan-mnist needs --cache DIR and --only STAGES (its records are not the section's)")
    if args.cache and args.variant == "both":
        p.error("--cache needs one --variant (orig or rec)")
    return args


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    x, y = load_dataset("mnist", "test")
    x, y = x[:args.n], y[:args.n]
    variants = list(VARIANTS) if args.variant == "both" else [args.variant]
    rs: dict[str, dict[str, Any]] = {}
    for v in variants:
        name, cache = VARIANTS[v]
        cache = Path(args.cache) if args.cache else cache.with_name(cache.name + SUFFIX[args.projection])
        bare, net, stages = _stages(name, args, x, y)
        todo = args.only.split(",") if args.only else [*FULL.get(v, stages), "figure"]
        for stage in todo:
            if stage == "figure":
                if v == "orig":
                    figure(bare, net, x[:8], y[:8], args)
            else:
                rs.setdefault(v, {})[stage] = _cached(cache, stage, args.fresh, stages[stage])
    if args.only:
        return
    if not args.no_doc:
        write_section("defense-gan", report(rs, args), DEFENSES_DOC, DEFENSES_HEADER)
    print(report(rs, args))


if __name__ == "__main__":
    main()
