"""Carlini–Wagner L2: tanh change of variables, the f6 objective, Adam, binary search over c."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from advlab._checks import check_nonneg, check_positive_int
from advlab.attacks.base import AttackResult, is_adversarial, register_attack, reject_unknown, validate
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Carlini, Wagner 2017, Towards Evaluating the Robustness of Neural Networks, "
    "https://arxiv.org/abs/1608.04644"
)


def _f6(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, kappa: float) -> torch.Tensor:
    """max(max_{i≠t} Z_i − Z_t, −κ) (targeted) or max(Z_y − max_{i≠y} Z_i, −κ) (untargeted)."""
    z_lab = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    diff = other - z_lab if targeted else z_lab - other
    return diff.clamp_min(-kappa)


@register_attack(
    "cw", kind="white-box", norms=("l2",), targeted=True, minimal=True, paper=PAPER,
    defaults={"steps": 100, "binary_search_steps": 6, "lr": 0.1, "initial_const": 1.0, "kappa": 0.0},
)
def cw(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 100,
    binary_search_steps: int = 6,
    lr: float = 0.1,
    initial_const: float = 1.0,
    kappa: float = 0.0,
    abort_early: bool = True,
    **unused: Any,
) -> AttackResult:
    """Carlini–Wagner L2: minimise ‖δ‖₂² + c·f6 with Adam in tanh space, binary search on c.

    Carlini & Wagner 2017 (https://arxiv.org/abs/1608.04644). x_adv = lo + (hi−lo)(tanh(w)+1)/2
    keeps every iterate inside the bounds; f6 = max(max_{i≠t} Z_i − Z_t, −κ) (targeted) or
    max(Z_y − max_{i≠y} Z_i, −κ) (untargeted). Each of ``binary_search_steps`` rounds runs Adam
    for ``steps`` iterations from the clean image; per example, c is halved towards the last
    success or multiplied by 10 while none was found. Returns, per example, the smallest
    successful perturbation found (the clean image where none was). Minimal-perturbation (L2
    only): with a finite ε the result is projected into the ball and re-scored. Targeted or not;
    white-box. Cost: at most binary_search_steps × steps forward + backward passes; with
    ``abort_early`` a round stops once the objective summed over the batch has not fallen by 0.01%
    over steps/10 iterations (the rule of Carlini & Wagner's reference code).
    """
    reject_unknown("cw", unused)
    y, target = validate("cw", ("l2",), x, y, threat, target, supports_targeted=True)
    check_positive_int("steps", steps)
    check_positive_int("binary_search_steps", binary_search_steps)
    check_nonneg("lr", lr)
    check_nonneg("initial_const", initial_const)
    check_nonneg("kappa", kappa)
    targeted = target is not None
    labels = y if target is None else target
    x = x.detach()
    n = len(x)
    lo, hi = threat.bounds

    def to_x(w: torch.Tensor) -> torch.Tensor:
        return lo + (hi - lo) * (torch.tanh(w) + 1) / 2

    w0 = torch.atanh(((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    const = torch.full((n,), float(initial_const), device=x.device)
    lower = torch.zeros(n, device=x.device)
    upper = torch.full((n,), math.inf, device=x.device)
    best_l2 = torch.full((n,), math.inf, device=x.device)
    best_x = x.clone()
    with torch.no_grad():
        already = is_adversarial(model(x), y, target)
    best_l2[already] = 0.0
    b1, b2, adam_eps = 0.9, 0.999, 1e-8
    check_every = max(1, steps // 10)
    for _ in range(binary_search_steps):
        w = w0.clone()
        m = torch.zeros_like(w)
        v = torch.zeros_like(w)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        prev = math.inf
        for t in range(1, steps + 1):
            wr = w.requires_grad_(True)
            with torch.enable_grad():
                xa = to_x(wr)
                logits = model(xa)
                l2sq = (xa - x).flatten(1).square().sum(dim=1)
                f = _f6(logits, labels, targeted, kappa)
                obj = l2sq + const * f
                (grad,) = torch.autograd.grad(obj.sum(), wr)
            with torch.no_grad():
                adv = is_adversarial(logits, y, target)
                if kappa > 0:
                    adv = adv & (f <= -kappa + 1e-6)
                l2 = l2sq.detach().sqrt()
                better = adv & (l2 < best_l2)
                if bool(better.any()):
                    best_l2 = torch.where(better, l2, best_l2)
                    best_x[better] = xa.detach()[better]
                found |= adv
                # Adam, in place: w ← w − lr · m̂ / (√v̂ + ε)
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = v.div(1 - b2**t).sqrt_().add_(adam_eps)
                w = w.detach().addcdiv_(m, denom, value=-lr / (1 - b1**t))
                # Carlini & Wagner's early abort: the round ends once the summed objective has not
                # fallen by 0.01% over the last steps/10 iterations.
                if abort_early and t % check_every == 0:
                    total = float(obj.detach().sum())
                    if total > prev * 0.9999:
                        break
                    prev = total
        # Binary search on c, per example.
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(
            torch.isfinite(upper), (lower + upper) / 2, const * 10
        )
    success = torch.isfinite(best_l2)
    if threat.bounded:
        best_x = threat.project(x, best_x)
        with torch.no_grad():
            success = is_adversarial(model(best_x), y, target)
    else:
        best_x = threat.clip(best_x)
    return AttackResult(best_x, success)
