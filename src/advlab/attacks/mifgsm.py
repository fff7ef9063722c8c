"""MI-FGSM: iterative FGSM with a momentum term on the normalised gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch

from advlab._checks import NonNegFloat, PositiveInt
from advlab.attacks.gradient import default_step_size, steepest_step
from advlab.attacks.losses import GradFn, Loss, loss_grad, objective, success_on_rows
from advlab.attacks.registry import AttackResult, register_attack
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Dong, Liao, Pang, Su, Zhu, Hu, Li 2018, Boosting Adversarial Attacks with Momentum, "
    "https://arxiv.org/abs/1710.06081"
)


@register_attack("mi-fgsm", kind="white-box", norms=("linf", "l2"), targeted=True, paper=PAPER)
def mi_fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegFloat | None = None,
    decay: NonNegFloat = 1.0,
    loss: Loss = "ce",
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """Momentum Iterative FGSM: g ← μ·g + ∇/‖∇‖₁, then a steepest step along g, projected.

    Dong et al. 2018 (https://arxiv.org/abs/1710.06081). The accumulated direction (``decay`` μ)
    steadies the updates, which makes the examples transfer better to other models. No random
    start; L∞ (sign steps) or L2 (normalised steps) of ``step_size`` (default 2.5·ε/steps; the
    paper uses ε/steps); targeted or not; white-box. Cost: ``steps`` forward + backward passes,
    plus 1 forward to score.
    """
    rows = torch.arange(len(x), device=x.device)
    obj, hits = objective(loss, y, target), success_on_rows(y, target)
    alpha = default_step_size(step_size, threat.eps, steps)
    x = x.detach()
    x_adv, g = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        _, grad, _ = grad_fn(model, x_adv, rows, obj)
        l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        g = decay * g + grad / l1
        x_adv = threat.project(x, x_adv + steepest_step(g, threat.norm, alpha))
    with torch.no_grad():
        success = hits(model(x_adv), rows)
    return AttackResult(x_adv, success)
