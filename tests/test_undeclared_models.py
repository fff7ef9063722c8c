"""The undeclared masking models (advlab.models.masking, issue #14): equal to their declared twins, masking as claimed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab.models.masking import (
    UNDECLARED,
    NoGradClamp,
    NumpyMedian,
    PillowJPEG,
    QuantisedInput,
    RandomResize,
    SaturatedSoftmax,
    make_undeclared,
)
from advlab.models.wrappers import wrap_defense

DECLARED_ATTRS = ("differentiable", "randomized", "bpda", "surrogate")
# the models whose cross-entropy gradient w.r.t. x is claimed zero or absent
HIDDEN = ("quantise", "softmax", "numpy-median", "pillow-jpeg", "no-grad")


def tiny_cnn(channels: int = 1) -> nn.Module:
    """A random CNN that takes images of any size (28×28 here)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    return net.eval()


def snapshot(net: nn.Module) -> tuple[list[torch.Tensor], list[bool], bool, list[torch.Tensor | None]]:
    params = list(net.parameters())
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    return [p.detach().clone() for p in params], [p.requires_grad for p in params], net.training, grads


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """The gradient of the cross-entropy of ``model``'s output w.r.t. ``x``, or None where none reaches x."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    if not out.requires_grad:
        return None
    return torch.autograd.grad(F.cross_entropy(out, y), x, allow_unused=True)[0]


@pytest.fixture(scope="module")
def correct(digits, digits_mlp):
    """32 digits test images the MLP classifies correctly, and their labels."""
    _, _, xte, yte = digits
    with torch.no_grad():
        ok = digits_mlp(xte).argmax(1) == yte
    return xte[ok][:32], yte[ok][:32]


def test_registry_names_classes_and_twins():
    assert set(UNDECLARED) == {"quantise", "softmax", "numpy-median", "resize", "pillow-jpeg", "no-grad"}
    assert UNDECLARED["quantise"] == (QuantisedInput, "bitdepth:2")
    assert UNDECLARED["softmax"] == (SaturatedSoftmax, None)
    assert UNDECLARED["numpy-median"] == (NumpyMedian, "median:3")
    assert UNDECLARED["resize"] == (RandomResize, "resize:22")
    assert UNDECLARED["pillow-jpeg"] == (PillowJPEG, "jpeg:75")
    assert UNDECLARED["no-grad"] == (NoGradClamp, None)
    with pytest.raises(ValueError, match="did you mean 'quantise'"):
        make_undeclared("quantize", tiny_cnn())
    with pytest.raises(TypeError, match="net: expected a torch model"):
        make_undeclared("quantise", lambda x: x)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(UNDECLARED))
def test_declares_nothing_and_keeps_net_untouched(name, correct, digits_mlp):
    x, y = correct
    before = snapshot(digits_mlp)
    model = make_undeclared(name, digits_mlp)
    assert not [a for a in DECLARED_ATTRS if hasattr(model, a)]
    assert model.training == digits_mlp.training
    input_grad(model, x, y)
    after = snapshot(digits_mlp)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))
    assert before[1:3] == after[1:3]
    assert [g is None for g in before[3]] == [g is None for g in after[3]]
    assert all(a is None or torch.equal(a, b) for a, b in zip(before[3], after[3], strict=True))


@pytest.mark.parametrize("name", ["quantise", "numpy-median", "pillow-jpeg"])
def test_deterministic_ones_equal_their_declared_twin(name, digits, digits_mlp):
    x = digits[2][:64]
    cls, spec = UNDECLARED[name]
    assert spec is not None
    assert torch.equal(cls(digits_mlp)(x), wrap_defense(digits_mlp, spec)(x))


@pytest.mark.parametrize("name", ["quantise", "numpy-median", "pillow-jpeg"])
def test_twins_equal_on_28x28_images(name):
    net = tiny_cnn()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    cls, spec = UNDECLARED[name]
    assert torch.equal(cls(net)(x), wrap_defense(net, spec)(x))


def test_random_resize_same_seed_same_outputs_as_its_twin(digits, digits_mlp):
    x = digits[2][:16]
    mine, twin = RandomResize(digits_mlp, min_size=5, seed=3), wrap_defense(digits_mlp, "resize:5")
    twin.transform.generator.manual_seed(3)
    for _ in range(5):  # a sequence of draws, not only the first
        assert torch.equal(mine(x), twin(x))
    net, x28 = tiny_cnn(), torch.rand(4, 1, 28, 28)
    mine, twin = RandomResize(net), wrap_defense(net, "resize:22")  # the defaults: min_size 22, seed 0
    assert all(torch.equal(mine(x28), twin(x28)) for _ in range(5))


def test_random_resize_gives_two_gradients_for_two_identical_calls():
    net, x = tiny_cnn(), torch.rand(4, 1, 28, 28)
    model = RandomResize(net)
    y = torch.zeros(4, dtype=torch.long)
    g1, g2 = input_grad(model, x, y), input_grad(model, x, y)
    assert g1 is not None and g2 is not None
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0
    assert not torch.equal(g1, g2)


@pytest.mark.parametrize("name", HIDDEN)
def test_hides_the_gradient(name, correct, digits_mlp):
    x, y = correct
    assert input_grad(digits_mlp, x, y).abs().sum() > 0  # the net itself has a gradient
    g = input_grad(make_undeclared(name, digits_mlp), x, y)
    assert g is None or not g.any(), f"{name}: a non-zero gradient reaches x"


def test_hidden_gradients_on_a_net_that_requires_grad():
    """A trainable net (requires_grad parameters): the output needs grad, still none (or zero) reaches x."""
    net, x = tiny_cnn(), torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        y = net(x).argmax(1)
    for name in HIDDEN:
        g = input_grad(make_undeclared(name, net), x, y)
        assert g is None or not g.any(), name


def test_saturated_softmax_argmax_is_the_nets(digits, digits_mlp):
    x = digits[2]
    with torch.no_grad():
        assert torch.equal(SaturatedSoftmax(digits_mlp)(x).argmax(1), digits_mlp(x).argmax(1))


def test_no_grad_clamp_computes_the_net(digits, digits_mlp):
    x = digits[2][:64]
    assert torch.equal(NoGradClamp(digits_mlp)(x), digits_mlp(x))


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (1, 4, 2, 9), (3, 1, 8, 8)])
def test_any_image_size(shape):
    x = torch.rand(shape)
    for name in UNDECLARED:
        out = make_undeclared(name, nn.Flatten())(x)
        assert out.shape == (shape[0], shape[1] * shape[2] * shape[3]), name
        assert torch.isfinite(out).all(), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 5), scale=st.floats(0.0, 1.0))
def test_outputs_finite_and_argmax_stable(digits_mlp, seed, batch, scale):
    """Random images in [0, 1]: finite outputs; a deterministic model gives the same argmax twice; the
    saturated softmax and the no-grad clamp keep the net's argmax."""
    x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * scale
    with torch.no_grad():
        ref = digits_mlp(x).argmax(1)
        for name in UNDECLARED:
            model = make_undeclared(name, digits_mlp) if name != "resize" else RandomResize(digits_mlp, 5, seed)
            out = model(x)
            assert torch.isfinite(out).all(), name
            if name != "resize":
                assert torch.equal(model(x).argmax(1), out.argmax(1)), name
        assert torch.equal(SaturatedSoftmax(digits_mlp)(x).argmax(1), ref)
        assert torch.equal(NoGradClamp(digits_mlp)(x).argmax(1), ref)
