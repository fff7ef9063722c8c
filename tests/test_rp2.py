"""RP2: the sticker stays in its mask and in [0, 1], the mask's share, determinism, the model untouched, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab.attacks.rp2 import (
    BARS,
    PRINTABLE,
    Sticker,
    find_mask,
    mask_share,
    nps,
    render_sticker,
    rp2,
    sticker_mask,
    with_sticker,
)
from advlab.data.sign_art import sign_rgba
from advlab.lab.attacks import FrontalView, Scene, craft_pgd
from advlab.physical import TransformDistribution, render

FAST = {"steps": 3, "samples_per_step": 4}


def tiny_net() -> nn.Module:
    """A small untrained CNN for 3×48×48 images, 12 classes, in eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                         nn.Linear(36, 12)).eval()


@pytest.fixture(scope="module")
def stop():
    return sign_rgba("stop")


@pytest.fixture(scope="module")
def backgrounds():
    return torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(1))


def test_bars_cover_under_ten_percent_of_the_stop_sign(stop):
    mask = sticker_mask(BARS)
    share = mask_share(mask, stop[3])
    assert 0.09 < share <= 0.10
    assert int(mask.sum()) == 2 * 40 * 4 and set(mask.unique().tolist()) == {0.0, 1.0}


def test_sticker_stays_in_its_mask_and_in_range(stop, backgrounds):
    s = rp2(tiny_net(), stop, 5, backgrounds=backgrounds, init="random", generator=torch.Generator().manual_seed(0),
            **FAST)
    assert isinstance(s, Sticker) and len(s.history) == FAST["steps"]
    assert s.image.min() >= 0 and s.image.max() <= 1
    assert torch.equal(s.image * (1 - s.mask), torch.zeros_like(s.image))
    signed = s.apply(stop)
    assert torch.equal(signed[:, s.mask == 0], stop[:, s.mask == 0])  # the sign is untouched outside the mask
    assert torch.equal(signed[3], stop[3])
    assert s.share(stop) == mask_share(sticker_mask(BARS), stop[3])


def test_deterministic_under_a_seed(stop, backgrounds):
    a, b, c = (rp2(tiny_net(), stop, 5, backgrounds=backgrounds, generator=torch.Generator().manual_seed(seed),
                   lr=0.2, **FAST) for seed in (3, 3, 4))
    assert torch.equal(a.image, b.image) and a.history == b.history
    assert not torch.equal(a.image, c.image)


def test_the_model_is_untouched(stop, backgrounds):
    net = tiny_net().train()  # a model in training mode is attacked through an eval-mode copy
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode"):
        rp2(net, stop, 5, backgrounds=backgrounds, generator=torch.Generator().manual_seed(0), **FAST)
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_the_sticker_moves_towards_the_target(stop, backgrounds):
    """With a model that reads blue as the target, the sticker turns blue."""
    class Blue(nn.Module):
        def forward(self, x):
            z = torch.zeros(len(x), 12)
            z[:, 0], z[:, 5] = 20 * x[:, 0].mean((1, 2)), 20 * x[:, 2].mean((1, 2))
            return z

    s = rp2(Blue().eval(), stop, 5, backgrounds=backgrounds, steps=10, samples_per_step=4, lr=0.1,
            generator=torch.Generator().manual_seed(0))
    inside = s.image[:, s.mask > 0]
    assert inside[2].mean() > stop[2][s.mask > 0].mean() + 0.5


def test_render_sticker_is_the_stickered_sign(stop, backgrounds):
    s = Sticker(sticker_mask(BARS).expand(3, -1, -1) * 0.5, sticker_mask(BARS))
    cond = TransformDistribution.signs(48).sample(6, 48, generator=torch.Generator().manual_seed(0))
    a = render_sticker(s, stop, backgrounds, cond, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, render(s.apply(stop)[None], backgrounds, cond, generator=torch.Generator().manual_seed(2)))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, len(PRINTABLE) - 1), st.floats(0.02, 0.2))
def test_nps_is_zero_at_a_printable_colour_and_grows_away(k, step):
    c = PRINTABLE[k][None]
    away = (c + step * torch.tensor([[1.0, -1.0, 1.0]])).clamp(0, 1)
    assert float(nps(c)) < 0.01 < float(nps(away))


def test_with_sticker_batches_and_is_differentiable(stop):
    mask = sticker_mask(BARS)
    tex = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = with_sticker(stop, tex, mask)
    assert out.shape == (2, 4, 64, 64)
    (g,) = torch.autograd.grad(out.sum(), tex)
    assert torch.equal(g, mask.expand(2, 3, -1, -1))


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"mask": torch.ones(32, 32)}, "mask: expected a (64, 64) tensor of 0 and 1"),
    ({"mask": torch.full((64, 64), 0.5)}, "mask: expected"),
    ({"mask": torch.zeros(64, 64)}, "mask: covers no part of the sign"),
    ({"norm": "linf"}, "norm: expected one of 'l1', 'l2'"),
    ({"loss": "dlr"}, "loss: expected one of 'ce', 'margin'"),
    ({"steps": 0}, "steps: expected an integer >= 1"),
    ({"lambda_nps": -1.0}, "lambda_nps: expected a number >= 0"),
])
def test_bad_arguments_are_one_line_errors(stop, backgrounds, kwargs, needle):
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(").replace(")", r"\)")) as e:
        rp2(tiny_net(), stop, 5, backgrounds=backgrounds, **{**FAST, **kwargs})
    assert "\n" not in str(e.value)


def test_sticker_mask_rejects_a_rectangle_outside_the_sign():
    with pytest.raises(ValueError, match="does not lie inside the 64×64 sign"):
        sticker_mask([(60, 70, 0, 10)])


def test_pgd_baseline_stays_in_its_region_and_budget(stop, backgrounds):
    scene = Scene(tiny_net(), stop, 0, 5, backgrounds)
    sign = craft_pgd(scene, {"region": "sign", "steps": 3}, seed=0)
    eps = 16 / 255
    assert sign.notes["budget"].startswith("L∞ ε = 0.06275")
    assert float((sign.sign[:3] - stop[:3]).abs().max()) <= eps + 1e-6
    assert torch.equal(sign.sign[3], stop[3])
    bars = craft_pgd(scene, {"steps": 3}, seed=0)
    assert torch.equal(bars.sign[:, bars.mask == 0], stop[:, bars.mask == 0])
    assert bars.params["eps"] == 1.0 and bars.notes["share"] == pytest.approx(mask_share(sticker_mask(BARS), stop[3]))


def test_frontal_view_sees_the_texture(stop, backgrounds):
    net = tiny_net()
    view = FrontalView(net, stop, sticker_mask(BARS), backgrounds[0], 40.0).eval()
    tex = stop[None, :3].repeat(2, 1, 1, 1)
    tex[1] = 0.0
    z = view(tex)
    assert z.shape == (2, 12) and not torch.equal(z[0], z[1])


@pytest.mark.parametrize("criterion", ["change", "taylor"])
def test_find_mask_keeps_the_blocks_under_the_share(stop, backgrounds, criterion):
    g = torch.Generator().manual_seed(0)
    s = find_mask(tiny_net(), stop, 5, backgrounds=backgrounds, share=0.05, block=8, shrink=0.4,
                  steps_per_round=2, samples_per_step=4, criterion=criterion, generator=g)
    assert len(s.history) == 2 * 5  # the L1 pass, cuts to 0.5, 0.2, 0.08, the cut to the share
    assert 0 < s.share(stop) <= 0.05
    blocks = s.mask.view(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
    assert set(blocks.sum(1).unique().tolist()) <= {0.0, 64.0}  # whole 8×8 blocks
    assert bool((stop[3][s.mask > 0] > 0.99).all())  # all on the sign's face
    again = find_mask(tiny_net(), stop, 5, backgrounds=backgrounds, share=0.05, block=8, shrink=0.4,
                      steps_per_round=2, samples_per_step=4, criterion=criterion,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.mask, again.mask) and torch.equal(s.image, again.image)
    warm = rp2(tiny_net(), stop, 5, backgrounds=backgrounds, mask=s.mask, init=s.image + stop[:3] * (1 - s.mask),
               steps=1, samples_per_step=2, lr=0.0, lambda_nps=0.0, generator=g)
    assert torch.equal(warm.image, s.image)  # lr 0: rp2 starts from the found sticker and stays there


def test_find_mask_bad_block(stop, backgrounds):
    with pytest.raises(ValueError, match=r"^block: must divide the sign's size"):
        find_mask(tiny_net(), stop, 5, backgrounds=backgrounds, block=5)
