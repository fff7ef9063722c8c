"""Bound propagation (IBP, CROWN-IBP, CROWN): soundness, tightness, errors, certified training."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab.attacks import get_attack
from advlab.certify import build_chain, input_box, logit_bounds, margin_lower_bounds, verified
from advlab.certify.training import CrownIBPTraining, IBPTraining
from advlab.defenses import make_training_defense
from advlab.models import create_model
from advlab.models.nets import Normalize
from advlab.threat import ThreatModel
from advlab.train import TrainConfig, fit

METHODS = ("ibp", "crown-ibp", "crown")


class ConvNet(nn.Module):
    """Every supported layer kind on 1×8×8 inputs, not an nn.Sequential (flatten in forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize(0.3, 0.4)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1, stride=1), nn.ReLU(), nn.AvgPool2d(2), nn.Dropout(0.1),
        )
        self.fc1 = nn.Linear(24, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(self.norm(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def _random_convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = ConvNet()
    bn = net.features[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-1.5, 1.5)  # negative scales too
    return net.eval()


def _points(x: torch.Tensor, eps: float, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` points per example in the clipped box: half uniform, half box corners."""
    lo, hi = input_box(x, eps)
    u = torch.rand(len(x), count, *x.shape[1:], generator=gen)
    corners = (torch.rand(len(x), count, *x.shape[1:], generator=gen) < 0.5).float()
    t = torch.where(torch.arange(count).reshape(1, -1, *[1] * (x.ndim - 1)) < count // 2, u, corners)
    return lo.unsqueeze(1) + t * (hi - lo).unsqueeze(1)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.01, 0.05, 0.2]))
def test_bounds_contain_logits_on_random_points(seed, eps, digits):
    """IBP, CROWN-IBP and CROWN contain the logits and the margins: 4 draws × 4 images × 800 points each."""
    model = _random_convnet(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = digits[2][seed % 300: seed % 300 + 4], digits[3][seed % 300: seed % 300 + 4]
    pts = _points(x, eps, 800, gen)
    with torch.no_grad():
        z = model(pts.flatten(0, 1)).reshape(len(x), 800, 10)
    margins = z.gather(2, y.reshape(-1, 1, 1).expand(-1, 800, 1)) - z
    for method in METHODS:
        lo, hi = logit_bounds(model, x, eps, method=method)
        assert (z >= lo.unsqueeze(1) - 1e-4).all() and (z <= hi.unsqueeze(1) + 1e-4).all(), method
        mlb = margin_lower_bounds(model, x, y, eps, method=method).unsqueeze(1)  # +inf at the true class
        assert ((margins >= mlb - 1e-4) | mlb.isinf()).all(), method


def test_crown_tighter_than_ibp_on_average(digits_mlp, digits):
    """On the digits MLP's margins, CROWN ≥ CROWN-IBP-or-IBP on average (and exact at ε = 0)."""
    x, y = digits[2][:64], digits[3][:64]
    means = {}
    for method in METHODS:
        m = margin_lower_bounds(digits_mlp, x, y, 0.02, method=method)
        means[method] = float(m[m.isfinite()].mean())
    assert means["crown"] >= means["crown-ibp"] - 1e-4 and means["crown"] > means["ibp"], means
    with torch.no_grad():
        z = digits_mlp(x)
    exact = (z.gather(1, y[:, None]) - z).scatter(1, y[:, None], float("inf"))
    for method in METHODS:
        assert torch.allclose(margin_lower_bounds(digits_mlp, x, y, 0.0, method=method), exact, atol=1e-4)


def test_crown_methods_are_never_looser_than_ibp(ibp_mlp, digits):
    """Each bound of crown-ibp and crown is at least IBP's (both are sound, so advlab keeps the larger)."""
    x, y = digits[2][:64], digits[3][:64]
    ibp = margin_lower_bounds(ibp_mlp, x, y, 0.05, method="ibp")
    for method in ("crown-ibp", "crown"):
        m = margin_lower_bounds(ibp_mlp, x, y, 0.05, method=method)
        finite = ibp.isfinite()
        assert bool((m[finite] >= ibp[finite]).all()), method


@pytest.fixture(scope="module")
def ibp_mlp(digits):
    """A digits MLP trained with IBP at ε = 0.1 (verifies a good share of the test set at 0.05)."""
    xtr, ytr, xte, yte = digits
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=64, mean=0.3, std=0.4)
    defense = make_training_defense("ibp", eps=0.1, warmup=0.1, ramp=0.5)
    fit(model, (xtr, ytr), (xte, yte), TrainConfig(epochs=20, batch_size=64, lr=3e-3, seed=0),
        defense=defense, progress=False)
    return model


def test_verified_examples_resist_pgd(ibp_mlp, digits):
    """Soundness: no example verified at ε is misclassified by PGD with restarts at ε."""
    x, y = digits[2], digits[3]
    eps = 0.05
    ok = verified(ibp_mlp, x, y, eps, method="crown")
    assert ok.float().mean() > 0.3, float(ok.float().mean())  # the check has examples to check
    for method in ("ibp", "crown-ibp"):
        assert not (verified(ibp_mlp, x, y, eps, method=method) & ~ok).any(), method  # CROWN ⊇ here
    res = get_attack("pgd")(ibp_mlp, x[ok], y[ok], ThreatModel("linf", eps), steps=50, restarts=3,
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ibp_mlp(res.x_adv).argmax(1) == y[ok]).all()


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    with pytest.raises(ValueError, match=r"unsupported layer '2' \(Tanh\)"):
        verified(net, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.1)


def test_residual_is_refused():
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 64)
            self.out = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.flatten(1)
            return self.out(h + self.fc(h))

    with pytest.raises(ValueError, match="not a chain"):
        build_chain(Res(), (1, 8, 8))


def test_batchnorm_in_train_mode_is_refused_and_model_untouched():
    model = _random_convnet(0).train()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"'features.1' \(BatchNorm2d\) is in train mode"):
        verified(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.1)
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for method in METHODS:
        verified(model, torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]), 0.1, method=method)
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lenet_chain_matches_model():
    model = create_model("lenet").eval()
    x = torch.rand(3, 1, 28, 28)
    ops = build_chain(model, (1, 28, 28))
    assert [type(op).__name__ for op in ops][:4] == ["ScaleShiftOp", "ConvOp", "ReLUOp", "MaxPoolOp"]
    z = x
    for op in ops:
        z = op.forward(z)
    with torch.no_grad():
        assert torch.allclose(z, model(x), atol=1e-5)


def test_training_schedules():
    ibp = IBPTraining(eps=0.2, warmup=0.1, ramp=0.5, kappa_end=0.5)
    assert ibp.eps_at(0.05) == 0 and ibp.kappa_at(0.05) == 1
    assert ibp.eps_at(0.35) == pytest.approx(0.1) and ibp.kappa_at(0.35) == pytest.approx(0.75)
    assert ibp.eps_at(0.9) == pytest.approx(0.2) and ibp.kappa_at(0.9) == pytest.approx(0.5)
    crown = CrownIBPTraining(eps=0.2, warmup=0.1, ramp=0.5, schedule="smooth")
    assert crown.beta_at(0.05) == 1 and crown.beta_at(0.9) == 0 and crown.kappa_at(0.9) == 0
    assert crown.eps_at(0.35) == pytest.approx(0.1)  # smoothstep is symmetric about the middle
    with pytest.raises(ValueError, match="warmup \\+ ramp"):
        IBPTraining(warmup=0.6, ramp=0.6)


def test_crown_ibp_training_step_is_differentiable(digits):
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=16, mean=0.3, std=0.4)
    x, y = digits[0][:32], digits[1][:32]
    loss, logits = CrownIBPTraining(eps=0.1).step(model, x, y, torch.Generator(), 0.3, torch.arange(32))
    loss.backward()
    assert logits.shape == (32, 10) and all(p.grad is not None for p in model.parameters())


def test_certify_cli(digits_ckpt, tmp_path, capsys):
    from advlab.cli import main

    out = tmp_path / "c.json"
    assert main(["certify", "--model", str(digits_ckpt), "--method", "ibp,crown", "--eps", "0,0.01",
                 "--n", "50", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clean accuracy" in text and "crown" in text
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["eps"] for r in rows] == [0, 0.01, 0, 0.01]
    assert rows[0]["verified"] == pytest.approx(json.loads(out.read_text())["clean_acc"])


def test_train_cli_with_ibp_defense(tmp_path, capsys):
    from advlab.cli import main
    from advlab.models import load_model

    out = tmp_path / "ibp.safetensors"
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--defense", "ibp", "-o", "eps=0.05",
                 "-o", "schedule=\"smooth\"", "--epochs", "2", "--no-progress", "--out", str(out)]) == 0
    meta = load_model(str(out)).advlab_meta
    assert meta["defense"]["name"] == "ibp" and meta["defense"]["eps"] == 0.05
    assert meta["defense"]["schedule"] == "smooth"


@pytest.mark.slow
def test_shipped_certified_model_verifies_at_0_1():
    """The shipped IBP-trained model: IBP-verified accuracy ≥ 0.95 at L∞ ε = 0.1 on the full MNIST test set."""
    from advlab.data import load_dataset
    from advlab.models import load_model

    model = load_model("cnn-mnist-ibp01")
    x, y = load_dataset("mnist", "test")
    assert float(verified(model, x, y, 0.1, method="ibp", batch_size=1000).float().mean()) >= 0.95


@pytest.mark.parametrize("last", [nn.Softmax(dim=1), nn.LogSoftmax(dim=-1), "softmax", "log_softmax"])
def test_a_final_softmax_is_left_out_of_the_chain(last, digits_mlp, digits):
    """Softmax keeps each row's order: the certificate of the model behind it is the logits' own."""

    class Ends(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = digits_mlp
            self.last = last if isinstance(last, nn.Module) else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.net(x)
            return self.last(z) if self.last is not None else getattr(z, str(last))(1)

    _, _, x, y = digits
    x, y = x[:50], y[:50]
    for method in ("ibp", "crown"):
        want = margin_lower_bounds(digits_mlp, x, y, 0.05, method=method)
        assert torch.equal(margin_lower_bounds(Ends().eval(), x, y, 0.05, method=method), want)


def test_a_softmax_that_is_not_last_is_refused(digits_mlp):
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = digits_mlp

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 1e4 * self.net(x).softmax(1)

    with pytest.raises(ValueError, match=r"unsupported layer 'softmax'"):
        build_chain(Scaled().eval(), (1, 8, 8))


class _FunctionalNet(nn.Module):
    """A user's net in the functional style: F.max_pool2d / F.avg_pool2d and a view that keeps the batch."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 10)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8) if self.how != "tutorial" else (x - 0.3) / 0.4  # (PyTorch's tutorial normalises)
        h = nn.functional.relu(self.conv(x))
        h = nn.functional.max_pool2d(h, 2) if self.how != "avg" else nn.functional.avg_pool2d(h, 2)
        if self.how == "size":
            h = h.view(h.size(0), -1)
        elif self.how == "tutorial":
            h = h.view(x.size(0), -1)  # (the size of the input, not of h: the same batch)
        elif self.how == "shape":
            h = h.reshape(h.shape[0], -1)
        elif self.how == "tuple":
            h = torch.reshape(h, (h.size(0), -1))
        else:
            h = h.view(-1, 64)
        return self.fc(h)


@pytest.mark.parametrize("how", ["size", "shape", "tuple", "fixed", "avg", "tutorial"])
def test_functional_pools_and_reshapes_are_read_like_their_modules(how, digits):
    """Also the tutorial's arithmetic normalisation, read as Normalize (tests/test_certify_user_models.py)."""
    net = _FunctionalNet(how).eval()
    pool = nn.AvgPool2d(2) if how == "avg" else nn.MaxPool2d(2)
    norm = [Normalize(0.3, 0.4)] if how == "tutorial" else []
    twin = nn.Sequential(*norm, net.conv, nn.ReLU(), pool, nn.Flatten(), net.fc).eval()
    _, _, x, y = digits
    x, y = x[:40], y[:40]
    with torch.no_grad():
        h = x
        for op in build_chain(net, (1, 8, 8)):
            h = op.forward(h)
        assert torch.equal(h, net(x)) if how != "tutorial" else torch.allclose(h, net(x), atol=1e-5)
    for method in ("ibp", "crown"):  # (the leading view is one more interval step: equal up to rounding)
        got, want = (margin_lower_bounds(m, x, y, 0.03, method=method) for m in (net, twin))
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_reshape_that_mixes_examples_is_refused():
    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(-1, 128))  # two 8×8 images per row

    with pytest.raises(ValueError, match=r"unsupported layer 'reshape'"):
        build_chain(Mixer(), (1, 8, 8))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_model_is_refused_in_one_line_naming_the_way_out(digits_mlp):
    scripted = torch.jit.trace(copy.deepcopy(digits_mlp).eval(), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"^certify: .* is a TorchScript model, .*certify the nn\.Module") as err:
        build_chain(scripted, (1, 8, 8))
    assert "\n" not in str(err.value)
