import importlib
import json
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import advlab
from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.data import half_indices, load_dataset
from advlab.metrics import clean_accuracy
from advlab.models import (
    CheckpointError,
    create_model,
    list_pretrained,
    load_model,
    read_metadata,
    save_checkpoint,
    tensor_digest,
)
from advlab.train import TrainConfig, fit, train_half

META = {"architecture": "mlp", "arch_kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 16},
        "dataset": "digits", "bounds": [0.0, 1.0], "acc1": 0.5, "acc5": 0.9, "seed": 0,
        "command": "test", "advlab_version": advlab.__version__}


def small():
    return create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=16)


def test_checkpoint_round_trip(tmp_path):
    m = small()
    save_checkpoint(m, tmp_path / "m.safetensors", META)
    back = load_model(tmp_path / "m.safetensors")
    assert tensor_digest(back) == tensor_digest(m)
    assert not back.training
    assert all(not p.requires_grad for p in back.parameters())
    assert back.advlab_meta["dataset"] == "digits"
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(back(x), m.eval()(x))


def test_refuses_pickle_without_unpickling(tmp_path):
    # A pickle that would create a file if it were ever unpickled.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(tmp_path / "evil.safetensors")
    assert not marker.exists()


def test_refuses_torch_save_file(tmp_path):
    torch.save(small().state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"pickle / torch\.save"):
        load_model(tmp_path / "m.pt")


def test_refuses_foreign_safetensors(tmp_path):
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="foreign"):
        load_model(tmp_path / "foreign.safetensors")


def test_refuses_metadata_architecture_mismatch(tmp_path):
    m = small()
    meta = dict(META, architecture="lenet", arch_kwargs={"in_shape": [1, 28, 28], "num_classes": 10})
    save_checkpoint(m, tmp_path / "m.safetensors", meta)
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        load_model(tmp_path / "m.safetensors")
    meta = dict(META, arch_kwargs={"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 32})
    save_checkpoint(m, tmp_path / "m2.safetensors", meta)
    with pytest.raises(CheckpointError, match="shape"):
        load_model(tmp_path / "m2.safetensors")


def test_header_length_starting_with_0x80_is_not_mistaken_for_pickle(tmp_path):
    # mlp-mnist's header length happens to start with byte 0x80, like a pickle's opcode
    from advlab.models import resolve_checkpoint

    assert resolve_checkpoint("mlp-mnist").read_bytes()[:1] == b"\x80"
    assert load_model("mlp-mnist").advlab_meta["architecture"] == "mlp"


def test_refuses_garbage_and_missing(tmp_path):
    (tmp_path / "g.safetensors").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(tmp_path / "g.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match=r"did you mean 'lenet-mnist'"):
        load_model("lenet-mnst")
    with pytest.raises(ValueError, match=r"create_model\('lenet'\)"):
        load_model("lenet")
    with pytest.raises(ValueError, match=r"unknown architecture 'lenett'.*did you mean 'lenet'"):
        create_model("lenett")


def test_unknown_model_name_suggests_sklearn_targets_too():
    with pytest.raises(ValueError, match=r"did you mean 'sklearn-logreg-digits'.*scikit-learn: sklearn-logreg"):
        load_model("sklearn-logreg-digit")
    with pytest.raises(ValueError, match=r"did you mean 'lenet-mnist'.*scikit-learn: sklearn-logreg"):
        load_model("lenet-mnst")


def test_atomic_writes(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "first ε\n")
    assert path.read_text(encoding="utf-8") == "first ε\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("advlab._io.os.replace", dies)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"third")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary file left behind


def test_atomic_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    first = small()
    save_checkpoint(first, path, META)

    def dies(*args, **kwargs):
        with open(args[1], "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr("advlab.models.checkpoint.save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(small(), path, META)
    assert tensor_digest(load_model(path)) == tensor_digest(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_training_is_deterministic_under_seed(digits):
    xtr, ytr, _, _ = digits
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=7)
    digests = []
    for _ in range(2):
        m = create_model("lenet", in_shape=(1, 16, 16), num_classes=10)
        up = torch.nn.functional.interpolate(xtr, size=16)
        fit(m, (up, ytr), None, cfg, progress=False)
        digests.append(tensor_digest(m))
    assert digests[0] == digests[1]
    m = create_model("lenet", in_shape=(1, 16, 16), num_classes=10)
    fit(m, (torch.nn.functional.interpolate(xtr, size=16), ytr), None,
        TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=8), progress=False)
    assert tensor_digest(m) != digests[0]


def test_fit_restores_global_rng(digits):
    xtr, ytr, _, _ = digits
    model = small()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, (xtr, ytr), None, TrainConfig(epochs=1, seed=0), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_fit_leaves_the_callers_rng_state_unchanged(digits):
    xtr, ytr, _, _ = digits
    model = small()  # building it draws from the global RNG
    before = torch.get_rng_state()
    fit(model, (xtr, ytr), None, TrainConfig(epochs=1, seed=3), progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_fit_forks_every_cuda_device_rng(digits, monkeypatch):
    # torch.manual_seed seeds every CUDA device too, so fit must restore all of them, not the CPU's only
    xtr, ytr, _, _ = digits
    forked = []
    real_fork = torch.random.fork_rng

    def spy(devices=None, **kwargs):
        forked.append(list(devices))
        return real_fork(devices=[], **kwargs)  # no CUDA here: fork the CPU RNG as fit would

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.random, "fork_rng", spy)
    fit(small(), (xtr[:64], ytr[:64]), None, TrainConfig(epochs=1, seed=0), progress=False)
    assert forked == [[0, 1]]


def test_train_half_trains_on_the_fixed_half():
    cfg = TrainConfig(epochs=1, batch_size=64, seed=0)
    result = train_half("b", arch="mlp", dataset="digits", config=cfg)
    x, y = load_dataset("digits", "train")
    idx = half_indices(len(x), "b")
    expected = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    fit(expected, (x[idx], y[idx]), None, cfg, progress=False)
    assert tensor_digest(result.model) == tensor_digest(expected)
    assert 0 < result.acc1 <= 1  # measured on the full test split


@pytest.mark.parametrize(("old", "new"), [
    ("advlab.blackbox", "advlab.models.blackbox"),
    ("advlab.sklearn_models", "advlab.models.sklearn"),
    ("advlab.evaluation.metrics", "advlab.metrics"),
    ("advlab.attacks.apgd", "advlab.attacks.autopgd"),
    ("advlab.attacks.cw", "advlab.attacks.carlini_wagner"),
    ("advlab.attacks.deepfool", "advlab.attacks.linearised"),
    ("advlab.attacks.square", "advlab.attacks.random_search"),
    ("advlab.attacks.hopskipjump", "advlab.attacks.decision_based"),
])
def test_old_module_paths_warn_and_give_the_same_objects(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} is deprecated: import from {new}")):
        alias = importlib.import_module(old)
    module = importlib.import_module(new)
    assert alias.__all__
    for name in alias.__all__:
        assert getattr(alias, name) is getattr(module, name), name


@pytest.mark.parametrize("name", ["apgd", "cw", "deepfool", "square", "hopskipjump"])
def test_an_old_module_path_leaves_the_attack_of_its_name_in_place(name):
    """``from advlab.attacks.cw import cw`` in old code: ``from advlab.attacks import cw`` is still the attack.

    (The import system sets an imported module as its package's attribute; it used to replace the
    attack for the rest of the process: "'module' object is not callable".) A fresh interpreter, as
    the module may have been imported already in this one.
    """
    code = (f"import warnings; warnings.simplefilter('ignore')\nimport advlab.attacks.{name}\n"
            f"from advlab.attacks.{name} import {name} as old\nfrom advlab.attacks import {name} as new\n"
            "import advlab.attacks as package\n"
            f"assert callable(new) and new is old is package.{name}, type(new)\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr[-500:]


@pytest.mark.parametrize("name", ["lenet-mnist", "googlenet-mnist", "mlp-mnist"])
def test_shipped_model_accuracy(name):
    if name not in list_pretrained():
        pytest.fail(f"{name} is not shipped in src/advlab/weights/")
    x, y = advlab.load_dataset("mnist", "test")
    model = load_model(name)
    acc1, acc5 = clean_accuracy(model, x, y)
    meta = model.advlab_meta
    assert acc1 == pytest.approx(meta["acc1"], abs=1e-6)  # the model card's figure is the true one
    assert acc1 >= {"lenet-mnist": 0.985, "googlenet-mnist": 0.99, "mlp-mnist": 0.98}[name]
    if name == "lenet-mnist":
        assert acc5 >= 0.999
    assert meta["command"].startswith("advlab train")


@pytest.mark.parametrize(("name", "defense"), [("cnn-mnist-ibp01", "ibp"), ("cnn-mnist-ibp03", "ibp"),
                                               ("cnn-mnist-noise05", "gaussian-noise"),
                                               ("lenet-mnist-noise05", "gaussian-noise")])
def test_certified_models_are_what_their_cards_say(name, defense):
    """The certified and smoothing models: the recorded accuracy is the true one, made by advlab train."""
    x, y = advlab.load_dataset("mnist", "test")
    model = load_model(name)
    meta = model.advlab_meta
    assert clean_accuracy(model, x, y)[0] == pytest.approx(meta["acc1"], abs=1e-6)
    assert meta["command"].startswith("advlab train") and meta["defense"]["name"] == defense


def test_cli_models_lists_shipped():
    out = subprocess.run([sys.executable, "-m", "advlab", "models"], capture_output=True, text=True, check=True)
    assert "lenet-mnist" in out.stdout and "googlenet" in out.stdout
    assert "sklearn-logreg " in out.stdout and "sklearn-logreg-digits" in out.stdout


def test_cli_bad_input_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "lenett", "--dataset", "digits",
                          "--out", str(tmp_path / "x.safetensors")], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'lenet'" in lines[0]


def test_cli_train_digits_writes_checkpoint(tmp_path):
    path = tmp_path / "mlp.safetensors"
    subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "mlp", "--dataset", "digits",
                    "--epochs", "2", "--seed", "0", "--no-progress", "--out", str(path)],
                   capture_output=True, text=True, check=True)
    meta = read_metadata(path)
    assert meta["command"].startswith("advlab train --model mlp")
    assert meta["acc1"] > 0.8 and meta["seed"] == 0 and meta["advlab_version"] == advlab.__version__
    assert json.loads(json.dumps(meta)) == meta


@pytest.mark.slow
def test_one_epoch_lenet_mnist_fast_accurate_deterministic(tmp_path):
    import time

    digests = []
    for i in range(2):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "lenet", "--epochs", "1",
                        "--seed", "0", "--no-progress", "--out", str(tmp_path / f"{i}.safetensors")],
                       check=True, capture_output=True)
        assert time.perf_counter() - t0 < 120
        assert read_metadata(tmp_path / f"{i}.safetensors")["acc1"] >= 0.97
        digests.append(tensor_digest(load_model(tmp_path / f"{i}.safetensors")))
    assert digests[0] == digests[1]
