"""No attack, target choice, evaluation, check or transfer study changes the model, in any mode.

A model in training mode used to be attacked as it was: BatchNorm updated its running statistics
(googlenet-mnist: num_batches_tracked 4690 → 4731, eval-mode accuracy 0.988 → 0.928 after one PGD
call) and dropout ran during the attack. Now it is attacked through an eval-mode copy with a
ModelInTrainingMode warning; keep_train_mode() attacks its training-mode randomness on a copy
whose buffers are its own.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import advlab
from advlab import ThreatModel
from advlab.attacks import (
    FastViewSkipped,
    ModelInTrainingMode,
    choose_targets,
    get_attack,
    inference_view,
    keep_train_mode,
    list_attacks,
)
from advlab.attacks.adaptive import describe_adaptive
from advlab.attacks.modulecopy import reads_training
from advlab.evaluation.checks import run_checks
from advlab.evaluation.transfer import transfer_matrix
from advlab.train import TrainConfig, fit

ATTACKS = list_attacks()
EPS = {"linf": 0.3, "l2": 2.0, "l1": 8.0, "l0": 12.0}
SMALL = {"steps": 3, "max_queries": 60, "binary_search_steps": 2}  # cheap settings, where an attack has them


class BatchNormDropoutNet(nn.Module):
    """A small CNN for the 8×8 digits with BatchNorm and dropout: both behave differently in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(h.flatten(1)))


@pytest.fixture(scope="module")
def bn_net(digits):
    """BatchNormDropoutNet trained on digits (5 epochs): non-trivial running statistics, frozen, in eval mode."""
    xtr, ytr, xte, yte = digits
    model = BatchNormDropoutNet()
    result = fit(model, (xtr, ytr), (xte, yte), TrainConfig(epochs=5, batch_size=64, lr=3e-3, seed=0), progress=False)
    assert result.acc1 > 0.8, result.acc1
    assert int(model.bn.num_batches_tracked) > 0
    return model


@pytest.fixture(scope="module")
def nets(bn_net, digits_mlp):
    return {"batchnorm-dropout": bn_net, "digits-mlp": digits_mlp}


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """``train``: a live model (training mode, trainable); ``mixed``: eval mode but one submodule training.

    The ``mixed`` submodule is one that reads its training flag where the model has one (BatchNorm), else its
    first child (a layer whose flag changes nothing: the wrapper case, copied without a warning).
    """
    if mode == "train":
        model.train().requires_grad_(True)
    elif mode == "mixed":
        model.eval()
        next((m for m in model.modules() if reads_training(type(m))), next(model.children())).train()
    else:
        model.eval()
    return model


def snapshot(model: nn.Module) -> dict:
    """Every parameter and buffer as raw bytes (bit-identical, not only equal), the modes and requires_grad flags."""
    def bits(t: torch.Tensor) -> bytes:
        return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()

    return {
        "tensors": {n: (t.dtype, tuple(t.shape), t.data_ptr(), bits(t))
                    for n, t in [*model.named_parameters(), *model.named_buffers()]},
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, value in before["tensors"].items():
        assert after["tensors"][name] == value, f"{name} changed"
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(p.grad is None for p in model.parameters())


def training_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, ModelInTrainingMode)]


def threat_for(name: str) -> ThreatModel:
    info = get_attack(name)
    norm = next(n for n in ("linf", "l2", "l1", "l0") if n in info.norms)
    return ThreatModel(norm, float("inf") if info.minimal else EPS[norm])


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("mode", ["train", "mixed", "eval"])
@pytest.mark.parametrize("net", ["batchnorm-dropout", "digits-mlp"])
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n=st.integers(2, 6))
def test_every_attack_leaves_every_parameter_and_buffer_bit_identical(name, mode, net, seed, n, nets, digits):
    info = get_attack(name)
    model = set_mode(copy.deepcopy(nets[net]), mode)
    before = snapshot(model)
    x, y = digits[2][seed % 300 : seed % 300 + n].clone(), digits[3][seed % 300 : seed % 300 + n].clone()
    x0, y0 = x.clone(), y.clone()
    small = {k: v for k, v in SMALL.items() if k in info.defaults}
    if info.kind == "transfer":
        small["surrogate"] = model  # the model itself as the surrogate: it must come out untouched too
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = info(model, x, y, threat_for(name), generator=torch.Generator().manual_seed(seed), **small)
    assert res.x_adv.shape == x.shape
    assert_untouched(model, before)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    warned = training_warnings(record)
    read = any(reads_training(type(m)) for m in model.modules() if m.training)
    if mode == "eval" or (mode == "mixed" and not read):  # (a flag nothing reads: the wrapper case, quiet)
        assert not warned
    else:
        # once for the model (twice for the transfer attack: the model is also its surrogate)
        assert len(warned) == 1 + (info.kind == "transfer") and warned[0].filename == __file__
        assert str(warned[0].message).startswith(f"advlab: {type(model).__name__} is in training mode: attacking "
                                                 "an eval-mode copy (the model is left as it is;")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "deepfool", "square"])
def test_a_model_in_training_mode_is_attacked_exactly_like_its_eval_mode(name, bn_net, digits):
    """The eval-mode copy is the model as it would be after model.eval(): bit-identical results."""
    x, y = digits[2][:24], digits[3][:24]
    info, threat = get_attack(name), threat_for(name)
    small = {k: v for k, v in SMALL.items() if k in info.defaults}
    evaluated = info(bn_net, x, y, threat, generator=torch.Generator().manual_seed(3), **small)
    live = set_mode(copy.deepcopy(bn_net), "train")
    with pytest.warns(ModelInTrainingMode):
        trained = info(live, x, y, threat, generator=torch.Generator().manual_seed(3), **small)
    assert torch.equal(trained.x_adv, evaluated.x_adv) and torch.equal(trained.success, evaluated.success)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("net", ["batchnorm-dropout", "digits-mlp"])
def test_choose_targets_leaves_the_model_untouched(mode, net, nets, digits):
    x, y = digits[2][:32], digits[3][:32]
    reference = {m: choose_targets(nets[net], x, y, m, generator=torch.Generator().manual_seed(0))
                 for m in ("random", "least-likely")}
    for m in ("random", "least-likely"):
        model = set_mode(copy.deepcopy(nets[net]), mode)
        before = snapshot(model)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            target = choose_targets(model, x, y, m, generator=torch.Generator().manual_seed(0))
        assert_untouched(model, before)
        assert len(training_warnings(record)) == (mode == "train")
        assert torch.equal(target, reference[m]) and not bool((target == y).any())


def test_evaluate_leaves_a_model_in_training_mode_untouched_and_scores_its_eval_mode(bn_net, digits):
    """The clean pass, the attacks, the scoring of x_adv and the gradient-masking checks all see the eval-mode copy."""
    data = (digits[2][:40], digits[3][:40])
    kw = {"eps": [0.1, 0.2], "batch_size": 20, "progress": False, "check_n": 12, "model_name": "net"}
    reference = advlab.evaluate(bn_net, data, ["fgsm", "pgd"], **kw)
    model = set_mode(copy.deepcopy(bn_net), "train")
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ev = advlab.evaluate(model, data, ["fgsm", "pgd"], **kw)
    assert_untouched(model, before)
    warned = training_warnings(record)
    assert len(warned) == 1 and warned[0].filename == __file__  # once, pointing at the call
    assert ev.config["checks"] and ev.checks
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in ev.to_records()]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in reference.to_records()]
    assert ev.checks == reference.checks


def test_gradient_masking_checks_and_transfer_leave_a_model_in_training_mode_untouched(bn_net, digits_mlp, digits):
    x, y = digits[2][:30], digits[3][:30]
    model = set_mode(copy.deepcopy(bn_net), "train")
    before = snapshot(model)
    with pytest.warns(ModelInTrainingMode):
        found = run_checks(model, x, y, "linf", 0.2, n=8, max_queries=50)
    assert {r.code for r in found} >= {"GM06", "GM07", "GM08"}
    assert_untouched(model, before)
    with pytest.warns(ModelInTrainingMode):
        matrix = transfer_matrix({"bn": model, "mlp": digits_mlp}, x, y, ThreatModel("linf", 0.2), steps=3)
    assert_untouched(model, before)
    reference = transfer_matrix({"bn": bn_net, "mlp": digits_mlp}, x, y, ThreatModel("linf", 0.2), steps=3)
    assert matrix.success == reference.success and matrix.clean_acc == reference.clean_acc


def test_keep_train_mode_attacks_the_training_randomness_without_updating_a_buffer(bn_net, digits):
    x, y = digits[2][:16], digits[3][:16]
    model = set_mode(copy.deepcopy(bn_net), "train")
    before = snapshot(model)
    threat = ThreatModel("linf", 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelInTrainingMode)  # asked for: no warning
        with keep_train_mode():
            runs = [get_attack("pgd")(model, x, y, threat, steps=3, generator=torch.Generator().manual_seed(0))
                    for _ in range(2)]
            view = inference_view(model)
            adaptive = get_attack("pgd-adaptive")(model, x, y, threat, steps=2, eot_samples=2)
    assert not torch.equal(runs[0].x_adv, runs[1].x_adv)  # dropout drew other masks: its randomness was used
    assert adaptive.x_adv.shape == x.shape
    assert_untouched(model, before)
    # the copy keeps the flags, declares its randomness (pgd-adaptive uses EOT) and owns its buffers
    assert [m.training for m in view.modules()] == [m.training for m in model.modules()]
    assert view.randomized is True and describe_adaptive(view) == "margin+EOT×10"
    with torch.no_grad():
        view(x)  # training-mode BatchNorm updates the copy's statistics ...
    assert int(view.bn.num_batches_tracked) == int(model.bn.num_batches_tracked) + 1
    assert_untouched(model, before)  # ... never the model's
    with keep_train_mode(False), pytest.warns(ModelInTrainingMode):
        assert not inference_view(model).training


class _Uncopyable(list):
    """A list that refuses to be copied (as some foreign objects a model holds do)."""

    def __copy__(self):
        raise RuntimeError("this list cannot be copied")


def test_a_model_in_training_mode_that_cannot_be_copied_is_refused_not_attacked(bn_net, digits):
    x, y = digits[2][:4], digits[3][:4]
    model = set_mode(copy.deepcopy(bn_net), "train")
    model.history = _Uncopyable([1, 2])
    before = snapshot(model)
    for call in (lambda: get_attack("pgd")(model, x, y, ThreatModel("linf", 0.1), steps=2),
                 lambda: choose_targets(model, x, y, "least-likely"),
                 lambda: advlab.evaluate(model, (x, y), ["fgsm"], [0.1], progress=False)):
        with pytest.raises(ValueError, match=r"^model: BatchNormDropoutNet is in training mode and copying it raised "
                           r"RuntimeError: this list cannot be copied; call model.eval\(\) first$") as e:
            call()
        assert "\n" not in str(e.value)
        assert_untouched(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation notices
        scripted = nn.Sequential(torch.jit.script(nn.Flatten()), nn.Linear(64, 10))  # training mode
    with pytest.raises(ValueError, match=r"^model: Sequential is in training mode and 0 is a ScriptModule"):
        get_attack("fgsm")(scripted, x, y, ThreatModel("linf", 0.1))
    assert scripted.training and scripted[0].training
    model.eval()  # the way out the message names: the model itself is attacked (its fast view cannot be built)
    with pytest.warns(FastViewSkipped, match="copying it raised RuntimeError: this list cannot be copied"):
        assert get_attack("pgd")(model, x, y, ThreatModel("linf", 0.1), steps=2).x_adv.shape == x.shape


def test_wrapping_a_model_leaves_its_submodules_modes_alone(bn_net):
    """wrap_defense and the device wrapper take their model's flag; they never set its submodules' modes."""
    from advlab._device import OnDevice
    from advlab.models import wrap_defense

    mixed = copy.deepcopy(bn_net).eval()
    mixed.bn.train()  # the top module in eval mode, one submodule in training mode
    before = {n: m.training for n, m in mixed.named_modules()}
    for wrapped in (wrap_defense(mixed, "bitdepth:3"), OnDevice(mixed, torch.device("cpu"))):
        assert wrapped.training is False
        assert {n: m.training for n, m in mixed.named_modules()} == before
