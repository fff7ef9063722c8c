"""RP2: a sticker on a sign that a classifier reads as another sign from many distances, angles and lights.

Robust Physical Perturbations (Eykholt et al. 2018) optimise a perturbation δ of one object's
texture, restricted by a mask M to where stickers go, so that the object is classified as a target
class under a whole distribution of physical conditions::

    minimise  λ·‖M·δ‖_p  +  λ_nps·NPS(M·δ)  +  E_{t∼T, b∼B} J(f(render(sign + M·δ, b, t)), y*)

The expectation runs over viewing conditions ``t`` (:class:`advlab.physical.TransformDistribution`:
width, viewing angle, pitch, roll, position, light, contrast, printing colour error, blur, camera
noise) and backgrounds ``b``: each Adam step draws ``samples_per_step`` of both (Expectation over
Transformation, Athalye et al. 2018). ``J`` is the targeted cross-entropy (``loss="ce"``, the
paper's) or the targeted margin max(max_{j≠t} z_j − z_t, −κ) (``loss="margin"``, which stops
pushing a view once it is read as the target with margin κ). Here the sticker's colours replace
the sign's inside the mask (a printed sticker covers what is under it), so M·δ is the sticker minus
the sign's colour there, and the sticker's values are clamped to [0, 1] after every step.

Non-printability: :func:`advlab.attacks.stickers.nps` (the distance to the nearest colour of a
fixed printable palette — see that module for why not the paper's product over the palette).

The mask. The paper finds where to put stickers with a first, L1-regularised pass over the whole
sign (sparse perturbations show where the model is vulnerable), then optimises inside a mask
there. :func:`find_mask` does this with b×b blocks: an L1 pass over every block on the sign's face,
then rounds that keep only the blocks that matter most — half the sign's area, then 15 % less
each round, down to ``share`` — re-optimising the sticker after each cut (a sticker that shrinks
in small steps adapts where a single cut to 10 % loses most of its effect). :data:`~advlab.attacks.stickers.BARS`
is a fixed alternative: two bars above and below the word STOP, 9.38 % of the stop sign's area.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from advlab._checks import (
    Fraction,
    NonNegFloat,
    PositiveInt,
    check_choice,
    check_images,
    check_nonneg,
    check_positive_int,
)
from advlab._device import draw
from advlab._grad_mode import with_autograd
from advlab.attacks.fastview import inference_view
from advlab.attacks.stickers import (
    BARS,
    PRINTABLE,
    Sticker,
    block_mask,
    face_blocks,
    mask_share,
    nps,
    render_sticker,
    sticker_mask,
    with_sticker,
)
from advlab.physical import TransformDistribution, render

__all__ = ["BARS", "PAPER", "PRINTABLE", "Sticker", "find_mask", "mask_share", "nps", "render_sticker",
           "rp2", "sticker_mask", "with_sticker"]

PAPER = (
    "Eykholt, Evtimov, Fernandes, Li, Rahmati, Xiao, Prakash, Kohno, Song 2018, Robust Physical-World Attacks "
    "on Deep Learning Visual Classification, https://arxiv.org/abs/1707.08945; non-printability: Sharif, "
    "Bhagavatula, Bauer, Reiter 2016, Accessorize to a Crime, https://doi.org/10.1145/2976749.2978392, in the "
    "nearest-colour form of Thys, Van Ranst, Goedemé 2019, https://arxiv.org/abs/1904.08653"
)
Model = Callable[[torch.Tensor], torch.Tensor]
Init = Literal["sign", "random"] | torch.Tensor

def _penalty(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """‖δ‖_p for p = 1 or 2 (the square root kept differentiable at zero)."""
    return delta.abs().sum() if norm == "l1" else torch.sqrt((delta ** 2).sum() + 1e-12)


def _adversarial_loss(logits: torch.Tensor, target: int, loss: str, kappa: float) -> torch.Tensor:
    """Mean targeted loss of the views: cross-entropy to ``target`` or the clamped margin."""
    if loss == "ce":
        return F.cross_entropy(logits, torch.full((len(logits),), target, device=logits.device))
    other = logits.clone()
    other[:, target] = float("-inf")
    return (other.max(dim=1).values - logits[:, target]).clamp(min=-kappa).mean()


@dataclass(frozen=True)
class _Problem:
    """What one RP2 step needs: the model, the sign, the mask, the EOT sources and the loss weights."""

    model: Model
    sign: torch.Tensor
    mask: torch.Tensor
    backgrounds: torch.Tensor
    distribution: TransformDistribution
    target: int
    samples: int
    weights: tuple[float, float]  # (λ for the norm, λ for NPS)
    norm: str
    loss: str
    kappa: float

    def objective(self, image: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, float]:
        """The RP2 objective on one EOT draw, and the share of the drawn views read as the target."""
        n, size = self.samples, self.backgrounds.shape[-1]
        rows = draw(torch.randint, len(self.backgrounds), (n,), generator=g, device=self.backgrounds.device)
        cond = self.distribution.sample(n, size, generator=g).to(self.backgrounds.device)
        obj = with_sticker(self.sign, image, self.mask)[None]
        logits = self.model(render(obj, self.backgrounds[rows], cond, generator=g))
        value = _adversarial_loss(logits, self.target, self.loss, self.kappa)
        if self.weights[0]:
            value = value + self.weights[0] * _penalty((image - self.sign[:3]) * self.mask, self.norm)
        if self.weights[1]:
            value = value + self.weights[1] * nps(image.permute(1, 2, 0)[self.mask > 0])
        return value, float((logits.argmax(dim=1) == self.target).float().mean())

    def optimise(self, image: torch.Tensor, steps: int, lr: float,
                 g: torch.Generator | None) -> tuple[torch.Tensor, list[float]]:
        """``steps`` Adam steps from ``image`` (3×S×S), clamped to [0, 1] after each; the result and its history."""
        image = image.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([image], lr=lr)
        history = []
        for _ in range(steps):
            with torch.enable_grad():
                value, hit = self.objective(image, g)
                (image.grad,) = torch.autograd.grad(value, image)
            opt.step()
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
            history.append(hit)
        return image.detach(), history


def _start(sign: torch.Tensor, init: Init, g: torch.Generator | None) -> torch.Tensor:
    """The first iterate: the sign's own colours (δ = 0), uniform noise, or a given 3×S×S image."""
    if isinstance(init, torch.Tensor):
        if init.shape != sign[:3].shape:
            raise ValueError(f"init: expected a {tuple(sign[:3].shape)} sticker image, got {tuple(init.shape)}")
        check_images("init", init[None], (0.0, 1.0))
        return init.detach().to(sign)
    if init == "sign":
        return sign[:3].clone()
    return draw(torch.rand, sign[:3].shape, generator=g, device=sign.device)


@with_autograd
def rp2(model: Model, sign: torch.Tensor, target: int, *, backgrounds: torch.Tensor, mask: torch.Tensor | None = None,
        distribution: TransformDistribution | None = None, steps: PositiveInt = 300,
        samples_per_step: PositiveInt = 32, lr: NonNegFloat = 0.05, lambda_norm: NonNegFloat = 0.002,
        lambda_nps: NonNegFloat = 0.05, norm: Literal["l1", "l2"] = "l2", loss: Literal["ce", "margin"] = "ce",
        kappa: NonNegFloat = 5.0, init: Init = "sign", generator: torch.Generator | None = None) -> Sticker:
    """RP2 (Eykholt et al. 2018): a sticker inside ``mask`` on ``sign`` that the model reads as ``target``.

    Args:
        model: A classifier of N×3×H×W images in [0, 1] (called, never changed; a model in training
            mode is run through an eval-mode copy).
        sign: The canonical sign, 4×S×S RGBA in [0, 1] (e.g. ``sign_rgba("stop")``).
        target: The class the stickered sign should be read as.
        backgrounds: N×3×H×W scenes the sign is rendered into during crafting (training draws only;
            the lab test uses held-out ones).
        mask: S×S, 1 where the sticker goes (default :data:`BARS`; :func:`find_mask` finds one).
        distribution: The EOT conditions (default ``TransformDistribution.signs(H)``).
        steps: Adam steps.
        samples_per_step: Views (conditions and backgrounds) drawn per step.
        lr: Adam's learning rate.
        lambda_norm: Weight of ‖M·δ‖_p.
        lambda_nps: Weight of the non-printability score (:func:`nps`).
        norm: p of ‖M·δ‖_p: ``"l1"`` or ``"l2"``.
        loss: ``"ce"`` (targeted cross-entropy) or ``"margin"`` (targeted margin clamped at −κ).
        kappa: κ of the margin loss.
        init: ``"sign"`` starts from the sign's colours (δ = 0), ``"random"`` from uniform noise, a
            3×S×S tensor from that sticker (e.g. :func:`find_mask`'s).
        generator: Source of every random draw (views, backgrounds, noise, the random start).

    Returns:
        The :class:`Sticker` (colours and mask; its history holds each step's EOT success share).
    """
    problem = _problem(model, sign, target, backgrounds, mask, distribution, samples_per_step,
                       (lambda_norm, lambda_nps), norm, loss, kappa, steps)
    image, history = problem.optimise(_start(problem.sign, init, generator), steps, lr, generator)
    return Sticker(image * problem.mask, problem.mask.clone(), tuple(history))


def _keep(score: torch.Tensor, sign: torch.Tensor, chosen: torch.Tensor, block: int, share: float) -> torch.Tensor:
    """Of the ``chosen`` blocks, those of highest ``score`` (per pixel), as many as fit in ``share`` of the sign."""
    per_block = F.avg_pool2d(score[None, None], block)[0, 0]
    k = int(share * float(sign[3].sum()) // block ** 2)
    order = torch.where(chosen, per_block, -math.inf).flatten().argsort(descending=True, stable=True)[:k]
    return torch.zeros(chosen.numel(), dtype=torch.bool, device=chosen.device).index_fill_(0, order, True).view_as(
        chosen) & chosen


def _score(problem: _Problem, image: torch.Tensor, criterion: str, g: torch.Generator | None) -> torch.Tensor:
    """Per pixel (S×S): how much the sticker there matters.

    ``"change"``: Σ_c |δ| (how far the colour moved); ``"taylor"``: the first-order estimate
    ∇J·(sign − image) of how much the objective rises if the pixel is given back to the sign, the
    gradient averaged over four EOT draws.
    """
    if criterion == "change":
        return (image - problem.sign[:3]).abs().sum(0)
    x = image.detach().clone().requires_grad_(True)
    grad = torch.zeros_like(x)
    for _ in range(4):
        with torch.enable_grad():
            value, _ = problem.objective(x, g)
            grad += torch.autograd.grad(value, x)[0] / 4
    return (grad * (problem.sign[:3] - image)).sum(0)


@with_autograd
def find_mask(model: Model, sign: torch.Tensor, target: int, *, backgrounds: torch.Tensor, share: Fraction = 0.095,
              block: PositiveInt = 4, shrink: Fraction = 0.85, steps_per_round: PositiveInt = 25,
              lambda_l1: NonNegFloat = 0.002, distribution: TransformDistribution | None = None,
              samples_per_step: PositiveInt = 32, lr: NonNegFloat = 0.05, loss: Literal["ce", "margin"] = "ce",
              kappa: NonNegFloat = 5.0, criterion: Literal["change", "taylor"] = "taylor",
              generator: torch.Generator | None = None) -> Sticker:
    """Where a sticker of at most ``share`` of the sign's area works best: RP2's mask-finding pass, in blocks.

    An L1-regularised RP2 pass (weight ``lambda_l1``) over every ``block``×``block`` block on the
    sign's face; then rounds that keep 50 % of the sign's area, then ``shrink`` times the last
    share, …, and finally ``share``: each keeps the blocks of highest score that fit and runs
    ``steps_per_round`` more steps inside them (no norm term). The score (``criterion``) is
    ``"taylor"``, the first-order estimate of how much the objective would rise if the block were
    given back to the sign (the usual pruning saliency), or ``"change"``, how far the block's colour
    moved. Returns the last round's sticker: its mask covers at most ``share`` of the sign; use it
    as ``rp2(..., mask=s.mask, init=s.image + sign[:3] * (1 - s.mask))``.
    """
    check_nonneg("share", share)
    if not 0 < shrink < 1:
        raise ValueError(f"shrink: expected a number in (0, 1), got {shrink}")
    rounds = [0.5 * shrink ** k for k in range(64) if 0.5 * shrink ** k > share] + [float(share)]
    chosen = face_blocks(sign[3], block)
    if not bool(chosen.any()):
        raise ValueError(f"block: no {block}×{block} block lies wholly on the sign's face")
    problem = _problem(model, sign, target, backgrounds, block_mask(chosen, block).to(sign), distribution,
                       samples_per_step, (lambda_l1, 0.0), "l1", loss, kappa, steps_per_round)
    image, history = problem.optimise(problem.sign[:3], steps_per_round, lr, generator)
    for keep in rounds:
        chosen = _keep(_score(problem, image, criterion, generator), problem.sign, chosen, block, keep)
        if not bool(chosen.any()):
            raise ValueError(f"share: {keep:g} of the sign is less than one {block}×{block} block")
        problem = replace(problem, mask=block_mask(chosen, block).to(problem.sign), weights=(0.0, 0.0))
        image, more = problem.optimise(image, steps_per_round, lr, generator)
        history += more
    return Sticker(image * problem.mask, problem.mask.clone(), tuple(history))


def _problem(model: Model, sign: torch.Tensor, target: int, backgrounds: torch.Tensor, mask: torch.Tensor | None,
             distribution: TransformDistribution | None, samples: int, weights: tuple[float, float], norm: str,
             loss: str, kappa: float, steps: int) -> _Problem:
    """Check RP2's arguments (one-line errors) and bundle them."""
    check_positive_int("steps", steps)
    check_positive_int("samples_per_step", samples)
    for name, w in zip(("lambda_norm", "lambda_nps"), weights, strict=True):
        check_nonneg(name, w)
    check_nonneg("kappa", kappa)
    check_choice("norm", norm, ("l1", "l2"))
    check_choice("loss", loss, ("ce", "margin"))
    if not isinstance(sign, torch.Tensor) or sign.dim() != 3 or sign.shape[0] != 4:
        raise ValueError(f"sign: expected a 4×S×S RGBA tensor, got {getattr(sign, 'shape', type(sign).__name__)}")
    sign = check_images("sign", sign[None], (0.0, 1.0))[0].detach()
    backgrounds = check_images("backgrounds", backgrounds, (0.0, 1.0)).detach()
    if backgrounds.dim() != 4 or backgrounds.shape[1] != 3:
        raise ValueError(f"backgrounds: expected N×3×H×W, got {tuple(backgrounds.shape)}")
    mask = sticker_mask(BARS, sign.shape[-1]) if mask is None else mask.detach().to(sign)
    if mask.shape != sign.shape[-2:] or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask: expected a {tuple(sign.shape[-2:])} tensor of 0 and 1, got {tuple(mask.shape)}")
    if not bool((mask * sign[3]).sum() > 0):
        raise ValueError("mask: covers no part of the sign")
    dist = TransformDistribution.signs(backgrounds.shape[-1]) if distribution is None else distribution
    return _Problem(inference_view(model), sign, mask, backgrounds, dist, int(target), samples, weights, norm, loss,
                    kappa)
