"""mnist-scenes: determinism, label formats, class balance, and the load_dataset task argument."""

from __future__ import annotations

import pytest
import torch

from advlab.data import dataset_info, load_dataset
from advlab.data.mnist import load_mnist
from advlab.data.scenes import MAX_DIGITS, SCENES, SIDES, make_scenes


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("test", None)
    return x[:2000], y[:2000]


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, seg = load_dataset("mnist-scenes", "test")
    x2, boxes = load_dataset("mnist-scenes", "test", task="detection")
    assert x2 is x  # one generation, cached
    return x, seg, boxes


def test_same_bytes_twice_and_seed_matters(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    a = make_scenes(*digits, 64, seed=3)
    b = make_scenes(*digits, 64, seed=3)
    c = make_scenes(*digits, 64, seed=4)
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype and torch.equal(u, v)
    assert not torch.equal(a.x, c.x)


def test_formats(test_split: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    x, seg, boxes = test_split
    assert x.shape == (SCENES["test"], 1, 96, 96) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert seg.shape == (SCENES["test"], 96, 96) and seg.dtype == torch.int64
    assert boxes.shape == (SCENES["test"], MAX_DIGITS, 5) and boxes.dtype == torch.float32
    assert int(seg.min()) == 0 and int(seg.max()) == 10
    assert torch.equal(seg > 0, x[:, 0] > 0.5)  # a digit pixel is one brighter than 0.5


def test_boxes_are_tight_around_their_pixels(test_split: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    _, seg, boxes = test_split
    n = 200
    valid = boxes[:n, :, 0] >= 0
    count = valid.sum(1)
    assert int(count.min()) >= 1 and int(count.max()) <= MAX_DIGITS
    assert bool((valid[:, :-1] | ~valid[:, 1:]).all())  # objects first, padding last
    grid = torch.arange(96)
    b = boxes[:n].long()
    inside = ((grid >= b[..., 1, None]) & (grid < b[..., 3, None]))[..., None, :] & \
             ((grid >= b[..., 2, None]) & (grid < b[..., 4, None]))[..., :, None]  # N×K×H×W
    of_class = seg[:n, None] == (b[..., 0, None, None] + 1)
    inside &= valid[..., None, None]
    labelled = seg[:n] > 0
    assert torch.equal((inside & of_class).any(1), labelled)  # every digit pixel is in a box of its class
    assert not bool((inside & labelled[:, None] & ~of_class).any())  # no box holds another digit's pixel
    own = inside & of_class
    for axis, lo, hi in ((-2, 1, 3), (-1, 2, 4)):  # tight: the first and last column / row hold a digit pixel
        hit = own.any(axis)
        first = hit.float().argmax(-1)
        last = hit.shape[-1] - hit.flip(-1).float().argmax(-1)
        assert torch.equal(first[valid], b[..., lo][valid]) and torch.equal(last[valid], b[..., hi][valid])
    widths = (b[..., 3] - b[..., 1])[valid]
    assert int(widths.max()) <= SIDES[1]


def test_classes_balanced(test_split: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    _, _, boxes = test_split
    counts = torch.bincount(boxes[..., 0][boxes[..., 0] >= 0].long(), minlength=10).float()
    assert float(counts.min() / counts.max()) > 0.7


def test_task_argument() -> None:
    assert dataset_info("mnist-scenes").num_classes == 10
    assert dataset_info("mnist-scenes").tasks == ("segmentation", "detection")
    with pytest.raises(ValueError, match="classification dataset"):
        load_dataset("digits", "test", task="detection")
    with pytest.raises(ValueError, match="task"):
        load_dataset("mnist-scenes", "test", task="depth")
