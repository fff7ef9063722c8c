"""The attack contract, checks made on the model's output: labels, targets and logits refused before an attack runs.

The rest of the contract is tests/test_attacks_contract.py; helpers are in tests/attack_contract_helpers.py.
"""

import warnings

import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import choose_targets, fast_views, get_attack
from advlab.attacks.fastview import FastViewSkipped
from attack_contract_helpers import ATTACKS, N, one_line_error, run, threat_for


@pytest.fixture(scope="module")
def batch(digits):
    _, _, xte, yte = digits
    return xte[:N], yte[:N]


# --- Checks that need the model's output: made on the logits the view's probe computed on copies. ---


class CountingNet(nn.Module):
    """The digits MLP behind a call counter (forward changes state: the fast view is skipped, the probe still runs)."""

    def __init__(self, model, scale=1.0):
        super().__init__()
        self.model, self.scale, self.calls = model, scale, 0
        self.eval()

    def forward(self, x):
        self.calls += 1
        return self.model(x) * self.scale


def quiet_call(fn):
    """Run ``fn`` with advlab's FastViewSkipped warning (expected for CountingNet) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FastViewSkipped)
        return fn()


@pytest.mark.parametrize("name", ATTACKS)
def test_labels_beyond_the_models_outputs_are_refused_without_running_it(name, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch[0][:6], batch[1][:6].clone()
    y[0], y[3] = 12, 0
    model = CountingNet(digits_mlp)
    one_line_error(lambda: quiet_call(lambda: run(info, model, x, y, threat_for(info))),
                   r"^y: labels must be in \[0, 10\) for this model's 10 outputs, got range \[0, 12\]$")
    y[0] = -1
    one_line_error(lambda: run(info, model, x, y, threat_for(info)),
                   r"^y: labels must be class indices >= 0, got range \[-1, \d\]$")
    assert model.calls == 0  # the logits came from copies: the user's model never ran


@pytest.mark.parametrize("name", [n for n in ATTACKS if get_attack(n).targeted])
def test_targets_beyond_the_outputs_or_equal_to_the_label_are_refused(name, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch[0][:12], batch[1][:12]
    threat = threat_for(info, targeted=True)
    target = choose_targets(digits_mlp, x, y, "random", generator=torch.Generator().manual_seed(0))
    bad = target.clone()
    bad[2] = 10
    one_line_error(lambda: run(info, digits_mlp, x, y, threat, target=bad),
                   r"^target: labels must be in \[0, 10\) for this model's 10 outputs, got range \[\d, 10\]$")
    same = target.clone()
    same[[0, 4, 9]] = y[[0, 4, 9]]
    one_line_error(lambda: run(info, digits_mlp, x, y, threat, target=same),
                   r"^target: 3 targets equal the true label \(examples 0, 4, 9\); a targeted attack needs another "
                   r"class$")
    same = target.clone()
    same[7] = y[7]
    one_line_error(lambda: run(info, digits_mlp, x, y, threat, target=same),
                   r"^target: 1 target equals the true label \(example 7\)")


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize(("scale", "kind"), [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_model_with_non_finite_logits_is_refused(name, scale, kind, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch[0][:4], batch[1][:4]
    model = CountingNet(digits_mlp, scale)
    one_line_error(lambda: quiet_call(lambda: run(info, model, x, y, threat_for(info))),
                   rf"^model: returns non-finite logits \({kind}(, inf)?\) on the attacked inputs$")
    assert model.calls == 0


def test_a_black_box_is_never_queried_for_the_checks(digits_mlp, batch):
    """The output checks are skipped for a BlackBox (and a plain function): no query is spent on them."""
    from advlab.models.blackbox import BlackBox

    x, y = batch[0][:6], batch[1][:6]
    box = BlackBox(digits_mlp, output="logits")
    res = get_attack("square")(box, x, y, ThreatModel("linf", 0.3), max_queries=30,
                               generator=torch.Generator().manual_seed(0))
    assert box.total_queries == int(res.queries.sum())
    target = (y + 1) % 10
    target[1] = y[1]  # needs no model output: refused for a black box too, before any query
    one_line_error(lambda: get_attack("square")(box, x, y, ThreatModel("linf", 0.3, targeted=True), target=target),
                   r"^target: 1 target equals the true label \(example 1\)")
    assert box.total_queries == int(res.queries.sum())
    with fast_views(False):  # no probe, no copy: the checks that need logits are skipped, the attack runs
        assert get_attack("fgsm")(digits_mlp, x, y, ThreatModel("linf", 0.1)).x_adv.shape == x.shape


@pytest.mark.parametrize("blackbox", [False, True])
def test_evaluate_refuses_non_finite_clean_logits_before_any_job(blackbox, digits_mlp, batch, monkeypatch):
    """A model that outputs NaN on one clean input (not among those the attacks probe) gets no accuracy at all."""
    from advlab import evaluate
    from advlab.evaluation.run import Run
    from advlab.models.blackbox import BlackBox

    x, y = batch[0][:20].clone(), batch[1][:20]
    x[13, 0, 0, 0] = 0.123  # the marker of the input the model fails on

    def predict(t):
        out = digits_mlp(t)
        return torch.where((t[:, 0, 0, 0] == 0.123)[:, None], torch.full_like(out, float("nan")), out)

    model = BlackBox(predict, output="logits") if blackbox else CountingNet(digits_mlp)
    if not blackbox:
        model.forward = predict  # an instance attribute: the probe's copies run it too
    ran = []
    monkeypatch.setattr(Run, "batch", lambda self, *a: ran.append(a))
    one_line_error(lambda: quiet_call(lambda: evaluate(model, (x, y), ["noise", "square"], [0.1], batch_size=10,
                                                        progress=False)),
                   r"^model: returns non-finite logits \(nan\) on 1 of 20 clean inputs \(first: example 13\); "
                   r"advlab does not score a model whose outputs are not numbers$")
    assert ran == []


def test_choose_targets_checks_labels_against_the_classes(digits_mlp, batch):
    x, y = batch[0][:6], batch[1][:6].clone()
    y[2] = 11
    one_line_error(lambda: choose_targets(digits_mlp, x, y, "least-likely"),
                   r"^y: labels must be in \[0, 10\) for this model's 10 outputs, got range \[\d, 11\]$")
    one_line_error(lambda: choose_targets(digits_mlp, x, y, "random", num_classes=10),
                   r"^y: labels must be in \[0, 10\) for num_classes=10, got range \[\d, 11\]$")
    one_line_error(lambda: choose_targets(digits_mlp, x, y % 10, "random", num_classes=1),
                   r"^num_classes: expected an integer >= 2 \(a target must differ from the label\), got 1$")
    one_line_error(lambda: choose_targets(CountingNet(digits_mlp, float("nan")), x, y % 10, "least-likely"),
                   r"^model: returns non-finite logits \(nan\) on x$")
