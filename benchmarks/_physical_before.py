"""The physical camera as the lead wrote it (commit dbb7421, src/advlab/physical/render.py), kept verbatim below

this docstring as the "before" of benchmarks/physical.py speed: the same API at its default supersample=2.
"""

# ruff: noqa
# fmt: off

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from advlab._checks import check_positive_int
from advlab._device import draw
from advlab.physical.conditions import Conditions

__all__ = ["DISTANCE", "MAX_BLUR", "homography", "photometric", "render", "transform_images", "warp"]

DISTANCE = 5.0
MAX_BLUR = 3.0  # the largest sigma the blur kernel covers (radius 3·sigma)


def _rotation(cond: Conditions) -> torch.Tensor:
    """N×3×3 rotation R_z(roll) · R_y(yaw) · R_x(pitch)."""
    y, p, r = (torch.deg2rad(a.to(torch.float64)) for a in (cond.yaw, cond.pitch, cond.roll))
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def homography(cond: Conditions) -> torch.Tensor:
    """N×3×3 float64 H mapping object coordinates (u, v, 1) to homogeneous output pixel coordinates."""
    rot = _rotation(cond)
    f = cond.width.to(torch.float64) / 2 * DISTANCE
    c = cond.centre.to(torch.float64)
    k = torch.zeros(len(f), 3, 3, dtype=torch.float64, device=f.device)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = f, f, c[:, 0], c[:, 1], 1.0
    t = torch.tensor([0.0, 0.0, DISTANCE], dtype=torch.float64, device=f.device).expand(len(f), 3)
    return k @ torch.stack([rot[:, :, 0], rot[:, :, 1], t], dim=2)


def _sampling_grid(cond: Conditions, out_hw: tuple[int, int], aspect: float, supersample: int) -> torch.Tensor:
    """N×(H·s)×(W·s)×2 grid_sample coordinates of the object at each (sub)pixel of the output."""
    h, w = out_hw
    s = supersample
    dev = cond.width.device
    inv = torch.linalg.inv(homography(cond)).to(torch.float32)  # N×3×3, inverted in float64
    ys = (torch.arange(h * s, device=dev, dtype=torch.float32) + 0.5) / s
    xs = (torch.arange(w * s, device=dev, dtype=torch.float32) + 0.5) / s
    # q = inv · (x, y, 1): separable in x and y, so three broadcast sums instead of a matmul per pixel
    q = (inv[:, None, None, :, 0] * xs[None, None, :, None] + inv[:, None, None, :, 1] * ys[None, :, None, None]
         + inv[:, None, None, :, 2])  # N×(H·s)×(W·s)×3
    depth = q[..., 2:]
    uv = q[..., :2] / torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
    uv = torch.where(depth > 0, uv, torch.full_like(uv, 4.0))  # behind the camera: outside the object
    return uv * torch.tensor([1.0, aspect], device=dev)


def warp(obj: torch.Tensor, cond: Conditions, out_hw: tuple[int, int], *, supersample: int = 2,
         padding: str = "zeros") -> torch.Tensor:
    """``obj`` (N|1 × C × S_h × S_w) as seen at ``cond`` in an output of ``out_hw``; zeros outside it.

    The object's width spans u ∈ [−1, 1]; its height keeps its aspect ratio.
    """
    check_positive_int("supersample", supersample)
    n = cond.rows
    aspect = obj.shape[-1] / obj.shape[-2]  # v spans ±S_h/S_w: grid_sample's y is v·S_w/S_h
    grid = _sampling_grid(cond, out_hw, aspect, supersample)
    src = obj.expand(n, -1, -1, -1) if obj.shape[0] == 1 and n != 1 else obj
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur (sigma ≤ MAX_BLUR); sigma 0 leaves an image exactly."""
    smax = float(sigma.max())
    if smax <= 0:
        return x
    if smax > MAX_BLUR:
        raise ValueError(f"blur: sigma must be at most {MAX_BLUR} pixels, got {smax:.3g}")
    n, c, h, w = x.shape
    r = max(1, math.ceil(3 * smax))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype)[:, None]
    k = torch.where(s > 0, torch.exp(-(t ** 2) / (2 * s.clamp(min=1e-6) ** 2)), (t == 0).to(x.dtype))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N·C)×(2r+1)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def photometric(x: torch.Tensor, cond: Conditions, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """The scene's light, contrast, colour, blur and noise on images ``x`` (N×C×H×W), clamped to [0, 1]."""
    c = cond.contrast.to(x.dtype)[:, None, None, None]
    gain = (cond.light[:, None] * cond.colour).to(x.dtype)[:, :, None, None]
    out = (x * c + 0.5 * (1 - c)) * gain
    out = _blur(out, cond.blur)
    if float(cond.noise.max()) > 0:
        out = out + cond.noise.to(x.dtype)[:, None, None, None] * draw(
            torch.randn, out.shape, generator=generator, device=x.device, dtype=x.dtype)
    return out.clamp(0.0, 1.0)


def render(obj: torch.Tensor, background: torch.Tensor, cond: Conditions, *,
           generator: torch.Generator | None = None, supersample: int = 2) -> torch.Tensor:
    """``obj`` (N|1 × (C+1) × S × S: colour and alpha in [0, 1]) seen at ``cond`` in front of ``background``.

    The object is warped (:func:`warp`), alpha-blended over ``background`` (N×C×H×W), and the whole
    image goes through :func:`photometric`. Differentiable with respect to ``obj`` and ``background``.
    """
    n, c = background.shape[:2]
    if obj.dim() != 4 or obj.shape[1] != c + 1:
        raise ValueError(f"obj: expected (N|1)×{c + 1}×S×S (colour + alpha for a {c}-channel background), "
                         f"got {tuple(obj.shape)}")
    if cond.rows != n or obj.shape[0] not in (1, n):
        raise ValueError(f"cond/obj: need one row per background image ({n}), got {cond.rows} conditions and "
                         f"{obj.shape[0]} objects")
    alpha = obj[:, c:]
    premultiplied = torch.cat([obj[:, :c] * alpha, alpha], dim=1)  # so colour never bleeds in from outside
    seen = warp(premultiplied, cond, tuple(background.shape[-2:]), supersample=supersample)  # type: ignore[arg-type]
    scene = seen[:, :c] + (1 - seen[:, c:]) * background
    return photometric(scene, cond, generator=generator)


def _geometric_identity(cond: Conditions, h: int, w: int) -> torch.Tensor:
    """Rows whose geometry leaves an h×w image where it is."""
    centre = torch.tensor([w / 2, h / 2], device=cond.centre.device, dtype=cond.centre.dtype)
    return ((cond.width == w) & (cond.yaw == 0) & (cond.pitch == 0) & (cond.roll == 0)
            & (cond.centre == centre).all(1))


def transform_images(x: torch.Tensor, cond: Conditions, *, generator: torch.Generator | None = None,
                     fill: float = 0.0, supersample: int = 1) -> torch.Tensor:
    """The whole image as the plane: ``x`` (N×C×H×W) seen at ``cond`` (``fill`` outside it), then photometry.

    Rows with identity geometry are not resampled, so :meth:`Conditions.identity` returns ``x``
    exactly. Differentiable with respect to ``x``.
    """
    n, c, h, w = x.shape
    if cond.rows != n:
        raise ValueError(f"cond: need one row per image ({n}), got {cond.rows}")
    keep = _geometric_identity(cond, h, w)
    out = x
    if not bool(keep.all()):
        moved = (~keep).nonzero()[:, 0]
        rgba = torch.cat([x[moved] - fill, torch.ones_like(x[moved, :1])], dim=1)
        seen = warp(rgba, cond.select(moved), (h, w), supersample=supersample)
        out = x.index_put((moved,), seen[:, :c] + fill)
    return photometric(out, cond, generator=generator)
