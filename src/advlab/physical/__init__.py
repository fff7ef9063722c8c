"""The physical world in simulation: how a sign, a sticker or a patch is seen by a camera.

:func:`render` puts a planar RGBA object into images at given :class:`Conditions` (viewpoint,
distance, rotation, light, printing colour error, blur, camera noise); :func:`transform_images`
applies the same to whole images. :class:`TransformDistribution` samples conditions (for data and
for Expectation over Transformation); :func:`lab_grid` is the fixed lab test grid (width × angle ×
light). Everything is batched, differentiable in the pixels, and deterministic under a generator.

EOT over a distribution as a gradient seam is :func:`advlab.attacks.eot_grad_fn` (for every attack that takes
``grad_fn``); :class:`Transformed` is a model seen through the distribution. :func:`print_photo`
simulates printing an image and photographing it (Kurakin et al.), and :func:`print_photo_table`
measures how many adversarial examples that destroys.

Modules: ``conditions`` (conditions, distributions, the lab grid), ``camera`` (homography, mip
pre-filter, warp, render, transform_images), ``photometry``, ``eot``, ``printing``.
"""

from advlab.physical.camera import DISTANCE, homography, mip_levels, render, transform_images, warp
from advlab.physical.conditions import LAB, Conditions, TransformDistribution, lab_grid
from advlab.physical.eot import PAPER_EOT, Transformed
from advlab.physical.photometry import MAX_BLUR, blur, photometric
from advlab.physical.printing import (
    PAPER_KURAKIN,
    PhotoRun,
    PrintPhoto,
    destruction,
    jpeg,
    kurakin_bim,
    print_photo,
    print_photo_runs,
    print_photo_table,
    summarise,
)

__all__ = ["DISTANCE", "LAB", "MAX_BLUR", "PAPER_EOT", "PAPER_KURAKIN", "Conditions", "PhotoRun", "PrintPhoto",
           "TransformDistribution", "Transformed", "blur", "destruction", "homography", "jpeg",
           "kurakin_bim", "lab_grid", "mip_levels", "photometric", "print_photo", "print_photo_runs",
           "print_photo_table", "render", "summarise", "transform_images", "warp"]
