"""``advlab train``: train a model and write an advlab checkpoint."""

from __future__ import annotations

import argparse
import time

import torch

from advlab.data import dataset_info, load_dataset
from advlab.models import create_model, save_checkpoint
from advlab.train import TrainConfig, checkpoint_meta, command_line, fit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` sub-command."""
    p = sub.add_parser("train", help="train a model (optionally with a defense) and save a checkpoint")
    p.add_argument("--model", required=True, help="architecture: lenet, googlenet, mlp")
    p.add_argument("--dataset", default="mnist", help="mnist or digits (default mnist)")
    p.add_argument("--data-dir", default=None, help="directory with MNIST IDX files (default: offline copy)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test split, write the checkpoint atomically."""
    if args.threads:
        torch.set_num_threads(args.threads)
    info = dataset_info(args.dataset)
    train = load_dataset(args.dataset, "train", root=args.data_dir)
    test = load_dataset(args.dataset, "test", root=args.data_dir)
    arch_kwargs = {"in_shape": list(info.shape), "num_classes": info.num_classes}
    model = create_model(args.model, **arch_kwargs)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    t0 = time.perf_counter()
    result = fit(model, train, test, config, progress=not args.no_progress)
    meta = checkpoint_meta(args.model, arch_kwargs, args.dataset, result, config, command_line())
    save_checkpoint(result.model, args.out, meta)
    print(
        f"{args.model} on {args.dataset}: test Acc@1 {result.acc1:.4f}  Acc@5 {result.acc5:.4f}  "
        f"({time.perf_counter() - t0:.1f} s) -> {args.out}"
    )
    return 0
