"""The two fixed, disjoint halves of a training split, and a model trained on one of them.

For transferability across training sets: the same architecture trained on half a and on half b
of MNIST's training split (``lenet-mnist-half-a`` / ``-half-b``). These belong in
``advlab.data`` (the split) and ``advlab.train`` (``train_half``); they wait here until those
modules take them.
"""

from __future__ import annotations

import torch

from advlab._checks import check_choice
from advlab.data import dataset_info, load_dataset
from advlab.models import create_model
from advlab.train import TrainConfig, TrainResult, fit

HALVES = ("a", "b")
HALF_SPLIT_SEED = 1234  # the fixed permutation that splits MNIST train into halves a and b


def half_indices(n: int, half: str) -> torch.Tensor:
    """Indices of training half ``"a"`` or ``"b"``: disjoint, together all ``n`` examples."""
    check_choice("half", half, HALVES)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HALF_SPLIT_SEED))
    return order[: n // 2] if half == "a" else order[n // 2 :]


def train_half(
    half: str,
    *,
    arch: str = "lenet",
    dataset: str = "mnist",
    config: TrainConfig | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``arch`` on training half ``half`` of ``dataset`` (the halves are disjoint).

    The test accuracy is measured on the full test split.
    """
    info = dataset_info(dataset)
    x, y = load_dataset(dataset, "train")
    idx = half_indices(len(x), half)
    test = load_dataset(dataset, "test")
    model = create_model(arch, in_shape=info.shape, num_classes=info.num_classes)
    return fit(model, (x[idx], y[idx]), test, config or TrainConfig(), progress=progress)


__all__ = ["HALF_SPLIT_SEED", "HALVES", "half_indices", "train_half"]
