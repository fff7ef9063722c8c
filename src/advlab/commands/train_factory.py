"""``advlab train --model mynets.py:make``: train (or adversarially train) your own network, write its weights.

``advlab train --model mynets.py:make --dataset mnist --defense pgd -o eps=0.3 --out robust.safetensors``
builds the network with your factory (under ``--seed``, so its own initialisation is drawn the same
way every time; ``--weights FILE.safetensors`` starts from those weights instead), trains it on the
dataset's training split with any training defense of ``advlab defenses`` and writes its state dict
to ``--out`` (safetensors; the settings and test accuracy in the file's metadata). It is evaluated
like any factory model: ``advlab evaluate --model mynets.py:make --weights robust.safetensors``.

What needs an advlab architecture is refused in one line: ``--init`` (an advlab checkpoint), an
input transformation to train behind, distillation (it builds a teacher of the same architecture)
and Defense-GAN-Rec.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import save_file

from advlab._checks import error_text
from advlab._io import atomic_path
from advlab.commands.attack import parse_options
from advlab.commands.train_out import locked_out, train_config
from advlab.data import dataset_info, load_dataset
from advlab.defenses import make_training_defense
from advlab.models.factory import seeded_factory
from advlab.models.wrappers import TRANSFORMS
from advlab.train import checkpoint_meta, command_line, fit

NEEDS_ARCHITECTURE = ("distill", "defensegan-rec")  # training defenses that build a model by architecture name
META_KEY = "advlab_training"  # the safetensors metadata entry holding the settings and test metrics


def run_factory(args: argparse.Namespace, device: torch.device | None) -> int:
    """Train the factory's network on ``args.dataset`` and write its state dict to ``args.out``."""
    _refuse_what_needs_an_architecture(args)
    info = dataset_info(args.dataset)
    if "classification" not in info.tasks:
        raise ValueError(f"--dataset: {args.dataset} has no class labels; a factory model trains as a classifier")
    train = load_dataset(args.dataset, "train", root=args.data_dir)
    test = load_dataset(args.dataset, "test", root=args.data_dir)
    defense = make_training_defense(args.defense, **parse_options(args.option, "-o/--option"))
    model = seeded_factory(args.model, args.seed, args.weights)
    _check_fits(model, args, train, info.num_classes)
    config = train_config(args)
    with locked_out(args) as out:
        t0 = time.perf_counter()
        result = fit(model, train, test, config, defense=defense, progress=not args.no_progress, init_seed=False,
                     device=device)
        meta = checkpoint_meta(args.model, {}, args.dataset, result, config, command_line(),
                               defense={"name": args.defense, **defense.options()}, factory=args.model,
                               **({"init_weights": str(args.weights)} if args.weights else {}))
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        with atomic_path(out) as tmp:
            save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    print(f"{args.model} ({args.defense}) on {args.dataset}: test Acc@1 {result.acc1:.4f}  Acc@5 {result.acc5:.4f}  "
          f"({time.perf_counter() - t0:.1f} s) -> {args.out} (evaluate it with --model {args.model} --weights "
          f"{args.out})")
    return 0


def _refuse_what_needs_an_architecture(args: argparse.Namespace) -> None:
    """One-line errors for the options that only an advlab architecture can take."""
    if args.init:
        raise ValueError(f"--init: reads an advlab checkpoint; a factory model ({args.model}) starts from its "
                         "own weights, or from --weights FILE.safetensors")
    kind = args.defense.split(":")[0]
    if kind in TRANSFORMS or args.defense in NEEDS_ARCHITECTURE:
        raise ValueError(f"--defense: {args.defense} needs an advlab architecture (--model lenet, ...); a factory "
                         "model trains with none or a training defense of `advlab defenses` other than "
                         f"{' and '.join(NEEDS_ARCHITECTURE)}")


def _check_fits(model: torch.nn.Module, args: argparse.Namespace, train: tuple[torch.Tensor, torch.Tensor],
                classes: int) -> None:
    """The network takes the dataset's images and has an output per class, or a one-line error."""
    probe = train[0][:2]
    try:
        with torch.no_grad():
            out = model.eval()(probe)
    except Exception as e:  # the user's forward, in one line
        raise ValueError(f"--model: {args.model} fails on {args.dataset}'s images of shape "
                         f"{tuple(probe.shape[1:])} ({error_text(e)})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"--model: {args.model} must return N×{classes} logits for {args.dataset}'s {classes} "
                         f"classes, got {shape} for 2 images")


__all__ = ["META_KEY", "run_factory"]
