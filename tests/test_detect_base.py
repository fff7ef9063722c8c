"""The detector interface: ROC metrics, threshold at an FPR, the reject option's counting, detector files."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.detect import Detector, defended_outcome, load_detector, make_detector, save_detector
from advlab.detect.base import DETECTORS, register_detector
from advlab.metrics import roc_auc, roc_curve, threshold_at_fpr


class _Distance(Detector):
    """Test double with fitted state: the distance of an input's logits from the clean inputs' mean logits."""

    name = "test-distance"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("centre", torch.zeros(0))

    def fit(self, model, x_clean, x_adv, x_noisy=None, *, generator=None):  # type: ignore[no-untyped-def]
        self.bind(model)
        with torch.no_grad():
            self.centre = model(x_clean).mean(0)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (self.model(x) - self.centre).norm(dim=1)

    def config(self) -> dict[str, float]:
        return {"scale": self.scale}


@pytest.fixture(autouse=True)
def _registered():
    register_detector(_Distance)
    yield
    DETECTORS.pop("test-distance", None)


scores = st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_roc_curve_area_is_roc_auc(pos, neg):
    p, n = torch.tensor(pos), torch.tensor(neg)
    fpr, tpr = roc_curve(p, n)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert (fpr.diff() >= 0).all() and (tpr.diff() >= 0).all()
    area = float(torch.trapezoid(tpr, fpr))  # ties move both rates at once: the trapezoid counts them ½
    assert area == pytest.approx(roc_auc(p, n), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(scores, st.floats(0.0, 0.99))
def test_threshold_flags_at_most_fpr_of_negatives(neg, fpr):
    n = torch.tensor(neg)
    t = threshold_at_fpr(n, fpr)
    assert int((n > t).sum()) <= fpr * len(n) + 1e-9


def test_defended_outcome_counts_as_the_issue_says():
    correct = torch.tensor([True, True, False, False])
    rejected = torch.tensor([True, False, True, False])
    assert defended_outcome(correct, rejected, adversarial=True).tolist() == [True, True, True, False]
    assert defended_outcome(correct, rejected, adversarial=False).tolist() == [False, True, False, False]


def test_detector_round_trips_through_its_file(tmp_path, digits, digits_mlp):
    xtr, _, xte, _ = digits
    before = copy.deepcopy(digits_mlp.state_dict())
    det = make_detector("test-distance:scale=2.0").fit(digits_mlp, xtr[:200], xte[:50])
    det.calibrate(xtr[200:400], fpr=0.05)
    assert (det.reject(xtr[200:400]).float().mean()) <= 0.05
    save_detector(det, tmp_path / "d.safetensors")
    back = load_detector(tmp_path / "d.safetensors", digits_mlp)
    assert isinstance(back, _Distance) and back.scale == 2.0
    assert torch.equal(back.score(xte), det.score(xte)) and torch.equal(back.threshold, det.threshold)
    assert all(torch.equal(v, digits_mlp.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert "model" not in dict(det.named_children())  # the classifier is never saved with the detector
    assert det.score(xte[:0]).shape == (0,) and det.reject(xte[:0]).shape == (0,)  # an empty batch is no error


def test_detector_file_refuses_another_classifier(tmp_path, digits, digits_mlp):
    xtr, _, xte, _ = digits
    det = make_detector("test-distance").fit(digits_mlp, xtr[:100], xte[:20])
    save_detector(det, tmp_path / "d.safetensors")
    other = copy.deepcopy(digits_mlp)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="different classifier"):
        load_detector(tmp_path / "d.safetensors", other)


def test_bad_specs_get_one_line_errors(digits_mlp):
    with pytest.raises(ValueError, match="did you mean 'test-distance'"):
        make_detector("test-distanse")
    with pytest.raises(ValueError, match="key=value"):
        make_detector("test-distance:2.0")
    with pytest.raises(RuntimeError, match="not fitted"):
        make_detector("test-distance").score(torch.zeros(1, 1, 8, 8))
