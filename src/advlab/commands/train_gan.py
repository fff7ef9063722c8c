"""``advlab train --model wgan`` and ``--defense defensegan-rec``: Defense-GAN's generator and its Rec classifier.

``advlab train --model wgan --dataset mnist -o iterations=20000 --seed 0 --threads 1
--out src/advlab/weights/generators/wgan-mnist.safetensors``; ``--batch-size`` and ``--lr`` are the
GAN's (Gulrajani et al.'s MNIST settings are batch 64, lr 1e-4), the other options
(``iterations``, ``n_critic``, ``gp_weight``, ``latent_dim``, ``hidden``) come as ``-o KEY=VALUE``.

``advlab train --model lenet --init lenet-mnist --defense defensegan-rec -o images=5000 --out REC.safetensors``
trains Samangouei et al.'s *Defense-GAN-Rec* classifier: the network is trained (here: fine-tuned
from ``--init``) on the shipped generator's projections G(z*) of the first ``images`` training
images (L = ``steps``, R = :data:`~advlab.models.defense_gan.RESTARTS`, the projection seeded by
``--seed``) instead of on the images themselves (*Defense-GAN-Orig*). Its test accuracy is measured on
the projections of the first ``test_images`` test images, and the checkpoint records the projection
as its input transformation, so ``load_model`` returns it behind Defense-GAN.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from advlab.commands.attack import parse_options
from advlab.commands.train_out import locked_out, train_config
from advlab.data import dataset_info, load_dataset
from advlab.models import check_input_shape, create_model, load_model, save_checkpoint
from advlab.models.defense_gan import CHUNK, STEPS, DefenseGAN
from advlab.models.gan import ARCHS, GanConfig, save_generator, train_wgan_gp
from advlab.models.wrappers import Defended
from advlab.train import checkpoint_meta, command_line, fit

GAN_MODELS = ("wgan",)
REC_DEFENSE = "defensegan-rec"
_OPTIONS = ("iterations", "n_critic", "gp_weight", "latent_dim", "hidden", "arch", "channels", "bn")
_REC_OPTIONS = {"images": 5000, "test_images": 1000, "steps": STEPS}


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
    if not isinstance(config.bn, bool):
        raise ValueError(f"-o/--option: bn must be true or false, got {config.bn!r}")
    if config.arch != "mlp" and not config.bn:
        raise ValueError("-o/--option: bn=false is an option of the mlp generator only")
    if not isinstance(config.gp_weight, (int, float)) or config.gp_weight < 0:
        raise ValueError(f"-o/--option: gp_weight must be a number >= 0, got {config.gp_weight!r}")
    return config


def run_gan(args: argparse.Namespace) -> int:
    """Train the generator on the dataset's training split and write it atomically."""
    config = gan_config(args)
    x, _ = load_dataset(args.dataset, "train", root=args.data_dir)
    with locked_out(args) as out:
        t0 = time.perf_counter()
        result = train_wgan_gp(x, config, progress=not args.no_progress)
        extra = {"name": args.name} if args.name else {}
        save_generator(result, out, config, args.dataset, command_line(), **extra)
    print(f"wgan on {args.dataset}: {config.iterations} generator steps, critic W-estimate "
          f"{result.history[-1]['wdist']:.4f}  ({time.perf_counter() - t0:.1f} s) -> {args.out}")
    return 0


def rec_options(args: argparse.Namespace) -> dict[str, int]:
    """``images``, ``test_images`` and ``steps`` of ``--defense defensegan-rec`` (one-line errors)."""
    options = parse_options(args.option, "-o/--option")
    unknown = sorted(set(options) - set(_REC_OPTIONS))
    if unknown:
        raise ValueError(f"-o/--option: {REC_DEFENSE} takes {', '.join(_REC_OPTIONS)}, got {', '.join(unknown)}")
    out = {**_REC_OPTIONS, **options}
    for name, v in out.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"-o/--option: {name} must be a positive integer, got {v!r}")
    return out


def project_all(transform: DefenseGAN, x: torch.Tensor, progress: bool, desc: str) -> torch.Tensor:
    """G(z*) for every image of ``x``, :data:`CHUNK` at a time, with a progress bar."""
    bar = tqdm(total=len(x), disable=not progress, desc=desc, unit="img", dynamic_ncols=True)
    parts = []
    for i in range(0, len(x), CHUNK):
        parts.append(transform.project(x[i:i + CHUNK])[0])
        bar.update(len(parts[-1]))
    bar.close()
    return torch.cat(parts)


def _rec_model(args: argparse.Namespace, arch_kwargs: dict[str, Any], x: torch.Tensor) -> torch.nn.Module:
    """The network to train: ``--init`` (its classifier, if it is itself behind a transformation) or a fresh one."""
    if not args.init:
        return create_model(args.model, **arch_kwargs)
    model = load_model(args.init)
    arch = getattr(model, "advlab_meta", {}).get("architecture")
    if arch != args.model:
        raise ValueError(f"--init: {args.init} is a {arch!r}, not {args.model!r}")
    check_input_shape(model, x, name=args.init, source=args.dataset)
    return model.model if isinstance(model, Defended) else model


def run_rec(args: argparse.Namespace, device: torch.device | None = None) -> int:
    """Defense-GAN-Rec: train on the generator's projections of the training images, write the checkpoint."""
    opts = rec_options(args)
    info = dataset_info(args.dataset)
    transform = DefenseGAN(steps=opts["steps"], seed=args.seed)
    transform.check_input(tuple(info.shape))
    x, y = (t[:opts["images"]] for t in load_dataset(args.dataset, "train", root=args.data_dir))
    xt, yt = (t[:opts["test_images"]] for t in load_dataset(args.dataset, "test", root=args.data_dir))
    arch_kwargs = {"in_shape": list(info.shape), "num_classes": info.num_classes}
    model = _rec_model(args, arch_kwargs, x)
    config = train_config(args)
    with locked_out(args) as out:
        t0 = time.perf_counter()
        px = project_all(transform, x, not args.no_progress, "projecting the training images")
        pt = project_all(transform, xt, not args.no_progress, "projecting the test images")
        seconds = time.perf_counter() - t0
        result = fit(model, (px, y), (pt, yt), config, progress=not args.no_progress, init_seed=not args.init,
                     device=device)
        defense = {"name": REC_DEFENSE, **opts, "restarts": transform.restarts, "generator": "wgan-mnist"}
        extra: dict[str, Any] = {"defense": defense, "wrapper": transform.spec, "projection_seconds": round(seconds, 1),
                                 "acc1_on": f"projections of the first {len(xt)} test images"}
        if args.init:
            extra["init"] = args.init
        if args.name:
            extra["name"] = args.name
        meta = checkpoint_meta(args.model, arch_kwargs, args.dataset, result, config, command_line(), **extra)
        save_checkpoint(result.model, out, meta)
    print(f"{args.model} ({REC_DEFENSE}) on {args.dataset}: Acc@1 {result.acc1:.4f} on the projections of the first "
          f"{len(xt)} test images  ({seconds:.1f} s projecting, {result.seconds:.1f} s training) -> {args.out}")
    return 0
