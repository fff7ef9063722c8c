"""The universal adversarial patch (Brown et al. 2017): one targeted patch for any image, place, rotation, scale.

Brown, Mané, Roy, Abadi, Gilmer 2017 train one patch p that makes a classifier answer the target
class t wherever it is put: p maximises E_{x, r}[log Pr(t | A(p, x, r))] over images x and
placements r (location, rotation, scale), with A pasting the patch. Here (:func:`universal_patch`):

- the patch is a C×S×S image with a fixed alpha mask (a disc, as in the paper, or a square);
- A is :func:`advlab.physical.render` with neutral photometry (light = contrast = colour gain 1,
  blur = noise = 0, no yaw or pitch): roll = the rotation, width = the patch's rendered width, centre =
  the location — so rotation and scale are differentiable, anti-aliased warps;
- each placement draws the rotation uniformly from ``rotation`` (degrees, default ±180), the scale
  uniformly from ``scale`` (default 0.9–1.1 × the nominal width) and the centre uniformly among
  the points where the patch's square (its unrotated frame) lies inside the image;
- the optimiser is :func:`advlab.attacks.patch.optimise_patch` (Adam, a fresh placement for every
  example of every step: Expectation over Transformation), minimising the targeted cross-entropy.

Area: ``size_fraction`` bounds the share of the image the patch covers at the *largest* scale drawn.
The rendered width at scale s is s·w₀ with w₀ = √(size_fraction·H·W / m) / scale_max, where m is
the share of the S×S square the mask keeps (π/4 for a disc, up to the pixel grid); the covered
area m·(s·w₀)² is then at most size_fraction·H·W (bilinear resampling only softens the rim).
:func:`patch_success` measures targeted success at fresh random placements on held-out images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from advlab._checks import Fraction, PositiveFloat, PositiveInt, check_images, check_labels, check_param, plain_number
from advlab._device import draw
from advlab._grad_mode import with_autograd
from advlab.attacks.fastview import inference_view, prepare
from advlab.attacks.patch import Placement, optimise_patch
from advlab.metrics import predict_logits
from advlab.models.blackbox import BlackBox
from advlab.physical.camera import render
from advlab.physical.conditions import Conditions

Model = Callable[[torch.Tensor], torch.Tensor]
Shape = Literal["circle", "square"]
Range = tuple[float, float]
PAPER = "Brown, Mané, Roy, Abadi, Gilmer 2017, Adversarial Patch, https://arxiv.org/abs/1712.09665"
__all__ = ["Patch", "PatchScore", "patch_success", "universal_patch"]


@dataclass(frozen=True)
class Patch:
    """A universal patch and the placements it was made for.

    Attributes:
        image: C×S×S colours in [0, 1].
        alpha: 1×S×S mask (1 inside the disc or square, 0 outside).
        width: Rendered width in output pixels at scale 1 (w₀ of the module docstring).
        target: The class it makes the model answer.
        rotation: Range of the in-plane rotation, degrees.
        scale: Range of the scale (× ``width``).
        size_fraction: The largest share of the image it covers (at the largest scale).
    """

    image: torch.Tensor
    alpha: torch.Tensor
    width: float
    target: int
    rotation: Range
    scale: Range
    size_fraction: float

    def rgba(self) -> torch.Tensor:
        """1×(C+1)×S×S: the object :func:`advlab.physical.render` pastes."""
        return torch.cat([self.image, self.alpha.to(self.image)], dim=0)[None]

    def placements(self, n: int, size: tuple[int, int], *, generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> Conditions:
        """``n`` random placements (rotation, scale, location) for images of ``size`` (H, W)."""
        return _placements(n, size, self.width, self.rotation, self.scale, self.image.shape[0], generator, device)

    def paste(self, x: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """``x`` (N×C×H×W) with the patch rendered at ``cond`` (one row per image)."""
        return render(self.rgba().to(x), x, cond)


class PatchScore(NamedTuple):
    """Targeted success of a patch on held-out images at random placements.

    ``success``: the share of (image, placement) trials where the model answers the target, over
    the images whose true class is not the target; ``trials``: how many such trials;
    ``excluded``: images left out because their true class is the target.
    """

    success: float
    trials: int
    excluded: int


def mask(shape: Shape, side: int) -> torch.Tensor:
    """1×side×side alpha: a disc (texel centres within the inscribed circle) or the full square."""
    if shape == "square":
        return torch.ones(1, side, side)
    t = (torch.arange(side) + 0.5) / side * 2 - 1
    return ((t[:, None] ** 2 + t[None, :] ** 2) <= 1).float()[None]


def _placements(n: int, size: tuple[int, int], width: float, rotation: Range, scale: Range, channels: int,
                generator: torch.Generator | None, device: torch.device | None) -> Conditions:
    """Conditions with neutral photometry: uniform rotation, scale and a centre keeping the frame inside."""
    h, w = size
    u = draw(torch.rand, n, 4, generator=generator, device=device)
    wid = width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    roll = rotation[0] + (rotation[1] - rotation[0]) * u[:, 1]
    cx = wid / 2 + (w - wid) * u[:, 2]
    cy = wid / 2 + (h - wid) * u[:, 3]
    zeros, ones = torch.zeros_like(wid), torch.ones_like(wid)
    return Conditions(wid, zeros, zeros.clone(), roll, torch.stack([cx, cy], dim=1), ones, ones.clone(),
                      torch.ones(n, channels, device=wid.device), zeros.clone(), zeros.clone())


def nominal_width(size_fraction: float, size: tuple[int, int], share: float, scale_max: float) -> float:
    """w₀: the width at scale 1 whose covered area at ``scale_max`` is ``size_fraction`` of the image."""
    return math.sqrt(size_fraction * size[0] * size[1] / share) / scale_max


@with_autograd
def universal_patch(
    model: Model,
    x: torch.Tensor,
    target: int,
    *,
    size_fraction: Fraction = 0.1,
    steps: PositiveInt = 1000,
    lr: PositiveFloat = 0.05,
    batch_size: PositiveInt = 32,
    rotation: Range = (-180.0, 180.0),
    scale: Range = (0.9, 1.1),
    shape: Shape = "circle",
    schedule: Literal["constant", "cosine"] = "constant",
    generator: torch.Generator | None = None,
) -> Patch:
    """A universal patch making ``model`` answer ``target`` on the images ``x`` (the module docstring).

    Brown et al. 2017 (https://arxiv.org/abs/1712.09665). ``steps`` Adam steps of ``lr`` on
    ``batch_size`` images from ``x`` (N×C×H×W in [0, 1]), each with a fresh placement;
    ``size_fraction`` bounds the covered share of the image; ``rotation`` (degrees) and ``scale``
    are the placement ranges; ``schedule`` ``"cosine"`` anneals Adam's rate to 0. Deterministic
    under ``generator``; the model is never changed (it runs through the attacks' fast view).
    Cost: ``steps`` forward + backward passes on ``batch_size`` rendered images.
    """
    target = plain_number(int, target)  # type: ignore[assignment]  # (a NumPy integer, a 0-d label tensor)
    _check(model, x, target, size_fraction=size_fraction, steps=steps, lr=lr, batch_size=batch_size,
           rotation=rotation, scale=scale, shape=shape, schedule=schedule, generator=generator)
    x = x.detach()
    hw = (x.shape[-2], x.shape[-1])
    side, alpha, width = _geometry(size_fraction, hw, scale, shape)
    net, logits = prepare(model, x)
    if logits is not None and not 0 <= target < logits.shape[1]:
        raise ValueError(f"target: expected a class in [0, {logits.shape[1]}), got {target}")
    alpha = alpha.to(x)

    def sampler(rows: torch.Tensor, g: torch.Generator | None) -> Placement:
        cond = _placements(len(rows), hw, width, rotation, scale, x.shape[1], g, x.device)
        zeros = torch.zeros(len(rows), 2, dtype=torch.long, device=x.device)  # placed (the rows of the batch)
        return Placement(zeros, torch.full((len(rows),), -1, dtype=torch.long, device=x.device), cond)

    def paste(xb: torch.Tensor, p: torch.Tensor, placement: Placement) -> torch.Tensor:
        if placement.conditions is None:
            raise RuntimeError("universal_patch: a placement without conditions (the sampler always sets them)")
        return render(torch.cat([p, alpha], dim=0)[None], xb, placement.conditions)

    goal = torch.full((len(x),), target, dtype=torch.long, device=x.device)

    def loss(xp: torch.Tensor, rows: torch.Tensor, placement: Placement) -> torch.Tensor:
        return F.cross_entropy(net(xp), goal[rows], reduction="none")

    image = optimise_patch(loss, x, sampler, size=side, steps=steps, batch_size=batch_size, lr=lr,
                           generator=generator, paste=paste, schedule=schedule)
    return Patch(image, alpha.detach(), width, target, tuple(map(float, rotation)),  # type: ignore[arg-type]
                 tuple(map(float, scale)), float(size_fraction))  # type: ignore[arg-type]


def _geometry(size_fraction: float, hw: tuple[int, int], scale: Range, shape: Shape) -> tuple[int, torch.Tensor, float]:
    """The patch's texel side S (one texel per output pixel at the largest scale), its mask and w₀."""
    share = math.pi / 4 if shape == "circle" else 1.0
    side = max(2, math.ceil(math.sqrt(size_fraction * hw[0] * hw[1] / share)))
    alpha = mask(shape, side)
    width = nominal_width(size_fraction, hw, float(alpha.mean()), scale[1])
    if width * scale[1] > min(hw):
        raise ValueError(f"size_fraction: a {shape} covering {size_fraction:g} of a {hw[0]}×{hw[1]} image at scale "
                         f"{scale[1]:g} does not fit inside it")
    return side, alpha, width


@torch.no_grad()
def patch_success(model: Model, x: torch.Tensor, y: torch.Tensor, patch: Patch, *, target: int | None = None,
                  draws: PositiveInt = 3, generator: torch.Generator | None = None,
                  batch_size: int = 500) -> PatchScore:
    """Targeted success of ``patch`` on ``x`` (labels ``y``) at ``draws`` fresh random placements per image.

    Images whose true class is the target (``patch.target`` unless given) are not counted. Use
    images and a generator the patch was not trained on: the placements are then unseen too.
    """
    check_param("draws", PositiveInt, draws)
    t = patch.target if target is None else target
    xt = check_images("x", x, (0.0, 1.0))
    labels = check_labels("y", y, len(xt)).to(xt.device)
    keep = labels != t
    kept = xt[keep]
    net = inference_view(model)
    hits, trials = 0, int(keep.sum()) * draws
    for _ in range(draws):
        cond = patch.placements(len(kept), (xt.shape[-2], xt.shape[-1]), generator=generator, device=xt.device)
        for i in range(0, len(kept), batch_size):
            xp = patch.paste(kept[i:i + batch_size], cond.select(slice(i, i + batch_size)))
            hits += int((predict_logits(net, xp).argmax(dim=1) == t).sum())
    return PatchScore(hits / trials if trials else float("nan"), trials, int((~keep).sum()))


def _check(model: object, x: object, target: object, **params: object) -> None:
    """Validate :func:`universal_patch`'s arguments with one-line errors."""
    if isinstance(model, BlackBox) or not callable(model):
        raise TypeError(f"model: universal_patch needs a differentiable torch model, got {type(model).__name__}")
    xt = check_images("x", x, (0.0, 1.0))
    if xt.dim() != 4:
        raise ValueError(f"x: expected images N×C×H×W, got shape {tuple(xt.shape)}")
    hints = {"size_fraction": Fraction, "steps": PositiveInt, "lr": PositiveFloat, "batch_size": PositiveInt,
             "shape": Shape, "schedule": Literal["constant", "cosine"]}
    for name, hint in hints.items():
        check_param(name, hint, params[name])
    for name in ("rotation", "scale"):
        value = params[name]
        if not (isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
                and value[0] <= value[1]):
            raise ValueError(f"{name}: expected a range (low, high) with low <= high, got {value!r}")
    if params["scale"][0] <= 0:  # type: ignore[index]
        raise ValueError(f"scale: expected positive scales, got {params['scale']!r}")
    if not isinstance(target, int) or isinstance(target, bool):
        raise TypeError(f"target: expected a class index (int), got {type(target).__name__}")
    if target < 0:
        raise ValueError(f"target: expected a class index >= 0, got {target}")
    generator = params["generator"]
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
