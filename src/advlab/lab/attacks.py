"""What the lab test attacks a sign with: each physical attack crafts an adversarial version of the sign.

A crafter takes the :class:`Scene` (model, clean sign, source and target class, the training
backgrounds crafting may use) and its options, and returns a :class:`Crafted` sign — an RGBA image
of the same size, different from the clean sign only where the attack may paint. The lab test
(:mod:`advlab.lab.grid`) then photographs clean and crafted sign under the same held-out conditions.

* ``rp2``: :func:`advlab.attacks.rp2.rp2`, a sticker inside a mask optimised with EOT over the
  signs' distribution and the training backgrounds; the mask found by
  :func:`advlab.attacks.rp2.find_mask` (default) or fixed.
* ``pgd``: the plain, single-view baseline — advlab's targeted :func:`~advlab.attacks.pgd` on the
  sign's texture seen through one fixed view (:class:`FrontalView`: frontal, width 40 px, neutral
  light, one training background, no noise), so the perturbation lives in the sign's texture and is
  mapped onto the sign exactly. ``region="mask"`` (default) lets it repaint the same sticker
  region as the attack it runs next to (L∞ ε = 1: any colour there); ``region="sign"`` perturbs
  the whole sign face within a small L∞ ε (e.g. 16/255). Either way the only thing it lacks is the
  expectation over conditions.

:data:`CRAFTERS` maps names to crafters; :data:`COMPARE` says which baselines run next to an
attack. Another physical attack joins by adding its crafter here.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

import torch
import torch.nn as nn

from advlab._checks import Fraction, NonNegFloat, PositiveInt, check_param, suggest
from advlab.attacks.fastview import inference_view
from advlab.attacks.gradient import pgd
from advlab.attacks.rp2 import find_mask, rp2
from advlab.attacks.stickers import BARS, Rect, mask_share, sticker_mask, with_sticker
from advlab.physical import Conditions, render
from advlab.threat import ThreatModel

__all__ = ["COMPARE", "CRAFTERS", "Crafted", "FrontalView", "Scene", "bind_options", "craft_pgd", "craft_rp2"]

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Scene:
    """What every crafter gets: the model, the clean sign (4×S×S RGBA), the classes and the training backgrounds."""

    model: Model
    sign: torch.Tensor
    source: int
    target: int
    backgrounds: torch.Tensor


@dataclass(frozen=True)
class Crafted:
    """An attacked sign and what made it.

    Attributes:
        name: The attack's name.
        sign: The attacked sign, 4×S×S RGBA (the clean sign's alpha).
        mask: S×S, 1 where the attack may change the sign.
        params: Every parameter the attack ran with.
        notes: What the report states about it: the region's share of the sign, the budget,
            crafting seconds, and attack-specific figures.
        history: Per step, the share of the views the attack saw that were read as the target.
    """

    name: str
    sign: torch.Tensor
    mask: torch.Tensor
    params: dict[str, Any]
    notes: dict[str, Any]
    history: tuple[float, ...] = field(default=())


def bind_options(name: str, hints: Mapping[str, Any], defaults: Mapping[str, Any],
                 options: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``options``, each checked against ``hints`` (one-line errors naming ``-o KEY``)."""
    out = dict(defaults)
    for key, value in options.items():
        if key not in hints:
            raise ValueError(f"-o {key}: {name} has no option {key!r}{suggest(key, hints)}; "
                             f"its options: {', '.join(hints)}")
        check_param(f"-o {key}", hints[key], value)
        out[key] = value
    return out


def _rp2_options() -> tuple[dict[str, Any], dict[str, Any]]:
    """rp2's tunable keyword parameters and the lab's mask options: (type hints, defaults)."""
    hints = get_type_hints(rp2, include_extras=True)
    skip = {"model", "sign", "target", "backgrounds", "mask", "distribution", "generator", "init", "return"}
    params = inspect.signature(rp2).parameters
    keys = [k for k in params if k not in skip]
    types = {k: hints[k] for k in keys} | {"init": Literal["sign", "random"], **MASK_HINTS}
    return types, {k: params[k].default for k in keys} | {"init": "sign", **MASK_DEFAULTS}


# The sticker's mask: "found" by find_mask (with these options), the fixed "bars", or a list of rectangles.
MASK_HINTS: dict[str, Any] = {"mask": Literal["found", "bars"] | list, "mask_share": Fraction,
                              "mask_block": PositiveInt, "mask_steps": PositiveInt,
                              "mask_criterion": Literal["change", "taylor"]}
MASK_DEFAULTS: dict[str, Any] = {"mask": "found", "mask_share": 0.095, "mask_block": 4, "mask_steps": 25,
                                 "mask_criterion": "taylor"}


def _mask(spec: str | list[Any], size: int) -> torch.Tensor:
    """A fixed sticker mask: ``"bars"`` (:data:`~advlab.attacks.stickers.BARS`) or [top, bottom, left, right] lists."""
    if isinstance(spec, str):
        if spec != "bars":
            raise ValueError(f"-o mask: expected 'found', 'bars' or a list of [top, bottom, left, right], got {spec!r}")
        return sticker_mask(BARS, size)
    try:
        rects: list[Rect] = [(int(a), int(b), int(c), int(d)) for a, b, c, d in spec]
    except (TypeError, ValueError):
        raise ValueError(f"-o mask: expected 'found', 'bars' or a list of [top, bottom, left, right], "
                         f"got {spec!r}") from None
    return sticker_mask(rects, size)


def craft_rp2(scene: Scene, options: Mapping[str, Any], seed: int, primary: Crafted | None = None) -> Crafted:
    """RP2's sticker on the sign (options: rp2's keyword parameters and the mask's, :data:`MASK_HINTS`).

    With ``mask="found"`` (default) :func:`~advlab.attacks.rp2.find_mask` first finds the mask
    (``mask_share`` of the sign at most, ``mask_block``-pixel blocks, ``mask_steps`` steps per
    round), and RP2 starts from its sticker.
    """
    hints, defaults = _rp2_options()
    params = bind_options("rp2", hints, defaults, options)
    kwargs = {k: v for k, v in params.items() if k not in MASK_HINTS}
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history: tuple[float, ...] = ()
    if params["mask"] == "found":
        found = find_mask(scene.model, scene.sign, scene.target, backgrounds=scene.backgrounds,
                          share=params["mask_share"], block=params["mask_block"], steps_per_round=params["mask_steps"],
                          samples_per_step=params["samples_per_step"], lr=params["lr"], loss=params["loss"],
                          kappa=params["kappa"], criterion=params["mask_criterion"], generator=g)
        mask, kwargs["init"], history = found.mask, found.image + scene.sign[:3] * (1 - found.mask), found.history
        params["init"] = "find_mask's sticker"
    else:
        mask = _mask(params["mask"], scene.sign.shape[-1])
        params = {k: v for k, v in params.items() if k not in MASK_HINTS or k == "mask"}
    sticker = rp2(scene.model, scene.sign, scene.target, backgrounds=scene.backgrounds, mask=mask, generator=g,
                  **kwargs)
    seconds = time.perf_counter() - start
    notes = {"region": "sticker mask", "share": mask_share(mask, scene.sign[3]),
             "budget": "any colour inside the mask", "seconds": seconds, "backgrounds": len(scene.backgrounds),
             "mask_steps_total": len(history), "eot_success_last_10": _tail(sticker.history)}
    return Crafted("rp2", sticker.apply(scene.sign), mask, params, notes, history + sticker.history)


def _tail(history: tuple[float, ...], k: int = 10) -> float:
    """The mean of the last ``k`` entries (NaN for none)."""
    last = history[-k:]
    return sum(last) / len(last) if last else float("nan")


class FrontalView(nn.Module):
    """A model that sees a sign texture through one fixed view: texture (N×3×S×S) → logits.

    The texture replaces the sign's colour inside ``region``; the sign is rendered frontally,
    ``width`` pixels wide, centred on ``background`` (3×H×W), with neutral light and no blur or noise.
    """

    def __init__(self, model: Model, sign: torch.Tensor, region: torch.Tensor, background: torch.Tensor,
                 width: float) -> None:
        super().__init__()
        self.model = model
        self.sign, self.region, self.background = sign, region, background
        size = (int(background.shape[-2]), int(background.shape[-1]))
        self.cond = Conditions.identity(1, size, channels=background.shape[0])._replace(width=torch.tensor([width]))

    def forward(self, texture: torch.Tensor) -> torch.Tensor:  # noqa: D102
        n = len(texture)
        obj = with_sticker(self.sign, texture, self.region)
        images = render(obj, self.background.expand(n, -1, -1, -1), self.cond.repeat(n))
        return self.model(images)


PGD_HINTS: dict[str, Any] = {"region": Literal["mask", "sign"], "eps": NonNegFloat | None, "steps": PositiveInt,
                             "step_size": NonNegFloat | None, "width": PositiveInt, "background": int,
                             "mask": Literal["auto", "bars"] | list}
PGD_DEFAULTS: dict[str, Any] = {"region": "mask", "eps": None, "steps": 100, "step_size": None, "width": 40,
                                "background": 0, "mask": "auto"}


def craft_pgd(scene: Scene, options: Mapping[str, Any], seed: int, primary: Crafted | None = None) -> Crafted:
    """Targeted PGD on the sign's texture through one frontal view (:class:`FrontalView`), no EOT.

    Options: ``region`` (``"mask"``: a sticker mask, ε = 1 by default; ``"sign"``: the whole sign
    face, ε = 16/255 by default), ``mask`` (``"auto"``: the mask of the attack it runs next to —
    the same region — or :data:`~advlab.attacks.stickers.BARS` alone; ``"bars"``; a list of
    rectangles), ``eps`` (L∞), ``steps``, ``step_size`` (default 2.5·ε/steps), ``width`` of the
    view in pixels, ``background`` (the training background's index).
    """
    p = bind_options("pgd", PGD_HINTS, PGD_DEFAULTS, options)
    if p["region"] == "sign":
        region = (scene.sign[3] > 0).to(scene.sign.dtype)
        p.pop("mask")
    elif p["mask"] == "auto":
        region = primary.mask if primary is not None else _mask("bars", scene.sign.shape[-1])
        p["mask"] = f"the {primary.name} mask" if primary is not None else "bars"
    else:
        region = _mask(p["mask"], scene.sign.shape[-1])
    p["eps"] = (1.0 if p["region"] == "mask" else 16 / 255) if p["eps"] is None else p["eps"]
    if not 0 <= p["background"] < len(scene.backgrounds):
        raise ValueError(f"-o background: expected an index in [0, {len(scene.backgrounds) - 1}], "
                         f"got {p['background']}")
    view = FrontalView(inference_view(scene.model), scene.sign, region, scene.backgrounds[p["background"]],
                       float(p["width"])).eval()
    x = scene.sign[None, :3].clone()
    threat = ThreatModel("linf", p["eps"], targeted=True)
    start = time.perf_counter()
    result = pgd(view, x, torch.tensor([scene.source]), threat, target=torch.tensor([scene.target]),
                 steps=p["steps"], step_size=p["step_size"], generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    notes = {"region": "sticker mask" if p["region"] == "mask" else "whole sign face",
             "share": mask_share(region, scene.sign[3]), "budget": f"L∞ ε = {p['eps']:.4g}", "seconds": seconds,
             "own_view_success": float(result.success.float().mean())}
    return Crafted("pgd", with_sticker(scene.sign, result.x_adv[0], region), region, p, notes)


# (scene, options, seed, the attack a baseline runs next to, or None) -> the attacked sign
Crafter = Callable[[Scene, Mapping[str, Any], int, Crafted | None], Crafted]
CRAFTERS: dict[str, Crafter] = {"rp2": craft_rp2, "pgd": craft_pgd}
# The baselines whose rows the lab report shows next to an attack's (crafted on the same scene).
COMPARE: dict[str, tuple[str, ...]] = {"rp2": ("pgd",)}
