"""``advlab models``: list architectures and shipped checkpoints."""

from __future__ import annotations

import argparse

from advlab.models import ARCHITECTURES, list_pretrained, read_metadata, resolve_checkpoint


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` sub-command."""
    p = sub.add_parser("models", help="list architectures and pretrained models")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the registry."""
    print("Architectures (advlab train --model NAME):")
    for name, info in sorted(ARCHITECTURES.items()):
        print(f"  {name:<12} {info.description}")
    print("Pretrained (advlab.load_model(NAME), --model NAME):")
    for name in list_pretrained():
        m = read_metadata(resolve_checkpoint(name))
        print(
            f"  {name:<20} {m['architecture']:<10} {m['dataset']:<7} "
            f"Acc@1 {m.get('acc1', float('nan')):.4f}  Acc@5 {m.get('acc5', float('nan')):.4f}"
        )
    return 0
