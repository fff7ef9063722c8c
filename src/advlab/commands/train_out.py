"""What every ``advlab train`` path shares: the training settings from its flags, and its output held under a lock."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from advlab._io import locked_file, writable_directory
from advlab.train import TrainConfig, command_line


def train_config(args: argparse.Namespace) -> TrainConfig:
    """``--epochs``, ``--batch-size``, ``--lr``, ``--seed`` and ``--schedule`` as a :class:`TrainConfig`."""
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       schedule=args.schedule)


@contextmanager
def locked_out(args: argparse.Namespace) -> Iterator[Path]:
    """``--out``, its folder checked writable and the file locked against another command writing it."""
    out = Path(args.out)
    writable_directory(out.parent, arg="out")
    with locked_file(out.parent / f".{out.name}.lock", str(out), arg="out", command=command_line(),
                     instead="another path"):
        yield out


__all__ = ["locked_out", "train_config"]
