"""Atomic file writes and output locks: a reader sees the old file or the new one, never half of either.

Each write goes to a temporary file in the destination's directory (so the final rename stays on
one file system), is flushed to disk, gets the permissions a plain ``open(path, "w")`` would give
(``0o666`` minus the umask; ``mkstemp`` creates ``0o600``) and is renamed over the destination
with ``os.replace``. If anything fails on the way, the temporary file is removed and the
destination is left as it was.

An output is locked while a process writes it (:func:`locked_directory`, :func:`locked_file`):
``fcntl.flock`` on a lock file that holds the holder's pid and command. The kernel releases the
lock when the holder dies, however it dies, so a lock left by a killed process never blocks the
next run. The lock file is the one file not written atomically: the lock lives on its inode, and
a rename would put a second, unlocked inode at its name.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".advlab.lock"  # the lock file inside a locked output directory


def _umask() -> int:
    """The process's current umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends.

    For writers that take a file name rather than bytes (e.g. ``safetensors.torch.save_file``).
    On an exception (``KeyboardInterrupt`` included) the temporary file is removed and ``path``
    is untouched.

    Args:
        path: The destination; its directory must exist.

    Yields:
        The temporary file's path (the file exists, empty).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: The destination; its directory must exist.
        data: The file's new content.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded, newlines as given.

    Args:
        path: The destination; its directory must exist.
        text: The file's new content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


class OutputLocked(ValueError):
    """Another process holds the lock of an output (the message names its pid and command)."""


class OutputUnwritable(ValueError):
    """An output directory cannot be created or written (a file in the way, no permission)."""


# Locks this process holds: (lock file, thread) -> (descriptor, depth). Taking a lock the same
# thread already holds nests (an evaluation's report inside ``advlab evaluate``'s own lock).
_HELD: dict[tuple[str, int], tuple[int, int]] = {}


def _holder(fd: int) -> str:
    """Who holds the lock, as written in the lock file ("process 1234 (advlab evaluate ...)")."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    pid, _, command = text.partition("\n")
    if not pid.strip().isdigit():
        return "another process"
    command = command.strip()
    return f"process {pid.strip()}" + (f" ({command})" if command else "")


def _acquire(lock_file: Path) -> int | str:
    """A descriptor holding ``lock_file``'s lock, or the holder's description if another has it."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            return holder
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_file))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file as we opened it: lock the new one


@contextmanager
def locked_file(lock_file: str | os.PathLike[str], subject: str, *, arg: str, command: str,
                instead: str = "another directory") -> Iterator[None]:
    """Hold the exclusive lock ``lock_file`` (created if missing) while the block runs.

    The file holds this process's pid and ``command`` while locked and is removed when the block
    ends. The kernel drops the lock if the process dies, so a stale file never blocks anyone.

    Args:
        lock_file: The lock file; its directory must exist.
        subject: What the lock protects, as the error message names it (a directory, a path).
        arg: The argument that named it (``"out"``), for the error message.
        command: How the holder is described to a process that finds the lock taken.
        instead: What the message suggests using instead.

    Raises:
        OutputLocked: Another process (or another thread of this one) holds the lock.
    """
    key = (os.path.realpath(lock_file), threading.get_ident())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            _HELD[key] = (fd, depth)
        return
    got = _acquire(Path(lock_file))
    if isinstance(got, str):
        raise OutputLocked(f"{arg}: {subject} is being written by {got}; wait for it or use {instead}")
    os.ftruncate(got, 0)
    os.pwrite(got, f"{os.getpid()}\n{' '.join(command.split())}\n".encode(), 0)
    _HELD[key] = (got, 1)
    try:
        yield
    finally:
        del _HELD[key]
        try:
            os.unlink(lock_file)  # still holding the lock: a newcomer re-checks the inode it locked
        except OSError:
            pass
        os.close(got)


def writable_directory(directory: str | os.PathLike[str], *, arg: str) -> Path:
    """``directory``, created if missing; a one-line error if it cannot be (or is not writable).

    Args:
        directory: The directory.
        arg: The argument that named it, for error messages.

    Returns:
        The directory as a ``Path``.

    Raises:
        OutputUnwritable: A file is in the way, or the directory cannot be created or written.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputUnwritable(f"{arg}: expected a directory, got {d}, which is a file (or under one)") from None
    except OSError as e:
        raise OutputUnwritable(f"{arg}: cannot create {d} ({e.strerror})") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputUnwritable(f"{arg}: cannot write into {d} (permission denied)")
    return d


@contextmanager
def locked_directory(directory: str | os.PathLike[str], *, arg: str, command: str) -> Iterator[Path]:
    """Create ``directory`` if needed and hold its lock (``DIR/.advlab.lock``) while the block runs.

    Args:
        directory: The output directory.
        arg: The argument that named it, for error messages (``"out"``, ``"dir"``).
        command: How the holder is described to a process that finds the directory locked.

    Yields:
        The directory as a ``Path``.

    Raises:
        OutputLocked: Another process is writing the directory.
        OutputUnwritable: The directory cannot be created or written.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d, locked_directory(d, arg="out", command="demo") as out:
        ...     (out / LOCK_NAME).exists()
        True
    """
    d = writable_directory(directory, arg=arg)
    with locked_file(d / LOCK_NAME, str(directory), arg=arg, command=command):
        yield d


__all__ = [
    "LOCK_NAME", "OutputLocked", "OutputUnwritable", "atomic_path", "atomic_write_bytes", "atomic_write_text",
    "locked_directory", "locked_file", "writable_directory",
]
