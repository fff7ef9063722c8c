"""The results store keeps its word: content fingerprints, locks, corrupt stores, validation before writing.

Each test asserts what a user relies on: a one-line error (no traceback) where the run must not
go on, and that nothing was lost or overwritten — the store's bytes, its finished batches, the
stored times of batches a resume did not repeat.
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from advlab._io import LOCK_NAME
from advlab.cli import build_parser, main
from advlab.commands import evaluate as evaluate_command
from advlab.data import load_dataset, write_idx
from advlab.evaluation import CONTRACT_KEYS, ConfigMismatchError, evaluate
from advlab.evaluation.run import Run
from advlab.models import tensor_digest
from advlab.models.blackbox import BlackBox
from advlab.results.store import STORE_NAME, Store, StoreCorrupt
from store_helpers import cli, digest, one_line, run, train_tiny, without_seconds


@pytest.fixture(scope="module")
def data(digits):
    _, _, x, y = digits
    return x[:60], y[:60]


# ---------------------------------------------------------------------------------------------
# Content fingerprints


def test_retrained_weights_behind_the_same_path_are_refused(tmp_path, digits):
    ckpt, out = tmp_path / "m.safetensors", tmp_path / "run"
    old = train_tiny(digits, ckpt, seed=0)
    first = evaluate(str(ckpt), "digits", ["fgsm"], [0.1], n=60, batch_size=20, out=out, progress=False, checks=False)
    assert first.config["model_fingerprint"]["weights"] == old
    new = train_tiny(digits, ckpt, seed=1)  # retrained to the same path
    assert new != old
    before = digest(out / STORE_NAME)
    with pytest.raises(ConfigMismatchError) as e:
        evaluate(str(ckpt), "digits", ["fgsm"], [0.1], n=60, batch_size=20, out=out, progress=False, checks=False)
    assert str(e.value) == (f"out: {out} holds results of another model (weights digest {old[:8]}… → {new[:8]}…); "
                            "use another directory or --force to replace them")
    assert digest(out / STORE_NAME) == before  # nothing overwritten
    forced = evaluate(str(ckpt), "digits", ["fgsm"], [0.1], n=60, batch_size=20, out=out, progress=False,
                      checks=False, force=True)
    fresh = evaluate(str(ckpt), "digits", ["fgsm"], [0.1], n=60, batch_size=20, progress=False, checks=False)
    assert forced.config["model_fingerprint"]["weights"] == new
    assert without_seconds(forced.to_records()) == without_seconds(fresh.to_records())


def mnist_dir(path, start):
    """An IDX data directory holding MNIST test images start..start+59 and their labels."""
    x, y = load_dataset("mnist", "test")
    images = np.rint(x[start:start + 60, 0].numpy() * 255).astype(np.uint8)
    path.mkdir()
    write_idx(path / "t10k-images-idx3-ubyte", images)
    write_idx(path / "t10k-labels-idx1-ubyte", y[start:start + 60].numpy().astype(np.uint8))
    return path


def test_other_data_is_refused_and_a_moved_copy_is_not(tmp_path, monkeypatch):
    a, b, out = mnist_dir(tmp_path / "a", 0), mnist_dir(tmp_path / "b", 60), tmp_path / "run"
    moved = tmp_path / "moved"
    a.rename(moved)
    mnist_dir(a, 0)  # a and moved hold the same bytes
    kw = {"n": 60, "batch_size": 20, "checks": False, "out": out, "progress": False, "model_name": "lenet-mnist"}
    first = evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], data_dir=str(a), **kw)
    stored = first.config["data_fingerprint"]
    store = digest(out / STORE_NAME)
    proc = cli("evaluate", "--model", "lenet-mnist", "--attacks", "fgsm", "--eps", "0.1", "--n", "60", "--batch-size",
               "20", "--no-checks", "--no-progress", "--threads", "1", "--out", out, "--data-dir", b)
    assert proc.returncode == 2 and one_line(proc.stderr)
    assert re.search(rf"out: {re.escape(str(out))} holds results of other data \(data digest "
                     rf"{stored['digest'][:8]}… → [0-9a-f]{{8}}…, data_dir '{re.escape(str(a))}' → "
                     rf"'{re.escape(str(b))}'\); use another directory or --force", proc.stderr), proc.stderr
    assert digest(out / STORE_NAME) == store and not (out / "results.json").exists()
    # the same bytes from another directory are the same data: resumed, nothing recomputed
    monkeypatch.setattr(Run, "batch", lambda *a: pytest.fail("a finished batch was recomputed"))
    again = evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], data_dir=str(moved), **kw)
    assert again.to_records() == first.to_records() and again.config["data_fingerprint"]["data_dir"] == str(moved)


def test_an_in_memory_model_tensors_and_a_black_box_are_fingerprinted(tmp_path, digits_mlp, data):
    ev = run(digits_mlp, data, tmp_path / "a")
    assert ev.config["model_fingerprint"] == {"class": "advlab.models.nets.MLP", "weights": tensor_digest(digits_mlp)}
    assert all(tuple(r) == CONTRACT_KEYS for r in ev.to_records())  # fingerprints never enter the rows
    other = copy.deepcopy(digits_mlp)
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1e-3
    with pytest.raises(ConfigMismatchError, match=r"holds results of another model \(weights digest") as e:
        run(other, data, tmp_path / "a")
    assert one_line(str(e.value))
    x, y = data
    x2 = x.clone()
    x2[0, 0, 0, 0] = 1.0 - x2[0, 0, 0, 0]
    with pytest.raises(ConfigMismatchError, match=r"holds results of other data \(data digest \w{8}… → \w{8}…\);"):
        run(digits_mlp, (x2, y), tmp_path / "a")

    def predict(batch):
        with torch.no_grad():
            return digits_mlp(batch)

    run(BlackBox(predict, name="api", meta={"version": 1}), data, tmp_path / "b", attacks=["noise"])
    with pytest.raises(ConfigMismatchError, match=r"another model \(meta digest \w{8}… → \w{8}…\)"):
        run(BlackBox(predict, name="api", meta={"version": 2}), data, tmp_path / "b", attacks=["noise"])


def test_force_removes_the_outputs_of_the_store_it_replaces(tmp_path, digits_ckpt, monkeypatch):
    """An interrupted --force run leaves no results.json of the previous model beside its new store."""
    out = tmp_path / "run"
    argv = ["evaluate", "--model", str(digits_ckpt), "--dataset", "digits", "--attacks", "fgsm", "--eps", "0.1",
            "--n", "40", "--threads", "1", "--no-checks", "--no-progress", "--out", str(out)]
    assert main(argv) == 0 and (out / "results.json").exists() and (out / "report.html").exists()

    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "batch", interrupted)
    assert main([*argv[:6], "noise", *argv[7:], "--force"]) == 130
    assert not any((out / name).exists() for name in ("results.json", "results.csv", "config.json", "report.html"))
    monkeypatch.undo()
    assert main([*argv[:6], "noise", *argv[7:]]) == 0  # the resume of the new configuration
    assert [r["attack"] for r in json.loads((out / "results.json").read_text())] == ["noise", "worst-case"]


def test_a_new_store_removes_nothing_already_in_the_directory(tmp_path, digits_mlp, data):
    (tmp_path / "report.md").write_text("my own notes")
    run(digits_mlp, data, tmp_path)
    assert (tmp_path / "report.md").read_text() == "my own notes"


def test_a_store_written_before_fingerprints_is_refused_not_trusted(tmp_path, digits_mlp, data):
    out = tmp_path / "run"
    run(digits_mlp, data, out)
    store = Store(out / STORE_NAME)
    store.set_config({k: v for k, v in store.get_config().items() if not k.endswith("_fingerprint")})
    store.close()
    with pytest.raises(ConfigMismatchError) as e:
        run(digits_mlp, data, out)
    assert str(e.value) == (f"out: {out} holds results of a run without model and data fingerprints (an older "
                            "advlab; what it evaluated cannot be checked); use another directory or --force to "
                            "replace them")


# ---------------------------------------------------------------------------------------------
# Corrupt stores


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: p.write_bytes(b"these are not the results you are looking for\n" * 50), "file is not a database"),
    (truncated, "database disk image is malformed"),
])
def test_a_corrupt_store_is_reported_and_replaced_with_force(tmp_path, digits_mlp, data, capsys, damage, reason):
    out = tmp_path / "run"
    good = run(digits_mlp, data, out, attacks=["fgsm", "noise"], eps=[0.1, 0.2, 0.3], batch_size=5)
    damage(out / STORE_NAME)
    for suffix in ("-wal", "-shm"):
        assert not (out / (STORE_NAME + suffix)).exists()
    before = digest(out / STORE_NAME)
    with pytest.raises(StoreCorrupt) as e:
        run(digits_mlp, data, out, attacks=["fgsm", "noise"], eps=[0.1, 0.2, 0.3], batch_size=5)
    assert str(e.value) == f"out: {out / STORE_NAME} is corrupt ({reason}); use --force to replace it"
    assert digest(out / STORE_NAME) == before
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"store: {out / STORE_NAME} is corrupt ({reason})" in err
    replaced = run(digits_mlp, data, out, attacks=["fgsm", "noise"], eps=[0.1, 0.2, 0.3], batch_size=5, force=True)
    assert without_seconds(replaced.to_records()) == without_seconds(good.to_records())
    Store(out / STORE_NAME).close()  # a sound store again


# ---------------------------------------------------------------------------------------------
# Everything is validated before anything is written


def config_of(tmp_path, toml, *flags):
    path = tmp_path / "eval.toml"
    path.write_text(toml)
    return evaluate_command.effective_config(build_parser().parse_args(["evaluate", "--config", str(path), *flags]))


@pytest.mark.parametrize(("toml", "flags", "match"), [
    ("eps = [true]\n", [], r": eps: expected budgets .*, got \[True\]"),
    ("eps = [0.1, false]\n", [], r": eps: expected budgets"),
    ('eps = "0.1,x"\n', [], r"--eps: expected a number or a fraction like 8/255, got 'x'"),
    ('eps = "8/0"\n', [], r"--eps: expected a number or a fraction like 8/255, got '8/0'"),
    ("", ["--eps", "-0.1"], r"^--eps: expected a number >= 0, got -0.1$"),
    ('checks = "no"\n', [], r": checks: expected true or false, got 'no'"),
    ("checks = 0\n", [], r": checks: expected true or false, got 0"),
    ("n = 0\n", [], r": n: expected an integer >= 1, got 0"),
    ("n = 1.5\n", [], r": n: expected an integer >= 1, got 1.5"),
    ("batch_size = true\n", [], r": batch_size: expected an integer >= 1, got True"),
    ("seed = -1\n", [], r": seed: expected an integer >= 0, got -1"),
    ("threads = 0\n", [], r": threads: expected an integer >= 1, got 0"),
    ("attacks = [1]\n", [], r": attacks: expected attack names"),
    ("params = {pgd = 3}\n", [], r": params: expected a table of attack name = \{parameter = value\}"),
    ("model = 3\n", [], r": model: expected a string, got 3"),
    ("", ["--threads", "0"], r"^--threads: expected an integer >= 1, got 0$"),
    ("", ["--seed", "-1"], r"^--seed: expected an integer >= 0, got -1$"),
    ("", ["--batch-size", "0"], r"^--batch-size: expected an integer >= 1, got 0$"),
])
def test_toml_values_and_flags_have_strict_types(tmp_path, toml, flags, match):
    with pytest.raises(ValueError, match=match) as e:
        config_of(tmp_path, toml, *flags)
    assert one_line(str(e.value))
    if toml:
        assert str(e.value).startswith(f"--config {tmp_path / 'eval.toml'}: ") or "--eps" in str(e.value)


def test_toml_values_of_the_right_type_still_work(tmp_path):
    cfg = config_of(tmp_path, 'eps = [0.1, 1]\nattacks = "fgsm, pgd"\nchecks = false\nn = 5\n')
    assert cfg["eps"] == [0.1, 1.0] and cfg["attacks"] == ["fgsm", "pgd"] and cfg["checks"] is False
    assert config_of(tmp_path, "eps = 0.3\n")["eps"] == [0.3]
    assert config_of(tmp_path, 'eps = "0.1,0.3"\n', "--eps", "0.2")["eps"] == [0.2]  # the flag overrides


def test_a_bad_toml_value_fails_before_anything_is_written(tmp_path, digits_ckpt, capsys):
    out = tmp_path / "run"
    (tmp_path / "bad.toml").write_text('dataset = "digits"\nchecks = "no"\n')
    argv = ["evaluate", "--model", str(digits_ckpt), "--config", str(tmp_path / "bad.toml"), "--attacks", "fgsm",
            "--eps", "0.1", "--n", "40", "--threads", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "checks: expected true or false, got 'no'" in err and not out.exists()
    (tmp_path / "bad.toml").write_text('dataset = "digits"\nchecks = false\n')
    assert main(argv) == 0


def test_duplicate_attacks_run_once(tmp_path, digits_ckpt, digits_mlp, data):
    ev = run(digits_mlp, data, None, attacks=["fgsm", "noise", "fgsm"], eps=[0.1, 0.2])
    assert ev.config["attacks"] == ["fgsm", "noise"]
    assert [(r.attack, r.eps) for r in ev.rows] == [("fgsm", 0.1), ("fgsm", 0.2), ("noise", 0.1), ("noise", 0.2),
                                                    ("worst-case", 0.1), ("worst-case", 0.2)]
    out = tmp_path / "cli"
    assert main(["evaluate", "--model", str(digits_ckpt), "--dataset", "digits", "--attacks", "fgsm,fgsm",
                 "--eps", "0.1", "--n", "40", "--threads", "1", "--no-checks", "--no-progress", "--out",
                 str(out)]) == 0
    assert [r["attack"] for r in json.loads((out / "results.json").read_text())] == ["fgsm", "worst-case"]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"params": {"fgsm": {"epz": 1}}}, TypeError, r"fgsm: unexpected parameter\(s\) epz"),
    ({"attacks": ["pgd"], "params": {"pgd": {"steps": 0}}}, ValueError, r"steps"),
    ({"params": {"pgd-adaptive": {"eot_samples": -1}}, "checks": True}, ValueError, r"eot_samples"),
    ({"eps": [True]}, TypeError, r"eps: expected numbers, got True \(bool\)"),
    ({"attacks": 5}, TypeError, r"attacks: expected attack names, got int"),
    ({"seed": -1}, ValueError, r"seed: expected an integer >= 0, got -1"),
    ({"checks": "no"}, TypeError, r"checks: expected True or False, got 'no'"),
    ({"bounds": (0.0, 0.5)}, ValueError, r"data: values must lie in the bounds \[0.0, 0.5\]"),
])
def test_a_bad_argument_fails_before_anything_is_written(tmp_path, digits_mlp, data, kwargs, error, match):
    out = tmp_path / "run"
    with pytest.raises(error, match=match) as e:
        run(digits_mlp, data, out, **kwargs)
    assert one_line(str(e.value)) and not out.exists()


def test_a_model_of_another_dataset_or_too_few_classes_fails_before_anything_is_written(tmp_path, digits_ckpt, data):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^model: expected a model of digits, got one trained on mnist$"):
        evaluate("lenet-mnist", "digits", ["fgsm"], [0.1], n=20, out=out, progress=False)
    with pytest.raises(ValueError, match=r"^model: expected a model of mnist, got one trained on digits$"):
        evaluate("sklearn-logreg-digits", "mnist", ["noise"], [0.1], n=20, out=out, progress=False)
    x, y = data
    with pytest.raises(ValueError, match=r"^data: labels must be in \[0, 10\), got range \[0, 10\]$"):
        evaluate(str(digits_ckpt), (x, torch.where(y == 9, 10, y)), ["fgsm"], [0.1], out=out, progress=False)
    assert not out.exists()


def test_a_run_that_failed_before_its_first_batch_does_not_refuse_the_corrected_command(tmp_path, digits_mlp, data,
                                                                                          monkeypatch):
    out = tmp_path / "run"

    def broken(self, *args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Run, "batch", broken)
    with pytest.raises(RuntimeError):
        run(digits_mlp, data, out, attacks=["pgd"], params={"pgd": {"steps": 10**6}})
    monkeypatch.undo()
    ev = run(digits_mlp, data, out, attacks=["pgd"], params={"pgd": {"steps": 10}})  # corrected: accepted
    assert ev.config["params"] == {"pgd": {"steps": 10}} and [r.attack for r in ev.rows] == ["pgd", "worst-case"]


def test_results_are_saved_before_the_report_is_rendered(tmp_path, digits_ckpt, monkeypatch, capsys):
    out = tmp_path / "run"

    def failing(directory):
        raise RuntimeError("the report failed")

    monkeypatch.setattr(evaluate_command, "render_report", failing)
    code = main(["evaluate", "--model", str(digits_ckpt), "--dataset", "digits", "--attacks", "fgsm", "--eps", "0.1",
                 "--n", "40", "--threads", "1", "--no-checks", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "the report failed" in err and err.count("\n") == 1  # one line, no traceback
    assert [r["attack"] for r in json.loads((out / "results.json").read_text())] == ["fgsm", "worst-case"]
    assert (out / "results.csv").exists() and not (out / LOCK_NAME).exists()
    saved = json.loads((out / "config.json").read_text())["evaluation"]
    assert saved["model_fingerprint"]["class"] == "advlab.models.nets.MLP" and saved["data_fingerprint"]["digest"]


def test_budgets_are_numbers_or_fractions_as_torchattacks_users_write_them(tmp_path):
    cfg = config_of(tmp_path, "", "--eps", "8/255, 0.1,16/255")
    assert cfg["eps"] == [8 / 255, 0.1, 16 / 255]
    assert config_of(tmp_path, 'eps = "4/255"\n')["eps"] == [4 / 255]


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_a_fraction_is_its_quotient(num, den):
    from advlab._checks import parse_budget

    assert parse_budget("--eps", f"{num}/{den}") == num / den
    assert parse_budget("--eps", repr(num / den)) == num / den
