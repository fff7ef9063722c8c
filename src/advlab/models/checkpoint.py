"""Checkpoints: safetensors weights plus a JSON metadata block. Pickle is never loaded.

The metadata (stored under the safetensors header key ``"advlab"``) records the architecture
and its arguments, the dataset, input bounds, clean Acc@1/Acc@5 on the test split, the seed, the
exact training command and the advlab version. Loading refuses, before any weights are read:
a file that is not safetensors (a pickle or a ``torch.save`` zip), a safetensors file without
advlab metadata (a foreign one), corrupt or truncated files, metadata of the wrong types or with
absurd architecture arguments, and metadata whose architecture does not match the weights — the
last checked against the tensor names and shapes in the file's header before any layer is built
(the loader builds the architecture on the ``meta`` device first, which allocates nothing), so a
small file whose metadata asks for a huge network is refused without allocating it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from advlab._io import atomic_path

FORMAT = "advlab-checkpoint/1"
_META_KEY = "advlab"
REQUIRED = ("format", "architecture", "arch_kwargs", "dataset", "bounds")
# Architecture arguments with a known meaning, and their sane ranges (anything larger is absurd).
_COUNT_KWARGS = ("num_classes", "hidden", "width")
_MAX_COUNT = 2**20
_MAX_SIDE = 2**14


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
    _check_meta_types(path, meta)
    return meta


def _check_meta_types(path: Path, meta: dict[str, Any]) -> None:
    """The required metadata fields have the types advlab writes."""
    for key in ("architecture", "dataset"):
        if not isinstance(meta[key], str):
            raise CheckpointError(f"checkpoint: {path} metadata {key}: expected a string, got {meta[key]!r}"[:300])
    if not isinstance(meta["arch_kwargs"], dict):
        raise CheckpointError(f"checkpoint: {path} metadata arch_kwargs: expected an object, got "
                              f"{type(meta['arch_kwargs']).__name__}")
    bounds = meta["bounds"]
    ok = (isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)
          and math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] < bounds[1])
    if not ok:
        raise CheckpointError(f"checkpoint: {path} metadata bounds: expected [lo, hi] with finite lo < hi, "
                              f"got {bounds!r}"[:300])
    if meta.get("wrapper") is not None and not isinstance(meta["wrapper"], str):
        raise CheckpointError(f"checkpoint: {path} metadata wrapper: expected a string such as "
                              f"'thermometer:16', got {meta['wrapper']!r}"[:300])


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_COUNT


def check_arch_kwargs(path: str | os.PathLike[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Refuse architecture arguments of the wrong type or an absurd size, before anything is built.

    Known arguments: ``in_shape`` (1 to 4 positive sizes, each at most 16 384), ``num_classes``,
    ``hidden`` and ``width`` (integers in [1, 2²⁰]), ``mean`` (finite) and ``std`` (finite, > 0).
    Any other argument must be a JSON scalar or a list of them; the architecture's constructor
    judges it.

    Args:
        path: The checkpoint (for the message).
        kwargs: Its ``arch_kwargs``.

    Returns:
        ``kwargs`` unchanged.

    Raises:
        CheckpointError: A value of the wrong type or out of range (one line, naming the argument).
    """

    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(f"checkpoint: {path} arch_kwargs.{key}: expected {expected}, got {kwargs[key]!r}"[:300])

    for key, v in kwargs.items():
        if key == "in_shape":
            ok = isinstance(v, list) and 1 <= len(v) <= 4 and all(_is_count(d) and d <= _MAX_SIDE for d in v)
            if not ok:
                raise bad(key, f"a list of 1 to 4 integers in [1, {_MAX_SIDE}]")
        elif key in _COUNT_KWARGS and not _is_count(v):
            raise bad(key, f"an integer in [1, {_MAX_COUNT}]")
        elif key in ("mean", "std") and not (_is_number(v) and math.isfinite(v) and (key == "mean" or v > 0)):
            raise bad(key, "a finite number" + (" > 0" if key == "std" else ""))
        elif not isinstance(v, (str, int, float, bool, type(None), list)) or (
            isinstance(v, list) and not all(isinstance(i, (str, int, float, bool)) for i in v)
        ):
            raise bad(key, "a number, a string or a list of them")
    return kwargs


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor in a safetensors file, read from its header (no tensor data is read).

    Args:
        path: A safetensors file (already checked by :func:`read_metadata`).

    Returns:
        The shapes by tensor name.

    Raises:
        CheckpointError: The header cannot be read.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint: {path} is corrupt ({e})") from None


def state_differences(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> tuple[
    list[str], list[str], list[str]
]:
    """How a file's tensors differ from a model's: (missing, unexpected, of another shape), each sorted by name."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    return missing, unexpected, reshaped


def check_state(path: str | os.PathLike[str], model: nn.Module) -> None:
    """Compare the tensor names and shapes in ``path``'s header with ``model``'s state (no data is read).

    ``model`` may live on the ``meta`` device: only names and shapes are compared, so a network
    built there (no memory) is checked before the real one is allocated.

    Args:
        path: A checkpoint file (already checked by :func:`read_metadata`).
        model: The network its metadata describes.

    Raises:
        CheckpointError: A tensor is missing, unexpected or has another shape.
    """
    shapes = tensor_shapes(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, extra, reshaped = state_differences(expected, shapes)
    if missing or extra:
        raise CheckpointError(
            f"checkpoint: {path} does not match its architecture (unexpected {extra[:3]}, missing {missing[:3]})"
        )
    if reshaped:
        k = reshaped[0]
        raise CheckpointError(
            f"checkpoint: {path} tensor {k} has shape {shapes[k]}, its metadata's architecture expects {expected[k]}"
        )


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
    check_state(path, model)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict(state)


def tensor_digest(model: nn.Module) -> str:
    """A SHA-256 over the model's state, for comparing weights bit for bit.

    Each tensor enters as its raw bytes (through uint8, so a dtype NumPy lacks, such as bfloat16, is read too).
    """
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


INITIAL = "_advlab_initial_digest"  # where create_model records the digest of the weights it drew


def mark_initial(model: nn.Module) -> nn.Module:
    """Record that ``model``'s weights are the ones its constructor drew (:func:`is_initial` until they change).

    A model built on the meta device (shapes only, as checkpoints are checked) holds no weights: not recorded.
    """
    if not any(t.is_meta for t in model.state_dict().values()):
        model.__dict__[INITIAL] = tensor_digest(model)
    return model


def is_initial(model: nn.Module) -> bool:
    """Whether ``model`` still holds the weights :func:`mark_initial` recorded (not loaded over, not trained)."""
    recorded = model.__dict__.get(INITIAL)
    return recorded is not None and recorded == tensor_digest(model)


__all__ = [
    "FORMAT", "INITIAL", "CheckpointError", "check_arch_kwargs", "check_state", "is_initial", "load_state",
    "mark_initial", "read_metadata", "save_checkpoint", "tensor_digest", "tensor_shapes",
]
