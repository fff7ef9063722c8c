"""The attack contract on a CUDA GPU (``pytest -m cuda``; skipped on a machine without one).

The digits MLP and the batch are moved to the GPU; every registered attack, for every norm, must
return x_adv, success and queries on the GPU, inside the bounds and the ball, with honest success
flags, bit-identical under the same seed, meeting the contract's fooling requirement, and deciding
(fooled or not) like the CPU run on nearly every example (TF32 off, deterministic cuDNN: the only
differences left are the order of float32 sums).
"""

from __future__ import annotations

import copy

import pytest
import torch

from advlab._device import setup_cuda_determinism
from advlab.attacks import get_attack, is_adversarial
from attack_contract_helpers import ATTACK_NORMS, FIXED_BUDGET_MAX_ACC, MINIMAL_MIN_SUCCESS, TOL, run, threat_for
from test_attacks_contract import small_budget

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
N = 48
MAX_DECISIONS_DIFFERING = 2  # of N: CPU and GPU float32 sums differ in order, so a borderline example may flip


@pytest.fixture(scope="module")
def gpu(digits, digits_mlp):
    dev = torch.device("cuda")
    setup_cuda_determinism(dev)
    x, y = digits[2][:N], digits[3][:N]
    return copy.deepcopy(digits_mlp).to(dev), x.to(dev), y.to(dev), (x, y)


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
def test_contract_on_cuda(name, norm, gpu, digits_mlp):
    info = get_attack(name)
    model, x, y, (xc, yc) = gpu
    threat = threat_for(info, norm)
    res = run(info, model, x, y, threat)
    again = run(info, model, x, y, threat)
    assert all(t.device.type == "cuda" for t in (res.x_adv, res.success) + (() if res.queries is None
                                                                             else (res.queries,)))
    assert torch.equal(res.x_adv, again.x_adv) and torch.equal(res.success, again.success)
    with torch.no_grad():
        logits = model(res.x_adv)
    assert torch.equal(res.success, is_adversarial(logits, y, None))
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    if info.bounded or info.minimal:
        assert bool((threat.distance(x, res.x_adv) <= threat.eps * (1 + TOL) + TOL).all())
    if info.kind != "baseline":
        if info.minimal:
            assert float(res.success.float().mean()) >= MINIMAL_MIN_SUCCESS
        else:
            assert float((logits.argmax(1) == y).float().mean()) <= FIXED_BUDGET_MAX_ACC
    cpu = run(info, digits_mlp, xc, yc, threat)
    assert int((cpu.success != res.success.cpu()).sum()) <= MAX_DECISIONS_DIFFERING, (name, norm)


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
def test_small_budget_runs_stay_on_cuda(name, norm, gpu):
    info = get_attack(name)
    model, x, y, _ = gpu
    res = run(info, model, x[:6], y[:6], threat_for(info, norm), **small_budget(info))
    assert res.x_adv.device.type == res.success.device.type == "cuda"
