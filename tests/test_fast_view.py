"""The attack-time view of a model: same logits, model untouched, safe fallbacks that say so."""

from __future__ import annotations

import warnings

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


def test_a_view_bound_to_the_layout_keeps_the_models_layout_without_a_warning():
    """The tutorial's h.view(h.size(0), -1) fails on channels_last activations: the view keeps NCHW, silently."""
    torch.manual_seed(0)
    model = _ViewFlatten().eval()
    x, y = _mnist(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastViewSkipped)
        view = fast_view(model, x[:2])
        r = get_attack("pgd")(model, x, y, advlab.ThreatModel("linf", 0.1), steps=3,
                              generator=torch.Generator().manual_seed(0))
    assert view is not model and getattr(view, "_advlab_view", False)
    assert view.conv.weight.is_contiguous() and not view.conv.weight.requires_grad
    with torch.no_grad():
        assert torch.equal(view(x), model(x))
    with fast_views(False):
        plain = get_attack("pgd")(model, x, y, advlab.ThreatModel("linf", 0.1), steps=3,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.x_adv, plain.x_adv) and ((r.x_adv - x).abs() <= 0.1 + 1e-6).all()


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
