"""Lazy image sets: images read from their source when indexed, streamed in batches for whole-set passes.

:class:`Images` stands where an evaluation's images tensor stands: it has ``len``, ``shape``
(N×C×H×W) and ``dtype``, and indexing it with an int, a slice, a list or a 1-D index tensor reads
just those images and returns them as a float32 CPU tensor — so ``x[sl]``, ``x[idx]`` and
``x[i]`` work unchanged. A pass over every image (the bounds check, the data fingerprint, the
clean predictions) goes through :meth:`Images.iter_batches`, a :class:`torch.utils.data.DataLoader`
(``num_workers`` > 0 decodes in parallel processes), so memory stays that of one batch, whatever
the number of images.

An :class:`ImageSource` reads one image (or a list of them) by position; the folder and npz
sources live in :mod:`advlab.data.folder`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

Index = int | slice | Sequence[int] | torch.Tensor
STREAM_BYTES = 32 * 2**20  # a whole-set pass reads batches of at most this many bytes of float32 images


class ImageSource(ABC):
    """Images readable one at a time by position: ``n`` images of ``item_shape`` (C×H×W), float32 in [0, 1]."""

    n: int
    item_shape: tuple[int, int, int]

    @abstractmethod
    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` as a float32 C×H×W tensor in [0, 1]."""

    def load_many(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` as a float32 K×C×H×W tensor (a source may read them together)."""
        if not indices:
            return torch.empty((0, *self.item_shape), dtype=torch.float32)
        return torch.stack([self.load(i) for i in indices])


class _Items(Dataset[torch.Tensor]):
    """The DataLoader's view of an :class:`Images`: item ``k`` is source image ``index[k]``."""

    def __init__(self, source: ImageSource, index: torch.Tensor) -> None:
        self.source = source
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.source.load(int(self.index[k]))


class Images:
    """A lazy N×C×H×W float32 image set over an :class:`ImageSource` (optionally a subset of it, in any order).

    Args:
        source: Where the images come from.
        index: The source positions of this set's images, in order (default: all, in the source's order).
        num_workers: DataLoader worker processes of :meth:`iter_batches` (0: decode in this process).
        name: How messages name the set.
    """

    def __init__(self, source: ImageSource, index: torch.Tensor | None = None, *, num_workers: int = 0,
                 name: str = "images") -> None:
        self.source = source
        self.index = torch.arange(source.n) if index is None else index.long()
        self.num_workers = num_workers
        self.name = name

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"Images({self.name}, shape={tuple(self.shape)})"

    @property
    def shape(self) -> torch.Size:
        """N×C×H×W."""
        return torch.Size((len(self), *self.source.item_shape))

    @property
    def dtype(self) -> torch.dtype:
        """Always float32: every image is returned as float32 in [0, 1]."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        """Always the CPU."""
        return torch.device("cpu")

    def dim(self) -> int:
        """4 (N×C×H×W)."""
        return 4

    def positions(self, key: Index) -> torch.Tensor:
        """This set's positions selected by ``key`` (an int gives one position) as a 1-D int64 tensor."""
        n = len(self)
        if isinstance(key, bool):
            raise TypeError(f"{self.name}: cannot index with a bool")
        if isinstance(key, int):
            if not -n <= key < n:
                raise IndexError(f"{self.name}: index {key} is out of range for {n} images")
            return torch.tensor([key % n])
        if isinstance(key, slice):
            return torch.arange(n)[key]
        idx = key if isinstance(key, torch.Tensor) else torch.as_tensor(list(key), dtype=torch.long)
        if idx.dtype == torch.bool:
            if idx.shape != (n,):
                raise IndexError(f"{self.name}: a boolean mask must have shape ({n},), got {tuple(idx.shape)}")
            return idx.nonzero().flatten()
        if idx.dim() != 1 or idx.is_floating_point():
            raise IndexError(f"{self.name}: expected an int, a slice or a 1-D integer index, got shape "
                             f"{tuple(idx.shape)} of {idx.dtype}")
        if len(idx) and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"{self.name}: an index is out of range for {n} images")
        return idx.long() % max(n, 1)

    def __getitem__(self, key: Index) -> torch.Tensor:
        pos = self.positions(key)
        out = self.source.load_many(self.index[pos].tolist())
        return out[0] if isinstance(key, int) else out

    def subset(self, key: Index) -> Images:
        """A lazy set of the images ``key`` selects (nothing is read): ``x.subset(slice(0, n))`` is the first n."""
        return Images(self.source, self.index[self.positions(key)], num_workers=self.num_workers, name=self.name)

    @property
    def stream_rows(self) -> int:
        """Images per batch of a whole-set pass: as many as fit in :data:`STREAM_BYTES` (at least one)."""
        c, h, w = self.source.item_shape
        return max(1, STREAM_BYTES // (4 * c * h * w))

    def iter_batches(self, batch_size: int | None = None) -> Iterator[torch.Tensor]:
        """Every image, in order, in float32 batches via a DataLoader (the last may be smaller).

        Args:
            batch_size: Images per batch (default :attr:`stream_rows`, so a pass holds about
                :data:`STREAM_BYTES` of images at a time, whatever the number of images).
        """
        if len(self) == 0:
            return
        loader = DataLoader(_Items(self.source, self.index), batch_size=batch_size or self.stream_rows,
                            shuffle=False, num_workers=self.num_workers)
        yield from loader

    def materialise(self, batch_size: int | None = None) -> torch.Tensor:
        """Every image read into one N×C×H×W tensor (for small sets)."""
        if len(self) == 0:
            return torch.empty(tuple(self.shape), dtype=torch.float32)
        return torch.cat(list(self.iter_batches(batch_size)))


def resize_crop(img: torch.Tensor, size: int | tuple[int, int], resize: int | None = None) -> torch.Tensor:
    """Resize a C×H×W image (shorter side to ``resize``; bilinear, antialiased), then crop its centre to size×size.

    The usual ImageNet evaluation preprocessing (resize to 256, centre crop 224), done with
    :func:`torch.nn.functional.interpolate`; values stay within the input's range (clamped).

    Args:
        img: A float C×H×W image.
        size: The output side, or the output (height, width): then, without ``resize``, the image is
            scaled to the smallest size that covers it (both sides at least theirs) before the crop.
        resize: The shorter side after resizing (default ``size``; at least ``size``, or the larger
            of height and width).

    Returns:
        The C×size×size (or C×height×width) image.
    """
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    _, h, w = img.shape
    # (for a square size this is the shorter side scaled to size, or to resize: max(S/h, S/w) = S/min(h, w))
    scale = max(th / h, tw / w) if resize is None else resize / min(h, w)
    if scale != 1.0:
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        lo, hi = float(img.min()), float(img.max())
        img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False,
                            antialias=nh < h or nw < w)[0].clamp_(lo, hi)
        h, w = nh, nw
    top, left = (h - th) // 2, (w - tw) // 2
    return img[:, top:top + th, left:left + tw].contiguous()


def stream_batches(x: torch.Tensor | Images, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """One whole-set pass: a tensor's row chunks, or a lazy set's DataLoader batches (also capped at ~STREAM_BYTES)."""
    if isinstance(x, Images):
        yield from x.iter_batches(min(batch_size, x.stream_rows))
        return
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


__all__ = ["STREAM_BYTES", "ImageSource", "Images", "resize_crop", "stream_batches"]
