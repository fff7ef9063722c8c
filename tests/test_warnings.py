"""One test per gradient-masking warning code: it fires on a model built to show the symptom and
stays silent on an honest one (the digits MLP), with nothing declared on the masked models."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab.attacks import FastViewSkipped
from advlab.defenses.wrappers import wrap_defense
from advlab.evaluation.checks import CHECKS, check_model
from advlab.models.masking import NumpyMedian, QuantisedInput

EPS = 0.3
N = 60


class _Reversed(torch.autograd.Function):
    """Identity forward, negated gradient backward: every gradient step goes the wrong way."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class ReversedGradient(nn.Module):
    """A model whose input gradient points away from higher loss (GM05, GM08)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_Reversed.apply(x))


class NoisyInput(nn.Module):
    """Gaussian noise on the input at every call, undeclared (GM07)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + 0.05 * torch.randn_like(x)).clamp(0, 1))


def _fired(model, x, y) -> dict[str, bool]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FastViewSkipped)  # (NoisyInput draws noise without declaring it: on purpose)
        return {r.code: r.fired for r in check_model(model, x, y, "linf", EPS, n=N, seed=0).results}


@pytest.fixture(scope="module")
def honest(digits, digits_mlp):
    _, _, x, y = digits
    return _fired(digits_mlp, x, y)


# code -> the purpose-built model showing that symptom
MODELS = {
    "GM01": lambda net: QuantisedInput(net, levels=3),
    "GM02": lambda net: QuantisedInput(net, levels=3),
    "GM03": lambda net: QuantisedInput(net, levels=3),
    "GM04": lambda net: wrap_defense(net, "bitdepth:2"),
    "GM05": ReversedGradient,
    "GM06": lambda net: QuantisedInput(net, levels=3),
    "GM07": NoisyInput,
    "GM08": ReversedGradient,
    "GM09": NumpyMedian,
}


def test_every_code_has_a_test():
    assert set(MODELS) == set(CHECKS)


@pytest.mark.parametrize("code", sorted(MODELS))
def test_code_fires_on_its_model_and_not_on_an_honest_one(code, digits, digits_mlp, honest):
    _, _, x, y = digits
    if code == "GM04":  # runs only behind a wrapper with an undefended surrogate: an honest (smooth) one
        honest = _fired(wrap_defense(digits_mlp, "gaussian:1"), x, y)
    assert honest.get(code) is False, f"{code} fired on the honest model ({honest})"
    masked = MODELS[code](digits_mlp).eval()
    fired = _fired(masked, x, y)
    assert fired.get(code) is True, f"{code} did not fire on its model: {fired}"


def test_leaves_autograd_runs_only_gradient_free_checks(digits, digits_mlp):
    _, _, x, y = digits
    run = check_model(NumpyMedian(digits_mlp).eval(), x, y, "linf", EPS, n=N)
    assert [r.code for r in run.results] == ["GM09"]
    assert {"check:noise", "check:square"} <= set(run.found)
    for x_adv, _ in run.found.values():
        assert float((x_adv - x[run.idx]).abs().max()) <= EPS + 1e-6
