"""The ``advlab`` command: ``advlab models``, ``advlab train``, ``advlab attack``, ``advlab evaluate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from advlab._version import __version__
from advlab.commands import modules


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="advlab", description="advlab: attack, defend and evaluate models, honestly."
    )
    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in modules():
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit code; user errors print one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"advlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
