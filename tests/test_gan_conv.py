"""The convolutional (DCGAN-style) WGAN-GP option of ``advlab train --model wgan -o arch=conv``.

A tiny configuration on the 8×8 digits: shapes, determinism under the seed, the save/load round
trip, projection through it, and the command line.
"""

import subprocess
import sys

import pytest
import torch

from advlab.models.checkpoint import tensor_digest
from advlab.models.defense_gan import project
from advlab.models.gan import ConvCritic, ConvGenerator, GanConfig, load_generator, save_generator, train_wgan_gp

TINY = GanConfig(iterations=40, batch_size=16, lr=1e-3, latent_dim=8, arch="conv", channels=4, seed=0)


@pytest.fixture(scope="module")
def tiny(digits):
    return train_wgan_gp(digits[0], TINY)


def test_shapes_and_output_range():
    g = ConvGenerator(latent_dim=16, channels=4, out_shape=(1, 28, 28)).eval()
    with torch.no_grad():
        out = g(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (5, 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert ConvCritic((1, 28, 28), channels=4)(out).shape == (5,)
    assert ConvGenerator(8, 2, (3, 8, 12)).eval()(torch.zeros(2, 8)).shape == (2, 3, 8, 12)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)) for m in ConvCritic().modules())
    with pytest.raises(ValueError, match=r"^conv generator: image height and width must be multiples of 4, got 8×10$"):
        ConvGenerator(8, 2, (1, 8, 10))


def test_training_is_deterministic_under_the_seed(digits, tiny):
    assert isinstance(tiny.generator, ConvGenerator) and tiny.generator.out_shape == (1, 8, 8)
    assert tensor_digest(train_wgan_gp(digits[0], TINY).generator) == tensor_digest(tiny.generator)
    other = GanConfig(**{**TINY.__dict__, "seed": 1})
    assert tensor_digest(train_wgan_gp(digits[0], other).generator) != tensor_digest(tiny.generator)
    assert not tiny.generator.training and not any(p.requires_grad for p in tiny.generator.parameters())
    with pytest.raises(ValueError, match=r"^arch: expected one of mlp, conv, got 'rnn'$"):
        train_wgan_gp(digits[0], GanConfig(iterations=1, arch="rnn"))


def test_save_load_round_trip_and_projection(tiny, digits, tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(tiny, path, TINY, "digits", "advlab train --model wgan -o arch=conv ...")
    g = load_generator(path)
    assert isinstance(g, ConvGenerator) and tensor_digest(g) == tensor_digest(tiny.generator)
    assert g.advlab_meta["arch_kwargs"] == {"arch": "conv", "latent_dim": 8, "channels": 4, "out_shape": [1, 8, 8]}
    x = digits[2][:6]
    out, z, err = project(g, x, steps=10, restarts=2, rng=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and z.shape == (6, 8) and torch.allclose(err, (g(z) - x).flatten(1).pow(2).sum(1), atol=1e-4)


def test_cli_trains_a_conv_generator(tmp_path):
    out = tmp_path / "g.safetensors"
    run = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "wgan", "--dataset", "digits",
                          "-o", "iterations=2", "-o", "arch=conv", "-o", "channels=4", "--batch-size", "8",
                          "--threads", "1", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    g = load_generator(out)
    assert isinstance(g, ConvGenerator) and g.channels == 4 and g.advlab_meta["gan"]["arch"] == "conv"
    bad = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "wgan", "--dataset", "digits",
                          "-o", "arch=rnn", "--out", str(tmp_path / "h.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "arch must be one of mlp, conv, got 'rnn'" in bad.stderr
