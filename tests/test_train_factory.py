"""``advlab train --model FACTORY``: your own network trained (adversarially or not) by advlab, its weights written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from advlab.attacks import get_attack
from advlab.cli import main
from advlab.data import load_dataset
from advlab.models import load_model
from advlab.threat import ThreatModel

SPEC = "factory_models:make_digits_net"
COMMON = ["--dataset", "digits", "--threads", "1", "--no-progress", "--lr", "3e-3"]


def _train(out, *extra: str) -> int:
    return main(["train", "--model", SPEC, *COMMON, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trainf")
    assert _train(d / "plain.safetensors", "--epochs", "15") == 0
    assert _train(d / "robust.safetensors", "--epochs", "15", "--defense", "pgd", "-o", "eps=0.2",
                  "-o", "steps=5") == 0
    return d


def test_the_weights_load_into_the_factory_and_are_deterministic(trained, tmp_path, capsys):
    again = tmp_path / "again.safetensors"
    assert _train(again, "--epochs", "15") == 0
    first, second = load_file(str(trained / "plain.safetensors")), load_file(str(again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with safe_open(str(again), framework="pt") as f:
        meta = json.loads(f.metadata()["advlab_training"])
    assert meta["factory"] == SPEC and meta["defense"]["name"] == "none" and meta["acc1"] > 0.9
    assert f"evaluate it with --model {SPEC} --weights {again}" in capsys.readouterr().out
    other = tmp_path / "seed1.safetensors"  # (--seed draws the factory's own initialisation)
    assert _train(other, "--epochs", "1", "--seed", "1") == 0
    assert _train(tmp_path / "seed0.safetensors", "--epochs", "1") == 0
    assert not torch.equal(load_file(str(other))["1.weight"], load_file(str(tmp_path / "seed0.safetensors"))["1.weight"])


def test_adversarial_training_of_a_factory_model_makes_it_more_robust(trained):
    x, y = load_dataset("digits", "test")
    threat = ThreatModel("linf", 0.2)
    acc = {}
    for name in ("plain", "robust"):
        net = load_model(SPEC, weights=trained / f"{name}.safetensors")
        r = get_attack("pgd")(net, x, y, threat, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            acc[name] = float((net(r.x_adv).argmax(1) == y).float().mean())
    assert acc["robust"] > acc["plain"] + 0.2, acc


@pytest.mark.parametrize(("extra", "message"), [
    (["--init", "lenet-mnist"], r"^--init: reads an advlab checkpoint; a factory model"),
    (["--defense", "thermometer:16"], r"^--defense: thermometer:16 needs an advlab architecture"),
    (["--defense", "distill"], r"^--defense: distill needs an advlab architecture"),
    (["--dataset", "mnist"], r"^--model: factory_models:make_digits_net fails on mnist's images of shape \(1, 28, 28\)"),
])
def test_what_a_factory_model_cannot_take_is_refused_in_one_line(tmp_path, capsys, extra, message):
    import re

    assert main(["train", "--model", SPEC, "--epochs", "1", "--out", str(tmp_path / "w.safetensors"),
                 "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, err.removeprefix("advlab train: error: ")), err
    assert not (tmp_path / "w.safetensors").exists()


def test_weights_without_a_factory_are_refused(tmp_path, capsys):
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--weights", "w.safetensors", "--epochs", "1",
                 "--out", str(tmp_path / "o.safetensors"), "--no-progress"]) == 2
    assert "--weights: only read for a factory" in capsys.readouterr().err
