"""Helpers of the bad-input catalogue (tests/test_bad_input*.py): run the CLI, assert one-line errors."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from advlab import cli
from advlab.data import write_idx
from advlab.models import (
    create_model,
    read_metadata,
    resolve_checkpoint,
)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: file → its bytes, directory → None."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``advlab ARGV`` in this process: (exit code, stdout, stderr); torch's thread count is restored."""
    threads = torch.get_num_threads()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, out: str, err: str, *fragments: str, exit_code: int = 2) -> str:
    """Assert the exit code, no traceback, exactly one line on stderr holding every fragment; return it."""
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert code == exit_code, (code, err)
    assert lines[0].startswith("advlab") and "error:" in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def one_line_message(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    """An API error: a one-line message holding every fragment."""
    text = str(excinfo.value)
    assert "\n" not in text and text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def save_checkpoint_raw(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """A checkpoint with exactly this metadata (no checks: what a buggy or hostile writer makes)."""
    save_file(tensors, str(path), metadata={"advlab": json.dumps({"format": "advlab-checkpoint/1", **meta})})


# --------------------------------------------------------------------------------------------
# files a user might hand to advlab


@pytest.fixture
def files(tmp_path, digits_ckpt):
    """Bad (and one good) inputs in tmp_path; ``prev`` is an output directory with earlier results."""
    f: dict[str, Path] = {"tmp": tmp_path, "digits": digits_ckpt}
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "summary.json").write_text('{"acc1_adv": 0.123, "note": "an earlier run"}\n')
    (prev / "x_adv.safetensors").write_bytes(b"earlier bytes")
    f["prev"] = prev
    f["empty"] = tmp_path / "empty"
    f["empty"].mkdir()
    f["file"] = tmp_path / "a-file.txt"
    f["file"].write_text("not a directory\n")

    class Evil:  # unpickling this would create tmp_path/pwned
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    f["pickle"] = tmp_path / "evil.safetensors"
    f["pickle"].write_bytes(pickle.dumps(Evil()))
    f["torchsave"] = tmp_path / "model.pt"
    torch.save(create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=16).state_dict(), f["torchsave"])
    f["foreign"] = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(f["foreign"]))
    good = digits_ckpt.read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    f["corrupt"] = tmp_path / "corrupt.safetensors"
    f["corrupt"].write_bytes(good[:8] + b"{" + b"x" * (n - 1) + good[8 + n :])
    f["truncated"] = tmp_path / "truncated.safetensors"
    f["truncated"].write_bytes(good[: len(good) - 100])
    f["garbage"] = tmp_path / "garbage.safetensors"
    f["garbage"].write_bytes(b"hello, I am not a checkpoint")
    meta = read_metadata(digits_ckpt)
    meta.pop("format")
    tensors = load_file(str(digits_ckpt))
    f["mismatch"] = tmp_path / "mismatch.safetensors"  # lenet metadata over MLP weights
    save_checkpoint_raw(f["mismatch"], tensors, dict(meta, architecture="lenet",
                                                     arch_kwargs={"in_shape": [1, 28, 28], "num_classes": 10}))
    f["shapes"] = tmp_path / "shapes.safetensors"  # the MLP's metadata, another width
    save_checkpoint_raw(f["shapes"], tensors, dict(meta, arch_kwargs={**meta["arch_kwargs"], "hidden": 65}))
    f["absurd"] = tmp_path / "absurd.safetensors"
    save_checkpoint_raw(f["absurd"], tensors, dict(meta, arch_kwargs={**meta["arch_kwargs"], "hidden": True}))
    f["huge"] = huge_checkpoint(tmp_path / "huge.safetensors")
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "t10k-images-idx3-ubyte", torch.zeros(10, 28, 28, dtype=torch.uint8).numpy())
    (idx / "t10k-images-idx3-ubyte").write_bytes((idx / "t10k-images-idx3-ubyte").read_bytes()[:-100])
    write_idx(idx / "t10k-labels-idx1-ubyte", torch.zeros(10, dtype=torch.uint8).numpy())
    f["idx"] = idx
    f["config"] = tmp_path / "bad.toml"
    f["config"].write_text("eps = [0.1,\n")
    return f


def huge_checkpoint(path: Path) -> Path:
    """mlp-mnist's 1 MB of weights, with metadata asking for hidden=200 000: building it needs 160 GB."""
    src = resolve_checkpoint("mlp-mnist")
    meta = read_metadata(src)
    meta.pop("format")
    save_checkpoint_raw(path, load_file(str(src)), dict(meta, arch_kwargs={**meta["arch_kwargs"], "hidden": 200_000}))
    return path
