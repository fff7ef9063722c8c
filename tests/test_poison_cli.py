"""``advlab poison`` on the digits set: the report's files and numbers, one-line errors."""

from __future__ import annotations

import json

import pytest

from advlab.cli import main

BASE = ["poison", "--dataset", "digits", "--model", "mlp", "--epochs", "8", "--threads", "1", "--no-progress"]


def test_badnets_with_a_defense_writes_the_report(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*BASE, "--attack", "badnets", "-o", "fraction=0.1", "-o", "target=7", "-o", "removal=0.4",
                 "--defense", "spectral", "--sweep", "0.02,0.1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "clean Acc@1" in text and "ASR" in text and "poisons found (TPR)" in text
    s = json.loads((out / "results.json").read_text())
    assert s["poisons"] == round(0.1 * s["n_train"]) and "command" in s
    assert s["poisoned"]["asr"] > 0.5 > s["clean"]["asr"]
    assert 0.0 <= s["defense"]["tpr"] <= 1.0 and s["defense"]["options"] == {"removal": 0.4}
    assert [r["fraction"] for r in s["sweep"]] == [0.02, 0.1] and s["sweep"][1]["asr"] == s["poisoned"]["asr"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "STRIP AUC" in page
    assert "| clean |" in (out / "report.md").read_text()
    assert (out / "figures" / "examples.png").stat().st_size > 1000


def test_a_robust_defense_reads_the_layer_before_the_penultimate_by_default(tmp_path):
    out = tmp_path / "robust"
    assert main([*BASE, "--attack", "badnets", "-o", "fraction=0.01", "-o", "target=7", "--defense", "spectral-robust",
                 "-o", "trim=0.2", "--out", str(out)]) == 0
    d = json.loads((out / "results.json").read_text())["defense"]
    assert d["name"] == "spectral-robust" and d["depth"] == 2 and d["options"] == {"trim": 0.2}
    assert 0.0 <= d["tpr"] <= 1.0 and 0.0 <= d["asr"] <= 1.0


def test_label_flip_reports_the_accuracy_drop(tmp_path, capsys):
    out = tmp_path / "flip"
    assert main([*BASE, "--attack", "flip-uniform", "-o", "fraction=0.3", "--out", str(out)]) == 0
    s = json.loads((out / "results.json").read_text())
    assert "asr" not in s["poisoned"] and s["poisoned"]["acc1"] < s["clean"]["acc1"] + 0.05
    assert "Δ vs clean" in capsys.readouterr().out


def test_feature_collision_runs(tmp_path):
    out = tmp_path / "fc"
    assert main([*BASE, "--attack", "feature-collision", "-o", "fraction=0.01", "-o", "base_class=3",
                 "-o", "steps=20", "--out", str(out)]) == 0
    s = json.loads((out / "results.json").read_text())
    assert s["target_class"] != 3 and isinstance(s["poisoned"]["success"], bool)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--attack", "badnet", "-o", "fraction=0.1"], "did you mean 'badnets'"),
    (["--attack", "badnets", "-o", "fraction=1.5"], "fraction: expected a number in [0, 1]"),
    (["--attack", "badnets", "-o", "fraction=0.1", "-o", "targt=3"], "did you mean 'target'"),
    (["--attack", "badnets", "-o", "fraction=0.1", "-o", "target=12"], "target: expected a class in [0, 10)"),
    (["--attack", "badnets"], "fraction"),
    (["--attack", "badnets", "-o", "fraction=0.1", "--defense", "spectra"], "did you mean 'spectral'"),
    (["--attack", "badnets", "-o", "fraction=0.1", "--sweep", "0.1,x"], "--sweep"),
    (["--attack", "feature-collision", "-o", "fraction=0.01"], "base_class"),
    (["--attack", "clean-label", "-o", "fraction=0.1"], "clean-label needs -o target=7"),
    (["--attack", "badnets", "-o", "fraction=0.1", "--defense", "spectral-robust", "-o", "trimm=0.1"],
     "did you mean 'trim'"),
    (["--attack", "badnets", "-o", "fraction=0.1", "--defense", "activation-clustering-robus"],
     "did you mean 'activation-clustering-robust'"),
])
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    code = main([*BASE, *argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_your_network_is_poisoned_from_its_factory(tmp_path):
    """ART poisons any classifier: --model FILE.py:FACTORY trains your network clean and poisoned, the same every run."""
    from pathlib import Path

    spec = f"{Path(__file__).resolve().parent / 'factory_models.py'}:make_digits_mlp"
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main([*BASE, "--attack", "badnets", "-o", "fraction=0.1", "--model", spec, "--out", str(out)]) == 0
        runs.append(json.loads((out / "results.json").read_text()))
    a, b = runs
    assert a["setup"]["arch"] == spec and a["poisoned"]["asr"] > 0.5 > a["clean"]["asr"]
    assert all(a[k][m] == b[k][m] for k in ("clean", "poisoned") for m in ("acc1", "asr"))  # (seconds differ)
