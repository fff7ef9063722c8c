"""Viewing conditions: one row per image, sampled from a distribution or laid out as the lab grid.

A :class:`Conditions` row says how a planar object (a sign, a patch, a whole image) is seen: its
frontal width in output pixels, the viewing angle (yaw), pitch and in-plane rotation (roll), where
its centre lands, and the scene's photometry — light (a gain), contrast (about mid-grey), a
per-channel colour gain (printing and camera colour error), Gaussian blur (distance, focus) and
additive camera noise. :func:`advlab.physical.render` turns a row into pixels.

:class:`TransformDistribution` draws rows uniformly from ranges (Expectation over Transformation,
Athalye et al. 2018, needs exactly such a distribution); :func:`lab_grid` is the fixed test grid of
issue 18 — sign width × viewing angle × light level — with held-out random draws of the rest, the
drive-by test of Eykholt et al. 2018 (RP2) in simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from advlab._checks import check_positive_int
from advlab._device import draw

__all__ = ["LAB", "Conditions", "TransformDistribution", "lab_grid"]

Range = tuple[float, float]


class Conditions(NamedTuple):
    """How each image's object is seen; every field has one row per image (see the module docstring)."""

    width: torch.Tensor  # N, frontal width of the object in output pixels
    yaw: torch.Tensor  # N, degrees, rotation about the object's vertical axis (the viewing angle)
    pitch: torch.Tensor  # N, degrees, about its horizontal axis
    roll: torch.Tensor  # N, degrees, in-plane rotation
    centre: torch.Tensor  # N×2, (x, y) of the object's centre in output pixel coordinates
    light: torch.Tensor  # N, brightness gain (1 = unchanged)
    contrast: torch.Tensor  # N, contrast gain about mid-grey (1 = unchanged)
    colour: torch.Tensor  # N×C, per-channel gain (1 = none)
    blur: torch.Tensor  # N, Gaussian sigma in output pixels (0 = none)
    noise: torch.Tensor  # N, std of additive Gaussian noise (0 = none)

    @staticmethod
    def identity(n: int, size: int | tuple[int, int], channels: int = 3,
                 device: torch.device | str | None = None) -> Conditions:
        """``n`` rows that leave an image of ``size`` (H, W or one side) exactly as it is.

        The object is the whole image: frontal, as wide as the image, centred, with neutral photometry.
        """
        h, w = (size, size) if isinstance(size, int) else size
        ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
        centre = torch.tensor([w / 2, h / 2], device=device).expand(n, 2).clone()
        return Conditions(ones * w, zeros, zeros.clone(), zeros.clone(), centre, ones.clone(), ones.clone(),
                          torch.ones(n, channels, device=device), zeros.clone(), zeros.clone())

    def select(self, index: torch.Tensor | slice) -> Conditions:
        """The rows ``index`` of every field."""
        return Conditions(*(f[index] for f in self))

    def to(self, device: torch.device | str) -> Conditions:
        """Every field on ``device``."""
        return Conditions(*(f.to(device) for f in self))

    def repeat(self, times: int) -> Conditions:
        """Every row ``times`` times in a row (row i becomes rows i·times … i·times + times − 1)."""
        return Conditions(*(f.repeat_interleave(times, dim=0) for f in self))

    @staticmethod
    def cat(parts: list[Conditions]) -> Conditions:
        """Rows of ``parts`` one after another."""
        return Conditions(*(torch.cat(group) for group in zip(*parts, strict=True)))

    @property
    def rows(self) -> int:
        """How many images the conditions describe."""
        return int(self.width.shape[0])


def _uniform(rng: Range, n: int, generator: torch.Generator | None, device: torch.device | str | None,
             *shape: int) -> torch.Tensor:
    low, high = rng
    u = draw(torch.rand, n, *shape, generator=generator, device=None if device is None else torch.device(device))
    return low + (high - low) * u


@dataclass(frozen=True)
class TransformDistribution:
    """Uniform ranges (low, high) for each condition; :meth:`sample` draws rows of :class:`Conditions`.

    ``shift`` is the share of the free room (image size minus the object's extent) the centre may move
    away from the image centre: 0 keeps the object centred, 1 lets it touch the border.
    ``colour`` is drawn per channel.
    """

    width: Range = (14.0, 44.0)
    yaw: Range = (-50.0, 50.0)
    pitch: Range = (-15.0, 15.0)
    roll: Range = (-10.0, 10.0)
    shift: float = 1.0
    light: Range = (0.5, 1.5)
    contrast: Range = (0.7, 1.1)
    colour: Range = (0.9, 1.1)
    blur: Range = (0.0, 1.0)
    noise: Range = (0.0, 0.03)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "shift":
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"shift: must lie in [0, 1], got {value}")
                continue
            low, high = value
            if not low <= high:
                raise ValueError(f"{f.name}: low must not exceed high, got {value}")
            if f.name in {"width", "light", "contrast", "colour"} and low <= 0:
                raise ValueError(f"{f.name}: must be positive, got {value}")
            if f.name in {"blur", "noise"} and low < 0:
                raise ValueError(f"{f.name}: must be non-negative, got {value}")

    @staticmethod
    def signs(size: int = 48) -> TransformDistribution:
        """The signs world's distribution (its data and its EOT): sizes and angles spanning the lab grid."""
        return TransformDistribution(width=(0.29 * size, 0.92 * size))

    @staticmethod
    def image(rotation: float = 10.0, scale: Range = (0.9, 1.1), shift: float = 0.1) -> TransformDistribution:
        """Small whole-image changes (rotation, scale, shift, light, blur, noise) for EOT on plain images.

        ``scale`` multiplies the image's own width; :meth:`sample` reads ``width`` as that factor when
        the preset is used through :func:`~advlab.physical.transform_images` (see :meth:`sample`).
        """
        return TransformDistribution(width=scale, yaw=(0.0, 0.0), pitch=(0.0, 0.0), roll=(-rotation, rotation),
                                     shift=shift, light=(0.8, 1.2), contrast=(0.9, 1.0), colour=(0.95, 1.05),
                                     blur=(0.0, 0.5), noise=(0.0, 0.02))

    def sample(self, n: int, size: int | tuple[int, int], *, channels: int = 3, relative_width: bool = False,
               generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Conditions:
        """``n`` rows for output images of ``size``; ``relative_width``: ``width`` is a factor of the image width.

        The centre is placed so that the object's frontal square stays inside the image when
        ``shift`` is 1 (it may leave the image under rotation and perspective).
        """
        check_positive_int("n", n)
        h, w = (size, size) if isinstance(size, int) else size
        width = _uniform(self.width, n, generator, device)
        if relative_width:
            width = width * w
        yaw = _uniform(self.yaw, n, generator, device)
        pitch = _uniform(self.pitch, n, generator, device)
        roll = _uniform(self.roll, n, generator, device)
        room = torch.stack([(w - width).clamp(min=0), (h - width * h / w if relative_width else h - width)
                            .clamp(min=0)], dim=1) / 2
        offset = (_uniform((-1.0, 1.0), n, generator, device, 2) * room * self.shift)
        centre = torch.tensor([w / 2, h / 2], device=device) + offset
        return Conditions(width, yaw, pitch, roll, centre, _uniform(self.light, n, generator, device),
                          _uniform(self.contrast, n, generator, device),
                          _uniform(self.colour, n, generator, device, channels),
                          _uniform(self.blur, n, generator, device), _uniform(self.noise, n, generator, device))


    def sample_like(self, x: torch.Tensor, n: int | None = None, *, relative_width: bool = False,
                    generator: torch.Generator | None = None) -> Conditions:
        """:meth:`sample` for images shaped like ``x`` (N×C×H×W), on its device; ``n`` rows (default: one per image)."""
        return self.sample(len(x) if n is None else n, (int(x.shape[-2]), int(x.shape[-1])), channels=int(x.shape[1]),
                           relative_width=relative_width, generator=generator, device=x.device)

LAB: dict[str, tuple[float, ...]] = {"widths": (40.0, 32.0, 24.0, 16.0), "angles": (0.0, 15.0, 30.0, 45.0),
                                     "lights": (0.6, 1.0, 1.4)}
LAB_SEED = 18_045
# What a lab draw varies besides the cell's width, angle and light: a little of everything else.
LAB_REST = TransformDistribution(width=(1.0, 1.0), yaw=(0.0, 0.0), pitch=(-5.0, 5.0), roll=(-5.0, 5.0), shift=0.3,
                                 light=(1.0, 1.0), contrast=(0.9, 1.0), colour=(0.95, 1.05), blur=(0.0, 0.6),
                                 noise=(0.0, 0.02))


def lab_grid(draws: int = 3, *, size: int = 48, channels: int = 3, seed: int = LAB_SEED,
             lab: dict[str, tuple[float, ...]] | None = None) -> tuple[Conditions, torch.Tensor]:
    """The lab test: every (width, angle, light) cell of ``LAB`` × ``draws`` held-out draws of the rest.

    The angle's sign (seen from the left or the right) alternates over a cell's draws. Returns the
    conditions and an int64 N×3 index (width, angle, light) per row, rows ordered cell by cell.
    Deterministic in ``seed``; the default seed is used by no distribution that crafts an attack.
    """
    check_positive_int("draws", draws)
    grid = lab or LAB
    cells = torch.cartesian_prod(*(torch.arange(len(grid[k])) for k in ("widths", "angles", "lights")))
    index = cells.repeat_interleave(draws, dim=0)
    n = len(index)
    g = torch.Generator().manual_seed(seed)
    rest = LAB_REST.sample(n, size, channels=channels, generator=g)
    width = torch.tensor(grid["widths"])[index[:, 0]]
    side = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    yaw = torch.tensor(grid["angles"])[index[:, 1]] * side
    light = torch.tensor(grid["lights"])[index[:, 2]]
    room = (size - width).clamp(min=0)[:, None] / 2
    centre = size / 2 + _uniform((-1.0, 1.0), n, g, None, 2) * room * LAB_REST.shift
    cond = rest._replace(width=width, yaw=yaw, light=light, centre=centre)
    return cond, index
