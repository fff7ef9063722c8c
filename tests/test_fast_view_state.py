"""The attack-time view and the model's state: six nets whose state or randomness a view could disturb,
probes on copies, hooks, weights held outside parameters. The view's basic contract is tests/test_fast_view.py."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import advlab
from advlab.attacks import fast_view, fast_views, get_attack
from advlab.attacks.fastview import FastViewSkipped


def _mnist(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = advlab.load_dataset("mnist", "test")
    return x[:n], y[:n]


# --- Six nets whose state or randomness a view could disturb, attacked with the view on and off. ---


def _lenet() -> nn.Module:
    return advlab.load_model("lenet-mnist")


class _Wrapped(nn.Module):
    """The shipped LeNet-5 behind one extra behaviour (each subclass adds its own to forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _lenet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _BatchNormNet(_Wrapped):
    """LeNet-5 with an eval-mode BatchNorm after its first convolution (non-trivial statistics, undone by its affine map)."""

    def __init__(self) -> None:
        super().__init__()
        bn = nn.BatchNorm2d(6)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            bn.running_mean.copy_(torch.randn(6, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
            bn.weight.copy_((bn.running_var + bn.eps).sqrt())
            bn.bias.copy_(bn.running_mean)
        bn.num_batches_tracked.fill_(7)
        self.net.features.insert(1, bn.requires_grad_(False))


class _TiedNet(_Wrapped):
    """LeNet-5 with a residual block whose two convolutions are the same weight Parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        with torch.no_grad():
            nn.init.dirac_(self.a.weight).mul_(0.5).add_(0.01 * torch.randn(6, 6, 3, 3, generator=torch.Generator().manual_seed(1)))
            self.a.bias.zero_()
            self.b.bias.fill_(0.01)
        self.b.weight = self.a.weight
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.features
        h = f[:3](self.net.norm(x))
        h = h + torch.relu(self.b(torch.relu(self.a(h))))
        return self.net.classifier(f[3:](h).flatten(1))


class _HookedNet(_Wrapped):
    """LeNet-5 with a forward hook on its first convolution that records the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[torch.Tensor] = []
        self.net.features[0].register_forward_hook(lambda _m, _i, out: self.records.append(out.detach().clone()))


class _CountingNet(_Wrapped):
    """LeNet-5 that counts its calls in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


class _CachingNet(_Wrapped):
    """LeNet-5 that appends every prediction to a list in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.seen.append(out.detach().argmax(1))
        return out


class _NoisyNet(_Wrapped):
    """LeNet-5 that adds Gaussian noise to its input, without declaring ``randomized = True``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn_like(x))


def _state(model: nn.Module) -> dict:
    """What an attack could have changed: weights and buffers, the attributes forward touches, the global RNG."""
    return {
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "touched": {k: list(v) if isinstance(v, list) else v
                    for k, v in vars(model).items() if k in ("calls", "seen", "records")},
        "rng": torch.get_rng_state(),
    }


# (net, what the skip warning says, or None where the view is used)
NETS: dict[str, tuple[Callable[[], nn.Module], str | None]] = {
    "batchnorm": (_BatchNormNet, None),
    "tied-weights": (_TiedNet, None),
    "forward-hook": (_HookedNet, r"_HookedNet not used \(it has forward hooks on net\.features\.0\)"),
    "call-counter": (_CountingNet, r"its forward changes state: calls changed"),
    "in-forward-cache": (_CachingNet, r"its forward changes state: seen changed"),
    "undeclared-noise": (_NoisyNet, r"draws from torch's random generator in forward but does not declare randomized"),
}


def _attack(make: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor) -> tuple[list, dict]:
    """PGD (3 steps) and DeepFool on a fresh net with the global RNG seeded; the results and the net's state after."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = make().eval()
        pgd = get_attack("pgd")(model, x, y, advlab.ThreatModel("linf", 0.1), steps=3,
                                generator=torch.Generator().manual_seed(2))
        deepfool = get_attack("deepfool")(model, x, y, advlab.ThreatModel("l2", 1.5), steps=20)
        return [pgd, deepfool], _state(model)


@pytest.mark.parametrize("case", list(NETS))
def test_a_view_never_changes_the_models_state_or_the_outcome(case):
    make, skipped = NETS[case]
    x, y = _mnist(32)
    with fast_views(False), warnings.catch_warnings():
        warnings.simplefilter("error", FastViewSkipped)
        plain, plain_state = _attack(make, x, y)
    with fast_views(True):
        if skipped:
            with pytest.warns(FastViewSkipped, match=skipped) as record:
                viewed, viewed_state = _attack(make, x, y)
            assert all(issubclass(w.category, FastViewSkipped) for w in record)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FastViewSkipped)
                viewed, viewed_state = _attack(make, x, y)
    torch.testing.assert_close(viewed_state, plain_state, rtol=0, atol=0)
    for a, b in zip(viewed, plain, strict=True):
        if skipped:  # the model itself was attacked both times
            assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
        else:
            assert abs(int(a.success.sum()) - int(b.success.sum())) <= 1, (case, a.success.sum(), b.success.sum())


def test_tied_weights_stay_tied_and_batchnorm_statistics_are_the_views_own():
    x, _ = _mnist(4)
    tied = _TiedNet().eval()
    view = fast_view(tied, x[:2])
    assert view.a.weight is view.b.weight and view.a.weight is not tied.a.weight
    assert view.a.weight.is_contiguous(memory_format=torch.channels_last)
    bn = _BatchNormNet().eval()
    view = fast_view(bn, x[:2])
    assert view is not bn and view.net.features[1].running_mean is not bn.net.features[1].running_mean


class _InPlaceBuffer(_Wrapped):
    """Keeps a running mean of its inputs in a buffer, updated in place in forward (in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen_mean", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_mean.mul_(0.9).add_(0.1 * x.mean())
        return self.net(x)


class _OwnGenerator(_Wrapped):
    """Draws noise from a generator of its own, without declaring ``randomized = True``."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn(x.shape, generator=self.gen))


class _NumpyNoise(_Wrapped):
    """Draws from NumPy's global generator in forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + float(np.random.rand()) * 0.01)  # noqa: NPY002 -- the legacy global stream on purpose


def _streams() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002


@pytest.mark.parametrize(("make", "reason"), [
    (_CountingNet, "its forward changes state: calls changed"),
    (_CachingNet, "its forward changes state: seen changed"),
    (_InPlaceBuffer, "its forward changes state: seen_mean changed"),
    (_OwnGenerator, "its forward changes state: gen changed"),
    (_NoisyNet, "it draws from torch's random generator in forward but does not declare randomized = True"),
    (_NumpyNoise, "it draws from NumPy's global random generator in forward but does not declare randomized = True"),
])
def test_the_probe_runs_on_copies_and_leaves_model_and_random_streams_alone(make, reason):
    x, _ = _mnist(4)
    model = make().eval()
    before, streams = _state(model), _streams()
    gen = model.gen.get_state() if isinstance(model, _OwnGenerator) else None
    with pytest.warns(FastViewSkipped) as record:
        assert fast_view(model, x[:2]) is model
    assert record[0].filename == __file__  # the warning points at the caller, not into advlab
    assert [str(w.message) for w in record] == [
        f"advlab: fast view of {type(model).__name__} not used ({reason}); attacking the model as given"]
    torch.testing.assert_close(_state(model), before, rtol=0, atol=0)  # buffers (seen_mean), calls, seen
    assert gen is None or torch.equal(model.gen.get_state(), gen)
    now = _streams()
    assert torch.equal(now[0], streams[0]) and np.array_equal(now[1], streams[1]) and now[2] == streams[2]


def test_hooks_anywhere_rule_the_view_out():
    x, _ = _mnist(4)
    model = _lenet()
    handle = model.classifier[0].register_full_backward_hook(lambda *_: None)
    with pytest.warns(FastViewSkipped, match=r"it has backward hooks on classifier\.0"):
        assert fast_view(model, x[:2]) is model
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *_: None)
    try:
        with pytest.warns(FastViewSkipped, match="global module forward pre-hooks are registered"):
            assert fast_view(model, x[:2]) is model
    finally:
        handle.remove()
    assert fast_view(model, x[:2]) is not model


class _Recurrent(nn.Module):
    """An LSTM over image rows: nn.LSTM keeps a list of its weights and weak references to them."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.fc = nn.LSTM(28, 16, batch_first=True), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x.squeeze(1))[0][:, -1])


def test_a_model_holding_its_weights_in_lists_and_weak_references_is_viewed():
    x, _ = _mnist(4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _Recurrent().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastViewSkipped)
        view = fast_view(model, x[:2])
    assert view is not model
    assert all(ref() is w for ref, w in zip(view.rnn._flat_weight_refs, view.rnn._flat_weights, strict=True))
    assert not {w.data_ptr() for w in model.rnn._flat_weights} & {w.data_ptr() for w in view.rnn._flat_weights}
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x), rtol=0, atol=0)
