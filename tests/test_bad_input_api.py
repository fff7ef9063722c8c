"""The bad-input catalogue, API half: what a user can hand the Python API wrongly, and the one-line error.

The CLI half is tests/test_bad_input.py; the helpers are in tests/bad_input_helpers.py.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

import advlab
from advlab._paths import check_out_dir, check_out_file
from advlab.attacks import get_attack
from advlab.data import load_dataset
from advlab.models import (
    BlackBox,
    CheckpointError,
    check_input_shape,
    create_model,
    load_model,
    parse_defense,
    read_metadata,
    save_checkpoint,
    wrap_defense,
)
from advlab.models.wrappers import GaussianSmoothing, MedianSmoothing
from bad_input_helpers import one_line_message, save_checkpoint_raw

# --------------------------------------------------------------------------------------------
# the API catalogue


@pytest.fixture(scope="module")
def batch():
    x, y = load_dataset("mnist", "test")
    return x[:4].clone(), y[:4].clone()


def threat(eps=0.1, norm="linf"):
    return advlab.ThreatModel(norm, eps)


@pytest.mark.parametrize(("kwargs", "fragments"), [
    ({"norm": "linf", "eps": -0.1}, ["eps: expected a number >= 0, got -0.1"]),
    ({"norm": "linf", "eps": float("nan")}, ["eps", "nan"]),
    ({"norm": "l3", "eps": 0.1}, ["norm", "did you mean"]),
    ({"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)}, ["bounds: expected finite lo < hi"]),
    ({"norm": "linf", "eps": 0.1, "bounds": (0.0, float("inf"))}, ["bounds"]),
], ids=["eps-negative", "eps-nan", "norm-unknown", "bounds-reversed", "bounds-infinite"])
def test_threat_model_refuses(kwargs, fragments):
    with pytest.raises(ValueError, match=re.escape(fragments[0])) as e:
        advlab.ThreatModel(**kwargs)
    one_line_message(e, *fragments)


def _bad_inputs(x, y):
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return {
        "x-flat": (x.flatten(), y, ["x: expected a batch"]),
        "x-integer": ((x * 255).long(), y, ["x: expected a floating-point tensor"]),
        "x-out-of-bounds": (x * 2, y, ["x: values must lie in the bounds [0.0, 1.0]"]),
        "x-nan": (nan, y, ["x: contains NaN"]),
        "x-empty": (x[:0], y[:0], ["x: expected a non-empty batch"]),
        "x-not-a-tensor": (x.numpy(), y, ["x: expected a torch.Tensor"]),
        "y-wrong-length": (x, y[:3], ["y: expected shape (4,)"]),
        "y-float": (x, y.float(), ["y: expected integer labels"]),
    }


@pytest.mark.parametrize("case", ["x-flat", "x-integer", "x-out-of-bounds", "x-nan", "x-empty", "x-not-a-tensor",
                                  "y-wrong-length", "y-float"])
def test_attack_refuses_bad_images_and_labels(lenet, batch, case):
    x, y, fragments = _bad_inputs(*batch)[case]
    with pytest.raises((ValueError, TypeError)) as e:
        get_attack("pgd")(lenet, x, y, threat(), steps=2)
    one_line_message(e, *fragments)


@pytest.mark.parametrize(("attack", "eps", "params", "fragments"), [
    ("pgd", float("inf"), {}, ["needs a finite eps"]),
    ("pgd", 0.1, {"stepz": 3}, ["unexpected parameter(s) stepz", "did you mean 'steps'"]),
    ("pgd", 0.1, {"steps": "10"}, ["steps: expected an integer"]),
    ("pgd", 0.1, {"steps": 0}, ["steps: expected an integer >= 1, got 0"]),
    ("pgd", 0.1, {"loss": "hinge"}, ["loss: expected one of 'ce', 'margin', 'dlr'"]),
    ("pgd", 0.1, {"step_size": float("nan")}, ["step_size"]),
], ids=["inf-eps", "unknown-param", "param-type", "param-range", "param-choice", "param-nan"])
def test_attack_refuses_bad_parameters(lenet, batch, attack, eps, params, fragments):
    with pytest.raises((ValueError, TypeError)) as e:
        get_attack(attack)(lenet, *batch, threat(eps), **params)
    one_line_message(e, *fragments)


def test_labels_only_black_box_refused_by_score_based_attack(lenet, batch):
    box = BlackBox(lambda z: lenet(z).argmax(1), output="labels")
    with pytest.raises(ValueError, match="score-based") as e:
        get_attack("square")(box, *batch, threat())
    one_line_message(e, "square is score-based", "labels-only BlackBox")
    assert box.total_queries == 0


def test_black_box_refused_by_white_box_attack(lenet, batch):
    box = BlackBox(lambda z: lenet(z))
    with pytest.raises(TypeError) as e:
        get_attack("pgd")(box, *batch, threat())
    one_line_message(e, "pgd is white-box", "needs a differentiable torch model")
    assert box.total_queries == 0


@pytest.mark.parametrize(("change", "fragments"), [
    ({"hidden": True}, ["arch_kwargs.hidden", "got True"]),
    ({"hidden": "64"}, ["arch_kwargs.hidden"]),
    ({"hidden": -3}, ["arch_kwargs.hidden", "got -3"]),
    ({"hidden": 200_000}, ["has shape (64,)", "expects (200000,)"]),
    ({"num_classes": 10**12}, ["arch_kwargs.num_classes"]),
    ({"in_shape": [1, 8]}, ["cannot take"]),
    ({"in_shape": [1, 8, 10**6]}, ["arch_kwargs.in_shape"]),
    ({"in_shape": "1x8x8"}, ["arch_kwargs.in_shape"]),
    ({"std": 0}, ["arch_kwargs.std", "> 0"]),
    ({"mean": None}, ["arch_kwargs.mean"]),
    ({"colour": {"r": 1}}, ["arch_kwargs.colour"]),
    ({"colour": 1}, ["cannot take", "unexpected keyword argument 'colour'"]),
], ids=["bool", "string", "negative", "huge", "huge-classes", "short-shape", "huge-shape", "shape-string",
        "std-zero", "mean-none", "nested", "unknown"])
def test_checkpoint_arch_kwargs_checked_before_building(tmp_path, digits_ckpt, change, fragments):
    meta = read_metadata(digits_ckpt)
    meta.pop("format")
    path = tmp_path / "edited.safetensors"
    save_checkpoint_raw(path, load_file(str(digits_ckpt)), dict(meta, arch_kwargs={**meta["arch_kwargs"], **change}))
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    one_line_message(e, str(path), *fragments)


@pytest.mark.parametrize(("change", "fragments"), [
    ({"architecture": 3}, ["metadata architecture: expected a string"]),
    ({"architecture": "resnet"}, ["names unknown architecture 'resnet'"]),
    ({"arch_kwargs": [1, 2]}, ["metadata arch_kwargs: expected an object"]),
    ({"bounds": [0, "1"]}, ["metadata bounds"]),
    ({"bounds": [1, 0]}, ["metadata bounds"]),
    ({"dataset": None}, ["metadata dataset: expected a string"]),
    ({"wrapper": 16}, ["metadata wrapper: expected a string"]),
    ({"wrapper": "thermometer:1"}, ["metadata wrapper", "levels"]),
], ids=["arch-type", "arch-unknown", "kwargs-type", "bounds-type", "bounds-order", "dataset-type",
        "wrapper-type", "wrapper-value"])
def test_checkpoint_metadata_types_checked(tmp_path, digits_ckpt, change, fragments):
    meta = read_metadata(digits_ckpt)
    meta.pop("format")
    path = tmp_path / "edited.safetensors"
    save_checkpoint_raw(path, load_file(str(digits_ckpt)), {**meta, **change})
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    one_line_message(e, *fragments)


def test_good_checkpoints_still_load(tmp_path, digits_mlp):
    """The checks refuse what is wrong, not what is right: a checkpoint advlab wrote loads bit for bit."""
    path = tmp_path / "ok.safetensors"
    save_checkpoint(digits_mlp, path, {"architecture": "mlp", "dataset": "digits", "bounds": [0.0, 1.0],
                                       "arch_kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 64,
                                                       "mean": 0.3, "std": 0.4}})
    back = load_model(path)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(back(x), digits_mlp(x))


@pytest.mark.parametrize(("make", "fragments"), [
    (lambda m: wrap_defense(BlackBox(lambda z: m(z)), "bitdepth:3"), ["wraps a torch model", "got BlackBox"]),
    (lambda m: parse_defense(3), ["defense: expected a string NAME[:VALUE]", "got int"]),
    (lambda m: parse_defense("gaussian:inf"), ["sigma must be a finite number > 0, got inf"]),
    (lambda m: GaussianSmoothing(float("nan")), ["sigma must be a finite number > 0, got nan"]),
    (lambda m: wrap_defense(m, "median:57"), ["57×57 window is too large for 28×28 images"]),
    (lambda m: MedianSmoothing(3)(torch.rand(2, 784)), ["median:3: expected images C×H×W", "(784,)"]),
    (lambda m: GaussianSmoothing(2.0)(torch.rand(2, 1, 4, 4)), ["too large for 4×4 images"]),
    (lambda m: wrap_defense(m, "jpeg:96"), ["quality must be in [1, 95], got 96"]),
    (lambda m: wrap_defense(m, "resize:2.5"), ["resize takes a int value"]),
], ids=["black-box", "not-a-string", "gaussian-inf", "gaussian-nan", "median-too-wide", "median-flat-input",
        "gaussian-small-image", "jpeg-quality", "resize-float"])
def test_input_transformations_refuse(lenet, make, fragments):
    with pytest.raises((ValueError, TypeError)) as e:
        make(lenet)
    one_line_message(e, *fragments)


def test_check_input_shape_names_model_shape_and_source(digits_ckpt, batch):
    model = load_model(digits_ckpt)
    with pytest.raises(ValueError, match="expects 1×8×8 inputs") as e:
        check_input_shape(model, batch[0], name="lenet-digits", source="mnist")
    one_line_message(e, "model: lenet-digits expects 1×8×8 inputs (its checkpoint's in_shape), "
                        "got 1×28×28 images from mnist")
    check_input_shape(model, torch.rand(2, 1, 8, 8))  # the right shape passes
    check_input_shape(create_model("mlp"), batch[0])  # no metadata, nothing known: passes


@pytest.mark.parametrize(("call", "fragments"), [
    (lambda: load_dataset("mnist", "val"), ["split: expected one of 'train', 'test', got 'val'"]),
    (lambda: load_dataset("digits", "test", root="/tmp"), ["root: dataset 'digits' takes no data directory"]),
    (lambda: load_dataset("cifar10"), ["dataset: unknown dataset 'cifar10'", "known: mnist, digits",
                                       "your own images: folder:PATH"]),
    (lambda: load_dataset("mnist", "test", root="/no/such/dir"), ["does not exist"]),
    (lambda: create_model("resnet"), ["unknown architecture 'resnet'"]),
    (lambda: load_model("lenet-mnst"), ["did you mean 'lenet-mnist'"]),
    (lambda: load_model("resnet18"), ["unknown model 'resnet18'", "your own network: package.module:factory"]),
    (lambda: BlackBox(lambda z: z, output="scores"), ["output: expected one of"]),
], ids=["split", "digits-root", "dataset", "mnist-root", "architecture", "model", "own-model", "blackbox-output"])
def test_api_names_and_paths(call, fragments):
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        call()
    one_line_message(e, *fragments)


def test_out_path_checks_write_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="expected a directory") as e:
        check_out_dir("--out", tmp_path / "f")
    one_line_message(e, "--out: expected a directory", "which is a file")
    with pytest.raises(ValueError, match="expected a file path") as e:
        check_out_file("--out", tmp_path)
    one_line_message(e, "--out: expected a file path", "is a directory")
    with pytest.raises(ValueError, match="not a directory") as e:
        check_out_file("--out", tmp_path / "f" / "m.safetensors")
    one_line_message(e, "is a file, not a directory")
    assert check_out_dir("--out", tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_out_file("--out", tmp_path / "new" / "m.safetensors").name == "m.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # probing created nothing that stays
