"""Attack losses, success, and the gradient seam every white-box attack takes its gradients through.

One vocabulary for every loss-driven attack (``loss="ce" | "margin" | "dlr"``):

* ``ce`` — cross-entropy of the true class (untargeted, ascended) or of the target (targeted,
  descended);
* ``margin`` — the CW margin max_{i≠y} Z_i − Z_y on the logits (immune to a saturated softmax);
* ``dlr`` — Croce & Hein's difference of logits ratio, invariant to shifting and rescaling the
  logits (targeted: their targeted DLR).

:func:`objective` turns a loss name, the labels and the targets into the function an attack
ascends. It is called with the *row numbers* of the examples in the batch, so one signature
serves losses that need the true class, the target, or both. A :class:`~advlab.attacks.tasks.TaskLoss`
in place of a name makes the same attacks (same loops) attack any differentiable task:
segmentation maps, detections, or a user's ``CustomLoss``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from advlab.attacks.registry import AttackResult
from advlab.attacks.tasks import TaskLoss
from advlab.threat import ThreatModel

Loss = Literal["ce", "margin", "dlr"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradFn = Callable[
    [Callable[[torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor, LossFn],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = float("inf")) -> torch.Tensor:
    """Per-example max_{i≠y} Z_i − Z_y, capped at κ: positive means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    m = other.amax(dim=1) - true
    return m.clamp(max=kappa) if kappa != float("inf") else m


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), per example (untargeted)."""
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return -(true - other.amax(dim=1)) / (srt[:, 0] - srt[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2), per example."""
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def objective(loss: Loss | TaskLoss, y: torch.Tensor, target: torch.Tensor | None) -> LossFn:
    """The per-example quantity an attack ascends, as a function of (logits, row numbers).

    ``rows`` index ``y`` and ``target``: an attack passes ``torch.arange(n)`` (or the rows of the
    examples still active) as the labels of the gradient seam. A :class:`TaskLoss` is called with
    the labels (and targets) of those rows.
    """
    if isinstance(loss, TaskLoss):
        return _on_rows(loss.objective, y, target)
    if target is None:
        losses: dict[str, LossFn] = {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}
        untargeted = losses[loss]
        return lambda z, rows: untargeted(z, y[rows])
    if loss == "ce":
        return lambda z, rows: -ce_loss(z, target[rows])
    if loss == "margin":
        return lambda z, rows: -margin_loss(z, target[rows])
    return lambda z, rows: dlr_targeted_loss(z, y[rows], target[rows])


def _on_rows(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor], y: torch.Tensor,
             target: torch.Tensor | None) -> LossFn:
    """A task loss's per-example ``fn(out, labels, targets)`` as a function of (output, row numbers)."""
    return lambda z, rows: fn(z, y[rows], None if target is None else target[rows])


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-example success: prediction ≠ y (untargeted) or = target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


def minimal_result(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, best_x: torch.Tensor,
                   y: torch.Tensor, target: torch.Tensor | None, threat: ThreatModel) -> AttackResult:
    """A minimal-perturbation attack's answer, re-scored by the model.

    The best points are projected into a finite ε-ball (else only clipped to the bounds); success is
    re-derived from the model's prediction on them.
    """
    out = threat.project(x, best_x) if threat.bounded else threat.clip(best_x)
    with torch.no_grad():
        success = is_adversarial(model(out), y, target)
    return AttackResult(out, success)


def success_on_rows(
    y: torch.Tensor, target: torch.Tensor | None, loss: Loss | TaskLoss = "ce"
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """:func:`is_adversarial` as a function of (logits, row numbers), like :func:`objective`.

    With a :class:`TaskLoss`, its own ``success`` on the labels (and targets) of the rows.
    """
    if isinstance(loss, TaskLoss):
        return _on_rows(loss.success, y, target)
    if target is None:
        return lambda z, rows: z.argmax(dim=1) != y[rows]
    return lambda z, rows: z.argmax(dim=1) == target[rows]


def loss_grad(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: LossFn = ce_loss,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example loss, its gradient w.r.t. the input only, and the logits.

    This is the gradient seam: attacks take a ``grad_fn`` with this signature (default: this
    function), so EOT, BPDA or estimated gradients replace it without touching the attack.
    The model's parameters accumulate no ``.grad`` (``torch.autograd.grad`` w.r.t. x only).
    """
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        loss = loss_fn(logits, labels)
        (grad,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), grad.detach(), logits.detach()


def several_gradients(model: Callable[[torch.Tensor], torch.Tensor], xr: torch.Tensor, logits: torch.Tensor,
                      scalars: list[Callable[[torch.Tensor], torch.Tensor]]) -> list[torch.Tensor]:
    """``∂ s(logits) / ∂xr`` for each ``s``, through the graph of ``logits = model(xr)`` kept between them.

    A model whose backward cannot keep its graph (``torch.compile`` donates its buffers and refuses
    ``retain_graph``) gets one fresh forward pass for each scalar left, with the same result.
    """
    grads: list[torch.Tensor] = []
    for j, s in enumerate(scalars):
        try:
            (g,) = torch.autograd.grad(s(logits), xr, retain_graph=j < len(scalars) - 1)
        except RuntimeError as e:
            if "retain_graph" not in str(e):
                raise
            for rest in scalars[j:]:
                x2 = xr.detach().requires_grad_(True)
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(rest(model(x2)), x2)
                grads.append(g)
            return grads
        grads.append(g)
    return grads
