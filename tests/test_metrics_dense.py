"""Dense metrics on hand-worked cases and invariants (perfect prediction, permutation invariance)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.metrics_dense import (
    average_precision,
    class_iou,
    confusion,
    match,
    mean_average_precision,
    miou,
    pixel_accuracy,
    recall,
)


def test_confusion_and_miou_hand_case() -> None:
    label = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [0, 0]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 0], [0, 0]]])
    conf = confusion(pred, label, classes=4)
    assert conf.shape == (2, 4, 4) and conf.dtype == torch.int64
    assert conf[0].tolist()[:2] == [[1, 1, 0, 0], [0, 2, 0, 0]]
    total = conf.sum(0)
    # class 0: TP 3, FP 1, FN 1 → 3/5; class 1: TP 2, FP 1 → 2/3; class 2: TP 1, FN 1 → 1/2; class 3 absent
    iou = class_iou(total)
    assert torch.allclose(iou[:3], torch.tensor([3 / 5, 2 / 3, 1 / 2], dtype=torch.float64))
    assert math.isnan(float(iou[3]))
    assert math.isclose(miou(total), (3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert math.isclose(miou(conf), miou(total))  # a stack is summed first
    assert math.isclose(pixel_accuracy(total), 6 / 8)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_segmentation_invariants(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 11, (4, 8, 8), generator=g)
    pred = torch.randint(0, 11, (4, 8, 8), generator=g)
    assert miou(confusion(label, label)) == 1.0 and pixel_accuracy(confusion(label, label)) == 1.0
    perm = torch.randperm(4, generator=g)
    assert torch.equal(confusion(pred, label).sum(0), confusion(pred[perm], label[perm]).sum(0))
    assert 0.0 <= miou(confusion(pred, label)) <= 1.0


def _gt() -> torch.Tensor:
    return torch.tensor([[[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]], [[0, 50, 50, 60, 60], [-1, -1, -1, -1, -1]]],
                        dtype=torch.float32)


def test_match_voc_rule() -> None:
    dets = torch.tensor([[[0, 0, 10, 10, 0.9, 0], [1, 1, 10, 10, 0.8, 0], [20, 20, 30, 30, 0.7, 0],
                          [0, 0, 0, 0, 0.0, -1]]], dtype=torch.float32)
    tp, found = match(dets, _gt()[:1])
    # the first takes box 0; the second's best box is taken → FP; the third has the wrong class → FP
    assert tp.tolist() == [[True, False, False, False]] and found.tolist() == [[True, False]]
    shuffled = dets[:, [2, 1, 3, 0]]  # the rule ranks by score, not by row
    assert match(shuffled, _gt()[:1])[0].tolist() == [[False, False, False, True]]


def test_average_precision_hand_case() -> None:
    # class 0 has 2 objects; detections ranked TP (0.9), FP (0.8), TP (0.7):
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → envelope 1 up to 1/2, 2/3 to 1 → AP = 1/2 + 1/3
    dets = torch.tensor([
        [[0, 0, 10, 10, 0.9, 0], [40, 40, 45, 45, 0.8, 0], [20, 20, 30, 30, 0.6, 1]],
        [[50, 50, 60, 60, 0.7, 0], [0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, -1]],
    ], dtype=torch.float32)
    ap = average_precision(dets, _gt(), num_classes=3)
    assert math.isclose(float(ap[0]), 0.5 + 1 / 3) and float(ap[1]) == 1.0 and math.isnan(float(ap[2]))
    assert math.isclose(mean_average_precision(dets, _gt(), num_classes=3), (0.5 + 1 / 3 + 1) / 2)
    assert recall(dets, _gt()) == 1.0
    assert recall(dets, _gt(), threshold=0.75) == 1 / 3  # only the 0.9 and 0.8 detections count


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_detection_invariants(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, k = 6, 3
    corner = torch.randint(0, 60, (n, k, 2), generator=g).float()
    cls = torch.randint(0, 4, (n, k, 1), generator=g).float()
    gt = torch.cat([cls, corner, corner + 10 + torch.randint(0, 20, (n, k, 2), generator=g).float()], -1)
    gt[torch.rand(n, k, generator=g) < 0.3] = -1.0
    gt[:, 0, 0] = gt[:, 0, 0].clamp(min=0)
    gt[:, 0, 1:] = torch.where(gt[:, 0, 1:] < 0, torch.tensor([0.0, 0.0, 10.0, 10.0]), gt[:, 0, 1:])
    score = torch.rand(n, k, 1, generator=g) * 0.9 + 0.1
    perfect = torch.cat([gt[..., 1:], score, gt[..., :1]], -1)
    perfect[gt[..., 0] < 0] = torch.tensor([0.0, 0, 0, 0, 0, -1])
    assert mean_average_precision(perfect, gt, num_classes=4) == 1.0 and recall(perfect, gt, threshold=0.0) == 1.0
    noisy = perfect.clone()
    noisy[..., :4] += torch.randn(n, k, 4, generator=g) * 3
    perm = torch.randperm(n, generator=g)
    assert torch.allclose(average_precision(noisy, gt, num_classes=4),
                          average_precision(noisy[perm], gt[perm], num_classes=4), equal_nan=True)
