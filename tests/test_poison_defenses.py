"""Poison detectors: they flag a planted, obvious poison; STRIP's entropy and the AUC behave."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.poison import (
    activation_clustering,
    apply_trigger,
    badnets,
    detection_rates,
    far_at_frr,
    penultimate_features,
    remove_flagged,
    roc_auc,
    spectral_signatures,
    strip_entropy,
)
from advlab.train import TrainConfig


def planted(seed: int = 0, n: int = 400, d: int = 16, poisons: int = 20):
    """Three classes of Gaussian features; class 1 also holds ``poisons`` vectors shifted far along one axis."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(3 * n + poisons, d, generator=g)
    y = torch.cat([torch.arange(3).repeat_interleave(n), torch.ones(poisons, dtype=torch.long)])
    feats[:, 0] += 3.0 * y  # class means apart
    # The obvious poison: far out along one axis. Far, because ICA whitens every component to unit
    # variance: a 5% cluster only 12σ out becomes ~4σ after whitening and 2-means prefers to halve the
    # noise (measured: activation clustering with ICA finds none of them at 12σ, all at 40σ).
    feats[3 * n:, 1] += 40.0
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[3 * n:] = True
    return feats, y, mask


@pytest.mark.parametrize("detector", [
    lambda f, y: spectral_signatures(f, y, removal=0.075),
    lambda f, y: activation_clustering(f, y),
    lambda f, y: activation_clustering(f, y, reduce="pca"),
])
def test_detectors_flag_a_planted_poison(detector):
    feats, y, mask = planted()
    det = detector(feats, y)
    rates = detection_rates(det, mask, y, inspected=1)
    assert rates["tpr"] == 1.0
    assert rates["fpr_class"] <= 0.05
    assert det.scores[mask].min() > det.scores[(y == 1) & ~mask].median()
    x = torch.rand(len(y), 1, 2, 2)
    xc, yc = remove_flagged(x, y, det)
    assert torch.equal(yc, y[~det.flagged])
    assert len(xc) == len(y) - int(det.flagged.sum()) and not det.flagged[mask].logical_not().any()


def test_spectral_removes_exactly_its_share_of_every_class():
    feats, y, _ = planted()
    det = spectral_signatures(feats, y, removal=0.1)
    for c in range(3):
        n = int((y == c).sum())
        assert int(det.flagged[y == c].sum()) == int(0.1 * n + 0.5)


def test_features_at_depth_two_read_the_layer_before_the_penultimate(digits_mlp, digits):
    x = digits[0][:5]
    linears = [m for m in digits_mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert penultimate_features(digits_mlp, x, depth=2).shape == (5, linears[-2].in_features)
    assert penultimate_features(digits_mlp, x).shape == (5, linears[-1].in_features)
    with pytest.raises(ValueError, match="depth"):
        penultimate_features(digits_mlp, x, depth=len(linears) + 1)


def test_activation_clustering_leaves_a_clean_class_alone():
    """One Gaussian blob per class: 2-means halves it, so no cluster is small enough to flag."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(600, 8, generator=g)
    y = torch.arange(2).repeat_interleave(300)
    assert not activation_clustering(feats, y).flagged.any()


def test_features_are_the_last_layer_input(digits, digits_mlp):
    _, _, xte, _ = digits
    feats = penultimate_features(digits_mlp, xte[:10])
    head = digits_mlp.net[-1]
    assert feats.shape == (10, 64) and torch.allclose(head(feats), digits_mlp(xte[:10]), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(pos=st.lists(st.integers(0, 5), min_size=1, max_size=30), neg=st.lists(st.integers(0, 5), min_size=1,
                                                                                max_size=30))
def test_roc_auc_matches_the_pairwise_definition(pos, neg):
    p, q = torch.tensor(pos, dtype=torch.float64), torch.tensor(neg, dtype=torch.float64)
    pairs = ((p[:, None] > q[None]).double() + 0.5 * (p[:, None] == q[None]).double()).mean()
    assert roc_auc(p, q) == pytest.approx(float(pairs))


def test_strip_entropy_is_low_for_a_constant_model_and_deterministic(digits, digits_mlp):
    _, _, xte, _ = digits
    e1 = strip_entropy(digits_mlp, xte[:20], xte[100:200], n=8, generator=torch.Generator().manual_seed(3))
    e2 = strip_entropy(digits_mlp, xte[:20], xte[100:200], n=8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(e1, e2) and e1.shape == (20,) and (e1 >= 0).all() and (e1 <= torch.log(torch.tensor(10.))).all()
    constant = strip_entropy(lambda x: torch.zeros(len(x), 10).index_fill_(1, torch.tensor([2]), 50.0),
                             xte[:5], xte[100:200], n=4)
    assert constant.max() < 1e-6
    assert far_at_frr(torch.tensor([5.0, 6.0]), torch.arange(100.0)) == 1.0


def test_strip_separates_triggered_inputs_of_a_backdoored_model(digits):
    from advlab.models import create_model
    from advlab.train import fit

    xtr, ytr, xte, yte = digits
    p = badnets(xtr, ytr, fraction=0.1, target=7, generator=torch.Generator().manual_seed(0))
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=64, mean=0.3, std=0.4)
    fit(model, (p.x, p.y), (xte, yte), TrainConfig(epochs=30, batch_size=64, lr=3e-3, seed=0), progress=False)
    clean = strip_entropy(model, xte[:150], xte[150:], n=16)
    triggered = strip_entropy(model, apply_trigger(xte[:150][yte[:150] != 7], p.trigger), xte[150:], n=16)
    assert roc_auc(-triggered, -clean) > 0.8


def test_bad_input_names_the_argument():
    feats, y, _ = planted()
    for call, arg in [(lambda: spectral_signatures(feats, y, removal=1.5), "removal"),
                      (lambda: activation_clustering(feats, y, max_share=-1.0), "max_share"),
                      (lambda: activation_clustering(feats, y, reduce="svd"), "reduce"),
                      (lambda: spectral_signatures(feats[None], y), "features"),
                      (lambda: spectral_signatures(feats, y[:-1]), "y")]:
        with pytest.raises(ValueError, match=f"^{arg}:"):
            call()
