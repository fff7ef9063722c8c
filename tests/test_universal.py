"""Universal perturbations (UAP) and the universal patch on the digits MLP: ball, bounds, area, seeds, strength."""

from __future__ import annotations

import math

import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import universal_patch, universal_perturbation
from advlab.attacks.adversarial_patch import Patch, mask, patch_success
from advlab.attacks.universal import apply_universal, universal_score
from advlab.models.blackbox import BlackBox
from advlab.physical import render

EPS = {"linf": 0.3, "l2": 2.0}


def state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()], [p.grad for p in model.parameters()])


def same_state(a, b):
    return (all(torch.equal(v, b[0][k]) for k, v in a[0].items()) and a[1:3] == b[1:3]
            and all(g is None for g in b[3]) == all(g is None for g in a[3]))


@pytest.fixture(scope="module")
def split(digits):
    xtr, ytr, xte, yte = digits
    return xtr[:400], ytr[:400], xte, yte


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("batch", "images", "passes"), [(1, 100, 1), (16, 400, 2)])
def test_uap_stays_in_the_ball_and_fools_held_out_images(norm, batch, images, passes, digits_mlp, split):
    xc, _, xh, yh = split
    before = state(digits_mlp)
    v = universal_perturbation(digits_mlp, xc[:images], None, ThreatModel(norm, EPS[norm]), max_passes=passes,
                               batch=batch, generator=torch.Generator().manual_seed(0))
    assert v.shape == xc.shape[1:]
    size = v.abs().max() if norm == "linf" else v.norm()
    assert float(size) <= EPS[norm] * (1 + 1e-5)
    xv = apply_universal(xh, v)
    assert float(xv.min()) >= 0.0 and float(xv.max()) <= 1.0
    score = universal_score(digits_mlp, xh, yh, v)
    noise = torch.rand(v.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise = noise * (EPS[norm] / (noise.abs().max() if norm == "linf" else noise.norm()))
    # measured on this fixture (seeds 0-3): fooling rate 0.25-0.57 on the held-out images; random noise of the
    # same size 0.02 (L∞) and 0.06 (L2)
    assert score.fooling_rate >= 0.2, score
    assert score.fooling_rate > universal_score(digits_mlp, xh, yh, noise).fooling_rate + 0.1
    assert score.accuracy < score.clean_accuracy - 0.15
    assert same_state(state(digits_mlp), before)


def test_uap_is_deterministic_under_a_seed_and_stops_at_the_target_rate(digits_mlp, split):
    xc, yc, xh, yh = split
    threat = ThreatModel("l2", 2.0)
    run = [universal_perturbation(digits_mlp, xc[:150], yc[:150], threat, max_passes=2, batch=8,
                                  generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(run[0], run[1])
    # a target rate the clean errors of the held-out images already meet stops before the first pass: v stays 0
    assert universal_score(digits_mlp, xh, yh, torch.zeros(1, 8, 8)).clean_accuracy < 1
    v = universal_perturbation(digits_mlp, xh, yh, threat, target_rate=1e-6, generator=torch.Generator())
    assert not bool(v.any())


@pytest.mark.parametrize(("kw", "match"), [
    ({"threat": ThreatModel("l1", 1.0)}, "threat.norm"),
    ({"threat": ThreatModel("linf", float("inf"))}, "threat.eps"),
    ({"threat": ThreatModel("linf", 0.1, targeted=True)}, "threat.targeted"),
    ({"target_rate": 1.5}, "target_rate"),
    ({"batch": 0}, "batch"),
    ({"y": torch.zeros(3, dtype=torch.long)}, "y"),
    ({"x": torch.full((4, 1, 8, 8), 2.0)}, "x"),
])
def test_uap_bad_inputs_get_one_line_errors(kw, match, digits_mlp, split):
    args = {"x": split[0][:4], "y": None, "threat": ThreatModel("linf", 0.1)} | kw
    with pytest.raises((ValueError, TypeError), match=match) as err:
        universal_perturbation(digits_mlp, args.pop("x"), args.pop("y"), args.pop("threat"), **args)
    assert "\n" not in str(err.value)


def test_uap_refuses_a_black_box(digits_mlp, split):
    box = BlackBox(lambda t: digits_mlp(t))
    with pytest.raises(TypeError, match="model"):
        universal_perturbation(box, split[0][:4], None, ThreatModel("linf", 0.1))


@pytest.mark.parametrize("shape", ["circle", "square"])
def test_patch_mask_and_rendered_area_fit_the_fraction(shape):
    alpha = mask(shape, 12)
    assert alpha.shape == (1, 12, 12)
    assert abs(float(alpha.mean()) - (math.pi / 4 if shape == "circle" else 1.0)) < 0.05
    patch = Patch(torch.rand(1, 12, 12), alpha, width=0.0, target=0, rotation=(-180.0, 180.0), scale=(0.9, 1.1),
                  size_fraction=0.1)
    from advlab.attacks.adversarial_patch import nominal_width

    patch = Patch(**{**patch.__dict__, "width": nominal_width(0.1, (28, 28), float(alpha.mean()), 1.1)})
    cond = patch.placements(64, (28, 28), generator=torch.Generator().manual_seed(0))
    assert bool((cond.width <= patch.width * 1.1 + 1e-4).all()) and bool((cond.width >= patch.width * 0.9 - 1e-4).all())
    covered = render(torch.cat([torch.zeros(1, 12, 12), alpha])[None], torch.ones(64, 1, 28, 28), cond)
    area = (1 - covered).flatten(1).sum(1)  # the patch is black on white: darkness is its coverage
    assert float(area.max()) <= 0.1 * 28 * 28 + 1e-3


def test_patch_is_deterministic_fits_and_reaches_the_target(digits_mlp, split):
    xc, _, xh, yh = split
    before = state(digits_mlp)
    kw = {"size_fraction": 0.5, "steps": 150, "lr": 0.1, "generator": None}
    patches = [universal_patch(digits_mlp, xc, 0, **(kw | {"generator": torch.Generator().manual_seed(0)}))
               for _ in range(2)]
    assert torch.equal(patches[0].image, patches[1].image)
    p = patches[0]
    assert p.image.shape[0] == 1 and float(p.image.min()) >= 0 and float(p.image.max()) <= 1
    assert float(p.alpha.mean()) * (p.width * p.scale[1]) ** 2 <= 0.5 * 64 + 1e-4
    score = patch_success(digits_mlp, xh, yh, p, draws=2, generator=torch.Generator().manual_seed(1))
    grey = Patch(**{**p.__dict__, "image": torch.full_like(p.image, 0.5)})
    baseline = patch_success(digits_mlp, xh, yh, grey, draws=2, generator=torch.Generator().manual_seed(1))
    assert score.excluded == int((yh == 0).sum()) and score.trials == 2 * int((yh != 0).sum())
    # measured on this fixture (a disc covering up to half of the 8×8 image, anywhere, any rotation): 0.65 and
    # 0.66 targeted success (seeds 0, 1), a grey patch 0.07. The MLP has no translation invariance: a patch that
    # may go anywhere needs that much area (a quarter of the image gave 0.03-0.04; fixed in place, 0.99).
    assert score.success >= 0.5, score
    assert score.success > baseline.success + 0.4
    assert same_state(state(digits_mlp), before)


@pytest.mark.parametrize(("kw", "match"), [
    ({"target": 1.5}, "target"),
    ({"target": -1}, "target"),
    ({"target": 10}, "target"),
    ({"size_fraction": 0.0}, "size_fraction"),
    ({"size_fraction": 1.0}, "size_fraction"),
    ({"rotation": (10.0, -10.0)}, "rotation"),
    ({"scale": (0.0, 1.0)}, "scale"),
    ({"shape": "star"}, "shape"),
    ({"steps": 0}, "steps"),
])
def test_patch_bad_inputs_get_one_line_errors(kw, match, digits_mlp, split):
    args = {"target": 0, "steps": 1} | kw
    with pytest.raises((ValueError, TypeError), match=match) as err:
        universal_patch(digits_mlp, split[0][:8], args.pop("target"), **args)
    assert "\n" not in str(err.value)
