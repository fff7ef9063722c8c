"""RP2 crafted for one distance only: its EOT widths narrowed to a band around one lab row (issue 18).

    PYTHONPATH=src python benchmarks/rp2_narrow.py 14,18 physical --attack rp2 --threads 1 -o 'mask=[[23,41,40,58]]' --out DIR

The first argument is the band of sign widths (px) RP2's Expectation over Transformation draws from;
the rest is the unchanged ``advlab physical`` command, whose lab test is not touched. With the default
distribution (widths 14–44 px) a sticker of 10 % of the sign fools the 40 px row and almost never the
16 and 24 px ones, which could be a trade-off (the optimiser spending the sticker on the views it can
win) or a limit (no 10 % sticker fools those views at all). Crafting for the small widths alone
separates the two: if the sticker still fails on its own crafting views there, the area is what it
lacks. It is a diagnostic, not an advlab option: it replaces the distribution RP2 and its mask search
fall back on (``TransformDistribution.signs``) with one whose widths span the band; every other range
is the signs distribution's.
"""

from __future__ import annotations

import sys

import advlab.attacks.rp2 as rp2_module
from advlab.cli import main
from advlab.physical import TransformDistribution


def narrowed(low: float, high: float) -> type[TransformDistribution]:
    """A stand-in for the class whose ``signs`` preset draws widths from [low, high] only."""

    class Narrowed(TransformDistribution):
        @staticmethod
        def signs(size: int = 48) -> TransformDistribution:
            return TransformDistribution(width=(low, high))

    return Narrowed


if __name__ == "__main__":
    low, high = (float(v) for v in sys.argv[1].split(","))
    rp2_module.TransformDistribution = narrowed(low, high)  # type: ignore[misc]
    sys.exit(main(sys.argv[2:]))
