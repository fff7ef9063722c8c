"""FGSM, BIM and PGD: one iterative-gradient loop with per-norm steepest-ascent steps.

Every step takes exactly one forward and one backward pass through ``grad_fn`` (the gradient
seam of :mod:`advlab.attacks.losses`), reuses the logits of that pass to tell which examples are
already adversarial, and projects through :meth:`ThreatModel.project`. A final forward pass
scores the last iterate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from advlab._checks import Fraction, NonNegFloat, PositiveInt
from advlab.attacks.losses import GradFn, Loss, LossFn, loss_grad, objective, success_on_rows
from advlab.attacks.registry import AttackResult, register_attack
from advlab.attacks.tasks import TaskLoss
from advlab.threat import Norm, ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
Success = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GRADIENT_NORMS: tuple[Norm, ...] = ("linf", "l2", "l1")


def steepest_step(grad: torch.Tensor, norm: str, size: float, sparsity: float = 0.01,
                  at: torch.Tensor | None = None, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """The steepest-ascent step of length ``size`` in ``norm`` for a per-example gradient.

    L∞: ``size · sign(g)``. L2: ``size · g / ‖g‖₂``. L1: the steepest sparse step — the same
    signed value on the ``⌈sparsity·d⌉`` coordinates of largest |g| (Tramèr & Boneh 2019), with
    L1 length ``size``; given the current point ``at`` (and the ``bounds``), a coordinate already at
    the bound the gradient pushes it past is not chosen (SLIDE's rule: on images with saturated
    pixels the largest |g| is mostly there, and a step on them is clipped away). Examples with a
    zero gradient get a zero step.
    """
    if norm == "linf":
        return size * grad.sign()
    g = grad.flatten(1)
    if norm == "l1" and at is not None:
        a = at.flatten(1)
        g = g.masked_fill(((a <= bounds[0]) & (g < 0)) | ((a >= bounds[1]) & (g > 0)), 0.0)
    if norm == "l2":
        step = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        k = max(1, round(sparsity * g.shape[1]))
        idx = g.abs().topk(k, dim=1).indices
        step = torch.zeros_like(g).scatter_(1, idx, g.gather(1, idx).sign()) / k
    out: torch.Tensor = (size * step).view_as(grad)
    return out


def linear_l1_step(grad: torch.Tensor, at: torch.Tensor, size: float, bounds: tuple[float, float]) -> torch.Tensor:
    """The step of L1 length ≤ ``size`` from ``at`` that maximises the linearised loss inside the bounds.

    The exact maximiser over the L1 ball ∩ box: coordinates in order of decreasing |g|, each moved
    in the direction of its gradient as far as the box allows, until the L1 budget is spent (the
    last one partly). One-step FGSM under L1 takes it; a normalised-gradient step spread over every
    pixel (FGM's) is weaker and is mostly clipped away at saturated pixels.
    """
    g, a = grad.flatten(1), at.flatten(1)
    room = torch.where(g > 0, bounds[1] - a, a - bounds[0]).clamp_min(0.0).masked_fill(g == 0, 0.0)
    order = g.abs().argsort(dim=1, descending=True)
    room_sorted = room.gather(1, order)
    spent_before = room_sorted.cumsum(dim=1) - room_sorted
    take = torch.minimum(room_sorted, (size - spent_before).clamp_min(0.0))
    amount = torch.zeros_like(g).scatter_(1, order, take)
    return (amount * g.sign()).view_as(grad)


def default_step_size(step_size: float | None, eps: float, steps: int) -> float:
    """The step of BIM/PGD: as given, else 2.5·ε/steps (Madry et al.)."""
    return 2.5 * eps / steps if step_size is None else step_size


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
    loss: Loss | TaskLoss = "ce",
    l1_sparsity: float | None = 0.01,
    generator: torch.Generator | None = None,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """The shared loop behind FGSM, BIM and PGD (inputs already validated).

    Under L1 a step is the steepest sparse step on ``l1_sparsity`` of the coordinates, or with
    ``l1_sparsity=None`` the exact maximiser of the linearised loss (:func:`linear_l1_step`).

    With ``early_stop`` an example stops at the first iterate the model misclassifies (or
    classifies as the target) — the same robust accuracy for less work. On a model that declares
    itself ``randomized`` (each call draws new randomness: random resizing, MC dropout, a
    detector's draws) ``early_stop`` is ignored: a success seen on one draw is no success on the
    next, so freezing an example there would leave it weaker than the attack could make it. Each
    restart attacks only the examples no earlier restart has broken.
    """
    early_stop = early_stop and not bool(getattr(model, "randomized", False))
    run = _Run(model, threat, objective(loss, y, target), success_on_rows(y, target, loss), steps, step_size,
               early_stop, l1_sparsity, grad_fn)
    x = x.detach()
    x_best = x.clone()
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        xs = x[todo]
        x_adv = threat.random_init(xs, generator) if random_start else xs.clone()
        x_adv, done = run(xs, x_adv, todo)
        # Keep this restart's iterate where it succeeded, or where nothing has succeeded yet.
        x_best[todo] = x_adv
        success[todo] = done
    return AttackResult(x_best, success)


class _Run:
    """One restart of the loop over the examples ``rows`` of the batch."""

    def __init__(self, model: Model, threat: ThreatModel, obj: LossFn, hits: Success, steps: int, step_size: float,
                 early_stop: bool, l1_sparsity: float | None, grad_fn: GradFn) -> None:
        self.model, self.threat, self.obj, self.hits, self.grad_fn = model, threat, obj, hits, grad_fn
        self.steps, self.step_size, self.early_stop, self.l1_sparsity = steps, step_size, early_stop, l1_sparsity

    def __call__(self, xs: torch.Tensor, x_adv: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Iterate from ``x_adv``; returns the last iterate and which examples it fools."""
        threat = self.threat
        done = torch.zeros(len(rows), dtype=torch.bool, device=xs.device)
        active = torch.arange(len(rows), device=xs.device)
        # the L∞ ball ∩ box is a per-pixel interval: compute it once, clamp into it each step
        lower, upper = threat.linf_interval(xs) if threat.norm == "linf" else (xs, xs)
        every = True  # no example frozen yet: work on whole tensors, no gathers or scatters
        for _ in range(self.steps):
            _, grad, logits = self.grad_fn(self.model, x_adv if every else x_adv[active], rows[active], self.obj)
            if self.early_stop:
                hit = self.hits(logits, rows[active])
                if bool(hit.any()):
                    done[active[hit]] = True
                    active, grad, every = active[~hit], grad[~hit], False
                    if len(active) == 0:
                        break
            if threat.norm == "linf":
                if every:
                    x_adv = torch.max(torch.min(x_adv.add_(grad.sign_(), alpha=self.step_size), upper), lower)
                else:
                    moved = x_adv[active].add_(grad.sign_(), alpha=self.step_size)
                    x_adv[active] = torch.max(torch.min(moved, upper[active]), lower[active])
                continue
            at = (x_adv if every else x_adv[active]) if threat.norm == "l1" else None  # (L2 steps need no point)
            if at is not None and self.l1_sparsity is None:
                step = linear_l1_step(grad, at, self.step_size, threat.bounds)
            else:
                sparsity = 1.0 if self.l1_sparsity is None else self.l1_sparsity
                step = steepest_step(grad, threat.norm, self.step_size, sparsity, at, threat.bounds)
            if every:
                x_adv = threat.project(xs, x_adv + step)
            else:
                x_adv[active] = threat.project(xs[active], x_adv[active] + step)
        rest = (~done).nonzero().squeeze(1)
        if len(rest):
            with torch.no_grad():
                logits = self.model(x_adv[rest])
            done[rest] = self.hits(logits, rows[rest])
        return x_adv, done


_PAPER_FGSM = "Goodfellow, Shlens, Szegedy 2015, Explaining and Harnessing Adversarial Examples, https://arxiv.org/abs/1412.6572"
_PAPER_BIM = "Kurakin, Goodfellow, Bengio 2017, Adversarial examples in the physical world, https://arxiv.org/abs/1607.02533"
_PAPER_PGD = (
    "Madry, Makelov, Schmidt, Tsipras, Vladu 2018, Towards Deep Learning Models Resistant to "
    "Adversarial Attacks, https://arxiv.org/abs/1706.06083"
)


@register_attack("fgsm", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=_PAPER_FGSM)
def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    loss: Loss | TaskLoss = "ce",
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """Fast Gradient Sign Method: one step of size ε along the loss gradient's steepest direction.

    Goodfellow et al. 2015 (https://arxiv.org/abs/1412.6572). L∞: x + ε·sign(∇ₓL) (FGSM);
    L2: the normalised-gradient step of length ε (FGM); L1: the step of L1 length ε that maximises
    the linearised loss inside the bounds (the largest-|∇| pixels, each as far as the box allows).
    Targeted: a step down the loss of
    the target class. White-box. Cost: 1 forward + 1 backward pass, plus 1 forward to score.

    Example:
        >>> import torch, advlab
        >>> from advlab.attacks import fgsm
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        >>> x, y = torch.full((3, 1, 2, 2), 0.5), torch.tensor([0, 1, 0])
        >>> r = fgsm(model, x, y, advlab.ThreatModel("linf", 0.1))
        >>> bool(((r.x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    return iterative_gradient(
        model, x, y, threat, target=target, steps=1, step_size=threat.eps, random_start=False,
        loss=loss, l1_sparsity=None, generator=generator, grad_fn=grad_fn,
    )


@register_attack("bim", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=_PAPER_BIM)
def bim(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 10,
    step_size: NonNegFloat | None = None,
    early_stop: bool = False,
    loss: Loss | TaskLoss = "ce",
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """Basic Iterative Method: iterated FGSM steps of size α, projected after every step.

    Kurakin et al. 2017 (https://arxiv.org/abs/1607.02533). No random start. L∞, L2, L1;
    targeted or not; white-box. ``step_size`` defaults to 2.5·ε/steps. Cost: ``steps`` forward +
    backward passes, plus 1 forward to score (fewer with ``early_stop``).
    """
    return iterative_gradient(
        model, x, y, threat, target=target, steps=steps, step_size=default_step_size(step_size, threat.eps, steps),
        random_start=False, early_stop=early_stop, loss=loss, generator=generator, grad_fn=grad_fn,
    )


@register_attack("pgd", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=_PAPER_PGD)
def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 40,
    step_size: NonNegFloat | None = None,
    restarts: PositiveInt = 1,
    random_start: bool = True,
    early_stop: bool = False,
    loss: Loss | TaskLoss = "ce",
    l1_sparsity: Fraction = 0.01,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """Projected Gradient Descent: random start in the ε-ball, then projected steepest-ascent steps.

    Madry et al. 2018 (https://arxiv.org/abs/1706.06083). L∞ steps α·sign(∇), L2 normalised
    gradient steps, L1 steepest sparse steps (``l1_sparsity`` of the coordinates); projection onto
    the ε-ball ∩ bounds after every step. Targeted or not; white-box. ``step_size`` defaults to
    2.5·ε/steps; ``restarts`` re-runs from new random starts on the examples still robust;
    ``early_stop`` freezes examples once fooled (identical robust accuracy, less work; ignored on a
    model that declares itself ``randomized``). Cost per
    restart: ``steps`` forward + backward passes, plus 1 forward to score.
    """
    return iterative_gradient(
        model, x, y, threat, target=target, steps=steps, step_size=default_step_size(step_size, threat.eps, steps),
        random_start=random_start, restarts=restarts, early_stop=early_stop, loss=loss, l1_sparsity=l1_sparsity,
        generator=generator, grad_fn=grad_fn,
    )
