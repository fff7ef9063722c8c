"""Output paths checked before any work: a directory or file advlab can write, or a one-line error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _existing_ancestor(path: Path) -> Path:
    """The path itself if it exists, else its nearest existing ancestor (``.`` for a relative path)."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def _probe_writable(arg: str, directory: Path, target: Path) -> None:
    """Create and delete a temporary file in ``directory``; a one-line error if that fails."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ValueError(f"{arg}: cannot write {target} ({e.strerror or e} in {directory})") from None


def check_out_dir(arg: str, path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be an output directory, writing nothing that stays.

    It must be an existing directory or not exist yet (it is then created later, with its
    parents), and the directory itself or its nearest existing ancestor must accept a file
    (probed with a temporary file, so a read-only file system is caught even for root).

    Args:
        arg: The argument's name for the error message (e.g. ``"--out"``).
        path: The output directory.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``path`` is a file, or a component of it is, or it is not writable.
    """
    path = Path(path)
    base = _existing_ancestor(path)
    if not base.is_dir():
        where = "which is a file" if base == path else f"inside {base}, which is a file"
        raise ValueError(f"{arg}: expected a directory, got {path}, {where}")
    _probe_writable(arg, base, path)
    return path


def check_out_file(arg: str, path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be an output file (not a directory; its directory writable), writing nothing.

    Args:
        arg: The argument's name for the error message (e.g. ``"--out"``).
        path: The output file (its directory may not exist yet).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``path`` is a directory, a component of its directory is a file, or the
            directory is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{arg}: expected a file path, got {path}, which is a directory")
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise ValueError(f"{arg}: cannot write {path}: {base} is a file, not a directory")
    _probe_writable(arg, base, path)
    return path


__all__ = ["check_out_dir", "check_out_file"]
