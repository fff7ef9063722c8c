"""KD+BU and LID detectors (issue 16) on the 8×8 digits MLP: separation, files, determinism, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab import ThreatModel
from advlab.attacks import get_attack
from advlab.detect import load_detector, make_detector, save_detector
from advlab.detect.dropout import dropout_layers, mc_softmax, uncertainty, with_dropout
from advlab.detect.kdbu import KernelDensityUncertainty
from advlab.detect.lid import mle_lid
from advlab.detect.logistic import LogisticRegression
from advlab.metrics import roc_auc
from advlab.models.blackbox import BlackBox

# "Well above chance": both papers report ROC-AUC ≥ 0.9 for their combined detectors against FGSM/BIM
# on MNIST; on the 64-pixel digits MLP with ε = 0.2 we require ≥ 0.8 (measured: KD+BU 0.95 / 0.91,
# LID 0.90 / 0.86 against FGSM / PGD), and the issue's ≥ 0.95 for clean vs heavy noise.
SEPARATES = 0.8


def _attack(model, name, x, y, seed):
    res = get_attack(name)(model, x, y, ThreatModel("linf", 0.2), generator=torch.Generator().manual_seed(seed))
    ok = res.success & (model(x).argmax(1) == y)
    return res.x_adv[ok]


@pytest.fixture(scope="module")
def sets(digits, digits_mlp):
    """Clean (fit), FGSM/PGD adversarial and noisy sets from disjoint halves of the training split, and test sets."""
    xtr, ytr, xte, yte = digits
    half = len(xtr) // 2
    gen = torch.Generator().manual_seed(1)
    noisy = (xtr[half:] + 0.2 * torch.randn(xtr[half:].shape, generator=gen)).clamp(0, 1)
    return {"clean": xtr[:half], "noisy": noisy, "fgsm": _attack(digits_mlp, "fgsm", xtr[half:], ytr[half:], 0),
            "pgd": _attack(digits_mlp, "pgd", xtr[half:], ytr[half:], 0), "test": xte,
            "test_fgsm": _attack(digits_mlp, "fgsm", xte, yte, 2), "test_pgd": _attack(digits_mlp, "pgd", xte, yte, 2)}


@pytest.fixture(scope="module")
def fitted(digits_mlp, sets):
    """One kdbu (T = 20 dropout passes) and one lid detector per attack, fitted on the training half."""
    return {(spec, atk): make_detector(spec).fit(digits_mlp, sets["clean"], sets[atk], sets["noisy"])
            for spec in ("kdbu:passes=20", "lid") for atk in ("fgsm", "pgd")}


@pytest.mark.parametrize("spec", ["kdbu:passes=20", "lid"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_detector_separates_attacks_from_clean(fitted, sets, spec, attack):
    det = fitted[(spec, attack)]
    auc = roc_auc(det.score(sets[f"test_{attack}"]), det.score(sets["test"]))
    assert auc >= SEPARATES, f"{spec} vs {attack}: AUC {auc:.3f}"


@pytest.mark.parametrize("spec", ["kdbu:passes=20", "lid"])
def test_detector_separates_heavy_noise(digits_mlp, sets, spec):
    gen = torch.Generator().manual_seed(3)
    heavy = (sets["noisy"] + 0.6 * torch.randn(sets["noisy"].shape, generator=gen)).clamp(0, 1)
    det = make_detector(spec).fit(digits_mlp, sets["clean"], heavy)
    test_heavy = (sets["test"] + 0.8 * torch.randn(sets["test"].shape, generator=gen)).clamp(0, 1)
    auc = roc_auc(det.score(test_heavy), det.score(sets["test"]))
    assert auc >= 0.95, f"{spec}: clean vs heavy noise AUC {auc:.3f}"


@pytest.mark.parametrize("spec", ["kdbu:passes=20", "lid"])
def test_round_trip_is_bit_identical(tmp_path, fitted, digits_mlp, sets, spec):
    det = fitted[(spec, "fgsm")]
    det.calibrate(sets["test"][:100], fpr=0.05)
    save_detector(det, tmp_path / "d.safetensors")
    back = load_detector(tmp_path / "d.safetensors", digits_mlp)
    assert type(back) is type(det) and back.config() == det.config()
    assert back.state_dict().keys() == det.state_dict().keys()
    assert all(torch.equal(v, det.state_dict()[k]) for k, v in back.state_dict().items())
    assert torch.equal(back.score(sets["test"]), det.score(sets["test"]))
    assert torch.equal(back.reject(sets["test_fgsm"]), det.reject(sets["test_fgsm"]))


@pytest.mark.parametrize("spec", ["kdbu:passes=5:epochs=1", "lid"])
def test_model_untouched_and_deterministic(digits_mlp, sets, spec):
    before = copy.deepcopy(digits_mlp.state_dict())
    flags = (digits_mlp.training, [p.requires_grad for p in digits_mlp.parameters()])
    a = make_detector(spec).fit(digits_mlp, sets["clean"], sets["fgsm"], sets["noisy"])
    b = make_detector(spec).fit(digits_mlp, sets["clean"], sets["fgsm"], sets["noisy"])
    assert torch.equal(a.score(sets["test"]), b.score(sets["test"]))
    assert torch.equal(a.score(sets["test"]), a.score(sets["test"]))  # score reseeds any dropout draws
    assert all(torch.equal(v, digits_mlp.state_dict()[k]) for k, v in before.items())
    assert (digits_mlp.training, [p.requires_grad for p in digits_mlp.parameters()]) == flags
    assert not dropout_layers(digits_mlp) and "model" not in dict(a.named_children())


@pytest.mark.parametrize("spec", ["kdbu:passes=20", "lid"])
def test_score_is_differentiable(fitted, sets, spec):
    x = sets["test"][:8].clone().requires_grad_(True)
    fitted[(spec, "pgd")](x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bu_trains_a_dropout_variant_only_when_needed(fitted, digits_mlp, sets):
    det = fitted[("kdbu:passes=20", "fgsm")]
    assert det.dropnet is not None and len(dropout_layers(det.dropnet)) == 2 and det.train_seconds > 0
    assert not dropout_layers(digits_mlp)  # the user's classifier is not changed
    with_drop = with_dropout(digits_mlp, 0.3)  # a classifier that has dropout: sampled as it is, in eval mode
    own = make_detector("kdbu:passes=5").fit(with_drop, sets["clean"], sets["fgsm"])
    assert own.dropnet is None and not with_drop.training
    assert not any(k.startswith("dropnet.") for k in own.state_dict())


def test_mc_dropout_expansion_matches_separate_passes(digits_mlp, sets):
    net = with_dropout(digits_mlp, 0.5)
    x = sets["test"][:16]
    one = mc_softmax(net, x, 6, torch.Generator().manual_seed(0))
    assert one.shape == (6, 16, 10) and torch.allclose(one.sum(-1), torch.ones(6, 16))
    assert not torch.equal(one[0], one[1])  # the draws differ
    assert (uncertainty(one) >= -1e-7).all()
    with pytest.raises(ValueError, match=r"no nn\.Dropout"):
        mc_softmax(digits_mlp, x, 2, torch.Generator())


def test_bad_inputs_get_one_line_errors(fitted, digits_mlp, sets):
    det = fitted[("lid", "fgsm")]
    with pytest.raises(ValueError, match=r"expected inputs of shape N×1×8×8"):
        det.score(torch.zeros(3, 1, 28, 28))
    with pytest.raises(TypeError, match="floating-point"):
        det.score(torch.zeros(3, 1, 8, 8, dtype=torch.long))
    for spec in ("kdbu", "lid"):
        with pytest.raises(TypeError, match=r"nn\.Module classifier"):
            make_detector(spec).fit(BlackBox(digits_mlp, output="logits"), sets["clean"], sets["fgsm"])
        with pytest.raises(ValueError, match="x_adv has examples of shape"):
            make_detector(spec).fit(digits_mlp, sets["clean"], torch.zeros(4, 1, 9, 9))
        with pytest.raises(RuntimeError, match="not fitted"):
            make_detector(spec).score(sets["test"])
    with pytest.raises(ValueError, match="use: expected one of"):
        make_detector("kdbu:use=kde")
    with pytest.raises(ValueError, match="k: expected fewer"):
        make_detector("lid:k=100")


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression as Sk

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1], dtype=torch.float64)
    y = ((x[:, 0] + 0.2 * x[:, 1] + torch.randn(300, generator=gen, dtype=torch.float64)) > 0.5).double()
    ours = LogisticRegression(3).fit(x, y, l2=0.01)
    z = ((x - ours.mean) / ours.std).numpy()
    sk = Sk(C=1 / (0.01 * len(y)), class_weight="balanced", tol=1e-12, max_iter=10000).fit(z, y.numpy())
    assert torch.allclose(ours.weight, torch.tensor(sk.coef_[0]), atol=1e-5)
    assert float(ours.bias) == pytest.approx(float(sk.intercept_[0]), abs=1e-5)


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 8), st.integers(0, 1000))
def test_mle_lid_recovers_the_dimension_of_a_subspace(dim, seed):
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(24, dim, generator=gen, dtype=torch.float64)).Q
    ref = torch.rand(4000, dim, generator=gen, dtype=torch.float64) @ basis.T
    query = (0.25 + 0.5 * torch.rand(200, dim, generator=gen, dtype=torch.float64)) @ basis.T
    estimate = float(mle_lid(query, ref, 20).median())
    assert estimate == pytest.approx(dim, rel=0.25)


def test_kd_leaves_each_clean_reference_out_of_its_own_density(digits_mlp, sets):
    det = KernelDensityUncertainty(use="kd").fit(digits_mlp, sets["clean"], sets["fgsm"])
    assert len(det.ref) == len(sets["clean"])  # under the cap: every clean image is a reference
    x = sets["clean"][:50]
    with torch.no_grad():  # the reference is grouped by predicted class, in image order within a class
        rows = torch.argsort(torch.argsort(digits_mlp(sets["clean"]).argmax(1), stable=True))
        with_self, without = det.kd(x), det.kd(x, exclude=rows[:50])
    assert (without < with_self).all() and torch.isfinite(without).all()
    assert det.dropnet is None  # KD alone trains no dropout variant


def test_cross_validated_penalty_is_on_the_grid_and_saved(fitted):
    from advlab.detect.logistic import L2_GRID

    x = torch.cat([torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                   torch.randn(100, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 1.5])
    y = torch.cat([torch.zeros(200), torch.ones(100)])
    a, b = LogisticRegression(2).fit_cv(x, y), LogisticRegression(2).fit_cv(x, y)
    assert float(a.l2) in L2_GRID and torch.equal(a.weight, b.weight) and float(a.weight[0]) > 0
    for det in fitted.values():  # the detectors' default: cross-validated, kept with the regression
        assert float(det.reg.l2) in L2_GRID and "reg.l2" in det.state_dict()
