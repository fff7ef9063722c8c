"""``advlab train``: train a model and write an advlab checkpoint."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from advlab._paths import check_out_file
from advlab.commands.attack import parse_options
from advlab.commands.device import add_device_argument, use_device
from advlab.commands.train_factory import run_factory
from advlab.commands.train_gan import GAN_MODELS, REC_DEFENSE, run_gan, run_rec
from advlab.commands.train_out import locked_out, train_config
from advlab.data import dataset_info, load_dataset
from advlab.defenses import DEFENSES, distill, list_training_defenses, make_training_defense
from advlab.models import architecture_task, check_input_shape, create_model, load_model, save_checkpoint
from advlab.models.factory import is_factory_spec
from advlab.models.wrappers import TRANSFORMS, Defended, Thermometer, parse_defense
from advlab.train import TrainConfig, TrainingDefense, TrainResult, checkpoint_meta, command_line, fit
from advlab.train_dense import TASK_DEFENSES, task_defense


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` sub-command."""
    p = sub.add_parser("train", help="train a model (optionally with a defense) and save a checkpoint")
    p.add_argument("--model", required=True,
                   help="architecture: lenet, googlenet, mlp, cnn; signnet (on signs); segnet or detnet "
                        "(on mnist-scenes); wgan (a WGAN-GP generator for Defense-GAN); or your factory "
                        "package.module:factory (or file.py:factory), whose state dict is written to --out")
    p.add_argument("--weights", default=None,
                   help="a factory model's .safetensors state dict to start from (default: the factory's own)")
    p.add_argument("--dataset", default="mnist", help="mnist, digits, signs or mnist-scenes (default mnist)")
    p.add_argument("--data-dir", default=None, help="directory with MNIST IDX files (default: offline copy)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--defense", default="none",
                   help="training defense: none, adversarial, pgd, fast, trades, negative, parseval, gradnorm, "
                        "ibp, crown-ibp, gaussian-noise, distill (see `advlab defenses`); or an input "
                        "transformation to train behind, e.g. thermometer:16; or defensegan-rec (Defense-GAN-Rec: "
                        "trained on the generator's projections)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="defense option (JSON value), e.g. -o eps=0.3 -o steps=10 -o attack=pgd")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint (name or path) instead of a fresh initialisation")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--name", default=None, help="model name recorded in the metadata (default: from --out)")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    p.add_argument("--no-progress", action="store_true")
    add_device_argument(p)
    p.set_defaults(func=run)
    d = sub.add_parser("defenses", help="list the training defenses and their options")
    d.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    """Print every training defense with its options and defaults."""
    for name in list_training_defenses():
        probe = DEFENSES[name]()
        opts = ", ".join(f"{k}={v!r}" for k, v in probe.options().items())
        doc = (type(probe).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<12} {doc}\n{'':<12} options: {opts or '-'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test split, write the checkpoint atomically."""
    check_out_file("--out", args.out)  # before training, not after it
    device = use_device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model in GAN_MODELS:  # a generator (Defense-GAN's), not a classifier
        return run_gan(args)
    if is_factory_spec(args.model):  # the user's own network
        return run_factory(args, device)
    if args.weights:
        raise ValueError("--weights: only read for a factory 'package.module:factory' (an architecture starts "
                         "from --init CHECKPOINT)")
    if args.defense == REC_DEFENSE:  # Defense-GAN-Rec: trained on the generator's projections
        return run_rec(args, device)
    info = dataset_info(args.dataset)
    task = _task(args, info.tasks)
    train = load_dataset(args.dataset, "train", root=args.data_dir, task=task)
    test = load_dataset(args.dataset, "test", root=args.data_dir, task=task)
    arch_kwargs = {"in_shape": list(info.shape), "num_classes": info.num_classes}
    options = parse_options(args.option, "-o/--option")
    wrapper = None
    if args.defense.split(":")[0] in TRANSFORMS:  # train the network behind an input transformation
        wrapper = parse_defense(args.defense)
        if isinstance(wrapper, Thermometer):
            arch_kwargs["in_shape"] = [info.shape[0] * wrapper.levels, *info.shape[1:]]
    if wrapper is not None and options:
        raise ValueError(f"-o/--option: {args.defense} is an input transformation and takes no options, "
                         f"got {', '.join(options)}")
    if task != "classification":
        defense = task_defense(task)
    else:
        defense = make_training_defense("none" if wrapper is not None else args.defense, **options)
    config = train_config(args)
    if args.init:
        model = load_model(args.init)
        arch = getattr(model, "advlab_meta", {}).get("architecture")
        if arch != args.model:
            raise ValueError(f"--init: {args.init} is a {arch!r}, not {args.model!r}")
        check_input_shape(model, train[0], name=args.init, source=args.dataset)
    else:
        model = create_model(args.model, **arch_kwargs)
    if wrapper is not None:
        model = Defended(model, wrapper)
    with locked_out(args):
        return fit_and_save(args, model, defense, config, train, test, arch_kwargs, options, device)


def _task(args: argparse.Namespace, tasks: tuple[str, ...]) -> str:
    """The task the architecture is built for, checked against the dataset's and the options."""
    task = architecture_task(args.model)
    if task not in tasks:
        raise ValueError(f"--model: {args.model} is a {task} network and {args.dataset} has labels for "
                         f"{' and '.join(tasks)} only")
    if task != "classification" and (args.defense != "none" or args.option):
        raise ValueError(f"--defense: {args.model} ({task}) trains with its task's loss, "
                         "without a defense or options")
    return task


def _summary(result: TrainResult) -> str:
    """The test metrics of a run, for the command's last line."""
    if set(result.metrics) <= {"acc1", "acc5"}:
        return f"test Acc@1 {result.acc1:.4f}  Acc@5 {result.acc5:.4f}"
    return "test " + "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())


def fit_and_save(args: argparse.Namespace, model: nn.Module, defense: TrainingDefense, config: TrainConfig,
                 train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 arch_kwargs: dict[str, Any], options: dict[str, Any], device: torch.device | None = None) -> int:
    """Train (or distil) on ``device``, then write the checkpoint atomically; the caller holds the checkpoint's lock.

    The model (built or loaded by the command) is moved to ``device`` by the training loop; the data stay
    on the CPU and each batch is moved.
    """
    t0 = time.perf_counter()
    extra: dict[str, object] = {"defense": {"name": args.defense, **defense.options()}}
    if defense.name in TASK_DEFENSES:  # no defense: the task's loss, its options recorded
        extra["task"] = defense.name
    if args.init:
        extra["init"] = args.init
    if args.defense == "distill":
        temperature = float(options.get("temperature", 100.0))
        teacher = create_model(args.model, **arch_kwargs)
        result, teacher_result = distill(teacher, model, train, test, config, temperature=temperature,
                                         progress=not args.no_progress, device=device)
        assert teacher_result is not None
        extra["teacher_acc1"] = round(teacher_result.acc1, 6)
        extra["teacher_train_seconds"] = round(teacher_result.seconds, 1)
    else:
        result = fit(model, train, test, config, defense=defense, progress=not args.no_progress,
                     init_seed=not args.init, device=device)
    if args.name:
        extra["name"] = args.name
    net = result.model
    if isinstance(net, Defended):
        extra["wrapper"] = net.defense_spec
        net = net.model
    meta = checkpoint_meta(args.model, arch_kwargs, args.dataset, result, config, command_line(), **extra)
    save_checkpoint(net, args.out, meta)
    print(
        f"{args.model} ({args.defense}) on {args.dataset}: {_summary(result)}  "
        f"({time.perf_counter() - t0:.1f} s) -> {args.out}"
    )
    return 0
