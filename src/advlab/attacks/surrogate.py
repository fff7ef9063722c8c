"""The transfer attack: PGD on a surrogate model of the same task, the examples applied to the target.

Papernot, McDaniel, Goodfellow 2016, "Transferability in machine learning"
(https://arxiv.org/abs/1605.07277): adversarial examples crafted on one model often fool another
trained for the same task. The target is never differentiated — only its predictions on the
crafted examples are read (one query each) — so the attack works on a model whose gradients are
masked or absent, and on a :class:`~advlab.models.blackbox.BlackBox`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab._checks import PositiveInt
from advlab.attacks.fastview import inference_view
from advlab.attacks.gradient import GRADIENT_NORMS, default_step_size, iterative_gradient
from advlab.attacks.losses import Loss
from advlab.attacks.registry import AttackResult, register_attack
from advlab.models import check_input_shape, load_model
from advlab.models.blackbox import BlackBox, as_blackbox
from advlab.threat import ThreatModel

PAPER = ("Papernot, McDaniel, Goodfellow 2016, Transferability in Machine Learning: from Phenomena to Black-Box "
         "Attacks using Adversarial Samples, https://arxiv.org/abs/1605.07277")


@register_attack("transfer", kind="transfer", norms=GRADIENT_NORMS, targeted=True, needs_grad=False, paper=PAPER)
def transfer(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    surrogate: str | nn.Module = "lenet-mnist",
    steps: PositiveInt = 100,
    loss: Loss = "margin",
) -> AttackResult:
    """PGD (margin loss, random start, ``steps`` iterations) on ``surrogate``, judged on ``model``.

    Args:
        model: The target: a torch model or a :class:`~advlab.models.blackbox.BlackBox` with
            labels or scores; only its predictions on the crafted examples are read.
        x: Clean batch inside ``threat.bounds``.
        y: True labels.
        threat: L∞, L2 or L1 threat model with finite ε.
        target: Target labels when ``threat.targeted``.
        generator: Source of randomness of the random start.
        surrogate: A shipped model name or checkpoint path of the same task (input shape and
            classes), loaded onto ``x.device``, or a torch model on ``x.device`` (attacked through
            its eval-mode copy; never changed, never moved).
        steps: PGD iterations on the surrogate.
        loss: The surrogate's objective (``margin``, ``ce`` or ``dlr``).

    Returns:
        ``AttackResult``: the crafted examples, success on the target, one query each.
    """
    # a shipped model advlab loads itself goes to x's device; a caller's model is used where it is
    src = load_model(surrogate).to(x.device) if isinstance(surrogate, str) else surrogate
    if isinstance(src, BlackBox):
        raise ValueError(f"surrogate: expected a differentiable torch model, got the black box {surrogate!r}")
    try:  # (the default surrogate, lenet-mnist, fits only MNIST-shaped images)
        check_input_shape(src, x, name=surrogate if isinstance(surrogate, str) else None, source="the attacked batch",
                          arg="surrogate")
    except ValueError as e:
        raise ValueError(f"{e}; pass surrogate= a model of this task's inputs") from None
    crafted = iterative_gradient(inference_view(src), x, y, threat, target=target, steps=steps,
                                 step_size=default_step_size(None, threat.eps, steps), random_start=True,
                                 loss=loss, generator=generator).x_adv
    pred = as_blackbox(model).session(len(x)).labels(crafted)
    success = (pred == target) if target is not None else (pred != y)
    return AttackResult(crafted, success.to(x.device), torch.ones(len(x), dtype=torch.int64, device=x.device))


__all__ = ["transfer"]
