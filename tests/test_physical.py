"""advlab.physical: the camera (render, transform_images), conditions, EOT through the grad_fn seam, print-and-photo."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab import ThreatModel
from advlab.attacks import bim, eot_grad_fn, fgsm, get_attack, pgd
from advlab.physical import (
    LAB,
    MAX_BLUR,
    Conditions,
    TransformDistribution,
    Transformed,
    kurakin_bim,
    lab_grid,
    print_photo,
    print_photo_table,
    render,
    transform_images,
    warp,
)


def _frontal(width: float, size: int = 48, channels: int = 1, centre: tuple[float, float] | None = None) -> Conditions:
    cond = Conditions.identity(1, size, channels)
    cond = cond._replace(width=torch.tensor([width]))
    return cond if centre is None else cond._replace(centre=torch.tensor([centre]))


# --- the camera -------------------------------------------------------------------------------------------------

def test_render_gradcheck_object_and_background():
    g = torch.Generator().manual_seed(0)
    cond = TransformDistribution(width=(3.0, 5.0), blur=(0.3, 0.8), noise=(0.0, 0.0)).sample(2, 5, channels=2,
                                                                                            generator=g)
    obj = torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    bg = torch.rand(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    # values kept inside (0, 1) so the final clamp is not at a kink
    assert torch.autograd.gradcheck(lambda o, b: render(o * 0.5 + 0.2, b * 0.5 + 0.2, cond), (obj, bg))
    assert torch.autograd.gradcheck(lambda o, b: render(o * 0.5 + 0.2, b * 0.5 + 0.2, cond, supersample=2),
                                    (obj, bg))


def test_transform_images_gradcheck():
    g = torch.Generator().manual_seed(1)
    cond = TransformDistribution.image(rotation=20).sample(2, 6, channels=2, relative_width=True, generator=g)
    cond = cond._replace(noise=torch.zeros(2))
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: transform_images(v * 0.5 + 0.2, cond, fill=0.3), (x,))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.sampled_from([1, 3, 4]), h=st.integers(2, 20), w=st.integers(2, 20),
       seed=st.integers(0, 2**16))
def test_identity_is_exact(n, c, h, w, seed):
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))
    x[0, 0, 0, 0] = 0.0  # the bounds themselves pass unchanged
    x[-1, -1, -1, -1] = 1.0
    out = transform_images(x, Conditions.identity(n, (h, w), c), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(out, x)


@settings(max_examples=30, deadline=None)
@given(width=st.floats(4.0, 46.0), dx=st.floats(-1.0, 1.0), dy=st.floats(-1.0, 1.0), side=st.sampled_from([64, 33]))
def test_frontal_object_of_width_w_covers_w_squared_pixels(width, dx, dy, side):
    room = (48 - width) / 2
    cond = _frontal(width, centre=(24 + dx * room, 24 + dy * room))
    covered = float(render(torch.ones(1, 2, side, side), torch.zeros(1, 1, 48, 48), cond).sum())
    assert abs(covered - width ** 2) <= 0.15 * 4 * width  # within 0.15 px along each edge


def test_yaw_foreshortens_horizontally_only():
    obj, bg = torch.ones(1, 2, 64, 64), torch.zeros(1, 1, 48, 48)
    extents = []
    for yaw in (0.0, 30.0, 60.0):
        out = render(obj, bg, _frontal(32.0)._replace(yaw=torch.tensor([yaw])))[0, 0]
        extents.append(((out.sum(0) > 0.5).sum().item(), (out.sum(1) > 0.5).sum().item(), float(out.sum())))
    (w0, h0, a0), (w30, h30, a30), (w60, h60, a60) = extents
    assert w0 == h0 == 32 and a0 == pytest.approx(1024.0, abs=1.0)
    assert w60 < w30 < w0  # narrower as the viewing angle grows
    assert h60 >= h30 >= h0  # the near edge grows a little (perspective), the height never shrinks
    for yaw, area in ((30.0, a30), (60.0, a60)):  # about cos(yaw) of the area, perspective within 10 %
        assert area == pytest.approx(1024 * math.cos(math.radians(yaw)), rel=0.1)


def test_prefilter_removes_aliasing_of_fine_texture():
    ii, jj = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = ((ii + jj) % 2).float()  # the finest texture a 64-texel object can carry: mean 0.5
    obj = torch.stack([checker, torch.ones(64, 64)])[None]
    cond = _frontal(16.0)._replace(roll=torch.tensor([7.0]))
    inner = (slice(None), slice(0, 1), slice(19, 29), slice(19, 29))
    bg = torch.zeros(1, 1, 48, 48)
    seen = render(obj, bg, cond)[inner]
    assert (seen - 0.5).abs().max() < 0.05
    aliased = warp(torch.cat([obj[:, :1] * obj[:, 1:], obj[:, 1:]], 1), cond, (48, 48), prefilter=False)[inner]
    assert (aliased - 0.5).abs().max() > 0.2  # what one bilinear sample per pixel would show


def test_one_object_for_all_rows_equals_one_per_row():
    g = torch.Generator().manual_seed(2)
    obj = torch.rand(1, 4, 64, 64, generator=g)
    bg = torch.rand(16, 3, 48, 48, generator=g)
    cond = TransformDistribution.signs(48).sample(16, 48, generator=g)._replace(noise=torch.zeros(16))
    shared = render(obj, bg, cond)
    per_row = render(obj.expand(16, -1, -1, -1).clone(), bg, cond)
    assert (shared - per_row).abs().max() < 1e-5


def test_render_is_deterministic_under_a_seed():
    obj, bg = torch.rand(1, 4, 64, 64), torch.rand(8, 3, 48, 48)

    def once() -> torch.Tensor:
        g = torch.Generator().manual_seed(5)
        return render(obj, bg, TransformDistribution.signs(48).sample(8, 48, generator=g), generator=g)

    a, b = once(), once()
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1


# --- conditions ---------------------------------------------------------------------------------------------------

def test_sampled_conditions_respect_their_ranges():
    d = TransformDistribution.signs(48)
    cond = d.sample(2000, 48, channels=3, generator=torch.Generator().manual_seed(0))
    for name in ("width", "yaw", "pitch", "roll", "light", "contrast", "colour", "blur", "noise"):
        low, high = getattr(d, name)
        value = getattr(cond, name)
        assert value.min() >= low and value.max() <= high, name
    half = cond.width[:, None] / 2
    assert (cond.centre - half >= -1e-4).all() and (cond.centre + half <= 48 + 1e-4).all()
    rel = TransformDistribution.image().sample(100, 28, channels=1, relative_width=True,
                                               generator=torch.Generator().manual_seed(0))
    assert rel.width.min() >= 0.9 * 28 and rel.width.max() <= 1.1 * 28


def test_lab_grid_cells_and_values():
    cond, index = lab_grid(draws=3)
    cells = len(LAB["widths"]) * len(LAB["angles"]) * len(LAB["lights"])
    assert cells == 4 * 4 * 3 and cond.rows == len(index) == cells * 3
    assert torch.equal(cond.width, torch.tensor(LAB["widths"])[index[:, 0]])
    assert torch.equal(cond.yaw.abs(), torch.tensor(LAB["angles"])[index[:, 1]])
    assert torch.equal(cond.light, torch.tensor(LAB["lights"])[index[:, 2]])
    _, counts = torch.unique(index, dim=0, return_counts=True)
    assert len(counts) == cells and (counts == 3).all()
    again, _ = lab_grid(draws=3)
    assert all(torch.equal(a, b) for a, b in zip(cond, again, strict=True))


@pytest.mark.parametrize(("call", "match"), [
    (lambda: render(torch.rand(1, 5, 8, 8), torch.rand(2, 3, 8, 8), Conditions.identity(2, 8)), "obj"),
    (lambda: render(torch.rand(3, 4, 8, 8), torch.rand(2, 3, 8, 8), Conditions.identity(2, 8)), "cond/obj"),
    (lambda: transform_images(torch.rand(2, 3, 8, 8), Conditions.identity(3, 8)), "cond"),
    (lambda: transform_images(torch.rand(1, 3, 8, 8), Conditions.identity(1, 8)._replace(
        blur=torch.tensor([MAX_BLUR + 1]))), "blur"),
    (lambda: transform_images(torch.rand(1, 2, 8, 8), Conditions.identity(1, 8, 3)), "colour"),
    (lambda: TransformDistribution(width=(10.0, 5.0)), "width"),
    (lambda: TransformDistribution(light=(-1.0, 1.0)), "light"),
    (lambda: TransformDistribution(blur=(-0.5, 1.0)), "blur"),
    (lambda: TransformDistribution(shift=1.5), "shift"),
    (lambda: eot_grad_fn(TransformDistribution.image(), 0), "samples"),
    (lambda: lab_grid(draws=0), "draws"),
    (lambda: print_photo(torch.rand(1, 2, 8, 8)), "x"),
    (lambda: print_photo(torch.rand(1, 1, 8, 8), severity=-1.0), "severity"),
])
def test_bad_inputs_get_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# --- EOT ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_eval(digits):
    _, _, xte, yte = digits
    return xte[:200], yte[:200]


def test_eot_grad_fn_works_with_every_gradient_attack(digits_mlp, digits_eval):
    x, y = digits_eval[0][:16], digits_eval[1][:16]
    threat = ThreatModel("linf", 0.2)
    for name, params in (("fgsm", {}), ("bim", {"steps": 2}), ("pgd", {"steps": 2}), ("mi-fgsm", {"steps": 2}),
                         ("apgd", {"steps": 3}), ("apgd-t", {"steps": 3})):
        grad_fn = eot_grad_fn(TransformDistribution.image(), 4, generator=torch.Generator().manual_seed(0))
        r = get_attack(name)(digits_mlp, x, y, threat, generator=torch.Generator().manual_seed(0), grad_fn=grad_fn,
                             **params)
        assert (r.x_adv - x).abs().max() <= 0.2 + 1e-6 and r.x_adv.min() >= 0 and r.x_adv.max() <= 1, name


def test_eot_pgd_survives_the_transformations_better_than_plain_pgd(digits_mlp, digits_eval):
    x, y = digits_eval
    d = TransformDistribution.image(rotation=20, scale=(0.8, 1.2), shift=0.2)
    threat = ThreatModel("linf", 0.2)
    plain = pgd(digits_mlp, x, y, threat, steps=20, generator=torch.Generator().manual_seed(0))
    eot = pgd(digits_mlp, x, y, threat, steps=20, generator=torch.Generator().manual_seed(0),
              grad_fn=eot_grad_fn(d, 8, generator=torch.Generator().manual_seed(1)))
    seen = Transformed(digits_mlp, d, seed=3)

    def fooled(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return torch.stack([seen(x_adv).argmax(1) != y for _ in range(20)]).float().mean().item()

    assert fooled(eot.x_adv) > fooled(plain.x_adv) + 0.02


def test_eot_grad_fn_is_deterministic_and_averages(digits_mlp, digits_eval):
    x, y = digits_eval[0][:8], digits_eval[1][:8]

    def grad(samples: int) -> torch.Tensor:
        fn = eot_grad_fn(TransformDistribution.image(), samples, generator=torch.Generator().manual_seed(4))
        return fn(digits_mlp, x, torch.arange(8), lambda z, rows: torch.nn.functional.cross_entropy(
            z, y[rows], reduction="none"))[1]

    assert torch.equal(grad(4), grad(4))
    assert not torch.equal(grad(1), grad(4))


def test_transformed_is_random_and_leaves_the_model_alone(digits_mlp, digits_eval):
    x = digits_eval[0][:32]
    before = [p.detach().clone() for p in digits_mlp.parameters()]
    mode, flags = digits_mlp.training, [p.requires_grad for p in digits_mlp.parameters()]
    seen = Transformed(digits_mlp, TransformDistribution.image(), seed=0)
    assert seen.randomized is True
    with torch.no_grad():
        a, b = seen(x), seen(x)
    assert a.shape == (32, 10) and not torch.equal(a, b)
    again = Transformed(digits_mlp, TransformDistribution.image(), seed=0)
    with torch.no_grad():
        assert torch.equal(again(x), a)
    assert all(torch.equal(p, q) for p, q in zip(digits_mlp.parameters(), before, strict=True))
    assert digits_mlp.training == mode and [p.requires_grad for p in digits_mlp.parameters()] == flags


# --- print and photo ----------------------------------------------------------------------------------------------

def test_print_photo_identity_determinism_and_8_bit():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(print_photo(x, severity=0.0), x)
    a = print_photo(x, generator=torch.Generator().manual_seed(1))
    b = print_photo(x, generator=torch.Generator().manual_seed(1))
    c = print_photo(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal((a * 255).round(), a * 255) and a.min() >= 0 and a.max() <= 1
    assert 0.01 < (a - x).abs().mean() < 0.3  # changed, not destroyed


@pytest.mark.parametrize("eps", [0.02, 0.05, 0.1, 0.3])
def test_kurakin_bim_steps(eps):
    params = kurakin_bim(eps)
    e = 255 * eps
    assert params["step_size"] == 1 / 255 and params["steps"] == round(min(e + 4, 1.25 * e))


def test_print_photo_table_rows(digits_mlp, digits_eval):
    x, y = digits_eval[0][:60], digits_eval[1][:60]
    with torch.no_grad():
        keep = digits_mlp(x).argmax(1) == y
    x, y = x[keep], y[keep]
    rows = print_photo_table(digits_mlp, x, y, [0.1, 0.3], {"fgsm": fgsm, "bim": bim}, draws=2)
    assert [(r["attack"], r["eps"]) for r in rows] == [("clean", 0.0), ("fgsm", 0.1), ("fgsm", 0.3), ("bim", 0.1),
                                                         ("bim", 0.3)]
    assert rows[0]["clean_acc"] == 1.0 and rows[0]["base"] == 0
    for r in rows[1:]:
        assert 0 <= r["destroyed"] <= r["base"] <= 2 * len(x)
        if r["base"]:
            assert r["destruction_rate"] + r["survival_rate"] == pytest.approx(1.0)
    assert rows[2]["adv_acc"] < rows[0]["clean_acc"]
