"""An image file's pixels as advlab reads them: which files a class folder holds, and each decoded to [0, 1].

Pillow's ``convert("L")`` or ``convert("RGB")`` (what torchvision's ImageFolder loader does) clips a 16-bit
image to 255, so a 16-bit PNG of microscopy or medical data reads as an almost white image, and a float TIFF
as black. Here a 16-bit image is divided by 65 535, a float image is taken as it is when it lies in [0, 1],
and any other wide image is refused in one line instead of being read wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, in its subfolders too, in the order torchvision's ImageFolder lists them.

    That order is the folders' paths sorted as strings (``folder`` itself first), and each folder's files
    sorted by name, so a flat folder keeps its files' name order. Hidden files and folders (a name
    starting with ``.``: ``.ipynb_checkpoints``, macOS' ``._NAME.jpg`` resource forks) are not images and
    are left out.
    """
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.append((root, sorted(f for f in files if not f.startswith(".") and Path(f).suffix.lower() in
                                   IMAGE_SUFFIXES)))
    return [Path(root) / f for root, names in sorted(found) for f in names]


def _wide(im: Any, path: Path) -> np.ndarray | None:
    """A 16-bit, 32-bit integer or float greyscale image's pixels in [0, 1] (H×W float32); None for other modes."""
    if im.mode in SIXTEEN_BIT:
        return np.asarray(im).astype(np.float32) / 65535.0
    if im.mode not in ("I", "F"):
        return None
    a = np.asarray(im).astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if im.mode == "I" and lo >= 0 and hi <= 255:  # (an 8-bit image in a 32-bit container: read as 8-bit is)
        return a.astype(np.float32) / np.float32(255.0)
    if im.mode == "F" and lo >= 0 and hi <= 1:
        return a.astype(np.float32)
    kind = "32-bit integer" if im.mode == "I" else "floating-point"
    want = "0–255" if im.mode == "I" else "[0, 1]"
    raise ValueError(f"folder: image {path} is {kind} with values in [{lo:g}, {hi:g}], outside {want}; save it as "
                     "8-bit or 16-bit (or as floats in [0, 1]) so that advlab need not guess its range")


def decode(im: Any, mode: str, path: Path) -> torch.Tensor:
    """An opened Pillow image as a C×H×W float32 tensor in [0, 1], in ``mode`` ("L": one channel, "RGB": three)."""
    wide = _wide(im, path)
    if wide is not None:
        grey = torch.from_numpy(wide)[None]
        return grey.expand(3, -1, -1).clone() if mode == "RGB" else grey
    if im.mode == "P" and "transparency" in im.info:  # (Pillow warns on every such file converted straight to RGB)
        im = im.convert("RGBA")
    arr = np.asarray(im.convert(mode), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).reshape(*arr.shape[:2], -1).permute(2, 0, 1).float().div_(255.0)
