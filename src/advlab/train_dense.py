"""Dense tasks on the one training loop: the loss of a batch, its training accuracy, the test metric.

:class:`SegmentationTraining` (per-pixel cross-entropy; test: mIoU and pixel accuracy) and
:class:`DetectionTraining` (CenterNet's loss; test: mAP@0.5 and recall of the decoded detections) are
:class:`~advlab.train.TrainingDefense` subclasses, so :func:`advlab.train.fit` trains them
without a loop of their own. :func:`task_defense` picks the one an architecture's task needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advlab.metrics_dense import confusion, mean_average_precision, miou, pixel_accuracy, recall
from advlab.models.dense import decode, detection_loss, heatmap_targets
from advlab.train import TrainingDefense

EVAL_BATCH = 200


def _outputs(model: nn.Module, x: torch.Tensor, device: torch.device,
             batch: int = EVAL_BATCH) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, output)`` of ``model`` over ``x`` in batches, without gradients, on the CPU."""
    with torch.no_grad():
        for i in range(0, len(x), batch):
            yield i, model(x[i : i + batch].to(device)).cpu()


@dataclass
class SegmentationTraining(TrainingDefense):
    """Per-pixel cross-entropy over the N×(C+1)×H×W logits; accuracy is the per-image pixel accuracy.

    ``background_weight`` weighs background pixels in the (weighted-mean) cross-entropy: digits
    cover about 3% of a scene, and a weight below 1 keeps them from being drowned out (in short
    trials, 3 epochs of 3 000 scenes, mIoU 0.11 with weight 1, 0.31 with 0.2 at batch 32; 0.84
    with 0.2 at batch 16 and learning rate 6e-3).
    """

    name: str = "segmentation"
    background_weight: float = 0.2

    def step(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the batch's logits against its label maps."""
        out = model(xb)
        weight = torch.ones(out.shape[1], device=out.device)
        weight[0] = self.background_weight
        return F.cross_entropy(out, yb, weight=weight), out

    def correct(self, out: torch.Tensor, yb: torch.Tensor) -> float:
        """Sum over the batch of each image's pixel accuracy."""
        return float((out.argmax(1) == yb).float().mean((1, 2)).sum())

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
        """``miou`` and ``pixel_accuracy`` of the argmax maps on ``(x, y)``."""
        total = torch.stack([confusion(out.argmax(1), y[i : i + len(out)], out.shape[1]).sum(0)
                             for i, out in _outputs(model, x, device)]).sum(0)
        return {"miou": miou(total), "pixel_accuracy": pixel_accuracy(total)}


@dataclass
class DetectionTraining(TrainingDefense):
    """CenterNet's loss (mean over the batch).

    Training accuracy: the fraction of each image's objects whose centre cell has heat-map
    probability > 0.5 in the object's class.
    """

    name: str = "detection"

    def step(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean :func:`~advlab.models.dense.detection_loss` of the batch."""
        out = model(xb)
        return detection_loss(out, yb).mean(), out

    def correct(self, out: torch.Tensor, yb: torch.Tensor) -> float:
        """Sum over the batch of each image's fraction of objects hit at their centre cell."""
        num_classes = out.shape[1] - 4
        t = heatmap_targets(yb, out.shape[-1], num_classes=num_classes)
        peak = (t.heat == 1) & (out[:, :num_classes] > 0)
        return float((peak.sum((1, 2, 3)) / t.mask.sum((1, 2)).clamp(min=1)).sum())

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
        """``map50`` (VOC all-point mAP at IoU 0.5) and ``recall`` (score ≥ 0.3) of the decoded detections."""
        outs = [(decode(out), out.shape[1] - 4) for _, out in _outputs(model, x, device)]
        dets = torch.cat([d for d, _ in outs])
        return {"map50": mean_average_precision(dets, y, 0.5, outs[0][1]),
                "recall": recall(dets, y, 0.5, 0.3)}


TASK_DEFENSES: dict[str, type[TrainingDefense]] = {"segmentation": SegmentationTraining, "detection": DetectionTraining}


def task_defense(task: str) -> TrainingDefense:
    """The training loss and metric of ``task`` (``"classification"``: plain cross-entropy and accuracy)."""
    if task == "classification":
        return TrainingDefense()
    if task not in TASK_DEFENSES:
        raise ValueError(f"task: expected classification, {', '.join(TASK_DEFENSES)}, got {task!r}")
    return TASK_DEFENSES[task]()


__all__ = ["TASK_DEFENSES", "DetectionTraining", "SegmentationTraining", "task_defense"]
