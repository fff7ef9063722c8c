"""evaluate on a device: every tensor the engine makes follows its inputs, a caller's model is copied, never moved."""

from __future__ import annotations

import torch

import advlab
from advlab import _device
from advlab._device import OnDevice, place_model
from advlab.cli import main
from advlab.results.records import model_fingerprint

ATTACKS = ["noise", "fgsm", "pgd", "deepfool"]


def rows(ev):
    return [{k: v for k, v in r.__dict__.items() if k != "seconds"} for r in ev.rows]


def run(model, data, **kw):
    return advlab.evaluate(model, data, ATTACKS, [0.1, 0.3], batch_size=30, progress=False, check_n=12, **kw)


def test_the_engine_makes_no_tensor_off_its_inputs_device(digits_mlp, digits):
    x, y = digits[2][:60], digits[3][:60]
    plain = run(digits_mlp, (x, y))
    torch.set_default_device("meta")  # a tensor made without its input's device is a meta tensor: it fails loudly
    try:
        meta = run(digits_mlp, (x, y))
    finally:
        torch.set_default_device(None)
    assert rows(meta) == rows(plain)


def test_a_model_on_device_gives_the_same_rows_and_fingerprint(digits_mlp, digits):
    x, y = digits[2][:60], digits[3][:60]
    wrapped = OnDevice(digits_mlp, torch.device("cpu"))
    assert rows(run(wrapped, (x, y))) == rows(run(digits_mlp, (x, y)))
    assert model_fingerprint(wrapped) == model_fingerprint(digits_mlp)


def test_gradients_pass_through_the_device_wrapper(digits_mlp, digits):
    x = digits[2][:3].clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(OnDevice(digits_mlp, torch.device("cpu"))(x).sum(), x)
    x2 = digits[2][:3].clone().requires_grad_(True)
    (gb,) = torch.autograd.grad(digits_mlp(x2).sum(), x2)
    assert torch.equal(ga, gb)


def test_a_callers_model_is_copied_to_the_device_not_moved(digits_mlp, monkeypatch):
    monkeypatch.setattr(_device, "resolve_device", lambda spec: torch.device("meta"))
    placed = place_model(digits_mlp, "cuda", owned=False)
    assert isinstance(placed, OnDevice) and placed.device == torch.device("meta")
    assert all(p.device.type == "cpu" for p in digits_mlp.parameters())  # the caller's model stays where it was
    assert all(p.device.type == "meta" for p in placed.model.parameters())


def test_a_device_this_machine_lacks_is_one_line(capsys):
    code = main(["evaluate", "--device", "cuda:7", "--n", "5", "--attacks", "fgsm", "--no-progress"])
    err = capsys.readouterr().err
    if torch.cuda.device_count() > 7:
        return
    assert code == 2 and err.count("\n") == 1 and "--device" in err
    assert main(["evaluate", "--device", "tpu", "--n", "5"]) == 2
    assert "--device" in capsys.readouterr().err
