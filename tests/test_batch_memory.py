"""A batch whose gradient step needs more memory than the machine has is refused before the evaluation runs, with
the batch size that fits (the OOM killer used to end such a run without a word); above half, a warning."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import advlab
from advlab.evaluation import memory
from advlab.evaluation.memory import LargeBatch, saved_bytes

KW = {"attacks": ["fgsm"], "eps": [0.1], "progress": False, "checks": False}
MIB = 2**20


@pytest.fixture(scope="module")
def data(mnist_test):
    x, y = mnist_test
    return x[:40], y[:40]


def per_image(model, x):
    return (saved_bytes(model, x[:4]) - saved_bytes(model, x[:2])) / 2


def test_saved_bytes_grow_with_the_batch_and_leave_out_the_weights(lenet, data):
    x, _ = data
    two, four = saved_bytes(lenet, x[:2]), saved_bytes(lenet, x[:4])
    assert four > two > 0 and four - two == pytest.approx(two, rel=0.05)  # (no constant part: weights excluded)
    linear = nn.Linear(784, 10)
    assert saved_bytes(nn.Sequential(nn.Flatten(), linear), x[:2]) == 2 * 784 * 4  # (its input, not its weight)


def test_a_batch_that_does_not_fit_is_refused_with_the_size_that_fits(lenet, data, monkeypatch):
    need = memory.BACKWARD_FACTOR * per_image(lenet, data[0]) * 40
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need / 2))
    with pytest.raises(ValueError, match=r"^batch_size: a gradient step on 40 images of 1×28×28 needs about") as e:
        advlab.evaluate(lenet, data, batch_size=500, **KW)
    fits = int(re.search(r"--batch-size (\d+)", str(e.value)).group(1))
    assert fits == 10  # (half of what is available)
    assert "\n" not in str(e.value)
    advlab.evaluate(lenet, data, batch_size=fits, **KW)  # the suggested size runs


def test_a_batch_that_needs_more_than_half_warns(lenet, data, monkeypatch):
    need = memory.BACKWARD_FACTOR * per_image(lenet, data[0]) * 40
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need * 1.5))
    with pytest.warns(LargeBatch, match=r"--batch-size 30 \(batch_size=30\) fits in half of it$"):
        advlab.evaluate(lenet, data, batch_size=500, **KW)
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(need * 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeBatch)
        advlab.evaluate(lenet, data, batch_size=500, **KW)


def test_nothing_is_measured_for_a_black_box_or_unknown_memory(lenet, data, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    box = advlab.models.BlackBox(lambda x: lenet(x), output="logits")
    advlab.evaluate(box, data, attacks=["square"], eps=[0.1], params={"square": {"max_queries": 5}},
                    progress=False, checks=False)
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    advlab.evaluate(lenet, data, **KW)


def test_the_measurement_leaves_the_model_and_the_rng_untouched(lenet, data):
    from advlab.models.checkpoint import tensor_digest

    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).train()
    before, state = tensor_digest(bn), torch.random.get_rng_state()
    memory.check_batch_memory(bn, data[0], 500)
    assert tensor_digest(bn) == before and torch.equal(torch.random.get_rng_state(), state) and bn.training
