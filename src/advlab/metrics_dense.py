"""Metrics of dense tasks: segmentation (confusion, mIoU, pixel accuracy) and detection (AP, recall).

Segmentation: :func:`confusion` gives one int64 C×C matrix per image (rows: true class,
columns: predicted class), summable over images; :func:`miou` and :func:`pixel_accuracy` read a
summed matrix. mIoU is the mean, over the classes that occur in the labels or in the
predictions, of TP / (TP + FP + FN), background included (a class absent from both has no
IoU and is left out rather than counted as 1 or 0).

Detection: detections are N×D×6 rows ``(x0, y0, x1, y1, score, cls)`` (cls −1: padding) and
ground truth N×K×5 rows ``(cls, x0, y0, x1, y1)`` (cls −1: padding). :func:`match` is the
PASCAL VOC rule: per image, detections in decreasing score each take the same-class ground
truth box of highest IoU; it is a true positive if that IoU is > ``iou`` and the box is not
taken yet, else a false positive. :func:`average_precision` is VOC's all-point AP per class
(the area under the precision envelope), mAP their mean over the classes with ground truth.
"""

from __future__ import annotations

import torch

PAPER = ("Everingham et al. 2010, The PASCAL Visual Object Classes (VOC) Challenge, "
         "https://doi.org/10.1007/s11263-009-0275-4")


def confusion(pred_map: torch.Tensor, label_map: torch.Tensor, classes: int = 11) -> torch.Tensor:
    """Per-image confusion matrices: int64 N×classes×classes, ``[n, true, predicted]`` pixel counts."""
    if pred_map.shape != label_map.shape:
        raise ValueError(f"confusion: prediction {tuple(pred_map.shape)} and label {tuple(label_map.shape)} differ")
    n = pred_map.shape[0]
    idx = label_map.long().reshape(n, -1) * classes + pred_map.long().reshape(n, -1)
    idx = idx + torch.arange(n, device=idx.device)[:, None] * classes * classes
    counts = torch.bincount(idx.flatten(), minlength=n * classes * classes)
    return counts.reshape(n, classes, classes)


def _summed(conf: torch.Tensor) -> torch.Tensor:
    return conf.sum(0) if conf.dim() == 3 else conf


def class_iou(conf: torch.Tensor) -> torch.Tensor:
    """IoU per class (float64, NaN for a class absent from labels and predictions) of a (summed) confusion."""
    c = _summed(conf).double()
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def miou(conf: torch.Tensor) -> float:
    """Mean IoU over the classes present in labels or predictions (background included)."""
    return float(class_iou(conf).nanmean())


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Fraction of pixels whose predicted class is the true one."""
    c = _summed(conf)
    return float(c.diagonal().sum() / c.sum().clamp(min=1))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes ``(..., A, 4)`` and ``(..., B, 4)`` rows ``(x0, y0, x1, y1)`` → ``(..., A, B)``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:4], b[..., None, :, 2:4])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:4] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:4] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp(min=1e-9)


def match(dets: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """VOC matching: per detection, true positive or not (N×D bool); per ground truth, found or not (N×K bool).

    Padding rows (cls −1) are neither. Detections are taken in decreasing score within each image.
    """
    k0 = boxes.shape[1]
    dets, boxes = dets.double(), boxes.double().to(dets.device)
    boxes = torch.cat([boxes, boxes.new_full((boxes.shape[0], 1, 5), -1.0)], 1)  # a spare padding row
    order = dets[..., 4].argsort(dim=1, descending=True, stable=True)
    d = dets.gather(1, order[..., None].expand_as(dets))
    n, nd = d.shape[:2]
    same = (d[..., 5, None] == boxes[..., None, :, 0]) & (d[..., 5, None] >= 0) & (boxes[..., None, :, 0] >= 0)
    ov = torch.where(same, box_iou(d[..., :4], boxes[..., 1:]), torch.full_like(same, -1.0, dtype=d.dtype))
    taken = torch.zeros(n, boxes.shape[1], dtype=torch.bool, device=d.device)
    tp_sorted = torch.zeros(n, nd, dtype=torch.bool, device=d.device)
    rows = torch.arange(n, device=d.device)
    for j in range(nd):  # ranks in turn, each over the whole batch
        best, k = ov[:, j].max(1)
        hit = (best > iou) & ~taken[rows, k]
        tp_sorted[:, j] = hit
        taken[rows[hit], k[hit]] = True
    tp = torch.zeros_like(tp_sorted).scatter(1, order, tp_sorted)
    return tp, taken[:, :k0]


def _voc_ap(tp: torch.Tensor, npos: int) -> float:
    """All-point AP of true-positive flags sorted by decreasing score, with ``npos`` ground-truth objects."""
    ctp = tp.double().cumsum(0)
    cfp = (~tp).double().cumsum(0)
    rec = torch.cat([torch.zeros(1, dtype=torch.float64), ctp / npos, torch.ones(1, dtype=torch.float64)])
    prec = torch.cat([torch.zeros(1, dtype=torch.float64), ctp / (ctp + cfp).clamp(min=1),
                      torch.zeros(1, dtype=torch.float64)])
    envelope = prec.flip(0).cummax(0).values.flip(0)
    return float(((rec[1:] - rec[:-1]) * envelope[1:]).sum())


def average_precision(dets: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5,
                      num_classes: int = 10) -> torch.Tensor:
    """VOC all-point AP per class (float64, ``num_classes``; NaN for a class without ground truth).

    Detections of a class are pooled over images and ranked by score; precision is made
    monotone from the right and integrated over every recall step.
    """
    tp, _ = match(dets, boxes, iou)
    valid = dets[..., 5] >= 0
    cls, score, flags = dets[..., 5][valid].long(), dets[..., 4][valid], tp[valid]
    gt_cls = boxes[..., 0][boxes[..., 0] >= 0].long()
    npos = torch.bincount(gt_cls, minlength=num_classes)
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        if int(npos[c]) == 0:
            continue
        mine = cls == c
        order = score[mine].double().argsort(descending=True, stable=True)
        out[c] = _voc_ap(flags[mine][order], int(npos[c])) if order.numel() else 0.0
    return out


def mean_average_precision(dets: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5, num_classes: int = 10) -> float:
    """mAP: the mean of :func:`average_precision` over the classes with ground truth."""
    return float(average_precision(dets, boxes, iou, num_classes).nanmean())


def recall(dets: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5, threshold: float = 0.3) -> float:
    """Fraction of ground-truth objects found (VOC-matched, same class) by detections scoring ≥ ``threshold``."""
    kept = dets.clone()
    low = kept[..., 4] < threshold
    kept[..., 5] = torch.where(low, torch.full_like(kept[..., 5], -1.0), kept[..., 5])
    _, found = match(kept, boxes, iou)
    n_gt = int((boxes[..., 0] >= 0).sum())
    return float(found.sum()) / n_gt if n_gt else float("nan")


__all__ = ["PAPER", "average_precision", "box_iou", "class_iou", "confusion", "match", "mean_average_precision", "miou",
           "pixel_accuracy", "recall"]
