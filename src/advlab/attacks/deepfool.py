"""DeepFool: the minimal perturbation to the nearest linearised decision boundary, batched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from advlab._checks import check_nonneg, check_positive_int
from advlab.attacks.base import AttackResult, register_attack, reject_unknown, validate
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
        grads = []
        for j in range(k):
            (g,) = torch.autograd.grad(f[:, j].sum(), xr, retain_graph=j < k - 1)
            grads.append(g)
    return logits.detach(), f.detach(), torch.stack(grads, dim=1)  # N×k×C×H×W


@register_attack(
    "deepfool", kind="white-box", norms=("l2", "linf"), targeted=False, minimal=True, paper=PAPER,
    defaults={"steps": 50, "overshoot": 0.02, "candidates": 10},
)
def deepfool(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    **unused: Any,
) -> AttackResult:
    """DeepFool: step to the nearest boundary of the locally linearised classifier, repeat.

    Moosavi-Dezfooli et al. 2016 (https://arxiv.org/abs/1511.04599). At each iteration, for the
    ``candidates-1`` most likely wrong classes k, f_k = Z_k − Z_y and w_k = ∇f_k; the step goes to
    the closest hyperplane, 10⁻⁴ past it: with d_k = |f_k|/‖w_k‖ (‖·‖₂ for L2, ‖·‖₁ for L∞), L2
    r = (d_k+10⁻⁴) · w_k/‖w_k‖₂, L∞ r = (d_k+10⁻⁴) · sign(w_k). The accumulated perturbation
    is scaled by (1 + ``overshoot``) and clipped to the bounds. Examples stop as soon as they
    are misclassified. Minimal-perturbation (run it with ε = inf and read success at any ε from
    the norm; with a finite ε the result is projected into the ball and re-scored). Untargeted,
    white-box. Cost per iteration on the examples still active: 1 forward + (candidates−1)
    backward passes; at most ``steps`` iterations.
    """
    reject_unknown("deepfool", unused)
    y, _ = validate("deepfool", ("l2", "linf"), x, y, threat, target, supports_targeted=False)
    check_positive_int("steps", steps)
    check_nonneg("overshoot", overshoot)
    check_positive_int("candidates", candidates)
    if candidates < 2:
        raise ValueError(f"candidates: expected an integer >= 2, got {candidates}")
    x = x.detach()
    n = len(x)
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.arange(n, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    for it in range(steps + 1):
        logits, f, w = _class_gradients(model, x_adv[active], y[active], candidates) if it < steps else (
            _forward(model, x_adv[active]), None, None
        )
        fooled = logits.argmax(dim=1) != y[active]
        success[active[fooled]] = True
        active = active[~fooled]
        if len(active) == 0 or f is None or w is None:
            break
        f, w = f[~fooled], w[~fooled]
        wf = w.flatten(2)
        if threat.norm == "l2":
            wnorm = wf.norm(dim=2)
        else:
            wnorm = wf.abs().sum(dim=2)
        dist = f.abs() / wnorm.clamp_min(1e-12)
        best = dist.argmin(dim=1)
        idx = torch.arange(len(active), device=x.device)
        w_best, d_best = w[idx, best], dist[idx, best]
        # the distance to the hyperplane plus 1e-4 (in input units, as the reference implementation
        # does), so each step lands just past the boundary, not on it
        if threat.norm == "l2":
            r = ((d_best + 1e-4) / wnorm[idx, best].clamp_min(1e-12)).view(view) * w_best
        else:
            r = (d_best + 1e-4).view(view) * w_best.sign()
        r_tot[active] += r
        x_adv[active] = threat.clip(x[active] + (1 + overshoot) * r_tot[active])
    if threat.bounded:
        x_adv = threat.project(x, x_adv)
        success = _forward(model, x_adv).argmax(dim=1) != y
    return AttackResult(x_adv, success)


def _forward(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)
