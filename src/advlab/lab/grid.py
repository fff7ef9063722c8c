"""The lab test: a sign (clean and attacked) seen at every cell of the fixed lab grid, in front of held-out scenes.

Every row of :func:`advlab.physical.lab_grid` (a (width, angle, light) cell and one held-out draw
of the rest: small pitch and roll, position, contrast, colour error, blur, noise) is rendered in
front of every held-out background: ``rows × backgrounds`` views per sign. The camera noise of a
view is the same for every sign (each batch's generator is seeded from the lab seed and the batch
number), so the clean and the attacked sign are photographed under exactly the same conditions.

Targeted success in a cell (Eykholt et al. 2018, Table 2 in simulation) counts the views whose
*clean* sign the model reads as the source class, and of those, the views whose attacked sign it
reads as the target. The grid's average is the mean of the cells' rates over the cells where at
least one view counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from advlab.physical import Conditions, render

__all__ = ["Cells", "LabViews", "cell_counts", "lab_predictions"]

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LabViews:
    """The lab's views: ``cond`` and ``index`` from :func:`~advlab.physical.lab_grid`, and the held-out scenes.

    Attributes:
        cond: One row per grid draw.
        index: int64 rows×3, the (width, angle, light) cell of each draw.
        backgrounds: B×3×H×W held-out backgrounds; every draw is seen in front of each.
        shape: The grid's shape (widths, angles, lights).
        seed: Seeds the camera noise (the same for every sign).
        batch_size: Views rendered and classified at once.
    """

    cond: Conditions
    index: torch.Tensor
    backgrounds: torch.Tensor
    shape: tuple[int, int, int]
    seed: int = 0
    batch_size: int = 256

    @property
    def count(self) -> int:
        """How many views: grid draws × backgrounds."""
        return self.cond.rows * len(self.backgrounds)

    def cell_of_view(self) -> torch.Tensor:
        """The flat cell number (width, angle, light in row-major order) of every view."""
        w, a, light = self.index.unbind(1)
        cell = (w * self.shape[1] + a) * self.shape[2] + light
        return cell.repeat_interleave(len(self.backgrounds))

    def batch(self, start: int, stop: int) -> tuple[Conditions, torch.Tensor]:
        """The conditions and backgrounds of views ``start:stop`` (view = draw · B + background)."""
        views = torch.arange(start, stop)
        b = len(self.backgrounds)
        return self.cond.select(views // b), self.backgrounds[views % b]


@torch.no_grad()
def lab_predictions(model: Model, sign: torch.Tensor, views: LabViews,
                    keep: Callable[[torch.Tensor, int], None] | None = None) -> torch.Tensor:
    """The model's class for ``sign`` (4×S×S RGBA) at every view (int64, draws·B).

    ``keep(images, start)`` is called with each batch of rendered views (for example figures).
    """
    out = []
    obj = sign[None]
    for k, start in enumerate(range(0, views.count, views.batch_size)):
        stop = min(start + views.batch_size, views.count)
        cond, bg = views.batch(start, stop)
        g = torch.Generator().manual_seed(views.seed * 1_000_003 + k)
        images = render(obj, bg, cond, generator=g)
        if keep is not None:
            keep(images, start)
        out.append(model(images).argmax(dim=1))
    return torch.cat(out)


@dataclass(frozen=True)
class Cells:
    """Per-cell counts of one sign on the lab grid (each a widths×angles×lights int64 tensor).

    Attributes:
        views: Views per cell.
        counted: Views whose clean sign the model reads as the source class.
        hits: Of those, views whose attacked sign it reads as the target.
    """

    views: torch.Tensor
    counted: torch.Tensor
    hits: torch.Tensor

    @property
    def rate(self) -> torch.Tensor:
        """Targeted success per cell (NaN where no view counted)."""
        return torch.where(self.counted > 0, self.hits / self.counted.clamp(min=1), math.nan)

    def average(self) -> float:
        """The mean of the cells' rates over cells with a counted view (NaN if none)."""
        r = self.rate
        ok = ~torch.isnan(r)
        return float(r[ok].mean()) if bool(ok.any()) else math.nan

    def pooled(self) -> float:
        """Hits over counted views across the whole grid."""
        return float(self.hits.sum() / self.counted.sum()) if int(self.counted.sum()) else math.nan


def cell_counts(views: LabViews, clean_pred: torch.Tensor, adv_pred: torch.Tensor, source: int,
                target: int) -> Cells:
    """Per-cell targeted success of ``adv_pred``, counted over views whose ``clean_pred`` is ``source``."""
    cell = views.cell_of_view()
    n = math.prod(views.shape)
    counted = clean_pred == source
    hit = counted & (adv_pred == target)

    def per_cell(flags: torch.Tensor) -> torch.Tensor:
        return torch.bincount(cell, weights=flags.double(), minlength=n).round().long().view(views.shape)

    return Cells(per_cell(torch.ones_like(counted)), per_cell(counted), per_cell(hit))
