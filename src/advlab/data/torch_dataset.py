"""Your PyTorch dataset as an evaluation's images: a map-style ``Dataset`` or a ``DataLoader`` over one.

``advlab.evaluate(model, test_set)`` takes what a PyTorch user already has: a dataset whose item ``i`` is
``(image, label)`` (a C×H×W float tensor in the bounds, as the test transforms leave it, and an int; or a dict
with such an image and label under keys such as ``pixel_values`` and ``labels``), or a
``DataLoader`` over such a dataset (its dataset is read in order: batching, shuffling and workers are the
evaluation's own). The images stay lazy (:class:`~advlab.data.source.Images`): read when indexed and streamed
for whole-set passes. The labels are the dataset's ``targets`` where it has them (torchvision's datasets
do), else read item by item. A dataset that returns another image each time an item is read (a random
transform left on) is refused: clean and adversarial images would not be the same images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from advlab._checks import check_image_batches
from advlab.data.source import Images, ImageSource

# What an evaluation takes as its data (advlab.evaluate's ``data``)
Data: TypeAlias = "str | tuple[Any, Any] | Dataset[Any] | DataLoader[Any] | None"


# The keys of a dict item's image and label, first found first (Hugging Face's, torchvision's, and the short ones)
IMAGE_KEYS = ("pixel_values", "image", "img", "images", "input", "inputs", "x")
LABEL_KEYS = ("labels", "label", "target", "targets", "y", "class")

PREFIX = "torch:"  # how an evaluation names such data: torch:TYPE (no test split by that name)


def is_torch_name(name: str) -> bool:
    """Whether a dataset name is that of a torch Dataset or DataLoader given to the evaluation."""
    return name.startswith(PREFIX)


def is_torch_data(data: object) -> bool:
    """Whether ``data`` is a torch ``Dataset`` or ``DataLoader``."""
    return isinstance(data, (Dataset, DataLoader))


class DatasetSource(ImageSource):
    """Images read from a map-style dataset's items ``(image, label)``, as float32 C×H×W tensors."""

    def __init__(self, dataset: Any, name: str) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise TypeError(f"data: {name} is an iterable-style dataset; advlab needs a map-style one (with "
                            "__len__ and __getitem__), so that every image can be read again by its position")
        self.dataset, self.name, self.n = dataset, name, len(dataset)
        if self.n == 0:
            raise ValueError(f"data: {name} holds no items")
        first = self._image(0)
        if first.dim() != 3:
            raise ValueError(f"data: {name}'s images must be C×H×W, got shape {tuple(first.shape)} for item 0")
        if not torch.equal(first, self._image(0)):
            raise ValueError(f"data: {name} returns another image each time item 0 is read (a random transform "
                             "left on?); an evaluation needs fixed images: use the test split's transforms")
        self.item_shape = (int(first.shape[0]), int(first.shape[1]), int(first.shape[2]))

    def item(self, i: int) -> tuple[Any, Any]:
        """Item ``i`` as (image, label); a dict item's by its keys (Hugging Face's ``pixel_values`` / ``labels``)."""
        got = self.dataset[i]
        if isinstance(got, Mapping):
            image = next((k for k in IMAGE_KEYS if k in got), None)
            label = next((k for k in LABEL_KEYS if k in got), None)
            if image is None or label is None:
                raise ValueError(f"data: {self.name}'s item {i} is a dict with keys {', '.join(map(str, got))}; "
                                 f"advlab reads its image from one of {', '.join(IMAGE_KEYS)} and its label from "
                                 f"one of {', '.join(LABEL_KEYS)}")
            return got[image], got[label]
        if not isinstance(got, (tuple, list)) or len(got) < 2:
            raise ValueError(f"data: {self.name}'s item {i} is a {type(got).__name__}; advlab reads items "
                             "(image, label)")
        return got[0], got[1]

    def _image(self, i: int) -> torch.Tensor:
        """Item ``i``'s image as a float32 CPU tensor (a tensor or anything numpy reads)."""
        img = self.item(i)[0]
        t = torch.as_tensor(np.asarray(img)) if not isinstance(img, torch.Tensor) else img
        if not t.is_floating_point():
            raise ValueError(f"data: {self.name}'s item {i} is an image of {t.dtype}; advlab needs float images in "
                             "the bounds (a ToTensor-like step that scales to [0, 1])")
        return t.detach().to("cpu", torch.float32)

    def load(self, i: int) -> torch.Tensor:  # noqa: D102
        t = self._image(i)
        if tuple(t.shape) != self.item_shape:
            raise ValueError(f"data: {self.name}'s item {i} is an image of shape {tuple(t.shape)}, item 0's is "
                             f"{self.item_shape}; an evaluation batches them: resize them to one size in its "
                             "transforms")
        return t

    def labels(self, n: int) -> torch.Tensor:
        """The first ``n`` labels: the dataset's ``targets`` where it has as many, else each item's."""
        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets) == self.n:
            return torch.as_tensor(np.asarray(targets[:n]) if not isinstance(targets, torch.Tensor)
                                   else targets[:n]).long()
        return torch.as_tensor([int(self.item(i)[1]) for i in range(n)], dtype=torch.int64)


def dataset_images(data: Any, n: int | None, bounds: tuple[float, float] | None) -> tuple[Images, torch.Tensor]:
    """The first ``n`` images (all if None) of a ``Dataset`` or ``DataLoader``, lazily, and their labels."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    name = type(dataset).__name__
    source = DatasetSource(dataset, name)
    count = source.n if n is None else min(n, source.n)
    images = Images(source, name=PREFIX + name).subset(slice(0, count))
    if bounds is not None:
        check_image_batches("data", images.iter_batches(), bounds)
    return images, source.labels(count)


__all__ = ["PREFIX", "Data", "DatasetSource", "dataset_images", "is_torch_data", "is_torch_name"]
