"""``advlab train --model wgan``: train the WGAN-GP generator that Defense-GAN projects onto.

``advlab train --model wgan --dataset mnist -o iterations=20000 --seed 0 --threads 1
--out src/advlab/weights/generators/wgan-mnist.safetensors``; ``--batch-size`` and ``--lr`` are the
GAN's (Gulrajani et al.'s MNIST settings are batch 64, lr 1e-4), the other options
(``iterations``, ``n_critic``, ``gp_weight``, ``latent_dim``, ``hidden``) come as ``-o KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from advlab._io import locked_file, writable_directory
from advlab.commands.attack import parse_options
from advlab.data import load_dataset
from advlab.models.gan import ARCHS, GanConfig, save_generator, train_wgan_gp
from advlab.train import command_line

GAN_MODELS = ("wgan",)
_OPTIONS = ("iterations", "n_critic", "gp_weight", "latent_dim", "hidden", "arch", "channels")


def gan_config(args: argparse.Namespace) -> GanConfig:
    """The GAN's settings from ``--batch-size``, ``--lr``, ``--seed`` and ``-o`` options (one-line errors)."""
    if args.defense != "none" or args.init:
        raise ValueError("--model wgan: a generator trains without --defense or --init")
    options = parse_options(args.option, "-o/--option")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"-o/--option: wgan takes {', '.join(_OPTIONS)}, got {', '.join(unknown)}")
    config = GanConfig(batch_size=args.batch_size, lr=args.lr, seed=args.seed, **options)
    if config.arch not in ARCHS:
        raise ValueError(f"-o/--option: arch must be one of {', '.join(ARCHS)}, got {config.arch!r}")
    for name in ("iterations", "n_critic", "latent_dim", "hidden", "channels", "batch_size"):
        v = getattr(config, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"-o/--option: {name} must be a positive integer, got {v!r}")
    if not isinstance(config.gp_weight, (int, float)) or config.gp_weight < 0:
        raise ValueError(f"-o/--option: gp_weight must be a number >= 0, got {config.gp_weight!r}")
    return config


def run_gan(args: argparse.Namespace) -> int:
    """Train the generator on the dataset's training split and write it atomically."""
    config = gan_config(args)
    x, _ = load_dataset(args.dataset, "train", root=args.data_dir)
    out = Path(args.out)
    writable_directory(out.parent, arg="out")
    with locked_file(out.parent / f".{out.name}.lock", str(out), arg="out", command=command_line(),
                     instead="another path"):
        t0 = time.perf_counter()
        result = train_wgan_gp(x, config, progress=not args.no_progress)
        extra = {"name": args.name} if args.name else {}
        save_generator(result, out, config, args.dataset, command_line(), **extra)
    print(f"wgan on {args.dataset}: {config.iterations} generator steps, critic W-estimate "
          f"{result.history[-1]['wdist']:.4f}  ({time.perf_counter() - t0:.1f} s) -> {args.out}")
    return 0
