"""Fixed splits of a training set: two disjoint halves, for transferability across training sets."""

from __future__ import annotations

import torch

from advlab._checks import check_choice

HALVES = ("a", "b")
HALF_SPLIT_SEED = 1234  # the fixed permutation that splits MNIST train into halves a and b


def half_indices(n: int, half: str) -> torch.Tensor:
    """Indices of training half ``"a"`` or ``"b"`` of ``n`` examples.

    The halves are disjoint and together hold all ``n`` examples; the split is a fixed
    permutation (seed :data:`HALF_SPLIT_SEED`), the same on every machine and in every call.

    Args:
        n: Size of the training set.
        half: ``"a"`` (the first ``n // 2`` of the permutation) or ``"b"`` (the rest).

    Returns:
        int64 indices into the training set.
    """
    check_choice("half", half, HALVES)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HALF_SPLIT_SEED))
    return order[: n // 2] if half == "a" else order[n // 2 :]


__all__ = ["HALF_SPLIT_SEED", "HALVES", "half_indices"]
