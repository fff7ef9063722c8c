"""The physical lab experiment: craft attacked signs, photograph them on the lab grid, count targeted success.

:func:`run_lab` crafts the chosen attack (and the baselines :data:`~advlab.lab.attacks.COMPARE` puts
next to it) on the training backgrounds, renders the clean and every attacked sign at every view of
the lab grid in front of the held-out backgrounds (the same camera noise for all), and returns a
JSON-ready summary (per-cell success, the grid's average, what each attack ran with) and one
example view per cell and sign for the report's figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from advlab._checks import check_choice, check_positive_int
from advlab.attacks.fastview import inference_view
from advlab.lab.attacks import COMPARE, CRAFTERS, Crafted, Scene
from advlab.lab.grid import Cells, LabViews, cell_counts, lab_predictions
from advlab.physical import LAB, lab_grid

__all__ = ["ACCEPTANCE", "LabOutcome", "LabSetup", "choose_grid", "run_lab"]

Model = Callable[[torch.Tensor], torch.Tensor]
ACCEPTANCE = 0.9  # issue 18: RP2's targeted success averaged over the grid


@dataclass(frozen=True)
class LabSetup:
    """Everything the experiment needs besides the attack.

    Attributes:
        model: The classifier (called, never changed).
        classes: Its class names, in output order.
        signs: The canonical signs of those classes, K×4×S×S RGBA (only source is attacked).
        source, target: Class names: the attacked sign and what it should be read as.
        train_backgrounds: Scenes crafting may use (EOT, the baseline's single view).
        test_backgrounds: Held-out scenes of the lab test.
        draws: Held-out draws per grid cell (:func:`~advlab.physical.lab_grid`).
        grid: The grid's widths, angles and lights (the full ``LAB`` or a subset of it).
        seed: Seeds crafting and the lab's camera noise.
        batch_size: Views rendered and classified at once.
    """

    model: Model
    classes: Sequence[str]
    signs: torch.Tensor
    source: str
    target: str
    train_backgrounds: torch.Tensor
    test_backgrounds: torch.Tensor
    draws: int = 3
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(LAB))
    seed: int = 0
    batch_size: int = 256

    def scene(self) -> Scene:
        """The crafters' view of the setup."""
        check_choice("--source", self.source, tuple(self.classes))
        check_choice("--target", self.target, tuple(self.classes))
        if self.source == self.target:
            raise ValueError(f"--target: must differ from the source class ({self.source})")
        s = list(self.classes).index(self.source)
        return Scene(self.model, self.signs[s], s, list(self.classes).index(self.target), self.train_backgrounds)


@dataclass(frozen=True)
class LabOutcome:
    """The summary (JSON-ready) and, per sign (``"clean"`` and each attack), one example view per cell.

    ``examples[name]`` is (images W×A×L×3×H×W, predicted class W×A×L).
    """

    summary: dict[str, Any]
    examples: dict[str, tuple[torch.Tensor, torch.Tensor]]
    signs: dict[str, torch.Tensor]


def choose_grid(widths: Sequence[float] | None = None, angles: Sequence[float] | None = None,
                lights: Sequence[float] | None = None) -> dict[str, tuple[float, ...]]:
    """A subset of the lab grid ``LAB`` (None keeps a dimension whole); values outside it are one-line errors."""
    out = {}
    for key, chosen in (("widths", widths), ("angles", angles), ("lights", lights)):
        full = LAB[key]
        if chosen is None:
            out[key] = tuple(full)
            continue
        bad = [v for v in chosen if float(v) not in full]
        if bad or not chosen:
            raise ValueError(f"--{key}: expected values among {', '.join(f'{v:g}' for v in full)}, got "
                             f"{', '.join(f'{v:g}' for v in chosen) or 'none'}")
        out[key] = tuple(v for v in full if v in {float(c) for c in chosen})
    return out


def _num(v: float) -> float | None:
    """A number for JSON: NaN as None."""
    return None if math.isnan(v) else v


def _nested(t: torch.Tensor) -> Any:
    """A tensor as nested lists, NaN as None (JSON has no NaN)."""
    return [_nested(r) for r in t] if t.dim() else _num(t.item())


class _Examples:
    """Keeps the first view of every cell (draw 0 of the cell, background 0) while a sign is photographed."""

    def __init__(self, views: LabViews, draws: int) -> None:
        self.wanted = torch.arange(math.prod(views.shape)) * draws * len(views.backgrounds)
        self.images = torch.zeros(len(self.wanted), 3, *views.backgrounds.shape[-2:])

    def __call__(self, images: torch.Tensor, start: int) -> None:
        hit = (self.wanted >= start) & (self.wanted < start + len(images))
        self.images[hit] = images[self.wanted[hit] - start]


def _photograph(model: Model, sign: torch.Tensor, views: LabViews, draws: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                        torch.Tensor]:
    """Predictions at every view, and the example views and their predictions (W×A×L)."""
    keep = _Examples(views, draws)
    pred = lab_predictions(model, sign, views, keep)
    return pred, keep.images.view(*views.shape, *keep.images.shape[1:]), pred[keep.wanted].view(views.shape)


def _attack_summary(c: Crafted, cells: Cells) -> dict[str, Any]:
    notes = {k: _num(v) if isinstance(v, float) else v for k, v in c.notes.items()}
    return {"name": c.name, "params": c.params, "notes": notes, "average": _num(cells.average()),
            "pooled": _num(cells.pooled()), "rate": _nested(cells.rate), "hits": _nested(cells.hits),
            "counted": _nested(cells.counted), "history": list(c.history)}


def run_lab(setup: LabSetup, attack: str, options: Mapping[str, Mapping[str, Any]]) -> LabOutcome:
    """Craft ``attack`` (and its baselines) with ``options[name]`` and run the lab test on all of them."""
    check_choice("--attack", attack, tuple(CRAFTERS))
    check_positive_int("draws", setup.draws)
    names = (attack, *COMPARE.get(attack, ()))
    unknown = set(options) - set(names)
    if unknown:
        raise ValueError(f"-o: options for {', '.join(sorted(unknown))}, which this run does not craft "
                         f"(it crafts {', '.join(names)})")
    model = inference_view(setup.model)
    scene = replace(setup.scene(), model=model)
    first = CRAFTERS[attack](scene, options.get(attack, {}), setup.seed, None)
    crafted = [first, *(CRAFTERS[n](scene, options.get(n, {}), setup.seed, first) for n in names[1:])]
    size = setup.test_backgrounds.shape[-1]
    cond, index = lab_grid(setup.draws, size=size, lab=setup.grid)
    shape = (len(setup.grid["widths"]), len(setup.grid["angles"]), len(setup.grid["lights"]))
    views = LabViews(cond, index, setup.test_backgrounds, shape, seed=setup.seed, batch_size=setup.batch_size)
    with torch.no_grad():
        clean_pred, clean_img, clean_ex = _photograph(model, scene.sign, views, setup.draws)
        examples = {"clean": (clean_img, clean_ex)}
        rows = []
        for c in crafted:
            pred, img, ex = _photograph(model, c.sign, views, setup.draws)
            examples[c.name] = (img, ex)
            rows.append(_attack_summary(c, cell_counts(views, clean_pred, pred, scene.source, scene.target)))
    clean = cell_counts(views, clean_pred, clean_pred, scene.source, scene.source)
    clean_rate = clean.counted / clean.views
    summary = {"source": setup.source, "target": setup.target, "classes": list(setup.classes), "seed": setup.seed,
               "draws": setup.draws, "grid": {k: list(v) for k, v in setup.grid.items()},
               "backgrounds": {"train": len(setup.train_backgrounds), "held_out": len(setup.test_backgrounds)},
               "views_per_cell": setup.draws * len(setup.test_backgrounds),
               "clean": {"rate": _nested(clean_rate), "average": float(clean_rate.mean())},
               "attacks": rows, "acceptance": ACCEPTANCE}
    return LabOutcome(summary, examples, {"clean": scene.sign, **{c.name: c.sign for c in crafted}})
