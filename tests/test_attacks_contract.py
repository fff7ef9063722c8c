"""The contract every registered attack keeps, driven by the registry.

A new attack gets all of these checks by being registered: no new test code. What it must
achieve depends on its metadata: fixed-budget white-box and score-based attacks must bring the
digits MLP's Acc@1 down by a stated margin inside the budget; minimal-perturbation attacks must
succeed on nearly every example; baselines (noise, semantic) are reference points with no
fooling requirement (their own behaviour is tested in test_attacks_known.py).
"""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from advlab import ThreatModel
from advlab.attacks import ModelInTrainingMode, choose_targets, get_attack, is_adversarial, list_attacks
from attack_contract_helpers import (
    ATTACK_NORMS,
    ATTACKS,
    EPS,
    FIXED_BUDGET_MAX_ACC,
    MINIMAL_MIN_SUCCESS,
    TOL,
    N,
    norm_of,
    one_line_error,
    run,
    threat_for,
)


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
        one_line_error(call(tt=targeted), r"target: a targeted threat model needs target=, the target labels, "
                                          r"with y the true ones \(ART takes targets as y")
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
