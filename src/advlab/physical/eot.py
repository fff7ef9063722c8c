"""A model seen through a distribution of transformations (Expectation over Transformation's model side).

Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing Robust Adversarial Examples" (EOT),
https://arxiv.org/abs/1707.07397. The attack side, the gradient averaged over draws, is a
gradient seam and lives with the others: :func:`advlab.attacks.eot_grad_fn`.

:class:`Transformed` is the model evaluated under the distribution: every forward pass draws new
conditions (``randomized = True``, so an adaptive evaluation averages over draws, as for advlab's
other random defenses).
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.physical.camera import transform_images
from advlab.physical.conditions import TransformDistribution

__all__ = ["PAPER_EOT", "Transformed"]

PAPER_EOT = ("Athalye, Engstrom, Ilyas, Kwok 2018, Synthesizing Robust Adversarial Examples, "
             "https://arxiv.org/abs/1707.07397")


class Transformed(nn.Module):
    """``model`` seen through ``distribution``: each forward pass draws new conditions for every image.

    Args:
        model: The classifier (images in [0, 1] to logits).
        distribution: The transformations (e.g. :meth:`TransformDistribution.image`).
        relative_width: ``distribution.width`` is a factor of the image width.
        fill: The value outside the transformed image.
        seed: Seeds the wrapper's own generator (its draws are reproducible from construction).

    ``randomized = True``: an adaptive attack averages its gradient over draws (EOT). The wrapper
    takes the classifier's mode and metadata; the classifier itself is never changed.
    """

    randomized = True
    differentiable = True

    def __init__(self, model: nn.Module, distribution: TransformDistribution, *, relative_width: bool = True,
                 fill: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(distribution, TransformDistribution):
            raise TypeError(f"distribution: expected a TransformDistribution, got {type(distribution).__name__}")
        self.model = model
        self.distribution = distribution
        self.relative_width = relative_width
        self.fill = fill
        self.generator = torch.Generator().manual_seed(seed)
        self.advlab_meta = dict(getattr(model, "advlab_meta", {}))
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        cond = self.distribution.sample_like(x, relative_width=self.relative_width, generator=self.generator)
        out: torch.Tensor = self.model(transform_images(x, cond, generator=self.generator, fill=self.fill))
        return out
