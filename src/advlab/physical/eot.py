"""Expectation over Transformation for every gradient attack, and a model seen through a distribution.

Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing Robust Adversarial Examples" (EOT),
https://arxiv.org/abs/1707.07397: an adversarial example that must survive a distribution T of
transformations maximises E_{t∼T}[L(f(t(x)), y)]; its gradient is estimated by averaging the
gradient over draws of t. :func:`eot_grad_fn` is that estimate as a gradient seam with the
signature of :func:`advlab.attacks.loss_grad` (``grad_fn(model, x, rows, loss_fn) -> (loss,
grad, logits)``), so every attack that takes ``grad_fn`` — FGSM, BIM, PGD, MI-FGSM, APGD,
APGD-T, the APGD ensemble, the vanishing attack — gains EOT without a copied loop::

    pgd(model, x, y, threat, grad_fn=eot_grad_fn(TransformDistribution.image(), 8))

:class:`Transformed` is the model evaluated under the distribution: every forward pass draws new
conditions (``randomized = True``, so an adaptive evaluation averages over draws, as for advlab's
other random defenses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advlab._checks import check_positive_int
from advlab.physical.camera import transform_images
from advlab.physical.conditions import Conditions, TransformDistribution

__all__ = ["PAPER_EOT", "Transformed", "eot_grad_fn"]

PAPER_EOT = ("Athalye, Engstrom, Ilyas, Kwok 2018, Synthesizing Robust Adversarial Examples, "
             "https://arxiv.org/abs/1707.07397")

Model = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EotGradFn = Callable[[Model, torch.Tensor, torch.Tensor, LossFn], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _forward(model: Any) -> Model:
    """The model's BPDA forward where it declares a non-differentiable one and offers ``bpda``, else itself."""
    if not getattr(model, "differentiable", True) and callable(getattr(model, "bpda", None)):
        bpda: Model = model.bpda
        return bpda
    return model  # type: ignore[no-any-return]


def _conditions(distribution: TransformDistribution, n: int, x: torch.Tensor, relative_width: bool,
                generator: torch.Generator | None) -> Conditions:
    return distribution.sample(n, (int(x.shape[-2]), int(x.shape[-1])), channels=int(x.shape[1]),
                               relative_width=relative_width, generator=generator, device=x.device)


def eot_grad_fn(distribution: TransformDistribution, samples: int = 8, *, generator: torch.Generator | None = None,
                relative_width: bool = True, fill: float = 0.0) -> EotGradFn:
    """A gradient seam averaging the loss gradient over ``samples`` draws of ``transform_images(x, cond)``.

    Args:
        distribution: Where the conditions come from (e.g. :meth:`TransformDistribution.image`).
        samples: Draws per gradient; all of them go through the model as one batch of N·samples.
        generator: The draws' randomness; ``None`` makes a generator seeded 0 when the seam is
            built, so an attack through it is deterministic (each call draws new conditions).
        relative_width: ``distribution.width`` is a factor of the image width (the ``image``
            preset); False reads it in pixels.
        fill: The value outside the transformed image.

    Returns the per-example loss, gradient and logits, each averaged over the draws. The gradient
    flows through ``model.bpda`` where the model declares a non-differentiable forward pass.
    """
    check_positive_int("samples", samples)
    if not isinstance(distribution, TransformDistribution):
        raise TypeError(f"distribution: expected a TransformDistribution, got {type(distribution).__name__}")
    rng = generator if generator is not None else torch.Generator().manual_seed(0)

    def grad_fn(model: Model, x: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        n = len(x)
        cond = _conditions(distribution, n * samples, x, relative_width, rng)
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            seen = transform_images(xr.repeat(samples, *([1] * (x.dim() - 1))), cond, generator=rng, fill=fill)
            logits = _forward(model)(seen)
            loss = loss_fn(logits, labels.repeat(samples))
            (grad,) = torch.autograd.grad(loss.sum() / samples, xr)
        return (loss.detach().view(samples, n).mean(0), grad.detach(),
                logits.detach().view(samples, n, *logits.shape[1:]).mean(0))

    return grad_fn


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
        cond = _conditions(self.distribution, len(x), x, self.relative_width, self.generator)
        out: torch.Tensor = self.model(transform_images(x, cond, generator=self.generator, fill=self.fill))
        return out
