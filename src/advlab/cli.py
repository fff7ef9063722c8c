"""The ``advlab`` command: ``advlab models``, ``advlab train``, ``advlab attack``, ``advlab evaluate``, ….

Every error a user can cause ends in one line on stderr and a non-zero exit, never a traceback:
exit 2 for a user error (a bad argument, a file that cannot be read or written, a corrupt store, a
model that does not fit the data), exit 1 for an internal error (a bug in advlab, said as such),
130 on Ctrl-C. ``advlab --debug COMMAND ...`` (or ``COMMAND --debug``) also prints the traceback.
"""

from __future__ import annotations

import argparse
import errno
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import NoReturn

from advlab._version import __version__
from advlab.commands import modules

EXIT_USER = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130

# Flags that count something: every sub-command that has one takes an integer >= 1.
COUNT_FLAGS = ("n", "threads", "batch_size", "epochs", "steps")

_MAX_MESSAGE = 400


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), pointing at ``--help``.

    Attributes:
        commands: The sub-command parsers by name (filled by :func:`build_parser`).
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on one line and exit 2."""
        self.exit(EXIT_USER, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    """The argument parser with every sub-command registered."""
    parser = Parser(prog="advlab", description="advlab: attack, defend and evaluate models, honestly.")
    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in modules():
        mod.register(sub)
    for command in sub.choices.values():  # `advlab evaluate --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error")
    parser.commands = dict(sub.choices)
    return parser


def check_counts(args: argparse.Namespace) -> None:
    """Refuse a count flag (``--n``, ``--threads``, ...) below 1 before the command starts."""
    for key in COUNT_FLAGS:
        value = getattr(args, key, None)
        if value is not None and value < 1:
            raise ValueError(f"--{key.replace('_', '-')}: expected an integer >= 1, got {value}")


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed, cut to a readable length.

    A long message loses its middle, not its end: the end usually says what to do.
    """
    flat = " ".join(text.split())
    if len(flat) <= _MAX_MESSAGE:
        return flat
    half = (_MAX_MESSAGE - 3) // 2
    return flat[:half] + " … " + flat[-half:]


def _frames(tb: TracebackType | None) -> list[tuple[str, str, str]]:
    """(module, function, file) of every frame of a traceback, outermost first."""
    out = []
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        out.append((str(frame.f_globals.get("__name__", "?")), getattr(code, "co_qualname", code.co_name),
                    code.co_filename))
        tb = tb.tb_next
    return out


def _where(e: BaseException) -> str:
    """The innermost advlab function on the error's path, e.g. ``advlab.metrics.predict_logits``."""
    inside = [f"{m}.{f}" for m, f, _ in _frames(e.__traceback__) if m.startswith("advlab")]
    return inside[-1] if inside else "advlab"


def _in_model(e: BaseException) -> bool:
    """Whether the error was raised while a torch module ran its forward pass."""
    return any(m == "torch.nn.modules.module" for m, _, _ in _frames(e.__traceback__))


def _describe_os_error(e: OSError) -> str:
    if e.filename is None:
        return one_line(str(e)) or f"{type(e).__name__} (no details)"
    path = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    reason = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
              errno.EEXIST: "a file of that name exists", errno.ENOTDIR: "a part of the path is a file",
              errno.EISDIR: "it is a directory"}.get(e.errno or 0, e.strerror or "error")
    return f"cannot read or write {path}: {reason}"


def describe_error(e: Exception) -> tuple[int, str]:
    """The exit code and the one-line message for an error that ended a command.

    Args:
        e: The exception.

    Returns:
        ``(EXIT_USER, message)`` for errors a user can cause, ``(EXIT_INTERNAL, message)`` for a bug.
    """
    text = one_line(str(e)) or type(e).__name__
    if isinstance(e, sqlite3.Error):
        return EXIT_USER, f"the results store (results.sqlite) failed: {text} ({type(e).__name__})"
    if isinstance(e, OSError):
        return EXIT_USER, _describe_os_error(e)
    if isinstance(e, (ValueError, TypeError)):
        return EXIT_USER, text
    if isinstance(e, MemoryError):
        return EXIT_USER, f"out of memory in {_where(e)} (try a smaller --n or --batch-size)"
    if isinstance(e, (RuntimeError, OverflowError)) and _in_model(e):
        return EXIT_USER, (f"the model failed on its input in {_where(e)}: {text} "
                           "(does the model fit the data? check --model, --dataset and --defense)")
    if isinstance(e, (RuntimeError, OverflowError)):
        return EXIT_USER, f"{type(e).__name__} in {_where(e)}: {text}"
    return EXIT_INTERNAL, (f"internal error (a bug in advlab): {type(e).__name__} in {_where(e)}: {text}; "
                           "rerun with `advlab --debug ...` for the traceback and please report it")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit code; every error prints one line (see the module docstring)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the sub-command that did not take them, pointing at its own --help
        parser.commands.get(args.command or "", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        check_counts(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("advlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code, message = describe_error(e)
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"advlab {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
