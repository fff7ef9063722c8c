"""Carlini–Wagner L2: tanh change of variables, objectives f1–f7 (default f6), Adam, binary search over c."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from advlab._checks import NonNegFloat, PositiveInt
from advlab.attacks.cw_objectives import Objective, check_kappa, cw_objective, meets_kappa
from advlab.attacks.losses import is_adversarial
from advlab.attacks.registry import AttackResult, Renamed, register_attack
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Carlini, Wagner 2017, Towards Evaluating the Robustness of Neural Networks, "
    "https://arxiv.org/abs/1608.04644"
)
_ADAM = (0.9, 0.999, 1e-8)  # β1, β2, ε of Adam, as in Carlini & Wagner's code


@register_attack(
    "cw", kind="white-box", norms=("l2",), targeted=True, budget="minimal", paper=PAPER,
    renamed={"abort_early": Renamed("early_stop")},
)
def cw(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    binary_search_steps: PositiveInt = 6,
    lr: NonNegFloat = 0.1,
    initial_const: NonNegFloat = 1.0,
    kappa: NonNegFloat = 0.0,
    early_stop: bool = True,
    objective: Objective = "f6",
) -> AttackResult:
    """Carlini–Wagner L2: minimise ‖δ‖₂² + c·f with Adam in tanh space, binary search on c.

    Carlini & Wagner 2017 (https://arxiv.org/abs/1608.04644). x_adv = lo + (hi−lo)(tanh(w)+1)/2
    keeps every iterate inside the bounds; f is by default f6 = max(max_{i≠t} Z_i − Z_t, −κ) (targeted) or
    max(Z_y − max_{i≠y} Z_i, −κ) (untargeted). Each of ``binary_search_steps`` rounds runs Adam
    for ``steps`` iterations from the clean image; per example, c is halved towards the last
    success or multiplied by 10 while none was found. Returns, per example, the smallest
    successful perturbation found (the clean image where none was). Minimal-perturbation (L2
    only): with a finite ε the result is projected into the ball and re-scored. Targeted or not;
    white-box. Cost: at most binary_search_steps × steps forward + backward passes; with
    ``early_stop`` a round stops once the objective summed over the batch has not fallen by 0.01%
    over steps/10 iterations (the rule of Carlini & Wagner's reference code). ``objective``
    picks f among the paper's seven (§V; ``advlab.attacks.cw_objectives`` gives the forms used,
    two of them repaired, and their untargeted analogues); κ applies to f6 only.
    """
    check_kappa(objective, kappa)
    x = x.detach()
    n = len(x)
    search = _Search(model, x, y, target, threat.bounds, kappa, objective)
    const = torch.full((n,), float(initial_const), device=x.device)
    lower = torch.zeros(n, device=x.device)
    upper = torch.full((n,), math.inf, device=x.device)
    for _ in range(binary_search_steps):
        found = search.round(const, steps, lr, early_stop)
        # Binary search on c, per example.
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    best_x, success = search.best_x, torch.isfinite(search.best_l2)
    if threat.bounded:
        best_x = threat.project(x, best_x)
        with torch.no_grad():
            success = is_adversarial(model(best_x), y, target)
    else:
        best_x = threat.clip(best_x)
    return AttackResult(best_x, success)


class _Search:
    """The state across binary-search rounds: the smallest successful perturbation per example."""

    def __init__(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 bounds: tuple[float, float], kappa: float, objective: Objective = "f6") -> None:
        self.model, self.x, self.y, self.target, self.kappa = model, x, y, target, kappa
        self.objective = objective
        self.labels = y if target is None else target
        self.lo, self.hi = bounds
        self.w0 = torch.atanh(((x - self.lo) / (self.hi - self.lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        self.best_l2 = torch.full((len(x),), math.inf, device=x.device)
        self.best_x = x.clone()
        with torch.no_grad():
            self.best_l2[is_adversarial(model(x), y, target)] = 0.0

    def _from_tanh(self, t: torch.Tensor) -> torch.Tensor:
        """X = lo + (hi − lo)·(tanh(w) + 1)/2 from ``t = tanh(w)``, bit for bit, without its identity steps.

        ``(hi − lo)·u`` is skipped where hi − lo = 1 (u·1 = u exactly) and ``lo + q`` where lo = 0
        (q + 0 = q exactly, q = (t + 1)/2 being never −0).
        """
        x = t + 1
        if self.hi - self.lo != 1.0:
            x = (self.hi - self.lo) * x
        x = x.div_(2)
        return x if self.lo == 0.0 else self.lo + x

    def round(self, const: torch.Tensor, steps: int, lr: float, early_stop: bool) -> torch.Tensor:
        """One round of Adam from the clean image at constants ``const``; returns which examples succeeded."""
        b1, b2, adam_eps = _ADAM
        w = self.w0.clone()
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        found = torch.zeros(len(w), dtype=torch.bool, device=w.device)
        prev, check_every = math.inf, max(1, steps // 10)
        for t in range(1, steps + 1):
            obj, grad = self._objective_grad(w, const, found)
            with torch.no_grad():
                # Adam, in place: w ← w − lr · m̂ / (√v̂ + ε)
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = v.div(1 - b2**t).sqrt_().add_(adam_eps)
                w = w.detach().addcdiv_(m, denom, value=-lr / (1 - b1**t))
                # Carlini & Wagner's early abort: the round ends once the summed objective has not
                # fallen by 0.01% over the last steps/10 iterations.
                if early_stop and t % check_every == 0:
                    total = float(obj.sum())
                    if total > prev * 0.9999:
                        break
                    prev = total
        return found

    def _objective_grad(self, w: torch.Tensor, const: torch.Tensor, found: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor
    ]:
        """‖δ‖₂² + c·f at ``w`` and its gradient; records successes (``found``, the best so far).

        The gradient is autograd's of ``(l2sq + const·f).sum()`` through :meth:`_from_tanh`, bit for bit,
        with only the model's part taken by autograd: ∂‖δ‖²/∂x = 2δ exactly (autograd's
        1·(2·δ¹)), added to the model's part (the sum of two is order-free), then autograd's
        steps of the change of variables: /2, ·(hi − lo), tanh's backward.
        """
        with torch.no_grad():
            t = torch.tanh(w)
            xa = self._from_tanh(t)
            delta = xa - self.x
            l2sq = delta.flatten(1).square().sum(dim=1)
        xr = xa.requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(xr)
            f = cw_objective(self.objective, logits, self.labels, self.target is not None, self.kappa)
            cf = const * f
            (grad,) = torch.autograd.grad(cf.sum(), xr)
        with torch.no_grad():
            grad = grad.add_(delta, alpha=2).div_(2)
            if self.hi - self.lo != 1.0:
                grad = grad.mul_(self.hi - self.lo)
            grad = torch.ops.aten.tanh_backward(grad, t)
            obj = l2sq + cf.detach()
            adv = is_adversarial(logits.detach(), self.y, self.target)
            if self.kappa > 0:
                adv = adv & meets_kappa(f.detach(), self.objective, self.kappa)
            l2 = l2sq.sqrt()
            better = adv & (l2 < self.best_l2)
            if bool(better.any()):
                self.best_l2 = torch.where(better, l2, self.best_l2)
                self.best_x[better] = xa.detach()[better]
            found |= adv
        return obj, grad
