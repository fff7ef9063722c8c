"""Reader and writer for the IDX format of the MNIST files (gzip-compressed or not)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from advlab._io import atomic_write_bytes

# IDX type codes -> numpy dtypes (big-endian on disk).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("=").str.lstrip("<>|="): k for k, v in _DTYPES.items()}


def _open(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"idx file: {path} does not exist")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise ValueError(f"idx file: {path} is corrupt or truncated ({e})") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file into a numpy array (native byte order).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Wrong magic number, unknown type code, or fewer bytes than the header says.
    """
    path = Path(path)
    raw = _open(path)
    if len(raw) < 4:
        raise ValueError(f"idx file: {path} is truncated ({len(raw)} bytes, no header)")
    zero, code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise ValueError(
            f"idx file: {path} has a wrong magic number 0x{raw[:4].hex()} "
            "(expected 0x0000 then a type code and a dimension count)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"idx file: {path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _DTYPES[code]
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < need:
        raise ValueError(
            f"idx file: {path} is truncated: header says {need} data bytes, found {len(raw) - header}"
        )
    if len(raw) - header > need:
        raise ValueError(f"idx file: {path} has {len(raw) - header - need} trailing bytes")
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    key = array.dtype.newbyteorder("=").str.lstrip("<>|=")
    if key not in _CODES:
        raise ValueError(f"array: dtype {array.dtype} has no IDX type code")
    code = _CODES[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    data = header + body
    atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
