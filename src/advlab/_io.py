"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The content goes to a temporary file in the destination's directory (so the final rename stays
on one file system), is flushed to disk, gets the permissions ``open(path, "w")`` would have
given (``0o666`` minus the umask; ``mkstemp`` creates ``0o600``) and is renamed over the
destination with ``os.replace``. On any error the temporary file is removed and the destination
is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: The destination; its directory must exist.
        data: The file's new content.
    """
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded, newlines written as given.

    Args:
        path: The destination; its directory must exist.
        text: The file's new content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_write_bytes", "atomic_write_text"]
