"""RP2's lab test with the classifier shown the crop around the sign, as Eykholt et al.'s pipeline does (issue 18).

    PYTHONPATH=src python benchmarks/rp2_crop.py physical --attack rp2 --threads 1 -o 'mask=[[23,41,40,58]]' --out DIR

Eykholt et al. 2018 classify the sign *cropped and resized* to the classifier's input (Lu et al. 2017,
https://arxiv.org/abs/1710.03337: "Evtimov et al.'s construction relies on a crop of the image to the stop
sign; this crop is then resized and presented to a classifier"). advlab's lab shows the classifier the whole
48×48 scene, in which a 16 px sign is a third of the width. This diagnostic runs the unchanged
``advlab physical`` command (its arguments follow the script's name) with every rendered view — RP2's EOT
views while crafting and every lab view — replaced by a square crop centred on the sign, of side
width / FILL (the 40 px sign fills 40/48 of it, as in the scene protocol), resampled bilinearly to 48×48 after
the camera's blur and noise. Distance then lowers only the sign's resolution, not its share of the input.
It is a diagnostic, not an advlab option: it patches ``render`` where the lab and RP2 call it.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import advlab.attacks.rp2 as rp2_module
import advlab.lab.grid as grid_module
from advlab.cli import main
from advlab.physical import Conditions
from advlab.physical import render as scene_render

FILL = 40 / 48  # the sign's share of the crop's width


def crop_to_sign(images: torch.Tensor, cond: Conditions) -> torch.Tensor:
    """Per row, the square of side width/FILL (at most the image) centred on the sign, resized to the image."""
    n, c, h, w = images.shape
    side = (cond.width / FILL).clamp(max=float(min(h, w)))
    cx = torch.maximum(torch.minimum(cond.centre[:, 0], w - side / 2), side / 2)
    cy = torch.maximum(torch.minimum(cond.centre[:, 1], h - side / 2), side / 2)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = side / w, side / h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx / w - 1, 2 * cy / h - 1
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def cropped_render(obj: torch.Tensor, background: torch.Tensor, cond: Conditions, *,
                   generator: torch.Generator | None = None, supersample: int = 1) -> torch.Tensor:
    """advlab.physical.render, then the crop around the sign."""
    return crop_to_sign(scene_render(obj, background, cond, generator=generator, supersample=supersample), cond)


if __name__ == "__main__":
    grid_module.render = cropped_render  # type: ignore[assignment]
    rp2_module.render = cropped_render  # type: ignore[assignment]
    sys.exit(main(sys.argv[1:]))
