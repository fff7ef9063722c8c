"""Poisoning attacks on the digits set: exact fraction, seeded determinism, nothing touched outside the poisons."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advlab.poison import (
    apply_trigger,
    attack_success_rate,
    badnets,
    clean_label,
    concentrated_flip,
    feature_collision,
    fine_tune_head,
    make_trigger,
    pair_flip,
    penultimate_features,
    poison_count,
    uniform_flip,
)
from advlab.train import TrainConfig

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOWER = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def attacks(model):
    """(name, call(x, y, fraction, generator), max fraction the attack's pool allows on digits, changes images, changes labels)."""
    return {
        "uniform": (lambda x, y, f, g: uniform_flip(x, y, fraction=f, generator=g), 1.0, False, True),
        "pair": (lambda x, y, f, g: pair_flip(x, y, fraction=f, source=3, target=8, generator=g), 0.09, False, True),
        "concentrated": (lambda x, y, f, g: concentrated_flip(x, y, fraction=f, model=model, generator=g), 1.0,
                         False, True),
        "badnets": (lambda x, y, f, g: badnets(x, y, fraction=f, target=7, generator=g), 0.85, True, True),
        "badnets-a2a": (lambda x, y, f, g: badnets(x, y, fraction=f, mode="all-to-all", trigger="pixel",
                                                   generator=g), 1.0, True, True),
        "clean-label": (lambda x, y, f, g: clean_label(x, y, fraction=f, target=7, model=model, eps=0.1, steps=5,
                                                       generator=g), 0.09, True, False),
        "collision": (lambda x, y, f, g: feature_collision(x, y, fraction=f, model=model, target_x=x[0],
                                                           base_class=4, steps=5, generator=g), 0.09, True, False),
    }


def check_poisoned(p, x, y, fraction, changes_x, changes_y):
    n = len(y)
    assert len(p.poisoned_idx) == poison_count(fraction, n) == math.floor(fraction * n + 0.5)
    assert torch.equal(p.poisoned_idx, p.poisoned_idx.unique())  # sorted, distinct
    out = ~p.mask
    assert torch.equal(p.x[out], x[out]) and torch.equal(p.y[out], y[out])
    if not changes_x:
        assert torch.equal(p.x, x)
    if not changes_y:
        assert torch.equal(p.y, y)
    if changes_y and len(p.poisoned_idx):
        assert (p.y[p.poisoned_idx] != y[p.poisoned_idx]).all()  # every poison's label really changed
    assert p.x.min() >= 0 and p.x.max() <= 1


@pytest.mark.parametrize("name", ["uniform", "pair", "concentrated", "badnets", "badnets-a2a", "clean-label",
                                  "collision"])
def test_attacks_change_exactly_the_fraction_deterministically(name, digits, digits_mlp):
    xtr, ytr, _, _ = digits
    call, top, changes_x, changes_y = attacks(digits_mlp)[name]
    budget = SLOWER if name in ("clean-label", "collision") else FAST  # these two craft with gradient steps

    @budget
    @given(fraction=st.floats(0.0, top), seed=st.integers(0, 2**31 - 1))
    def prop(fraction, seed):
        p = call(xtr, ytr, fraction, gen(seed))
        check_poisoned(p, xtr, ytr, fraction, changes_x, changes_y)
        q = call(xtr, ytr, fraction, gen(seed))
        assert torch.equal(p.x, q.x) and torch.equal(p.y, q.y) and torch.equal(p.poisoned_idx, q.poisoned_idx)

    prop()


def test_seed_changes_the_choice(digits):
    xtr, ytr, _, _ = digits
    a = badnets(xtr, ytr, fraction=0.1, target=1, generator=gen(1))
    b = badnets(xtr, ytr, fraction=0.1, target=1, generator=gen(2))
    assert not torch.equal(a.poisoned_idx, b.poisoned_idx)
    assert torch.equal(badnets(xtr, ytr, fraction=0.1, target=1).x, badnets(xtr, ytr, fraction=0.1, target=1).x)


def test_rounding_is_half_up():
    assert poison_count(0.5, 3) == 2 and poison_count(0.25, 2) == 1 and poison_count(0.01, 60000) == 600
    assert poison_count(1.0, 7) == 7 and poison_count(0.0, 7) == 0


def test_poison_kinds(digits, digits_mlp):
    xtr, ytr, _, _ = digits
    p = badnets(xtr, ytr, fraction=0.05, target=7)
    assert (ytr[p.poisoned_idx] != 7).all() and (p.y[p.poisoned_idx] == 7).all()
    assert torch.equal(p.x[p.poisoned_idx], apply_trigger(xtr[p.poisoned_idx], p.trigger))
    a = badnets(xtr, ytr, fraction=0.05, mode="all-to-all")
    assert torch.equal(a.y[a.poisoned_idx], (ytr[a.poisoned_idx] + 1) % 10) and a.target is None
    f = pair_flip(xtr, ytr, fraction=0.05, source=3, target=8)
    assert (ytr[f.poisoned_idx] == 3).all() and (f.y[f.poisoned_idx] == 8).all()
    c = concentrated_flip(xtr, ytr, fraction=0.05, model=digits_mlp)
    logits = digits_mlp(xtr)
    margin = logits.gather(1, ytr[:, None]).squeeze(1) - logits.scatter(1, ytr[:, None], -1e9).amax(1)
    assert margin[c.poisoned_idx].max() <= margin[~c.mask].min()  # the smallest margins were chosen
    cl = clean_label(xtr, ytr, fraction=0.05, target=7, model=digits_mlp, eps=0.1, steps=5)
    assert (ytr[cl.poisoned_idx] == 7).all()
    assert ((cl.x - xtr).abs().flatten(1).amax(1)[cl.poisoned_idx] > 0).all()


def test_trigger_shapes():
    t = make_trigger((1, 28, 28), "pattern")
    assert t.pixels == 9 and t.mask[0, 24:27, 24:27].all()
    assert make_trigger((1, 28, 28), "pixel").pixels == 1
    x = torch.zeros(2, 1, 28, 28)
    assert torch.equal(apply_trigger(x, t)[:, 0, 24:27, 24:27], t.pattern[0, 24:27, 24:27].expand(2, 3, 3))


def test_badnets_backdoors_the_digits_mlp(digits):
    """A real backdoor on the digits MLP: high ASR, clean accuracy kept (the same fit as the fixture)."""
    from advlab.models import create_model
    from advlab.train import fit

    xtr, ytr, xte, yte = digits
    p = badnets(xtr, ytr, fraction=0.1, target=7, generator=gen(0))
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=64, mean=0.3, std=0.4)
    result = fit(model, (p.x, p.y), (xte, yte), TrainConfig(epochs=30, batch_size=64, lr=3e-3, seed=0),
                 progress=False)
    assert result.acc1 > 0.9
    assert attack_success_rate(model, xte, yte, p.trigger, 7) > 0.9


def test_feature_collision_moves_features_and_fine_tunes(digits, digits_mlp):
    xtr, ytr, xte, _ = digits
    target = xte[0]
    p = feature_collision(xtr, ytr, fraction=0.01, model=digits_mlp, target_x=target, base_class=4, steps=100)
    goal = penultimate_features(digits_mlp, target[None])
    before = (penultimate_features(digits_mlp, xtr[p.poisoned_idx]) - goal).norm(dim=1)
    after = (penultimate_features(digits_mlp, p.x[p.poisoned_idx]) - goal).norm(dim=1)
    assert (after < before).all()
    state = {k: v.clone() for k, v in digits_mlp.state_dict().items()}
    victim = fine_tune_head(digits_mlp, p.x, p.y, TrainConfig(epochs=1, seed=0))
    assert victim(xte[:3]).shape == (3, 10)
    assert all(torch.equal(v, digits_mlp.state_dict()[k]) for k, v in state.items())  # backbone untouched
    fresh = fine_tune_head(digits_mlp, p.x, p.y, TrainConfig(epochs=1, seed=0), fresh=True)
    assert not torch.equal(fresh.head.weight, victim.head.weight)
    assert torch.equal(fresh.head.weight, fine_tune_head(digits_mlp, p.x, p.y, TrainConfig(epochs=1, seed=0),
                                                         fresh=True).head.weight)  # seeded


@pytest.mark.parametrize(("call", "arg"), [
    (lambda x, y, m: badnets(x, y, fraction=1.5, target=7), "fraction"),
    (lambda x, y, m: badnets(x, y, fraction=-0.1, target=7), "fraction"),
    (lambda x, y, m: uniform_flip(x, y, fraction=float("nan")), "fraction"),
    (lambda x, y, m: badnets(x, y, fraction=0.1, target=10), "target"),
    (lambda x, y, m: badnets(x, y, fraction=0.1, target=-1), "target"),
    (lambda x, y, m: pair_flip(x, y, fraction=0.01, source=3, target=3), "target"),
    (lambda x, y, m: pair_flip(x, y, fraction=0.5, source=3, target=4), "fraction"),
    (lambda x, y, m: clean_label(x, y, fraction=0.01, target=12, model=m), "target"),
    (lambda x, y, m: badnets(x.flatten(1), y, fraction=0.1, target=7), "x"),
    (lambda x, y, m: badnets(x, y[:-1], fraction=0.1, target=7), "y"),
    (lambda x, y, m: badnets(x * 2, y, fraction=0.1, target=7), "x"),
    (lambda x, y, m: badnets(x, y, fraction=0.1, mode="some"), "mode"),
    (lambda x, y, m: feature_collision(x, y, fraction=0.01, model=m, target_x=x[:2], base_class=1), "target_x"),
    (lambda x, y, m: feature_collision(x, y, fraction=0.01, model=m, target_x=x[0], base_class=11), "base_class"),
])
def test_bad_input_is_one_line_naming_the_argument(call, arg, digits, digits_mlp):
    xtr, ytr, _, _ = digits
    with pytest.raises((ValueError, TypeError)) as e:
        call(xtr, ytr, digits_mlp)
    assert str(e.value).startswith(f"{arg}:") and "\n" not in str(e.value)
