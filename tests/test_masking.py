"""Input-transformation defenses, EOT/BPDA, APGD, and the gradient-masking checks in evaluate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab import ThreatModel, evaluate
from advlab.attacks import get_attack, loss_grad
from advlab.attacks.adaptive import eot_bpda
from advlab.attacks.autopgd import checkpoints, dlr_loss, normalised_margin
from advlab.defenses.wrappers import (
    BitDepth,
    Defended,
    GaussianSmoothing,
    MedianSmoothing,
    RandomResizePad,
    Thermometer,
    parse_defense,
    wrap_defense,
)
from advlab.evaluation.checks import run_checks

EPS = 0.15


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _attack_acc(model, x, y, name, eps=EPS, **params):
    res = get_attack(name)(model, x, y, ThreatModel("linf", eps), generator=torch.Generator().manual_seed(0), **params)
    return _acc(model, res.x_adv, y), res


# ---------------------------------------------------------------------------------------------
# Wrappers


def test_transforms_keep_shape_bounds_and_meaning(digits):
    _, _, x, _ = digits
    x = x[:20]
    for spec in ("bitdepth:3", "median:3", "gaussian:1", "jpeg:75", "resize:6"):
        out = parse_defense(spec)(x)
        assert out.shape == x.shape, spec
        assert float(out.min()) >= 0 and float(out.max()) <= 1 + 1e-6, spec
    levels = torch.unique(BitDepth(2)(x))
    assert len(levels) <= 4 and torch.allclose(levels * 3, (levels * 3).round())
    const = torch.full((2, 1, 8, 8), 0.4)
    assert torch.allclose(MedianSmoothing(3)(const), const)
    assert torch.allclose(GaussianSmoothing(1.0)(const), const, atol=1e-6)
    enc = Thermometer(4)(torch.tensor([0.0, 0.3, 0.6, 1.0]).view(4, 1, 1, 1))
    assert enc.squeeze().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_random_resize_is_random_but_seeded(digits):
    _, _, x, _ = digits
    a, b = RandomResizePad(5, seed=1), RandomResizePad(5, seed=1)
    outs_a = [a(x[:4]) for _ in range(5)]
    outs_b = [b(x[:4]) for _ in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(outs_a, outs_b, strict=True))
    assert any(not torch.equal(outs_a[0], o) for o in outs_a[1:])


def test_bad_defense_specs_are_one_line_errors(digits_mlp):
    with pytest.raises(ValueError, match=r"did you mean 'bitdepth'"):
        parse_defense("bitdeph:3")
    with pytest.raises(ValueError, match="bits must be in"):
        parse_defense("bitdepth:0")
    with pytest.raises(ValueError, match="takes a int"):
        parse_defense("median:x")
    with pytest.raises(ValueError, match="trained on the encoding"):
        wrap_defense(digits_mlp, "thermometer:8")


def test_bpda_is_identity_backward_and_eot_averages(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:30], y[:30]
    wrapped = wrap_defense(digits_mlp, "bitdepth:3")
    _, naive, _ = loss_grad(wrapped, x, y)
    assert torch.count_nonzero(naive) == 0  # rounding has a zero gradient
    _, g, _ = eot_bpda(1)(wrapped, x, y, lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="none"))
    _, expected, _ = loss_grad(digits_mlp, BitDepth(3)(x), y)
    assert torch.allclose(g, expected, atol=1e-6)
    # EOT over a deterministic model is the plain gradient
    _, g1, _ = eot_bpda(4)(digits_mlp, x, y, lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="none"))
    assert torch.allclose(g1, loss_grad(digits_mlp, x, y)[1], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# APGD


def test_apgd_checkpoints_follow_the_paper():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 10), st.floats(-5, 5), st.integers(0, 1000))
def test_dlr_is_invariant_to_shifting_and_scaling_logits(scale, shift, seed):
    z = torch.randn(8, 10, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(seed + 1))
    assert torch.allclose(dlr_loss(z, y), dlr_loss(scale * z + shift, y), atol=1e-4, rtol=1e-4)


def test_apgd_is_at_least_as_strong_as_pgd_and_the_ensemble_strongest(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:150], y[:150]
    pgd, _ = _attack_acc(digits_mlp, x, y, "pgd", eps=0.08, steps=40)
    apgd, res = _attack_acc(digits_mlp, x, y, "apgd", eps=0.08)
    ens, eres = _attack_acc(digits_mlp, x, y, "apgd-ensemble", eps=0.08, max_queries=300)
    assert apgd <= pgd + 0.01, (apgd, pgd)
    assert ens <= apgd, (ens, apgd)
    for r in (res, eres):
        assert float((r.x_adv - x).abs().max()) <= 0.08 + 1e-6
    assert torch.equal(eres.success, torch.tensor([_ != t for _, t in zip(digits_mlp(eres.x_adv).argmax(1), y,
                                                                              strict=True)]))


def test_ensemble_borderline_runs_more_square_on_the_closest_survivors_and_is_never_weaker(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:120], y[:120]
    params = {"eps": 0.05, "steps": 10, "candidates": 3, "max_queries": 60}
    _, base = _attack_acc(digits_mlp, x, y, "apgd-ensemble", **params)
    _, more = _attack_acc(digits_mlp, x, y, "apgd-ensemble", borderline=0.5, **params)
    robust = int((~base.success).sum())
    assert robust >= 4  # the case needs survivors to choose among
    assert bool((more.success | ~base.success).all())  # everything broken before is still broken
    extra = (more.queries > base.queries).nonzero().squeeze(1)
    assert len(extra) == -(-robust // 2)  # ⌈0.5 × survivors⌉ got more Square queries, nobody else
    assert not bool(base.success[extra].any())
    assert float((more.x_adv - x).abs().max()) <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="borderline"):
        _attack_acc(digits_mlp, x, y, "apgd-ensemble", borderline=1.5, **params)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 10), st.floats(-5, 5), st.integers(0, 1000))
def test_normalised_margin_is_invariant_to_shifting_and_scaling_and_negative_iff_wrong(scale, shift, seed):
    z = torch.randn(8, 10, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(seed + 1))
    m = normalised_margin(z, y)
    assert torch.allclose(m, normalised_margin(scale * z + shift, y), atol=1e-4, rtol=1e-4)
    assert torch.equal(m < 0, z.argmax(1) != y)


# ---------------------------------------------------------------------------------------------
# Checks and the adaptive attack


def test_honest_model_raises_no_warning(digits, digits_mlp):
    _, _, x, y = digits
    fired = [c for c in run_checks(digits_mlp, x, y, "linf", EPS, n=100) if c.fired]
    assert fired == []


def test_checks_square_queries_is_the_old_name_of_max_queries(digits, digits_mlp):
    _, _, x, y = digits
    new = run_checks(digits_mlp, x, y, "linf", EPS, n=20, max_queries=50)
    with pytest.warns(DeprecationWarning, match="'square_queries' is deprecated, use 'max_queries'"):
        old = run_checks(digits_mlp, x, y, "linf", EPS, n=20, square_queries=50)
    assert [c.as_dict() for c in old] == [c.as_dict() for c in new]
    assert "Square (50 queries)" in next(c.detail for c in new if c.code == "GM03")


@pytest.mark.parametrize(("spec", "expected"), [("bitdepth:2", {"GM06", "GM08", "GM01"}), ("jpeg:60", {"GM06"}),
                                                ("resize:6", {"GM07"})])
def test_masked_defenses_raise_their_warnings(digits, digits_mlp, spec, expected):
    _, _, x, y = digits
    fired = {c.code for c in run_checks(wrap_defense(digits_mlp, spec), x, y, "linf", EPS, n=60) if c.fired}
    assert expected <= fired, fired


def test_adaptive_attack_sees_through_bitdepth(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:150], y[:150]
    wrapped = wrap_defense(digits_mlp, "bitdepth:3")
    naive, _ = _attack_acc(wrapped, x, y, "pgd", steps=40)
    adaptive, _ = _attack_acc(wrapped, x, y, "pgd-adaptive")
    undefended, _ = _attack_acc(digits_mlp, x, y, "pgd-adaptive")
    assert naive > adaptive + 0.3, (naive, adaptive)
    assert adaptive <= undefended + 0.1, (adaptive, undefended)


def test_eot_averages_away_the_randomness_of_the_gradient(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:50], y[:50]
    wrapped = Defended(digits_mlp, RandomResizePad(6, seed=0)).eval()

    def spread(samples):
        fn = eot_bpda(samples)
        ce = lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="none")  # noqa: E731
        total = 0.0
        for _ in range(5):  # mean over pairs: two single draws may coincide
            g1, g2 = fn(wrapped, x, y, ce)[1], fn(wrapped, x, y, ce)[1]
            total += float((g1 - g2).norm() / (g1.norm() + g2.norm()))
        return total / 5

    assert spread(64) < 0.6 * spread(1)  # measured 0.15 vs 0.43 (heavy-tailed: a few draws dominate)


def adaptive_acc(ev) -> float:
    return next(r.acc1_adv for r in ev.rows if r.attack == "pgd-adaptive" and r.eps == EPS)


def test_evaluate_marks_masked_rows_and_reports_the_strongest(digits, digits_mlp):
    _, _, x, y = digits
    ev = evaluate(wrap_defense(digits_mlp, "bitdepth:3"), (x[:120], y[:120]), ["pgd"], [0.1, EPS], progress=False,
                  check_n=60)
    attacks = {r.attack for r in ev.rows}
    assert "pgd-adaptive" in attacks
    pgd_top = next(r for r in ev.rows if r.attack == "pgd" and r.eps == EPS)
    assert any(w.startswith("GM06") for w in pgd_top.warnings)
    worst = next(r for r in ev.rows if r.attack == "worst-case" and r.eps == EPS)
    assert worst.strongest.split(" + ")[0] == "pgd-adaptive"
    if " + " in worst.strongest:  # (a check's attack broke more on its subset: named, as the figure is not adaptive's)
        assert worst.strongest.split(" + ")[1].startswith("checks' ") and worst.acc1_adv < adaptive_acc(ev)
    adaptive = next(r for r in ev.rows if r.attack == "pgd-adaptive" and r.eps == EPS)
    # the worst case is the worst of everything, the checks' own attacks on their subset included
    assert worst.acc1_adv <= adaptive.acc1_adv < pgd_top.acc1_adv
    assert "⚠ GM06" in ev.to_markdown()
    assert any(c["code"] == "GM06" and c["fired"] for c in ev.checks)


def test_evaluate_on_an_honest_model_adds_nothing(digits, digits_mlp):
    _, _, x, y = digits
    ev = evaluate(digits_mlp, (x[:120], y[:120]), ["pgd"], [EPS], progress=False, check_n=60)
    assert {r.attack for r in ev.rows} == {"pgd", "worst-case"}
    assert all(not r.warnings for r in ev.rows)
    assert ev.checks and not any(c["fired"] for c in ev.checks)


def test_cli_evaluate_defense_with_baseline(tmp_path, digits_ckpt):
    import json
    import subprocess
    import sys

    out = tmp_path / "ev"
    r = subprocess.run([sys.executable, "-m", "advlab", "evaluate", "--model", str(digits_ckpt), "--dataset", "digits",
                        "--defense", "bitdepth:2", "--baseline", str(digits_ckpt), "--attacks", "pgd", "--eps", "0.15",
                        "--n", "80", "--threads", "1", "--no-progress", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "+bitdepth:2" in r.stdout and "pgd-adaptive" in r.stdout
    checks = json.loads((out / "checks.json").read_text())
    assert any(c["fired"] for c in checks)
    report = (out / "report.md").read_text()
    assert "## Gradient-masking checks" in report and "## Next to the baseline" in report
    base_checks = json.loads((out / "baseline" / "checks.json").read_text()) if (out / "baseline" / "checks.json").exists() \
        else []
    assert not any(c["fired"] for c in base_checks)
    bad = subprocess.run([sys.executable, "-m", "advlab", "evaluate", "--model", str(digits_ckpt), "--dataset", "digits",
                          "--defense", "bitdeph:2", "--n", "10", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "did you mean 'bitdepth'" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_trains_a_thermometer_network_and_load_model_rewraps_it(tmp_path):
    import subprocess
    import sys

    from advlab.models import load_model

    out = tmp_path / "thermo.safetensors"
    r = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "mlp", "--dataset", "digits", "--defense",
                        "thermometer:4", "--epochs", "2", "--threads", "1", "--no-progress", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    model = load_model(str(out))
    assert isinstance(model, Defended) and isinstance(model.transform, Thermometer)
    assert model.advlab_meta["wrapper"] == "thermometer:4" and model.differentiable is False
    from advlab import load_dataset

    x, y = load_dataset("digits", "test")
    assert _acc(model, x, y) == pytest.approx(model.advlab_meta["acc1"], abs=1e-6)
    assert _acc(model, x, y) > 0.85


def test_a_gradient_check_also_marks_cw_at_its_largest_l2_budget(digits, digits_mlp):
    """CW's L2 sweep beside an L∞ evaluation: a vanishing gradient misleads it too, so its row carries the flag."""
    _, _, x, y = digits
    wrapped = wrap_defense(digits_mlp, "bitdepth:2")
    ev = evaluate(wrapped, (x, y), ["fgsm", "cw"], [0.1, 0.3], n=60, check_n=40, progress=False,
                         ensemble=False, params={"cw": {"steps": 10, "binary_search_steps": 2}})
    fired = {c["code"]: c["message"] for c in ev.checks if c["fired"]}
    assert "GM06" in fired, fired
    cw = [r for r in ev.rows if r.attack == "cw"]
    largest = max(r.eps for r in cw)
    for r in cw:
        want = {fired[c] for c in fired if c in {"GM01", "GM02", "GM06", "GM07", "GM08", "GM09"}} if r.eps == largest else set()
        assert set(r.warnings) == want, (r.eps, r.warnings)
    fgsm_top = next(r for r in ev.rows if r.attack == "fgsm" and r.eps == 0.3)
    assert set(fgsm_top.warnings) == set(fired.values())


class _ZeroGradRound(torch.autograd.Function):
    """Rounding to 8 bits with a zero backward: a user's quantisation that declares nothing."""

    @staticmethod
    def forward(ctx, x):
        return (x * 255).round() / 255

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


def test_what_the_escalation_finds_at_the_largest_eps_is_carried_to_the_smaller_ones(digits, digits_mlp):
    _, _, x, y = digits

    class Rounded(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return digits_mlp(_ZeroGradRound.apply(t))

    kw = {"n": 100, "check_n": 40, "progress": False, "ensemble": False}
    ev = evaluate(Rounded().eval(), (x, y), ["fgsm", "pgd"], [0.1, 0.3], **kw)
    ref = evaluate(digits_mlp, (x, y), ["fgsm", "pgd"], [0.1, 0.3], **kw)

    def worst(e, at):
        return next(r.acc1_adv for r in e.rows if r.attack.startswith("worst-case") and r.eps == at)

    carried = [s for s in ev.meta["escalation"] if s.get("swept")]
    assert carried and carried[0]["swept"] == [0.1], ev.meta["escalation"]
    naive = next(r.acc1_adv for r in ev.rows if r.attack == "pgd" and r.eps == 0.1)
    assert worst(ev, 0.1) <= worst(ref, 0.1) + 0.1 < naive  # the smaller ε's headline is the honest one too
