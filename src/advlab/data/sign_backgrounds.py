"""Procedural backgrounds for the ``signs`` dataset: street-like scenes drawn in torch from a generator.

Six kinds, each a batch operation (no per-image Python loop), drawn in equal shares:

* ``sky``: a vertical blue-to-pale gradient over ground (grass, asphalt or earth) below a random horizon;
* ``road``: asphalt with grain and one or two painted lane lines at a random slant, sky above some;
* ``foliage``: greens and browns in multi-octave smooth noise, with dark gaps;
* ``blocks``: a gradient wall with rectangles of muted colours (buildings, windows, hoardings);
* ``stripes``: two colours in oriented stripes of random period and sharpness (fences, facades);
* ``noise``: smooth noise of arbitrary colours (anything else).

Every kind gets a mild multiplicative texture. Backgrounds contain nothing shaped like a sign.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

KINDS = ("sky", "road", "foliage", "blocks", "stripes", "noise")


def _u(g: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform draws in [low, high)."""
    return low + (high - low) * torch.rand(*shape, generator=g)


@functools.lru_cache(maxsize=16)
def _upsampler(res: int, size: int) -> torch.Tensor:
    """The size×res matrix of 1-D bicubic upsampling from res to size samples (bicubic is separable)."""
    eye = torch.eye(res).view(res, 1, 1, res)
    return F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=False).view(res, size).T.contiguous()


def _smooth(g: torch.Generator, n: int, c: int, res: int, size: int) -> torch.Tensor:
    """Smooth noise about [0, 1] (bicubic overshoots a little): a res×res uniform grid upsampled to size×size."""
    grid = torch.rand(n, c, res, res, generator=g)
    up = _upsampler(res, size)
    return up @ grid @ up.T


def _octaves(g: torch.Generator, n: int, c: int, size: int) -> torch.Tensor:
    """Multi-octave smooth noise about [0, 1] (grids 3, 6, 12, 24; weights halving), mean about 0.5."""
    out = torch.full((n, c, size, size), 0.5)
    for k, res in enumerate((3, 6, 12, 24)):
        grid = (torch.rand(n, c, res, res, generator=g) - 0.5) * (0.5**k / 1.2)
        up = _upsampler(res, size)
        out += up @ grid @ up.T
    return out


def _coords(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1]: ys, xs of shape 1×1×size×size."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return t.view(1, 1, size, 1).expand(1, 1, size, size), t.view(1, 1, 1, size).expand(1, 1, size, size)


RGB = tuple[float, float, float]


def _colour(g: torch.Generator, n: int, low: RGB, high: RGB) -> torch.Tensor:
    """N×3×1×1 colours, each channel uniform in [low, high)."""
    lo, hi = torch.tensor(low), torch.tensor(high)
    return (lo + (hi - lo) * torch.rand(n, 3, generator=g)).view(n, 3, 1, 1)


def _grey(g: torch.Generator, n: int, low: float, high: float, tint: float = 0.04) -> torch.Tensor:
    """N×3×1×1 greys uniform in [low, high), each channel tinted by up to ±``tint``."""
    return _u(g, n, 1, 1, 1, low=low, high=high) + tint * (2 * torch.rand(n, 3, 1, 1, generator=g) - 1)


def _ground(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Grass, asphalt or earth with grain (N×3×size×size)."""
    palettes = torch.stack([_colour(g, n, (0.15, 0.35, 0.08), (0.35, 0.6, 0.25)),  # grass
                            _grey(g, n, 0.3, 0.55),  # asphalt
                            _colour(g, n, (0.35, 0.25, 0.15), (0.6, 0.45, 0.3))])  # earth
    pick = torch.randint(0, 3, (n,), generator=g)
    base = palettes[pick, torch.arange(n)]
    grain = _octaves(g, n, 1, size)
    return base * (0.7 + 0.6 * grain)


def _sky(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    ys, _ = _coords(size)
    top = _colour(g, n, (0.3, 0.5, 0.8), (0.6, 0.8, 1.0))
    low = _colour(g, n, (0.7, 0.75, 0.8), (0.95, 0.97, 1.0))
    sky = top + (low - top) * ys
    clouds = _smooth(g, n, 1, 4, size)
    sky = sky + 0.35 * (clouds - 0.5).clamp(min=0) * _u(g, n, 1, 1, 1)
    horizon = _u(g, n, 1, 1, 1, low=0.45, high=1.15)  # > 1: no ground in view
    return torch.where(ys < horizon, sky, _ground(g, n, size))


def _line(ys: torch.Tensor, xs: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
    """A painted line's coverage (N×1×S×S in [0, 1]): random slant, offset and width."""
    ang = _u(g, n, 1, 1, 1, low=-0.9, high=0.9) + math.pi / 2
    off = _u(g, n, 1, 1, 1, low=-0.45, high=0.45)
    width = _u(g, n, 1, 1, 1, low=0.015, high=0.06)
    dist = ((xs - 0.5) * torch.sin(ang) - (ys - 0.5) * torch.cos(ang) - off).abs()
    return ((width - dist) * 48).clamp(0, 1)


def _road(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    ys, xs = _coords(size)
    asphalt = _grey(g, n, 0.2, 0.55) * (0.8 + 0.4 * _octaves(g, n, 1, size))
    asphalt = asphalt + 0.06 * (torch.rand(n, 1, size, size, generator=g) - 0.5)
    white, yellow = torch.tensor([0.92, 0.92, 0.9]).view(1, 3, 1, 1), torch.tensor([0.9, 0.75, 0.1]).view(1, 3, 1, 1)
    paint = torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.7, white, yellow)
    out = asphalt
    for _ in range(2):
        cover = _line(ys, xs, g, n) * (torch.rand(n, 1, 1, 1, generator=g) < 0.8)
        out = out + (paint - out) * cover
    horizon = _u(g, n, 1, 1, 1, low=-0.6, high=0.45)  # < 0: road only
    return torch.where(ys < horizon, _sky(g, n, size), out)


def _foliage(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    green = _colour(g, n, (0.08, 0.25, 0.04), (0.35, 0.55, 0.25))
    other = _colour(g, n, (0.25, 0.2, 0.08), (0.55, 0.5, 0.2))
    mix = _octaves(g, n, 1, size)
    out = green + (other - green) * (mix > _u(g, n, 1, 1, 1, low=0.5, high=0.8)).float() * mix
    leaves = _octaves(g, n, 1, size)
    out = out * (0.45 + 0.9 * leaves)
    gaps = (_smooth(g, n, 1, 12, size) < _u(g, n, 1, 1, 1, low=0.0, high=0.25)).float()
    return out * (1 - 0.7 * gaps)


def _blocks(g: torch.Generator, n: int, size: int, count: int = 7) -> torch.Tensor:
    ys, xs = _coords(size)
    top, bottom = _colour(g, n, (0.3, 0.3, 0.3), (0.9, 0.9, 0.9)), _colour(g, n, (0.2, 0.2, 0.2), (0.8, 0.8, 0.8))
    out = top + (bottom - top) * ys
    for _ in range(count):
        x0, y0 = _u(g, n, 1, 1, 1, low=-0.2, high=0.9), _u(g, n, 1, 1, 1, low=-0.2, high=0.9)
        w, h = _u(g, n, 1, 1, 1, low=0.08, high=0.6), _u(g, n, 1, 1, 1, low=0.08, high=0.6)
        inside = ((xs >= x0) & (xs < x0 + w) & (ys >= y0) & (ys < y0 + h)).float()
        tint = _colour(g, n, (0.1, 0.1, 0.1), (0.85, 0.8, 0.75))
        grey = tint.mean(1, keepdim=True)
        colour = grey + (tint - grey) * 0.6  # muted: walls, windows, hoardings
        out = out + (colour - out) * inside
    return out * (0.85 + 0.3 * _octaves(g, n, 1, size))


def _stripes(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    ys, xs = _coords(size)
    a, b = _colour(g, n, (0.05, 0.05, 0.05), (0.95, 0.95, 0.95)), _colour(g, n, (0.05, 0.05, 0.05), (0.95, 0.95, 0.95))
    ang = _u(g, n, 1, 1, 1, high=math.pi)
    period = _u(g, n, 1, 1, 1, low=4 / 48, high=16 / 48)
    phase = _u(g, n, 1, 1, 1, high=2 * math.pi)
    wave = torch.sin(2 * math.pi * (xs * torch.cos(ang) + ys * torch.sin(ang)) / period + phase)
    sharp = _u(g, n, 1, 1, 1, low=1.0, high=8.0)
    t = torch.sigmoid(sharp * wave)
    return (a + (b - a) * t) * (0.85 + 0.3 * _octaves(g, n, 1, size))


def _noise(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    res = int(torch.randint(2, 9, (1,), generator=g))
    return 0.05 + 0.9 * (0.6 * _smooth(g, n, 3, res, size) + 0.4 * _octaves(g, n, 3, size))


_MAKERS = {"sky": _sky, "road": _road, "foliage": _foliage, "blocks": _blocks, "stripes": _stripes, "noise": _noise}


def _batch(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    """One batch of ``n`` backgrounds: the kinds in equal shares, in a random order."""
    kind = (torch.arange(n) % len(KINDS))[torch.randperm(n, generator=g)]
    out = torch.empty(n, 3, size, size)
    for k, name in enumerate(KINDS):
        idx = (kind == k).nonzero(as_tuple=True)[0]
        if len(idx):
            out[idx] = _MAKERS[name](g, len(idx), size)
    return (out * (0.92 + 0.16 * _smooth(g, n, 1, 16, size))).clamp(0, 1)


def make_backgrounds(n: int, *, seed: int, size: int = 48, batch: int = 512) -> torch.Tensor:
    """``n`` backgrounds, float32 N×3×size×size in [0, 1], the same bytes for the same seed.

    Drawn in batches of ``batch`` (small tensors stay in cache: twice as fast as one big batch);
    in each batch the kinds (:data:`KINDS`) come in equal shares in a seeded random order.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.cat([_batch(g, min(batch, n - i), size) for i in range(0, n, batch)]) if n else torch.empty(
        0, 3, size, size)


__all__ = ["KINDS", "make_backgrounds"]
