"""The attack contract under ``torch.set_default_device("meta")``: device bugs caught without a GPU.

The model and the data are built on the CPU first; only the attack call runs with the default
device set to ``meta``. A tensor an attack creates without naming a device (``torch.zeros(n)``,
``torch.arange(n)``, ``torch.rand(..., generator=g)``) then lands on ``meta`` and the first
operation mixing it with the CPU input fails loudly, exactly where a CUDA input would have met
a CPU tensor. Each run must also give results bit-identical to the plain CPU run (seeded), so the
contract's fooling, determinism and honest-flag checks carry over unchanged; and every result
(x_adv, success, queries) must come back on the input's device.

The registry drives it: every registered attack gets these checks for every norm it declares.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import ModelInTrainingMode, choose_targets, get_attack, is_adversarial
from attack_contract_helpers import ATTACK_NORMS, ATTACKS, EPS, TOL, run, threat_for
from test_attacks_contract import AnyShapeNet, small_budget

N_META = 8  # examples per meta run: the point is the device of every tensor, not statistics


@contextmanager
def meta_default():
    """Tensors created without a device land on ``meta`` inside the block."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def on_cpu(res):
    return [t.device.type for t in (res.x_adv, res.success, res.queries) if t is not None] == \
        ["cpu"] * (2 + (res.queries is not None))


@pytest.fixture(scope="module")
def tiny(digits):
    _, _, xte, yte = digits
    return xte[:N_META], yte[:N_META]


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
def test_meta_run_equals_the_cpu_run(name, norm, digits_mlp, tiny):
    """Fooling and determinism under meta: the same seeded result as on the CPU, honest flags, on x's device."""
    info = get_attack(name)
    x, y = tiny
    threat = threat_for(info, norm)
    ref = run(info, digits_mlp, x, y, threat, seed=3, **small_budget(info))
    with meta_default():
        res = run(info, digits_mlp, x, y, threat, seed=3, **small_budget(info))
    assert on_cpu(res), (name, norm)
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.success, ref.success), (name, norm)
    if ref.queries is not None:
        assert torch.equal(res.queries, ref.queries)
    with torch.no_grad():
        assert torch.equal(res.success, is_adversarial(digits_mlp(res.x_adv), y, None))


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
def test_meta_run_stays_in_bounds_and_ball(name, norm):
    """Ball and bounds under meta on a 3-channel batch (the L0 paths count pixels over channels)."""
    info = get_attack(name)
    model = AnyShapeNet().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(11)
    x = torch.rand(3, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (3,), generator=g)
    eps = EPS[norm] * 0.5
    threat = ThreatModel(norm, float(max(1, int(eps))) if norm == "l0" else eps)
    with meta_default():
        res = run(info, model, x, y, threat, seed=1, **small_budget(info))
    assert on_cpu(res), (name, norm)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    if info.bounded or info.minimal:
        assert bool((threat.distance(x, res.x_adv) <= threat.eps * (1 + TOL) + TOL).all()), (name, norm)


@pytest.mark.parametrize("name", ATTACKS)
def test_meta_run_leaves_a_training_mode_model_untouched(name, digits_mlp, tiny):
    """The eval-mode copy of a live model is made under meta too; the model and the input are not changed."""
    info = get_attack(name)
    model = copy.deepcopy(digits_mlp).requires_grad_(True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = tiny[0][:4].clone(), tiny[1][:4].clone()
    x0 = x.clone()
    with meta_default(), pytest.warns(ModelInTrainingMode):
        res = run(info, model, x, y, threat_for(info), **small_budget(info))
    assert on_cpu(res)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters()) and model.training
    assert torch.equal(x, x0)


@pytest.mark.parametrize("name", [n for n in ATTACKS if get_attack(n).targeted])
def test_meta_targeted_run_equals_the_cpu_run(name, digits_mlp, tiny):
    """Targets chosen and hit under meta: the same as on the CPU."""
    info = get_attack(name)
    x, y = tiny
    threat = threat_for(info, targeted=True)
    target = choose_targets(digits_mlp, x, y, "random", generator=torch.Generator().manual_seed(1))
    ref = run(info, digits_mlp, x, y, threat, target=target, **small_budget(info))
    with meta_default():
        t_meta = choose_targets(digits_mlp, x, y, "random", generator=torch.Generator().manual_seed(1))
        ll = choose_targets(digits_mlp, x, y, "least-likely")
        res = run(info, digits_mlp, x, y, threat, target=t_meta, **small_budget(info))
    assert torch.equal(t_meta, target) and ll.device.type == "cpu"
    assert on_cpu(res) and torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.success, ref.success), name
