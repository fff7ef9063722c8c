"""Dense-prediction networks for the mnist-scenes world: a U-Net segmenter and a CenterNet detector.

Formats (fixed; attacks and evaluation code against them):

* ``SegNet``: N×1×H×W images in [0, 1] → N×(C+1)×H×W logits (channel 0 background, ``d + 1`` digit d).
* ``DetNet``: N×1×H×W → N×(C+4)×H/4×W/4 raw tensor (stride 4): channels ``0..C-1`` per-class
  centre heat-map logits, ``C, C+1`` log box width and height in pixels, ``C+2, C+3`` the
  sub-cell centre offset in cells (x, y), regressed directly (target in [0, 1)).
* Boxes: float N×K×5 rows ``(cls, x0, y0, x1, y1)`` in pixels (x1, y1 exclusive), padded with −1 rows.
* :func:`decode` → N×max_det×6 rows ``(x0, y0, x1, y1, score, cls)`` by decreasing score, padded
  with score 0 and cls −1.

:func:`heatmap_targets` is CenterNet's encoding and :func:`detection_loss` its training loss
(per example, differentiable with respect to the network output).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from advlab.metrics_dense import box_iou
from advlab.models.nets import Normalize

PAPER = ("Zhou, Wang and Krähenbühl 2019, Objects as Points, https://arxiv.org/abs/1904.07850; "
         "Ronneberger, Fischer and Brox 2015, U-Net, https://arxiv.org/abs/1505.04597")
STRIDE = 4
HEAT_PRIOR = 0.1  # initial centre probability of the heat-map head (CenterNet's bias −2.19)
SIZE_WEIGHT = 1.0  # L1 on log sizes (CenterNet weighs L1 on raw pixel sizes by 0.1)
OFFSET_WEIGHT = 1.0
SCENE_MEAN, SCENE_STD = 0.0331, 0.1563  # pixel mean and std of the mnist-scenes train split


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def _check_shape(name: str, in_shape: tuple[int, ...], multiple: int) -> None:
    if len(in_shape) != 3 or in_shape[1] % multiple or in_shape[2] % multiple:
        raise ValueError(f"in_shape: {name} needs C×H×W images with H and W multiples of {multiple}, got {in_shape}")


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class SegNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): 96 → 48 → 24 → 12 and back to 48, with skips.

    Widths 16/32/64 at 48/24/12 (strided convolutions down, nearest upsampling and concatenated
    skips up). The full-resolution head is 1×1 convolutions over the bilinearly upsampled 48×48
    features and the input itself: which pixels are digit is a local intensity rule, which digit
    they are comes from the coarse levels.
    """

    task: ClassVar[str] = "segmentation"

    def __init__(
        self, in_shape: tuple[int, int, int] = (1, 96, 96), num_classes: int = 10,
        mean: float = SCENE_MEAN, std: float = SCENE_STD, width: int = 16,
    ) -> None:
        super().__init__()
        _check_shape("segnet", tuple(in_shape), 8)
        c, w = in_shape[0], width
        self.norm = Normalize(mean, std)
        self.enc1 = nn.Sequential(_conv(c, w, stride=2), _conv(w, w))
        self.enc2 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.mid = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w))
        self.dec2 = _conv(6 * w, 2 * w)
        self.dec1 = _conv(3 * w, w)
        self.head = nn.Sequential(nn.Conv2d(w + c, w, 1), nn.ReLU(), nn.Conv2d(w, num_classes + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        z = self.norm(x)
        e1 = self.enc1(z)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([_up(self.mid(e2), e2), e2], 1))
        d1 = self.dec1(torch.cat([_up(d2, e1), e1], 1))
        full = F.interpolate(d1, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.head(torch.cat([full, z], 1))
        return out


class _HeatConv(nn.Conv2d):
    """The heat-map output layer: its bias starts at logit(HEAT_PRIOR), also after ``reset_parameters``."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            nn.init.constant_(self.bias, math.log(HEAT_PRIOR / (1 - HEAT_PRIOR)))


class DetNet(nn.Module):
    """A small CenterNet (Zhou et al. 2019): a stride-4 backbone with one 12×12 level, and three heads.

    96 → 48 → 24 (stride 4) → 12 → back to 24 with a skip; heads: per-class centre heat-map,
    log box size, sub-cell centre offset (see the module docstring for the output channels).
    """

    task: ClassVar[str] = "detection"

    def __init__(
        self, in_shape: tuple[int, int, int] = (1, 96, 96), num_classes: int = 10,
        mean: float = SCENE_MEAN, std: float = SCENE_STD, width: int = 32,
    ) -> None:
        super().__init__()
        _check_shape("detnet", tuple(in_shape), 8)
        c, w = in_shape[0], width
        self.norm = Normalize(mean, std)
        self.stem = nn.Sequential(_conv(c, w // 2, stride=2), _conv(w // 2, w, stride=2), _conv(w, w))
        self.down = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w), _conv(2 * w, 2 * w))
        self.fuse = _conv(3 * w, 3 * w // 2)
        self.trunk = _conv(3 * w // 2, 3 * w // 2)
        self.heat = _HeatConv(3 * w // 2, num_classes, 1)
        self.box = nn.Conv2d(3 * w // 2, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        s = self.stem(self.norm(x))
        f = self.trunk(self.fuse(torch.cat([_up(self.down(s), s), s], 1)))
        return torch.cat([self.heat(f), self.box(f)], 1)


class Targets(NamedTuple):
    """CenterNet training targets on the output grid (S = out_size)."""

    heat: torch.Tensor  # N×C×S×S Gaussian peaks, exactly 1 at each object's centre cell
    size: torch.Tensor  # N×2×S×S log width, log height (pixels) at centre cells
    offset: torch.Tensor  # N×2×S×S centre offset inside its cell (x, y), in [0, 1)
    mask: torch.Tensor  # N×S×S 1.0 at centre cells


def gaussian_radius(w: torch.Tensor, h: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """The heat-map radius of boxes of size ``w``×``h`` (grid cells), as CenterNet computes it.

    The smallest of three quadratic roots (a corner displacement keeping IoU ≥ ``min_overlap``:
    both corners shifted, shrunk, grown); like CornerNet's and CenterNet's implementation the roots
    are halved rather than divided by 2a, which gives the wider peaks those recipes were tuned with.
    """
    o, s, p = min_overlap, w + h, w * h
    r1 = (s + torch.sqrt(s**2 - 4 * p * (1 - o) / (1 + o))) / 2
    r2 = (2 * s + torch.sqrt(4 * s**2 - 16 * (1 - o) * p)) / 2
    r3 = (-2 * o * s + torch.sqrt(4 * o**2 * s**2 - 16 * o * (o - 1) * p)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def _centres(boxes: torch.Tensor, out_size: int, stride: int) -> tuple[torch.Tensor, ...]:
    """Per object: class index (0 where padded), validity, centre (cells), centre cell, size (pixels)."""
    valid = boxes[..., 0] >= 0
    cls = boxes[..., 0].clamp(min=0).long()
    w = (boxes[..., 3] - boxes[..., 1]).clamp(min=1.0)
    h = (boxes[..., 4] - boxes[..., 2]).clamp(min=1.0)
    cx = (boxes[..., 1] + boxes[..., 3]) / 2 / stride
    cy = (boxes[..., 2] + boxes[..., 4]) / 2 / stride
    ix = cx.floor().clamp(0, out_size - 1)
    iy = cy.floor().clamp(0, out_size - 1)
    return cls, valid, cx, cy, ix, iy, w, h


def heatmap_targets(boxes: torch.Tensor, out_size: int = 24, stride: int = STRIDE,
                    num_classes: int = 10) -> Targets:
    """CenterNet's encoding of N×K×5 boxes ``(cls, x0, y0, x1, y1)`` (padding rows cls = −1).

    Each object puts a Gaussian (σ = (2r + 1) / 6, r = ⌊:func:`gaussian_radius`⌋ of its size in
    cells, drawn within r cells) in its class's channel around its centre cell (the element-wise
    max where peaks meet), and its log size and sub-cell offset at that cell.
    """
    boxes = boxes.float()
    n, k = boxes.shape[:2]
    cls, valid, cx, cy, ix, iy, w, h = _centres(boxes, out_size, stride)
    r = gaussian_radius(w / stride, h / stride).floor().clamp(min=0)
    sigma = (2 * r + 1) / 6
    grid = torch.arange(out_size, dtype=boxes.dtype, device=boxes.device)
    dx = grid - ix[..., None]  # N×K×S
    dy = grid - iy[..., None]
    inside = (dx.abs()[..., None, :] <= r[..., None, None]) & (dy.abs()[..., :, None] <= r[..., None, None])
    g = torch.exp(-(dx[..., None, :] ** 2 + dy[..., :, None] ** 2) / (2 * sigma[..., None, None] ** 2))
    g = g * (inside & valid[..., None, None])
    heat = torch.zeros(n, num_classes, out_size, out_size, dtype=boxes.dtype, device=boxes.device)
    heat.scatter_reduce_(1, cls[..., None, None].expand(n, k, out_size, out_size), g, reduce="amax")
    cells = out_size * out_size
    flat = torch.where(valid, (iy * out_size + ix).long(), torch.full_like(cls, cells))  # padding → spare slot
    values = torch.stack([w.log(), h.log(), cx - ix, cy - iy, torch.ones_like(w)], 1)  # N×5×K
    dense = torch.zeros(n, 5, cells + 1, dtype=boxes.dtype, device=boxes.device)
    dense.scatter_(2, flat[:, None, :].expand(n, 5, k), values)
    dense = dense[..., :cells].reshape(n, 5, out_size, out_size)
    return Targets(heat, dense[:, 0:2], dense[:, 2:4], dense[:, 4])


def detection_loss(out: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """CenterNet's loss per example (N,): focal heat-map loss + L1 log-size and offset at centres.

    Focal loss (α = 2, β = 4) over every heat-map cell, positives where the target is exactly 1,
    divided by the example's object count (≥ 1); the L1 terms are averaged over its objects.
    Differentiable with respect to ``out``; each example's loss depends on its own output only.
    """
    num_classes = out.shape[1] - 4
    t = heatmap_targets(boxes.to(out.device), out.shape[-1], STRIDE, num_classes)
    logits = out[:, :num_classes]
    p = torch.sigmoid(logits)
    pos = (t.heat == 1).to(out.dtype)
    pos_term = (1 - p) ** 2 * F.logsigmoid(logits) * pos
    neg_term = (1 - t.heat) ** 4 * p**2 * F.logsigmoid(-logits) * (1 - pos)
    n_obj = t.mask.sum((1, 2)).clamp(min=1)
    focal = -(pos_term + neg_term).sum((1, 2, 3)) / n_obj
    m = t.mask[:, None]
    size = ((out[:, num_classes : num_classes + 2] - t.size).abs() * m).sum((1, 2, 3)) / n_obj
    offset = ((out[:, num_classes + 2 :] - t.offset).abs() * m).sum((1, 2, 3)) / n_obj
    loss: torch.Tensor = focal + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset
    return loss


def nms(boxes: torch.Tensor, cls: torch.Tensor, keep: torch.Tensor, iou: float = 0.5) -> torch.Tensor:
    """Greedy class-wise NMS over a batch: N×K boxes already sorted by decreasing score.

    ``keep`` (N×K bool) marks the candidates; a candidate is dropped when a kept, higher-scored
    box of its class overlaps it with IoU > ``iou``. Returns the kept mask (N×K). One pass over
    the K ranks, each a batched tensor operation.
    """
    k = boxes.shape[1]
    over = (box_iou(boxes, boxes) > iou) & (cls[:, :, None] == cls[:, None, :])
    over &= torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu(1)
    keep = keep.clone()
    for i in range(k - 1):
        keep[:, i + 1 :] &= ~(keep[:, i : i + 1] & over[:, i, i + 1 :])
    return keep


@torch.no_grad()
def decode(out: torch.Tensor, *, threshold: float = 0.3, max_det: int = 20, nms_iou: float = 0.5) -> torch.Tensor:
    """Detections from a DetNet output: N×max_det×6 rows ``(x0, y0, x1, y1, score, cls)``.

    Peaks are the cells equal to the 3×3 max of the sigmoid heat-map with score ≥ ``threshold``;
    the best ``4 * max_det`` per image are boxed (centre = (cell + offset) × stride, size =
    exp(log size), clipped to the image), then class-wise NMS at ``nms_iou`` keeps the first
    ``max_det``. Rows are sorted by score; padding rows have score 0 and cls −1.
    """
    n, ch, s, _ = out.shape
    num_classes = ch - 4
    heat = torch.sigmoid(out[:, :num_classes].float())
    peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
    k = min(4 * max_det, num_classes * s * s)
    score, idx = peaks.flatten(1).topk(k, dim=1)
    cls = (idx // (s * s)).float()
    cell = idx % (s * s)
    iy, ix = (cell // s).float(), (cell % s).float()
    geo = out[:, num_classes:].float().flatten(2).gather(2, cell[:, None, :].expand(n, 4, k))  # N×4×k
    cx, cy = (ix + geo[:, 2]) * STRIDE, (iy + geo[:, 3]) * STRIDE
    bw, bh = geo[:, 0].clamp(max=10).exp(), geo[:, 1].clamp(max=10).exp()
    size = float(s * STRIDE)
    box = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).clamp(0, size)
    keep = nms(box, cls, score >= threshold, nms_iou)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :max_det]
    kept = keep.gather(1, order)
    rows = torch.cat([box.gather(1, order[..., None].expand(-1, -1, 4)), score.gather(1, order)[..., None],
                      cls.gather(1, order)[..., None]], -1) * kept[..., None]
    rows[..., 5] = torch.where(kept, rows[..., 5], torch.full_like(rows[..., 5], -1.0))
    if rows.shape[1] < max_det:
        pad = rows.new_zeros(n, max_det - rows.shape[1], 6)
        pad[..., 5] = -1
        rows = torch.cat([rows, pad], 1)
    return rows


__all__ = [
    "PAPER", "STRIDE", "DetNet", "SegNet", "Targets", "box_iou", "decode", "detection_loss", "gaussian_radius",
    "heatmap_targets", "nms",
]
