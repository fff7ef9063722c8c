"""mnist-scenes: 96×96 scenes of 1–5 MNIST digits on black, with per-pixel labels and boxes.

Deterministic: every draw comes from a ``torch.Generator`` seeded per split, so a split has the
same bytes on every run. Train scenes use the MNIST train split (20 000 scenes), test scenes
the MNIST test split (2 000 scenes). Each scene draws a digit count (uniform 1–5), then, for
each digit, a source image (uniform over the split) and a side (uniform 20–36 px: the 28×28 image
is resized bilinearly to side×side). The digits are placed largest first: 256 candidate corners
are drawn at once and the first whose square overlaps none of the squares placed so far is
taken; a digit all of whose candidates overlap is left out (random sequential packing jams: on
the test split 352 of the 404 scenes that drew 5 digits hold 5, the rest 4).

Labels:

* segmentation: int64 N×96×96, 0 = background, ``d + 1`` = digit d, for pixels whose scaled
  digit intensity is > 0.5 (where digits touch the brighter pixel wins: squares never overlap);
* detection: float32 N×5×5 rows ``(cls, x0, y0, x1, y1)``, the tight box of the digit's
  pixels > 0.5 (x1, y1 exclusive), padded with −1 rows.

The image is the element-wise max of the placed digits.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

SIZE = 96
MAX_DIGITS = 5
SIDES = (20, 36)  # smallest and largest digit side, inclusive
CANDIDATES = 256
SCENES = {"train": 20_000, "test": 2_000}
SEEDS = {"train": 19_001, "test": 19_002}
TASKS = ("segmentation", "detection")


class Scenes(NamedTuple):
    """A generated split."""

    x: torch.Tensor  # float32 N×1×S×S in [0, 1]
    seg: torch.Tensor  # int64 N×S×S
    boxes: torch.Tensor  # float32 N×MAX_DIGITS×5


def _place(n: int, sides: torch.Tensor, count: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """Top-left corners N×K×2 (x, y) of non-overlapping squares; −1 where a slot holds no digit."""
    k = sides.shape[1]
    corner = torch.full((n, k, 2), -1, dtype=torch.long)
    for j in range(k):  # slots in turn, each vectorised over scenes and candidates
        room = (size - sides[:, j] + 1)[:, None, None]
        cand = (torch.rand(n, CANDIDATES, 2, generator=g) * room).long()  # N×T×2
        s = sides[:, j, None]
        ok = torch.ones(n, CANDIDATES, dtype=torch.bool)
        for i in range(j):
            placed = corner[:, i, None, :]
            apart = ((cand + s[..., None] <= placed) | (placed + sides[:, i, None, None] <= cand)).any(-1)
            ok &= apart | (placed[..., 0] < 0)
        first = ok.float().argmax(1)
        found = ok.any(1) & (j < count)
        pick = cand[torch.arange(n), first]
        corner[:, j] = torch.where(found[:, None], pick, torch.full_like(pick, -1))
    return corner


def _paint(canvas: torch.Tensor, seg: torch.Tensor, digits: torch.Tensor, cls: torch.Tensor,
           where: torch.Tensor) -> torch.Tensor:
    """Paint M scaled digits (M×s×s) at ``where`` (M×3: scene, x, y); return their tight boxes M×4."""
    m, s = digits.shape[0], digits.shape[-1]
    size = canvas.shape[-1]
    ar = torch.arange(s)
    rows = where[:, 2, None] + ar  # M×s
    cols = where[:, 1, None] + ar
    flat = (where[:, 0, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]  # M×s×s
    canvas.view(-1).scatter_reduce_(0, flat.flatten(), digits.flatten(), reduce="amax")
    on = digits > 0.5
    wins = on & (digits >= canvas.view(-1)[flat])
    seg.view(-1)[flat[wins]] = (cls[:, None, None].expand(m, s, s)[wins] + 1)
    any_c, any_r = on.any(1), on.any(2)  # M×s over columns, rows
    first_c = any_c.float().argmax(1)
    last_c = s - any_c.flip(1).float().argmax(1)
    first_r = any_r.float().argmax(1)
    last_r = s - any_r.flip(1).float().argmax(1)
    box = torch.stack([where[:, 1] + first_c, where[:, 2] + first_r, where[:, 1] + last_c, where[:, 2] + last_r], 1)
    return torch.where(on.flatten(1).any(1)[:, None], box, torch.full_like(box, -1))


def make_scenes(images: torch.Tensor, labels: torch.Tensor, n: int, *, seed: int, size: int = SIZE) -> Scenes:
    """Generate ``n`` scenes from digit ``images`` (M×1×28×28 in [0, 1]) and their ``labels``.

    Args:
        images: The source digits.
        labels: Their classes (int, 0–9).
        n: Number of scenes.
        seed: Seed of the generator every draw comes from (same seed, same bytes).
        size: Scene side in pixels (at least the largest digit side).

    Returns:
        :class:`Scenes` ``(x, seg, boxes)`` in the formats of the module docstring.
    """
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(1, MAX_DIGITS + 1, (n,), generator=g)
    pick = torch.randint(0, len(images), (n, MAX_DIGITS), generator=g)
    sides = torch.randint(SIDES[0], SIDES[1] + 1, (n, MAX_DIGITS), generator=g)
    count_mask = torch.arange(MAX_DIGITS) < count[:, None]
    sides = torch.where(count_mask, sides, torch.zeros_like(sides)).sort(1, descending=True).values  # big first
    sides = torch.where(count_mask, sides, torch.full_like(sides, SIDES[0]))
    corner = _place(n, sides, count, g, size)
    canvas = torch.zeros(n, size, size)
    seg = torch.zeros(n, size, size, dtype=torch.long)
    boxes = torch.full((n, MAX_DIGITS, 5), -1.0)
    cls = labels[pick].long()
    for side in range(SIDES[0], SIDES[1] + 1):  # one resize per digit side
        sel = (sides == side) & (corner[..., 0] >= 0)
        if not bool(sel.any()):
            continue
        scene, slot = sel.nonzero(as_tuple=True)
        digits = F.interpolate(images[pick[scene, slot]].float(), size=(side, side), mode="bilinear",
                               align_corners=False).clamp(0, 1)[:, 0]
        where = torch.stack([scene, corner[scene, slot, 0], corner[scene, slot, 1]], 1)
        box = _paint(canvas, seg, digits, cls[scene, slot], where)
        boxes[scene, slot] = torch.cat([cls[scene, slot, None].float(), box.float()], 1)
        boxes[scene[box[:, 0] < 0], slot[box[:, 0] < 0]] = -1.0  # no pixel > 0.5: no object
    order = torch.sort((boxes[..., 0] < 0).to(torch.int8), dim=1, stable=True).indices  # objects first
    boxes = boxes.gather(1, order[..., None].expand(-1, -1, 5))
    return Scenes(canvas[:, None], seg, boxes)


@functools.lru_cache(maxsize=2)
def scenes_split(split: str) -> Scenes:
    """The mnist-scenes ``split`` (``"train"``: 20 000 scenes, ``"test"``: 2 000), generated once per process."""
    from advlab.data.mnist import load_mnist

    images, labels = load_mnist(split, None)
    return make_scenes(images, labels, SCENES[split], seed=SEEDS[split])


def load_scenes(split: str, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, labels)`` of ``split`` for ``task``: segmentation maps or detection boxes (cached tensors)."""
    s = scenes_split(split)
    return (s.x, s.seg) if task == "segmentation" else (s.x, s.boxes)


__all__ = ["MAX_DIGITS", "SCENES", "SEEDS", "SIDES", "SIZE", "TASKS", "Scenes", "load_scenes", "make_scenes",
           "scenes_split"]
