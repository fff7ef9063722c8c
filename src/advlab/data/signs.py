"""signs: 48×48 colour photographs, simulated, of 12 traffic signs on street-like backgrounds.

Deterministic: every draw comes from generators seeded per split, so a split has the same bytes on
every run (on one machine: Pillow's JPEG codec is part of the recipe). The recipe of one image:

1. its class, from a seeded permutation of ``n / 12`` copies of each class (exactly balanced);
2. its background, from :func:`~advlab.data.sign_backgrounds.make_backgrounds` (seeded per split);
3. the class's canonical 64×64 RGBA sign (:func:`~advlab.data.sign_art.sign_rgba`) seen at
   conditions drawn from ``TransformDistribution.signs(48)`` — width 14–44 px, viewing angle
   ±50°, pitch ±15°, roll ±10°, anywhere in the frame, light ×0.5–1.5, contrast, colour error,
   blur, camera noise — by :func:`advlab.physical.render`, in batches of 512;
4. rounding to 8 bits, and for a share ``JPEG_SHARE`` of the images a JPEG round trip (Pillow)
   at a quality drawn uniformly from ``JPEG_QUALITY``.

``load_signs(split)`` gives 24 000 training and 4 800 test images (2 000 and 400 per class); the
splits differ in every seed (classes, backgrounds, conditions, JPEG).

Generation runs on one torch thread (the caller's setting is restored afterwards): it is a long
chain of medium-sized element-wise operations, which a second thread barely speeds up and which,
on a machine shared with other jobs, wait for the descheduled thread at every operation —
measured on the train split: 21 s on one thread and 57 s on two, at a load average of about 3 on
2 cores (docs/signs.md).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from advlab.data.sign_art import SIGN_CLASSES, all_signs, sign_mask, sign_rgba
from advlab.data.sign_backgrounds import make_backgrounds
from advlab.physical import TransformDistribution, jpeg, render

SIZE = 48
SIGNS = {"train": 24_000, "test": 4_800}
SEEDS = {"train": 18_001, "test": 18_002}
JPEG_SHARE = 0.5
JPEG_QUALITY = (40, 95)  # inclusive
BATCH = 512


def _jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W images after a JPEG round trip each at its ``quality`` (Pillow, 4:2:0 chroma)."""
    return (jpeg(x.float() / 255, quality) * 255).round().to(torch.uint8)


def _labels(n: int, g: torch.Generator) -> torch.Tensor:
    """``n / 12`` of each class in a seeded random order."""
    k = len(SIGN_CLASSES)
    if n <= 0 or n % k:
        raise ValueError(f"n: the signs dataset needs a positive multiple of {k} images (balanced), got {n}")
    return (torch.arange(n) % k)[torch.randperm(n, generator=g)]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the caller's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_signs(n: int, *, seed: int, size: int = SIZE, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` sign images (a multiple of 12, balanced) from ``seed``, as the module docstring describes.

    Args:
        n: Number of images; each class gets exactly ``n / 12``.
        seed: Seed of every draw (same seed, same bytes).
        size: Image side in pixels.
        batch: Images rendered at once.

    Returns:
        ``(x, y)``: uint8 N×3×size×size images and int64 labels (indices into :data:`SIGN_CLASSES`).
    """
    with _one_thread():
        return _generate(n, seed, size, batch)


def _generate(n: int, seed: int, size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`make_signs` on the current threads."""
    g = torch.Generator().manual_seed(seed)
    y = _labels(n, g)
    backgrounds = make_backgrounds(n, seed=seed + 1, size=size)
    signs = all_signs()
    dist = TransformDistribution.signs(size)
    x = torch.empty(n, 3, size, size, dtype=torch.uint8)
    with torch.no_grad():
        for i in range(0, n, batch):
            j = min(i + batch, n)
            cond = dist.sample(j - i, size, generator=g)
            img = render(signs[y[i:j]], backgrounds[i:j], cond, generator=g)
            x[i:j] = (img * 255).round().to(torch.uint8)
    pick = (torch.rand(n, generator=g) < JPEG_SHARE).nonzero(as_tuple=True)[0]
    quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (n,), generator=g)
    if len(pick):
        x[pick] = _jpeg(x[pick], quality[pick])
    return x, y


@functools.lru_cache(maxsize=2)
def signs_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 images and labels of ``split``, generated once per process."""
    return make_signs(SIGNS[split], seed=SEEDS[split])


def load_signs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of ``split``: float32 N×3×48×48 in [0, 1] (a fresh tensor) and int64 labels."""
    x, y = signs_split(split)
    return x.float() / 255.0, y.clone()


__all__ = ["JPEG_QUALITY", "JPEG_SHARE", "SEEDS", "SIGNS", "SIGN_CLASSES", "SIZE", "load_signs", "make_signs",
           "sign_mask", "sign_rgba", "signs_split"]
