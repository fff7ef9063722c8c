"""Universal adversarial patches: pasting, placement samplers, and one optimiser for every patch attack.

A patch is one C×s×s image, the same for every input, pasted at a per-example position. It is
trained with Adam over many inputs and many placements (Expectation over Transformation, with the
placement as the transformation; Athalye et al. 2018): :func:`optimise_patch` takes any
per-example loss of the patched batch and any placement sampler, so a classifier's universal
patch (Brown et al. 2017: :func:`anywhere` placements, a targeted cross-entropy) and the detector
patch below share the optimisation.

The hiding patch (Thys, Van Ranst, Goedemé 2019, "Fooling automated surveillance cameras:
adversarial patches to attack person detection", https://arxiv.org/abs/1904.08653, in
miniature): :func:`train_patch` trains a patch that, pasted *beside* a digit, lowers that digit's
centre score on a CenterNet detector.

Placement rule (:func:`beside`): for each scene one of its digits is chosen at random; the patch
is put on a random side of the digit's box (left, right, above, below — one of the sides where it
fits inside the image), at a gap of 1–4 pixels from the box, its centre offset along the side by
up to a quarter of its size from the box's centre (then clamped into the image). It never covers
the chosen digit's box (it may cover another digit). A scene where no side fits gets no patch
(position −1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from advlab._checks import check_positive_int
from advlab.attacks.detection import centre_cells, heat_logits, logit, recovered
from advlab.models.dense import decode
from advlab.physical.conditions import Conditions

PAPER = (
    "Thys, Van Ranst, Goedemé 2019, Fooling automated surveillance cameras: adversarial patches to attack "
    "person detection, https://arxiv.org/abs/1904.08653; Brown, Mané, Roy, Abadi, Gilmer 2017, "
    "Adversarial Patch, https://arxiv.org/abs/1712.09665"
)
Model = Callable[[torch.Tensor], torch.Tensor]
__all__ = ["Paste", "Placement", "anywhere", "apply_patch", "beside", "chosen_recovered", "hiding_loss",
           "optimise_patch", "paste_at_positions", "train_patch"]


class Placement(NamedTuple):
    """Where each example's patch goes.

    ``positions``: int64 N×2 (top, left; −1: no patch); ``chosen``: int64 N, the index of the box
    it sits beside (−1 where not applicable); ``conditions``: for a patch rendered through
    :func:`advlab.physical.render` (rotated, scaled, at a sub-pixel centre), each example's viewing
    conditions (None for a patch pasted pixel for pixel at ``positions``).
    """

    positions: torch.Tensor
    chosen: torch.Tensor
    conditions: Conditions | None = None


Sampler = Callable[[torch.Tensor, torch.Generator | None], Placement]  # (rows, generator) -> Placement
PatchLoss = Callable[[torch.Tensor, torch.Tensor, Placement], torch.Tensor]  # (x_patched, rows, placement) -> (N,)
Paste = Callable[[torch.Tensor, torch.Tensor, Placement], torch.Tensor]  # (x, patch, placement) -> x_patched


def apply_patch(x: torch.Tensor, patch: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``x`` with ``patch`` (C×s×s) pasted at ``positions`` (N×2 top, left; rows with −1 left unpatched).

    Differentiable with respect to the patch; ``x`` is not changed.
    """
    s = patch.shape[-1]
    out = x.clone()
    ok = positions[:, 0] >= 0
    if not bool(ok.any()):
        return out
    b = ok.nonzero()[:, 0]
    ar = torch.arange(s, device=x.device)
    rows = positions[b, 0, None] + ar
    cols = positions[b, 1, None] + ar
    view = out.permute(0, 2, 3, 1)  # N×H×W×C, sharing out's storage
    view[b[:, None, None], rows[:, :, None], cols[:, None, :]] = patch.permute(1, 2, 0).to(x.dtype).expand(
        len(b), s, s, -1)
    return out


def paste_at_positions(x: torch.Tensor, patch: torch.Tensor, placement: Placement) -> torch.Tensor:
    """The default :data:`Paste`: :func:`apply_patch` at ``placement.positions``."""
    return apply_patch(x, patch, placement.positions)


def anywhere(size: int, image: int) -> Sampler:
    """Uniform positions anywhere in an ``image``×``image`` input (Brown et al.'s placement)."""

    def sample(rows: torch.Tensor, generator: torch.Generator | None) -> Placement:
        pos = torch.randint(0, image - size + 1, (len(rows), 2), generator=generator)
        return Placement(pos, torch.full((len(rows),), -1, dtype=torch.long))

    return sample


def beside(boxes: torch.Tensor, size: int, image: int, gap: tuple[int, int] = (1, 4)) -> Sampler:
    """The hiding patch's placements beside a random digit of each scene (the rule in the module docstring)."""

    def sample(rows: torch.Tensor, generator: torch.Generator | None) -> Placement:
        bx = boxes[rows].cpu()
        n = len(rows)
        valid_box = bx[..., 0] >= 0
        chosen = torch.where(valid_box, torch.rand(valid_box.shape, generator=generator), -1.0).argmax(1)
        chosen = torch.where(valid_box.any(1), chosen, -1)
        box = bx[torch.arange(n), chosen.clamp_min(0), 1:5]
        g = torch.randint(gap[0], gap[1] + 1, (n,), generator=generator)
        u = torch.randint(-(size // 4), size // 4 + 1, (n,), generator=generator)
        cx, cy = ((box[:, 0] + box[:, 2]) / 2).floor().long(), ((box[:, 1] + box[:, 3]) / 2).floor().long()
        along_x = (cx - size // 2 + u).clamp(0, image - size)
        along_y = (cy - size // 2 + u).clamp(0, image - size)
        tops = torch.stack([along_y, along_y, box[:, 1].long() - g - size, box[:, 3].long() + g], 1)
        lefts = torch.stack([box[:, 0].long() - g - size, box[:, 2].long() + g, along_x, along_x], 1)
        fits = (tops >= 0) & (tops <= image - size) & (lefts >= 0) & (lefts <= image - size) & (chosen >= 0)[:, None]
        side = torch.where(fits, torch.rand(n, 4, generator=generator), -1.0).argmax(1)
        ok = fits.any(1)
        pos = torch.stack([tops[torch.arange(n), side], lefts[torch.arange(n), side]], 1)
        pos = torch.where(ok[:, None], pos, -1)
        return Placement(pos.to(boxes.device), torch.where(ok, chosen, -1).to(boxes.device))

    return sample


def hiding_loss(model: Model, boxes: torch.Tensor, tau: float) -> PatchLoss:
    """Per example: Σ softplus(z − τ) of the chosen digit's class over the 3×3 heat-map cells at its centre."""

    def loss(xp: torch.Tensor, rows: torch.Tensor, placement: Placement) -> torch.Tensor:
        heat = heat_logits(model(xp))
        s = heat.shape[-1]
        box = boxes[rows, placement.chosen.clamp_min(0)]
        cls = box[:, 0].long().clamp_min(0)
        iy, ix, _ = centre_cells(box[:, 1:5], s)
        n = torch.arange(len(rows), device=xp.device)[:, None, None]
        z = heat[n, cls[:, None, None], iy.clamp(0, s - 1), ix.clamp(0, s - 1)]
        return F.softplus(z - tau).flatten(1).sum(1)

    return loss


def optimise_patch(loss: PatchLoss, x: torch.Tensor, sampler: Sampler, *, size: int, steps: int,
                   batch_size: int = 32, lr: float = 0.05, generator: torch.Generator | None = None,
                   bounds: tuple[float, float] = (0.0, 1.0), paste: Paste = paste_at_positions,
                   schedule: str = "constant") -> torch.Tensor:
    """A universal patch minimising ``loss`` (mean over examples) by Adam, with EOT over placements.

    Each step draws ``batch_size`` of the inputs ``x`` and a fresh placement for each
    (``sampler``), pastes the patch (``paste``: pixel for pixel at the positions by default; the
    universal patch renders it rotated and scaled), and takes one Adam step on the patch, then
    clips it to ``bounds``. Examples without a placement (position −1) do not count. ``schedule``
    ``"cosine"`` anneals the rate from ``lr`` to 0 over the steps. Returns the patch (C×size×size,
    detached).
    """
    check_positive_int("steps", steps)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule: expected 'constant' or 'cosine', got {schedule!r}")
    lo, hi = bounds
    patch = (lo + (hi - lo) * torch.rand(x.shape[1], size, size, generator=generator)).to(x.device)
    patch.requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr)
    for step in range(steps):
        if schedule == "cosine":
            opt.param_groups[0]["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        rows = torch.randperm(len(x), generator=generator)[:batch_size].to(x.device)
        placement = sampler(rows, generator)
        ok = placement.positions[:, 0] >= 0
        if not bool(ok.any()):
            continue
        with torch.enable_grad():
            xp = paste(x[rows], patch, placement)
            value = (loss(xp, rows, placement) * ok).sum() / ok.sum()
            (patch.grad,) = torch.autograd.grad(value, patch)
        opt.step()
        with torch.no_grad():
            patch.clamp_(lo, hi)
    return patch.detach()


def train_patch(model: Model, x: torch.Tensor, boxes: torch.Tensor, *, size: int = 28, steps: int = 300,
                generator: torch.Generator | None = None, batch_size: int = 32, lr: float = 0.05,
                threshold: float = 0.3, margin: float = 1.0) -> torch.Tensor:
    """The hiding patch: one ``size``×``size`` patch that hides the digit it is pasted beside.

    Trained on the scenes ``x`` (N×C×H×W) with true ``boxes`` (N×K×5) by :func:`optimise_patch`:
    placements from :func:`beside`, loss :func:`hiding_loss` with τ = logit(``threshold``) − ``margin``
    (the chosen digit's class score at the 3×3 cells around its centre, pushed below the decode
    threshold). The model is only called, never changed (wrap a training-mode model in
    :func:`advlab.attacks.inference_view` first).
    """
    tau = logit(threshold) - margin
    return optimise_patch(hiding_loss(model, boxes, tau), x, beside(boxes, size, x.shape[-1]), size=size,
                          steps=steps, batch_size=batch_size, lr=lr, generator=generator)


@torch.no_grad()
def chosen_recovered(model: Model, x: torch.Tensor, boxes: torch.Tensor, placement: Placement, *,
                     threshold: float = 0.3, iou: float = 0.5) -> torch.Tensor:
    """Per example (bool N): the chosen digit is still detected (its class, IoU ≥ ``iou``) in ``x``."""
    dets = decode(model(x), threshold=threshold)
    box = boxes[torch.arange(len(x)), placement.chosen.clamp_min(0)][:, None]
    return recovered(dets, box, iou)[:, 0] & (placement.chosen >= 0)
