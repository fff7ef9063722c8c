"""DeepFool: the minimal perturbation to the nearest linearised decision boundary, batched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch

from advlab._checks import NonNegFloat, PositiveInt, Range
from advlab.attacks.losses import several_gradients
from advlab.attacks.registry import AttackResult, register_attack
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Moosavi-Dezfooli, Fawzi, Frossard 2016, DeepFool: a simple and accurate method to fool deep "
    "neural networks, https://arxiv.org/abs/1511.04599"
)


def _class_gradients(
    model: Model, x: torch.Tensor, labels: torch.Tensor, candidates: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, and for the ``candidates-1`` most likely other classes k: f_k = Z_k − Z_y, ∇f_k.

    One forward pass and ``candidates-1`` backward passes through the same graph, each over the
    whole batch (the per-example gradients of Z_k − Z_y are independent, so summing over the
    batch before differentiating gives all of them at once).
    """
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        z_true = logits.gather(1, labels[:, None])
        others = logits.detach().clone()
        others.scatter_(1, labels[:, None], float("-inf"))
        k = min(candidates, logits.shape[1]) - 1
        cls = others.topk(k, dim=1).indices  # N×k candidate classes
        f = logits.gather(1, cls) - z_true  # N×k, negative while the label still wins
        grads = several_gradients(model, xr, logits, [_margin_sum(cls[:, j], labels) for j in range(k)])
    return logits.detach(), f.detach(), torch.stack(grads, dim=1)  # N×k×C×H×W


def _margin_sum(cls: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map logits ↦ Σ_n (Z_cls − Z_y), one class per example."""
    return lambda z: (z.gather(1, cls[:, None]) - z.gather(1, labels[:, None])).sum()


@register_attack("deepfool", kind="white-box", norms=("l2", "linf"), targeted=False, budget="minimal", paper=PAPER)
def deepfool(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 50,
    overshoot: NonNegFloat = 0.02,
    candidates: Annotated[int, Range(2)] = 10,
) -> AttackResult:
    """DeepFool: step to the nearest boundary of the locally linearised classifier, repeat.

    Moosavi-Dezfooli et al. 2016 (https://arxiv.org/abs/1511.04599). At each iteration, for the
    ``candidates-1`` most likely wrong classes k, f_k = Z_k − Z_y and w_k = ∇f_k; the step goes to
    the closest hyperplane, 10⁻⁴ past it: with d_k = |f_k|/‖w_k‖ (‖·‖₂ for L2, ‖·‖₁ for L∞), L2
    r = (d_k+10⁻⁴) · w_k/‖w_k‖₂, L∞ r = (d_k+10⁻⁴) · sign(w_k). The accumulated perturbation
    is scaled by (1 + ``overshoot``) and clipped to the bounds. Examples stop as soon as they
    are misclassified. Minimal-perturbation (run it with ε = inf and read success at any ε from
    the norm; with a finite ε the result is projected into the ball and re-scored). Untargeted,
    white-box. ``candidates`` counts the classes considered, the true one included (as Foolbox's).
    Cost per iteration on the examples still active: 1 forward + (candidates−1) backward passes;
    at most ``steps`` iterations.
    """
    x = x.detach()
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    active = torch.arange(len(x), device=x.device)
    for it in range(steps + 1):
        if it == steps:  # out of iterations: score the last iterate
            logits, f, w = _forward(model, x_adv[active]), None, None
        else:
            logits, f, w = _class_gradients(model, x_adv[active], y[active], candidates)
        fooled = logits.argmax(dim=1) != y[active]
        success[active[fooled]] = True
        active = active[~fooled]
        if len(active) == 0 or f is None or w is None:
            break
        r_tot[active] += _step_to_boundary(f[~fooled], w[~fooled], threat.norm)
        x_adv[active] = threat.clip(x[active] + (1 + overshoot) * r_tot[active])
    if threat.bounded:
        x_adv = threat.project(x, x_adv)
        success = _forward(model, x_adv).argmax(dim=1) != y
    return AttackResult(x_adv, success)


def _step_to_boundary(f: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    """The step to the closest linearised boundary among the candidates, 10⁻⁴ (input units) past it.

    The reference implementation adds 10⁻⁴ to the distance in input units, so each step lands
    just past the boundary, not on it.
    """
    wf = w.flatten(2)
    wnorm = wf.norm(dim=2) if norm == "l2" else wf.abs().sum(dim=2)
    dist = f.abs() / wnorm.clamp_min(1e-12)
    best = dist.argmin(dim=1)
    idx = torch.arange(len(f), device=f.device)
    w_best, d_best = w[idx, best], dist[idx, best]
    view = (-1,) + (1,) * (w_best.dim() - 1)
    if norm == "l2":
        return ((d_best + 1e-4) / wnorm[idx, best].clamp_min(1e-12)).view(view) * w_best
    return (d_best + 1e-4).view(view) * w_best.sign()


def _forward(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)
