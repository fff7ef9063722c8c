"""Helpers of the attack-contract tests (tests/test_attacks_contract*.py): budgets per norm, a seeded call."""


import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import get_attack, list_attacks

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


def one_line_error(fn, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        fn()
    assert "\n" not in str(e.value)
