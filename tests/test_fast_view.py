"""The attack-time view of a model: same logits, model untouched, safe fallbacks that say so."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import advlab
from advlab.attacks import ModelInTrainingMode, fast_view, fast_views, get_attack, keep_train_mode
from advlab.attacks.fastview import FastViewSkipped
from advlab.defenses.wrappers import Defended, RandomResizePad

SHIPPED = ("lenet-mnist", "cnn-mnist-robust", "googlenet-mnist", "mlp-mnist")


def _mnist(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = advlab.load_dataset("mnist", "test")
    return x[:n], y[:n]


def _snapshot(model: nn.Module) -> list[tuple]:
    return [(n, p.data_ptr(), p.stride(), p.requires_grad, p.grad, p.detach().clone())
            for n, p in model.named_parameters()]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return all(p[:5] == q[:5] and torch.equal(p[5], q[5]) for p, q in zip(a, b, strict=True))


def test_view_computes_the_same_logits_and_leaves_the_model_untouched():
    x, _ = _mnist(64)
    for name in ("lenet-mnist", "cnn-mnist-robust"):
        model = advlab.load_model(name)
        before, mode = _snapshot(model), model.training
        view = fast_view(model, x[:2])
        assert view is not model and getattr(view, "_advlab_view", False)
        with torch.no_grad():
            torch.testing.assert_close(view(x), model(x), rtol=1e-4, atol=1e-4)
        # the view's convolution weights are channels_last copies that need no gradient
        conv = next(p for p in view.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.requires_grad
        assert _same(before, _snapshot(model)) and model.training == mode
        assert fast_view(view, x[:2]) is view  # a view is not wrapped again


class _ViewFlatten(nn.Module):
    """A net that flattens with .view, which fails on channels_last features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_a_model_the_view_cannot_run_is_attacked_as_it_is():
    torch.manual_seed(0)
    model = _ViewFlatten().eval()
    x, y = _mnist(8)
    with pytest.warns(FastViewSkipped, match=r"_ViewFlatten not used \(running the channels_last view raised "
                      r"RuntimeError: view size"):
        assert fast_view(model, x[:2]) is model
    with pytest.warns(FastViewSkipped):
        r = get_attack("pgd")(model, x, y, advlab.ThreatModel("linf", 0.1), steps=3)
    assert ((r.x_adv - x).abs() <= 0.1 + 1e-6).all()


def test_randomised_scripted_and_non_module_models_are_returned_unchanged():
    """The declared cases are returned as given, silently.

    The randomised wrapper is put in eval mode first: a freshly built ``Defended`` is an
    ``nn.Module`` in training mode, and a model in training mode is no longer returned unchanged
    but viewed through an eval-mode copy (next test).
    """
    x, _ = _mnist(4)
    model = advlab.load_model("lenet-mnist")
    randomized = Defended(model, RandomResizePad(24, seed=0)).eval()

    def predict(t: torch.Tensor) -> torch.Tensor:
        return model(t)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation notices
        scripted = nn.Sequential(torch.jit.script(nn.Flatten()), nn.Linear(784, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the declared cases are silent
        assert fast_view(randomized, x[:2]) is randomized
        assert fast_view(predict, x[:2]) is predict
        assert fast_view(scripted, x[:2]) is scripted


def test_a_model_in_training_mode_is_viewed_through_an_eval_mode_copy():
    """A model in training mode was returned unchanged, and attacks then ran it in training mode.

    That updated BatchNorm statistics and ran dropout during the attack, so the view is now the
    fast view of an eval-mode copy, said with a ModelInTrainingMode warning; the model's own
    flags stay as they were. Under keep_train_mode() the copy keeps the flags, declares
    randomized = True, and no warning is given.
    """
    x, _ = _mnist(8)
    training = advlab.load_model("lenet-mnist").train()
    with pytest.warns(ModelInTrainingMode, match=r"^advlab: LeNet5 is in training mode: attacking an eval-mode copy"):
        view = fast_view(training, x[:2])
    assert view is not training and getattr(view, "_advlab_view", False)
    assert not any(m.training for m in view.modules()) and all(m.training for m in training.modules())
    assert next(p for p in view.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(view(x), advlab.load_model("lenet-mnist")(x), rtol=1e-4, atol=1e-4)
    randomized = Defended(advlab.load_model("lenet-mnist"), RandomResizePad(24, seed=0)).train()  # training mode
    with pytest.warns(ModelInTrainingMode, match="Defended is in training mode"):
        view = fast_view(randomized, x[:2])
    assert view is not randomized and view.randomized and not view.training and randomized.training
    with warnings.catch_warnings(), keep_train_mode():
        warnings.simplefilter("error")
        kept = fast_view(training, x[:2])
    assert kept is not training and kept.randomized is True
    assert [m.training for m in kept.modules()] == [m.training for m in training.modules()]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.sampled_from([0.05, 0.1, 0.3]))
def test_pgd_through_the_view_stays_in_budget_and_matches_the_plain_model(seed, eps):
    """Same robust accuracy (±1 example in 64) with and without the view, inside ε and [0, 1]."""
    model = advlab.load_model("lenet-mnist")
    x, y = _mnist(64)
    threat = advlab.ThreatModel("linf", eps)
    results = []
    for enabled in (True, False):
        with fast_views(enabled):
            r = get_attack("pgd")(model, x, y, threat, steps=5, generator=torch.Generator().manual_seed(seed))
        assert ((r.x_adv - x).abs() <= eps + 1e-6).all() and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
        with torch.no_grad():
            results.append(int((model(r.x_adv).argmax(1) == y).sum()))
    assert abs(results[0] - results[1]) <= 1, results


def test_the_shipped_models_are_viewed_without_a_warning():
    """The view is used for every shipped MNIST model (googlenet has BatchNorm) and owns its tensors."""
    x, _ = _mnist(16)
    for name in SHIPPED:
        model = advlab.load_model(name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FastViewSkipped)
            view = fast_view(model, x[:2])
        assert view is not model and getattr(view, "_advlab_view", False), name
        with torch.no_grad():
            torch.testing.assert_close(view(x), model(x), rtol=1e-4, atol=1e-4)
        own = {t.data_ptr() for t in (*model.parameters(), *model.buffers())}
        assert not own & {t.data_ptr() for t in (*view.parameters(), *view.buffers())}, name


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
