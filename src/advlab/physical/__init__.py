"""The physical world in simulation: how a sign, a sticker or a patch is seen by a camera.

:func:`render` puts a planar RGBA object into images at given :class:`Conditions` (viewpoint,
distance, rotation, light, printing colour error, blur, camera noise); :func:`transform_images`
applies the same to whole images. :class:`TransformDistribution` samples conditions (for data and
for Expectation over Transformation); :func:`lab_grid` is the fixed lab test grid (width × angle ×
light). Everything is batched, differentiable in the pixels, and deterministic under a generator.
"""

from advlab.physical.conditions import LAB, Conditions, TransformDistribution, lab_grid
from advlab.physical.render import DISTANCE, homography, photometric, render, transform_images, warp

__all__ = ["DISTANCE", "LAB", "Conditions", "TransformDistribution", "homography", "lab_grid", "photometric",
           "render", "transform_images", "warp"]
