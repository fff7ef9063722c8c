"""The evaluation's own responses (issue 14): the worst case over everything that ran, the escalation on
models that hide their gradients without declaring it, white-box jobs skipped for a model that leaves
autograd, and the APGD ensemble for a model that looks robust."""

from __future__ import annotations

import pytest
import torch

from advlab import evaluate
from advlab.attacks import get_attack
from advlab.attacks.autobpda import probe
from advlab.defenses.wrappers import wrap_defense
from advlab.models.masking import NoGradClamp, NumpyMedian, QuantisedInput, SaturatedSoftmax
from advlab.threat import ThreatModel

N = 80
EPS = [0.3]


def _eval(model, digits, **kw):
    _, _, x, y = digits
    torch.manual_seed(0)
    return evaluate(model, (x, y), kw.pop("attacks", None), kw.pop("eps", EPS), n=N, progress=False, check_n=60,
                    **kw)


def _row(ev, attack, eps=0.3):
    return next(r for r in ev.rows if r.attack == attack and r.eps == eps)


def test_undeclared_quantisation_gets_the_declared_twins_headline(digits, digits_mlp):
    masked = _eval(QuantisedInput(digits_mlp, levels=3).eval(), digits, attacks=["fgsm", "pgd"])
    twin = _eval(wrap_defense(digits_mlp, "bitdepth:2"), digits, attacks=["fgsm", "pgd"])
    assert any(c["fired"] for c in masked.checks)
    assert _row(masked, "pgd").acc1_adv > 0.5  # the naive number is fooled ...
    head, ref = _row(masked, "worst-case").acc1_adv, _row(twin, "worst-case").acc1_adv
    assert abs(head - ref) <= 0.05, (head, ref)  # ... the headline is not
    steps = [s["step"] for s in masked.meta["escalation"]]
    assert "pgd-bpda" in steps and _row(masked, "pgd-bpda").acc1_adv <= head + 1e-9 + 0.05


@pytest.mark.parametrize("make", [NumpyMedian, NoGradClamp])
def test_a_model_that_leaves_autograd_is_evaluated_not_crashed_on(make, digits, digits_mlp):
    ev = _eval(make(digits_mlp).eval(), digits, attacks=["noise", "fgsm", "pgd"])
    attacks = {r.attack for r in ev.rows}
    assert not {"fgsm", "pgd"} & attacks  # white-box rows could not be computed ...
    assert set(ev.meta["skipped"]["jobs"]) == {"fgsm|linf|0.3", "pgd|linf|0.3"}
    assert "GM09" in ev.meta["skipped"]["why"]  # ... and the evaluation says why
    assert [c["code"] for c in ev.checks if c["fired"]] == ["GM09"]
    assert {r.eps for r in ev.rows if r.attack == "pgd-bpda"} == set(EPS)  # over the sweep, in their place
    steps = ev.meta["escalation"]  # it stops once the black box ran or nothing on the subset is left
    assert not steps or steps[-1]["step"] == "square-5000" or steps[-1]["subset_acc1_after"] == 0
    undefended = _eval(digits_mlp, digits, attacks=["pgd"], checks=False, ensemble=False)
    assert abs(_row(ev, "worst-case").acc1_adv - _row(undefended, "worst-case").acc1_adv) <= 0.05


def test_saturated_softmax_is_attacked_on_log_probabilities(digits, digits_mlp):
    _, _, x, y = digits
    model = SaturatedSoftmax(digits_mlp).eval()
    found = probe(model, x[:32], y[:32])
    assert found.probabilities and not found.fixes
    res = get_attack("pgd-bpda")(model, x[:N], y[:N], ThreatModel("linf", 0.3),
                                 generator=torch.Generator().manual_seed(0))
    plain = get_attack("pgd")(digits_mlp, x[:N], y[:N], ThreatModel("linf", 0.3),
                              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        acc = float((model(res.x_adv).argmax(1) == y[:N]).float().mean())
        ref = float((digits_mlp(plain.x_adv).argmax(1) == y[:N]).float().mean())
    assert acc <= ref + 0.05


def test_honest_model_no_escalation_and_checks_count_in_the_worst_case(digits, digits_mlp):
    ev = _eval(digits_mlp, digits, attacks=["noise"])
    assert not any(c["fired"] for c in ev.checks)
    assert ev.meta["escalation"] is None and not ev.meta["added"]
    assert [r.attack for r in ev.rows] == ["noise", "worst-case"]
    worst, noise = _row(ev, "worst-case"), _row(ev, "noise")
    assert worst.acc1_adv < noise.acc1_adv  # the checks' PGD on their subset broke what noise did not
    by = ev.broken_by(0.3)
    assert any(b is not None and b.startswith("check:") for b in by)
    mask = ev.robust_mask(0.3)
    assert float(mask.float().mean()) == pytest.approx(worst.acc1_adv)
    assert sum(worst.broken_by.values()) == sum(b is not None for b in by)


def test_ensemble_added_where_the_model_looks_robust(digits, digits_mlp):
    ev = _eval(digits_mlp, digits, attacks=["fgsm"], eps=[0.03], checks=False, ensemble=True)
    assert ev.meta["ensemble"]["added"] and ev.meta["ensemble"]["params"]["max_queries"] == 5000
    assert ev.meta["ensemble"]["params"]["dlr"] is True and ev.meta["ensemble"]["params"]["restarts"] == 2
    assert ev.meta["ensemble"]["params"]["borderline"] == 0.25
    assert _row(ev, "apgd-ensemble", 0.03).acc1_adv <= _row(ev, "fgsm", 0.03).acc1_adv
    quiet = _eval(digits_mlp, digits, attacks=["fgsm"], eps=[0.03], checks=False)
    assert "apgd-ensemble" not in {r.attack for r in quiet.rows}  # not asked for with explicit attacks


def test_square_restarts_only_add_successes_within_their_budget(digits, digits_mlp):
    _, _, x, y = digits
    threat = ThreatModel("linf", 0.1)
    one = get_attack("square")(digits_mlp, x[:N], y[:N], threat, generator=torch.Generator().manual_seed(1),
                               max_queries=50)
    two = get_attack("square")(digits_mlp, x[:N], y[:N], threat, generator=torch.Generator().manual_seed(1),
                               max_queries=50, restarts=2)
    assert bool((two.success | ~one.success).all())  # the first restart is the single run; later ones only add
    assert int(two.queries.max()) <= 2 * 50
    assert float((two.x_adv - x[:N]).abs().max()) <= 0.1 + 1e-6


def test_unanswered_compares_with_the_evaluations_own_attacks():
    from advlab.evaluation.escalation import unanswered

    checks = [{"code": "GM03", "fired": True, "value": 0.1}, {"code": "GM06", "fired": True, "value": 0.5},
              {"code": "GM05", "fired": False, "value": 0.0}, {"code": "GM09", "fired": True, "value": None}]
    assert unanswered(checks, 0.9, set()) == ["GM03", "GM06", "GM09"]
    assert unanswered(checks, 0.11, {"GM06"}) == ["GM09"]  # within the margin: answered
    assert unanswered(checks, 0.11, {"GM06", "GM09"}) == []


def test_report_says_what_was_added_why_and_what_it_cost(tmp_path, digits, digits_mlp):
    from advlab.report.render import render_report

    _eval(NumpyMedian(digits_mlp).eval(), digits, attacks=["noise", "pgd"], out=tmp_path / "run")
    md, html = render_report(tmp_path / "run")
    text = md.read_text()
    assert "white-box rows not computed | pgd | GM09" in text
    assert "over the sweep: pgd-bpda | PGD through the automatic stand-in" in text
    assert "## Where the worst case came from" in text
    assert "## Cost" in text and "The checks and the escalation took" in text
    assert 'id="added"' in html.read_text() and 'id="costs"' in html.read_text()


def test_a_run_killed_inside_the_ensemble_resumes_there(tmp_path, digits, digits_mlp, monkeypatch):
    from advlab.results.store import Store

    real = Store.put_batch

    def dies_in_the_ensemble(self, key, *a, **kw):
        if key.startswith("apgd-ensemble"):
            raise KeyboardInterrupt
        return real(self, key, *a, **kw)

    monkeypatch.setattr(Store, "put_batch", dies_in_the_ensemble)
    kw = {"attacks": ["fgsm"], "eps": [0.03], "checks": False, "ensemble": True, "out": tmp_path / "r",
          "params": {"apgd-ensemble": {"max_queries": 300}}}  # (the resume is under test, not Square's budget)
    with pytest.raises(KeyboardInterrupt):
        _eval(digits_mlp, digits, **kw)
    monkeypatch.setattr(Store, "put_batch", real)
    ev = _eval(digits_mlp, digits, **kw)
    assert "apgd-ensemble" in {r.attack for r in ev.rows} and ev.meta["ensemble"]["params"]["max_queries"] == 300


class WholeForwardNoGrad(torch.nn.Module):
    """A user's inference wrapper: ``@torch.no_grad()`` on the whole forward (no submodule to stand in for)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    @torch.no_grad()
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t)


def test_the_escalation_moves_down_the_sweep_where_the_largest_eps_is_all_broken(digits, digits_mlp):
    """Square breaks the whole subset at ε 0.3, which says nothing about 0.05: the escalation runs where it can."""
    sweep = [0.05, 0.1, 0.3]
    ev = _eval(WholeForwardNoGrad(digits_mlp).eval(), digits, attacks=["fgsm", "pgd"], eps=sweep, ensemble=False)
    steps = ev.meta["escalation"]
    assert steps and steps[0]["eps"] < 0.3 and all(s["eps"] in sweep for s in steps)
    undefended = _eval(digits_mlp, digits, attacks=["pgd"], eps=sweep, checks=False, ensemble=False)
    for e in sweep:  # the headline at every ε is the white-box one (the model computes the same function)
        assert abs(_row(ev, "worst-case", e).acc1_adv - _row(undefended, "worst-case", e).acc1_adv) <= 0.05, e
