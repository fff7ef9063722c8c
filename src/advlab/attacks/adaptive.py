"""Adaptive attacks: EOT and BPDA through the one gradient seam, and the adaptive PGD built on them.

Athalye, Carlini, Wagner, "Obfuscated gradients give a false sense of security", ICML 2018,
https://arxiv.org/abs/1802.00420:

* **BPDA** (Backward Pass Differentiable Approximation): where a defense's preprocessing has no
  useful gradient (rounding, JPEG, thermometer encoding), run it forward and differentiate a
  stand-in backward (identity by default). A model offers this as ``model.bpda(x)`` (see
  :class:`advlab.models.wrappers.Defended`).
* **EOT** (Expectation over Transformation, Athalye et al. 2018, https://arxiv.org/abs/1707.07397):
  where a forward pass is random, average the gradient over ``samples`` draws.

:func:`eot_bpda` builds a ``grad_fn`` for any white-box attack (``pgd(..., grad_fn=eot_bpda(10))``);
:func:`eot_grad_fn` does EOT over a transformation distribution of :mod:`advlab.physical`.
``pgd-adaptive`` is PGD with the margin (CW) loss on the logits — unaffected by a saturated
softmax, the masking of defensive distillation — through BPDA and EOT where the model declares
it needs them (``model.differentiable is False``, ``model.randomized is True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from advlab._checks import NonNegFloat, PositiveInt, check_positive_int
from advlab.attacks.gradient import GRADIENT_NORMS, default_step_size, iterative_gradient
from advlab.attacks.losses import GradFn, Loss, LossFn, loss_grad
from advlab.attacks.registry import AttackResult, register_attack
from advlab.physical import TransformDistribution, transform_images
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Athalye, Carlini, Wagner 2018, Obfuscated Gradients Give a False Sense of Security: "
    "Circumventing Defenses to Adversarial Examples, https://arxiv.org/abs/1802.00420"
)
DEFAULT_EOT_SAMPLES = 10


def needs_eot(model: Any) -> bool:
    """Whether the model declares a random forward pass."""
    return bool(getattr(model, "randomized", False))


def needs_bpda(model: Any) -> bool:
    """Whether the model declares a non-differentiable forward pass and offers ``bpda``."""
    return not getattr(model, "differentiable", True) and callable(getattr(model, "bpda", None))


def eot_bpda(samples: int = 1, bpda: bool = True) -> GradFn:
    """A gradient seam averaging ``samples`` draws (EOT), through ``model.bpda`` where it exists (BPDA).

    The loss, gradient and logits returned are the means over the draws.
    """
    check_positive_int("samples", samples)

    def grad_fn(model: Model, x: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        forward = model.bpda if bpda and needs_bpda(model) else model  # type: ignore[attr-defined]
        loss, grad, logits = loss_grad(forward, x, labels, loss_fn)
        for _ in range(samples - 1):
            lo, g, z = loss_grad(forward, x, labels, loss_fn)
            loss, grad, logits = loss + lo, grad + g, logits + z
        return loss / samples, grad / samples, logits / samples

    return grad_fn


def eot_grad_fn(distribution: TransformDistribution, samples: int = 8, *, generator: torch.Generator | None = None,
                relative_width: bool = True, fill: float = 0.0) -> GradFn:
    """EOT over a transformation distribution: the loss gradient averaged over ``samples`` draws of the transform.

    Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing Robust Adversarial Examples",
    https://arxiv.org/abs/1707.07397: an example that must survive a distribution T maximises
    E_{t∼T}[L(f(t(x)), y)]. Every attack that takes ``grad_fn`` gains it without a copied loop::

        pgd(model, x, y, threat, grad_fn=eot_grad_fn(TransformDistribution.image(), 8))

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
        cond = distribution.sample_like(x, n * samples, relative_width=relative_width, generator=rng)
        forward = model.bpda if needs_bpda(model) else model  # type: ignore[attr-defined]

        def seen(xr: torch.Tensor) -> torch.Tensor:
            return forward(transform_images(xr.repeat(samples, *([1] * (x.dim() - 1))), cond, generator=rng,
                                            fill=fill))

        def mean_loss(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return loss_fn(z, rows.repeat(samples)).view(samples, n).mean(0)

        loss, grad, logits = loss_grad(seen, x, labels, mean_loss)
        return loss, grad, logits.view(samples, n, *logits.shape[1:]).mean(0)

    return grad_fn


def _eot_samples(model: Any, eot_samples: int | None) -> int:
    return eot_samples if eot_samples is not None else (DEFAULT_EOT_SAMPLES if needs_eot(model) else 1)


def adaptive_grad_fn(model: Any, eot_samples: int | None = None, bpda: bool | None = None) -> GradFn:
    """The seam an adaptive attacker uses against ``model``: EOT if it is random, BPDA if it must."""
    return eot_bpda(_eot_samples(model, eot_samples), bpda is not False)


def describe_adaptive(model: Any, eot_samples: int | None = None, bpda: bool | None = None) -> str:
    """A short label of what the adaptive attack does against ``model``, e.g. ``"margin+BPDA+EOT×10"``."""
    parts = ["margin"]
    if bpda is not False and needs_bpda(model):
        parts.append("BPDA")
    samples = _eot_samples(model, eot_samples)
    if samples > 1:
        parts.append(f"EOT×{samples}")
    return "+".join(parts)


@register_attack("pgd-adaptive", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=PAPER, adaptive=True)
def pgd_adaptive(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    step_size: NonNegFloat | None = None,
    restarts: PositiveInt = 1,
    loss: Loss = "margin",
    eot_samples: PositiveInt | None = None,
    bpda: bool | None = None,
    early_stop: bool = False,
) -> AttackResult:
    """PGD with the margin loss through BPDA and EOT as the model requires (Athalye et al. 2018).

    ``eot_samples`` defaults to 10 for a model with ``randomized = True`` and 1 otherwise;
    ``bpda`` defaults to True where the model is non-differentiable and offers ``bpda``. On an
    ordinary model this is PGD with the CW margin loss. Cost: ``steps`` × ``eot_samples``
    forward and backward passes per restart.
    """
    return iterative_gradient(
        model, x, y, threat, target=target, steps=steps, step_size=default_step_size(step_size, threat.eps, steps),
        random_start=True, restarts=restarts, early_stop=early_stop, loss=loss, generator=generator,
        grad_fn=adaptive_grad_fn(model, eot_samples, bpda),
    )
