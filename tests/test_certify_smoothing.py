"""Randomized smoothing (Cohen et al. 2019), its statistics, Gaussian-noise training, Lipschitz certificates."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from advlab.attacks import get_attack
from advlab.certify.lipschitz import lipschitz_constant, lipschitz_radius
from advlab.certify.smoothing import Smoothed, certified_accuracy
from advlab.certify.stats import binom_test_half, clopper_pearson, clopper_pearson_lower, normal_ppf
from advlab.defenses import make_training_defense
from advlab.models.nets import Normalize
from advlab.threat import ThreatModel
from advlab.train import TrainConfig, fit


class Constant(nn.Module):
    """Always class ``c`` (of 4)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(len(x), 4)
        z[:, self.c] = 1.0
        return z


class HalfSpace(nn.Module):
    """Class 1 where w·x + b > 0, else class 0: P(class 1 under noise) = Φ((w·x + b)/(σ‖w‖))."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([-s, s], 1)


def _small_conv(seed: int = 0) -> nn.Module:
    """A random chain net on 1×8×8 with every supported layer kind (BatchNorm with non-trivial statistics)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        Normalize(0.3, 0.4), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 1 * 1, 10),
    )
    bn = net[2]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(-2, 2)
    return net.eval().requires_grad_(False)


# --- statistics ---------------------------------------------------------------------------------

def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(5, 10, 0.05)
    assert float(lo) == pytest.approx(0.18709, abs=1e-5) and float(hi) == pytest.approx(0.81291, abs=1e-5)
    assert float(clopper_pearson_lower(100, 100, 0.001)) == pytest.approx(0.001 ** (1 / 100), rel=1e-12)
    assert float(clopper_pearson_lower(0, 100, 0.001)) == 0.0
    assert float(normal_ppf(torch.tensor(0.975))) == pytest.approx(1.959964, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.001, 0.01, 0.05]))
def test_clopper_pearson_and_binomial_test_match_scipy(kn, alpha):
    k, n = kn
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    lo, hi = clopper_pearson(k, n, alpha)
    assert float(lo) == pytest.approx(ci.low, abs=1e-9) and float(hi) == pytest.approx(ci.high, abs=1e-9)
    assert float(binom_test_half(k, n)) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-6)


# --- smoothing ----------------------------------------------------------------------------------

def test_radius_formula_on_a_constant_classifier():
    x = torch.rand(3, 1, 8, 8)
    pred, radius = Smoothed(Constant(2).eval(), 0.5, 4).certify(x, 10, 1000, 0.001, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * stats.norm.ppf(0.001 ** (1 / 1000))
    assert pred.tolist() == [2, 2, 2]
    assert radius.tolist() == pytest.approx([expected] * 3, rel=1e-6)


def test_half_space_radius_is_sound_and_tight():
    w = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    b = -float((x.flatten(1) @ w.flatten()).median())
    model, sigma = HalfSpace(w, b).eval(), 1.0
    pred, radius = Smoothed(model, sigma, 2).certify(x, 100, 20_000, 0.001, generator=torch.Generator().manual_seed(3))
    s = x.flatten(1) @ w.flatten() + b
    exact = s.abs() / w.norm()  # the distance to the boundary: the smoothed classifier's true radius here
    certified = pred >= 0
    assert (pred[certified] == (s[certified] > 0).long()).all()
    assert (radius <= exact + 1e-6).all()
    assert (radius[exact > 0.5 * sigma] >= 0.8 * exact[exact > 0.5 * sigma]).all()


def test_abstains_when_noise_decides():
    w = torch.ones(1, 8, 8)
    x = torch.zeros(20, 1, 8, 8)  # on the boundary: each class has probability 1/2 under the noise
    sm = Smoothed(HalfSpace(w, 0.0).eval(), 0.5, 2)
    pred, radius = sm.certify(x, 100, 1000, 0.001, generator=torch.Generator().manual_seed(0))
    assert (pred == -1).all() and (radius == 0).all()
    assert (sm.predict(x, 1000, 0.001, generator=torch.Generator().manual_seed(0)) == -1).all()


def test_certifies_the_digits_mlp(digits, digits_mlp):
    x, y = digits[2][:30], digits[3][:30]
    sm = Smoothed(digits_mlp, 0.12, 10)
    pred, radius = sm.certify(x, 50, 500, 0.001, generator=torch.Generator().manual_seed(0))
    acc = certified_accuracy(pred, radius, y, [0.0, 0.05])
    assert acc[0] >= 0.8 and acc[1] >= 0.5, acc
    pred2 = sm.predict(x, 500, 0.001, generator=torch.Generator().manual_seed(0))
    assert float((pred2 == y).float().mean()) >= 0.8
    assert ((pred2 == pred) | (pred2 == -1) | (pred == -1)).all()


def test_deterministic_under_seed_and_batch_size(digits, digits_mlp):
    x = digits[2][:5]
    sm = Smoothed(digits_mlp, 0.5, 10)
    counts = [sm.sample_counts(x, 64, batch_size=bs, generator=torch.Generator().manual_seed(7)) for bs in (1, 13, 64, 1000)]
    assert all(torch.equal(c, counts[0]) for c in counts) and int(counts[0].sum()) == 5 * 64
    other = sm.sample_counts(x, 64, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other, counts[0])
    a = sm.certify(x, 10, 200, 0.01, batch_size=37, generator=torch.Generator().manual_seed(1))
    b = sm.certify(x, 10, 200, 0.01, batch_size=500, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_batch_size_invariance_for_odd_image_sizes():
    model = HalfSpace(torch.randn(1, 5, 5, generator=torch.Generator().manual_seed(0)), 0.0).eval()
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1))  # 25 elements: not a multiple of 16
    sm = Smoothed(model, 1.0, 2)
    c1 = sm.sample_counts(x, 30, batch_size=1, generator=torch.Generator().manual_seed(2))
    c2 = sm.sample_counts(x, 30, batch_size=29, generator=torch.Generator().manual_seed(2))
    assert torch.equal(c1, c2)


def test_certified_accuracy_by_hand():
    pred = torch.tensor([1, 2, -1, 0])
    radius = torch.tensor([0.3, 1.0, 0.0, 0.7])
    y = torch.tensor([1, 2, 0, 1])
    assert certified_accuracy(pred, radius, y, [0.0, 0.5, 1.0, 1.5]) == [0.5, 0.25, 0.25, 0.0]


def test_smoothing_leaves_the_model_untouched(digits, digits_mlp):
    before = {k: v.clone() for k, v in digits_mlp.state_dict().items()}
    Smoothed(digits_mlp, 0.25, 10).certify(digits[2][:3], 5, 50, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in digits_mlp.state_dict().items())
    assert not digits_mlp.training and not any(p.requires_grad for p in digits_mlp.parameters())


@pytest.mark.parametrize(("call", "match"), [
    (lambda m, x: Smoothed(m, 0.0, 10), "sigma"),
    (lambda m, x: Smoothed(m, 0.5, 1), "num_classes"),
    (lambda m, x: Smoothed(m, 0.5, 10).certify(x, 10, 100, alpha=1.5), "alpha"),
    (lambda m, x: Smoothed(m, 0.5, 10).certify(x, 0, 100), "n0"),
    (lambda m, x: Smoothed(m, 0.5, 10).predict(x, 0), "n"),
    (lambda m, x: Smoothed(m, 0.5, 10).predict(x * float("nan"), 10), "x"),
    (lambda m, x: Smoothed(m, 0.5, 7).predict(x, 10), "logits"),
    (lambda m, x: certified_accuracy(torch.tensor([1]), torch.tensor([0.1, 0.2]), torch.tensor([1]), [0]), "pred"),
    (lambda m, x: clopper_pearson_lower(5, 3, 0.01), "k, n"),
])
def test_bad_inputs_get_one_line_errors(digits, digits_mlp, call, match):
    with pytest.raises(ValueError, match=match) as e:
        call(digits_mlp, digits[2][:2])
    assert "\n" not in str(e.value)


# --- Gaussian-noise training ----------------------------------------------------------------------

def test_gaussian_noise_training_is_deterministic(digits):
    xtr, ytr, xte, yte = digits
    from advlab.models import create_model

    runs = []
    for _ in range(2):
        model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=32, mean=0.3, std=0.4)
        defense = make_training_defense("gaussian-noise", sigma=0.25)
        res = fit(model, (xtr, ytr), (xte, yte), TrainConfig(epochs=3, seed=0), defense=defense, progress=False)
        runs.append(torch.cat([p.flatten() for p in res.model.parameters()]))
    assert torch.equal(runs[0], runs[1]) and res.acc1 > 0.5
    with pytest.raises(ValueError, match="sigma"):
        make_training_defense("gaussian-noise", sigma=-1.0)


# --- Lipschitz ------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1e-3, 0.1, 1.0, 5.0]))
def test_lipschitz_bounds_the_change_of_the_logits(digits_mlp, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 1, 8, 8, generator=g)
    x2 = x + scale * torch.randn(x.shape, generator=g)
    for model in (digits_mlp, _small_conv(seed % 5)):
        lip = lipschitz_constant(model, (1, 8, 8))
        ratio = (model(x) - model(x2)).norm(dim=1) / (x - x2).flatten(1).norm(dim=1)
        assert float(ratio.max()) <= lip * (1 + 1e-5)


def test_lipschitz_bounds_the_jacobian_and_conv_norms_are_exact():
    model = _small_conv(1)
    lip = lipschitz_constant(model, (1, 8, 8))
    for seed in range(5):
        x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        jac = torch.autograd.functional.jacobian(lambda v: model(v.view(1, 1, 8, 8))[0], x.flatten())
        assert float(torch.linalg.matrix_norm(jac, 2)) <= lip * (1 + 1e-5)
    conv = nn.Conv2d(1, 3, 3, padding=1).eval().requires_grad_(False)
    exact = lipschitz_constant(conv, (1, 8, 8))
    jac = torch.autograd.functional.jacobian(lambda v: conv(v.view(1, 1, 8, 8)).flatten(), torch.zeros(64))
    assert exact == pytest.approx(float(torch.linalg.matrix_norm(jac.double(), 2)), rel=1e-6)
    assert lipschitz_constant(conv, (1, 8, 8), max_entries=0) >= exact  # the im2col bound is an upper bound


def test_no_l2_attack_breaks_an_example_inside_its_lipschitz_radius(digits, digits_mlp):
    x, y = digits[2][:200], digits[3][:200]
    pred, radius = lipschitz_radius(digits_mlp, x, y)
    assert (radius[pred != y] == 0).all()
    eps = float(radius[radius > 0].median())
    keep = radius >= eps
    xs, ys = x[keep], y[keep]
    threat = ThreatModel("l2", eps)
    g = torch.Generator().manual_seed(0)
    for name, params in (("pgd", {"steps": 50, "restarts": 2}), ("cw", {"steps": 100})):
        res = get_attack(name)(digits_mlp, xs, ys, threat, generator=g, **params)
        assert (digits_mlp(res.x_adv).argmax(1) == ys).all(), name
        assert not res.success.any(), name


def test_lipschitz_unsupported_layers_get_one_line_errors(digits):
    cases = [
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()), "Tanh"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, dilation=2)), "dilated"),
    ]
    for model, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            lipschitz_constant(model.eval(), (1, 8, 8))
        assert "\n" not in str(e.value)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x.flatten(1)
            return self.fc(v) + v

    with pytest.raises(ValueError, match="chain"):
        lipschitz_constant(Residual(), (1, 8, 8))
    with pytest.raises(ValueError, match="y"):
        lipschitz_radius(_small_conv(), digits[2][:3], torch.tensor([1, 2]))
    assert math.isfinite(lipschitz_constant(_small_conv(), (1, 8, 8)))
