"""The detector network ("net", Metzen et al. 2017) on the digits MLP."""

from __future__ import annotations

import copy

import pytest
import torch

from advlab.attacks import pgd
from advlab.detect import load_detector, make_detector, save_detector
from advlab.detect.network import NetworkDetector, auto_layer
from advlab.metrics import roc_auc
from advlab.models import create_model
from advlab.threat import ThreatModel

LINF = ThreatModel("linf", 0.3)


@pytest.fixture(scope="module")
def adv_sets(digits, digits_mlp):
    """PGD (L∞ 0.3, 10 steps) examples of 600 training and 300 test digits."""
    xtr, ytr, xte, yte = digits
    g = torch.Generator().manual_seed(1)
    return (pgd(digits_mlp, xtr[:600], ytr[:600], LINF, steps=10, generator=g).x_adv,
            pgd(digits_mlp, xte[:300], yte[:300], LINF, steps=10, generator=g).x_adv)


def _fit(model, digits, adv_sets, spec="net", seed=0):
    xtr = digits[0]
    return make_detector(spec).fit(model, xtr[:600], adv_sets[0], generator=torch.Generator().manual_seed(seed))


def test_net_separates_pgd_from_clean(digits, digits_mlp, adv_sets):
    det = _fit(digits_mlp, digits, adv_sets)
    assert isinstance(det, NetworkDetector) and det.layer == "net.2"  # the MLP's first activation
    auc = roc_auc(det.score(adv_sets[1]), det.score(digits[2][:300]))
    assert auc > 0.9, auc


def test_net_separates_heavy_noise(digits, digits_mlp):
    xtr, _, xte, _ = digits
    g = torch.Generator().manual_seed(3)
    noisy = lambda x: (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)  # noqa: E731
    det = make_detector("net:epochs=5").fit(digits_mlp, xtr[:600], noisy(xtr[:600]))
    assert roc_auc(det.score(noisy(xte)), det.score(xte)) >= 0.95


def test_net_round_trips_and_leaves_the_classifier_untouched(tmp_path, digits, digits_mlp, adv_sets):
    before = copy.deepcopy(digits_mlp.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in digits_mlp.parameters()]
    flags = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in digits_mlp.modules()]
    det = _fit(digits_mlp, digits, adv_sets, "net:dynamic=true:epochs=3")
    det.calibrate(digits[0][600:1000], fpr=0.05)
    save_detector(det, tmp_path / "net.safetensors")
    back = load_detector(tmp_path / "net.safetensors", digits_mlp)
    assert isinstance(back, NetworkDetector) and back.config() == det.config()
    assert torch.equal(back.score(digits[2]), det.score(digits[2])) and torch.equal(back.threshold, det.threshold)
    assert all(torch.equal(v, digits_mlp.state_dict()[k]) for k, v in before.items())
    assert flags == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
                     for m in digits_mlp.modules()]
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad)
               for g, p in zip(grads, digits_mlp.parameters(), strict=True))
    assert "model" not in dict(det.named_children())


@pytest.mark.parametrize("spec", ["net:epochs=3", "net:epochs=2:dynamic=true"])
def test_net_is_deterministic_under_a_seed(digits, digits_mlp, adv_sets, spec):
    a = _fit(digits_mlp, digits, adv_sets, spec, seed=5).score(digits[2])
    b = _fit(digits_mlp, digits, adv_sets, spec, seed=5).score(digits[2])
    c = _fit(digits_mlp, digits, adv_sets, spec, seed=6).score(digits[2])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_net_on_a_named_layer_and_on_a_conv_stage(digits, digits_mlp, adv_sets):
    det = _fit(digits_mlp, digits, adv_sets, "net:layer=net.4:epochs=2")
    assert det.layer == "net.4" and det.score(digits[2][:5]).shape == (5,)
    lenet = create_model("lenet", in_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert auto_layer(lenet, x) == "features.2"  # the first pooling layer: lenet's first conv stage
    conv = make_detector("net:epochs=1:width=4").fit(lenet, x[:20], x[20:])
    assert isinstance(conv.head[0], torch.nn.Conv2d) and conv.head[0].in_channels == 6
    assert conv(x[:3].requires_grad_()).shape == (3,)


def test_net_bad_inputs_get_one_line_errors(digits, digits_mlp, adv_sets):
    xtr = digits[0]
    with pytest.raises(ValueError, match="width must be a positive int"):
        make_detector("net:width=0")
    with pytest.raises(ValueError, match="dynamic_share"):
        make_detector("net:dynamic_share=1.5")
    with pytest.raises(RuntimeError, match="not fitted"):
        make_detector("net").score(xtr[:2])
    with pytest.raises(ValueError, match="not among the classifier's layers"):
        make_detector("net:layer=nope").fit(digits_mlp, xtr[:20], adv_sets[0][:20])
    with pytest.raises(ValueError, match="differ in input shape"):
        make_detector("net").fit(digits_mlp, xtr[:20], torch.zeros(20, 1, 4, 4))
    with pytest.raises(ValueError, match="non-empty batch"):
        make_detector("net").fit(digits_mlp, xtr[:0], adv_sets[0][:20])
    det = _fit(digits_mlp, digits, adv_sets, "net:epochs=1")
    with pytest.raises(RuntimeError, match="no threshold"):
        det.reject(xtr[:2])
