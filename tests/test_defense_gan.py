"""Defense-GAN: the WGAN-GP generator, the projection wrapper, and the latent attack (issue 16).

Plumbing runs on a tiny generator trained here on the 8×8 digits; the shipped ``wgan-mnist``
generator is loaded once (its metadata and output range), without projecting anything.
"""

import math
import subprocess
import sys

import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import defensegan_latent, get_attack, list_attacks, pgd_adaptive, pgd_bpda
from advlab.attacks.adaptive import describe_adaptive, needs_bpda, needs_eot
from advlab.attacks.losses import loss_grad
from advlab.evaluation.checks import zero_or_nan_gradients
from advlab.models import Defended, load_model, resolve_checkpoint, wrap_defense
from advlab.models.checkpoint import CheckpointError, tensor_digest
from advlab.models.defense_gan import DefenseGAN, project
from advlab.models.gan import GanConfig, Generator, load_generator, save_generator, train_wgan_gp

TINY = GanConfig(iterations=150, batch_size=32, lr=1e-3, latent_dim=8, hidden=64, seed=0)


@pytest.fixture(scope="module")
def tiny(digits):
    """A WGAN-GP generator trained for 150 steps on the digits training split (about 2 s)."""
    return train_wgan_gp(digits[0], TINY)


@pytest.fixture(scope="module")
def batch(digits):
    return digits[2][:24], digits[3][:24]


def defended(model, g, steps=40, restarts=4, seed=0):
    return Defended(model, DefenseGAN(g, steps=steps, restarts=restarts, seed=seed)).eval()


def test_training_is_deterministic_and_restores_the_global_rng(digits, tiny):
    state = torch.get_rng_state()
    again = train_wgan_gp(digits[0], TINY)
    assert torch.equal(torch.get_rng_state(), state)
    assert tensor_digest(again.generator) == tensor_digest(tiny.generator)
    assert not tiny.generator.training and not any(p.requires_grad for p in tiny.generator.parameters())
    assert [h["iteration"] for h in tiny.history] == [100, 150]


def test_projection_lowers_the_error_and_is_deterministic_under_a_seed(tiny, batch):
    x, _ = batch
    g = tiny.generator
    _, _, start = project(g, x, steps=0, restarts=3, rng=torch.Generator().manual_seed(1))
    out, z, err = project(g, x, steps=60, restarts=3, rng=torch.Generator().manual_seed(1))
    assert bool((err <= start + 1e-6).all()) and float(err.mean()) < 0.7 * float(start.mean())
    assert torch.allclose(err, (g(z) - x).flatten(1).pow(2).sum(1), atol=1e-4)
    assert torch.equal(out, g(z)) and out.shape == x.shape
    again = project(g, x, steps=60, restarts=3, rng=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], out)
    t1, t2 = DefenseGAN(g, steps=20, restarts=2, seed=5), DefenseGAN(g, steps=20, restarts=2, seed=5)
    assert torch.equal(t1(x), t2(x))  # the transform's own seeded generator


def test_the_wrapper_is_non_differentiable_random_and_bpda_sees_through_it(digits_mlp, tiny, batch):
    x, y = batch
    net = defended(digits_mlp, tiny.generator)
    assert net.differentiable is False and net.randomized is True
    assert needs_bpda(net) and needs_eot(net)
    assert describe_adaptive(net) == "margin+BPDA+EOT×10"
    _, grad, _ = loss_grad(net, x, y)
    assert zero_or_nan_gradients(grad).fired  # GM06: the naive gradient is zero
    _, grad_bpda, _ = loss_grad(net.bpda, x, y)
    assert float(grad_bpda.abs().sum(dim=(1, 2, 3)).min()) > 0  # BPDA: identity backward
    res = pgd_adaptive(net, x, y, ThreatModel("linf", 0.3), steps=10, eot_samples=1,
                       generator=torch.Generator().manual_seed(0))
    assert float((res.x_adv - x).abs().max()) <= 0.3 + 1e-6 and bool(res.success.any())
    auto = pgd_bpda(net, x, y, ThreatModel("linf", 0.3), steps=10, eot_samples=1,
                    generator=torch.Generator().manual_seed(0))
    assert bool(auto.success.any())


def test_latent_attack_output_is_misclassified_after_projection(digits_mlp, tiny, batch):
    x, y = batch
    net = defended(digits_mlp, tiny.generator)
    before = (tensor_digest(digits_mlp), tensor_digest(tiny.generator))
    res = defensegan_latent(net, x, y, ThreatModel("l2", math.inf), steps=60, binary_search_steps=3,
                            kappa=2.0, generator=torch.Generator().manual_seed(0))
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert float(res.success.float().mean()) >= 0.9  # the defended model's own projection of the output
    with torch.no_grad():
        again = net(res.x_adv).argmax(1) != y  # a second projection, new restarts
    assert float(again.float().mean()) >= 0.85
    assert (tensor_digest(digits_mlp), tensor_digest(tiny.generator)) == before
    assert not digits_mlp.training and not any(p.requires_grad for p in digits_mlp.parameters())
    same = defensegan_latent(net, x, y, ThreatModel("l2", math.inf), steps=60, binary_search_steps=3,
                             kappa=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same.x_adv, res.x_adv)


def test_latent_attack_within_a_finite_budget_stays_in_the_ball(digits_mlp, tiny, batch):
    x, y = batch
    net = defended(digits_mlp, tiny.generator, steps=20, restarts=2)
    res = defensegan_latent(net, x, y, ThreatModel("l2", 1.0), steps=20, binary_search_steps=2)
    assert float((res.x_adv - x).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5


def test_clear_errors(digits_mlp, tiny, batch, tmp_path):
    x, y = batch
    with pytest.raises(ValueError, match=r"^model: defensegan-latent attacks a Defense-GAN-wrapped model"):
        defensegan_latent(digits_mlp, x, y, ThreatModel("l2", math.inf))
    with pytest.raises(ValueError, match=r"^defensegan: steps must be an integer >= 1, got 0$"):
        DefenseGAN(tiny.generator, steps=0)
    with pytest.raises(ValueError, match=r"^defensegan: the generator makes 1×8×8 images, got inputs of shape 1×28×28$"):
        DefenseGAN(tiny.generator)(torch.zeros(2, 1, 28, 28))
    with pytest.raises(TypeError, match=r"^defensegan: expected a generator module"):
        DefenseGAN(digits_mlp)
    with pytest.raises(ValueError, match=r"^generator: unknown generator 'nope'; shipped: "):
        load_generator("nope")
    with pytest.raises(CheckpointError, match="holds a 'lenet', not a wgan-generator"):
        load_generator(resolve_checkpoint("lenet-mnist"))
    assert "defensegan-latent" not in list_attacks() and get_attack("defensegan-latent").minimal


def test_saved_generator_round_trips(tiny, tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(tiny, path, TINY, "digits", "advlab train --model wgan ...")
    g = load_generator(path)
    assert isinstance(g, Generator) and tensor_digest(g) == tensor_digest(tiny.generator)
    assert g.advlab_meta["gan"]["iterations"] == 150 and g.advlab_meta["dataset"] == "digits"


def test_shipped_generator_and_the_registered_spec():
    g = load_generator("wgan-mnist")
    assert g.advlab_meta["command"].startswith("advlab train --model wgan --dataset mnist")
    with torch.no_grad():
        out = g(torch.randn(4, g.latent_dim, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (4, 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1
    net = wrap_defense(load_model("lenet-mnist"), "defensegan:7")
    assert isinstance(net.transform, DefenseGAN) and net.transform.steps == 7 and net.defense_spec == "defensegan:7"


def test_cli_trains_a_generator_and_refuses_bad_options(tmp_path):
    out = tmp_path / "g.safetensors"
    run = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "wgan", "--dataset", "digits",
                          "-o", "iterations=3", "-o", "hidden=16", "--batch-size", "8", "--lr", "1e-3",
                          "--threads", "1", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    g = load_generator(out)
    assert g.out_shape == (1, 8, 8) and g.advlab_meta["gan"]["iterations"] == 3
    bad = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "wgan", "--dataset", "digits",
                          "-o", "steps=3", "--out", str(tmp_path / "h.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "wgan takes iterations, n_critic, gp_weight, latent_dim, hidden, arch, channels, bn, got steps" in bad.stderr


def test_rec_classifier_trains_on_projections_and_loads_behind_the_projection(tmp_path):
    out = tmp_path / "rec.safetensors"
    run = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "lenet", "--init", "lenet-mnist",
                          "--defense", "defensegan-rec", "-o", "images=32", "-o", "test_images=8", "-o", "steps=3",
                          "--epochs", "1", "--lr", "1e-3", "--threads", "1", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Acc@1" in run.stdout and "projections of the first 8 test images" in run.stdout
    net = load_model(out)
    assert isinstance(net, Defended) and isinstance(net.transform, DefenseGAN)
    assert net.transform.steps == 3 and net.defense_spec == "defensegan:3"
    meta = net.advlab_meta
    assert meta["defense"]["name"] == "defensegan-rec" and meta["defense"]["images"] == 32
    assert meta["defense"]["restarts"] == net.transform.restarts and meta["init"] == "lenet-mnist"
    assert tensor_digest(net.model) != tensor_digest(load_model("lenet-mnist"))  # it was trained


@pytest.mark.parametrize(("argv", "message"), [
    (["-o", "images=0"], "-o/--option: images must be a positive integer, got 0"),
    (["-o", "rounds=2"], "-o/--option: defensegan-rec takes images, test_images, steps, got rounds"),
    (["--dataset", "digits"], "defensegan: the generator makes 1×28×28 images, got inputs of shape 1×8×8"),
    (["--init", "mlp-mnist"], "--init: mlp-mnist is a 'mlp', not 'lenet'"),
])
def test_rec_classifier_refuses_bad_options_in_one_line(tmp_path, argv, message):
    run = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "lenet", "--defense", "defensegan-rec",
                          "-o", "images=4", "-o", "test_images=2", "-o", "steps=1", *argv,
                          "--out", str(tmp_path / "r.safetensors")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == f"advlab train: error: {message}"
    assert not (tmp_path / "r.safetensors").exists()


def test_shipped_rec_classifier_is_behind_the_papers_projection():
    net = load_model("lenet-mnist-defgan-rec")
    assert isinstance(net, Defended) and isinstance(net.transform, DefenseGAN)
    assert (net.transform.steps, net.transform.restarts) == (200, 10)  # Samangouei et al.'s MNIST L and R
    meta = net.advlab_meta
    assert meta["command"].startswith("advlab train --model lenet --init lenet-mnist --defense defensegan-rec")
    assert meta["defense"]["name"] == "defensegan-rec" and meta["acc1"] >= 0.95
    plain = wrap_defense(load_model("lenet-mnist"), "defensegan")
    assert (plain.transform.steps, plain.transform.restarts) == (200, 10)
