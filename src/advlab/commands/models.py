"""``advlab models``: list architectures, shipped checkpoints and scikit-learn targets."""

from __future__ import annotations

import argparse

from advlab.models import ARCHITECTURES, list_pretrained, read_metadata, resolve_checkpoint
from advlab.models.sklearn import SKLEARN_MODELS


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` sub-command."""
    p = sub.add_parser("models", help="list architectures, pretrained models and scikit-learn targets")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the registry."""
    print("Architectures (advlab train --model NAME):")
    for name, info in sorted(ARCHITECTURES.items()):
        print(f"  {name:<12} {info.description}")
    print("Pretrained (advlab.load_model(NAME), --model NAME):")
    for name in list_pretrained():
        m = read_metadata(resolve_checkpoint(name))
        if "task" in m:  # a dense task: its own test metrics
            shown = "  ".join(f"{k} {m[k]:.4f}" for k in ("miou", "pixel_accuracy", "map50", "recall") if k in m)
        else:
            shown = f"Acc@1 {m.get('acc1', float('nan')):.4f}  Acc@5 {m.get('acc5', float('nan')):.4f}"
        print(f"  {name:<20} {m['architecture']:<10} {m['dataset']:<7} {shown}")
    print("Scikit-learn targets (advlab.load_model(NAME), advlab transfer --models; black boxes trained on first use):")
    for name, spec in SKLEARN_MODELS.items():
        print(f"  {name:<22} {spec.dataset:<7} {spec.description}")
    return 0
