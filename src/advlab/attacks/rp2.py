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

Non-printability (Sharif et al. 2016, used by Eykholt et al.) scores a colour by the product of its
distances to every colour of a fixed printable palette: zero exactly at a printable colour. With a
palette of K = 27 colours in [0, 1] that product is of order 0.5^27 and its gradient vanishes, so
the score here is the distance to the *nearest* printable colour (the form of Thys et al. 2019):
the same zeros, a gradient of constant size towards the nearest printable colour. A sticker's NPS
is the mean over its pixels. The palette :data:`PRINTABLE` is the 3×3×3 grid of levels
{0.1, 0.5, 0.9} per channel: a printer's reachable gamut, short of the pure extremes.

The sticker mask :data:`BARS` is two horizontal bars above and below the word STOP, the look of the
paper's "abstract art" sticker attack: 2 × 40 × 4 pixels of the 64 × 64 canonical sign, 9.38 % of
the stop sign's area (:func:`mask_share`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from advlab._checks import NonNegFloat, PositiveInt, check_positive_int
from advlab._device import draw
from advlab.attacks.fastview import inference_view
from advlab.physical import Conditions, TransformDistribution, render

__all__ = ["BARS", "PAPER", "PRINTABLE", "Sticker", "mask_share", "nps", "render_sticker", "rp2", "sticker_mask",
           "with_sticker"]

PAPER = (
    "Eykholt, Evtimov, Fernandes, Li, Rahmati, Xiao, Prakash, Kohno, Song 2018, Robust Physical-World Attacks "
    "on Deep Learning Visual Classification, https://arxiv.org/abs/1707.08945; non-printability: Sharif, "
    "Bhagavatula, Bauer, Reiter 2016, Accessorize to a Crime, https://doi.org/10.1145/2976749.2978392, in the "
    "nearest-colour form of Thys, Van Ranst, Goedemé 2019, https://arxiv.org/abs/1904.08653"
)
Model = Callable[[torch.Tensor], torch.Tensor]
Rect = tuple[int, int, int, int]  # (top, bottom, left, right), rows top:bottom, columns left:right

# Two bars above and below the word STOP on the 64×64 canonical sign (9.38 % of the stop sign's area).
BARS: tuple[Rect, ...] = ((14, 18, 12, 52), (46, 50, 12, 52))
_LEVELS = torch.tensor([0.1, 0.5, 0.9])
PRINTABLE = torch.cartesian_prod(_LEVELS, _LEVELS, _LEVELS)  # 27×3, the printable palette


@dataclass(frozen=True)
class Sticker:
    """A sticker for a sign: its colours (3×S×S, zero outside the mask) and its mask (S×S, 1 where it is).

    Attributes:
        image: The sticker's colours in [0, 1] where ``mask`` is 1, zero elsewhere.
        mask: Where the sticker is, in the sign's S×S pixel grid (0 or 1).
        history: The share of each step's EOT views read as the target (empty if not recorded).
    """

    image: torch.Tensor
    mask: torch.Tensor
    history: tuple[float, ...] = ()

    def apply(self, sign: torch.Tensor) -> torch.Tensor:
        """``sign`` (4×S×S or N×4×S×S RGBA) with the sticker pasted on (its alpha unchanged)."""
        return with_sticker(sign, self.image, self.mask)

    def share(self, sign: torch.Tensor) -> float:
        """The share of ``sign``'s area (4×S×S RGBA: its alpha) the sticker covers."""
        return mask_share(self.mask, sign[3])


def sticker_mask(rects: Sequence[Rect] = BARS, size: int = 64) -> torch.Tensor:
    """A size×size float mask, 1 inside the rectangles ``(top, bottom, left, right)`` (end-exclusive)."""
    check_positive_int("size", size)
    mask = torch.zeros(size, size)
    for top, bottom, left, right in rects:
        if not (0 <= top < bottom <= size and 0 <= left < right <= size):
            raise ValueError(f"mask: rectangle (top, bottom, left, right) = {(top, bottom, left, right)} does not "
                             f"lie inside the {size}×{size} sign")
        mask[top:bottom, left:right] = 1.0
    return mask


def mask_share(mask: torch.Tensor, alpha: torch.Tensor) -> float:
    """The share of the sign's area (Σ alpha) that the mask covers on the sign (Σ mask·alpha)."""
    return float((mask * alpha).sum() / alpha.sum())


def with_sticker(sign: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sign`` (…×4×S×S RGBA) with its colour replaced by ``image`` (3×S×S) where ``mask`` is 1; differentiable."""
    if sign.shape[-3] != 4 or sign.shape[-2:] != mask.shape or image.shape[-2:] != mask.shape:
        raise ValueError(f"sign/sticker: expected an RGBA sign …×4×S×S and a sticker and mask of its S×S, got sign "
                         f"{tuple(sign.shape)}, sticker {tuple(image.shape)}, mask {tuple(mask.shape)}")
    rgb = sign[..., :3, :, :] * (1 - mask) + image * mask
    return torch.cat([rgb, sign[..., 3:, :, :].expand(*rgb.shape[:-3], 1, *mask.shape)], dim=-3)


def render_sticker(sticker: Sticker, sign: torch.Tensor, backgrounds: torch.Tensor, cond: Conditions, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The stickered ``sign`` (4×S×S) seen at ``cond`` in front of ``backgrounds`` (N×3×H×W)."""
    return render(sticker.apply(sign)[None], backgrounds, cond, generator=generator)


def nps(colours: torch.Tensor, palette: torch.Tensor = PRINTABLE) -> torch.Tensor:
    """Mean non-printability of ``colours`` (P×3): each one's distance to the nearest palette colour."""
    d2 = ((colours[:, None, :] - palette.to(colours)[None]) ** 2).sum(dim=2)  # P×K
    return torch.sqrt(d2.min(dim=1).values + 1e-12).mean()


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
        delta = (image - self.sign[:3]) * self.mask
        inside = image.permute(1, 2, 0)[self.mask > 0]
        value = (_adversarial_loss(logits, self.target, self.loss, self.kappa)
                 + self.weights[0] * _penalty(delta, self.norm) + self.weights[1] * nps(inside))
        return value, float((logits.argmax(dim=1) == self.target).float().mean())


def _start(sign: torch.Tensor, mask: torch.Tensor, init: str, g: torch.Generator | None) -> torch.Tensor:
    """The first iterate: the sign's own colours (δ = 0) or uniform noise, inside the mask."""
    if init == "sign":
        return sign[:3].clone()
    return draw(torch.rand, sign[:3].shape, generator=g, device=sign.device)


def rp2(model: Model, sign: torch.Tensor, target: int, *, backgrounds: torch.Tensor, mask: torch.Tensor | None = None,
        distribution: TransformDistribution | None = None, steps: PositiveInt = 300,
        samples_per_step: PositiveInt = 32, lr: NonNegFloat = 0.05, lambda_norm: NonNegFloat = 0.002,
        lambda_nps: NonNegFloat = 0.05, norm: Literal["l1", "l2"] = "l2", loss: Literal["ce", "margin"] = "ce",
        kappa: NonNegFloat = 5.0, init: Literal["sign", "random"] = "sign", generator: torch.Generator | None = None) -> Sticker:
    """RP2 (Eykholt et al. 2018): a sticker inside ``mask`` on ``sign`` that the model reads as ``target``.

    Args:
        model: A classifier of N×3×H×W images in [0, 1] (called, never changed; a model in training
            mode is run through an eval-mode copy).
        sign: The canonical sign, 4×S×S RGBA in [0, 1] (e.g. ``sign_rgba("stop")``).
        target: The class the stickered sign should be read as.
        backgrounds: N×3×H×W scenes the sign is rendered into during crafting (training draws only;
            the lab test uses held-out ones).
        mask: S×S, 1 where the sticker goes (default :data:`BARS`).
        distribution: The EOT conditions (default ``TransformDistribution.signs(H)``).
        steps, samples_per_step, lr: Adam steps, views per step, Adam's learning rate.
        lambda_norm, norm: weight and p (``"l1"`` or ``"l2"``) of ‖M·δ‖_p.
        lambda_nps: weight of the non-printability score (:func:`nps`).
        loss, kappa: ``"ce"`` (targeted cross-entropy) or ``"margin"`` (clamped at −κ).
        init: ``"sign"`` starts from the sign's colours (δ = 0), ``"random"`` from uniform noise.
        generator: Source of every random draw (views, backgrounds, noise, the random start).

    Returns:
        The :class:`Sticker` (colours and mask; its history holds each step's EOT success share).
    """
    problem = _problem(model, sign, target, backgrounds, mask, distribution, samples_per_step,
                       (lambda_norm, lambda_nps), norm, loss, kappa, init, steps)
    image = _start(problem.sign, problem.mask, init, generator).requires_grad_(True)
    opt = torch.optim.Adam([image], lr=lr)
    history = []
    for _ in range(steps):
        with torch.enable_grad():
            value, hit = problem.objective(image, generator)
            (image.grad,) = torch.autograd.grad(value, image)
        opt.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
        history.append(hit)
    return Sticker((image.detach() * problem.mask), problem.mask.clone(), tuple(history))


def _problem(model: Model, sign: torch.Tensor, target: int, backgrounds: torch.Tensor, mask: torch.Tensor | None,
             distribution: TransformDistribution | None, samples: int, weights: tuple[float, float], norm: str,
             loss: str, kappa: float, init: str, steps: int) -> _Problem:
    """Check RP2's arguments (one-line errors) and bundle them."""
    from advlab._checks import check_choice, check_images, check_nonneg

    check_positive_int("steps", steps)
    check_positive_int("samples_per_step", samples)
    for name, w in zip(("lambda_norm", "lambda_nps"), weights, strict=True):
        check_nonneg(name, w)
    check_nonneg("kappa", kappa)
    check_choice("norm", norm, ("l1", "l2"))
    check_choice("loss", loss, ("ce", "margin"))
    check_choice("init", init, ("sign", "random"))
    sign = check_images("sign", sign[None], (0.0, 1.0))[0].detach()
    backgrounds = check_images("backgrounds", backgrounds, (0.0, 1.0)).detach()
    if sign.shape[0] != 4 or backgrounds.shape[1] != 3:
        raise ValueError(f"sign/backgrounds: expected a 4×S×S RGBA sign and N×3×H×W backgrounds, got "
                         f"{tuple(sign.shape)} and {tuple(backgrounds.shape)}")
    mask = sticker_mask(BARS, sign.shape[-1]) if mask is None else mask.detach().to(sign)
    if mask.shape != sign.shape[-2:] or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask: expected a {tuple(sign.shape[-2:])} tensor of 0 and 1, got {tuple(mask.shape)}")
    if not bool((mask * sign[3]).sum() > 0):
        raise ValueError("mask: covers no part of the sign")
    dist = TransformDistribution.signs(backgrounds.shape[-1]) if distribution is None else distribution
    return _Problem(inference_view(model), sign, mask, backgrounds, dist, int(target), samples, weights, norm, loss,
                    kappa)
