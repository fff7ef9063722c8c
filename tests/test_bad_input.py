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
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bad_input_helpers import huge_checkpoint, one_line_error, run_cli, snapshot

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
