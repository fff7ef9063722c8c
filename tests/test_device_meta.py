"""Training loops, defenses, certify bounds, poisoning and metrics under ``torch.set_default_device("meta")``.

As in tests/test_attacks_device.py: models and data are built on the CPU first, the call runs with
the default device set to ``meta``, so a tensor created without naming a device fails loudly the
moment it meets the CPU data; the results must equal the plain CPU run's bit for bit and come
back on the data's device.
"""

from __future__ import annotations

import copy

import pytest
import torch

from advlab.certify import logit_bounds, margin_lower_bounds
from advlab.certify.lipschitz import lipschitz_constant, lipschitz_radius
from advlab.certify.smoothing import Smoothed
from advlab.defenses import distill, make_training_defense
from advlab.metrics import clean_accuracy, perturbation_norms, predict_logits
from advlab.models import create_model
from advlab.models.wrappers import RandomResizePad
from advlab.poison.backdoor import badnets
from advlab.poison.detect import activation_clustering, spectral_signatures
from advlab.poison.label_flip import margins, uniform_flip
from advlab.poison.strip import strip_entropy
from advlab.poison.triggers import attack_success_rate
from advlab.train import TrainConfig, fit
from test_attacks_device import meta_default

CONFIG = TrainConfig(epochs=1, batch_size=32, lr=3e-3, seed=0)
# Each training defense with options that make one epoch on 96 examples cheap.
DEFENSE_OPTIONS = {
    "none": {}, "pgd": {"eps": 0.1, "steps": 2}, "fast": {"eps": 0.1}, "trades": {"eps": 0.1, "steps": 2},
    "negative": {"count": 16}, "parseval": {}, "gradnorm": {}, "ibp": {"eps": 0.1}, "crown-ibp": {"eps": 0.1},
    "gaussian-noise": {"sigma": 0.3}, "adversarial": {"eps": 0.1, "steps": 2},
}


def new_mlp():
    return create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=32, mean=0.3, std=0.4)


@pytest.fixture(scope="module")
def small(digits):
    xtr, ytr, xte, yte = digits
    return (xtr[:96], ytr[:96]), (xte[:40], yte[:40])


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) and sb[k].device.type == "cpu" for k in sa)


@pytest.mark.parametrize("name", sorted(DEFENSE_OPTIONS))
def test_fit_with_each_training_defense_under_meta_equals_the_cpu_run(name, small):
    train, test = small
    ref_model, meta_model = new_mlp(), new_mlp()
    ref = fit(ref_model, train, test, CONFIG, defense=make_training_defense(name, **DEFENSE_OPTIONS[name]),
              progress=False)
    with meta_default():
        got = fit(meta_model, train, test, CONFIG, defense=make_training_defense(name, **DEFENSE_OPTIONS[name]),
                  progress=False, device="cpu")
    assert same_state(ref_model, meta_model), name
    assert (got.acc1, got.acc5, got.history) == (ref.acc1, ref.acc5, ref.history)


def test_distillation_under_meta_equals_the_cpu_run(small):
    train, test = small
    models = [new_mlp() for _ in range(4)]
    distill(models[0], models[1], train, test, CONFIG, temperature=20.0)
    with meta_default():
        distill(models[2], models[3], train, test, CONFIG, temperature=20.0)
    assert same_state(models[0], models[2]) and same_state(models[1], models[3])


@pytest.fixture(scope="module")
def cnn(digits):
    """A small conv net with pooling and BatchNorm: the certify layers' constant-building paths."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AvgPool2d(2), torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Identity(), torch.nn.Linear(4, 10))
    return net.eval().requires_grad_(False)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_certify_bounds_under_meta_equal_the_cpu_bounds(method, cnn, digits, digits_mlp):
    x, y = digits[2][:6], digits[3][:6]
    for net in (copy.deepcopy(cnn), copy.deepcopy(digits_mlp)):  # fresh copies: the layer plan is built under meta
        with meta_default():
            got = margin_lower_bounds(net, x, y, 0.05, method=method)
            box = logit_bounds(net, x, 0.05, method=method)
        ref = margin_lower_bounds(net, x, y, 0.05, method=method)
        ref_box = logit_bounds(net, x, 0.05, method=method)
        assert torch.equal(got, ref) and got.device.type == "cpu"
        assert all(torch.equal(a, b) for a, b in zip(box, ref_box, strict=True))


def test_lipschitz_and_smoothing_under_meta_equal_the_cpu_run(cnn, digits, digits_mlp):
    x, y = digits[2][:5], digits[3][:5]
    ref_l, ref_r = lipschitz_constant(cnn, (1, 8, 8)), lipschitz_radius(digits_mlp, x, y)
    smooth = Smoothed(digits_mlp, 0.25, 10)
    ref_c = smooth.certify(x, 20, 200, 0.01, generator=torch.Generator().manual_seed(0))
    ref_p = smooth.predict(x, 100, 0.01, generator=torch.Generator().manual_seed(1))
    with meta_default():
        got_l, got_r = lipschitz_constant(cnn, (1, 8, 8)), lipschitz_radius(digits_mlp, x, y)
        got_c = smooth.certify(x, 20, 200, 0.01, generator=torch.Generator().manual_seed(0))
        got_p = smooth.predict(x, 100, 0.01, generator=torch.Generator().manual_seed(1))
    assert got_l == ref_l
    for a, b in ((got_r, ref_r), (got_c, ref_c), ((got_p,), (ref_p,))):
        assert all(torch.equal(u, v) and u.device.type == "cpu" for u, v in zip(a, b, strict=True))


def test_metrics_and_random_wrappers_under_meta(digits, digits_mlp):
    x, y = digits[2][:30], digits[3][:30]
    wrapped = torch.nn.Sequential(RandomResizePad(6, seed=3), copy.deepcopy(digits_mlp)).eval()
    ref = (clean_accuracy(digits_mlp, x, y, 7), predict_logits(wrapped, x), perturbation_norms(x, x.flip(0)))
    wrapped[0].generator.manual_seed(3)
    with meta_default():
        got = (clean_accuracy(digits_mlp, x, y, 7), predict_logits(wrapped, x), perturbation_norms(x, x.flip(0)))
    assert got[0] == ref[0] and torch.equal(got[1], ref[1])
    assert all(torch.equal(got[2][k], ref[2][k]) for k in ref[2])


def test_poisoning_under_meta_equals_the_cpu_run(small, digits_mlp):
    (x, y), (xt, yt) = small

    def run():
        g = torch.Generator().manual_seed(5)
        bd, flip = badnets(x, y, fraction=0.1, target=0, generator=g), uniform_flip(x, y, fraction=0.1, generator=g)
        feats = x.flatten(1)
        return (bd.x, bd.y, bd.mask, flip.y, margins(digits_mlp, x, y)[0],
                torch.tensor(attack_success_rate(digits_mlp, xt, yt, bd.trigger, 0), device="cpu"),
                strip_entropy(digits_mlp, xt[:4], x, n=4, generator=g),
                spectral_signatures(feats, bd.y).scores, activation_clustering(feats, bd.y).flagged)

    ref = run()
    with meta_default():
        got = run()
    assert all(torch.equal(a, b) and a.device.type == "cpu" for a, b in zip(got, ref, strict=True))
