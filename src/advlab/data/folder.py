"""Your own images: ``folder:PATH`` (ImageFolder layout, read with Pillow) and ``npz:PATH`` (arrays ``x`` and ``y``).

A spec is ``KIND:PATH`` with optional ``:key=value`` options at the end:

* ``folder:PATH[:size=S|HxW][:resize=R][:channels=C][:per_class=K][:labels=names][:workers=W]`` —
  ``PATH/CLASS/IMAGE`` files; classes sorted by folder name are labels 0, 1, … (torchvision's
  ImageFolder rule; with ``labels=names`` class folders named by numbers are those labels, and a
  :class:`FolderLabels` warning says where the two rules differ; ``--n`` takes the first images in
  this order, and a :class:`FolderSubset` warning says when they leave classes out); a class's files,
  its subfolders' included and hidden ones left out, sorted by their path below its folder (only the
  first ``K`` of each class with ``per_class``: a subset that covers every class). Each image is
  opened with Pillow (16-bit images scaled, not clipped: :mod:`advlab.data.pixels`), converted to RGB
  (``C`` = 3) or greyscale (``C`` = 1; ``C`` comes from the option or the model's declared input shape,
  default 3), resized (shorter side to ``R``, default ``S``) and
  centre-cropped to S×S (or H×W, scaled to cover it: :func:`~advlab.data.source.resize_crop`;
  ImageNet's usual evaluation is
  ``size=224:resize=256``), values in [0, 1]. ``S`` comes from the option or, when the caller
  knows it, the model's declared input shape. Images are read when indexed (never all at once);
  ``W`` DataLoader workers decode whole-set passes in parallel (default 0).
* ``npz:PATH`` — a NumPy ``.npz`` with ``x`` (N×C×H×W or N×H×W×C, or N×H×W for one channel;
  uint8 0–255 or float in [0, 1]) and ``y`` (N integer labels, or N one-hot rows). Where there is
  no ``x`` and ``y``, ``x_test`` and ``y_test`` are read (Keras' dataset files, such as its
  ``mnist.npz``: their test split), else ``images`` and ``labels``. An uncompressed file
  (``numpy.savez``) is memory-mapped — read from disk when indexed; a compressed one
  (``numpy.savez_compressed``) cannot be, and is loaded into memory in its stored dtype.

Every problem is a one-line ``ValueError`` naming the file: missing keys, wrong shapes,
out-of-range values, an empty folder, a class folder without images, an unreadable image.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlab._checks import check_image_batches
from advlab._deprecation import caller_level
from advlab.data.pixels import IMAGE_SUFFIXES, decode, image_files
from advlab.data.source import Images, ImageSource, resize_crop

KINDS = ("folder", "npz")
OPTION = re.compile(r"^(?:(size|resize|channels|per_class|workers)=(\d+)|(labels)=(names|sorted)|size=(\d+)x(\d+))$")
# The arrays read from an .npz, in this order: advlab's own names, Keras' dataset files (mnist.npz: the test
# split), and the spelled-out names.
KEY_PAIRS = (("x", "y"), ("x_test", "y_test"), ("images", "labels"))
MODES = {1: "L", 3: "RGB"}  # channels → the Pillow mode an image is converted to
RANGE_ROWS = 4096  # rows of a float npz checked for [0, 1] at a time


def is_spec(name: str) -> bool:
    """Whether ``name`` is a ``folder:`` or ``npz:`` spec rather than a dataset name."""
    return isinstance(name, str) and name.split(":", 1)[0] in KINDS and ":" in name


def _sides(value: object) -> tuple[object, ...]:
    """An option's values: a size's (height, width), or the one value."""
    return value if isinstance(value, tuple) else (value,)


class FolderLabels(UserWarning):
    """A folder's classes are named by numbers that are not their labels (their positions in sorted order)."""


def parse_spec(spec: str) -> tuple[str, Path, dict[str, Any]]:
    """``"folder:PATH:size=224"`` → ``("folder", Path(PATH), {"size": 224})`` (a path may contain ``:``)."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS or not rest:
        raise ValueError(f"dataset: expected folder:PATH or npz:PATH, got {spec!r}")
    parts = rest.split(":")
    options: dict[str, Any] = {}
    while len(parts) > 1 and (m := OPTION.match(parts[-1])):
        if m.group(5):  # size=HxW: a height and a width (a square size is one int, as ever)
            h, w = int(m.group(5)), int(m.group(6))
            options["size"] = h if h == w else (h, w)
        else:
            options.update({m.group(1): int(m.group(2))} if m.group(1) else {m.group(3): m.group(4)})
        parts.pop()
    folder_only = sorted(set(options) & {"size", "resize", "channels", "per_class", "labels"})
    if kind == "npz" and folder_only:
        raise ValueError(f"dataset: {spec!r}: {'=, '.join(folder_only)}= is a folder option (npz images are as stored)")
    zero = [k for k in ("size", "resize", "per_class") if 0 in _sides(options.get(k))]
    if zero:
        raise ValueError(f"dataset: {spec!r}: {zero[0]} must be a positive integer")
    if options.get("channels", 3) not in MODES:
        raise ValueError(f"dataset: {spec!r}: channels must be 1 (greyscale) or 3 (RGB), got {options['channels']}")
    return kind, Path(":".join(parts)), options


class FolderSource(ImageSource):
    """The images of an ImageFolder tree, each decoded with Pillow when read."""

    def __init__(self, root: Path, size: int | tuple[int, int], resize: int | None = None,
                 per_class: int | None = None, channels: int = 3, labels_by: str = "sorted") -> None:
        if not root.is_dir():
            why = "is not a directory" if root.exists() else "does not exist"
            raise ValueError(f"folder: {root} {why}")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise ValueError(f"folder: {root} has no class folders (expected {root}/CLASS/IMAGE files)")
        files: list[Path] = []
        labels: list[int] = []
        self.notes: list[str] = []  # (the warnings about the data, kept for the report)
        ids, moved = class_labels(root, classes, labels_by)
        if moved:
            self.note(FolderLabels, moved)
        for k, c in zip(ids, classes, strict=True):
            found = image_files(root / c)
            if not found:
                raise ValueError(f"folder: class folder {root / c} has no images ({', '.join(IMAGE_SUFFIXES)})")
            found = found[:per_class]
            files += found
            labels += [k] * len(found)
        self.root, self.classes, self.files = root, classes, files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.n = len(files)
        height, width = (size, size) if isinstance(size, int) else size
        self.item_shape = (channels, height, width)
        self.size = size
        self.mode = MODES[channels]
        self.resize = resize

    def note(self, category: type[UserWarning], message: str) -> None:
        """Warn, and keep the warning for the report (a terminal's warnings do not reach whoever reads it)."""
        self.notes.append(f"{category.__name__}: {message}")
        warnings.warn(message, category, stacklevel=caller_level())

    def load(self, i: int) -> torch.Tensor:
        """Image ``i``: RGB or greyscale, resized and centre-cropped, float32 in [0, 1] (16-bit images: /65 535)."""
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as im:
                img = decode(im, self.mode, path)
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"folder: cannot read image {path} ({type(e).__name__}: {e})") from None
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith("folder: ") else
                             f"folder: cannot read image {path} ({type(e).__name__}: {e})") from None
        return resize_crop(img, self.size, self.resize)


class FolderSubset(UserWarning):
    """The first ``n`` images of a folder (in class order) leave some of its classes out."""


def _warn_if_classes_left_out(source: FolderSource, labels: torch.Tensor, n: int) -> None:
    """A :class:`FolderSubset` warning where the first ``n`` images cover fewer classes than the folder has."""
    kept, total = len(torch.unique(labels[:n])), len(torch.unique(labels))
    if kept == total:
        return
    source.note(FolderSubset, f"folder: the first {n} images cover {kept} of the folder's {total} classes (images "
                              "are taken in class order); add :per_class=K to the spec for K images of every class")


def class_labels(root: Path, classes: list[str], labels_by: str) -> tuple[list[int], str | None]:
    """Each class folder's label: its position in sorted order, or (``labels_by="names"``) its name read as a number.

    With positions (torchvision's ImageFolder rule), folders named by numbers that differ from their
    positions (a class missing, or "10" sorted before "2") come back with the :class:`FolderLabels`
    message that says so (else None).
    """
    numbers = [int(c) if c.isdecimal() else None for c in classes]
    if labels_by == "names":
        if None in numbers:
            bad = classes[numbers.index(None)]
            raise ValueError(f"folder: {root}: labels=names needs class folders named by numbers 0, 1, …, got {bad!r}")
        return [int(v) for v in numbers if v is not None], None
    moved = [(c, k) for k, (c, v) in enumerate(zip(classes, numbers, strict=True)) if v is not None and v != k]
    if not moved or None in numbers:
        return list(range(len(classes))), None
    c, k = moved[0]
    return list(range(len(classes))), (
        f"folder: {root}: the class folders are named by numbers, but a folder's label is its position in sorted "
        f"order (as torchvision's ImageFolder reads it): folder {c!r} is label {k}; if the names are the labels, "
        "add :labels=names to the spec")


def _member_memmap(path: Path, zf: zipfile.ZipFile, member: str) -> np.ndarray:
    """The ``.npy`` member of an uncompressed ``.npz``, memory-mapped where it lies in the zip file."""
    info = zf.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise ValueError(f"npz: {path}: {member} holds Python objects (pickles are refused)")
        return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape, order="F" if fortran else "C")


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """``x`` (memory-mapped when stored uncompressed) and ``y`` of an ``.npz``, and whether x is memory-mapped."""
    if not path.is_file():
        raise ValueError(f"npz: {path} does not exist" if not path.exists() else f"npz: {path} is not a file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"npz: {path} is not a .npz file ({e})") from None
    with zf:
        names = {n.removesuffix(".npy") for n in zf.namelist()}
        pair = next((p for p in KEY_PAIRS if set(p) <= names), None)
        if pair is None:
            has = ", ".join(sorted(names)) or "none"
            raise ValueError(f"npz: {path} lacks array(s) {', '.join(k for k in ('x', 'y') if k not in names)} "
                             f"(has: {has}; also read: {', '.join(f'{a} and {b}' for a, b in KEY_PAIRS[1:])})")
        xk, yk = pair
        mapped = zf.getinfo(f"{xk}.npy").compress_type == zipfile.ZIP_STORED
        x = _member_memmap(path, zf, f"{xk}.npy") if mapped else None
    with np.load(path, allow_pickle=False) as data:
        try:
            y = np.asarray(data[yk])
            if x is None:
                x = np.asarray(data[xk])
        except ValueError as e:  # object arrays need pickle
            raise ValueError(f"npz: {path}: {e}") from None
    return x, _class_indices(y, path), mapped


def _class_indices(y: np.ndarray, path: Path) -> np.ndarray:
    """``y`` as integer labels: one-hot rows (N×K of 0s and one 1, Keras' ``to_categorical``) become their index."""
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "iuf" and len(y):
        one = (y == 1).sum(axis=1) == 1
        if bool(one.all()) and bool(((y == 0) | (y == 1)).all()):
            return np.asarray(y.argmax(axis=1))
        raise ValueError(f"npz: {path}: y of shape {y.shape} is not one-hot (each row one 1, the rest 0); "
                         "give N integer labels")
    return y


class NpzSource(ImageSource):
    """The images of an ``.npz`` file's ``x`` (memory-mapped when stored uncompressed), converted per batch."""

    def __init__(self, path: Path) -> None:
        x, y, self.mapped = _read_arrays(path)
        self.path = path
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ValueError(f"npz: {path}: x must be N×C×H×W, N×H×W×C or N×H×W, got shape {x.shape}")
        self.channels_last = x.shape[1] not in (1, 3) and x.shape[3] in (1, 3)
        if x.shape[1] not in (1, 3) and not self.channels_last:
            raise ValueError(f"npz: {path}: x of shape {x.shape} has no channel axis of 1 or 3 (axis 1 or 3)")
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise ValueError(f"npz: {path}: x must be uint8 (0–255) or float in [0, 1], got dtype {x.dtype}")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise ValueError(f"npz: {path}: y must be {len(x)} integer labels (one per image), "
                             f"got shape {y.shape} of {y.dtype}")
        if len(y) and int(y.min()) < 0:
            raise ValueError(f"npz: {path}: labels must be >= 0, got {int(y.min())}")
        self.x = x
        self.labels = torch.from_numpy(y.astype(np.int64))
        self.n = len(x)
        c, h, w = (x.shape[3], x.shape[1], x.shape[2]) if self.channels_last else x.shape[1:]
        self.item_shape = (int(c), int(h), int(w))
        self._check_range()

    def _check_range(self) -> None:
        """A float x must lie in [0, 1] and be finite (checked in chunks: a mapped file is never read whole)."""
        if self.x.dtype == np.uint8:
            return
        for start in range(0, self.n, RANGE_ROWS):
            chunk = np.asarray(self.x[start:start + RANGE_ROWS])
            if not np.isfinite(chunk).all():
                raise ValueError(f"npz: {self.path}: x has NaN or infinite values (rows {start}…)")
            lo, hi = float(chunk.min()), float(chunk.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"npz: {self.path}: float x must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                                 f"(rows {start}…; uint8 images are read as 0–255)")

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` as float32 C×H×W."""
        return self.load_many([i])[0]

    def load_many(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` in one read of the (mapped) array."""
        arr = np.asarray(self.x[np.asarray(indices, dtype=np.int64)])
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.channels_last:
            t = t.permute(0, 3, 1, 2)
        t = t.float().div_(255.0) if self.x.dtype == np.uint8 else t.float()
        return t.contiguous()


def open_images(spec: str, *, size: int | Sequence[int] | None = None, n: int | None = None,
                bounds: tuple[float, float] | None = None) -> tuple[Images, torch.Tensor]:
    """A ``folder:`` or ``npz:`` spec as a lazy image set and its int64 labels.

    Args:
        spec: ``folder:PATH[:size=S][:resize=R][:channels=C][:per_class=K][:labels=names][:workers=W]`` or
            ``npz:PATH[:workers=W]``.
        size: A folder's image side when the spec gives none; a C×H×W shape (a model's declared input
            shape) gives its side when square, else nothing, and its channels (1 or 3) when the spec
            gives none.
        n: Keep the first ``n`` images only.
        bounds: Check every kept image against these bounds, in one streamed pass
            (:func:`~advlab._checks.check_image_batches`).

    Returns:
        ``(images, labels)``: an :class:`~advlab.data.source.Images` (read when indexed) and a tensor.

    Raises:
        ValueError: A bad spec or file, in one line (see the module's docstring).
    """
    kind, path, options = parse_spec(spec)
    workers = options.get("workers", 0)
    declared = 3
    if size is not None and not isinstance(size, int):
        declared = size[0] if len(size) == 3 and size[0] in MODES else 3
        size = (size[-1] if size[-1] == size[-2] else (int(size[-2]), int(size[-1]))) if len(size) >= 2 else None
    source: FolderSource | NpzSource
    if kind == "folder":
        side = options.get("size", size)
        if side is None:
            raise ValueError(f"dataset: {spec!r}: give the image size, e.g. folder:{path}:size=224 "
                             "(the model declares no input shape)")
        largest = side if isinstance(side, int) else max(side)
        if options.get("resize", largest) < largest:
            raise ValueError(f"dataset: {spec!r}: resize ({options['resize']}) must be at least size ({largest})")
        source = FolderSource(path, side, options.get("resize"), options.get("per_class"),
                              options.get("channels", declared), options.get("labels", "sorted"))
    else:
        source = NpzSource(path)
    if source.n == 0:
        raise ValueError(f"{kind}: {path} holds no images")
    images, labels = Images(source, num_workers=workers, name=f"{kind}:{os.fspath(path)}"), source.labels
    if n is not None:
        if isinstance(source, FolderSource) and n < len(labels):
            _warn_if_classes_left_out(source, labels, n)
        images, labels = images.subset(slice(0, n)), labels[:n]
    if bounds is not None:
        check_image_batches("data", images.iter_batches(), bounds)
    return images, labels


__all__ = ["IMAGE_SUFFIXES", "KINDS", "FolderLabels", "FolderSource", "FolderSubset", "NpzSource", "is_spec",
           "open_images", "parse_spec"]
