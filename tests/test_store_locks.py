"""The results store's locks: one writer per directory, a killed holder does not block the resume.

The rest of the store's contract is tests/test_store.py; helpers are in tests/store_helpers.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from advlab._io import LOCK_NAME, OutputLocked, locked_directory
from advlab.cli import main
from advlab.evaluation import evaluate
from advlab.evaluation.run import Run
from advlab.results.store import STORE_NAME
from store_helpers import batches, digest, one_line, run


@pytest.fixture(scope="module")
def data(digits):
    _, _, x, y = digits
    return x[:60], y[:60]


# ---------------------------------------------------------------------------------------------
# Locks

SLOW = ('n = 360\nbatch_size = 20\ndataset = "digits"\nattacks = ["cw"]\nchecks = false\nthreads = 1\n'
        '[params.cw]\nsteps = {steps}\n')


def wait_for(condition, timeout=120.0, what="condition"):
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def holder_pid(directory):
    path = Path(directory) / LOCK_NAME
    try:
        return int(path.read_text().split("\n")[0])
    except (OSError, ValueError):
        return None


def test_two_evaluations_into_one_directory(tmp_path, digits_ckpt, monkeypatch):
    """While one evaluation writes a directory, every other writer is refused in one line, --force included."""
    out = tmp_path / "run"
    slow, quick = tmp_path / "slow.toml", tmp_path / "quick.toml"
    slow.write_text(SLOW.format(steps=150))
    quick.write_text(SLOW.replace("cw", "fgsm").replace("[params.fgsm]\nsteps = {steps}\n", ""))
    base = ["evaluate", "--model", digits_ckpt, "--out", out, "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "advlab", *map(str, base), "--config", str(slow)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: holder_pid(out) == first.pid or first.poll() is not None, what="the first run's lock")
    os.kill(first.pid, signal.SIGSTOP)  # frozen while holding the lock: the others try while it is mid-run
    others = [subprocess.Popen([sys.executable, "-m", "advlab", *map(str, base), "--config", str(cfg), *force],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for cfg in (slow, quick) for force in ([], ["--force"])]
    errors = [p.communicate(timeout=300)[1] for p in others]
    assert first.poll() is None, "the first run ended before the others tried: make it slower"
    os.kill(first.pid, signal.SIGCONT)
    for p, err in zip(others, errors, strict=True):
        assert p.returncode == 2 and one_line(err), err
        assert f"out: {out} is being written by process {first.pid} (advlab evaluate --model" in err
        assert err.rstrip().endswith("; wait for it or use another directory")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert len(batches(out)) == 18 and not (out / LOCK_NAME).exists()  # complete, and the lock is gone
    # resumable: the same configuration through the API reads every batch back and recomputes none
    records = json.loads((out / "results.json").read_text())
    monkeypatch.setattr(Run, "batch", lambda *a: pytest.fail("a finished batch was recomputed"))
    again = evaluate(str(digits_ckpt), "digits", ["cw"], n=360, batch_size=20, params={"cw": {"steps": 150}},
                     checks=False, out=out, progress=False, model_name=str(digits_ckpt))
    assert again.to_records() == records


def test_a_lock_left_by_a_killed_evaluation_does_not_block_the_resume(tmp_path, digits_ckpt, monkeypatch):
    out, cfg = tmp_path / "run", tmp_path / "slow.toml"
    cfg.write_text(SLOW.format(steps=60))
    argv = ["evaluate", "--model", digits_ckpt, "--out", out, "--no-progress", "--config", cfg]
    first = subprocess.Popen([sys.executable, "-m", "advlab", *map(str, argv)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_for(lambda: holder_pid(out) == first.pid and len(batches(out)) >= 2, what="two stored batches")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert holder_pid(out) == first.pid  # the lock file outlived its holder; the kernel released the lock
    done = batches(out)
    assert 2 <= len(done) < 18
    real, ran = Run.batch, []

    def counting(self, *args):
        ran.append(args[2])
        real(self, *args)

    monkeypatch.setattr(Run, "batch", counting)  # the resume, through the API with the same configuration
    evaluate(str(digits_ckpt), "digits", ["cw"], n=360, batch_size=20, params={"cw": {"steps": 60}}, checks=False,
             out=out, progress=False, model_name=str(digits_ckpt))
    after = batches(out)
    assert len(after) == 18 and set(done) <= set(after)  # finished batches kept, with their stored times
    assert sorted(ran) == sorted(set(range(18)) - {b for _, b, _ in done})  # only the rest was computed


HOLDER = ("import sys\nfrom pathlib import Path\nfrom advlab._io import locked_file\n"
          "with locked_file(Path(sys.argv[1]), sys.argv[2], arg='out', command='advlab evaluate --out x'):\n"
          "    print('locked', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def hold():
    """Start a process holding a lock file; yields a function (lock_file, subject) -> process."""
    procs = []

    def start(lock_file, subject):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file), str(subject)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "locked"
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_held_directory_refuses_every_writer_and_force_deletes_nothing(tmp_path, digits_mlp, data, hold, capsys,
                                                                          monkeypatch):
    out = tmp_path / "run"
    first = run(digits_mlp, data, out)
    holder = hold(out / LOCK_NAME, out)
    before = digest(out / STORE_NAME)
    expected = f"out: {out} is being written by process {holder.pid} (advlab evaluate --out x); wait for it"
    for kw in ({}, {"force": True}, {"attacks": ["pgd"], "force": True}):
        with pytest.raises(OutputLocked) as e:
            run(digits_mlp, data, out, **kw)
        assert str(e.value).startswith(expected) and one_line(str(e.value))
    assert digest(out / STORE_NAME) == before  # --force deleted nothing
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"dir: {out} is being written by process {holder.pid}" in err
    holder.kill()  # killed: its lock file stays, the kernel's lock does not
    holder.wait()
    assert (out / LOCK_NAME).exists()
    calls = []
    monkeypatch.setattr(Run, "batch", lambda *a: calls.append(a))
    resumed = run(digits_mlp, data, out)
    assert calls == [] and resumed.to_records() == first.to_records()
    assert not (out / LOCK_NAME).exists()


def test_train_refuses_a_checkpoint_being_written(tmp_path, hold, capsys):
    ckpt = tmp_path / "models" / "m.safetensors"
    ckpt.parent.mkdir()
    holder = hold(ckpt.parent / ".m.safetensors.lock", ckpt)
    argv = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--threads", "1", "--no-progress",
            "--out", str(ckpt)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"out: {ckpt} is being written by process {holder.pid}" in err
    assert not ckpt.exists()
    holder.stdin.close()
    holder.wait()
    assert main(argv) == 0 and ckpt.exists()
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["m.safetensors"]  # no lock file left


def test_a_lock_nests_in_its_thread_and_refuses_other_threads(tmp_path):
    refused = []

    def other():
        try:
            with locked_directory(tmp_path, arg="out", command="other"):
                pass
        except OutputLocked as e:
            refused.append(str(e))

    with locked_directory(tmp_path, arg="out", command="advlab evaluate"):
        with locked_directory(tmp_path, arg="out", command="nested"):  # the report inside an evaluation
            assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\nadvlab evaluate\n"
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert (tmp_path / LOCK_NAME).exists()
    assert refused == [f"out: {tmp_path} is being written by process {os.getpid()} (advlab evaluate); wait for it "
                       "or use another directory"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_output_that_is_a_file_is_one_line(tmp_path, digits_mlp, data):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"^out: expected a directory, got .*/f, which is a file") as e:
        run(digits_mlp, data, tmp_path / "f")
    assert one_line(str(e.value)) and (tmp_path / "f").read_text() == "x"
