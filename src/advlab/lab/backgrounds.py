"""The scenes signs are photographed in: the signs dataset's procedural backgrounds, one seed per split.

Crafting sees only ``"train"`` backgrounds; the lab test only ``"test"`` ones, so an attack is
never scored in front of a scene it was optimised on. Both are drawn by the dataset's own generator
(:func:`advlab.data.sign_backgrounds.make_backgrounds`) from the seed the dataset uses for that
split's backgrounds; a request for ``n`` backgrounds gives the same ``n`` every time.
"""

from __future__ import annotations

import functools

import torch

from advlab._checks import check_choice, check_positive_int
from advlab.data.sign_backgrounds import make_backgrounds
from advlab.data.signs import SEEDS

__all__ = ["BACKGROUND_SEEDS", "lab_backgrounds"]

# The seeds make_signs draws each split's backgrounds from (its split seed + 1).
BACKGROUND_SEEDS = {split: seed + 1 for split, seed in SEEDS.items()}


@functools.lru_cache(maxsize=4)
def _backgrounds(split: str, n: int, size: int) -> torch.Tensor:
    return make_backgrounds(n, seed=BACKGROUND_SEEDS[split], size=size)


def lab_backgrounds(split: str, n: int, size: int = 48) -> torch.Tensor:
    """``n`` backgrounds (N×3×size×size in [0, 1]) of ``split`` (``"train"`` for crafting, ``"test"`` for the lab)."""
    check_choice("split", split, tuple(BACKGROUND_SEEDS))
    check_positive_int("n", n)
    return _backgrounds(split, n, size).clone()
