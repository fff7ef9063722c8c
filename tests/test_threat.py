import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab import ThreatModel
from advlab.threat import distance

TOL = 1e-5


def batch(seed, n=3, c=1, h=4, w=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g), torch.randn(n, c, h, w, generator=g)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2", "l1", "l0"]),
       eps=st.floats(0.0, 5.0), scale=st.floats(0.01, 3.0))
def test_projection_lands_in_ball_and_bounds(seed, norm, eps, scale):
    x, v = batch(seed)
    if norm == "l0":
        eps = float(int(eps * 3))
    tm = ThreatModel(norm, eps)
    p = tm.project(x, x + scale * v)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    assert bool((tm.distance(x, p) <= eps + TOL).all())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2", "l1", "l0"]), eps=st.floats(0.01, 4.0))
def test_projection_is_idempotent_and_fixes_inside_points(seed, norm, eps):
    x, v = batch(seed)
    if norm == "l0":
        eps = float(max(1, int(eps * 3)))
    tm = ThreatModel(norm, eps)
    p = tm.project(x, x + v)
    assert torch.allclose(tm.project(x, p), p, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["l2", "l1"]), eps=st.floats(0.05, 3.0))
def test_projection_is_the_nearest_feasible_point(seed, norm, eps):
    """Exactness: no random feasible point is closer to the target than the projection."""
    x, v = batch(seed, n=1)
    tm = ThreatModel(norm, eps)
    target = x + v
    p = tm.project(x, target)
    best = float((p - target).norm())
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(200):
        cand = tm.random_init(x, g)
        # mix toward the projection to probe its neighbourhood too
        t = float(torch.rand(1, generator=g))
        cand = tm.project(x, t * p + (1 - t) * cand)
        assert float((cand - target).norm()) >= best - 1e-4


def test_l1_projection_matches_a_brute_force_solver():
    """Compare with an independent solver: projected sorting on |v| with box caps (1-D search)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 3, 3, generator=g)
    v = 2 * torch.randn(1, 1, 3, 3, generator=g)
    eps = 0.7
    p = ThreatModel("l1", eps).project(x, x + v)
    d, xf = v.flatten().double().numpy(), x.flatten().double().numpy()
    cap = np.where(d >= 0, 1 - xf, xf)
    lams = np.linspace(0, np.abs(d).max(), 200_001)
    norms = np.minimum(np.maximum(np.abs(d)[None] - lams[:, None], 0), cap[None]).sum(1)
    lam = lams[np.argmax(norms <= eps)]
    ref = np.sign(d) * np.minimum(np.maximum(np.abs(d) - lam, 0), cap)
    assert np.allclose((p - x).flatten().numpy(), ref, atol=1e-4)
    assert abs(float((p - x).abs().sum()) - eps) < 1e-4


def test_l0_keeps_the_largest_changes():
    x = torch.full((1, 1, 1, 4), 0.5)
    x_adv = x + torch.tensor([0.1, -0.4, 0.3, 0.05]).view(1, 1, 1, 4)
    p = ThreatModel("l0", 2).project(x, x_adv)
    assert torch.allclose((p - x).flatten(), torch.tensor([0.0, -0.4, 0.3, 0.0]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2", "l1", "l0"]), eps=st.floats(0.0, 3.0))
def test_random_init_is_in_ball_bounds_and_seeded(seed, norm, eps):
    x, _ = batch(seed)
    if norm == "l0":
        eps = float(int(eps * 3))
    tm = ThreatModel(norm, eps)
    a = tm.random_init(x, torch.Generator().manual_seed(seed))
    b = tm.random_init(x, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert bool((tm.distance(x, a) <= eps + TOL).all())


def test_distances_against_numpy():
    x, v = batch(3)
    xa = (x + 0.1 * v).clamp(0, 1)
    d = (xa - x).flatten(1).numpy()
    assert np.allclose(distance(x, xa, "l2").numpy(), np.linalg.norm(d, axis=1), atol=1e-6)
    assert np.allclose(distance(x, xa, "l1").numpy(), np.abs(d).sum(1), atol=1e-5)
    assert np.allclose(distance(x, xa, "linf").numpy(), np.abs(d).max(1))
    assert np.array_equal(distance(x, xa, "l0").numpy(), (d != 0).sum(1))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"norm": "l3", "eps": 0.1}, r"norm: expected one of .*got 'l3'"),
    ({"norm": "linf", "eps": -0.1}, r"eps: expected a number >= 0, got -0.1"),
    ({"norm": "linf", "eps": float("nan")}, r"eps: expected a number >= 0"),
    ({"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)}, r"bounds: expected finite lo < hi"),
])
def test_bad_threat_models(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThreatModel(**kwargs)
