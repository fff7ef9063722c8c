"""The MLP generator without batch norm (``advlab train --model wgan -o bn=false``; Samangouei et al.'s USE_BN False).

A tiny configuration on the 8×8 digits: no BatchNorm layer, the save/load round trip keeps the choice,
checkpoints written before the option load with batch norm, and the command line's one-line errors.
"""

import subprocess
import sys

import pytest
import torch

from advlab.models.checkpoint import tensor_digest
from advlab.models.gan import GanConfig, Generator, load_generator, save_generator, train_wgan_gp

TINY = GanConfig(iterations=30, batch_size=16, lr=1e-3, latent_dim=8, hidden=16, bn=False, seed=0)


def _has_bn(g: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules())


def test_without_batch_norm_the_generator_has_no_batch_norm_layer():
    g = Generator(latent_dim=8, hidden=16, out_shape=(1, 8, 8), bn=False).eval()
    assert not _has_bn(g) and _has_bn(Generator(8, 16, (1, 8, 8)))
    with torch.no_grad():
        out = g(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (4, 1, 8, 8) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_round_trip_keeps_the_choice_and_old_records_mean_batch_norm(digits, tmp_path):
    result = train_wgan_gp(digits[0], TINY)
    assert not _has_bn(result.generator)
    assert tensor_digest(train_wgan_gp(digits[0], TINY).generator) == tensor_digest(result.generator)
    path = tmp_path / "g.safetensors"
    save_generator(result, path, TINY, "digits", "advlab train --model wgan -o bn=false ...")
    g = load_generator(path)
    assert g.advlab_meta["arch_kwargs"] == {"latent_dim": 8, "hidden": 16, "out_shape": [1, 8, 8], "bn": False}
    assert not _has_bn(g) and tensor_digest(g) == tensor_digest(result.generator)
    shipped = load_generator("wgan-mnist")
    assert "bn" not in shipped.advlab_meta["arch_kwargs"] and _has_bn(shipped)


@pytest.mark.parametrize(("option", "message"), [
    ("bn=3", "bn must be true or false, got 3"),
    ("arch=conv", "bn=false is an option of the mlp generator only"),
])
def test_cli_rejects_a_bad_bn_option_in_one_line(tmp_path, option, message):
    extra = ["-o", "bn=false"] if option == "arch=conv" else []
    bad = subprocess.run([sys.executable, "-m", "advlab", "train", "--model", "wgan", "--dataset", "digits",
                          "-o", option, *extra, "--out", str(tmp_path / "g.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and message in bad.stderr
    assert len([line for line in bad.stderr.splitlines() if line.strip()]) == 1
