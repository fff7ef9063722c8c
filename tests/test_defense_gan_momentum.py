"""Defense-GAN's reference projection (``optimizer="momentum"``, the authors' released code; issue 16).

Runs on a tiny WGAN-GP generator trained here on the 8×8 digits (about 2 s).
"""

import math

import pytest
import torch

from advlab.models import load_model, parse_defense, wrap_defense
from advlab.models.checkpoint import tensor_digest
from advlab.models.defense_gan import REF_LR, REF_MOMENTUM, DefenseGAN, project
from advlab.models.gan import GanConfig, train_wgan_gp

TINY = GanConfig(iterations=150, batch_size=32, lr=1e-3, latent_dim=8, hidden=64, seed=0)


@pytest.fixture(scope="module")
def gen(digits):
    return train_wgan_gp(digits[0], TINY).generator


@pytest.fixture(scope="module")
def x(digits):
    return digits[2][:12]


def starts(n, restarts=3, d=8, seed=0):
    return torch.randn(restarts, n, d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d)


def test_rows_are_independent(gen, x):
    z0 = starts(len(x))
    out, z, err = project(gen, x, steps=30, restarts=3, optimizer="momentum", z0=z0)
    for i in range(len(x)):
        o, zi, e = project(gen, x[i:i + 1], steps=30, restarts=3, optimizer="momentum", z0=z0[:, i:i + 1])
        assert torch.allclose(o, out[i:i + 1], atol=1e-5) and torch.allclose(zi, z[i:i + 1], atol=1e-5)
        assert torch.allclose(e, err[i:i + 1], rtol=1e-4, atol=1e-5)


def test_reduces_the_error_and_reports_the_image_it_returns(gen, x):
    z0 = starts(len(x))
    _, _, start = project(gen, x, steps=1, restarts=3, optimizer="momentum", z0=z0)  # G(z0): pre-update
    out, z, err = project(gen, x, steps=60, restarts=3, optimizer="momentum", z0=z0)
    assert float(err.mean()) < 0.7 * float(start.mean()) and bool((err <= start + 1e-6).all())
    with torch.no_grad():
        assert torch.allclose(out, gen(z), atol=1e-6)
        assert torch.allclose(err, (gen(z) - x).flatten(1).pow(2).sum(1), atol=1e-4)


def test_the_step_is_the_references(gen, x):
    """Two steps return the image of z1 = z0 − lr·∇(per-image mean squared error) (momentum has no history yet)."""
    z0 = starts(len(x), restarts=1)
    zr = z0[0].clone().requires_grad_(True)
    mse = (gen(zr) - x).flatten(1).pow(2).mean(1).sum()
    (grad,) = torch.autograd.grad(mse, zr)
    _, z, _ = project(gen, x, steps=2, restarts=1, optimizer="momentum", z0=z0)
    assert torch.allclose(z, z0[0] - REF_LR * grad, atol=1e-5)
    _, z3, _ = project(gen, x, steps=3, restarts=1, optimizer="momentum", z0=z0)
    z1 = (z0[0] - REF_LR * grad).requires_grad_(True)
    (g1,) = torch.autograd.grad((gen(z1) - x).flatten(1).pow(2).mean(1).sum(), z1)
    assert torch.allclose(z3, z1.detach() - REF_LR * (REF_MOMENTUM * grad + g1), atol=1e-4)


def test_default_start_is_n_0_over_latent_dim_and_the_generator_is_untouched(gen, x):
    before = tensor_digest(gen)
    grads = [None if p.grad is None else p.grad.clone() for p in gen.parameters()]  # training leaves .grad set
    xs = x[:1].expand(400, *x.shape[1:])
    _, z, _ = project(gen, xs, steps=1, restarts=1, optimizer="momentum", rng=torch.Generator().manual_seed(3))
    assert abs(float(z.std()) - 1 / math.sqrt(8)) < 0.03  # steps=1 returns the starting points themselves
    t = DefenseGAN(gen, steps=5, restarts=2, optimizer="momentum")
    t(x)
    assert tensor_digest(gen) == before and not gen.training
    assert not any(p.requires_grad for p in gen.parameters())
    assert all((p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))
               for p, g in zip(gen.parameters(), grads, strict=True))
    assert t.lr == REF_LR and t.options()["optimizer"] == "momentum"


def test_the_spec_names_the_projection():
    net = wrap_defense(load_model("lenet-mnist"), "defensegan:momentum:7")
    assert net.transform.optimizer == "momentum" and net.transform.steps == 7
    assert net.transform.spec == "defensegan:momentum:7" and parse_defense(net.transform.spec).optimizer == "momentum"
    assert parse_defense("defensegan").optimizer == "adam" and parse_defense("defensegan:7").spec == "defensegan:7"


def test_bad_options_get_one_line_errors(gen, x):
    with pytest.raises(ValueError, match=r"^defensegan: optimizer must be one of 'adam', 'momentum', got 'sgd'$"):
        DefenseGAN(gen, optimizer="sgd")
    with pytest.raises(ValueError, match=r"^defensegan: optimizer must be one of 'adam', 'momentum', got 'sgd'$"):
        project(gen, x, optimizer="sgd")
    with pytest.raises(ValueError, match=r"^defensegan: init_std must be a finite number > 0, got 0$"):
        DefenseGAN(gen, init_std=0)
    with pytest.raises(ValueError, match=r"^defensegan: z0 must have shape 3×12×8 \(restarts × inputs × latent_dim\)"):
        project(gen, x, restarts=3, z0=torch.zeros(2, 12, 8))
    with pytest.raises(ValueError, match=r"^defense: defensegan takes L, OPTIMIZER or OPTIMIZER:L .*got 'sgd:5'$"):
        parse_defense("defensegan:sgd:5")
