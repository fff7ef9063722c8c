"""The bad-input catalogue: what a user can get wrong, and what advlab answers.

Every case is one line on stderr (or one exception whose message is one line) naming the argument,
what was expected and what was got; never a traceback; a non-zero exit; and nothing written,
lost or overwritten (the whole temporary directory is compared byte for byte before and after).
CLI cases run ``advlab.cli.main`` in this process (fast); a few run ``python -m advlab`` in a
subprocess to prove the real exit code and the absence of a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import resource
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import advlab
from advlab import cli
from advlab._checks import check_out_dir, check_out_file
from advlab.attacks import get_attack
from advlab.data import load_dataset, write_idx
from advlab.models import (
    BlackBox,
    CheckpointError,
    check_input_shape,
    create_model,
    load_model,
    parse_defense,
    read_metadata,
    resolve_checkpoint,
    save_checkpoint,
    wrap_defense,
)
from advlab.models.wrappers import GaussianSmoothing, MedianSmoothing

# --------------------------------------------------------------------------------------------
# helpers


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


def save_checkpoint_raw(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """A checkpoint with exactly this metadata (no checks: what a buggy or hostile writer makes)."""
    save_file(tensors, str(path), metadata={"advlab": json.dumps({"format": "advlab-checkpoint/1", **meta})})


def huge_checkpoint(path: Path) -> Path:
    """mlp-mnist's 1 MB of weights, with metadata asking for hidden=200 000: building it needs 160 GB."""
    src = resolve_checkpoint("mlp-mnist")
    meta = read_metadata(src)
    meta.pop("format")
    save_checkpoint_raw(path, load_file(str(src)), dict(meta, arch_kwargs={**meta["arch_kwargs"], "hidden": 200_000}))
    return path


# --------------------------------------------------------------------------------------------
# the CLI catalogue: (id, argv, fragments of the one line)

ATTACK = "attack --attack fgsm --n 5"
EVAL = "evaluate --attacks fgsm --eps 0.1 --n 5 --no-progress"
TRAIN = "train --model mlp --dataset digits --epochs 1 --no-progress"
TRANSFER = "transfer --models lenet-mnist,mlp-mnist --n 5"

CLI_CASES = [
    # unknown names, with suggestions
    ("unknown-attack", "attack --attack deepfoo --n 5 --out {prev}", ["did you mean 'deepfool'"]),
    ("unknown-model", f"{ATTACK} --model lenet-mnst --out {{prev}}", ["did you mean 'lenet-mnist'"]),
    ("architecture-as-model", f"{ATTACK} --model lenet --out {{prev}}", ["create_model('lenet')"]),
    ("unknown-dataset", f"{EVAL} --dataset mnst --out {{prev}}", ["did you mean 'mnist'"]),
    ("unknown-defense", f"{EVAL} --defense bitdeph:3 --out {{prev}}", ["did you mean 'bitdepth'"]),
    ("unknown-attack-evaluate", "evaluate --attacks nosuch --n 5 --out {prev}", ["did you mean 'noise'"]),
    ("unknown-training-defense", f"{TRAIN} --defense pgdd --out {{tmp}}/m.safetensors", ["did you mean 'pgd'"]),
    ("unknown-architecture", "train --model lenett --dataset digits --out {tmp}/m.safetensors",
     ["did you mean 'lenet'"]),
    ("architecture-too-small-for-data", f"{TRAIN} --model lenet --out {{tmp}}/m.safetensors",
     ["at least 16×16, got 8×8"]),
    # checkpoints advlab refuses
    ("pickle-checkpoint", f"{ATTACK} --model {{pickle}} --out {{prev}}", ["never unpickles"]),
    ("torch-save-checkpoint", f"{ATTACK} --model {{torchsave}} --out {{prev}}", ["pickle / torch.save"]),
    ("foreign-checkpoint", f"{ATTACK} --model {{foreign}} --out {{prev}}", ["foreign checkpoint"]),
    ("corrupt-checkpoint", f"{ATTACK} --model {{corrupt}} --out {{prev}}", ["is corrupt"]),
    ("truncated-checkpoint", f"{ATTACK} --model {{truncated}} --out {{prev}}", ["is corrupt"]),
    ("garbage-checkpoint", f"{ATTACK} --model {{garbage}} --out {{prev}}", ["not a safetensors file"]),
    ("missing-checkpoint", f"{ATTACK} --model {{tmp}}/missing.safetensors --out {{prev}}", ["does not exist"]),
    ("metadata-weights-mismatch", f"{ATTACK} --model {{mismatch}} --out {{prev}}",
     ["does not match its architecture"]),
    ("metadata-shape-mismatch", f"{ATTACK} --model {{shapes}} --out {{prev}}",
     ["tensor net.1.bias has shape (64,)", "expects (65,)"]),
    ("absurd-arch-kwargs", f"{ATTACK} --model {{absurd}} --out {{prev}}", ["arch_kwargs.hidden", "got True"]),
    ("160-GB-metadata", f"{ATTACK} --model {{huge}} --out {{prev}}", ["expects (200000,)"]),
    # --out that cannot be one
    ("out-is-a-file-attack", f"{ATTACK} --out {{file}}", ["--out: expected a directory", "which is a file"]),
    ("out-inside-a-file-attack", f"{ATTACK} --out {{file}}/sub", ["--out", "which is a file"]),
    ("out-is-a-file-evaluate", f"{EVAL} --out {{file}}", ["a-file.txt", "which is a file"]),
    ("out-is-a-file-transfer", f"{TRANSFER} --out {{file}}", ["--out: expected a directory"]),
    ("checkpoint-out-is-a-directory", f"{TRAIN} --out {{prev}}", ["--out: expected a file path", "directory"]),
    # counts, budgets, parameters
    ("threads-0-evaluate", f"{EVAL} --threads 0 --out {{prev}}", ["--threads: expected an integer >= 1, got 0"]),
    ("threads-0-train", f"{TRAIN} --threads 0 --out {{tmp}}/m.safetensors", ["--threads: expected an integer >= 1"]),
    ("threads-negative-transfer", f"{TRANSFER} --threads -1 --out {{prev}}", ["--threads", "got -1"]),
    ("n-0-attack", "attack --attack fgsm --n 0 --out {prev}", ["--n: expected an integer >= 1, got 0"]),
    ("n-negative-attack", "attack --attack fgsm --n -5 --out {prev}", ["--n", "got -5"]),
    ("n-0-evaluate", "evaluate --attacks fgsm --n 0 --out {prev}", ["--n: expected an integer >= 1"]),
    ("n-0-transfer", "transfer --models lenet-mnist,mlp-mnist --n 0 --out {prev}", ["--n"]),
    ("batch-size-0-evaluate", f"{EVAL} --batch-size 0 --out {{prev}}", ["--batch-size: expected an integer >= 1"]),
    ("epochs-0-train", "train --model mlp --dataset digits --epochs 0 --out {tmp}/m.safetensors", ["--epochs"]),
    ("eps-negative-attack", f"{ATTACK} --eps -0.1 --out {{prev}}", ["eps: expected a number >= 0, got -0.1"]),
    ("eps-nan-attack", f"{ATTACK} --eps nan --out {{prev}}", ["eps", "got nan"]),
    ("eps-inf-fixed-budget", "attack --attack pgd --n 5 --eps inf --out {prev}", ["needs a finite eps"]),
    ("eps-negative-evaluate", "evaluate --attacks fgsm --n 5 --eps=-0.1 --out {prev}", ["eps", "-0.1"]),
    ("eps-nan-evaluate", "evaluate --attacks fgsm --n 5 --eps nan --out {prev}", ["eps", "nan"]),
    ("eps-not-a-number", "evaluate --attacks fgsm --n 5 --eps 0.1,big --out {prev}", ["--eps"]),
    ("eps-transfer-negative", f"{TRANSFER} --eps=-1 --out {{prev}}", ["eps: expected a number >= 0"]),
    ("param-not-key-value", "attack --attack pgd --n 5 --param steps --out {prev}",
     ["--param: expected KEY=VALUE, got 'steps'"]),
    ("param-unknown", "attack --attack pgd --n 5 --param stepz=3 --out {prev}", ["did you mean 'steps'"]),
    ("param-out-of-range", "attack --attack pgd --n 5 --param steps=0 --out {prev}",
     ["steps: expected an integer >= 1, got 0"]),
    ("param-wrong-type", "attack --attack pgd --n 5 --param loss=3 --out {prev}", ["loss"]),
    ("transfer-steps-not-taken", f"{TRANSFER} --attack fgsm --steps 3 --out {{prev}}",
     ["fgsm: unexpected parameter(s) steps"]),
    ("option-not-key-value", f"{TRAIN} --defense pgd -o eps --out {{tmp}}/m.safetensors", ["KEY=VALUE"]),
    ("option-unknown-for-defense", f"{TRAIN} --defense pgd -o foo=1 --out {{tmp}}/m.safetensors",
     ["unknown option(s) foo"]),
    ("option-for-a-transformation", f"{TRAIN} --defense thermometer:16 -o eps=0.3 --out {{tmp}}/m.safetensors",
     ["takes no options, got eps"]),
    # input transformations that cannot work
    ("gaussian-inf", f"{EVAL} --defense gaussian:inf --out {{prev}}", ["sigma must be a finite number > 0, got inf"]),
    ("gaussian-nan", f"{EVAL} --defense gaussian:nan --out {{prev}}", ["sigma must be a finite number > 0"]),
    ("gaussian-too-wide", f"{EVAL} --defense gaussian:10 --out {{prev}}", ["too large for 28×28 images"]),
    ("median-99", f"{EVAL} --defense median:99 --out {{prev}}", ["99×99 window is too large for 28×28 images"]),
    ("median-even", f"{EVAL} --defense median:4 --out {{prev}}", ["odd integer"]),
    ("resize-0", f"{EVAL} --defense resize:0 --out {{prev}}", ["resize: min_size must be an integer >= 1, got 0"]),
    ("resize-larger-than-image", f"{EVAL} --defense resize:40 --out {{prev}}", ["min_size must be in [1, 28]"]),
    ("jpeg-0", f"{EVAL} --defense jpeg:0 --out {{prev}}", ["quality must be in [1, 95], got 0"]),
    ("bitdepth-99", f"{EVAL} --defense bitdepth:99 --out {{prev}}", ["bits must be in [1, 16], got 99"]),
    ("bitdepth-not-a-number", f"{EVAL} --defense bitdepth:x --out {{prev}}", ["bitdepth takes"]),
    ("thermometer-on-plain-model", f"{EVAL} --defense thermometer:16 --out {{prev}}", ["trained on the encoding"]),
    ("defense-on-a-black-box", f"{EVAL} --model sklearn-logreg-digits --dataset digits --defense bitdepth:3 "
     "--out {prev}", ["wraps a torch model", "got BlackBox"]),
    # models and data that do not fit
    ("digits-model-on-mnist-attack", "attack --attack fgsm --n 5 --model {digits} --dataset mnist --out {prev}",
     ["expects 1×8×8 inputs (its checkpoint's in_shape), got 1×28×28 images from mnist"]),
    ("digits-model-on-mnist-transfer", "transfer --models lenet-mnist,{digits} --n 5 --out {prev}",
     ["expects 1×8×8 inputs", "from mnist"]),
    ("init-of-another-architecture", "train --model mlp --dataset digits --init lenet-mnist --out {tmp}/m.safetensors",
     ["--init: lenet-mnist is a 'lenet', not 'mlp'"]),
    ("mnist-init-on-digits-train", "train --model lenet --dataset digits --init lenet-mnist "
     "--out {tmp}/m.safetensors", ["lenet-mnist expects 1×28×28 inputs", "1×8×8 images from digits"]),
    ("white-box-attack-on-black-box", "attack --attack pgd --n 5 --model sklearn-logreg-digits --out {prev}",
     ["needs a differentiable torch model"]),
    ("no-targeted-mode", "attack --attack deepfool --n 5 --targeted random --out {prev}", ["has no targeted mode"]),
    ("norm-not-supported", "attack --attack deepfool --n 5 --norm l1 --out {prev}", ["deepfool supports"]),
    ("data-dir-missing", f"{ATTACK} --data-dir {{tmp}}/no-such-dir --out {{prev}}", ["does not exist"]),
    ("data-dir-truncated-idx", f"{ATTACK} --data-dir {{idx}} --out {{prev}}", ["is truncated"]),
    ("transfer-one-model", "transfer --models lenet-mnist --n 5 --out {prev}", ["at least two models"]),
    ("transfer-duplicate-models", "transfer --models lenet-mnist,lenet-mnist --n 5 --out {prev}", ["distinct"]),
    ("transfer-black-box-attack", "transfer --models lenet-mnist,mlp-mnist --attack square --n 5 --out {prev}",
     ["needs a white-box attack"]),
    # the command line itself, configs, reports
    ("flag-not-an-integer", "evaluate --n x", ["invalid int value: 'x'", "advlab evaluate --help"]),
    ("unknown-flag", "attack --attack fgsm --bogus 3 --out {prev}", ["unrecognized arguments: --bogus 3",
                                                                     "advlab attack --help"]),
    ("missing-required-flag", "attack --n 5", ["--attack", "--out"]),
    ("bad-choice", "evaluate --norm l3", ["invalid choice: 'l3'"]),
    ("config-missing", "evaluate --config {tmp}/none.toml --out {prev}", ["--config", "does not exist"]),
    ("config-not-toml", "evaluate --config {config} --out {prev}", ["is not valid TOML"]),
    ("report-without-store", "report {empty}", ["results.sqlite does not exist"]),
    ("report-missing-directory", "report {tmp}/no-such-run", ["does not exist"]),
]


@pytest.mark.parametrize(("argv", "fragments"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_writes_nothing(capsys, files, argv, fragments):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv.split()]
    before = snapshot(files["tmp"])
    code, out, err = run_cli(capsys, args)
    line = one_line_error(code, out, err, *fragments)
    assert "internal error" not in line
    assert snapshot(files["tmp"]) == before  # nothing written, lost or overwritten (no pickle ran either)


def test_catalogue_is_broad():
    assert len(CLI_CASES) >= 40
    assert len({c[0] for c in CLI_CASES}) == len(CLI_CASES)


# --------------------------------------------------------------------------------------------
# cases that need more than one command line


def test_digits_model_on_mnist_in_evaluate_is_one_line(capsys, files):
    # evaluate checks the model's recorded dataset against the data before anything is written
    code, out, err = run_cli(capsys, ["evaluate", "--model", str(files["digits"]), "--dataset", "mnist",
                                      "--attacks", "fgsm", "--n", "5", "--no-progress", "--out",
                                      str(files["tmp"] / "run")])
    one_line_error(code, out, err, "model: expected a model of mnist, got one trained on digits")
    assert not (files["tmp"] / "run" / "results.sqlite").exists()


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody can write into: chmod 555 for a user; for root, a path under /sys."""
    if os.geteuid() != 0:
        d = tmp_path / "readonly"
        d.mkdir()
        (d / "earlier.txt").write_text("kept\n")
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    d = Path("/sys/advlab-readonly-out")  # root may write anywhere but on a file system that refuses
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        yield d
        return
    pytest.skip("running as root and /sys accepts files: no read-only place to test")


@pytest.mark.parametrize("command", ["attack", "evaluate", "transfer", "train"])
def test_readonly_out_is_one_line(capsys, tmp_path, readonly_dir, command):
    argv = {"attack": ATTACK.split(), "evaluate": EVAL.split(), "transfer": TRANSFER.split(),
            "train": TRAIN.split()}[command]
    out_path = readonly_dir / "m.safetensors" if command == "train" else readonly_dir / "run"
    before = snapshot(readonly_dir) if readonly_dir.exists() else None
    code, out, err = run_cli(capsys, [*argv, "--out", str(out_path)])
    line = one_line_error(code, out, err)
    assert str(readonly_dir) in line
    assert (snapshot(readonly_dir) if readonly_dir.exists() else None) == before


def test_huge_metadata_is_refused_fast_without_allocating(tmp_path):
    """A 1 MB file whose metadata asks for a 160 GB network: refused in one line, in seconds, under 3 GB."""
    path = huge_checkpoint(tmp_path / "huge.safetensors")
    assert path.stat().st_size < 2_000_000
    code = ("import resource, sys, time\n"
            "from advlab.models import CheckpointError, load_model\n"
            "t = time.perf_counter()\n"
            "try:\n    load_model(sys.argv[1])\nexcept CheckpointError as e:\n    print('refused:', e)\n"
            "print('seconds', time.perf_counter() - t)\n"
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")

    def limit_memory():  # a regression fails with MemoryError instead of exhausting the machine
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_memory)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    facts = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("seconds", "maxrss")))
    assert "refused:" in proc.stdout
    assert "net.1.bias has shape (256,)" in proc.stdout and "expects (200000,)" in proc.stdout
    assert float(facts["seconds"]) < 5
    assert int(facts["maxrss_kb"]) < 1_000_000  # the import of torch is most of it; 160 GB were asked for


@pytest.mark.parametrize(("argv", "fragments"), [
    (["attack", "--attack", "fgsm", "--n", "5", "--model", "{pickle}", "--out", "{prev}"], ["never unpickles"]),
    (["evaluate", "--threads", "0", "--n", "5", "--out", "{prev}"], ["--threads"]),
    (["evaluate", "--defense", "gaussian:inf", "--attacks", "fgsm", "--n", "5", "--out", "{prev}"], ["sigma"]),
    (["attack", "--attack", "fgsm", "--n", "5", "--model", "{digits}", "--dataset", "mnist", "--out", "{prev}"],
     ["expects 1×8×8"]),
], ids=["pickle", "threads-0", "gaussian-inf", "digits-on-mnist"])
def test_real_process_exits_2_without_traceback(files, argv, fragments):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    before = snapshot(files["tmp"])
    proc = subprocess.run([sys.executable, "-m", "advlab", *args], capture_output=True, text=True, timeout=300)
    one_line_error(proc.returncode, proc.stdout, proc.stderr, *fragments)
    assert snapshot(files["tmp"]) == before


def test_debug_shows_the_traceback(files):
    args = ["attack", "--attack", "fgsm", "--n", "5", "--model", str(files["pickle"]), "--out", str(files["prev"])]
    for argv in (["--debug", *args], [*args, "--debug"]):
        proc = subprocess.run([sys.executable, "-m", "advlab", *argv], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2
        assert "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("advlab attack: error: checkpoint:")


def test_internal_error_says_bug_exits_1_and_debug_shows_it(capsys, monkeypatch):
    from advlab.commands import models as models_command

    def broken(args):
        return args.no_such_attribute  # an AttributeError: a bug, not the user's doing

    monkeypatch.setattr(models_command, "run", broken)
    code, out, err = run_cli(capsys, ["models"])
    line = one_line_error(code, out, err, "internal error (a bug in advlab): AttributeError", "--debug",
                          exit_code=1)
    assert "AttributeError in advlab" in line  # where it surfaced
    code, out, err = run_cli(capsys, ["--debug", "models"])
    assert code == 1 and "Traceback" in err and "no_such_attribute" in err


@pytest.mark.parametrize(("error", "fragments"), [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/results.json"),
     ["cannot read or write /data/run/results.json: no space left on device"]),
    (PermissionError(errno.EACCES, "Permission denied", "/data/run"), ["/data/run: permission denied"]),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), ["/mnt/ro/run: read-only file system"]),
    (sqlite3.DatabaseError("database disk image is malformed"),
     ["results store (results.sqlite) failed: database disk image is malformed"]),
    (OverflowError("cannot convert float infinity to integer"), ["OverflowError in", "infinity"]),
    (MemoryError(), ["out of memory"]),
    (RuntimeError("multi\nline\n  message"), ["RuntimeError in", "multi line message"]),
], ids=["no-space", "permission", "read-only", "sqlite", "overflow", "memory", "multi-line"])
def test_errors_from_deep_inside_are_one_line_user_errors(capsys, monkeypatch, tmp_path, error, fragments):
    import advlab.commands.attack as attack_command

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(attack_command, "atomic_write_bytes", fail)
    code, out, err = run_cli(capsys, [*ATTACK.split(), "--out", str(tmp_path / "run")])
    one_line_error(code, out, err, *fragments)


def test_attack_outputs_are_written_before_a_later_step_fails(capsys, monkeypatch, tmp_path):
    import advlab.commands.attack as attack_command

    def no_grid(*args, **kwargs):
        raise RuntimeError("the figure could not be drawn")

    monkeypatch.setattr(attack_command, "adversarial_grid", no_grid)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, [*ATTACK.split(), "--out", str(out_dir)])
    one_line_error(code, out, err, "the figure could not be drawn")
    assert load_file(str(out_dir / "x_adv.safetensors"))["x_adv"].shape == (5, 1, 28, 28)
    assert json.loads((out_dir / "summary.json").read_text())["n"] == 5
    assert not (out_dir / "grid.png").exists()


def test_transfer_numbers_are_written_before_the_page(capsys, monkeypatch, tmp_path):
    from advlab.evaluation.transfer import TransferMatrix

    def no_page(self, png=None):
        raise RuntimeError("the page could not be rendered")

    monkeypatch.setattr(TransferMatrix, "to_html", no_page)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["transfer", "--models", "lenet-mnist,mlp-mnist", "--n", "5", "--steps", "2",
                                      "--out", str(out_dir)])
    one_line_error(code, out, err, "the page could not be rendered")
    record = json.loads((out_dir / "transfer.json").read_text())
    assert record["sources"] == ["lenet-mnist", "mlp-mnist"] and record["n"] == 5
    assert (out_dir / "transfer.md").exists() and (out_dir / "transfer.png").exists()
    assert not (out_dir / "transfer.html").exists()


def test_train_refuses_a_directory_out_before_training(capsys, tmp_path):
    t = time.perf_counter()
    code, out, err = run_cli(capsys, ["train", "--model", "mlp", "--epochs", "50", "--no-progress",
                                      "--out", str(tmp_path)])
    one_line_error(code, out, err, "--out: expected a file path")
    assert time.perf_counter() - t < 10  # 50 epochs of MNIST were not run first
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# the API catalogue


@pytest.fixture(scope="module")
def lenet():
    return load_model("lenet-mnist")


@pytest.fixture(scope="module")
def batch():
    x, y = load_dataset("mnist", "test")
    return x[:4].clone(), y[:4].clone()


def threat(eps=0.1, norm="linf"):
    return advlab.ThreatModel(norm, eps)


@pytest.mark.parametrize(("kwargs", "fragments"), [
    ({"norm": "linf", "eps": -0.1}, ["eps: expected a number >= 0, got -0.1"]),
    ({"norm": "linf", "eps": float("nan")}, ["eps", "nan"]),
    ({"norm": "l3", "eps": 0.1}, ["norm", "did you mean"]),
    ({"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)}, ["bounds: expected finite lo < hi"]),
    ({"norm": "linf", "eps": 0.1, "bounds": (0.0, float("inf"))}, ["bounds"]),
], ids=["eps-negative", "eps-nan", "norm-unknown", "bounds-reversed", "bounds-infinite"])
def test_threat_model_refuses(kwargs, fragments):
    with pytest.raises(ValueError, match=re.escape(fragments[0])) as e:
        advlab.ThreatModel(**kwargs)
    one_line_message(e, *fragments)


def _bad_inputs(x, y):
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return {
        "x-flat": (x.flatten(), y, ["x: expected a batch"]),
        "x-integer": ((x * 255).long(), y, ["x: expected a floating-point tensor"]),
        "x-out-of-bounds": (x * 2, y, ["x: values must lie in the bounds [0.0, 1.0]"]),
        "x-nan": (nan, y, ["x: contains NaN"]),
        "x-empty": (x[:0], y[:0], ["x: expected a non-empty batch"]),
        "x-not-a-tensor": (x.numpy(), y, ["x: expected a torch.Tensor"]),
        "y-wrong-length": (x, y[:3], ["y: expected shape (4,)"]),
        "y-float": (x, y.float(), ["y: expected integer labels"]),
    }


@pytest.mark.parametrize("case", ["x-flat", "x-integer", "x-out-of-bounds", "x-nan", "x-empty", "x-not-a-tensor",
                                  "y-wrong-length", "y-float"])
def test_attack_refuses_bad_images_and_labels(lenet, batch, case):
    x, y, fragments = _bad_inputs(*batch)[case]
    with pytest.raises((ValueError, TypeError)) as e:
        get_attack("pgd")(lenet, x, y, threat(), steps=2)
    one_line_message(e, *fragments)


@pytest.mark.parametrize(("attack", "eps", "params", "fragments"), [
    ("pgd", float("inf"), {}, ["needs a finite eps"]),
    ("pgd", 0.1, {"stepz": 3}, ["unexpected parameter(s) stepz", "did you mean 'steps'"]),
    ("pgd", 0.1, {"steps": "10"}, ["steps: expected an integer"]),
    ("pgd", 0.1, {"steps": 0}, ["steps: expected an integer >= 1, got 0"]),
    ("pgd", 0.1, {"loss": "hinge"}, ["loss: expected one of 'ce', 'margin', 'dlr'"]),
    ("pgd", 0.1, {"step_size": float("nan")}, ["step_size"]),
], ids=["inf-eps", "unknown-param", "param-type", "param-range", "param-choice", "param-nan"])
def test_attack_refuses_bad_parameters(lenet, batch, attack, eps, params, fragments):
    with pytest.raises((ValueError, TypeError)) as e:
        get_attack(attack)(lenet, *batch, threat(eps), **params)
    one_line_message(e, *fragments)


def test_labels_only_black_box_refused_by_score_based_attack(lenet, batch):
    box = BlackBox(lambda z: lenet(z).argmax(1), output="labels")
    with pytest.raises(ValueError, match="score-based") as e:
        get_attack("square")(box, *batch, threat())
    one_line_message(e, "square is score-based", "labels-only BlackBox")
    assert box.total_queries == 0


def test_black_box_refused_by_white_box_attack(lenet, batch):
    box = BlackBox(lambda z: lenet(z))
    with pytest.raises(TypeError) as e:
        get_attack("pgd")(box, *batch, threat())
    one_line_message(e, "pgd is white-box", "needs a differentiable torch model")
    assert box.total_queries == 0


@pytest.mark.parametrize(("change", "fragments"), [
    ({"hidden": True}, ["arch_kwargs.hidden", "got True"]),
    ({"hidden": "64"}, ["arch_kwargs.hidden"]),
    ({"hidden": -3}, ["arch_kwargs.hidden", "got -3"]),
    ({"hidden": 200_000}, ["has shape (64,)", "expects (200000,)"]),
    ({"num_classes": 10**12}, ["arch_kwargs.num_classes"]),
    ({"in_shape": [1, 8]}, ["cannot take"]),
    ({"in_shape": [1, 8, 10**6]}, ["arch_kwargs.in_shape"]),
    ({"in_shape": "1x8x8"}, ["arch_kwargs.in_shape"]),
    ({"std": 0}, ["arch_kwargs.std", "> 0"]),
    ({"mean": None}, ["arch_kwargs.mean"]),
    ({"colour": {"r": 1}}, ["arch_kwargs.colour"]),
    ({"colour": 1}, ["cannot take", "unexpected keyword argument 'colour'"]),
], ids=["bool", "string", "negative", "huge", "huge-classes", "short-shape", "huge-shape", "shape-string",
        "std-zero", "mean-none", "nested", "unknown"])
def test_checkpoint_arch_kwargs_checked_before_building(tmp_path, digits_ckpt, change, fragments):
    meta = read_metadata(digits_ckpt)
    meta.pop("format")
    path = tmp_path / "edited.safetensors"
    save_checkpoint_raw(path, load_file(str(digits_ckpt)), dict(meta, arch_kwargs={**meta["arch_kwargs"], **change}))
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    one_line_message(e, str(path), *fragments)


@pytest.mark.parametrize(("change", "fragments"), [
    ({"architecture": 3}, ["metadata architecture: expected a string"]),
    ({"architecture": "resnet"}, ["names unknown architecture 'resnet'"]),
    ({"arch_kwargs": [1, 2]}, ["metadata arch_kwargs: expected an object"]),
    ({"bounds": [0, "1"]}, ["metadata bounds"]),
    ({"bounds": [1, 0]}, ["metadata bounds"]),
    ({"dataset": None}, ["metadata dataset: expected a string"]),
    ({"wrapper": 16}, ["metadata wrapper: expected a string"]),
    ({"wrapper": "thermometer:1"}, ["metadata wrapper", "levels"]),
], ids=["arch-type", "arch-unknown", "kwargs-type", "bounds-type", "bounds-order", "dataset-type",
        "wrapper-type", "wrapper-value"])
def test_checkpoint_metadata_types_checked(tmp_path, digits_ckpt, change, fragments):
    meta = read_metadata(digits_ckpt)
    meta.pop("format")
    path = tmp_path / "edited.safetensors"
    save_checkpoint_raw(path, load_file(str(digits_ckpt)), {**meta, **change})
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    one_line_message(e, *fragments)


def test_good_checkpoints_still_load(tmp_path, digits_mlp):
    """The checks refuse what is wrong, not what is right: a checkpoint advlab wrote loads bit for bit."""
    path = tmp_path / "ok.safetensors"
    save_checkpoint(digits_mlp, path, {"architecture": "mlp", "dataset": "digits", "bounds": [0.0, 1.0],
                                       "arch_kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 64,
                                                       "mean": 0.3, "std": 0.4}})
    back = load_model(path)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(back(x), digits_mlp(x))


@pytest.mark.parametrize(("make", "fragments"), [
    (lambda m: wrap_defense(BlackBox(lambda z: m(z)), "bitdepth:3"), ["wraps a torch model", "got BlackBox"]),
    (lambda m: parse_defense(3), ["defense: expected a string NAME[:VALUE]", "got int"]),
    (lambda m: parse_defense("gaussian:inf"), ["sigma must be a finite number > 0, got inf"]),
    (lambda m: GaussianSmoothing(float("nan")), ["sigma must be a finite number > 0, got nan"]),
    (lambda m: wrap_defense(m, "median:57"), ["57×57 window is too large for 28×28 images"]),
    (lambda m: MedianSmoothing(3)(torch.rand(2, 784)), ["median:3: expected images C×H×W", "(784,)"]),
    (lambda m: GaussianSmoothing(2.0)(torch.rand(2, 1, 4, 4)), ["too large for 4×4 images"]),
    (lambda m: wrap_defense(m, "jpeg:96"), ["quality must be in [1, 95], got 96"]),
    (lambda m: wrap_defense(m, "resize:2.5"), ["resize takes a int value"]),
], ids=["black-box", "not-a-string", "gaussian-inf", "gaussian-nan", "median-too-wide", "median-flat-input",
        "gaussian-small-image", "jpeg-quality", "resize-float"])
def test_input_transformations_refuse(lenet, make, fragments):
    with pytest.raises((ValueError, TypeError)) as e:
        make(lenet)
    one_line_message(e, *fragments)


def test_check_input_shape_names_model_shape_and_source(digits_ckpt, batch):
    model = load_model(digits_ckpt)
    with pytest.raises(ValueError, match="expects 1×8×8 inputs") as e:
        check_input_shape(model, batch[0], name="lenet-digits", source="mnist")
    one_line_message(e, "model: lenet-digits expects 1×8×8 inputs (its checkpoint's in_shape), "
                        "got 1×28×28 images from mnist")
    check_input_shape(model, torch.rand(2, 1, 8, 8))  # the right shape passes
    check_input_shape(create_model("mlp"), batch[0])  # no metadata, nothing known: passes


@pytest.mark.parametrize(("call", "fragments"), [
    (lambda: load_dataset("mnist", "val"), ["split: expected one of 'train', 'test', got 'val'"]),
    (lambda: load_dataset("digits", "test", root="/tmp"), ["root: dataset 'digits' takes no data directory"]),
    (lambda: load_dataset("cifar10"), ["dataset: unknown dataset 'cifar10'", "known: mnist, digits"]),
    (lambda: load_dataset("mnist", "test", root="/no/such/dir"), ["does not exist"]),
    (lambda: create_model("resnet"), ["unknown architecture 'resnet'"]),
    (lambda: load_model("lenet-mnst"), ["did you mean 'lenet-mnist'"]),
    (lambda: BlackBox(lambda z: z, output="scores"), ["output: expected one of"]),
], ids=["split", "digits-root", "dataset", "mnist-root", "architecture", "model", "blackbox-output"])
def test_api_names_and_paths(call, fragments):
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        call()
    one_line_message(e, *fragments)


def test_out_path_checks_write_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="expected a directory") as e:
        check_out_dir("--out", tmp_path / "f")
    one_line_message(e, "--out: expected a directory", "which is a file")
    with pytest.raises(ValueError, match="expected a file path") as e:
        check_out_file("--out", tmp_path)
    one_line_message(e, "--out: expected a file path", "is a directory")
    with pytest.raises(ValueError, match="not a directory") as e:
        check_out_file("--out", tmp_path / "f" / "m.safetensors")
    one_line_message(e, "is a file, not a directory")
    assert check_out_dir("--out", tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_out_file("--out", tmp_path / "new" / "m.safetensors").name == "m.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # probing created nothing that stays


# --------------------------------------------------------------------------------------------
# the cases the issue names that live in the attack contract and the evaluation engine (their
# deeper tests: tests/test_untouched.py, tests/test_store.py, tests/test_attacks_contract.py)


def _api_one_line(fn, *fragments: str) -> str:
    with pytest.raises((ValueError, TypeError)) as e:
        fn()
    message = str(e.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_labels_beyond_the_models_classes_are_refused(digits_mlp, digits):
    x, y = digits[2][:4], digits[3][:4].clone()
    y[1] = 12
    _api_one_line(lambda: get_attack("pgd")(digits_mlp, x, y, advlab.ThreatModel("linf", 0.1)),
                  "y: labels must be in [0, 10)")


def test_a_target_equal_to_the_true_label_is_refused(digits_mlp, digits):
    x, y = digits[2][:4], digits[3][:4]
    _api_one_line(lambda: get_attack("pgd")(digits_mlp, x, y, advlab.ThreatModel("linf", 0.1, targeted=True),
                                            target=y.clone()), "target:", "equal the true label")


class _NaNNet(torch.nn.Module):
    def forward(self, x):
        return torch.full((len(x), 10), float("nan")) + 0 * x.flatten(1)[:, :1]


def test_a_model_that_outputs_nan_gets_no_accuracy(digits):
    x, y = digits[2][:20], digits[3][:20]
    _api_one_line(lambda: advlab.evaluate(_NaNNet().eval(), (x, y), ["fgsm"], [0.1], checks=False, progress=False),
                  "model:", "non-finite")


def test_a_model_in_training_mode_is_not_changed_by_an_attack(digits):
    from advlab.attacks import ModelInTrainingMode

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                              torch.nn.Dropout(0.5), torch.nn.Linear(32, 10)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(ModelInTrainingMode, match="training mode: attacking an eval-mode copy"):
        get_attack("pgd")(net, digits[2][:16], digits[3][:16], advlab.ThreatModel("linf", 0.1), steps=3)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and net.training


@pytest.mark.parametrize(("toml", "fragment"), [
    ("eps = [true]", "eps"), ('checks = "no"', "checks"), ("n = 1.5", "n"), ("threads = 0", "threads"),
])
def test_toml_values_have_strict_types(capsys, files, toml, fragment):
    config = files["tmp"] / "eval.toml"
    config.write_text(toml + "\n")
    before = snapshot(files["tmp"])
    code, out, err = run_cli(capsys, ["evaluate", "--model", str(files["digits"]), "--dataset", "digits",
                                      "--config", str(config), "--out", str(files["tmp"] / "run"), "--no-progress"])
    one_line_error(code, out, err, fragment)
    assert snapshot(files["tmp"]) == before


def test_a_repeated_attack_gives_one_row_per_eps(capsys, files):
    out_dir = files["tmp"] / "run"
    code, _, err = run_cli(capsys, ["evaluate", "--model", str(files["digits"]), "--dataset", "digits",
                                    "--attacks", "fgsm,fgsm", "--eps", "0.1", "--n", "20", "--no-checks",
                                    "--no-progress", "--threads", "1", "--out", str(out_dir)])
    assert code == 0, err
    assert [r["attack"] for r in json.loads((out_dir / "results.json").read_text())] == ["fgsm", "worst-case"]


def test_a_corrupt_store_is_one_line_and_kept(capsys, files):
    out_dir = files["tmp"] / "run"
    out_dir.mkdir()
    (out_dir / "results.sqlite").write_bytes(b"this is not a database" * 100)
    before = snapshot(files["tmp"])
    code, out, err = run_cli(capsys, ["evaluate", "--model", str(files["digits"]), "--dataset", "digits",
                                      "--attacks", "fgsm", "--n", "10", "--no-progress", "--out", str(out_dir)])
    one_line_error(code, out, err, "is corrupt", "--force")
    assert snapshot(files["tmp"]) == before
