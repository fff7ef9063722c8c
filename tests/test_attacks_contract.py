"""The contract every registered attack keeps, driven by the registry.

A new attack gets all of these checks by being registered: no new test code. What it must
achieve depends on its metadata: fixed-budget white-box and score-based attacks must bring the
digits MLP's Acc@1 down by a stated margin inside the budget; minimal-perturbation attacks must
succeed on nearly every example; baselines (noise, semantic) are reference points with no
fooling requirement (their own behaviour is tested in test_attacks_known.py).
"""

import copy
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advlab import ThreatModel
from advlab.attacks import ModelInTrainingMode, choose_targets, fast_views, get_attack, is_adversarial, list_attacks
from advlab.attacks.fastview import FastViewSkipped

ATTACKS = list_attacks()
# Every (attack, norm) pair an attack declares: the contract holds for each norm, not only the first.
ATTACK_NORMS = [pytest.param(name, norm, id=f"{name}-{norm}") for name in ATTACKS for norm in get_attack(name).norms]
# The budget each norm is tested at on the 8×8 digits in [0, 1].
EPS = {"linf": 0.3, "l2": 2.0, "l1": 8.0, "l0": 12.0}
FIXED_BUDGET_MAX_ACC = 0.25  # clean Acc@1 of the digits MLP is about 0.97
MINIMAL_MIN_SUCCESS = 0.9
TOL = 1e-5
N = 48


def norm_of(info):
    return next(n for n in ("linf", "l2", "l1", "l0") if n in info.norms)


def threat_for(info, norm=None, targeted=False, bounded=None):
    norm = norm or norm_of(info)
    if bounded is None:
        bounded = not info.minimal
    return ThreatModel(norm, EPS[norm] if bounded else float("inf"), targeted=targeted)


def run(info, model, x, y, threat, seed=0, **kw):
    if info.kind == "transfer":
        kw.setdefault("surrogate", model)  # the target as its own surrogate: the strongest transfer
    return info(model, x, y, threat, generator=torch.Generator().manual_seed(seed), **kw)


class AnyShapeNet(nn.Module):
    """A fixed random classifier that takes any N×C×H×W batch (for shape properties)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(16, 10)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(10, 16, generator=g))
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1) * 4)


@pytest.fixture(scope="module")
def batch(digits):
    _, _, xte, yte = digits
    return xte[:N], yte[:N]


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
def test_fools_a_trained_model_within_budget(name, norm, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch
    threat = threat_for(info, norm)
    res = run(info, digits_mlp, x, y, threat)
    with torch.no_grad():
        logits = digits_mlp(res.x_adv)
    # honest success flags: they agree with the model's own prediction on x_adv
    assert torch.equal(res.success, is_adversarial(logits, y, None))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.success.shape == (N,) and res.success.dtype == torch.bool
    if res.queries is not None:
        assert res.queries.shape == (N,) and bool((res.queries >= 0).all())
    acc = float((logits.argmax(1) == y).float().mean())
    if info.kind == "baseline":
        return
    if info.minimal:
        assert float(res.success.float().mean()) >= MINIMAL_MIN_SUCCESS, (name, norm)
    else:
        assert acc <= FIXED_BUDGET_MAX_ACC, (name, norm, acc)


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(4, 9), seed=st.integers(0, 2**16),
       eps_scale=st.floats(0.05, 1.0))
def test_stays_in_bounds_and_ball(name, norm, n, c, h, seed, eps_scale):
    info = get_attack(name)
    model = AnyShapeNet().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, h, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    eps = EPS[norm] * eps_scale
    if norm == "l0":
        eps = float(max(1, int(eps)))
    threat = ThreatModel(norm, eps, bounds=(0.0, 1.0))
    res = run(info, model, x, y, threat, seed=seed, **small_budget(info))
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    if info.bounded or info.minimal:
        # minimal attacks given a finite eps project their answer into the ball
        assert bool((threat.distance(x, res.x_adv) <= eps * (1 + TOL) + TOL).all()), (name, norm)


def small_budget(info):
    """Cheaper settings for the many-shapes property test, from the attack's own parameters."""
    out = {}
    for key, small in (("steps", 5), ("max_queries", 200), ("binary_search_steps", 2)):
        if key in info.defaults:
            out[key] = small
    return out


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
def test_deterministic_under_seed(name, norm, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch[0][:12], batch[1][:12]
    threat = threat_for(info, norm)
    a = run(info, digits_mlp, x, y, threat, seed=5, **small_budget(info))
    b = run(info, digits_mlp, x, y, threat, seed=5, **small_budget(info))
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_leaves_model_and_input_untouched(name, mode, digits_mlp, batch):
    info = get_attack(name)
    model = copy.deepcopy(digits_mlp)
    if mode == "train":  # a live model: trainable parameters, training mode
        model.requires_grad_(True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x, y = batch[0][:8].clone(), batch[1][:8].clone()
    x0, y0 = x.clone(), y.clone()
    if mode == "train":  # attacked through an eval-mode copy, said out loud
        with pytest.warns(ModelInTrainingMode, match="is in training mode: attacking an eval-mode copy"):
            run(info, model, x, y, threat_for(info), **small_budget(info))
    else:
        run(info, model, x, y, threat_for(info), **small_budget(info))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training == (mode == "train")
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("name", [n for n in ATTACKS if get_attack(n).targeted])
def test_targeted_mode_hits_targets(name, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch
    threat = threat_for(info, targeted=True)
    target = choose_targets(digits_mlp, x, y, "random", generator=torch.Generator().manual_seed(1))
    assert not bool((target == y).any())
    res = run(info, digits_mlp, x, y, threat, target=target)
    with torch.no_grad():
        pred = digits_mlp(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    if info.kind != "baseline":
        assert float(res.success.float().mean()) >= 0.5, name


def one_line_error(fn, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        fn()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ATTACKS)
def test_bad_inputs_raise_one_line_errors(name, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch[0][:4], batch[1][:4]
    threat = threat_for(info)

    def call(xx=x, yy=y, tt=threat, **kw):
        return lambda: info(digits_mlp, xx, yy, tt, **kw)

    one_line_error(lambda: ThreatModel(norm_of(info), -0.1), r"eps: expected a number >= 0")
    one_line_error(lambda: ThreatModel("l7", 0.1), r"norm: expected one of")
    xn = x.clone()
    xn[0, 0, 0, 0] = float("nan")
    one_line_error(call(xx=xn), r"x: contains NaN")
    one_line_error(call(xx=x + 2.0), r"x: values must lie in the bounds")
    one_line_error(call(yy=y[:2]), r"y: expected shape \(4,\)")
    one_line_error(call(yy=y.float()), r"y: expected integer labels")
    unsupported = [n for n in ("linf", "l2", "l1", "l0") if n not in info.norms]
    if unsupported:
        one_line_error(call(tt=ThreatModel(unsupported[0], 1.0)), rf"threat.norm: {name} supports")
    targeted = ThreatModel(threat.norm, threat.eps, targeted=True)
    if info.targeted:
        one_line_error(call(tt=targeted), r"target: targeted threat model needs target labels")
    else:
        one_line_error(call(tt=targeted), r"has no targeted mode")
    with pytest.raises(TypeError, match=rf"^{name}: unexpected parameter\(s\) no_such_option$"):
        call(no_such_option=1)()


def test_unknown_attack_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown attack 'pgdd'.*did you mean 'pgd'"):
        get_attack("pgdd")
    assert "pgd" in list_attacks("pg*")


@pytest.mark.parametrize("name", ATTACKS)
def test_parameters_come_from_the_signature_and_are_range_checked(name, digits_mlp, batch):
    info = get_attack(name)
    x, y = batch[0][:4], batch[1][:4]
    threat = threat_for(info)
    for key, (default, _) in info.parameters.items():
        assert info.defaults[key] == default
    for key, bad, match in (("steps", 0, r"steps: expected an integer >= 1, got 0"),
                            ("steps", 2.5, r"steps: expected an integer, got float"),
                            ("max_queries", -3, r"max_queries: expected an integer >= \d, got -3"),
                            ("loss", "cee", r"loss: expected one of 'ce', 'margin', 'dlr', got 'cee' \(did you mean 'ce'")):
        if key in info.parameters:
            one_line_error(lambda k=key, v=bad: info(digits_mlp, x, y, threat, **{k: v}), match)
    if info.parameters:
        first = next(iter(info.parameters))
        misspelt = first[:-1] + ("x" if first[-1] != "x" else "y")
        with pytest.raises(TypeError, match=rf"^{name}: unexpected parameter\(s\) {misspelt} \(did you mean '{first}'"):
            info(digits_mlp, x, y, threat, **{misspelt: info.defaults[first]})


def test_direct_call_and_registry_call_are_one_path(digits_mlp, batch):
    """`from advlab.attacks import pgd` checks the same contract and gives bit-identical results."""
    from advlab.attacks import pgd

    x, y = batch
    threat = ThreatModel("linf", 0.2)
    a = pgd(digits_mlp, x, y, threat, steps=5, generator=torch.Generator().manual_seed(3))
    b = get_attack("pgd")(digits_mlp, x, y, threat, steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert pgd.__name__ == "pgd" and "Madry" in (pgd.__doc__ or "")
    one_line_error(lambda: pgd(digits_mlp, x + 2, y, threat), r"x: values must lie in the bounds")
    with pytest.raises(TypeError, match=r"^pgd: unexpected parameter\(s\) stpes \(did you mean 'steps'"):
        pgd(digits_mlp, x, y, threat, stpes=5)


@pytest.mark.parametrize(("name", "old", "new", "value", "expected"), [
    ("cw", "abort_early", "early_stop", False, False),
    ("apgd-t", "n_targets", "candidates", 2, 3),
    ("apgd-ensemble", "n_targets", "candidates", 2, 3),
    ("apgd-ensemble", "square_queries", "max_queries", 50, 50),
])
def test_renamed_parameters_still_work_with_a_deprecation_warning(name, old, new, value, expected):
    info = get_attack(name)
    with pytest.warns(DeprecationWarning, match=rf"{name}: '{old}' is deprecated, use '{new}'"):
        bound = info.bind({old: value})
    assert bound == {new: expected}


def test_white_box_attacks_refuse_a_black_box_and_tasks_check_labels(digits_mlp, batch):
    from advlab.attacks.registry import TASKS, AttackInfo, AttackResult, register_task
    from advlab.models.blackbox import BlackBox

    x, y = batch[0][:4], batch[1][:4]
    box = BlackBox(digits_mlp, output="logits")
    one_line_error(lambda: get_attack("pgd")(box, x, y, ThreatModel("linf", 0.1)), r"model: pgd is white-box")
    assert float(get_attack("square")(box, x, y, ThreatModel("linf", 0.3), max_queries=20).success.float().mean()) >= 0

    def masks(arg, labels, images):  # a per-pixel task: one label map per image
        if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"{arg}: expected label maps of shape {(images.shape[0], *images.shape[2:])}")
        return labels.long()

    if "toy-maps" not in TASKS:
        register_task("toy-maps", masks)

    def ident(model, x, y, threat, *, target=None, generator=None):
        return AttackResult(x.clone(), torch.zeros(len(x), dtype=torch.bool))

    info = AttackInfo("toy", ident, "baseline", ("linf",), False, "fixed", False, "", task="toy-maps")
    maps = torch.zeros(4, 8, 8, dtype=torch.long)
    assert torch.equal(info(digits_mlp, x, maps, ThreatModel("linf", 0.1)).x_adv, x)
    one_line_error(lambda: info(digits_mlp, x, y, ThreatModel("linf", 0.1)), r"y: expected label maps")


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
