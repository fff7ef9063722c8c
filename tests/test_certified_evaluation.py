"""``evaluate(certify=...)``: certified lower bounds beside the attacked upper bounds, checked when written."""

from __future__ import annotations

import pytest
import torch

from advlab.cli import main
from advlab.evaluation import certified as cert
from advlab.evaluation import evaluate
from advlab.models.blackbox import BlackBox

EPS = [0.01, 0.03]


@pytest.fixture(scope="module")
def small(digits):
    _, _, xte, yte = digits
    return xte[:120], yte[:120]


def test_rows_per_method_and_eps_and_never_above_the_attacks(digits_mlp, small, tmp_path):
    ev = evaluate(digits_mlp, small, ["fgsm", "pgd"], EPS, progress=False, checks=False, certify="default",
                  out=tmp_path / "run")
    rows = ev.meta["certified"]
    assert [(r["method"], r["eps"]) for r in rows] == [(m, e) for m in ("ibp", "crown-ibp") for e in EPS]
    worst = {r.eps: r.acc1_adv for r in ev.rows if r.attack.startswith("worst-case")}
    for r in rows:
        assert 0.0 <= r["certified"] <= r["attacked"] <= r["clean"]
        assert r["attacked"] == pytest.approx(worst[r["eps"]])
    by = {(r["method"], r["eps"]): r["certified"] for r in rows}
    assert by[("crown-ibp", 0.01)] >= by[("ibp", 0.01)]  # the linear relaxation is no looser here
    assert by[("crown-ibp", 0.01)] > 0.5  # a real certificate, not a vacuous one
    assert "Certified (lower bound)" in str(ev)


def test_the_command_writes_the_section_and_the_figure(digits_ckpt, tmp_path):
    out = tmp_path / "cli"
    code = main(["evaluate", "--model", str(digits_ckpt), "--dataset", "digits", "--attacks", "fgsm", "--eps",
                 "0.01,0.03", "--n", "60", "--no-checks", "--certify", "--out", str(out), "--no-progress"])
    assert code == 0
    md = (out / "report.md").read_text()
    assert "## Certified next to attacked" in md and "certified_vs_attacked.png" in md
    assert (out / "figures" / "certified_vs_attacked.png").stat().st_size > 1000
    assert 'id="certified"' in (out / "report.html").read_text()


def test_a_resumed_run_reads_the_rows_back(digits_mlp, small, tmp_path, monkeypatch):
    first = evaluate(digits_mlp, small, ["fgsm"], EPS, progress=False, checks=False, certify=["ibp"], out=tmp_path)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(cert, "certify_rows", boom)
    again = evaluate(digits_mlp, small, ["fgsm"], EPS, progress=False, checks=False, certify=["ibp"], out=tmp_path)
    assert again.meta["certified"] == first.meta["certified"]


def test_an_unsound_deterministic_certificate_is_an_error(digits_mlp, small, monkeypatch):
    monkeypatch.setattr(cert, "certified_masks", lambda net, x, y, *a, **k: {e: torch.ones(len(y), dtype=torch.bool)
                                                                             for e in EPS})
    with pytest.raises(cert.UnsoundCertificate, match=r"ibp certifies 1.0000 .* the attacks leave"):
        evaluate(digits_mlp, small, ["pgd"], EPS, progress=False, checks=False, certify=["ibp"])


def test_smoothing_above_the_attacks_is_a_warning_naming_both(digits_mlp, small, monkeypatch):
    monkeypatch.setattr(cert, "certified_masks", lambda net, x, y, *a, **k: {e: torch.ones(len(y), dtype=torch.bool)
                                                                             for e in EPS})
    with pytest.warns(UserWarning, match=r"smoothing:n=50 certifies 1.0000 .* leave 0\.\d+"):
        evaluate(digits_mlp, small, ["pgd"], EPS, progress=False, checks=False, certify=["smoothing:n=50"])


@pytest.mark.parametrize(("spec", "norm", "match"), [
    ("ibpp", "linf", "did you mean 'ibp'"),
    ("ibp", "l2", "ibp certifies linf balls, not l2"),
    ("smoothing:sigma", "l2", "not KEY=VALUE"),
    ("smoothing:sigma=x", "l2", "expects a number"),
    ("lipschitz:n=3", "l2", "lipschitz option"),
    ("ibp,ibp", "linf", "named twice"),
    ("default", "l0", "no certificate for l0"),
])
def test_bad_specs_fail_before_anything_is_written(digits_mlp, small, tmp_path, spec, norm, match):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=match):
        evaluate(digits_mlp, small, ["fgsm"], [0.5] if norm == "l0" else EPS, norm=norm, progress=False,
                 checks=False, certify=spec, out=out)
    assert not out.exists()


def test_a_black_box_cannot_be_certified(digits_mlp, small):
    box = BlackBox(lambda x: digits_mlp(x).softmax(1), output="probs")
    with pytest.raises(ValueError, match="black box"):
        evaluate(box, small, ["square"], EPS, progress=False, checks=False, certify="default")
