"""The bad-input catalogue, the cases that live in the attack contract and the evaluation engine.

The CLI catalogue is tests/test_bad_input.py, the API one tests/test_bad_input_api.py; helpers and the
``files`` fixture are in tests/bad_input_helpers.py.
"""

from __future__ import annotations

import json

import pytest
import torch

import advlab
from advlab.attacks import get_attack
from bad_input_helpers import one_line_error, run_cli, snapshot

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
