"""The attack-time view of a model: same logits, model untouched, safe fallbacks."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import advlab
from advlab.attacks import fast_view, fast_views, get_attack
from advlab.defenses.wrappers import Defended, RandomResizePad


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
    assert fast_view(model, x[:2]) is model
    r = get_attack("pgd")(model, x, y, advlab.ThreatModel("linf", 0.1), steps=3)
    assert ((r.x_adv - x).abs() <= 0.1 + 1e-6).all()


def test_randomised_training_and_non_module_models_are_returned_unchanged():
    x, _ = _mnist(4)
    model = advlab.load_model("lenet-mnist")
    randomized = Defended(model, RandomResizePad(24, seed=0))
    assert fast_view(randomized, x[:2]) is randomized

    def predict(t: torch.Tensor) -> torch.Tensor:
        return model(t)

    assert fast_view(predict, x[:2]) is predict
    training = advlab.load_model("lenet-mnist").train()
    assert fast_view(training, x[:2]) is training


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
