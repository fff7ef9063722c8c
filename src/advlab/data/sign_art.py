"""The canonical traffic signs of the ``signs`` dataset, drawn with Pillow.

Each sign is drawn at 4× (256×256) and reduced to 64×64 with a Lanczos filter: an RGBA image whose
alpha is the sign's shape (1 inside, 0 outside, anti-aliased at the edge) and whose colour outside
the shape continues the sign's rim colour, so bilinear sampling at the edge never mixes in a colour
the sign does not have. Text uses Pillow's bundled font (``ImageFont.load_default(size=...)``,
thickened with a stroke); nothing is read from the system.

The designs follow the European (Vienna convention) signs in spirit, not to the millimetre:

* ``stop``: red octagon with a white border and "STOP";
* ``yield``: inverted triangle, red border, white inside;
* ``speed-30`` … ``speed-80``: white disc, red ring, black numbers;
* ``no-entry``: red disc with a white horizontal bar;
* ``priority``: yellow diamond with a white border (and a thin black edge);
* ``turn-left``, ``turn-right``, ``ahead-only``, ``roundabout``: blue disc, white rim, white arrows.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

SIGN_CLASSES = ("stop", "yield", "speed-30", "speed-50", "speed-70", "speed-80", "no-entry", "priority",
                "turn-left", "turn-right", "ahead-only", "roundabout")
SIGN_SIZE = 64
_SCALE = 4
_S = SIGN_SIZE * _SCALE  # drawing resolution

RED = (200, 16, 32)
WHITE = (245, 245, 245)
BLACK = (18, 18, 18)
BLUE = (0, 78, 162)
YELLOW = (250, 190, 0)

Point = tuple[float, float]


def _polygon(n: int, radius: float, start_deg: float) -> list[Point]:
    """The vertices of a regular ``n``-gon centred in the canvas."""
    c = _S / 2
    return [(c + radius * math.cos(math.radians(start_deg + 360 * k / n)),
             c + radius * math.sin(math.radians(start_deg + 360 * k / n))) for k in range(n)]


def _scaled(points: list[Point], f: float) -> list[Point]:
    """``points`` shrunk towards the canvas centre by the factor ``f``."""
    c = _S / 2
    return [(c + (x - c) * f, c + (y - c) * f) for x, y in points]


def _disc(draw: ImageDraw.ImageDraw, f: float, fill: tuple[int, int, int]) -> None:
    """A disc of radius ``f`` × the half-canvas, centred."""
    r, c = f * _S / 2, _S / 2
    draw.ellipse((c - r, c - r, c + r, c + r), fill=fill)


def _text(draw: ImageDraw.ImageDraw, text: str, size: int, fill: tuple[int, int, int], stroke: int,
          dy: float = 0.0) -> None:
    """``text`` centred (shifted down by ``dy`` px) in Pillow's bundled font, thickened by ``stroke`` px."""
    font = ImageFont.load_default(size=size)
    draw.text((_S / 2, _S / 2 + dy), text, font=font, fill=fill, anchor="mm", stroke_width=stroke, stroke_fill=fill)


def _arrow(draw: ImageDraw.ImageDraw, path: list[Point], width: float, head: float) -> None:
    """A white arrow along the polyline ``path`` (canvas fractions), its head at the last point."""
    pts = [(x * _S, y * _S) for x, y in path]
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    ang = math.atan2(y1 - y0, x1 - x0)
    h = head * _S
    base = (x1 - h * math.cos(ang), y1 - h * math.sin(ang))
    draw.line([*pts[:-1], base], fill=WHITE, width=round(width * _S), joint="curve")
    for x, y in pts[1:-1]:  # round the bends
        r = width * _S / 2
        draw.ellipse((x - r, y - r, x + r, y + r), fill=WHITE)
    side = (math.cos(ang + math.pi / 2) * h * 0.8, math.sin(ang + math.pi / 2) * h * 0.8)
    draw.polygon([(x1, y1), (base[0] + side[0], base[1] + side[1]), (base[0] - side[0], base[1] - side[1])],
                 fill=WHITE)


def _roundabout(draw: ImageDraw.ImageDraw) -> None:
    """Three arrows chasing each other anticlockwise round the centre."""
    c, r, w = _S / 2, 0.3 * _S, round(0.09 * _S)
    for k in range(3):
        a0 = 90 + 120 * k + 18  # degrees anticlockwise from the x axis (y up); Pillow takes their negatives
        a1 = a0 + 62
        draw.arc((c - r, c - r, c + r, c + r), start=-a1, end=-a0, fill=WHITE, width=w)
        rm, hw = r - w / 2, 0.1 * _S  # the band's middle radius; the head's half-width
        tip, back = math.radians(a1 + 24), math.radians(a1 - 1)  # the head points along the circle, anticlockwise
        draw.polygon([(c + rm * math.cos(tip), c - rm * math.sin(tip)),
                      (c + (rm - hw) * math.cos(back), c - (rm - hw) * math.sin(back)),
                      (c + (rm + hw) * math.cos(back), c - (rm + hw) * math.sin(back))], fill=WHITE)


def _shape(cls: str) -> tuple[str, tuple[int, int, int]]:
    """The outline (``"octagon"``, ``"triangle"``, ``"diamond"``, ``"disc"``) and rim colour of ``cls``."""
    if cls == "stop":
        return "octagon", WHITE
    if cls == "yield":
        return "triangle", RED
    if cls == "priority":
        return "diamond", WHITE
    if cls.startswith("speed") or cls == "no-entry":
        return "disc", RED
    return "disc", WHITE


def _outline(shape: str) -> list[Point] | None:
    """The polygon of ``shape`` filling the canvas (``None`` for the disc)."""
    if shape == "octagon":
        return _polygon(8, _S / 2 / math.cos(math.pi / 8), 22.5)
    if shape == "triangle":
        h = _S * math.sqrt(3) / 2 * 0.98
        top = (_S - h) / 2 + 0.06 * _S
        return [(0.01 * _S, top), (0.99 * _S, top), (_S / 2, top + h)]
    if shape == "diamond":
        return _polygon(4, _S / 2, -90)
    return None


def _paint(draw: ImageDraw.ImageDraw, cls: str, outline: list[Point] | None) -> None:
    """The sign's face inside its rim."""
    if cls == "stop":
        assert outline is not None
        draw.polygon(_scaled(outline, 0.9), fill=RED)
        _text(draw, "STOP", round(0.34 * _S), WHITE, round(0.012 * _S))
    elif cls == "yield":
        assert outline is not None
        c = (sum(x for x, _ in outline) / 3, sum(y for _, y in outline) / 3)
        draw.polygon([(c[0] + (x - c[0]) * 0.6, c[1] + (y - c[1]) * 0.6) for x, y in outline], fill=WHITE)
    elif cls == "priority":
        assert outline is not None
        draw.polygon(_scaled(outline, 0.8), fill=BLACK)
        draw.polygon(_scaled(outline, 0.74), fill=WHITE)
        draw.polygon(_scaled(outline, 0.56), fill=YELLOW)
    elif cls.startswith("speed"):
        _disc(draw, 0.76, WHITE)
        _text(draw, cls.split("-")[1], round(0.5 * _S), BLACK, round(0.02 * _S), dy=0.01 * _S)
    elif cls == "no-entry":
        _disc(draw, 1.0, RED)
        draw.rectangle((0.17 * _S, 0.41 * _S, 0.83 * _S, 0.59 * _S), fill=WHITE)
    else:
        _disc(draw, 0.92, BLUE)
        arrows = {"ahead-only": [(0.5, 0.8), (0.5, 0.2)],
                  "turn-right": [(0.42, 0.8), (0.42, 0.46), (0.8, 0.46)],
                  "turn-left": [(0.58, 0.8), (0.58, 0.46), (0.2, 0.46)]}
        if cls == "roundabout":
            _roundabout(draw)
        else:
            _arrow(draw, arrows[cls], 0.11, 0.22)


def _draw(cls: str) -> tuple[Image.Image, Image.Image]:
    """The sign ``cls`` at drawing resolution: its RGB face and its alpha (the shape) as an ``L`` image."""
    shape, rim = _shape(cls)
    rgb = Image.new("RGB", (_S, _S), rim)
    alpha = Image.new("L", (_S, _S), 0)
    outline = _outline(shape)
    if outline is None:
        ImageDraw.Draw(alpha).ellipse((0, 0, _S - 1, _S - 1), fill=255)
    else:
        ImageDraw.Draw(alpha).polygon(outline, fill=255)
    _paint(ImageDraw.Draw(rgb), cls, outline)
    return rgb, alpha


def _class_name(cls: int | str) -> str:
    """The class name of an index or a name; unknown ones fail in one line."""
    if isinstance(cls, str):
        if cls not in SIGN_CLASSES:
            raise ValueError(f"cls: unknown sign {cls!r}; known: {', '.join(SIGN_CLASSES)}")
        return cls
    if not 0 <= int(cls) < len(SIGN_CLASSES):
        raise ValueError(f"cls: sign index must be in [0, {len(SIGN_CLASSES) - 1}], got {cls}")
    return SIGN_CLASSES[int(cls)]


@functools.lru_cache(maxsize=len(SIGN_CLASSES))
def _rgba(name: str) -> torch.Tensor:
    """The sign `name` drawn and reduced to 64×64 RGBA (cached: callers clone)."""
    rgb, alpha = _draw(name)
    size = (SIGN_SIZE, SIGN_SIZE)
    rgb_a = np.asarray(rgb.resize(size, Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    a = np.asarray(alpha.resize(size, Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    out = torch.from_numpy(np.concatenate([rgb_a.transpose(2, 0, 1), a[None]], 0)).clamp(0, 1)
    out.requires_grad_(False)
    return out


def sign_rgba(cls: int | str) -> torch.Tensor:
    """The canonical sign ``cls`` (index or name) as a float32 4×64×64 tensor in [0, 1]: RGB + alpha.

    Drawn once per process and cached; a copy is returned, so callers may change it freely.

    Example:
        >>> sign_rgba("stop").shape
        torch.Size([4, 64, 64])
    """
    return _rgba(_class_name(cls)).clone()


def sign_mask(cls: int | str) -> torch.Tensor:
    """The shape of sign ``cls``: float32 64×64 alpha in [0, 1] (1 inside the sign)."""
    return _rgba(_class_name(cls))[3].clone()


def all_signs() -> torch.Tensor:
    """Every canonical sign, in :data:`SIGN_CLASSES` order: float32 12×4×64×64."""
    return torch.stack([_rgba(c) for c in SIGN_CLASSES])


__all__ = ["SIGN_CLASSES", "SIGN_SIZE", "all_signs", "sign_mask", "sign_rgba"]
