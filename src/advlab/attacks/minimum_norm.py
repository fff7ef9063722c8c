"""Fast Minimum-Norm (FMN): normalised gradient steps inside an ε-ball whose radius adapts, per norm."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from advlab._checks import Fraction, PositiveFloat, PositiveInt
from advlab.attacks.losses import is_adversarial, loss_grad, margin_loss, minimal_result
from advlab.attacks.registry import AttackResult, register_attack
from advlab.threat import ThreatModel, distance, project_balls

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Pintor, Roli, Brendel, Biggio 2021, Fast Minimum-norm Adversarial Attacks through Adaptive Norm "
    "Projections, https://arxiv.org/abs/2102.12827"
)
# Dual norm q of each norm p (1/p + 1/q = 1): the linearised distance to the boundary is |ℓ| / ‖∇ℓ‖_q.
_DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf}
_FINAL_STEP = 0.01  # α is annealed from step_size to step_size/100 (the paper's and its reference code's)
_FINAL_GAMMA = 0.001  # γ is annealed from gamma to 0.001


def _cosine(start: float, end: float, i: int, steps: int) -> float:
    """Cosine annealing from ``start`` (i = 0) towards ``end`` (i = steps)."""
    return end + (start - end) * (1 + math.cos(math.pi * i / steps)) / 2


def _logit_gap(y: torch.Tensor, target: torch.Tensor | None) -> tuple[
    torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
]:
    """(labels, ℓ): ℓ = Z_y − max_{j≠y} Z_j (untargeted) or max_{j≠t} Z_j − Z_t (targeted); < 0 is adversarial."""
    if target is None:
        return y, lambda z, labels: -margin_loss(z, labels)
    return target, margin_loss


def _next_eps(eps: torch.Tensor, gap: torch.Tensor, gnorm: torch.Tensor, norm_now: torch.Tensor,
              best: torch.Tensor, adv: torch.Tensor, found: torch.Tensor, gamma: float, l0: bool) -> torch.Tensor:
    """The paper's ε update, per example.

    Shrink by (1−γ) while adversarial (never above the best norm found); grow by (1+γ) once something
    was found; before that, jump to ‖δ‖ + the linearised distance to the boundary. For L0, ε is a
    count: it moves by at least one and is rounded down.
    """
    if l0:
        down = torch.minimum(torch.minimum(eps - 1, (eps * (1 - gamma)).floor()), best)
        up = torch.maximum(eps + 1, (eps * (1 + gamma)).floor())
        return torch.where(adv, down, up).clamp_min(0)
    jump = norm_now + gap.abs() / gnorm.clamp_min(1e-12)
    return torch.where(adv, torch.minimum(eps * (1 - gamma), best), torch.where(found, eps * (1 + gamma), jump))


@register_attack("fmn", kind="white-box", norms=("l0", "l1", "l2", "linf"), targeted=True, budget="minimal",
                 paper=PAPER)
def fmn(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    step_size: PositiveFloat = 1.0,
    gamma: Fraction = 0.05,
) -> AttackResult:
    """Fast Minimum-Norm attack in L0, L1, L2 or L∞ (the threat model's norm).

    Pintor et al. 2021 (https://arxiv.org/abs/2102.12827). From δ = 0, each of ``steps`` iterations
    takes the logit gap ℓ = Z_y − max_{j≠y} Z_j (targeted: max_{j≠t} Z_j − Z_t; adversarial when the
    prediction is wrong / the target) and its gradient g at x + δ, then

    * adapts the radius ε: while x + δ is adversarial, ε ← min(ε(1−γ), ‖δ*‖) (δ* the smallest
      adversarial δ so far); once one was found and x + δ is not, ε ← ε(1+γ); before any was found,
      ε ← ‖δ‖ + |ℓ| / ‖g‖_q, the distance to the linearised boundary (q the dual norm). For L0, ε
      counts changed elements (as ThreatModel's L0 does: pixels × channels): it starts at 1, moves by
      at least 1 and is rounded down. ε never exceeds the norm of the largest perturbation the bounds
      allow;
    * steps δ ← δ − α g/‖g‖₂, then projects δ onto the ε-ball (L∞ clamp, L2 rescale, L1 soft
      threshold, L0 the ⌊ε⌋ largest entries: ``threat.project_balls``) and clips x + δ to the bounds.

    One change to the published rule: g is the gradient without the components that point out of
    the bounds at elements already on a bound (the projected gradient onto the directions the box
    allows), in the step and in the distance estimate. As published, the estimate counts directions
    that clipping then removes, so on images with many pixels at 0 the iterate can stall short of the
    boundary: on the 8×8 digits MLP, 200 test images, the published rule succeeded on 33% in L2 and
    73% in L1 (as Foolbox's FMN does in L1), this one on 100%.

    α is cosine-annealed from ``step_size`` to step_size/100 and γ from ``gamma`` to 0.001, as in the
    paper. The last iterate is scored too. Returns, per example, the adversarial x + δ of smallest
    norm seen (the clean image where none was). Minimal-perturbation: with a finite ε the answer is
    projected into the ball and re-scored. Targeted or not; white-box. Cost: ``steps`` forward +
    backward passes and one forward pass, over the whole batch.
    """
    x = x.detach()
    n, norm, worst = len(x), threat.norm, _worst_norm(x, threat)
    labels, gap_fn = _logit_gap(y, target)
    eps = torch.ones(n, device=x.device) if norm == "l0" else torch.full((n,), math.inf, device=x.device)
    best, best_x, delta = torch.full((n,), math.inf, device=x.device), x.clone(), torch.zeros_like(x)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for i in range(steps):
        x_adv = x + delta
        gap, grad, logits = loss_grad(model, x_adv, labels, gap_fn)
        now = threat.distance(x, x_adv)
        adv = _record(x_adv, logits, now, y, target, best, best_x)
        found |= adv
        g = _feasible(grad, x_adv, *threat.bounds).flatten(1)
        eps = _next_eps(eps, gap, g.norm(p=_DUAL.get(norm, 2.0), dim=1), now, best, adv, found,
                        _cosine(gamma, _FINAL_GAMMA, i, steps), norm == "l0").minimum(worst)
        delta = _move(x, delta, g, eps, _cosine(step_size, step_size * _FINAL_STEP, i, steps), threat)
    with torch.no_grad():  # the last iterate: scored, no step
        _record(x + delta, model(x + delta), threat.distance(x, x + delta), y, target, best, best_x)
    return _finish(model, x, y, target, threat, best_x)


def _move(x: torch.Tensor, delta: torch.Tensor, g: torch.Tensor, eps: torch.Tensor, alpha: float,
          threat: ThreatModel) -> torch.Tensor:
    """δ − α g/‖g‖₂, projected onto the per-example ε-balls, then x + δ clipped to the bounds."""
    d = delta.flatten(1) - alpha * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return threat.clip(x + project_balls(d, eps, threat.norm).view_as(x)) - x


def _worst_norm(x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Per example, the norm of the largest perturbation the bounds allow (each element to its farther bound)."""
    lo, hi = threat.bounds
    far = torch.where(x - lo > hi - x, torch.full_like(x, lo), torch.full_like(x, hi))
    return distance(x, far, threat.norm)


def _feasible(grad: torch.Tensor, x_adv: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The gradient without the components a descent step would only push further past a bound.

    At an element on its lower bound a positive component, on its upper bound a negative one: the
    step δ − αg would be clipped away there.
    """
    out = (x_adv <= lo) & (grad > 0) | (x_adv >= hi) & (grad < 0)
    return grad.masked_fill(out, 0.0)


def _record(x_adv: torch.Tensor, logits: torch.Tensor, norm_now: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None, best: torch.Tensor, best_x: torch.Tensor) -> torch.Tensor:
    """Keep, in place, the adversarial iterates of smallest norm; returns which are adversarial."""
    adv = is_adversarial(logits, y, target)
    better = adv & (norm_now < best)
    best.copy_(torch.where(better, norm_now, best))
    best_x[better] = x_adv[better]
    return adv


def _finish(model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, threat: ThreatModel,
            best_x: torch.Tensor) -> AttackResult:
    """Project into the ball when ε is finite (else only into the bounds) and score the answer."""
    return minimal_result(model, x, best_x, y, target, threat)
