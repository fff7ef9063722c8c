"""The physical attacks on whole images: the universal patch, universal perturbations, print and photo.

Each study crafts on images of the training split (``Study.x_craft``) and measures on held-out test
images (``Study.x_test``), as the papers do, and returns an :class:`ImageOutcome`: the tables of
the report (title, head, rows), a one-line verdict, the settings, and example images for its
figures. ``advlab physical --attack patch|uap|print-photo`` runs them; the lab grid of the signs
(:mod:`advlab.lab.experiment`) is the fourth experiment of the command.

* ``patch``: :func:`advlab.attacks.universal_patch` (Brown et al. 2017), targeted, scored at fresh
  random placements (position, rotation, scale) on held-out images, next to a grey disc of the
  same shape (what covering the image alone does).
* ``uap``: :func:`advlab.attacks.universal_perturbation` (Moosavi-Dezfooli et al. 2017), its
  fooling rate on held-out images next to per-image PGD at the same ε and random noise of the
  same norm.
* ``print-photo``: :func:`advlab.physical.print_photo_runs` (Kurakin et al. 2016), FGSM against
  BIM with the paper's steps: the destruction rate per ε, overall and by the adversarial example's
  logit margin (BIM pushes deeper at large ε, which hides its higher destruction at equal margin).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from advlab._checks import suggest
from advlab.attacks.adversarial_patch import patch_success, universal_patch
from advlab.attacks.gradient import bim, fgsm, pgd
from advlab.attacks.registry import AttackResult
from advlab.attacks.universal import apply_universal, universal_perturbation, universal_score
from advlab.metrics import acc_at_k, fooling_rate, predict_logits
from advlab.physical import kurakin_bim, print_photo, print_photo_runs
from advlab.physical.printing import PhotoRun, summarise
from advlab.threat import ThreatModel

__all__ = ["DESTRUCTION_HEAD", "IMAGE_STUDIES", "MARGIN_BINS", "ImageOutcome", "Study", "bim_paper",
           "destruction_rows", "margin_head", "margin_rows", "patch_study", "print_photo_study", "random_like",
           "uap_study"]

Model = Callable[[torch.Tensor], torch.Tensor]
MARGIN_BINS = (0.0, 2.0, 5.0, 10.0, float("inf"))
SHOWN = 8  # example images per figure row


@dataclass(frozen=True)
class Study:
    """The model, its class names, crafting images (training split) and held-out images (test split)."""

    model: Model
    classes: Sequence[str]
    x_craft: torch.Tensor
    y_craft: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    seed: int = 0

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the study's seed (``offset`` separates crafting from scoring)."""
        return torch.Generator().manual_seed(self.seed + offset)

    def names(self, pred: torch.Tensor) -> list[str]:
        """Class names of predictions."""
        return [str(self.classes[int(p)]) for p in pred]


@dataclass(frozen=True)
class ImageOutcome:
    """What a study reports. ``examples``: (caption, images K×C×H×W, a title per image) per figure row."""

    title: str
    verdict: str
    tables: list[tuple[str, list[str], list[list[str]]]]
    settings: dict[str, Any]
    examples: list[tuple[str, torch.Tensor, list[str]]] = field(default_factory=list)


def _options(name: str, defaults: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``options``; an unknown key is a one-line error naming ``-o KEY``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"-o {unknown[0]}: {name} has no option {unknown[0]!r}{suggest(unknown[0], defaults)}; "
                         f"its options: {', '.join(defaults)}")
    return {**defaults, **options}


def _f(v: float) -> str:
    return "—" if v != v else f"{v:.3f}"


def patch_study(study: Study, options: Mapping[str, Any]) -> ImageOutcome:
    """The universal patch: crafted on ``x_craft``, targeted success at fresh placements on ``x_test``."""
    o = _options("patch", {"target": 0, "size_fraction": 0.1, "steps": 1000, "lr": 0.05, "schedule": "constant",
                           "rotation": 180.0, "scale": [0.9, 1.1], "draws": 3}, options)
    target = _class_index(study.classes, o["target"])
    start = time.perf_counter()
    patch = universal_patch(study.model, study.x_craft, target, size_fraction=o["size_fraction"], steps=o["steps"],
                            lr=o["lr"], schedule=o["schedule"], rotation=(-o["rotation"], o["rotation"]),
                            scale=tuple(o["scale"]), generator=study.generator())
    seconds = time.perf_counter() - start
    grey = replace(patch, image=torch.full_like(patch.image, 0.5))
    score = {name: patch_success(study.model, x, y, p, draws=o["draws"], generator=study.generator(1))
             for name, p, x, y in (("held", patch, study.x_test, study.y_test),
                                   ("craft", patch, study.x_craft, study.y_craft),
                                   ("grey", grey, study.x_test, study.y_test))}
    head = ["patch", "area ≤", "rotation", "scale", "success (held-out)", "success (crafting images)",
            "held-out trials", "crafting s"]
    rows = [["adversarial", f"{o['size_fraction']:.0%}", f"±{o['rotation']:g}°", f"{o['scale'][0]:g}–{o['scale'][1]:g}",
             _f(score["held"].success), _f(score["craft"].success), str(score["held"].trials), f"{seconds:.1f}"],
            ["grey disc", f"{o['size_fraction']:.0%}", f"±{o['rotation']:g}°", f"{o['scale'][0]:g}–{o['scale'][1]:g}",
             _f(score["grey"].success), "—", str(score["grey"].trials), "—"]]
    shown = study.x_test[study.y_test != target][:SHOWN]
    where = patch.placements(len(shown), (shown.shape[-2], shown.shape[-1]), generator=study.generator(2))
    pasted = patch.paste(shown, where)
    pred = predict_logits(study.model, pasted).argmax(1)
    name = study.classes[target]
    verdict = (f"The patch makes the model answer {name} on {score['held'].success:.1%} of held-out (image, "
               f"placement) trials (a grey disc: {score['grey'].success:.1%}); Brown et al. report ≥ 90% at ~10% of "
               "the image.")
    examples = [("The patch as crafted (its disc).", patch.image[None] * patch.alpha + 0.5 * (1 - patch.alpha),
                 [f"patch → {name}"]),
                ("Held-out images with the patch at fresh placements (the class read).", pasted, study.names(pred))]
    return ImageOutcome(f"Universal patch → {name}", verdict, [("Targeted success", head, rows)],
                        {**o, "target": name}, examples)


def uap_study(study: Study, options: Mapping[str, Any]) -> ImageOutcome:
    """Universal perturbation crafted on ``x_craft``; fooling rate on ``x_test`` next to per-image PGD and noise."""
    o = _options("uap", {"norm": "linf", "eps": 0.2, "max_passes": 10, "batch": 32, "target_rate": 0.8}, options)
    threat = ThreatModel(o["norm"], float(o["eps"]))
    start = time.perf_counter()
    v = universal_perturbation(study.model, study.x_craft, None, threat, max_passes=o["max_passes"],
                               batch=o["batch"], target_rate=o["target_rate"], generator=study.generator())
    seconds = time.perf_counter() - start
    held, craft = (universal_score(study.model, x, y, v) for x, y in ((study.x_test, study.y_test),
                                                                    (study.x_craft, study.y_craft)))
    noise = universal_score(study.model, study.x_test, study.y_test, random_like(v, threat, study.generator(1)))
    res = pgd(study.model, study.x_test, study.y_test, threat, generator=study.generator(2))
    clean, adv = predict_logits(study.model, study.x_test), predict_logits(study.model, res.x_adv)
    head = ["perturbation", "norm", "ε", "fooling (held-out)", "Acc@1 (held-out)", "fooling (crafting images)", "s"]
    eps = f"{o['eps']:g}"
    rows = [["universal (one v)", o["norm"], eps, _f(held.fooling_rate), _f(held.accuracy), _f(craft.fooling_rate),
             f"{seconds:.1f}"],
            ["random, same norm", o["norm"], eps, _f(noise.fooling_rate), _f(noise.accuracy), "—", "—"],
            ["PGD per image", o["norm"], eps, _f(fooling_rate(clean, adv)), _f(acc_at_k(adv, study.y_test)), "—", "—"]]
    shown = study.x_test[:SHOWN]
    pred = predict_logits(study.model, apply_universal(shown, v)).argmax(1)
    scale = v.abs().amax().clamp_min(1e-12)
    verdict = (f"One perturbation of {o['norm']} norm {o['eps']:g} changes the prediction on "
               f"{held.fooling_rate:.1%} of held-out images; per-image PGD at the same budget on "
               f"{fooling_rate(clean, adv):.1%}.")
    examples = [("The universal perturbation v (scaled to ±1 around grey).", (0.5 + 0.5 * v / scale)[None],
                 ["v"]), ("Held-out images + v (the class read).", apply_universal(shown, v), study.names(pred))]
    return ImageOutcome("Universal adversarial perturbation", verdict, [("Fooling rate", head, rows)], o, examples)


def random_like(v: torch.Tensor, threat: ThreatModel, g: torch.Generator) -> torch.Tensor:
    """A random perturbation of ``v``'s shape on the threat's sphere: random signs × ε (L∞), else a random direction."""
    if threat.norm == "linf":
        return (torch.randint(0, 2, v.shape, generator=g) * 2 - 1).to(v) * float(threat.eps)
    d = torch.randn(v.shape, generator=g).to(v)
    length: torch.Tensor = torch.linalg.vector_norm(d, ord=float(threat.norm[1:])).clamp_min(1e-12)
    return d * (float(threat.eps) / length)


def _class_index(classes: Sequence[str], target: int | str) -> int:
    names = [str(c) for c in classes]
    if isinstance(target, str) and target in names:
        return names.index(target)
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(names):
        return target
    raise ValueError(f"-o target: expected a class name ({', '.join(names)}) or an index below {len(names)}, "
                     f"got {target!r}")


def print_photo_study(study: Study, options: Mapping[str, Any]) -> ImageOutcome:
    """Kurakin's destruction rate of FGSM and BIM examples on held-out images the model classifies correctly."""
    o = _options("print-photo", {"eps": [0.05, 0.1, 0.2], "draws": 2, "severity": 1.0}, options)
    eps = [float(e) for e in (o["eps"] if isinstance(o["eps"], list) else [o["eps"]])]
    with torch.no_grad():
        ok = predict_logits(study.model, study.x_test).argmax(1) == study.y_test
    x, y = study.x_test[ok], study.y_test[ok]
    attacks = {"FGSM": fgsm, "BIM": bim_paper}
    runs = print_photo_runs(study.model, x, y, eps, attacks, severity=o["severity"], draws=o["draws"],
                            seed=study.seed)
    tables = [("Destruction rate per ε", DESTRUCTION_HEAD, destruction_rows(runs)),
              ("Destruction rate by logit margin before the photo, pooled over ε (counted pairs)", margin_head(),
               margin_rows(runs))]
    verdict = _photo_verdict(runs)
    return ImageOutcome("Print and photo (Kurakin et al.)", verdict, tables, {**o, "images": len(x)},
                        _photo_examples(study, runs, x, o["severity"]))


def bim_paper(model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
              generator: torch.Generator | None = None) -> AttackResult:
    """BIM with Kurakin et al.'s step (1/255) and steps (min(255ε + 4, 1.25·255ε))."""
    return bim(model, x, y, threat, generator=generator, **kurakin_bim(threat.eps))


DESTRUCTION_HEAD = ["attack", "ε", "adv. acc. before", "adv. acc. after", "base", "destroyed", "destruction rate",
                    "median margin before"]


def destruction_rows(runs: Sequence[PhotoRun]) -> list[list[str]]:
    """One row per run (clean first): accuracy before and after the photo, the counted pairs, the destruction rate."""
    rows = []
    for r in (summarise(runs[0], run) for run in runs):
        empty = r["base"] == 0
        rows.append([r["attack"], f"{r['eps']:g}", _f(r["adv_acc"]), _f(r["adv_photo_acc"]), str(r["base"]),
                     str(r["destroyed"]), "—" if empty else _f(r["destruction_rate"]),
                     "—" if empty else f"{r['margin_median']:.1f}"])
    return rows


def margin_head() -> list[str]:
    """The margin table's head: the attack, then one column per bin of :data:`MARGIN_BINS`."""
    return ["attack", *(f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(MARGIN_BINS))]


def margin_rows(runs: Sequence[PhotoRun]) -> list[list[str]]:
    """Per attack, the destruction rate by the adversarial example's logit margin before the photo, pooled over ε."""
    clean, out = runs[0], []
    for attack in dict.fromkeys(r.attack for r in runs[1:]):
        cells = []
        for lo, hi in itertools.pairwise(MARGIN_BINS):
            destroyed = counted = 0
            for r in (r for r in runs[1:] if r.attack == attack):
                base = clean.ok & ~r.ok & clean.photo_ok & (r.margin >= lo) & (r.margin < hi)
                destroyed, counted = destroyed + int((base & r.photo_ok).sum()), counted + int(base.sum())
            cells.append(f"{destroyed / counted:.3f} ({counted})" if counted else "—")
        out.append([attack, *cells])
    return out


def _photo_verdict(runs: Sequence[PhotoRun]) -> str:
    rates: dict[str, list[float]] = {}
    for r in runs[1:]:
        s = summarise(runs[0], r)
        if s["base"]:
            rates.setdefault(r.attack, []).append(s["destruction_rate"])
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    if set(mean) != {"FGSM", "BIM"}:
        return "No adversarial example fooled the model before the photo: no destruction rate to compare."
    more = "BIM" if mean["BIM"] > mean["FGSM"] else "FGSM"
    return (f"Mean destruction rate over ε: FGSM {mean['FGSM']:.1%}, BIM {mean['BIM']:.1%} — {more}'s examples are "
            "destroyed more (Kurakin et al.: iterative examples are destroyed more); the margin table compares "
            "them at equal confidence.")


def _photo_examples(study: Study, runs: Sequence[PhotoRun], x: torch.Tensor,
                    severity: float) -> list[tuple[str, torch.Tensor, list[str]]]:
    out = []
    for r in runs:
        shown = r.x_adv[:SHOWN]
        photo = print_photo(shown, generator=study.generator(3), severity=severity)
        with torch.no_grad():
            before = predict_logits(study.model, shown).argmax(1)
            after = predict_logits(study.model, photo).argmax(1)
        label = "clean" if r.attack == "clean" else f"{r.attack} ε={r.eps:g}"
        out.append((f"{label}: the images (top) and one simulated photo of each (bottom), with the class read.",
                    torch.cat([shown, photo]), study.names(before) + study.names(after)))
    return out


IMAGE_STUDIES: dict[str, Callable[[Study, Mapping[str, Any]], ImageOutcome]] = {
    "patch": patch_study, "uap": uap_study, "print-photo": print_photo_study}
