"""An evaluation loop under ``torch.inference_mode()`` (PyTorch's advice for inference) or ``torch.no_grad()``:
attacks, evaluate, universal perturbations and Defense-GAN's projection give what they give outside it."""

from __future__ import annotations

import contextlib

import pytest
import torch

import advlab
from advlab.attacks import get_attack, universal_perturbation
from advlab.models.defense_gan import project
from advlab.models.gan import Generator
from advlab.threat import ThreatModel

MODES = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:16], y[:16]


SHORT = {"cw": {"steps": 20, "binary_search_steps": 2}, "square": {"max_queries": 100}}  # (a test's budget)


def _run(attack: str, model, x, y):
    threat = ThreatModel("l2", float("inf")) if attack in ("cw", "deepfool") else ThreatModel("linf", 0.1)
    return get_attack(attack)(model, x, y, threat, generator=torch.Generator().manual_seed(0),
                              **SHORT.get(attack, {})).x_adv


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attack", ["fgsm", "pgd", "apgd", "deepfool", "cw", "square"])
def test_an_attack_in_the_callers_inference_mode_is_the_attack_outside_it(lenet, digits, attack, mode):
    """Inference mode records no graph, so a gradient attack used to find no input gradient and blame the model."""
    x, y = digits
    want = _run(attack, lenet, x, y)
    with MODES[mode]():
        got = _run(attack, lenet, x, y)
        inner = x.clone()  # (an inference tensor under inference mode)
        from_inner = _run(attack, lenet, inner, y)
    assert torch.equal(got, want) and torch.equal(from_inner, want)
    assert not got.is_inference()


def test_evaluate_in_inference_mode_is_evaluate_outside_it(lenet, digits):
    """Not a GM09 "no input gradient" verdict and a black-box stand-in: the same rows."""
    kw = {"progress": False, "checks": False, "ensemble": False}
    want = advlab.evaluate(lenet, digits, ["pgd", "cw"], [0.1], **kw)
    with torch.inference_mode():
        got = advlab.evaluate(lenet, digits, ["pgd", "cw"], [0.1], **kw)
    assert [(r.attack, r.acc1_adv, r.success_rate) for r in got.rows] == \
        [(r.attack, r.acc1_adv, r.success_rate) for r in want.rows]
    assert not (got.meta.get("skipped") or {}).get("jobs") and "Not computed" not in str(got)


@pytest.mark.parametrize("mode", [*MODES, None])
def test_universal_perturbations_and_defense_gan_work_in_any_mode(lenet, digits, mode):
    x, y = digits
    torch.manual_seed(0)
    generator = Generator(latent_dim=8, hidden=16).eval()
    with MODES[mode]() if mode else contextlib.nullcontext():
        v = universal_perturbation(lenet, x, y, ThreatModel("linf", 0.2), max_passes=1,
                                   generator=torch.Generator().manual_seed(0))
        projected, _, err = project(generator, x[:4], steps=3, restarts=2, rng=torch.Generator().manual_seed(0))
    assert v.shape == x.shape[1:] and float(v.abs().max()) <= 0.2 + 1e-6 and float(v.abs().max()) > 0
    assert projected.shape == x[:4].shape and err.shape == (4,)
