"""A user's model whose forward leaves autograd after its last submodule (numpy on the features or the logits).

A break *before* a submodule is covered in tests/test_escalation.py. Here the break is inside the
model's own ``forward``, after everything it calls: a gradient attack gets a one-line error that
names the way out, ``pgd-bpda`` routes through the logits where their shape allows it, and the
evaluation goes on to the black-box attacks where it does not.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from advlab import evaluate
from advlab.attacks import NoInputGradient, get_attack
from advlab.attacks.autobpda import OUTPUT, probe
from advlab.models.factory import load_factory
from advlab.threat import ThreatModel

LINF = ThreatModel("linf", 0.3)


class NumpyHead(nn.Module):
    """The digits MLP with its last linear layer computed in numpy: features N×64 → logits N×10."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.norm, self.body = mlp.norm, mlp.net[:-1]
        last = mlp.net[-1]
        self.w = last.weight.detach().numpy().T.copy()
        self.b = last.bias.detach().numpy().copy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.norm(x)).detach().numpy()
        return torch.from_numpy(np.ascontiguousarray(h @ self.w + self.b))


class NumpyTemperature(nn.Module):
    """The digits MLP whose logits are divided by a temperature in numpy at the end of ``forward``."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.mlp(x).detach().numpy() / 1.7)


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "apgd", "deepfool", "cw"])
def test_a_gradient_attack_on_a_model_without_autograd_fails_in_one_line(attack, digits, digits_mlp):
    _, _, x, y = digits
    model = NumpyHead(digits_mlp).eval()
    assert torch.allclose(model(x[:20]), digits_mlp(x[:20]), atol=1e-5)  # the same classifier
    threat = ThreatModel("l2", float("inf")) if attack in ("deepfool", "cw") else LINF
    with pytest.raises(NoInputGradient) as err:
        get_attack(attack)(model, x[:20], y[:20], threat)
    text = str(err.value)
    assert text.startswith(f"{attack}: ") and "\n" not in text
    assert "does not depend on its input in autograd" in text and "square" in text


def test_pgd_bpda_without_a_route_says_so(digits, digits_mlp):
    _, _, x, y = digits
    with pytest.raises(NoInputGradient, match=r"^pgd-bpda: .*no stand-in fits"):
        get_attack("pgd-bpda")(NumpyHead(digits_mlp).eval(), x[:20], y[:20], LINF)


def test_pgd_bpda_routes_through_numpy_on_the_logits(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:200], y[:200]
    model = NumpyTemperature(digits_mlp).eval()
    found = probe(model, x, y)
    assert found.leaves_autograd and found.healed
    assert [(f.module, f.kind) for f in found.fixes] == [(OUTPUT, "identity")]
    torch.manual_seed(0)
    bpda = get_attack("pgd-bpda")(model, x, y, LINF, generator=torch.Generator().manual_seed(0))
    assert float((bpda.x_adv - x).abs().max()) <= 0.3 + 1e-6
    plain = get_attack("pgd")(digits_mlp, x, y, LINF, loss="margin", steps=100,
                              generator=torch.Generator().manual_seed(0))
    # identity on a monotone tail: as strong as PGD on the model without the numpy step
    assert _acc(model, bpda.x_adv, y) <= _acc(digits_mlp, plain.x_adv, y) + 0.05
    assert _acc(model, x, y) > 0.9


def test_the_evaluation_goes_on_past_a_break_no_stand_in_fits(digits, digits_mlp):
    _, _, x, y = digits
    # (a small ε: the sweep's Square leaves the subset unbroken, so the escalation reaches pgd-bpda)
    ev = evaluate(NumpyHead(digits_mlp).eval(), (x, y), ["noise", "pgd"], [0.02], n=60, progress=False, check_n=40)
    steps = {s["step"]: s for s in ev.meta["escalation"]}
    assert not steps["pgd-bpda"]["ran"] and "not run: pgd-bpda:" in steps["pgd-bpda"]["why"]
    attacks = {r.attack for r in ev.rows}
    assert "pgd-bpda" not in attacks and "pgd" not in attacks
    assert not any(d["attack"] == "pgd-bpda" for d in ev.meta["added"])  # nothing left half-recorded
    assert steps["square-5000"]["ran"] and "square-5000" in attacks  # the black box answers instead
    worst = next(r for r in ev.rows if r.attack == "worst-case")
    assert worst.acc1_adv < worst.acc1_clean


def test_a_module_beside_the_user_imports_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "beside_user_models.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Linear(4, 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    net = load_factory("beside_user_models:make")
    assert isinstance(net, nn.Linear)
    assert sys.path[-1] == str(tmp_path)  # after the installed packages, never before them
    with pytest.raises(ValueError, match="cannot import no_such_module_here"):
        load_factory("no_such_module_here:make")


def test_a_model_that_leaves_autograd_gets_pgd_bpda_over_the_whole_sweep(digits, digits_mlp):
    _, _, x, y = digits
    kw = {"n": 120, "progress": False, "check_n": 40}
    ev = evaluate(NumpyTemperature(digits_mlp).eval(), (x, y), ["pgd"], [0.1, 0.3], **kw)
    assert ev.meta["skipped"]["jobs"] == ["pgd|linf|0.1", "pgd|linf|0.3"]
    bpda = {r.eps: r.acc1_adv for r in ev.rows if r.attack == "pgd-bpda"}
    assert sorted(bpda) == [0.1, 0.3]  # a row at every ε, not only the largest
    assert [s["step"] for s in ev.meta["escalation"]].count("pgd-bpda") == 0  # (not run twice at the largest)
    twin = evaluate(digits_mlp, (x, y), ["pgd-adaptive"], [0.1, 0.3], checks=False, ensemble=False, **kw)
    for r in twin.rows:
        if r.attack == "pgd-adaptive":
            assert abs(bpda[r.eps] - r.acc1_adv) <= 0.05, (r.eps, bpda[r.eps], r.acc1_adv)


def test_without_a_route_square_runs_over_the_sweep(tmp_path, digits, digits_mlp):
    from advlab.report.render import render_report

    _, _, x, y = digits
    ev = evaluate(NumpyHead(digits_mlp).eval(), (x, y), ["pgd"], [0.1, 0.3], n=40, progress=False, check_n=20,
                  out=tmp_path / "run")
    assert sorted(r.eps for r in ev.rows if r.attack == "square") == [0.1, 0.3]
    md, _ = render_report(tmp_path / "run")
    text = md.read_text()
    assert "over the sweep: square | pgd-bpda: the model's output leaves autograd where no stand-in fits" in text


def test_pgd_bpda_asked_for_by_name_runs_once_over_the_sweep(digits, digits_mlp):
    _, _, x, y = digits
    ev = evaluate(NumpyTemperature(digits_mlp).eval(), (x, y), ["pgd-bpda", "fgsm"], [0.1, 0.3], n=40,
                  progress=False, check_n=20)
    assert ev.meta["skipped"]["jobs"] == ["fgsm|linf|0.1", "fgsm|linf|0.3"]  # only the plain white-box attack
    assert sorted(r.eps for r in ev.rows if r.attack == "pgd-bpda") == [0.1, 0.3]  # each ε once


@pytest.mark.parametrize("kw", [{"checks": False}, {"targeted": "random"}])
def test_without_the_checks_the_skipped_rows_are_still_replaced(kw, digits, digits_mlp):
    _, _, x, y = digits
    ev = evaluate(NumpyTemperature(digits_mlp).eval(), (x, y), ["pgd"], [0.1, 0.3], n=40, progress=False, **kw)
    assert ev.meta["skipped"]["jobs"] == ["pgd|linf|0.1", "pgd|linf|0.3"]
    assert sorted(r.eps for r in ev.rows if r.attack == "pgd-bpda") == [0.1, 0.3]


class NumpyBetweenChildren(nn.Module):
    """A numpy clip between two children of a model that is itself wrapped (the break is two levels down)."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.front, self.net = nn.Flatten(0, 0), mlp  # (Flatten(0, 0): a child that passes its input through)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.from_numpy(np.clip(self.front(x).detach().numpy(), 0.0, 1.0))
        return self.net(h)


class Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.model = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def test_a_break_between_the_children_of_a_wrapped_model_gets_the_identity_there(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:200], y[:200]
    model = Wrapped(NumpyBetweenChildren(digits_mlp)).eval()
    found = probe(model, x, y)
    assert found.healed and [(f.module, f.kind, f.source) for f in found.fixes] == [
        ("model.net", "identity", "model.front")]  # not autograd switched on around it, three times over
    got = get_attack("pgd-bpda")(model, x, y, LINF, generator=torch.Generator().manual_seed(0))
    ref = get_attack("pgd-adaptive")(digits_mlp, x, y, LINF, generator=torch.Generator().manual_seed(0))
    assert abs(_acc(model, got.x_adv, y) - _acc(digits_mlp, ref.x_adv, y)) <= 0.05


class InferenceMode(nn.Module):
    """Deployment code: the whole forward under ``@torch.inference_mode()``."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def test_a_forward_under_inference_mode_is_named_and_still_evaluated(digits, digits_mlp):
    _, _, x, y = digits
    model = InferenceMode(digits_mlp).eval()
    with pytest.raises(NoInputGradient, match=r"torch\.inference_mode\(\) inside its forward"):
        get_attack("pgd")(model, x[:20], y[:20], LINF)
    ev = evaluate(model, (x[:60], y[:60]), attacks=["pgd"], eps=[0.3], progress=False)
    worst = next(r for r in ev.rows if r.attack == "worst-case")
    assert "pgd" not in {r.attack for r in ev.rows}  # (its row is replaced: it had no gradient to follow)
    assert worst.acc1_adv < _acc(digits_mlp, x[:60], y[:60]) - 0.3  # the black-box steps still break it
