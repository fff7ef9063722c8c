import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import advlab
from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.evaluation import CONTRACT_KEYS, ConfigMismatchError, blackbox_attacks, evaluate
from advlab.evaluation.engine import CHECKS_SKIPPED_BLACKBOX
from advlab.models.blackbox import BlackBox
from advlab.report import render_report
from advlab.results import Store
from evaluation_helpers import EPS, check_in_browser, run, without_seconds


@pytest.fixture(scope="module")
def data(digits):
    _, _, x, y = digits
    return x[:60], y[:60]


def test_rows_follow_the_contract(tmp_path, digits_mlp, data):
    ev = run(digits_mlp, data, tmp_path)
    ev.save(tmp_path)
    records = json.loads((tmp_path / "results.json").read_text())
    assert all(tuple(r) == CONTRACT_KEYS for r in records)
    names = [(r["attack"], r["eps"]) for r in records]
    # fixed-budget attacks once per eps, minimal ones scored at every eps, semantic once, worst case per eps
    assert names == [("noise", 0.1), ("noise", 0.3), ("semantic", None), ("fgsm", 0.1), ("fgsm", 0.3),
                     ("pgd", 0.1), ("pgd", 0.3), ("deepfool", 0.1), ("deepfool", 0.3),
                     ("worst-case", 0.1), ("worst-case", 0.3)]
    by = {(r["attack"], r["eps"]): r for r in records}
    assert by[("pgd", 0.3)]["acc1_adv"] <= by[("fgsm", 0.3)]["acc1_adv"] <= by[("noise", 0.3)]["acc1_adv"]
    assert by[("deepfool", 0.1)]["acc1_adv"] >= by[("deepfool", 0.3)]["acc1_adv"]
    for e in EPS:
        worst = by[("worst-case", e)]["acc1_adv"]
        assert worst <= min(by[(a, e)]["acc1_adv"] for a in ("noise", "fgsm", "pgd", "deepfool"))
    assert all(r["median_linf"] is None or r["median_linf"] <= r["eps"] + 1e-6
               for r in records if r["eps"] is not None and r["attack"] != "worst-case")
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(CONTRACT_KEYS) and len(csv_lines) == len(records) + 1
    assert "| pgd |" in ev.to_markdown()


def test_numbers_match_an_independent_recomputation(tmp_path, digits_mlp, data):
    """Recompute every row from the stored adversarial examples with numpy."""
    x, y = data
    ev = run(digits_mlp, data, tmp_path, attacks=["fgsm", "pgd", "deepfool"], examples_per_job=len(y))
    store = Store(tmp_path / "results.sqlite")
    with torch.no_grad():
        clean = digits_mlp(x).numpy()
    yn = y.numpy()
    clean_ok = clean.argmax(1) == yn
    for row in ev.rows:
        if row.attack == "worst-case":
            continue
        key = f"{row.attack}|linf|{(math.inf if row.attack == 'deepfool' else row.eps)!r}"
        ex = store.examples(key)
        assert [i for i, _, _ in ex] == list(range(len(y)))
        xa = np.stack([a for _, _, a in ex])
        assert np.array_equal(np.stack([c for _, c, _ in ex]), x.numpy())
        with torch.no_grad():
            logits = digits_mlp(torch.from_numpy(xa)).numpy()
        d = np.abs(xa - x.numpy()).reshape(len(y), -1).max(1)
        fooled = logits.argmax(1) != yn
        if row.attack == "deepfool":  # minimal: counts at eps only within the budget
            fooled &= d <= row.eps * (1 + 1e-6) + 1e-7
        top1 = np.where(fooled, False, clean_ok) if row.attack == "deepfool" else logits.argmax(1) == yn
        assert row.acc1_adv == pytest.approx(top1.mean())
        top5_adv = (np.argsort(-logits, 1)[:, :5] == yn[:, None]).any(1)
        top5_clean = (np.argsort(-clean, 1)[:, :5] == yn[:, None]).any(1)
        top5 = np.where(fooled, top5_adv, top5_clean) if row.attack == "deepfool" else top5_adv
        assert row.acc5_adv == pytest.approx(top5.mean())
        broken = fooled & clean_ok
        assert row.success_rate == pytest.approx(broken.sum() / clean_ok.sum())
        if broken.any():
            assert row.median_linf == pytest.approx(float(torch.from_numpy(d[broken]).median()), rel=1e-5)
    store.close()


def test_resume_after_a_crash_loses_nothing_and_recomputes_nothing(tmp_path, digits_mlp, data, monkeypatch):
    full = run(digits_mlp, data, tmp_path / "a")
    calls = {"n": 0}
    real = Store.put_batch

    def crashing(self, *a, **kw):
        real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # killed right after the 5th batch was stored

    monkeypatch.setattr(Store, "put_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(digits_mlp, data, tmp_path / "b")
    monkeypatch.setattr(Store, "put_batch", real)
    counted = {"n": 0}

    def counting(self, *a, **kw):
        counted["n"] += not str(a[0]).startswith("check:")  # (the checks' own attacks are stored once, too)
        real(self, *a, **kw)

    monkeypatch.setattr(Store, "put_batch", counting)
    resumed = run(digits_mlp, data, tmp_path / "b")
    jobs = 2 + 1 + 2 + 2 + 1  # noise×2, semantic, fgsm×2, pgd×2, deepfool
    assert counted["n"] == jobs * 3 - 5
    assert without_seconds(resumed.to_records()) == without_seconds(full.to_records())


def test_refuses_a_directory_with_another_configuration(tmp_path, digits_mlp, data):
    run(digits_mlp, data, tmp_path, attacks=["fgsm"])
    with pytest.raises(ConfigMismatchError, match=r"different configuration \(differs in attacks"):
        run(digits_mlp, data, tmp_path, attacks=["pgd"])
    assert Store(tmp_path / "results.sqlite").done_batches("fgsm|linf|0.1") == {0, 1, 2}  # nothing lost
    ev = run(digits_mlp, data, tmp_path, attacks=["pgd"], force=True)
    assert {r.attack for r in ev.rows} == {"pgd", "worst-case"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"attacks": ["pgdd"]}, r"unknown attack 'pgdd' \(did you mean 'pgd'"),
    ({"eps": [1.5]}, r"eps: 1.5 is outside the bounds' range for linf"),
    ({"eps": [-0.1]}, r"eps: expected numbers >= 0"),
])
def test_bad_input_one_line_errors(tmp_path, digits_mlp, data, kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        run(digits_mlp, data, tmp_path, **kwargs)
    assert "\n" not in str(e.value)


def test_cli_evaluate_config_report_and_browser(tmp_path, digits_ckpt):
    ckpt = digits_ckpt
    cfg = tmp_path / "eval.toml"
    cfg.write_text(f'model = "{ckpt}"\ndataset = "digits"\nattacks = ["fgsm", "semantic", "deepfool"]\n'
                   'eps = [0.1, 0.2]\nn = 40\nbatch_size = 20\n')
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "advlab", "evaluate", "--config", str(cfg), "--eps", "0.1,0.3", "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "worst-case" in proc.stdout
    records = json.loads((out / "results.json").read_text())
    assert sorted({r["eps"] for r in records if r["eps"] is not None}) == [0.1, 0.3]  # the flag overrides
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["n"] == 40 and saved["environment"]["torch"] == torch.__version__
    # the report is rendered from the store alone
    for f in ("report.html", "report.md", "results.json"):
        (out / f).unlink()
    shutil.rmtree(out / "figures")
    subprocess.run([sys.executable, "-m", "advlab", "report", str(out)], check=True, capture_output=True)
    page = (out / "report.html").read_text()
    assert page.count("<img") == 2 + 3  # accuracy curves, norm histograms, a triplet per attack
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n")
    proc = subprocess.run([sys.executable, "-m", "advlab", "evaluate", "--config", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown key(s) colour" in proc.stderr and proc.stderr.count("\n") == 1
    check_in_browser(out / "report.html", attacks=3 + 1 + 1 + 2)  # fgsm×2, semantic, deepfool×2, worst×2


def test_python_api_example():
    ev = advlab.evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], n=50, progress=False)
    assert [(r.attack, r.eps, r.n) for r in ev.rows] == [("fgsm", 0.1, 50), ("worst-case", 0.1, 50)]
    assert ev.rows[0].acc1_clean >= 0.98


# ---------------------------------------------------------------------------------------------
# A black box is evaluable


def numpy_predict(model, output="logits"):
    """A numpy predict function over a torch model: what a deployed model's API looks like."""

    def predict(batch):
        with torch.no_grad():
            logits = model(torch.from_numpy(batch))
        return {"logits": logits, "probs": logits.softmax(1), "labels": logits.argmax(1)}[output].numpy()

    return predict


BB_PARAMS = {"square": {"max_queries": 100}, "hopskipjump": {"max_queries": 200}, "sparse-rs": {"max_queries": 100}}


def test_a_blackbox_is_evaluated_with_the_gradient_free_attacks(tmp_path, digits_mlp, data):
    box = BlackBox(numpy_predict(digits_mlp, "probs"), output="probs", input_format="numpy", name="digits-api")
    ev = evaluate(box, data, eps=[0.3], out=tmp_path, batch_size=20, progress=False, params=BB_PARAMS)
    # sparse-rs is L0 only: it runs at its own norm's default sweep (5, 10, 20 elements), in rows of its own
    assert [r.attack for r in ev.rows] == ["noise", "semantic", *["sparse-rs"] * 3, "square", "hopskipjump",
                                           "worst-case"]
    assert ev.config["attacks"] == list(blackbox_attacks()) == ["noise", "semantic", "sparse-rs", "square",
                                                                "hopskipjump"]
    assert ev.rows[0].model == "digits-api"
    assert all(r.acc1_clean == pytest.approx(ev.rows[0].acc1_clean) for r in ev.rows)
    by = {r.attack: r for r in ev.rows}
    assert by["square"].mean_queries is not None and 0 < by["square"].mean_queries <= 100
    assert by["worst-case"].acc1_adv <= min(by[a].acc1_adv for a in ("noise", "square", "hopskipjump"))
    # the checks need gradients: skipped, and recorded as skipped (in the result, the store and the report)
    assert ev.checks == [] and ev.checks_skipped == CHECKS_SKIPPED_BLACKBOX
    assert ev.config["checks"] is False
    store = Store(tmp_path / "results.sqlite")
    assert store.get_meta("checks_skipped") == CHECKS_SKIPPED_BLACKBOX and store.get_meta("checks") is None
    store.close()
    md, page = render_report(tmp_path)
    assert f"Skipped: {CHECKS_SKIPPED_BLACKBOX}." in md.read_text()
    assert "Skipped:" in page.read_text()


def test_a_blackbox_scores_like_the_model_behind_it(tmp_path, digits_mlp, data):
    """Noise and the negative image see only predictions: the black box's rows equal the model's."""
    box = BlackBox(numpy_predict(digits_mlp), input_format="numpy")
    kw = {"attacks": ["noise", "semantic"], "eps": [0.2], "batch_size": 20, "progress": False, "model_name": "m"}
    rows_box = evaluate(box, data, **kw).to_records()
    rows_net = evaluate(digits_mlp, data, **kw, checks=False).to_records()
    assert without_seconds(rows_box) == without_seconds(rows_net)


def test_a_blackbox_refuses_white_box_attacks_before_running(tmp_path, digits_mlp, data):
    box = BlackBox(numpy_predict(digits_mlp), input_format="numpy")
    with pytest.raises(TypeError, match="pgd is white-box and needs a differentiable torch model, got a BlackBox") as e:
        evaluate(box, data, ["noise", "pgd"], [0.1], out=tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_labels_only_blackbox_is_refused(tmp_path, digits_mlp, data):
    box = BlackBox(numpy_predict(digits_mlp, "labels"), output="labels", input_format="numpy")
    with pytest.raises(ValueError, match=r"needs scores .*labels-only BlackBox") as e:
        evaluate(box, data, progress=False, out=tmp_path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Files, aliases, backends


def test_save_writes_atomically_with_normal_permissions(tmp_path, digits_mlp, data):
    ev = run(digits_mlp, data, tmp_path / "store", attacks=["fgsm"], eps=[0.1])
    out = tmp_path / "out"
    ev.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["checks.json", "results.csv", "results.json"]  # no temp files
    mask = os.umask(0)
    os.umask(mask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~mask for p in out.iterdir())
    assert (out / "results.csv").read_bytes().splitlines()[0].decode().split(",") == list(CONTRACT_KEYS)


def test_atomic_write_leaves_the_old_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def crash(*args):
        raise KeyboardInterrupt  # killed between writing the temporary file and renaming it

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(("old", "names"), [
    ("advlab.evaluation.runner", ["evaluate", "Evaluation", "Row", "compute_rows", "plan_jobs", "format_table",
                                  "eps_label", "DEFAULT_PARAMS", "batch_seed", "environment"]),
    ("advlab.evaluation.store", ["Store"]),
    ("advlab.transfer", ["train_substitute", "transfer_matrix", "TransferMatrix", "half_indices", "train_half",
                         "load_any", "HALF_SPLIT_SEED"]),
])
def test_old_module_paths_still_work_and_warn(old, names):
    code = (f"import warnings\nwarnings.simplefilter('always')\nwith warnings.catch_warnings(record=True) as w:\n"
            f"    import {old} as m\nprint(len([x for x in w if issubclass(x.category, DeprecationWarning)]))\n"
            f"print(all(hasattr(m, n) for n in {names!r}), sorted(m.__all__) == sorted(set(m.__all__)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True", "True"]


def test_reports_never_touch_the_matplotlib_backend(tmp_path, digits_mlp, data):
    run(digits_mlp, data, tmp_path, attacks=["fgsm"], eps=[0.1])
    code = ("import sys, matplotlib\nmatplotlib.use('svg')\nfrom advlab.report import render_report\n"
            f"render_report({str(tmp_path)!r})\n"
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["svg", "False"]
