"""L0 attacks: JSMA (Papernot et al. 2016) and Sparse-RS (Croce et al. 2022), on the 8×8 digits MLP."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from advlab import ThreatModel
from advlab.attacks import choose_targets, jsma, noise, sparse_rs
from advlab.attacks.saliency import best_pairs
from advlab.attacks.sparse import alpha_schedule
from advlab.models.blackbox import BlackBox

N = 48
D = 64  # 8×8 digits, one channel
GAMMA_CAP = math.floor(0.145 * D)  # 9 features, so at most 4 pairs = 8 changed


def l0(x, x_adv):
    return (x_adv != x).flatten(1).sum(1)


@pytest.fixture(scope="module")
def batch(digits):
    _, _, xte, yte = digits
    return xte[:N], yte[:N]


@pytest.fixture(scope="module")
def targets(digits_mlp, batch):
    x, y = batch
    return choose_targets(digits_mlp, x, y, "random", generator=torch.Generator().manual_seed(0))


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


# ---- the pair search ---------------------------------------------------------------------------------


def brute_force(a, b):
    """The best pair's score over all p ≠ q, by scoring every pair."""
    s = (a[:, :, None] + a[:, None, :]).clamp_min(0) * (b[:, :, None] + b[:, None, :]).clamp_min(0)
    s.diagonal(dim1=1, dim2=2).zero_()
    return s.flatten(1).amax(1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(2, 300), first_k=st.integers(2, 16),
       masked=st.floats(0.0, 0.9), aligned=st.booleans())
def test_best_pairs_is_the_exact_maximiser(seed, d, first_k, masked, aligned):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(5, d, generator=g)
    b = a.clone() if aligned else torch.randn(5, d, generator=g)
    out = torch.rand(5, d, generator=g) < masked
    a, b = a.masked_fill(out, -math.inf), b.masked_fill(out, -math.inf)
    found, p, q = best_pairs(a, b, first_k=first_k)
    best = brute_force(a, b)
    rows = torch.arange(5)
    got = (a[rows, p] + a[rows, q]).clamp_min(0) * (b[rows, p] + b[rows, q]).clamp_min(0)
    assert torch.equal(found, best > 0)
    assert bool((p != q)[found].all())
    assert torch.allclose(got[found], best[found])
    assert not bool(out[rows, p][found].any() or out[rows, q][found].any())  # never outside the domain


# ---- JSMA -------------------------------------------------------------------------------------------------


def test_jsma_targeted_reaches_the_target_changing_at_most_gamma_of_the_features(digits_mlp, batch, targets):
    x, y = batch
    res = jsma(digits_mlp, x, y, ThreatModel("l0", math.inf, targeted=True), target=targets)
    pred = predict(digits_mlp, res.x_adv)
    assert torch.equal(res.success, pred == targets)
    # measured 36 of 48 (0.75): γ = 14.5% of an 8×8 image is 4 pairs, little room for a random target
    assert float(res.success.float().mean()) >= 0.7
    changed = l0(x, res.x_adv)
    assert int(changed.max()) <= GAMMA_CAP
    assert bool((changed[~res.success] == 0).all())  # a failure returns the clean image
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    # θ = +1: each changed feature went up to the upper bound
    moved = res.x_adv != x
    assert bool((res.x_adv[moved] == 1.0).all())
    wider = jsma(digits_mlp, x, y, ThreatModel("l0", math.inf, targeted=True), target=targets, gamma=0.25)
    assert float(wider.success.float().mean()) >= 0.95  # measured 48 of 48 with 8 pairs
    assert int(l0(x, wider.x_adv).max()) <= 16


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("jacobian", ["softmax", "logits"])
def test_jsma_both_jacobians_untargeted_and_theta_minus_one(jacobian, weighted, digits_mlp, batch):
    x, y = batch
    res = jsma(digits_mlp, x, y, ThreatModel("l0", math.inf), jacobian=jacobian, weighted=weighted)
    assert torch.equal(res.success, predict(digits_mlp, res.x_adv) != y)
    assert float(res.success.float().mean()) >= 0.9
    down = jsma(digits_mlp, x, y, ThreatModel("l0", math.inf), theta=-1, jacobian=jacobian, weighted=weighted)
    moved = down.x_adv != x
    assert bool((down.x_adv[moved] == 0.0).all()) and bool((x[moved] > 0).all())
    assert int(l0(x, down.x_adv).max()) <= GAMMA_CAP


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.integers(0, 30), gamma=st.floats(0.01, 1.0), targeted=st.booleans())
def test_jsma_l0_never_exceeds_the_budget_or_gamma(eps, gamma, targeted, digits_mlp, batch, targets):
    x, y = batch[0][:12], batch[1][:12]
    threat = ThreatModel("l0", float(eps), targeted=targeted)
    res = jsma(digits_mlp, x, y, threat, target=targets[:12] if targeted else None, gamma=gamma)
    changed = l0(x, res.x_adv)
    assert int(changed.max()) <= min(eps, math.floor(gamma * D + 1e-9))
    assert bool((changed % 2 == 0).all())  # pairs
    pred = predict(digits_mlp, res.x_adv)
    assert torch.equal(res.success, pred == targets[:12] if targeted else pred != y)


def test_jsma_is_deterministic_and_leaves_the_model_untouched(digits_mlp, batch, targets):
    x, y = batch
    model = copy.deepcopy(digits_mlp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = x.clone()
    threat = ThreatModel("l0", math.inf, targeted=True)
    a = jsma(model, x, y, threat, target=targets, generator=torch.Generator().manual_seed(1))
    b = jsma(model, x, y, threat, target=targets)  # no generator: JSMA draws nothing
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert not model.training and torch.equal(x, x0)


# ---- Sparse-RS --------------------------------------------------------------------------------------------


def test_sparse_rs_fools_the_digits_mlp_within_eps_and_the_query_budget(digits_mlp, batch):
    x, y = batch
    box = BlackBox(digits_mlp, output="logits")
    res = sparse_rs(box, x, y, ThreatModel("l0", 5.0), max_queries=300, generator=torch.Generator().manual_seed(0))
    pred = predict(digits_mlp, res.x_adv)
    assert torch.equal(res.success, pred != y)
    assert float((pred == y).float().mean()) <= 0.2  # clean Acc@1 about 0.97
    assert int(l0(x, res.x_adv).max()) <= 5
    assert int(res.queries.max()) <= 300 and box.total_queries == int(res.queries.sum())
    clean_wrong = predict(digits_mlp, x) != y
    assert bool((res.queries[clean_wrong] == 1).all())  # already misclassified: the clean query only
    assert torch.equal(res.x_adv[clean_wrong], x[clean_wrong])
    lo_hi = (res.x_adv == 0) | (res.x_adv == 1)
    assert bool(lo_hi[res.x_adv != x].all())  # every changed element is at a vertex of the box


def test_sparse_rs_targeted_and_deterministic_under_seed(digits_mlp, batch, targets):
    x, y = batch[0][:24], batch[1][:24]
    t = targets[:24]
    threat = ThreatModel("l0", 10.0, targeted=True)
    runs = [sparse_rs(digits_mlp, x, y, threat, target=t, max_queries=200, generator=torch.Generator().manual_seed(s))
            for s in (3, 3, 4)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].queries, runs[1].queries)
    assert not torch.equal(runs[0].x_adv, runs[2].x_adv)
    assert torch.equal(runs[0].success, predict(digits_mlp, runs[0].x_adv) == t)
    assert float(runs[0].success.float().mean()) >= 0.5


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.integers(0, 70), c=st.integers(1, 3), seed=st.integers(0, 2**16),
       loss=st.sampled_from(["margin", "ce", "dlr"]), max_queries=st.integers(2, 40))
@example(eps=62, c=1, seed=1, loss="margin", max_queries=10)  # 2 unperturbed pixels left, a swap of 3 asked for
def test_sparse_rs_l0_never_exceeds_eps_nor_queries_the_budget(eps, c, seed, loss, max_queries, digits_mlp, batch):
    """Any ε (0, a few elements, more than the image has), any channel count: L0 ≤ ε, queries ≤ budget."""
    x, y = batch[0][:6], batch[1][:6]
    x = x.repeat(1, c, 1, 1)
    model = (lambda t: digits_mlp(t.mean(1, keepdim=True))) if c > 1 else digits_mlp
    res = sparse_rs(model, x, y, ThreatModel("l0", float(eps)), max_queries=max_queries, loss=loss,
                    generator=torch.Generator().manual_seed(seed))
    assert int(l0(x, res.x_adv).max()) <= eps
    assert int(res.queries.max()) <= max_queries
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


def test_alpha_schedule_follows_the_paper_rescaled_to_the_budget():
    assert alpha_schedule(0.3, 0, 10000) == pytest.approx(0.3)
    assert alpha_schedule(0.3, 1, 10000) == pytest.approx(0.15)
    assert alpha_schedule(0.3, 51, 10000) == pytest.approx(0.075)
    assert alpha_schedule(0.3, 9000, 10000) == pytest.approx(0.015)
    assert alpha_schedule(0.3, 100, 1000) == alpha_schedule(0.3, 1000, 10000) == pytest.approx(0.05)


def test_noise_baseline_under_l0_changes_at_most_eps_elements(digits_mlp, batch):
    x, y = batch
    res = noise(digits_mlp, x, y, ThreatModel("l0", 7.0), generator=torch.Generator().manual_seed(0))
    changed = l0(x, res.x_adv)
    assert int(changed.max()) <= 7 and float(changed.float().mean()) > 5  # nearly every noisy element kept
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


def test_an_l0_evaluation_runs_the_sparse_attacks_by_default(digits_mlp, digits):
    import advlab

    _, _, xte, yte = digits
    ev = advlab.evaluate(digits_mlp, (xte[:24], yte[:24]), None, [4, 8], norm="l0", progress=False,
                         params={"sparse-rs": {"max_queries": 100}})
    assert ev.config["attacks"] == ["noise", "semantic", "jsma", "sparse-rs"]
    rows = {(r.attack, r.eps): r for r in ev.rows}
    assert rows[("jsma", 8.0)].norm == "l0" and rows[("sparse-rs", 8.0)].norm == "l0"
    assert rows[("jsma", 8.0)].acc1_adv <= rows[("jsma", 4.0)].acc1_adv
