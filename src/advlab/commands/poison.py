"""``advlab poison``: poison a training set, train clean / poisoned (/ cleaned) models, report the damage."""

from __future__ import annotations

import argparse

import torch

from advlab._io import locked_directory
from advlab._paths import check_out_dir
from advlab.commands.attack import parse_options
from advlab.commands.device import add_device_argument, use_device
from advlab.data import dataset_info
from advlab.poison.base import Share
from advlab.poison.experiment import ATTACKS, DEFENSES, Setup, run_experiment, split_options
from advlab.poison.report import terminal, write_report
from advlab.train import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``poison`` sub-command."""
    p = sub.add_parser("poison", help="poison the training set (backdoor, label flips, ...), train and report")
    p.add_argument("--attack", required=True, help=f"poisoning attack: {', '.join(ATTACKS)}")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="attack or defense option (JSON value), e.g. -o fraction=0.01 -o target=7 -o removal=0.15")
    p.add_argument("--model", default="lenet", help="architecture trained clean and poisoned (default lenet), or your "
                   "network's factory, package.module:factory or file.py:factory")
    p.add_argument("--dataset", default="mnist", help="mnist or digits (default mnist)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the poison's random choices")
    p.add_argument("--defense", default=None, help=f"data-level defense: {', '.join(DEFENSES)}")
    p.add_argument("--sweep", default=None, metavar="F1,F2,...",
                   help="also poison at these fractions and report ASR / accuracy against the fraction")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="poison-report", help="output directory (default poison-report)")
    p.add_argument("--no-progress", action="store_true")
    add_device_argument(p)
    p.set_defaults(func=run)


def parse_sweep(text: str | None) -> tuple[float, ...]:
    """``"0.001,0.01"`` → ``(0.001, 0.01)``; each a fraction in [0, 1]."""
    if not text:
        return ()
    out = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--sweep: expected comma-separated fractions, got {item!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--sweep: expected fractions in [0, 1], got {value}")
        out.append(value)
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    """Poison, train, measure and write the report."""
    from advlab._checks import check_param

    out = check_out_dir("--out", args.out)
    attack_kw, defense_kw = split_options(args.attack, args.defense, parse_options(args.option, "-o/--option"))
    check_param("fraction", Share, attack_kw["fraction"])
    sweep = parse_sweep(args.sweep)
    dataset_info(args.dataset)
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = Setup(arch=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, device=use_device(args))
    command = command_line()
    with locked_directory(out, arg="out", command=command) as d:
        outcome = run_experiment(setup.load(), args.attack, attack_kw, defense=args.defense,
                                 defense_options=defense_kw, sweep=sweep, progress=not args.no_progress)
        paths = write_report(d, outcome.summary, outcome.examples, outcome.labels, command)
    print(terminal(outcome.summary))
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
