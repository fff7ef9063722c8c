"""The robust detector variants (advlab.poison.robust): planted poisons flagged, clean classes left alone, exact pieces."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.poison import (
    detection_rates,
    pair_flip,
    penultimate_features,
    robust_activation_clustering,
    robust_spectral,
)
from advlab.poison.robust import robust_whiten, separation, two_means_1d, valley

DETECTORS = [robust_spectral, robust_activation_clustering]


def planted(seed: int = 0, n: int = 400, d: int = 16, poisons: int = 30, shift: float = 12.0):
    """Three Gaussian classes; class 1 also holds ``poisons`` vectors shifted ``shift`` σ along one axis."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(3 * n + poisons, d, generator=g)
    y = torch.cat([torch.arange(3).repeat_interleave(n), torch.ones(poisons, dtype=torch.long)])
    feats[:, 0] += 3.0 * y
    feats[3 * n:, 1] += shift
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[3 * n:] = True
    return feats, y, mask


@pytest.mark.parametrize("detector", DETECTORS)
def test_a_planted_poison_is_flagged_and_nothing_else(detector):
    feats, y, mask = planted()
    det = detector(feats, y)
    rates = detection_rates(det, mask, y, inspected=1)
    assert rates["tpr"] == 1.0 and rates["fpr_all"] == 0.0
    assert det.scores[mask].min() > det.scores[~mask].max()
    first = det.details[1][0]
    assert first["flagged"] == 1.0 and first["size"] == 30 and first["valley"] <= 0.5
    assert not any(r["flagged"] for c in (0, 2) for r in det.details[c])


@pytest.mark.parametrize("detector", DETECTORS)
def test_relabelled_digits_are_flagged_in_the_digits_mlp_features(detector, digits, digits_mlp):
    """An obvious poison on the digits set: 14 images of 0 relabelled 7, read by the clean digits MLP.

    Every poison is flagged. The cut is calibrated for MNIST's 6 000-image classes: here a class holds
    about 150 images and the valley's counts are small, so clean images are flagged too (measured:
    spectral-robust 5 % of the sevens, activation-clustering-robust about 20 % of every class; a
    limitation stated in docs/poisoning.md), which this test does not bound.
    """
    xtr, ytr, _, _ = digits
    p = pair_flip(xtr, ytr, fraction=0.01, source=0, target=7, generator=torch.Generator().manual_seed(0))
    det = detector(penultimate_features(digits_mlp, p.x), p.y)
    assert detection_rates(det, p.mask, p.y, inspected=7)["tpr"] == 1.0
    assert det.details[7][0]["flagged"] == 1.0 and det.details[7][0]["size"] == len(p.poisoned_idx)


@pytest.mark.parametrize("detector", DETECTORS)
def test_unimodal_classes_are_left_alone(detector):
    """A Gaussian class and a heavy-tailed one (Student t, 3 degrees of freedom): a split cuts a tail, no valley."""
    g = torch.Generator().manual_seed(2)
    gauss = torch.randn(1500, 12, generator=g)
    chi = torch.randn(1500, 1, generator=g).pow(2) + torch.randn(1500, 1, generator=g).pow(2) \
        + torch.randn(1500, 1, generator=g).pow(2)
    heavy = torch.randn(1500, 12, generator=g) / (chi / 3).sqrt()
    feats, y = torch.cat([gauss, heavy + 5.0]), torch.arange(2).repeat_interleave(1500)
    det = detector(feats, y)
    assert not det.flagged.any()
    assert all(r["valley"] > 0.5 for rs in det.details.values() for r in rs)


@pytest.mark.parametrize("detector", DETECTORS)
def test_deterministic_and_inputs_untouched(detector):
    feats, y, _ = planted(seed=3)
    f0, y0 = feats.clone(), y.clone()
    a, b = detector(feats, y), detector(feats, y)
    assert torch.equal(a.flagged, b.flagged) and torch.equal(a.scores, b.scores) and a.details == b.details
    assert torch.equal(feats, f0) and torch.equal(y, y0)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=12))
def test_two_means_1d_is_the_optimal_split(values):
    s = torch.tensor(values, dtype=torch.float64)
    group = two_means_1d(s)
    assert 1 <= 2 * int(group.sum()) <= len(s)  # the smaller group, never empty

    def sse(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())

    srt = torch.sort(s).values
    best = min(sse(srt[:i], srt[i:]) for i in range(1, len(s)))
    assert sse(s[group], s[~group]) <= best + 1e-9 * (1 + best)
    assert float(s[group].max()) <= float(s[~group].min()) or float(s[group].min()) >= float(s[~group].max())


def test_valley_and_separation_hand_cases():
    two = torch.cat([torch.zeros(50), torch.full((10,), 10.0)]) + torch.linspace(0, 0.1, 60)
    group = torch.arange(60) >= 50
    assert valley(two, group) == 0.0 and separation(two, group) > 50
    flat = torch.linspace(0, 1, 1001)
    half = flat > 0.5
    assert 0.8 < valley(flat, half) < 1.2
    assert valley(flat, torch.zeros(1001, dtype=torch.bool)) == float("inf") and separation(flat, flat > 2) == 0.0


def test_robust_whitening_sets_far_outliers_apart():
    """10 % outliers 40σ out along the bulk's narrowest axis: whitened by the bulk, they stand far apart.

    The bulk's axes span 1σ to 6σ (variances 1 to 36); whitened, its variances differ by less than 2.5×
    (not 1×: the 5 % shrinkage toward the mean eigenvalue keeps narrow axes a little narrower).
    """
    g = torch.Generator().manual_seed(4)
    bulk = torch.randn(900, 6, generator=g) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    outliers = torch.randn(100, 6, generator=g) + torch.tensor([40.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    w = robust_whiten(torch.cat([bulk, outliers]), dims=6, trim=0.15)
    norms = w.norm(dim=1)
    assert w.shape == (1000, 6)
    assert norms[900:].min() > 3 * norms[:900].max()
    spread = torch.cov(w[:900].T).diagonal()
    assert spread.max() / spread.min() < 2.5


@pytest.mark.parametrize(("kw", "arg"), [
    ({"whiten_dims": 0}, "whiten_dims"), ({"trim": 0.6}, "trim"), ({"rounds": 0}, "rounds"),
    ({"max_share": 1.5}, "max_share"), ({"max_valley": -1.0}, "max_valley"),
    ({"min_separation": -0.5}, "min_separation"),
])
@pytest.mark.parametrize("detector", DETECTORS)
def test_bad_options_are_one_line_errors(detector, kw, arg):
    feats, y, _ = planted()
    with pytest.raises(ValueError, match=f"^{arg}:") as e:
        detector(feats, y, **kw)
    assert "\n" not in str(e.value)


def test_bad_input_names_the_argument():
    feats, y, _ = planted()
    for call, arg in [(lambda: robust_activation_clustering(feats, y, dims=0), "dims"),
                      (lambda: robust_spectral(feats[None], y), "features"),
                      (lambda: robust_spectral(feats, y[:-1]), "y")]:
        with pytest.raises(ValueError, match=f"^{arg}:"):
            call()
    with pytest.raises(TypeError, match=r"^seed:"):
        robust_activation_clustering(feats, y, seed=0.5)  # type: ignore[arg-type]
