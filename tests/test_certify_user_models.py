"""Bound propagation on models as users write them: normalisation as arithmetic in ``forward``, tensors made in
``forward``; what draws at random is refused, and nothing is changed. (The PyTorch tutorial's ``(x - m) / s``
and ``x.view(x.size(0), -1)``: tests/test_certify_bounds.py, with the other functional forms.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from advlab.certify import build_chain, input_box, logit_bounds
from advlab.cli import main
from advlab.data import load_dataset

HERE = Path(__file__).resolve().parent


class _Buffers(nn.Module):
    """Per-channel statistics as buffers, reshaped in forward, and every arithmetic form with a constant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]))
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.sub(self.mean.view(1, -1, 1, 1)).div(self.std[:, None, None])
        x = 2 * (1 - x) - torch.tensor(0.5)  # (rsub, mul, and a tensor made in forward from constants)
        return self.fc(-x.flatten(1))


def test_arithmetic_with_constants_is_exact_for_an_affine_model():
    """Linear after an affine map: IBP's interval is the exact range, which a direct computation gives."""
    net = _Buffers().eval()
    x, eps = torch.rand(6, 3, 4, 4), 0.05
    lo, hi = logit_bounds(net, x, eps, method="ibp")
    scale = (2 / net.std).view(1, 3, 1, 1).expand(1, 3, 4, 4).flatten(1)  # -x = 2 (x - mean) / std - 1.5
    xlo, xhi = input_box(x, eps)
    w = net.fc.weight * scale
    centre = net((xlo + xhi) / 2)
    radius = ((xhi - xlo) / 2).flatten(1) @ w.abs().T
    assert torch.allclose(lo, centre - radius, atol=1e-4) and torch.allclose(hi, centre + radius, atol=1e-4)
    pts = xlo + torch.rand(200, *x.shape[1:]).unsqueeze(1) * (xhi - xlo)
    with torch.no_grad():
        z = net(pts.flatten(0, 1)).view(200, 6, 5)
    assert bool((z >= lo - 1e-5).all()) and bool((z <= hi + 1e-5).all())
    assert "mean" in net._buffers and not any(k.startswith("_tensor_constant") for k in vars(net))


class _Draws(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc, self.how = nn.Linear(6, 3), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "torch":
            return self.fc(x + 0.1 * torch.randn(6))
        return self.fc(x * random.uniform(0.9, 1.1))


@pytest.mark.parametrize(("how", "stream"), [("torch", "torch's random generator"), ("python", "Python's random")])
def test_a_forward_that_draws_at_random_is_refused_and_nothing_moves(how, stream):
    """Tracing would freeze one draw into the bounds; the model, and every generator, are left as they were."""
    net, x = _Draws(how).eval(), torch.rand(2, 6)
    names, torch_state, py_state = set(vars(net)), torch.get_rng_state(), random.getstate()
    with pytest.raises(ValueError, match=rf"^certify: _Draws's forward draws from {stream}.*randomized smoothing$"):
        logit_bounds(net, x, 0.01)
    assert set(vars(net)) == names  # (torch.fx hangs the tensors it meets on the traced module)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state


class _NotAffine(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc, self.how = nn.Linear(6, 3), how
        self.register_buffer("per_example", torch.rand(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "reciprocal":
            return self.fc(1 / (x + 1))
        if self.how == "square":
            return self.fc(x * x)
        return self.fc(x + self.per_example)  # (a constant with a batch dimension of its own)


@pytest.mark.parametrize("how", ["reciprocal", "square", "batch"])
def test_arithmetic_that_is_not_an_affine_map_of_one_example_is_refused(how):
    with pytest.raises(ValueError, match=r"^certify: unsupported layer"):
        build_chain(_NotAffine(how), (6,))


def test_certify_takes_a_factory_and_its_weights(tmp_path, capsys):
    """As `advlab evaluate` and `advlab attack` do: --model FILE.py:FACTORY --weights FILE."""
    from factory_models import make_digits_mlp

    y = load_dataset("digits", "test")[1][:30]
    state = make_digits_mlp().state_dict()  # (weights that answer y[0] to everything: clean Acc@1 is its share)
    state["3.weight"], state["3.bias"] = torch.zeros(10, 32), F.one_hot(y[0], 10).float()
    w = tmp_path / "w.safetensors"
    save_file(state, str(w))
    spec = f"{HERE / 'factory_models.py'}:make_digits_mlp"
    args = ["certify", "--model", spec, "--dataset", "digits", "--n", "30", "--eps", "0", "--method", "ibp"]
    assert main([*args, "--weights", str(w)]) == 0
    with_weights = capsys.readouterr().out
    assert main(args) == 0
    assert f"(30 images): clean accuracy {float((y == y[0]).float().mean()):.4f}" in with_weights
    assert with_weights != capsys.readouterr().out  # (without them, the factory's own initialisation)
