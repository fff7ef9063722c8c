"""FGSM, BIM and PGD: one iterative-gradient loop with per-norm steepest-ascent steps.

Every step takes exactly one forward and one backward pass through ``grad_fn`` (the gradient
seam of :mod:`advlab.attacks.base`), reuses the logits of that pass to tell which examples are
already adversarial, and projects through :meth:`ThreatModel.project`. A final forward pass
scores the last iterate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from advlab._checks import check_nonneg, check_positive_int
from advlab.attacks.base import (
    AttackResult,
    GradFn,
    ce_loss,
    is_adversarial,
    loss_grad,
    margin_loss,
    register_attack,
    reject_unknown,
    validate,
)
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
GRADIENT_NORMS = ("linf", "l2", "l1")


def steepest_step(grad: torch.Tensor, norm: str, size: float, sparsity: float = 0.01) -> torch.Tensor:
    """The steepest-ascent step of length ``size`` in ``norm`` for a per-example gradient.

    L∞: ``size · sign(g)``. L2: ``size · g / ‖g‖₂``. L1: the steepest sparse step — the same
    signed value on the ``⌈sparsity·d⌉`` coordinates of largest |g| (Tramèr & Boneh 2019), with
    L1 length ``size``. Examples with a zero gradient get a zero step.
    """
    if norm == "linf":
        return size * grad.sign()
    g = grad.flatten(1)
    if norm == "l2":
        step = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        k = max(1, round(sparsity * g.shape[1]))
        idx = g.abs().topk(k, dim=1).indices
        step = torch.zeros_like(g).scatter_(1, idx, g.gather(1, idx).sign()) / k
    return (size * step).view_as(grad)


def _objective(loss: str, targeted: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-example quantity the attack ascends: CE or margin, towards/away from labels."""
    if loss == "ce":
        return (lambda z, t: -ce_loss(z, t)) if targeted else ce_loss
    if loss == "margin":
        return (lambda z, t: margin_loss(z, t)) if not targeted else (lambda z, t: -margin_loss(z, t))
    raise ValueError(f"loss: expected 'ce' or 'margin', got {loss!r}")


def iterative_gradient(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None,
    steps: int,
    step_size: float,
    random_start: bool,
    restarts: int = 1,
    early_stop: bool = False,
    loss: str = "ce",
    l1_sparsity: float = 0.01,
    generator: torch.Generator | None = None,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """The shared loop behind FGSM, BIM and PGD (inputs already validated).

    With ``early_stop`` an example stops at the first iterate the model misclassifies (or
    classifies as the target) — the same robust accuracy for less work. Each restart attacks
    only the examples no earlier restart has broken.
    """
    labels = target if target is not None else y
    objective = _objective(loss, target is not None)
    x = x.detach()
    x_best = x.clone()
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        xs, ls = x[todo], labels[todo]
        ys, ts = y[todo], (target[todo] if target is not None else None)
        x_adv = threat.random_init(xs, generator) if random_start else xs.clone()
        done = torch.zeros(len(todo), dtype=torch.bool, device=x.device)
        active = torch.arange(len(todo), device=x.device)
        if threat.norm == "linf":
            # the L∞ ball ∩ box is a per-pixel interval: compute it once, clamp into it each step
            lower, upper = threat.linf_interval(xs)
        every = True  # no example frozen yet: work on whole tensors, no gathers or scatters
        for _ in range(steps):
            if every:
                _, grad, logits = grad_fn(model, x_adv, ls, objective)
            else:
                _, grad, logits = grad_fn(model, x_adv[active], ls[active], objective)
            if early_stop:
                hit = is_adversarial(logits, ys[active], None if ts is None else ts[active])
                if bool(hit.any()):
                    done[active[hit]] = True
                    keep = ~hit
                    active, grad = active[keep], grad[keep]
                    every = False
                    if len(active) == 0:
                        break
            if threat.norm == "linf":
                if every:
                    x_adv = torch.max(torch.min(x_adv.add_(grad.sign_(), alpha=step_size), upper), lower)
                else:
                    moved = x_adv[active].add_(grad.sign_(), alpha=step_size)
                    x_adv[active] = torch.max(torch.min(moved, upper[active]), lower[active])
                continue
            step = steepest_step(grad, threat.norm, step_size, l1_sparsity)
            if every:
                x_adv = threat.project(xs, x_adv + step)
            else:
                x_adv[active] = threat.project(xs[active], x_adv[active] + step)
        rest = (~done).nonzero().squeeze(1)
        if len(rest):
            with torch.no_grad():
                logits = model(x_adv[rest])
            done[rest] = is_adversarial(logits, ys[rest], None if ts is None else ts[rest])
        # Keep this restart's iterate where it succeeded, or where nothing has succeeded yet.
        x_best[todo] = x_adv
        success[todo] = done
    return AttackResult(x_best, success)


def _common(
    name: str, model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
    target: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not threat.bounded:
        raise ValueError(f"threat.eps: {name} is a fixed-budget attack and needs a finite eps, got inf")
    return validate(name, GRADIENT_NORMS, x, y, threat, target, supports_targeted=True)


_PAPER_FGSM = "Goodfellow, Shlens, Szegedy 2015, Explaining and Harnessing Adversarial Examples, https://arxiv.org/abs/1412.6572"
_PAPER_BIM = "Kurakin, Goodfellow, Bengio 2017, Adversarial examples in the physical world, https://arxiv.org/abs/1607.02533"
_PAPER_PGD = (
    "Madry, Makelov, Schmidt, Tsipras, Vladu 2018, Towards Deep Learning Models Resistant to "
    "Adversarial Attacks, https://arxiv.org/abs/1706.06083"
)


@register_attack(
    "fgsm", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=_PAPER_FGSM,
    defaults={"loss": "ce"},
)
def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    loss: str = "ce",
    grad_fn: GradFn = loss_grad,
    **unused: Any,
) -> AttackResult:
    """Fast Gradient Sign Method: one step of size ε along the loss gradient's steepest direction.

    Goodfellow et al. 2015 (https://arxiv.org/abs/1412.6572). L∞: x + ε·sign(∇ₓL) (FGSM);
    L2 / L1: the normalised-gradient step of length ε (FGM). Targeted: a step down the loss of
    the target class. White-box. Cost: 1 forward + 1 backward pass, plus 1 forward to score.

    Example:
        >>> import torch, advlab
        >>> from advlab.attacks import get_attack
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x, y = torch.full((3, 1, 2, 2), 0.5), torch.tensor([0, 1, 0])
        >>> r = get_attack("fgsm")(model, x, y, advlab.ThreatModel("linf", 0.1))
        >>> bool(((r.x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    reject_unknown("fgsm", unused)
    y, target = _common("fgsm", model, x, y, threat, target)
    return iterative_gradient(
        model, x, y, threat, target=target, steps=1, step_size=threat.eps, random_start=False,
        loss=loss, l1_sparsity=1.0, generator=generator, grad_fn=grad_fn,
    )


def _step_size(step_size: float | None, eps: float, steps: int) -> float:
    if step_size is None:
        return 2.5 * eps / steps
    return check_nonneg("step_size", step_size)


@register_attack(
    "bim", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=_PAPER_BIM,
    defaults={"steps": 10, "step_size": None, "loss": "ce"},
)
def bim(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 10,
    step_size: float | None = None,
    early_stop: bool = False,
    loss: str = "ce",
    grad_fn: GradFn = loss_grad,
    **unused: Any,
) -> AttackResult:
    """Basic Iterative Method: iterated FGSM steps of size α, projected after every step.

    Kurakin et al. 2017 (https://arxiv.org/abs/1607.02533). No random start. L∞, L2, L1;
    targeted or not; white-box. ``step_size`` defaults to 2.5·ε/steps. Cost: ``steps`` forward +
    backward passes, plus 1 forward to score (fewer with ``early_stop``).
    """
    reject_unknown("bim", unused)
    y, target = _common("bim", model, x, y, threat, target)
    check_positive_int("steps", steps)
    return iterative_gradient(
        model, x, y, threat, target=target, steps=steps,
        step_size=_step_size(step_size, threat.eps, steps), random_start=False,
        early_stop=early_stop, loss=loss, generator=generator, grad_fn=grad_fn,
    )


@register_attack(
    "pgd", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=_PAPER_PGD,
    defaults={"steps": 40, "step_size": None, "restarts": 1, "loss": "ce"},
)
def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int = 40,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    early_stop: bool = False,
    loss: str = "ce",
    l1_sparsity: float = 0.01,
    grad_fn: GradFn = loss_grad,
    **unused: Any,
) -> AttackResult:
    """Projected Gradient Descent: random start in the ε-ball, then projected steepest-ascent steps.

    Madry et al. 2018 (https://arxiv.org/abs/1706.06083). L∞ steps α·sign(∇), L2 normalised
    gradient steps, L1 steepest sparse steps (``l1_sparsity`` of the coordinates); projection onto
    the ε-ball ∩ bounds after every step. Targeted or not; white-box. ``step_size`` defaults to
    2.5·ε/steps; ``restarts`` re-runs from new random starts on the examples still robust;
    ``early_stop`` freezes examples once fooled (identical robust accuracy, less work). Cost per
    restart: ``steps`` forward + backward passes, plus 1 forward to score.
    """
    reject_unknown("pgd", unused)
    y, target = _common("pgd", model, x, y, threat, target)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    return iterative_gradient(
        model, x, y, threat, target=target, steps=steps,
        step_size=_step_size(step_size, threat.eps, steps), random_start=random_start,
        restarts=restarts, early_stop=early_stop, loss=loss, l1_sparsity=l1_sparsity,
        generator=generator, grad_fn=grad_fn,
    )
