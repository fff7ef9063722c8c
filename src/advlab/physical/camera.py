"""Seeing a planar object: a differentiable, batched perspective warp, compositing, and the photometry.

Camera model. The object is a square plane with coordinates (u, v) ∈ [−1, 1]² (u right, v down),
rotated by R = R_z(roll) · R_y(yaw) · R_x(pitch) and placed at distance ``DISTANCE`` (in units of
its half-width) in front of a pinhole camera whose focal length makes the frontal object exactly
``width`` pixels wide, its centre landing on ``centre``. The map from (u, v, 1) to homogeneous
pixel coordinates is the homography H = K [r₁ r₂ t]; every output pixel is pulled back through
H⁻¹ (one batched matrix product for all pixels of all rows) and the object sampled there
bilinearly (``grid_sample``). A distance of 5 half-widths foreshortens the far edge of a sign
seen at 45° by about 12 %: a sign seen from a few metres.

Anti-aliasing. Bilinear sampling of a 64-pixel object into 16 output pixels would skip three
texels of four (aliasing). Before sampling, the object is pre-filtered to the resolution the row
needs — a mip level per axis (a "rip-map": u and v separately, since a slanted sign is compressed
along one axis only) from a ladder of half-octave sizes, made with an antialiased
``F.interpolate`` — chosen as the smallest level with at least one texel per output pixel, where
the object is largest (its nearest corner, from the homography's Jacobian). Rows sharing levels
are sampled together. So one sample per output pixel suffices (``supersample=1``, the default);
``supersample`` > 1 samples a finer grid and averages it down, on top of the pre-filter.

Photometry: :mod:`advlab.physical.photometry`. The warp is skipped for rows of
:func:`transform_images` whose geometry is the identity, so
:meth:`~advlab.physical.Conditions.identity` returns an image exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advlab._checks import check_positive_int
from advlab.physical.conditions import Conditions
from advlab.physical.photometry import photometric

__all__ = ["DISTANCE", "homography", "mip_levels", "render", "transform_images", "warp"]

DISTANCE = 5.0
_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


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


def _sampling_grid(inv: torch.Tensor, out_hw: tuple[int, int], supersample: int, affine: torch.Tensor,
                   limit: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """N×(H·s)×(W·s)×2 grid_sample coordinates of the object at each (sub)pixel.

    ``inv`` is H⁻¹ (N×3×3, float64) with grid_sample's y already scaled. Object coordinates
    (u, y) are clamped to ±``limit`` (N×2: one texel beyond the object's edge, where the
    sampled value is 0), then mapped by the per-row ``affine`` (N×2×2: scale, offset) into the
    texture (an atlas of mip levels); the affine is folded into H⁻¹ and the clamp moved after it.
    The grid has the ``dtype`` of the images it samples.
    """
    h, w = out_hw
    s = supersample
    dev = inv.device
    ys = (torch.arange(h * s, device=dev, dtype=torch.float64) + 0.5) / s
    xs = (torch.arange(w * s, device=dev, dtype=torch.float64) + 0.5) / s
    pix = torch.stack([xs.expand(h * s, -1), ys[:, None].expand(-1, w * s),
                       torch.ones(h * s, w * s, device=dev, dtype=torch.float64)], dim=-1).view(-1, 3)  # P×3
    a, b = affine[:, :, 0], affine[:, :, 1]  # N×2
    m = inv.clone()
    m[:, :2] = a[:, :, None] * inv[:, :2] + b[:, :, None] * inv[:, 2:]  # (a·q + b·q_z) / q_z = a·(q/q_z) + b
    q = torch.matmul(pix.to(dtype), m.to(dtype).transpose(1, 2))  # N×P×3: one bmm
    depth = q[..., 2:]
    lo, hi = (b - a * limit).to(dtype)[:, None], (b + a * limit).to(dtype)[:, None]
    uv = torch.clamp(q[..., :2] / depth, min=lo, max=hi)
    if float(depth.min()) <= 1e-9:  # rays that miss the plane or meet it behind the camera: outside the object
        uv = torch.where(depth > 1e-9, uv, lo)
    return uv.view(-1, h * s, w * s, 2)


def _ladder(size: int) -> torch.Tensor:
    """Half-octave mip sizes from ``size`` down to 2: size, size/√2, size/2 and so on."""
    sizes: list[int] = []
    k = 0
    while True:
        level = round(size * 2 ** (-k / 2))
        if level < 2:
            break
        if not sizes or level < sizes[-1]:
            sizes.append(level)
        k += 1
    return torch.tensor(sizes or [size])


def mip_levels(h: torch.Tensor, src_hw: tuple[int, int], supersample: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the (height, width) in texels to pre-filter an S_h×S_w object to before sampling it.

    ``h`` is the N×3×3 homography. The output pixels per object unit along u and v are the norms
    of H's Jacobian columns, taken at the corner where they are largest; a level needs at least
    one texel per (sub)pixel there. Never more than the object's own size (no upsampling).
    """
    sh, sw = src_hw
    corners = torch.tensor(_CORNERS, dtype=h.dtype, device=h.device)
    pts = torch.cat([corners, torch.ones(4, 1, dtype=h.dtype, device=h.device)], 1)  # 4×3
    q = h @ pts.T  # N×3×4
    depth = q[:, 2:]
    p = q[:, :2] / depth
    du = (h[:, :2, 0:1] - p * h[:, 2:, 0:1]) / depth  # N×2×4: ∂pixel/∂u at each corner
    dv = (h[:, :2, 1:2] - p * h[:, 2:, 1:2]) / depth
    behind = (depth <= 0).any(2).squeeze(1)
    need_w = du.norm(dim=1).amax(1) * 2 * supersample  # u spans 2 units over S_w texels
    need_h = dv.norm(dim=1).amax(1) * 2 * (sh / sw) * supersample  # v spans 2·S_h/S_w units
    out = []
    for need, size in ((need_h, sh), (need_w, sw)):
        ladder = _ladder(size).to(h.device)
        fits = (ladder[None, :] >= need[:, None] - 1e-6).to(torch.int64)  # ladder decreasing
        idx = (fits.sum(1) - 1).clamp(min=0)  # the last (smallest) level that still fits
        level = torch.where(behind, ladder[0], ladder[idx])
        out.append(level)
    return out[0], out[1]


def _prefilter(obj: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``obj`` resampled to ``size`` with an antialiased (area-weighted triangle) filter; itself at full size."""
    if size == tuple(obj.shape[-2:]):
        return obj
    return F.interpolate(obj, size=size, mode="bilinear", antialias=True, align_corners=False)

GUTTER = 2  # zero texels around each level in the atlas; samples are clamped to one texel past the edge
_KEY = 100_000  # (height, width) of a level as one integer: height·_KEY + width


def _atlas(obj: torch.Tensor, levels: list[tuple[int, int]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """One texture (1×C×H_a×W_a) holding ``obj`` (1×C×…) pre-filtered to each level side by side.

    Each level is framed by ``GUTTER`` zero texels, so a sample clamped one texel past a level's
    edge reads zeros (as grid_sample's zero padding would). Returns the atlas and each level's
    top-left texel (x, y).
    """
    height = max(lh for lh, _ in levels) + 2 * GUTTER
    pieces, places, x = [], [], 0
    for lh, lw in levels:
        pieces.append(F.pad(_prefilter(obj, (lh, lw)), (GUTTER, 0, GUTTER, height - lh - GUTTER)))
        places.append((x + GUTTER, GUTTER))
        x += lw + GUTTER
    pieces.append(obj.new_zeros(1, obj.shape[1], height, GUTTER))
    return torch.cat(pieces, dim=3), places


def _limit(lh: torch.Tensor, lw: torch.Tensor) -> torch.Tensor:
    """N×2: one texel of each row's level beyond the object's edge, in its [−1, 1] coordinates."""
    return 1 + 2 / torch.stack([lw, lh], 1).to(torch.float64)


def _shared(obj: torch.Tensor, inv: torch.Tensor, lh: torch.Tensor, lw: torch.Tensor, out_hw: tuple[int, int],
            supersample: int) -> torch.Tensor:
    """One object seen by every row: all its levels in one atlas, all rows in one grid_sample call."""
    uniq, which = torch.unique(lh * _KEY + lw, return_inverse=True)
    atlas, places = _atlas(obj, [(int(k) // _KEY, int(k) % _KEY) for k in uniq.tolist()])
    dev, f64 = inv.device, torch.float64
    atlas_wh = torch.tensor([atlas.shape[-1], atlas.shape[-2]], dtype=f64, device=dev)
    size = torch.stack([lw, lh], 1).to(f64)
    corner = torch.tensor(places, dtype=f64, device=dev)[which]
    affine = torch.stack([size / atlas_wh, (2 * corner + size) / atlas_wh - 1], 2)  # level [−1, 1] → atlas
    grid = _sampling_grid(inv, out_hw, supersample, affine, _limit(lh, lw), obj.dtype)
    n, gh, gw, _ = grid.shape
    out = F.grid_sample(atlas, grid.reshape(1, n * gh, gw, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(atlas.shape[1], n, gh, gw).transpose(0, 1).contiguous()


def _per_row(obj: torch.Tensor, inv: torch.Tensor, lh: torch.Tensor, lw: torch.Tensor, out_hw: tuple[int, int],
             supersample: int, padding: str) -> torch.Tensor:
    """One object per row: rows grouped by level, each group sampled from its own pre-filtered objects."""
    n = len(inv)
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64, device=inv.device).expand(n, 2, 2)
    limit = _limit(lh, lw) if padding == "zeros" else torch.full((n, 2), 1e6, dtype=torch.float64, device=inv.device)
    grid = _sampling_grid(inv, out_hw, supersample, same, limit, obj.dtype)
    key = lh * _KEY + lw
    groups = torch.unique(key).tolist()
    if len(groups) == 1:
        return F.grid_sample(_prefilter(obj, (groups[0] // _KEY, groups[0] % _KEY)), grid, mode="bilinear",
                             padding_mode=padding, align_corners=False)
    out = grid.new_zeros(n, obj.shape[1], grid.shape[1], grid.shape[2])
    for k in groups:
        rows = (key == k).nonzero()[:, 0]
        seen = F.grid_sample(_prefilter(obj[rows], (k // _KEY, k % _KEY)), grid[rows], mode="bilinear",
                             padding_mode=padding, align_corners=False)
        out.index_copy_(0, rows, seen)
    return out


def warp(obj: torch.Tensor, cond: Conditions, out_hw: tuple[int, int], *, supersample: int = 1,
         padding: str = "zeros", prefilter: bool = True) -> torch.Tensor:
    """``obj`` (N|1 × C × S_h × S_w) as seen at ``cond`` in an output of ``out_hw``; zeros outside it.

    The object's width spans u ∈ [−1, 1]; its height keeps its aspect ratio. With ``prefilter``
    each row samples the object pre-filtered to its mip level (:func:`mip_levels`). One object
    for all rows is sampled from one atlas of its levels in a single call; ``padding`` other than
    ``"zeros"`` (grid_sample's ``"border"``, ``"reflection"``) samples each row on its own.
    """
    check_positive_int("supersample", supersample)
    n = cond.rows
    if obj.dim() != 4 or obj.shape[0] not in (1, n):
        raise ValueError(f"obj: expected (1|{n})×C×S_h×S_w (one object, or one per condition row), "
                         f"got {tuple(obj.shape)}")
    sh, sw = int(obj.shape[-2]), int(obj.shape[-1])
    hom = homography(cond)
    inv = torch.linalg.inv(hom)
    inv[:, 1] *= sw / sh  # grid_sample's y is v·S_w/S_h
    if prefilter:
        lh, lw = mip_levels(hom, (sh, sw), supersample)
    else:
        lh, lw = torch.full((n,), sh, device=hom.device), torch.full((n,), sw, device=hom.device)
    if obj.shape[0] == 1 and padding == "zeros":
        out = _shared(obj, inv, lh, lw, out_hw, supersample)
    else:
        out = _per_row(obj.expand(n, -1, -1, -1), inv, lh, lw, out_hw, supersample, padding)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def render(obj: torch.Tensor, background: torch.Tensor, cond: Conditions, *,
           generator: torch.Generator | None = None, supersample: int = 1) -> torch.Tensor:
    """``obj`` (N|1 × (C+1) × S × S: colour and alpha in [0, 1]) seen at ``cond`` in front of ``background``.

    The object is warped (:func:`warp`, pre-filtered to each row's resolution), alpha-blended over
    ``background`` (N×C×H×W), and the whole image goes through
    :func:`~advlab.physical.photometry.photometric`. Differentiable with respect to ``obj`` and
    ``background``.
    """
    if background.dim() != 4:
        raise ValueError(f"background: expected N×C×H×W images, got shape {tuple(background.shape)}")
    n, c = background.shape[:2]
    if obj.dim() != 4 or obj.shape[1] != c + 1:
        raise ValueError(f"obj: expected (N|1)×{c + 1}×S×S (colour + alpha for a {c}-channel background), "
                         f"got {tuple(obj.shape)}")
    if cond.rows != n or obj.shape[0] not in (1, n):
        raise ValueError(f"cond/obj: need one row per background image ({n}), got {cond.rows} conditions and "
                         f"{obj.shape[0]} objects")
    alpha = obj[:, c:]
    premultiplied = torch.cat([obj[:, :c] * alpha, alpha], dim=1)  # so colour never bleeds in from outside
    seen = warp(premultiplied, cond, (int(background.shape[-2]), int(background.shape[-1])), supersample=supersample)
    scene = torch.addcmul(seen[:, :c], 1 - seen[:, c:], background)
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
    if x.dim() != 4:
        raise ValueError(f"x: expected N×C×H×W images, got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    if cond.rows != n:
        raise ValueError(f"cond: need one row per image ({n}), got {cond.rows}")
    keep = _geometric_identity(cond, h, w)
    out = x
    if not bool(keep.any()):  # every row moves: no gathering
        out = warp(x - fill, cond, (h, w), supersample=supersample) + fill
    elif not bool(keep.all()):
        moved = (~keep).nonzero()[:, 0]
        seen = warp(x[moved] - fill, cond.select(moved), (h, w), supersample=supersample)
        out = x.index_put((moved,), seen + fill)
    return photometric(out, cond, generator=generator)
