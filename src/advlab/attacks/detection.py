"""Attacks on the detector: the detection task losses and the vanishing attack.

* :class:`DetectionLoss` (task ``"detection"``) — untargeted: ascend CenterNet's training loss
  (:func:`advlab.models.dense.detection_loss`) against the true boxes; targeted: descend it toward
  target boxes. Success: no true box is recovered (untargeted), or every target box is (targeted).
* :class:`VanishingLoss` — push every centre heat-map logit below the decode threshold: ascend
  ``−Σ max(z − τ, 0)`` over every class and cell, τ = logit(threshold) − ``margin`` (a hinge: only
  the cells still within the margin of the threshold pull). Success: no detection left above the
  threshold.
* ``vanishing`` — PGD (the shared loop :func:`advlab.attacks.gradient.iterative_gradient`, no copy)
  with :class:`VanishingLoss`: every detection disappears.

A box is *recovered* when a decoded detection of its class overlaps it with IoU ≥ ``iou`` (0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from advlab._checks import Fraction, NonNegFloat, PositiveInt
from advlab.attacks.gradient import GRADIENT_NORMS, default_step_size, iterative_gradient
from advlab.attacks.losses import GradFn, loss_grad
from advlab.attacks.registry import AttackResult, register_attack
from advlab.attacks.tasks import Rows, TaskLoss
from advlab.models.dense import STRIDE, box_iou, decode, detection_loss
from advlab.threat import ThreatModel

PAPER_VANISHING = (
    "Chow, Liu, Truex, Wei, Wei, Wu 2020, Adversarial Objectness Gradient Attacks in Real-time Object "
    "Detection Systems (TOG-vanishing), https://arxiv.org/abs/2004.04320"
)
__all__ = ["DetectionLoss", "VanishingLoss", "centre_cells", "heat_logits", "logit", "recovered", "vanishing"]


def logit(p: float) -> float:
    """log(p / (1 − p)): the heat-map logit at which a cell's score is ``p``."""
    return math.log(p / (1 - p))


def centre_cells(xyxy: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3×3 heat-map cells around boxes' centres: rows, columns (each ``(..., 3, 3)``) and which lie on the map.

    ``xyxy``: boxes ``(..., 4)`` in pixels; the map is ``size``×``size`` cells of ``STRIDE`` pixels.
    """
    cx = ((xyxy[..., 0] + xyxy[..., 2]) / 2 / STRIDE).floor().long()
    cy = ((xyxy[..., 1] + xyxy[..., 3]) / 2 / STRIDE).floor().long()
    off = torch.tensor([-1, 0, 1], device=xyxy.device)
    ix = (cx[..., None, None] + off).expand(*cx.shape, 3, 3)
    iy = (cy[..., None, None] + off[:, None]).expand(*cy.shape, 3, 3)
    return iy, ix, (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)


def heat_logits(out: torch.Tensor) -> torch.Tensor:
    """The per-class centre heat-map logits of a detector output N×(C+4)×S×S: N×C×S×S."""
    return out[:, : out.shape[1] - 4]


def recovered(dets: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5) -> torch.Tensor:
    """Per box (N×K bool): a detection (N×D×6 rows x0, y0, x1, y1, score, cls) of its class with IoU ≥ ``iou``.

    Padding rows (box class −1, detection class −1) are never recovered and never match.
    """
    overlap = box_iou(boxes[..., 1:5], dets[..., :4])  # N×K×D
    same = (boxes[..., 0, None] == dets[:, None, :, 5]) & (dets[:, None, :, 5] >= 0)
    return ((overlap >= iou) & same).any(-1) & (boxes[..., 0] >= 0)


class DetectionLoss(TaskLoss):
    """CenterNet's loss as an attack objective (ascended untargeted, descended toward target boxes).

    Args:
        threshold: The decode threshold deciding which detections exist (default 0.3).
        iou: The IoU at which a box counts as recovered (default 0.5).
    """

    task = "detection"

    def __init__(self, threshold: float = 0.3, iou: float = 0.5) -> None:
        self.threshold, self.iou = float(threshold), float(iou)

    def objective(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """``detection_loss(out, y)``, or minus that of the target boxes."""
        return detection_loss(out, y) if target is None else -detection_loss(out, target)

    def success(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Untargeted: no true box recovered by :func:`decode`; targeted: every target box recovered."""
        dets = decode(out.detach(), threshold=self.threshold)
        if target is None:
            return ~recovered(dets, y, self.iou).any(1)
        return (recovered(dets, target, self.iou) | (target[..., 0] < 0)).all(1)


class VanishingLoss(TaskLoss):
    """Every centre score below the threshold: ascend ``−Σ max(z − τ, 0)``, τ = logit(threshold) − margin.

    The labels are not read (every detection is to vanish, true or false). A hinge, not a
    softplus: with Σ softplus the hundreds of background cells just under τ outweigh the few
    peaks in the gradient (on a tiny CenterNet, PGD at ε = 0.5 then left peaks at 0.5). Success:
    no heat-map cell reaches ``threshold`` — exactly "decode returns no detection", since the
    highest cell is always a peak.
    """

    task = "detection"

    def __init__(self, threshold: float = 0.3, margin: float = 1.0) -> None:
        self.threshold, self.margin = float(threshold), float(margin)
        self.tau = logit(self.threshold) - self.margin

    def objective(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Minus the summed excess of every heat-map logit over τ."""
        return -(heat_logits(out) - self.tau).clamp_min(0).flatten(1).sum(1)

    def success(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """No cell's sigmoid score reaches ``threshold``."""
        return torch.sigmoid(heat_logits(out).detach()).flatten(1).amax(1) < self.threshold


Model = Callable[[torch.Tensor], torch.Tensor]


@register_attack("vanishing", kind="white-box", norms=GRADIENT_NORMS, targeted=False, paper=PAPER_VANISHING,
                 task="detection")
def vanishing(
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
    threshold: Fraction = 0.3,
    margin: NonNegFloat = 1.0,
    grad_fn: GradFn = loss_grad,
) -> AttackResult:
    """The vanishing attack: PGD that pushes every detection of a detector below its decode threshold.

    TOG-vanishing (Chow et al. 2020) in CenterNet form: the loss is :class:`VanishingLoss`
    (Σ of every class's heat-map logit's excess over logit(``threshold``) − ``margin``, descended),
    and the loop is PGD's (:func:`~advlab.attacks.gradient.iterative_gradient`: random start,
    ``steps`` projected steepest-descent steps of ``step_size``, default 2.5·ε/steps). ``y`` are the
    true boxes (N×K×5), checked but not needed by the loss. Success: no detection left at
    ``threshold``. Cost: ``steps`` forward + backward passes per restart, plus 1 forward.
    """
    loss = VanishingLoss(threshold, margin)
    return iterative_gradient(
        model, x, y, threat, target=None, steps=steps, step_size=default_step_size(step_size, threat.eps, steps),
        random_start=random_start, restarts=restarts, early_stop=early_stop, loss=loss, generator=generator,
        grad_fn=grad_fn,
    )
