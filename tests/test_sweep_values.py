"""Values as a sweep or a user's wrapper hands them: NumPy and 0-d tensor scalars as parameters, class indices and
evaluation settings; features and labels as NumPy arrays; a call without its threat model; channels-last training
sets; and a wrapper built around an eval-mode model, whose training flag changes nothing."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import advlab
from advlab import poison
from advlab.attacks import ModelInTrainingMode, get_attack, pgd
from advlab.attacks.modulecopy import reads_training
from evaluation_helpers import without_seconds

LINF = advlab.ThreatModel("linf", eps=0.1)


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:12], y[:12]


def run_pgd(model, x, y, **params):
    return pgd(model, x, y, LINF, generator=torch.Generator().manual_seed(0), **params)


@pytest.mark.parametrize(("params", "plain"), [
    ({"steps": np.int64(7)}, {"steps": 7}),
    ({"steps": torch.tensor(7)}, {"steps": 7}),
    ({"step_size": np.float32(0.015625)}, {"step_size": 0.015625}),
    ({"step_size": torch.tensor(0.015625)}, {"step_size": 0.015625}),
])
def test_numpy_and_tensor_scalars_are_the_numbers_they_hold(lenet, batch, params, plain):
    """``for steps in np.arange(...)``: the same x_adv as the Python number; the attack is bound to a plain number."""
    x, y = batch
    got, want = run_pgd(lenet, x, y, **params), run_pgd(lenet, x, y, **plain)
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.success, want.success)
    bound = get_attack("pgd").bind(params)
    assert bound == plain and all(type(v) is type(plain[k]) for k, v in bound.items())
    json.dumps(bound)  # (records store the parameters as JSON)


@pytest.mark.parametrize("value", [np.float64(7.0), torch.tensor(7.0), "7", True])
def test_a_scalar_that_is_no_integer_is_still_refused_for_an_integer(lenet, batch, value):
    with pytest.raises(TypeError, match=r"^steps: expected an integer"):
        run_pgd(lenet, *batch, steps=value)


def test_evaluate_reads_numpy_integers_for_its_counts(lenet, batch):
    x, y = batch
    kw = {"attacks": ["fgsm"], "eps": [0.1], "progress": False, "checks": False}
    got = advlab.evaluate(lenet, (x, y), n=np.int64(8), batch_size=np.int64(4), seed=np.int64(0), **kw)
    want = advlab.evaluate(lenet, (x, y), n=8, batch_size=4, seed=0, **kw)
    assert without_seconds(got.to_records()) == without_seconds(want.to_records())


def test_a_threat_model_given_as_eps_names_evaluates_own_arguments(lenet, batch):
    with pytest.raises(TypeError, match=r"a ThreatModel's budget is eps=0.1 with norm='linf', evaluate's own"):
        advlab.evaluate(lenet, batch, attacks=["fgsm"], eps=[LINF], progress=False, checks=False)


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x, y: pgd(m, x, y, eps=0.1),
     r"^pgd: missing its threat model, the fourth argument: pgd\(model, x, y, advlab\.ThreatModel\('linf', "
     r"eps=0\.1\)\)"),
    (lambda m, x, y: pgd(m, x, y, eps=8 / 255, norm="L2"), r"advlab\.ThreatModel\('l2', eps=0\.0313725\)"),
    (lambda m, x, y: get_attack("cw")(m, x, y), r"^cw: missing its threat model.*ThreatModel\('l2', eps=\.\.\.\)"),
    (lambda m, x, y: pgd(m, x, y, 0.1),
     r"^threat: expected a ThreatModel, got float: advlab\.ThreatModel\('linf', eps=0\.1\)$"),
    (lambda m, x, y: pgd(m, x, y, "Linf"), r"^threat: expected a ThreatModel, got str: advlab\.ThreatModel\('linf'"),
])
def test_an_attack_called_without_its_threat_model_shows_the_call(lenet, batch, call, message):
    """A torchattacks/ART user's ``pgd(model, x, y, eps=0.1)``: one line with the call written advlab's way."""
    with pytest.raises(TypeError, match=message) as caught:
        call(lenet, *batch)
    assert "\n" not in str(caught.value)


def test_poisoning_reads_numpy_class_indices_and_label_tensors():
    x, y = torch.rand(60, 1, 8, 8), torch.arange(60) % 6
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    want = poison.pair_flip(x, y, fraction=0.1, source=1, target=4, generator=g())
    for source, target in ((np.int64(1), np.int32(4)), (y[1], torch.tensor(4))):
        got = poison.pair_flip(x, y, fraction=0.1, source=source, target=target, generator=g())
        assert torch.equal(got.y, want.y) and torch.equal(got.x, want.x)
    with pytest.raises(TypeError, match=r"^target: expected a class index \(an integer\), got float 4.0"):
        poison.badnets(x, y, fraction=0.1, target=np.float64(4.0), generator=g())


@pytest.mark.parametrize("detector", [poison.spectral_signatures, poison.robust_spectral])
def test_poison_detectors_read_numpy_features_and_labels(detector):
    feats, y = torch.randn(80, 6, generator=torch.Generator().manual_seed(0)), torch.arange(80) % 2
    want = detector(feats, y)
    got = detector(feats.numpy(), y.numpy())
    assert torch.equal(got.flagged, want.flagged) and torch.allclose(got.scores, want.scores)
    with pytest.raises(ValueError, match=r"^y: expected shape \(80,\)"):
        detector(feats, y[:79])


@pytest.mark.parametrize(("shape", "hint"), [
    ((10, 8, 8, 3), r"looks channels-last \(N×H×W×C\): x\.permute\(0, 3, 1, 2\)$"),
    ((10, 8, 8), r"\(grey images without a channel axis: x\.unsqueeze\(1\)\)$"),
])
def test_a_training_set_in_another_layout_is_named_with_its_fix(shape, hint):
    with pytest.raises(ValueError, match=r"^x: expected images N×C×H×W, got shape .*" + hint):
        poison.badnets(torch.rand(shape), torch.arange(10) % 2, fraction=0.2, target=0)


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.1307) / 0.3081


class MCDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(self.fc(x.flatten(1)), 0.2, self.training)


def test_reads_training_tells_the_flags_that_change_a_forward():
    assert not any(map(reads_training, (nn.Sequential, nn.DataParallel, nn.Linear, nn.Conv2d, Normalize)))
    assert all(map(reads_training, (nn.Dropout, nn.BatchNorm2d, nn.RReLU, nn.MultiheadAttention, MCDropout)))


@pytest.mark.parametrize("wrap", [nn.DataParallel, lambda m: nn.Sequential(nn.Identity(), m)])
def test_a_wrapper_made_around_an_eval_mode_model_is_attacked_quietly_and_alike(lenet, batch, wrap):
    """``nn.DataParallel(model.eval())`` is in training mode in name only: no warning, the same x_adv."""
    wrapped = wrap(lenet)
    assert wrapped.training and not lenet.training
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelInTrainingMode)
        got = run_pgd(wrapped, *batch)
    assert torch.equal(got.x_adv, run_pgd(lenet, *batch).x_adv)
    assert wrapped.training and not lenet.training  # (the user's flags are left as they were)


def test_a_wrapper_whose_flag_is_read_still_warns(lenet, batch):
    dropout_around = nn.Sequential(nn.Dropout(0.5), lenet)
    with pytest.warns(ModelInTrainingMode, match="Sequential is in training mode"):
        run_pgd(dropout_around, *batch)


@pytest.fixture(scope="module")
def certified_net():
    return advlab.load_model("cnn-mnist-ibp01")


@pytest.mark.parametrize("eps", [np.float32(0.1), torch.tensor(0.1), np.float64(0.1)])
def test_certify_reads_a_sweeps_budget(certified_net, batch, eps):
    from advlab.certify import verified

    x, y = batch
    want = verified(certified_net, x, y, 0.1)
    assert torch.equal(verified(certified_net, x, y, eps), want)
    assert torch.equal(verified(certified_net, x, y.numpy(), eps, method="IBP"), want)


@pytest.mark.parametrize(("change", "error", "message"), [
    (lambda x, y: (x.numpy(), y, {}), TypeError, r"^x: expected a torch\.Tensor, got ndarray \(torch\.from_numpy\(x\)\)$"),
    (lambda x, y: (x * 255, y, {}), ValueError, r"^x: values must lie in the bounds \[0\.0, 1\.0\].*divide the images by 255"),
    (lambda x, y: (x, y[:3], {}), ValueError, r"^y: expected shape \(12,\) to match the batch, got \(3,\)$"),
    (lambda x, y: (x, y, {"method": "crwn"}), ValueError, r"got 'crwn' \(did you mean 'crown', 'crown-ibp'\?\)$"),
    (lambda x, y: (x, y, {"method": None}), TypeError, r"^method: expected one of 'ibp', 'crown-ibp', 'crown', got NoneType$"),
])
def test_certify_refuses_in_one_line(certified_net, batch, change, error, message):
    from advlab.certify import verified

    x, y, kw = change(*batch)
    with pytest.raises(error, match=message):
        verified(certified_net, x, y, 0.1, **kw)


def test_evaluates_params_from_a_sweep_are_stored_as_plain_numbers(lenet, batch, tmp_path):
    """``params={"pgd": {"steps": np.int64(5)}}`` ran into the store's JSON ("float32 is not JSON serializable")."""
    x, y = batch
    kw = {"attacks": ["pgd"], "eps": [0.1], "progress": False, "checks": False}
    got = advlab.evaluate(lenet, (x, y), params={"pgd": {"steps": np.int64(5), "step_size": np.float32(0.5),
                                                         "early_stop": np.bool_(False)}}, out=tmp_path / "a", **kw)
    want = advlab.evaluate(lenet, (x, y), params={"pgd": {"steps": 5, "step_size": 0.5, "early_stop": False}},
                           out=tmp_path / "b", **kw)
    assert got.config["params"] == want.config["params"]
    assert [type(v) for v in got.config["params"]["pgd"].values()] == [int, float, bool]
    assert without_seconds(got.to_records()) == without_seconds(want.to_records())


@pytest.mark.parametrize(("takes", "shape", "fix"), [
    (3, (6, 1, 12, 12), r"\(grey images as RGB: x\.repeat\(1, 3, 1, 1\)\)$"),
    (1, (6, 3, 12, 12), r"\(colour images as grey: x\.mean\(1, keepdim=True\), or luminance weights"),
    (3, (6, 4, 12, 12), r"\(RGBA images without alpha: x\[:, :3\]\)$"),
])
def test_images_with_another_channel_count_name_the_conversion(takes, shape, fix):
    """Grey MNIST into an RGB network (or the reverse): one line with the conversion, no fast-view warning first."""
    net = nn.Sequential(nn.Conv2d(takes, 4, 3), nn.Flatten(), nn.Linear(4 * 10 * 10, 10)).eval()
    x, y = torch.rand(shape), torch.zeros(6, dtype=torch.long)
    message = rf"the model's first convolution takes {takes}-channel images, the images of {'×'.join(map(str, shape[1:]))}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"^x: {message} have {shape[1]} " + fix):
            pgd(net, x, y, LINF)
        with pytest.raises(ValueError, match=rf"^data: {message}"):
            advlab.evaluate(net, (x, y), attacks=["fgsm"], eps=[0.1], progress=False, checks=False)


def test_a_deeper_layers_channel_mismatch_is_the_models_own_error():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(5, 4, 3), nn.Flatten()).eval()
    with pytest.warns(UserWarning, match="fast view of Sequential not used"), pytest.raises(RuntimeError,
                                                                                          match="expected input"):
        pgd(net, torch.rand(4, 1, 12, 12), torch.zeros(4, dtype=torch.long), LINF)


@pytest.mark.parametrize(("takes", "fix"), [
    (3 * 144, r"grey images as RGB: x\.repeat\(1, 3, 1, 1\)$"),
    (400, r"images of the size it was trained on$"),
])
def test_images_of_another_size_than_a_linear_model_takes_name_it(takes, fix):
    net = nn.Sequential(nn.Flatten(), nn.Linear(takes, 10)).eval()
    x, y = torch.rand(6, 1, 12, 12), torch.zeros(6, dtype=torch.long)
    message = rf"the model's first linear layer takes {takes} values per image, the images have 144 \(1×12×12\): "
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"^x: {message}" + fix):
            pgd(net, x, y, LINF)


def test_evaluate_without_data_says_that_it_read_mnist_for_a_model_that_names_no_dataset():
    """``evaluate(my_cifar_net)``: the model's complaint, and that the data was MNIST because none was given."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    with pytest.raises(ValueError, match=r"^data: the model's first convolution takes 3-channel images, the images of "
                                         r"1×28×28 have 1 .*; no data was given, so evaluate read mnist's test split "
                                         r"\(the model records no dataset\): pass your images as data=\(x, y\)"):
        advlab.evaluate(net, attacks=["fgsm"], eps=[0.1], n=4, progress=False, checks=False)
    fits = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    assert advlab.evaluate(fits, attacks=["fgsm"], eps=[0.1], n=4, progress=False, checks=False).rows


def test_params_under_an_attacks_name_in_another_case_are_that_attacks(lenet, batch):
    """``params={"PGD": {"steps": 3}}`` was checked against pgd, then never applied: PGD ran its 40 steps."""
    kw = {"attacks": ["pgd"], "eps": [0.1], "progress": False, "checks": False}
    got = advlab.evaluate(lenet, batch, params={"PGD": {"steps": 3}}, **kw)
    assert got.config["params"] == {"pgd": {"steps": 3}}
    assert got.config["effective_params"]["pgd|linf|0.1"]["steps"] == 3
    with pytest.raises(ValueError, match=r"^params: two tables name pgd; give its parameters once$"):
        advlab.evaluate(lenet, batch, params={"PGD": {"steps": 3}, "pgd": {"steps": 4}}, **kw)


def test_normalisation_statistics_in_0_255_units_are_named():
    """mmcv's mean (123.675, 116.28, 103.53) on [0, 1] images: every input far outside the training range, silently."""
    from advlab.models import NormalizationUnits, with_normalization

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.warns(NormalizationUnits, match=r"look like 0–255 units: for images in \[0, 1\] divide both by 255"):
        with_normalization(net, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizationUnits)
        with_normalization(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        wrong = with_normalization(net, [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^with_normalization: 2 means and stds, one per channel, for images of 3 "):
        wrong(torch.rand(2, 3, 8, 8))
