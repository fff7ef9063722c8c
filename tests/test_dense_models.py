"""segnet / detnet: output formats, CenterNet targets, the detection loss, decoding and NMS, shipped weights."""

from __future__ import annotations

import pytest
import torch

from advlab.data import load_dataset
from advlab.metrics_dense import confusion, mean_average_precision, miou
from advlab.models import architecture_task, create_model, load_model
from advlab.models.dense import decode, detection_loss, heatmap_targets, nms
from advlab.models.wrappers import declared_input_shape

BOXES = torch.tensor([
    [[3, 10, 20, 40, 56], [7, 50, 50, 80, 90], [-1, -1, -1, -1, -1]],
    [[1, 0, 0, 30, 30], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]],
], dtype=torch.float32)


def _perfect(boxes: torch.Tensor) -> torch.Tensor:
    """A detector output that puts logit +20 at every centre and the exact size and offset there."""
    t = heatmap_targets(boxes)
    out = torch.full((len(boxes), 14, 24, 24), -20.0)
    out[:, :10] = torch.where(t.heat == 1, 20.0, -20.0)
    out[:, 10:12] = t.size
    out[:, 12:14] = t.offset
    return out


def test_architectures_shapes_and_tasks() -> None:
    x = torch.rand(2, 1, 96, 96)
    seg = create_model("segnet", in_shape=(1, 96, 96), num_classes=10).eval()
    det = create_model("detnet", in_shape=(1, 96, 96), num_classes=10).eval()
    assert seg(x).shape == (2, 11, 96, 96)
    assert det(x).shape == (2, 14, 24, 24)
    assert architecture_task("segnet") == "segmentation" and architecture_task("detnet") == "detection"
    assert architecture_task("lenet") == "classification"
    with pytest.raises(ValueError, match="multiples of 8"):
        create_model("segnet", in_shape=(1, 28, 28))


def test_heatmap_targets_hand_case() -> None:
    t = heatmap_targets(BOXES)
    assert t.heat.shape == (2, 10, 24, 24) and t.mask.shape == (2, 24, 24)
    # box 0: centre (25, 38) px = (6.25, 9.5) cells → cell (x 6, y 9), offset (0.25, 0.5), size 30×36
    assert float(t.heat[0, 3, 9, 6]) == 1.0 and float(t.mask[0, 9, 6]) == 1.0
    assert torch.allclose(t.offset[0, :, 9, 6], torch.tensor([0.25, 0.5]))
    assert torch.allclose(t.size[0, :, 9, 6].exp(), torch.tensor([30.0, 36.0]))
    assert 0 < float(t.heat[0, 3, 9, 7]) < 1  # a Gaussian around the peak
    assert float(t.mask.sum()) == 3 and float((t.heat == 1).sum()) == 3
    assert float(t.heat[1, 3].abs().sum()) == 0  # other images, other classes untouched


def test_detection_loss_per_example_and_differentiable() -> None:
    out = torch.randn(2, 14, 24, 24, requires_grad=True)
    loss = detection_loss(out, BOXES)
    assert loss.shape == (2,)
    grad = torch.autograd.grad(loss[0], out)[0]
    assert float(grad[0].abs().sum()) > 0 and float(grad[1].abs().sum()) == 0  # example 0 only
    alone = detection_loss(out[1:], BOXES[1:])
    assert torch.allclose(alone, loss[1:])
    perfect = detection_loss(_perfect(BOXES), BOXES)
    assert bool((perfect < 1e-6).all()) and bool((loss > perfect).all())


def test_decode_recovers_the_boxes() -> None:
    dets = decode(_perfect(BOXES))
    assert dets.shape == (2, 20, 6)
    assert torch.allclose(dets[0, 0], torch.tensor([10.0, 20.0, 40.0, 56.0, 1.0, 3.0]), atol=1e-4) or \
        torch.allclose(dets[0, 1], torch.tensor([10.0, 20.0, 40.0, 56.0, 1.0, 3.0]), atol=1e-4)
    assert int((dets[0, :, 5] >= 0).sum()) == 2 and int((dets[1, :, 5] >= 0).sum()) == 1
    assert bool((dets[1, 1:, 4] == 0).all()) and bool((dets[1, 1:, 5] == -1).all())
    assert mean_average_precision(dets, BOXES) == 1.0


def test_decode_peaks_threshold_and_order() -> None:
    out = torch.full((1, 14, 24, 24), -10.0)
    out[0, 2, 5, 5] = 2.0  # p 0.88, a peak
    out[0, 2, 5, 6] = 1.0  # its neighbour: not a peak (3×3 max-pool)
    out[0, 4, 15, 15] = 0.0  # p 0.5
    out[0, 6, 20, 2] = -1.5  # p 0.18 < threshold 0.3
    out[0, 10:12] = 2.0
    dets = decode(out)
    assert dets[0, :2, 5].tolist() == [2.0, 4.0]
    assert dets[0, 0, 4] > dets[0, 1, 4] and float(dets[0, 2, 4]) == 0


def test_nms_classwise() -> None:
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]], dtype=torch.float32)
    cls = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    keep = nms(boxes, cls, torch.ones(1, 4, dtype=torch.bool), 0.5)
    assert keep.tolist() == [[True, False, True, True]]  # the second overlaps the first (IoU 0.68), same class
    keep = nms(boxes, cls, torch.tensor([[False, True, True, True]]), 0.5)
    assert keep.tolist() == [[False, True, True, True]]  # a dropped candidate suppresses nothing


def test_shipped_models_load() -> None:
    for name, shape in (("segnet-mnist-scenes", (2, 11, 96, 96)), ("detnet-mnist-scenes", (2, 14, 24, 24))):
        model = load_model(name)
        assert declared_input_shape(model) == (1, 96, 96)
        assert model(torch.rand(2, 1, 96, 96)).shape == shape
        assert not any(p.requires_grad for p in model.parameters()) and not model.training


@pytest.mark.slow
def test_shipped_models_reach_their_metric() -> None:
    x, seg = load_dataset("mnist-scenes", "test")
    _, boxes = load_dataset("mnist-scenes", "test", task="detection")
    with torch.no_grad():
        pred = load_model("segnet-mnist-scenes")(x[:200]).argmax(1)
        dets = decode(load_model("detnet-mnist-scenes")(x[:200]))
    assert miou(confusion(pred, seg[:200])) >= 0.90
    assert mean_average_precision(dets, boxes[:200]) >= 0.90


def test_fit_trains_dense_tasks_on_the_one_loop() -> None:
    from advlab.train import TrainConfig, fit
    from advlab.train_dense import task_defense

    x, seg = load_dataset("mnist-scenes", "test")
    _, boxes = load_dataset("mnist-scenes", "test", task="detection")
    for arch, task, y, keys in (("segnet", "segmentation", seg, {"miou", "pixel_accuracy"}),
                                ("detnet", "detection", boxes, {"map50", "recall"})):
        model = create_model(arch, in_shape=(1, 96, 96), num_classes=10)
        result = fit(model, (x[:32], y[:32]), (x[32:48], y[32:48]), TrainConfig(epochs=1, batch_size=16),
                     defense=task_defense(task), progress=False)
        assert set(result.metrics) == keys and all(0 <= v <= 1 for v in result.metrics.values())
        assert 0 <= result.history[0]["acc"] <= 1


def test_train_command_refuses_a_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    from advlab.cli import main

    assert main(["train", "--model", "lenet", "--dataset", "mnist-scenes", "--out", "/tmp/never.safetensors"]) != 0
    assert "classification network" in capsys.readouterr().err
    assert main(["train", "--model", "segnet", "--dataset", "mnist-scenes", "--defense", "pgd",
                 "--out", "/tmp/never.safetensors"]) != 0
    assert "without a defense" in capsys.readouterr().err
