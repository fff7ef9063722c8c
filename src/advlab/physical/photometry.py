"""The scene's photometry: contrast, light, colour gain, Gaussian blur and camera noise, batched.

Applied to the whole image after the object is composited (the scene is lit, printed and
photographed as one): ``x·contrast + ½·(1 − contrast)`` (contrast about mid-grey), then
× ``light`` × ``colour`` (per channel) — one fused multiply-add, ``x·a + b`` — then a separable
Gaussian blur of ``blur`` pixels (replicate padding), then ``noise``·N(0, 1) camera noise drawn
from the generator, then clamped to [0, 1]. Each step is written so that its neutral value leaves
a pixel bit-for-bit unchanged (a = 1 and b = 0 exactly; an identity blur matrix adds exact zeros).

The blur is two batched matrix products per image: ``B_h · X · B_wᵀ``, where ``B`` is the banded
H×H (W×W) matrix of the row's Gaussian with the replicate padding folded into its first and last
columns. One ``bmm`` per direction for the whole batch is faster on a CPU than a depthwise
convolution with a kernel per image (measured in benchmarks/physical.py), and needs no padding.
"""

from __future__ import annotations

import math

import torch

from advlab._device import draw
from advlab.physical.conditions import Conditions

__all__ = ["MAX_BLUR", "blur", "blur_matrix", "photometric"]

MAX_BLUR = 3.0  # the largest sigma the blur covers (radius 3·sigma)


def blur_matrix(sigma: torch.Tensor, size: int, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """N×size×size: row i holds the Gaussian taps of output pixel i, replicate padding folded in.

    ``sigma`` 0 gives the identity matrix exactly.
    """
    dev = sigma.device
    t = torch.arange(-radius, radius + 1, device=dev, dtype=dtype)
    s = sigma.to(dtype)[:, None]
    k = torch.where(s > 0, torch.exp(-(t ** 2) / (2 * s.clamp(min=1e-6) ** 2)), (t == 0).to(dtype))
    k = k / k.sum(1, keepdim=True)  # N×(2r+1)
    src = (torch.arange(size, device=dev)[:, None] + torch.arange(-radius, radius + 1, device=dev)).clamp(0, size - 1)
    out = torch.zeros(len(sigma), size, size, device=dev, dtype=dtype)
    return out.scatter_add_(2, src.expand(len(sigma), -1, -1), k[:, None, :].expand(-1, size, -1).contiguous())


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur of ``x`` (N×C×H×W), sigma ≤ MAX_BLUR; sigma 0 leaves an image exactly."""
    smax = float(sigma.max()) if len(sigma) else 0.0
    if smax <= 0:
        return x
    if smax > MAX_BLUR or bool((sigma < 0).any()):
        raise ValueError(f"blur: sigma must lie in [0, {MAX_BLUR}] pixels, got values up to {smax:.3g}")
    n, c, h, w = x.shape
    r = max(1, math.ceil(3 * smax))
    across = blur_matrix(sigma, w, min(r, w - 1) if w > 1 else 0, x.dtype)  # N×W×W
    down = blur_matrix(sigma, h, min(r, h - 1) if h > 1 else 0, x.dtype)  # N×H×H
    rows = torch.bmm(x.reshape(n, c * h, w), across.transpose(1, 2)).view(n, c, h, w)
    return torch.matmul(down[:, None], rows)


def photometric(x: torch.Tensor, cond: Conditions, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """The scene's light, contrast, colour, blur and noise on images ``x`` (N×C×H×W), clamped to [0, 1]."""
    n, c = x.shape[:2]
    if cond.colour.shape != (n, c):
        raise ValueError(f"cond.colour: expected one gain per channel, {n}×{c}, got {tuple(cond.colour.shape)}")
    contrast = cond.contrast.to(x.dtype)[:, None]
    gain = (cond.light[:, None] * cond.colour).to(x.dtype)
    scale = (contrast * gain)[:, :, None, None]
    shift = (0.5 * (1 - contrast) * gain)[:, :, None, None]
    out = torch.addcmul(shift, x, scale)
    out = blur(out, cond.blur)
    if len(cond.noise) and float(cond.noise.max()) > 0:
        noise = draw(torch.randn, out.shape, generator=generator, device=x.device, dtype=x.dtype)
        out = torch.addcmul(out, noise, cond.noise.to(x.dtype)[:, None, None, None])
    return out.clamp(0.0, 1.0)
