"""Szegedy et al.'s box-constrained L-BFGS attack: c·‖δ‖₂² + loss, minimised by L-BFGS, a search over c."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from advlab._checks import PositiveFloat, PositiveInt
from advlab.attacks.losses import is_adversarial, minimal_result
from advlab.attacks.registry import AttackResult, register_attack
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow, Fergus 2014, Intriguing properties of neural "
    "networks, https://arxiv.org/abs/1312.6199"
)
_HISTORY = 10  # L-BFGS curvature pairs kept (torch's default is 100; 10 is the usual choice)


def _loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per example: cross-entropy of the target, or (untargeted) −log(1 − p_y), the cross-entropy of "not y"."""
    if target is not None:
        return F.cross_entropy(logits, target, reduction="none")
    others = logits.scatter(1, y[:, None], float("-inf"))
    return logits.logsumexp(dim=1) - others.logsumexp(dim=1)


@register_attack("lbfgs", kind="white-box", norms=("l2",), targeted=True, budget="minimal", paper=PAPER)
def lbfgs(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 50,
    binary_search_steps: PositiveInt = 10,
    initial_const: PositiveFloat = 1.0,
) -> AttackResult:
    """Box-constrained L-BFGS: minimise c·‖δ‖₂² + loss(x + δ) with x + δ in the bounds, searching over c.

    Szegedy et al. 2014 (https://arxiv.org/abs/1312.6199). The loss is the cross-entropy of the
    target (targeted, the paper's form) or −log(1 − p_y), the cross-entropy of "any class but y"
    (untargeted). The box is kept by evaluating everything at clip(x + δ) (a projection in the
    forward pass): an element pushed past a bound stays on it, its gradient zero. Each of
    ``binary_search_steps`` rounds runs torch's L-BFGS (history 10, strong-Wolfe line search, at most
    ``steps`` iterations) from δ = 0. The paper asks for the c at which the minimiser is adversarial
    with the smallest perturbation: here, per example, the largest c (weight of the norm) whose
    minimiser is adversarial, searched by ×10 / ÷10 until bracketed, then by geometric bisection,
    from ``initial_const``. Every point L-BFGS evaluates is scored; the answer is the adversarial one
    of smallest L2 (the clean image where none was). The whole batch is one L-BFGS problem: the sum
    of the per-example objectives is separable, but the line search and the curvature pairs are
    shared, so an example's answer can depend on the batch it is in. Minimal-perturbation (L2): with
    a finite ε the answer is projected into the ball and re-scored. Targeted or not; white-box.
    Cost: per round at most about 1.25 × ``steps`` forward + backward passes over the batch.
    """
    x = x.detach()
    n = len(x)
    search = _Search(model, x, y, target, threat)
    const = torch.full((n,), float(initial_const), device=x.device)
    adv_c = torch.zeros(n, device=x.device)  # largest c known to give an adversarial minimiser
    fail_c = torch.full((n,), math.inf, device=x.device)  # smallest c known not to
    for _ in range(binary_search_steps):
        ok = search.round(const, steps)
        adv_c = torch.where(ok, torch.maximum(adv_c, const), adv_c)
        fail_c = torch.where(ok, fail_c, torch.minimum(fail_c, const))
        both = (adv_c > 0) & torch.isfinite(fail_c)
        const = torch.where(both, (adv_c * fail_c).sqrt(), torch.where(ok, const * 10, const / 10))
    return minimal_result(model, x, search.best_x, y, target, threat)


class _Search:
    """The state across rounds: the adversarial point of smallest L2 per example."""

    def __init__(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 threat: ThreatModel) -> None:
        self.model, self.x, self.y, self.target, self.threat = model, x, y, target, threat
        self.best = torch.full((len(x),), math.inf, device=x.device)
        self.best_x = x.clone()

    def round(self, const: torch.Tensor, steps: int) -> torch.Tensor:
        """Minimise at constants ``const`` from δ = 0; returns whether each example's minimiser is adversarial."""
        delta = torch.zeros_like(self.x, requires_grad=True)
        opt = torch.optim.LBFGS([delta], lr=1.0, max_iter=steps, history_size=_HISTORY,
                                line_search_fn="strong_wolfe")

        def closure() -> float:
            value, grad = self._objective(delta, const)
            delta.grad = grad
            return value

        opt.step(closure)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            x_adv = self.threat.clip(self.x + delta)
            return is_adversarial(self.model(x_adv), self.y, self.target)

    def _objective(self, delta: torch.Tensor, const: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Σ c·‖δ‖₂² + loss at clip(x + δ), its gradient w.r.t. δ only; records adversarial points."""
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            x_adv = self.threat.clip(self.x + d)
            logits = self.model(x_adv)
            l2sq = (x_adv - self.x).flatten(1).square().sum(dim=1)
            obj = (const * l2sq + _loss(logits, self.y, self.target)).sum()
            (grad,) = torch.autograd.grad(obj, d)
        with torch.no_grad():
            l2 = l2sq.detach().sqrt()
            better = is_adversarial(logits, self.y, self.target) & (l2 < self.best)
            if bool(better.any()):
                self.best = torch.where(better, l2, self.best)
                self.best_x[better] = x_adv.detach()[better]
        return float(obj.detach()), grad
