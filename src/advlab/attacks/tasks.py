"""Task losses: what a gradient attack ascends when the model is not a classifier.

Every loss-driven attack maximises a per-example function of the model's output inside a threat
model. For a classifier that function is named by a string (``loss="ce" | "margin" | "dlr"``);
for any other differentiable task it is a :class:`TaskLoss`: the ``task`` whose labels it reads
(the registry validates labels and targets by that task, not by the attack's), a per-example
``objective(out, y, target)`` to ascend and a per-example ``success(out, y, target)``. FGSM, BIM,
PGD and APGD take either through :func:`advlab.attacks.losses.objective` and
:func:`~advlab.attacks.losses.success_on_rows`, so their loops are the classification loops.

Built-ins:

* :class:`SegmentationLoss` (task ``"segmentation"``, labels int64 N×H×W label maps) — untargeted:
  ascend the per-pixel cross-entropy of the true map; targeted: descend the cross-entropy toward a
  target map. Success: the share of pixels whose predicted label changed (untargeted), or of the
  pixels the target changes that took their target label (targeted), is at least ``min_share``
  (default 0.9).
* :class:`advlab.attacks.detection.DetectionLoss` and ``VanishingLoss`` (task ``"detection"``,
  labels float N×K×5 rows ``(cls, x0, y0, x1, y1)``, padding rows −1).
* :class:`CustomLoss` — any callable ``loss(out, y) -> (N,)`` with a task and a success rule.

The label checks of the two tasks are registered here (:func:`registry.register_task`): a wrong
shape or dtype gets a one-line error naming the argument.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
import torch.nn.functional as F

from advlab.attacks.registry import TASKS, register_task

Rows = torch.Tensor
__all__ = ["CustomLoss", "SegmentationLoss", "TaskLoss", "check_boxes", "check_label_maps"]


class TaskLoss(abc.ABC):
    """A loss for an attack on any differentiable task.

    Attributes:
        task: The registered task whose labels (``y``) and targets this loss reads.
    """

    task: str = "classification"

    @abc.abstractmethod
    def objective(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Per-example quantity to ascend, shape (N,), from the model's output and the rows' labels (and targets)."""

    @abc.abstractmethod
    def success(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Per-example bool, shape (N,): the attack has reached its goal on this output."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not callable(v))
        return f"{type(self).__name__}({fields})"


class CustomLoss(TaskLoss):
    """A user's ``loss(out, y) -> (N,)`` (ascended; targeted: ``loss(out, target)`` descended) as a TaskLoss.

    Args:
        fn: The per-example loss.
        task: The registered task whose labels it reads (default ``"classification"``).
        success: Per-example ``success(out, y, target) -> bool (N,)``; default: for classification
            the prediction is wrong (or is the target), for other tasks never (the attack then runs
            all its steps and reports no success).

    Example:
        >>> import torch
        >>> loss = CustomLoss(lambda out, y: out.flatten(1).sum(1), task="segmentation")
        >>> loss.objective(torch.ones(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), None).tolist()
        [48.0, 48.0]
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, task: str = "classification",
                 success: Callable[[torch.Tensor, Rows, Rows | None], torch.Tensor] | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable loss(out, y) -> (N,), got {type(fn).__name__}")
        if task not in TASKS:
            raise ValueError(f"task: expected a registered task ({', '.join(sorted(TASKS))}), got {task!r}")
        self.fn, self.task, self.success_fn = fn, task, success

    def objective(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """``fn(out, y)``, or ``−fn(out, target)`` when targeted."""
        return self.fn(out, y) if target is None else -self.fn(out, target)

    def success(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """The given success rule, else the classification rule, else all False."""
        if self.success_fn is not None:
            return self.success_fn(out, y, target)
        if self.task == "classification":
            pred = out.argmax(1)
            return pred == target if target is not None else pred != y
        return torch.zeros(len(out), dtype=torch.bool, device=out.device)


class SegmentationLoss(TaskLoss):
    """Per-pixel cross-entropy over a segmentation map (N×C×H×W logits, N×H×W labels).

    Untargeted: the mean over pixels of the cross-entropy of the true label, ascended. Targeted: the
    same toward the target map, descended. Success (per example): at least ``min_share`` of the
    pixels changed their predicted label away from ``y`` (untargeted), or at least ``min_share`` of
    the pixels whose target differs from ``y`` are predicted as their target (targeted; an example
    whose target equals ``y`` everywhere succeeds when nothing is left to change).

    Args:
        min_share: The share of pixels that makes an example a success (default 0.9).
    """

    task = "segmentation"

    def __init__(self, min_share: float = 0.9) -> None:
        if not isinstance(min_share, (int, float)) or isinstance(min_share, bool) or not 0 < min_share <= 1:
            raise ValueError(f"min_share: expected a number in (0, 1], got {min_share!r}")
        self.min_share = float(min_share)

    def objective(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Mean per-pixel CE of ``y`` (ascended), or minus that of ``target``."""
        if target is None:
            return F.cross_entropy(out, y, reduction="none").flatten(1).mean(1)
        return -F.cross_entropy(out, target, reduction="none").flatten(1).mean(1)

    def success(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """The share of changed (or target-taking) pixels is at least ``min_share``."""
        return pixel_share(out.argmax(1), y, target) >= self.min_share


def pixel_share(pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per example: the share of pixels whose label left ``y``, or (targeted) of those the target changes that took."""
    if target is None:
        return (pred != y).flatten(1).float().mean(1)
    todo = (target != y).flatten(1)
    hit = ((pred == target).flatten(1) & todo).sum(1).float()
    return torch.where(todo.any(1), hit / todo.sum(1).clamp_min(1), torch.ones_like(hit))


def check_label_maps(arg: str, labels: object, x: torch.Tensor) -> torch.Tensor:
    """Segmentation labels (or targets): integer label maps N×H×W matching the images, values ≥ 0; returns int64."""
    want = (x.shape[0], *x.shape[2:])
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor of int64 label maps {want}, got {type(labels).__name__}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{arg}: expected integer label maps (int64), got dtype {labels.dtype}")
    if tuple(labels.shape) != want:
        raise ValueError(f"{arg}: expected label maps of shape {want} (N×H×W of the images), got {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{arg}: labels must be class indices >= 0, got minimum {int(labels.min())}")
    return labels.long()


def check_boxes(arg: str, labels: object, x: torch.Tensor) -> torch.Tensor:
    """Detection labels: float N×K×5 rows ``(cls, x0, y0, x1, y1)`` (padding rows cls = −1), finite; returns float32."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor of boxes N×K×5, got {type(labels).__name__}")
    if not labels.is_floating_point():
        raise ValueError(f"{arg}: expected float boxes (float32 rows cls, x0, y0, x1, y1), got dtype {labels.dtype}")
    if labels.dim() != 3 or labels.shape[0] != x.shape[0] or labels.shape[2] != 5:
        raise ValueError(f"{arg}: expected boxes of shape ({x.shape[0]}, K, 5), got {tuple(labels.shape)}")
    if not bool(torch.isfinite(labels).all()):
        raise ValueError(f"{arg}: boxes must be finite")
    if labels.numel() and int(labels[..., 0].min()) < -1:
        raise ValueError(f"{arg}: box classes must be >= 0 (or -1 for a padding row), got {int(labels[..., 0].min())}")
    return labels.float()


for _name, _check in (("segmentation", check_label_maps), ("detection", check_boxes)):
    if _name not in TASKS:
        register_task(_name, _check)
