"""advlab._device: parsing ``--device`` / ``device=``, the CUDA checks (without a GPU), device-independent draws."""

from __future__ import annotations

import re

import pytest
import torch

from advlab._device import draw, module_device, resolve_device, rng_device, setup_cuda_determinism


def one_line(match: str, spec: object) -> None:
    with pytest.raises(ValueError, match=match) as e:
        resolve_device(spec)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_specs(spec):
    assert resolve_device(spec) == torch.device("cpu")


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cpu:0", "auto:1", "cuda:-1", "", "mps"])
def test_bad_specs_are_one_line_errors_naming_device(spec):
    one_line(r"^device: expected auto, cpu, cuda or cuda:N, got ", spec)


def test_a_non_string_spec_is_refused():
    one_line(r"^device: expected auto, cpu, cuda or cuda:N, got int$", 3)


def test_cuda_without_a_gpu_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line(r"^device: 'cuda' is not available \(torch .* sees no CUDA GPU\); use --device cpu or auto$", "cuda")
    one_line(r"^device: 'cuda:1' is not available", "cuda:1")


def test_cuda_indices_are_checked_against_the_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    one_line(r"^device: 'cuda:2' is not available \(this machine has 2 CUDA device\(s\): cuda:0\.\.cuda:1\)$",
             "cuda:2")


def test_draw_is_bit_identical_to_drawing_without_a_device():
    for sample, args in ((torch.rand, (3, 4)), (torch.randn, (5,)), (torch.randint, (0, 7, (6,))),
                         (torch.randperm, (9,))):
        a = draw(sample, *args, generator=torch.Generator().manual_seed(4))
        b = sample(*args, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b)


def test_draw_samples_on_the_generators_device_whatever_the_default_device():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(4, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        out = draw(torch.rand, 4, generator=g)
        assert rng_device(None) == torch.device("cpu")
        moved = draw(torch.rand, 2, generator=None, device=torch.device("meta"))
    assert out.device.type == "cpu" and torch.equal(out, ref)
    assert moved.device.type == "meta"


def test_cuda_determinism_is_a_no_op_off_cuda():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic)
    setup_cuda_determinism(torch.device("cpu"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic) == before


def test_cuda_determinism_switches_tf32_off_and_cudnn_to_deterministic():
    flags = ("allow_tf32", "deterministic", "benchmark")
    saved = (torch.backends.cuda.matmul.allow_tf32, *(getattr(torch.backends.cudnn, f) for f in flags))
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        setup_cuda_determinism(torch.device("cuda", 0))  # only sets flags: runs without a GPU
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        for f, v in zip(flags, saved[1:], strict=True):
            setattr(torch.backends.cudnn, f, v)


# --- ``--device`` on the sub-commands that run a model -------------------------------------------------------------

DEVICE_COMMANDS = {  # each command's minimal valid arguments (the device is checked before any model is loaded)
    "attack": ["--attack", "fgsm", "--n", "4"],
    "train": ["--model", "mlp", "--dataset", "digits", "--epochs", "1"],
    "certify": ["--model", "lenet-mnist", "--n", "2"],
    "poison": ["--attack", "badnets", "-o", "fraction=0.01", "--dataset", "digits", "--epochs", "1"],
    "transfer": ["--n", "2"],
}


def _out(cmd, tmp_path):
    if cmd == "train":
        return ["--out", str(tmp_path / "m.safetensors")]
    return [] if cmd == "certify" else ["--out", str(tmp_path / "o")]


@pytest.mark.parametrize("cmd", sorted(DEVICE_COMMANDS))
@pytest.mark.parametrize(("spec", "message"), [
    ("cuda:3", r"--device: 'cuda:3' is not available \(torch .* sees no CUDA GPU\); use --device cpu or auto"),
    ("gpu", r"--device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_commands_refuse_an_unavailable_or_bad_device_in_one_line(cmd, spec, message, tmp_path, monkeypatch,
                                                                  capsys):
    from advlab.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main([cmd, *DEVICE_COMMANDS[cmd], *_out(cmd, tmp_path), "--device", spec])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.safetensors").exists()


def test_attack_command_on_cpu_equals_the_default_run(tmp_path, digits_ckpt, capsys):
    from safetensors.torch import load_file

    from advlab.cli import main

    outs = []
    for extra in ([], ["--device", "cpu"]):
        out = tmp_path / f"run{len(outs)}"
        assert main(["attack", "--model", str(digits_ckpt), "--attack", "pgd", "--n", "10", "--param", "steps=3",
                     "--out", str(out), *extra]) == 0
        outs.append(load_file(str(out / "x_adv.safetensors")))
    capsys.readouterr()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_fit_moves_an_advlab_built_model_and_trains_where_it_is_told(digits):
    from advlab.models import create_model
    from advlab.train import TrainConfig, fit

    xtr, ytr, xte, yte = digits
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=8)
    res = fit(model, (xtr[:64], ytr[:64]), (xte[:20], yte[:20]), TrainConfig(epochs=1), progress=False,
              device="cpu")
    assert res.model is model and module_device(model) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device: expected auto, cpu, cuda or cuda:N, got 'tpu'$"):
        fit(model, (xtr[:64], ytr[:64]), None, TrainConfig(epochs=1), progress=False, device="tpu")
