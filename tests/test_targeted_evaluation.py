"""``advlab evaluate --targeted``: every attack pushes towards a target, and success means reaching it."""

import pytest
import torch

import advlab
from advlab.attacks import get_attack
from advlab.evaluation.targeting import targeted_data


@pytest.fixture(scope="module")
def data(digits):
    _, _, xte, yte = digits
    return xte[:40], yte[:40]


def test_success_is_reaching_the_target_and_matches_an_independent_count(digits_mlp, data):
    x, y = data
    ev = advlab.evaluate(digits_mlp, (x, y), ["pgd"], [0.3], targeted="random", progress=False, checks=False)
    row = next(r for r in ev.rows if r.attack == "pgd")
    _, _, target = targeted_data(digits_mlp, x, y, "random", 0)
    assert bool((target != y).all())
    # the same attack, run by hand with the same targets and seeds, judged by the model's own prediction
    threat = advlab.ThreatModel("linf", 0.3, targeted=True)
    from advlab.evaluation.defaults import attack_params
    from advlab.results.plan import Job, batch_seed

    job = Job("pgd", "linf", 0.3, (0.3,))
    gen = torch.Generator().manual_seed(batch_seed(0, job.key, 0))
    res = get_attack("pgd")(digits_mlp, x, y, threat, target=target, generator=gen,
                            **attack_params(get_attack("pgd"), job, {}))
    with torch.no_grad():
        clean_ok = digits_mlp(x).argmax(1) == y
        hit = digits_mlp(res.x_adv).argmax(1) == target
    assert row.success_rate == pytest.approx(float((hit & clean_ok).sum()) / float(clean_ok.sum()))
    assert row.acc1_adv == pytest.approx(float((clean_ok & ~hit).double().mean()))
    assert row.success_rate > 0.5  # a targeted PGD at 0.3 reaches most targets on the digits MLP
    assert "Targeted (random)" in str(ev)


def test_all_attacks_each_example_towards_every_other_class(digits_mlp, data):
    x, y = data[0][:6], data[1][:6]
    xs, ys, ts = targeted_data(digits_mlp, x, y, "all", 0)
    assert len(xs) == len(ys) == len(ts) == 6 * 9
    for i in range(6):
        assert sorted(ts[9 * i: 9 * (i + 1)].tolist()) == [c for c in range(10) if c != int(y[i])]
        assert torch.equal(xs[9 * i], x[i]) and bool((ys[9 * i: 9 * (i + 1)] == y[i]).all())
    ev = advlab.evaluate(digits_mlp, (x, y), ["fgsm"], [0.3], targeted="all", progress=False, checks=False)
    assert all(r.n == 54 for r in ev.rows)


def test_least_likely_targets_are_the_least_likely_class(digits_mlp, data):
    x, y = data
    _, _, t = targeted_data(digits_mlp, x, y, "least-likely", 0)
    with torch.no_grad():
        z = digits_mlp(x)
    z[torch.arange(len(y)), y] = float("inf")  # (the true class is never a target)
    assert torch.equal(t, z.argmin(1)) and bool((t != y).all())


def test_attacks_without_a_targeted_mode_are_refused_or_left_out_of_the_defaults(digits_mlp, data):
    with pytest.raises(ValueError, match="deepfool has no targeted mode"):
        advlab.evaluate(digits_mlp, data, ["pgd", "deepfool"], [0.3], targeted="random", progress=False)
    with pytest.raises(ValueError, match="targeted: expected one of"):
        advlab.evaluate(digits_mlp, data, ["pgd"], [0.3], targeted="sideways", progress=False)
    ev = advlab.evaluate(digits_mlp, data, None, [0.3], targeted="random", progress=False,
                         params={"cw": {"steps": 10, "binary_search_steps": 1}, "deepfool": {"steps": 5}})
    attacks = {r.attack for r in ev.rows}
    assert {"noise", "semantic", "deepfool"}.isdisjoint(attacks) and {"fgsm", "pgd", "cw"} <= attacks
    assert ev.config["untargetable"] == ["noise", "semantic", "deepfool"]
    assert ev.checks_skipped is not None and "targeted" in ev.checks_skipped
