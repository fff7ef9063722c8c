"""Checkpoints: safetensors weights plus a JSON metadata block. Pickle is never loaded.

The metadata (stored under the safetensors header key ``"advlab"``) records the architecture
and its arguments, the dataset, input bounds, clean Acc@1/Acc@5 on the test split, the seed, the
exact training command and the advlab version. Loading refuses, before any weights are read:
a file that is not safetensors (a pickle or a ``torch.save`` zip), a safetensors file without
advlab metadata (a foreign one), and metadata whose architecture does not match the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from advlab._io import atomic_path

FORMAT = "advlab-checkpoint/1"
_META_KEY = "advlab"
REQUIRED = ("format", "architecture", "arch_kwargs", "dataset", "bounds")


class CheckpointError(ValueError):
    """A checkpoint that advlab refuses to load."""


def _sniff(path: Path) -> None:
    """Refuse anything that is not a safetensors file, by looking at its first bytes only."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise CheckpointError(f"checkpoint: {path} is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 8 + n <= path.stat().st_size:
        return
    if (head[:1] == b"\x80" and head[1] in range(2, 6)) or head[:2] == b"PK":
        raise CheckpointError(
            f"checkpoint: {path} looks like a pickle / torch.save file; advlab loads only "
            "safetensors checkpoints and never unpickles a file"
        )
    raise CheckpointError(f"checkpoint: {path} is not a safetensors file")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The advlab metadata of a checkpoint, validated (no tensors are read).

    Args:
        path: A checkpoint file.

    Returns:
        The metadata dictionary (``format``, ``architecture``, ``arch_kwargs``, ``dataset``,
        ``bounds`` and whatever else training recorded).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: Not a safetensors file (a pickle, a ``torch.save`` zip), a foreign
            safetensors file, corrupt or incomplete metadata.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint: {path} is corrupt ({e})") from None
    if raw is None:
        raise CheckpointError(
            f"checkpoint: {path} is a safetensors file without advlab metadata (a foreign checkpoint)"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint: {path} has unreadable advlab metadata") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint: {path} has advlab metadata that is not a JSON object")
    missing = [k for k in REQUIRED if k not in meta]
    if missing or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint: {path} metadata is not {FORMAT} (missing {', '.join(missing) or 'nothing'}, "
            f"format {meta.get('format')!r})"
        )
    return meta


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``model``'s weights and ``meta`` atomically (a temp file, then ``os.replace``).

    A run killed while saving leaves the previous file at ``path`` (or none), never half a file.

    Args:
        model: The network whose ``state_dict`` is saved.
        path: The checkpoint file to write (its directory is created if needed).
        meta: The metadata; it must hold ``architecture``, ``arch_kwargs``, ``dataset`` and
            ``bounds`` (``format`` is added).

    Raises:
        ValueError: ``meta`` lacks a required key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **meta}
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"meta: missing keys {', '.join(missing)}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


def load_state(path: str | os.PathLike[str], model: nn.Module) -> None:
    """Load the weights stored at ``path`` into ``model``.

    Args:
        path: A checkpoint file (already checked by :func:`read_metadata`).
        model: The network built from the checkpoint's architecture and arguments.

    Raises:
        CheckpointError: A tensor name or shape differs from the model's.
    """
    path = Path(path)
    expected = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        if keys != set(expected):
            extra, missing = sorted(keys - set(expected)), sorted(set(expected) - keys)
            raise CheckpointError(
                f"checkpoint: {path} does not match its architecture "
                f"(unexpected {extra[:3]}, missing {missing[:3]})"
            )
        state = {}
        for k in keys:
            t = f.get_tensor(k)
            if t.shape != expected[k].shape:
                raise CheckpointError(
                    f"checkpoint: {path} tensor {k} has shape {tuple(t.shape)}, "
                    f"architecture expects {tuple(expected[k].shape)}"
                )
            state[k] = t
    model.load_state_dict(state)


def tensor_digest(model: nn.Module) -> str:
    """A SHA-256 over the model's state, for comparing weights bit for bit."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["FORMAT", "CheckpointError", "load_state", "read_metadata", "save_checkpoint", "tensor_digest"]
