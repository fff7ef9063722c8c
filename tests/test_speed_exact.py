"""The speed rewrites change no bit: logits and input gradients identical to the plain order and code path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import advlab
from advlab.attacks import fast_view
from advlab.attacks.carlini_wagner import _Search
from advlab.attacks.cw_objectives import cw_objective
from advlab.attacks.fastview import PoolFirstSequential, _swappable


def _logits_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the gradient of a CW-like margin plus cross-entropy w.r.t. the input."""
    xr = x.detach().clone().requires_grad_(True)
    logits = model(xr)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    loss = (logits.gather(1, y[:, None]).squeeze(1) - other).clamp_min(0) + logits.logsumexp(dim=1)
    (grad,) = torch.autograd.grad(loss.sum(), xr)
    return logits.detach(), grad


def _plain_order(view: nn.Module) -> list[nn.Module]:
    """Turn the view's reordered containers back into plain ``nn.Sequential`` (returned, to restore)."""
    seqs = [m for m in view.modules() if type(m) is PoolFirstSequential]
    for s in seqs:
        s.__class__ = nn.Sequential
    return seqs


def _assert_same_bits(view: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    fused = _logits_and_grad(view, x, y)
    seqs = _plain_order(view)
    try:
        plain = _logits_and_grad(view, x, y)
    finally:
        for s in seqs:
            s.__class__ = PoolFirstSequential
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])


def test_lenet_view_pools_before_the_relu_with_identical_logits_and_gradients():
    x, y = advlab.load_dataset("mnist", "test")
    model = advlab.load_model("lenet-mnist")
    view = fast_view(model, x[:2])
    assert type(view.features) is PoolFirstSequential
    assert [type(m) for m in view.features] == [type(m) for m in model.features]  # children as they were
    gen = torch.Generator().manual_seed(0)
    for scale in (0.0, 0.1, 1.0):  # clean images, near them, and far off (many ReLU/pool ties at 0)
        xs = (x[:300] + scale * torch.randn(x[:300].shape, generator=gen)).clamp(0, 1)
        _assert_same_bits(view, xs, y[:300])


class _ConvNet(nn.Module):
    def __init__(self, pool: nn.Module, relu_inplace: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(inplace=relu_inplace), pool,
                                  nn.Conv2d(5, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).amax(dim=(2, 3)))


_POOLS = st.sampled_from([
    lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: nn.MaxPool2d(2, ceil_mode=True),
    lambda: nn.MaxPool2d(2, stride=1, dilation=2),
])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), pool=_POOLS, inplace=st.booleans(), size=st.integers(8, 13),
       shift=st.floats(-2.0, 2.0), quantise=st.booleans())
def test_random_conv_nets_pool_before_relu_bitwise(seed, pool, inplace, size, shift, quantise):
    """Overlapping, padded, ceil-mode and dilated pools; quantised inputs give many ties in a window."""
    torch.manual_seed(seed)
    net = _ConvNet(pool(), inplace).eval()
    x = torch.randn(6, 2, size, size) + shift
    if quantise:
        x = x.round()
    view = fast_view(net, x[:2])
    assert type(view.body) is PoolFirstSequential
    _assert_same_bits(view, x, torch.randint(0, 3, (6,)))


def test_only_plain_relu_then_plain_max_pool_without_indices_is_reordered():
    class MyReLU(nn.ReLU):
        pass

    assert _swappable(nn.ReLU(), nn.MaxPool2d(2)) and _swappable(nn.ReLU(inplace=True), nn.MaxPool1d(3))
    assert not _swappable(nn.ReLU(), nn.MaxPool2d(2, return_indices=True))
    assert not _swappable(MyReLU(), nn.MaxPool2d(2)) and not _swappable(nn.ReLU(), nn.AvgPool2d(2))
    assert not _swappable(nn.MaxPool2d(2), nn.ReLU())
    mlp = fast_view(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU()).eval(), torch.rand(2, 4))
    assert type(mlp) is nn.Sequential  # nothing to reorder: the container stays as it is


def test_the_plain_order_is_kept_where_the_reordered_forward_differs_or_raises(monkeypatch):
    """The reordering is only kept on bitwise-equal probe logits; otherwise the view runs the given order."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(32, 3)).eval()
    probe, x = torch.rand(2, 1, 8, 8), torch.rand(4, 1, 8, 8)
    assert type(fast_view(net, probe)) is PoolFirstSequential
    for broken in (lambda self, input: nn.Sequential.forward(self, input) + 1e-6,
                   lambda self, input: (_ for _ in ()).throw(RuntimeError("no"))):
        monkeypatch.setattr(PoolFirstSequential, "forward", broken)
        view = fast_view(net, probe)
        assert type(view) is nn.Sequential and view is not net
        with torch.no_grad():
            torch.testing.assert_close(view(x), net(x))


def _reference_objective_grad(search: _Search, w: torch.Tensor, const: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The objective and gradient as plain autograd computes them (the code before the speed-up)."""
    wr = w.detach().clone().requires_grad_(True)
    xa = search.lo + (search.hi - search.lo) * (torch.tanh(wr) + 1) / 2  # the change of variables as it was
    logits = search.model(xa)
    l2sq = (xa - search.x).flatten(1).square().sum(dim=1)
    f = cw_objective(search.objective, logits, search.labels, search.target is not None, search.kappa)
    obj = l2sq + const * f
    (grad,) = torch.autograd.grad(obj.sum(), wr)
    return obj.detach(), grad, xa.detach()


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0), (0.25, 1.0), (-0.5, 0.5)])
@pytest.mark.parametrize("objective", ["f6", "f2", "f1"])
def test_cw_objective_and_gradient_are_autograds_bit_for_bit(digits_mlp, digits, bounds, objective):
    _, _, xte, yte = digits
    lo, hi = bounds
    x, y = lo + (hi - lo) * xte[:64], yte[:64]
    search = _Search(digits_mlp, x, y, None, bounds, 0.0, objective)
    gen = torch.Generator().manual_seed(3)
    const = torch.rand(64, generator=gen) * 10
    for scale in (0.0, 0.3, 3.0):
        w = search.w0 + scale * torch.randn(search.w0.shape, generator=gen)
        want_obj, want_grad, want_x = _reference_objective_grad(search, w, const)
        assert torch.equal(search._from_tanh(torch.tanh(w)), want_x)
        obj, grad = search._objective_grad(w.clone(), const, torch.zeros(64, dtype=torch.bool))
        assert torch.equal(obj, want_obj) and torch.equal(grad, want_grad)


def test_cw_gradient_on_the_lenet_view_is_autograds_bit_for_bit():
    x, y = advlab.load_dataset("mnist", "test")
    view = fast_view(advlab.load_model("lenet-mnist"), x[:2])
    search = _Search(view, x[:200], y[:200], None, (0.0, 1.0), 0.0)
    gen = torch.Generator().manual_seed(4)
    const = torch.full((200,), 2.0)
    for scale in (0.1, 1.0):
        w = search.w0 + scale * torch.randn(search.w0.shape, generator=gen)
        want_obj, want_grad, _ = _reference_objective_grad(search, w, const)
        obj, grad = search._objective_grad(w.clone(), const, torch.zeros(200, dtype=torch.bool))
        assert torch.equal(obj, want_obj) and torch.equal(grad, want_grad)
