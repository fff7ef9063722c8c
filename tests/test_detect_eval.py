"""The reject option of ``advlab evaluate --detector`` (issue 16 item 2), with the interface's test-double detector."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.attacks import get_attack
from advlab.cli import main
from advlab.data import load_dataset
from advlab.detect import load_detector, make_detector, save_detector
from advlab.detect.base import DETECTORS, register_detector
from advlab.evaluation import evaluate
from advlab.evaluation.detection import DETECTOR_FILE, fit_split
from advlab.metrics import roc_auc, threshold_at_fpr
from advlab.models.blackbox import BlackBox
from advlab.report import render_report
from advlab.results import shards
from advlab.results.aggregate import compute_rows
from advlab.results.store import CLEAN_JOB, Store
from advlab.threat import ThreatModel
from test_detect_base import _Distance

COLS = ("adv", "top1", "top5", "pred", "conf", "l0", "l1", "l2", "linf", "queries")


@pytest.fixture(autouse=True)
def _registered():
    register_detector(_Distance)
    yield
    DETECTORS.pop("test-distance", None)


def run(model, out, **kw):
    kw = {"attacks": ["fgsm"], "eps": [0.1, 0.3], "n": 60, "batch_size": 30, "progress": False, "checks": False,
          "detector": "test-distance", **kw}
    return evaluate(model, kw.pop("data", "digits"), kw.pop("attacks"), kw.pop("eps"), out=out, **kw)


def _outcome(**given):
    n = len(next(iter(given.values())))
    return {**{c: [0] * n for c in COLS}, **given}


def test_columns_by_hand_on_a_store(tmp_path):
    # 4 examples; fgsm at 0.1 and deepfool (minimal, scored at 0.1); clean: example 3 misclassified
    config = {"dataset": "d", "model": "m", "seed": 0, "attacks": ["fgsm", "deepfool"], "norm": "linf",
              "eps": [0.1], "detector": {"spec": "x"}}
    store = Store(tmp_path / "s.sqlite")
    store.set_config(config)
    t = torch.tensor
    store.put_clean(t([0, 1, 2, 3]), t([1, 1, 1, 0]), t([1, 1, 1, 1]), t([0, 1, 2, 0]), t([0.9] * 4))
    store.put_detect(CLEAN_JOB, [0, 1, 2, 3], [0.1, 0.6, 0.3, 0.9], [0, 1, 0, 1])
    store.put_batch("fgsm|linf|0.1", 0, 1.0, [0, 1, 2, 3], _outcome(
        adv=[1, 1, 0, 1], top1=[0, 0, 1, 0], linf=[0.1] * 4, det_score=[0.8, 0.15, 0.5, 0.95],
        det_rejected=[1, 0, 1, 1]), [])
    store.put_batch("deepfool|linf|inf", 0, 1.0, [0, 1, 2, 3], _outcome(
        adv=[1, 1, 1, 0], top1=[0, 0, 0, 0], linf=[0.05, 0.2, 0.05, 0.0], det_score=[0.7, 0.95, 0.05, 0.2],
        det_rejected=[1, 1, 0, 0]), [])
    rows = {r.attack: r for r in compute_rows(store, config)}
    # clean: rejected [0,1,0,1], correct [1,1,1,0] → accepted and correct: examples 0 and 2
    assert (rows["clean"].clean_rejected, rows["clean"].defended_acc, rows["clean"].eps) == (0.5, 0.5, 0.0)
    assert rows["clean"].detect_auc is None
    # fgsm fools 0 and 1 (scores 0.8, 0.15 vs clean 0.1 0.6 0.3 0.9: 3 + 1 of 8 pairs); rejects 0 of them;
    # handled = rejected | correct = [1, 0, 1, 1]
    f = rows["fgsm"]
    assert (f.detect_auc, f.detect_tpr, f.clean_rejected, f.defended_acc) == (0.5, 0.5, 0.5, 0.75)
    # deepfool at 0.1: example 1 is farther (0.2): the defender sees its clean image (score 0.6, rejected,
    # correct); fools 0 and 2 (0.7 → 3 pairs, 0.05 → 0): AUC 3/8; handled = [1, 1, 0, 1]
    d = rows["deepfool"]
    assert (d.detect_auc, d.detect_tpr, d.defended_acc) == (0.375, 0.5, 0.75)
    # worst case: handled under both = [1, 0, 0, 1]
    assert rows["worst-case"].defended_acc == 0.5
    assert set(f.as_dict()) >= {"detect_auc", "detect_tpr", "clean_rejected", "defended_acc"}
    store.close()


def test_columns_match_a_recomputation_and_the_threshold_comes_from_training_images(tmp_path, digits_mlp):
    ev = run(digits_mlp, tmp_path)
    xtr, _ = load_dataset("digits", "train")
    x, y = load_dataset("digits", "test")
    x, y = x[:60], y[:60]
    meta = ev.meta["detector"]
    fit_idx, held_idx = fit_split(len(xtr), 0)
    assert meta["fit_idx"] == fit_idx and meta["heldout_idx"] == held_idx and not set(fit_idx) & set(held_idx)
    assert (len(fit_idx), len(held_idx)) == (958, 479)  # min(2000, N − held), min(1000, N // 3) of 1 437
    det = load_detector(tmp_path / DETECTOR_FILE, digits_mlp)
    assert float(det.threshold) == threshold_at_fpr(det.score(xtr[held_idx]), 0.05) == meta["threshold"]
    assert 0.03 <= meta["heldout_rejected"] <= 0.05
    x_all, _ = load_dataset("digits", "test")  # clean images neither fitted nor calibrated on: about 5 %
    assert 0.01 < float(det.reject(x_all).double().mean()) < 0.10
    clean_ok = digits_mlp(x).argmax(1) == y
    clean_rej = det.score(x) > det.threshold
    rows = {(r.attack, r.eps): r for r in ev.rows}
    assert rows[("clean", 0.0)].defended_acc == pytest.approx(float((clean_ok & ~clean_rej).double().mean()))
    for e in (0.1, 0.3):
        x_adv = get_attack("fgsm")(digits_mlp, x, y, ThreatModel("linf", e)).x_adv
        ok, rej, s = digits_mlp(x_adv).argmax(1) == y, det.score(x_adv) > det.threshold, det.score(x_adv)
        fooled = clean_ok & ~ok
        r = rows[("fgsm", e)]
        assert r.detect_auc == pytest.approx(roc_auc(s[fooled], det.score(x)))
        assert r.detect_tpr == pytest.approx(float(rej[fooled].double().mean()))
        assert r.clean_rejected == pytest.approx(float(clean_rej.double().mean()))
        assert r.defended_acc == pytest.approx(float((rej | ok).double().mean()))
    assert "Detector test-distance: fitted on 958 clean training images" in str(ev)
    assert "defended" in str(ev).splitlines()[0]


def test_a_saved_detector_is_reused_on_resume_and_never_refitted_silently(tmp_path, digits_mlp, monkeypatch):
    first = run(digits_mlp, tmp_path).to_records()
    stamp = (tmp_path / DETECTOR_FILE).stat().st_mtime_ns

    def refit(*a, **k):
        raise AssertionError("refitted")

    monkeypatch.setattr(_Distance, "fit", refit)
    again = run(digits_mlp, tmp_path, eps=[0.1, 0.3])  # the same configuration: read back, not refitted
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again.to_records()] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in first]
    assert (tmp_path / DETECTOR_FILE).stat().st_mtime_ns == stamp
    (tmp_path / DETECTOR_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="the detector this run fitted, is missing; restore it, or use --force"):
        run(digits_mlp, tmp_path)
    with pytest.raises(ValueError, match="differs in detector"):  # another detector is another configuration
        run(digits_mlp, tmp_path, detector="test-distance:scale=2.0")
    monkeypatch.undo()
    register_detector(_Distance)
    with pytest.warns(UserWarning, match="starts afresh and fits the detector again"):
        forced = run(digits_mlp, tmp_path, force=True)
    assert (tmp_path / DETECTOR_FILE).is_file() and len(forced.rows) == len(first)


def test_a_detector_file_is_loaded_and_one_for_another_model_refused(tmp_path, digits, digits_mlp):
    xtr, _, xte, _ = digits
    det = make_detector("test-distance").fit(digits_mlp, xtr[:300], xte[:50])
    det.calibrate(xtr[300:600], 0.05)
    save_detector(det, tmp_path / "d.safetensors")
    ev = run(digits_mlp, tmp_path / "a", detector=f"test-distance:{tmp_path / 'd.safetensors'}")
    assert ev.meta["detector"]["threshold"] == float(det.threshold)
    assert not (tmp_path / "a" / DETECTOR_FILE).exists()  # a given file is used where it is
    assert "its own threshold" in str(ev)
    other = copy.deepcopy(digits_mlp)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="fitted to a different classifier") as e:
        run(other, tmp_path / "b", detector=str(tmp_path / "d.safetensors"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("spec", "kw", "error", "match"), [
    ("test-distanse", {}, ValueError, r"unknown detector 'test-distanse' \(did you mean 'test-distance'"),
    ("test-distance:2.0", {}, ValueError, "options are key=value"),
    ("test-distance:size=3", {}, ValueError, "unexpected keyword argument"),
    ("missing.safetensors", {}, FileNotFoundError, "detector: missing.safetensors does not exist"),
    ("test-distance", {"data": "tensors"}, ValueError, "fitting needs the training split of a dataset"),
    (3, {}, TypeError, "detector: expected a spec string or a fitted Detector"),
])
def test_bad_specs_get_one_line_errors(tmp_path, digits, digits_mlp, spec, kw, error, match):
    if kw.get("data") == "tensors":
        kw = {"data": (digits[2][:20], digits[3][:20])}
    with pytest.raises(error, match=match) as e:
        run(digits_mlp, tmp_path, detector=spec, **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "results.sqlite").exists()  # refused before anything is written


def test_a_black_box_is_refused(tmp_path, digits_mlp):
    box = BlackBox(lambda x: digits_mlp(x).softmax(1), name="box", output="probs")
    with pytest.raises(ValueError, match="needs a torch model"):
        run(box, tmp_path, attacks=["noise"])


def test_detector_scores_travel_with_a_shard(tmp_path):
    a, b = Store(tmp_path / "a.sqlite"), Store(tmp_path / "b.sqlite")
    a.put_batch("fgsm|linf|0.1", 1, 0.25, [2, 3], _outcome(adv=[1, 0], det_score=[0.5, 0.25], det_rejected=[1, 0]),
                [(2, np.zeros((1, 2, 2), np.float32), np.ones((1, 2, 2), np.float32))])
    shards.load(b, shards.dump(a))
    got = b.detect("fgsm|linf|0.1")
    assert got["idx"].tolist() == [2, 3] and got["score"].tolist() == [0.5, 0.25]
    assert got["rejected"].tolist() == [True, False]


def test_cli_flag_and_toml_key(tmp_path, digits_ckpt, capsys):
    args = ["evaluate", "--model", str(digits_ckpt), "--dataset", "digits", "--attacks", "fgsm,deepfool",
            "--eps", "0.1,0.3", "--n", "40", "--batch-size", "20", "--no-checks", "--no-progress", "--threads", "1"]
    assert main([*args, "--detector", "test-distance", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "det. AUC" in out and "Detector test-distance" in out
    records = json.loads((tmp_path / "a" / "results.json").read_text())
    assert records[0]["attack"] == "clean" and all("defended_acc" in r for r in records)
    assert (tmp_path / "a" / "results.csv").read_text().splitlines()[0].endswith(
        "detect_auc,detect_tpr,clean_rejected,defended_acc")
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Reject option" in md and "figures/roc_fgsm.png" in md and "figures/roc_deepfool.png" in md
    assert "| detector (reject option) | test-distance, fitted on 958 training images (+ noise and pgd linf" in md
    assert "Reject option" in (tmp_path / "a" / "report.html").read_text()
    render_report(tmp_path / "a")  # from the store alone, again
    cfg = tmp_path / "e.toml"
    cfg.write_text('detector = "test-distance:scale=2.0"\n')
    assert main([*args, "--config", str(cfg), "--out", str(tmp_path / "b")]) == 0
    stored = json.loads((tmp_path / "b" / "config.json").read_text())["evaluation"]["detector"]
    assert stored["spec"] == "test-distance:scale=2.0" and stored["fit_n"] == 958
    capsys.readouterr()
    cfg.write_text("detector = 3\n")
    assert main([*args, "--config", str(cfg), "--out", str(tmp_path / "c")]) != 0
    assert "detector: expected a string, got 3" in capsys.readouterr().err
    assert main([*args, "--detector", "nope", "--out", str(tmp_path / "c")]) != 0
    err = capsys.readouterr().err.strip()
    assert "unknown detector 'nope'" in err and len(err.splitlines()) == 1


SCRIPT = """import sys
sys.path.insert(0, {tests!r})
from test_detect_base import _Distance
from advlab.detect.base import register_detector
from advlab.cli import main
register_detector(_Distance)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_processes_give_the_single_process_detector_columns(tmp_path, digits_ckpt):
    script = tmp_path / "with_double.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    args = ["evaluate", "--model", str(digits_ckpt), "--dataset", "digits", "--attacks", "fgsm,deepfool",
            "--eps", "0.1,0.3", "--n", "60", "--batch-size", "20", "--no-checks", "--no-progress",
            "--detector", "test-distance"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    one = subprocess.run([sys.executable, str(script), *args, "--threads", "1", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), "--", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]

    def rows(d):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((d / "results.json").read_text())]

    assert rows(tmp_path / "two") == rows(tmp_path / "one") and "defended_acc" in rows(tmp_path / "one")[0]


def test_the_joint_attacks_join_the_rows_next_to_the_zero_knowledge_ones(tmp_path, digits_mlp):
    ev = run(digits_mlp, tmp_path, attacks=["pgd", "cw"], eps=[0.3], n=40, params={"cw": {"steps": 20}})
    rows = {(r.attack, r.norm, r.eps): r for r in ev.rows}
    joint, zero = rows[("pgd-joint", "linf", 0.3)], rows[("pgd", "linf", 0.3)]
    assert joint.defended_acc is not None and zero.defended_acc is not None
    assert rows[("pgd-joint-hc", "linf", 0.3)].defended_acc is not None  # the confident-first variant
    assert ("cw-joint", "l2", 1.0) in rows  # the unbounded CW on the joint model, scored on the L2 sweep
    assert ("cw-joint-hc", "l2", 1.0) in rows
    md = (render_report(tmp_path)[0]).read_text()
    assert "## Zero-knowledge vs adaptive" in md
    assert "| pgd-joint | 0.3 (linf) |" in md and "| pgd-joint-hc | 0.3 (linf) |" in md
    seconds = {r.attack: r.seconds for r in ev.rows}
    again = run(digits_mlp, tmp_path, attacks=["pgd", "cw"], eps=[0.3], n=40, params={"cw": {"steps": 20}})
    assert {r.attack: r.seconds for r in again.rows} == seconds  # resumed: nothing re-run
