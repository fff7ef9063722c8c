"""Baselines that need no gradient: Gaussian noise and the negative image (semantic attack)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from advlab._checks import NonNegFloat
from advlab._device import draw
from advlab.attacks.losses import is_adversarial
from advlab.attacks.registry import AttackResult, register_attack
from advlab.threat import NORMS, ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]


def _score(model: Model, x_adv: torch.Tensor, y: torch.Tensor) -> AttackResult:
    with torch.no_grad():
        logits = model(x_adv)
    ones = torch.ones(len(y), dtype=torch.int64, device=x_adv.device)
    return AttackResult(x_adv, is_adversarial(logits, y, None), ones)


@register_attack(
    "noise", kind="baseline", norms=("linf", "l2", "l1", "l0"), targeted=False, needs_grad=False, finite_eps=False,
    paper="Gaussian noise baseline (e.g. Rauber et al. 2017, Foolbox, https://arxiv.org/abs/1707.04131)",
)
def noise(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sigma: NonNegFloat | None = None,
) -> AttackResult:
    """Additive Gaussian noise σ·N(0, 1), clipped to the bounds and projected into the ε-ball.

    A black-box baseline: if noise hurts a model as much as a gradient attack at the same ε,
    the gradient attack is not working (a gradient-masking sign). ``sigma`` defaults to ε for
    L∞, ε/√d for L2 and ε/d for L1 (noise of the budget's scale) and to the bounds' range for L0,
    where the projection keeps the ⌊ε⌋ largest (clipped) changes: salt-and-pepper-like noise on
    ⌊ε⌋ elements. With ε = inf it must be given.
    Untargeted. Cost: 1 forward pass (to score).
    """
    d = x[0].numel()
    if sigma is None:
        if not threat.bounded:
            raise ValueError("sigma: needed when threat.eps is inf")
        span = threat.bounds[1] - threat.bounds[0]
        sigma = {"linf": threat.eps, "l2": threat.eps / math.sqrt(d), "l1": threat.eps / d, "l0": span}[threat.norm]
    z = draw(torch.randn, x.shape, generator=generator, device=x.device).to(x.dtype)
    x_adv = threat.project(x, x + sigma * z)
    return _score(model, x_adv, y)


@register_attack(
    "semantic", kind="baseline", norms=NORMS, targeted=False, budget="unbounded", needs_grad=False,
    paper="Hosseini, Xiao, Jaiswal, Poovendran 2017, On the Limitation of Convolutional Neural "
    "Networks in Recognizing Negative Images, https://arxiv.org/abs/1703.06857",
)
def semantic(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """The negative image: every pixel reflected inside the bounds, lo + hi − x (1 − x on [0, 1]).

    Hosseini et al. 2017 (https://arxiv.org/abs/1703.06857). The image keeps its meaning for a
    person, but its L∞ distance is up to the whole range, so it ignores ε (``budget="unbounded"``).
    Untargeted, black-box, deterministic. Cost: 1 forward pass (to score).
    """
    lo, hi = threat.bounds
    return _score(model, (lo + hi) - x.detach(), y)
