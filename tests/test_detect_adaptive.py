"""The C&W 2017 adaptive attacks on detectors: the joint model G, its loss, and PGD/APGD/CW through it."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.attacks import pgd
from advlab.detect import make_detector
from advlab.detect.adaptive import Joint, JointLoss, TrueClassMerged, adaptive_attack, defended_accuracy, joint_success
from advlab.detect.base import DETECTORS, register_detector
from advlab.threat import ThreatModel
from test_detect_base import _Distance as _BaseDistance

LINF = ThreatModel("linf", 0.3)
L2 = ThreatModel("l2", float("inf"))


class _Distance(_BaseDistance):
    """tests/test_detect_base.py's double (distance of the logits from the clean mean logits), plus noise."""

    name = "test-adaptive-distance"

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        self.noise = noise
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = super().forward(x)
        return d + self.noise * torch.randn(d.shape, generator=self.gen) if self.noise else d

    def config(self) -> dict[str, float]:
        return {"noise": self.noise}


class _Noisy(_Distance):
    name = "test-adaptive-noisy"
    randomized = True


@pytest.fixture(autouse=True)
def _registered():
    register_detector(_Distance)
    register_detector(_Noisy)
    yield
    DETECTORS.pop("test-adaptive-distance", None)
    DETECTORS.pop("test-adaptive-noisy", None)


@pytest.fixture(scope="module")
def fitted(digits, digits_mlp):
    """The net and the distance detectors, fitted on training digits (PGD L∞ 0.3) and calibrated at 5% FPR."""
    xtr, ytr = digits[0], digits[1]
    xa = pgd(digits_mlp, xtr[:600], ytr[:600], LINF, steps=10, generator=torch.Generator().manual_seed(1)).x_adv
    out = {}
    for spec in ("net", "test-adaptive-distance"):
        register_detector(_Distance)
        det = make_detector(spec).fit(digits_mlp, xtr[:600], xa, generator=torch.Generator().manual_seed(0))
        det.calibrate(xtr[600:1000], fpr=0.05)
        out[spec] = det
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 359), st.sampled_from(["net", "test-adaptive-distance"]))
def test_extra_logit_wins_exactly_when_the_detector_rejects(fitted, digits, digits_mlp, at, spec):
    det, x = fitted[spec], digits[2]
    scores = det.score(x)
    joint = Joint(digits_mlp, det, threshold=float(scores[at]))  # a threshold on a score: that input ties
    with torch.no_grad():
        out = joint(x)
    rejected = scores > float(scores[at])
    assert torch.equal(out.argmax(1) == 10, rejected)
    assert not rejected[at]
    assert torch.equal(out[:, :10], digits_mlp(x).detach())


def test_joint_loss_success_means_misclassified_and_accepted(fitted, digits, digits_mlp):
    det = fitted["net"]
    x, y = digits[2], digits[3]
    x = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        out = Joint(digits_mlp, det)(x)
        expected = (digits_mlp(x).argmax(1) != y) & ~det.reject(x)
    assert torch.equal(JointLoss().success(out, y, None), expected)
    assert torch.equal(joint_success(out, y), expected)
    assert torch.equal(JointLoss().margin(out, y, None) > 0, expected)
    merged = TrueClassMerged(Joint(digits_mlp, det), y)
    with torch.no_grad():
        assert torch.equal(merged(x).argmax(1) != y, expected)


@pytest.mark.parametrize("spec", ["net", "test-adaptive-distance"])
def test_adaptive_pgd_beats_the_zero_knowledge_attack(fitted, digits, digits_mlp, spec):
    det, x, y = fitted[spec], digits[2][:200], digits[3][:200]
    before = copy.deepcopy(digits_mlp.state_dict())
    zk = pgd(digits_mlp, x, y, LINF, steps=20, generator=torch.Generator().manual_seed(2)).x_adv
    r = adaptive_attack(digits_mlp, det, x, y, LINF, "pgd", steps=40, generator=torch.Generator().manual_seed(2))
    zk_acc, ad_acc = defended_accuracy(digits_mlp, det, zk, y), defended_accuracy(digits_mlp, det, r.x_adv, y)
    assert ad_acc < zk_acc and ad_acc < 0.10, (zk_acc, ad_acc)
    assert float((r.x_adv - x).abs().max()) <= 0.3 + 1e-6
    with torch.no_grad():  # success is exactly "misclassified and accepted"
        assert torch.equal(r.success, (digits_mlp(r.x_adv).argmax(1) != y) & ~det.reject(r.x_adv))
    assert all(torch.equal(v, digits_mlp.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("spec", ["kdbu", "lid"])
def test_adaptive_pgd_on_kdbu_and_lid(digits, digits_mlp, spec):
    xtr, ytr, xte, yte = digits
    xa = pgd(digits_mlp, xtr[600:1000], ytr[600:1000], LINF, steps=10, generator=torch.Generator().manual_seed(1)).x_adv
    noisy = (xtr[600:1000] + 0.3 * torch.randn(xa.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    det = make_detector(spec).fit(digits_mlp, xtr[:600], xa, noisy, generator=torch.Generator().manual_seed(0))
    det.calibrate(xtr[1000:1400], fpr=0.05)
    x, y = xte[:100], yte[:100]
    zk = pgd(digits_mlp, x, y, LINF, steps=20, generator=torch.Generator().manual_seed(2)).x_adv
    r = adaptive_attack(digits_mlp, det, x, y, LINF, "pgd", steps=20, eot_samples=2,
                        generator=torch.Generator().manual_seed(2))
    zk_acc, ad_acc = defended_accuracy(digits_mlp, det, zk, y), defended_accuracy(digits_mlp, det, r.x_adv, y)
    assert ad_acc < zk_acc and ad_acc < 0.10, (zk_acc, ad_acc)


def test_adaptive_apgd_and_high_confidence(fitted, digits, digits_mlp):
    det, x, y = fitted["net"], digits[2][:100], digits[3][:100]
    r = adaptive_attack(digits_mlp, det, x, y, LINF, "apgd", steps=30, generator=torch.Generator().manual_seed(0))
    assert defended_accuracy(digits_mlp, det, r.x_adv, y) < 0.10
    hi = adaptive_attack(digits_mlp, det, x, y, LINF, "pgd", kappa=2.0, steps=40)
    with torch.no_grad():
        out = Joint(digits_mlp, det)(hi.x_adv)
    assert bool(hi.success.any()) and bool((JointLoss().margin(out, y, None)[hi.success] >= 2.0).all())


def test_adaptive_cw_untargeted_and_targeted(fitted, digits, digits_mlp):
    det, x, y = fitted["net"], digits[2][:40], digits[3][:40]
    r = adaptive_attack(digits_mlp, det, x, y, L2, "cw", steps=50, binary_search_steps=4)
    with torch.no_grad():
        fooled = (digits_mlp(r.x_adv).argmax(1) != y) & ~det.reject(r.x_adv)
    assert torch.equal(r.success, fooled) and r.success.float().mean() >= 0.9
    assert torch.equal(r.x_adv[~r.success], x[~r.success])  # the clean image where CW fails
    t = (y + 1) % 10
    rt = adaptive_attack(digits_mlp, det, x, y, ThreatModel("l2", float("inf"), targeted=True), "cw", target=t, steps=50, binary_search_steps=4)
    with torch.no_grad():
        hit = (digits_mlp(rt.x_adv).argmax(1) == t) & ~det.reject(rt.x_adv)
    assert torch.equal(rt.success, hit) and rt.success.float().mean() >= 0.8


def test_randomized_detector_gets_eot_and_stays_seeded(digits, digits_mlp):
    xtr, _, xte, yte = digits
    det = make_detector("test-adaptive-noisy:noise=0.5").fit(digits_mlp, xtr[:300], xtr[:10])
    det.calibrate(xtr[300:600])
    assert Joint(digits_mlp, det).randomized

    def run() -> torch.Tensor:
        det.gen.manual_seed(0)
        return adaptive_attack(digits_mlp, det, xte[:50], yte[:50], LINF, "pgd", steps=10, eot_samples=3,
                               generator=torch.Generator().manual_seed(0)).x_adv

    assert torch.equal(run(), run())


def test_bad_inputs_get_one_line_errors(fitted, digits, digits_mlp):
    x, y = digits[2][:4], digits[3][:4]
    det = fitted["net"]
    with pytest.raises(ValueError, match="attack: expected one of"):
        adaptive_attack(digits_mlp, det, x, y, LINF, "fgsm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="L2 attack"):
        adaptive_attack(digits_mlp, det, x, y, LINF, "cw")
    with pytest.raises(TypeError, match="expected an advlab Detector"):
        Joint(digits_mlp, digits_mlp)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no threshold"):
        Joint(digits_mlp, make_detector("test-adaptive-distance").fit(digits_mlp, x, x))
    with pytest.raises(ValueError, match="scale"):
        Joint(digits_mlp, det, scale=0.0)
    with pytest.raises(ValueError, match="one label per input"):
        adaptive_attack(digits_mlp, det, x, y[:2], LINF)
    with pytest.raises(ValueError, match="bound to a batch of 4"):
        TrueClassMerged(Joint(digits_mlp, det), y)(digits[2][:2])
    with pytest.raises(ValueError, match="kappa"):
        JointLoss(-1.0)


def test_confident_first_loss_gates_the_detector_behind_the_classifier_margin():
    # G's logits: 3 real classes and the rejection logit; label 0
    out = torch.tensor([[5.0, 1.0, 0.0, 9.0],     # correct and rejected: the classifier's margin only (−4)
                        [0.0, 3.0, 1.0, 8.0],     # misclassified by 3 < c, rejected: still only the classifier's (3)
                        [0.0, 12.0, 1.0, 14.0],   # margin 12 ≥ c = 10, rejected: c + G's margin (12 − 14 = −2)
                        [0.0, 12.0, 1.0, 11.0]],  # margin 12 ≥ c, accepted: c + G's margin (12 − 11 = 1)
                       requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)
    loss = JointLoss(confidence=10.0)
    obj = loss.objective(out, y, None)
    assert obj.tolist() == [-4.0, 3.0, 8.0, 11.0]
    (grad,) = torch.autograd.grad(obj.sum(), out)
    assert grad[:2, 3].tolist() == [0.0, 0.0]  # below the confidence the detector pulls nothing
    assert grad[2, 3] == -1.0
    assert torch.equal(loss.success(out, y, None), torch.tensor([False, False, False, True]))
    assert torch.equal(JointLoss().objective(out, y, None), JointLoss().margin(out, y, None))  # c = 0: G's margin
    t = torch.tensor([2, 2, 2, 2])  # targeted: the classifier's margin toward the target
    assert JointLoss.classifier_margin(out, y, t).tolist() == [-5.0, -2.0, -11.0, -11.0]


def _lid_on_boundary_examples(digits, model):
    """LID fitted against early-stopped PGD (examples left at the decision boundary), as ``advlab evaluate`` fits it."""
    xtr, ytr = digits[0], digits[1]
    xa = pgd(model, xtr[600:1000], ytr[600:1000], LINF, steps=20, step_size=0.03, early_stop=True,
             generator=torch.Generator().manual_seed(1)).x_adv
    noisy = (xtr[600:1000] + 0.3 * torch.randn(xa.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    det = make_detector("lid").fit(model, xtr[:600], xa, noisy, generator=torch.Generator().manual_seed(0))
    det.calibrate(xtr[1000:1400], fpr=0.05)
    return det


def test_confident_first_pgd_bypasses_lid_fitted_on_boundary_examples(digits, digits_mlp):
    det = _lid_on_boundary_examples(digits, digits_mlp)
    x, y = digits[2][:100], digits[3][:100]
    params = {"steps": 20, "step_size": 0.03, "early_stop": True}
    zk = pgd(digits_mlp, x, y, LINF, generator=torch.Generator().manual_seed(2), **params).x_adv
    plain = adaptive_attack(digits_mlp, det, x, y, LINF, "pgd", generator=torch.Generator().manual_seed(2), **params)

    def confident() -> torch.Tensor:
        r = adaptive_attack(digits_mlp, det, x, y, LINF, "pgd", confidence=10.0,
                            generator=torch.Generator().manual_seed(2), **params)
        with torch.no_grad():  # success is re-scored on the returned points: misclassified and accepted
            assert torch.equal(r.success, (digits_mlp(r.x_adv).argmax(1) != y) & ~det.reject(r.x_adv))
        assert float((r.x_adv - x).abs().max()) <= 0.3 + 1e-6
        return r.x_adv

    xc = confident()
    zk_acc, plain_acc = defended_accuracy(digits_mlp, det, zk, y), defended_accuracy(digits_mlp, det, plain.x_adv, y)
    hc_acc = defended_accuracy(digits_mlp, det, xc, y)
    assert hc_acc < 0.10 and hc_acc < zk_acc and hc_acc <= plain_acc, (zk_acc, plain_acc, hc_acc)
    assert torch.equal(confident(), xc)  # the same seed, the same points


def test_confident_first_cw_fools_classifier_and_detector(digits, digits_mlp):
    det = _lid_on_boundary_examples(digits, digits_mlp)
    x, y = digits[2][:40], digits[3][:40]
    r = adaptive_attack(digits_mlp, det, x, y, L2, "cw", confidence=5.0, steps=50, binary_search_steps=4)
    with torch.no_grad():
        fooled = (digits_mlp(r.x_adv).argmax(1) != y) & ~det.reject(r.x_adv)
        margin = JointLoss.classifier_margin(Joint(digits_mlp, det)(r.x_adv), y, None)
    assert torch.equal(r.success, fooled) and r.success.float().mean() >= 0.9
    assert bool((margin[r.success] >= 5.0 - 1e-4).all())  # it stops only once fooled by the confidence
    assert torch.equal(r.x_adv[~r.success], x[~r.success])


def test_confidence_is_checked(fitted, digits, digits_mlp):
    x, y = digits[2][:4], digits[3][:4]
    with pytest.raises(ValueError, match="confidence"):
        JointLoss(confidence=-1.0)
    with pytest.raises(ValueError, match="confidence: expected a number >= 0"):
        adaptive_attack(digits_mlp, fitted["net"], x, y, L2, "cw", confidence=-1.0)
    with pytest.raises(ValueError, match="confidence: the confident-first CW is untargeted"):
        adaptive_attack(digits_mlp, fitted["net"], x, y, ThreatModel("l2", float("inf"), targeted=True), "cw",
                        target=(y + 1) % 10, confidence=5.0)
