"""The lab test's counting, and ``advlab physical`` end to end on a tiny setting, with one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.cli import main
from advlab.data.sign_art import SIGN_CLASSES, all_signs
from advlab.lab import LabSetup, LabViews, cell_counts, choose_grid, lab_predictions, run_lab
from advlab.physical import lab_grid, render

HERE = Path(__file__).resolve().parent
RED_BLUE = f"{HERE / 'test_physical_cmd.py'}:red_blue"


class RedBlue(nn.Module):
    """Reads the centre of a 3×48×48 image: red → stop (0), blue → speed-80 (5), else yield (1); 12 outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, :, 18:30, 18:30].mean((2, 3))
        z = torch.zeros(len(x), 12)
        z[:, 0] = 10 * (c[:, 0] - c[:, 1:].max(1).values)
        z[:, 5] = 10 * (c[:, 2] - c[:, :2].max(1).values)
        z[:, 1] = 1.0
        return z


def red_blue() -> nn.Module:
    """The factory the command tests load."""
    return RedBlue().eval()


def blue_sign() -> torch.Tensor:
    s = all_signs()[0].clone()
    s[:3] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    return s


def tiny_views(draws: int = 2, backgrounds: int = 3) -> LabViews:
    grid = choose_grid([40, 16], [0, 45], [0.6, 1.4])
    cond, index = lab_grid(draws, lab=grid)
    bg = torch.rand(backgrounds, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    return LabViews(cond, index, bg, (2, 2, 2), seed=1, batch_size=7)


def test_cell_counts_by_hand():
    views = tiny_views(draws=1, backgrounds=2)  # 8 cells × 1 draw × 2 backgrounds = 16 views, cell = view // 2
    clean = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    adv = torch.tensor([5, 5, 5, 5, 5, 5, 0, 3, 0, 5, 5, 5, 5, 5, 0, 0])
    cells = cell_counts(views, clean, adv, source=0, target=5)
    assert cells.views.flatten().tolist() == [2] * 8
    assert cells.counted.flatten().tolist() == [2, 1, 0, 2, 2, 2, 2, 2]
    assert cells.hits.flatten().tolist() == [2, 1, 0, 0, 1, 2, 2, 0]
    rate = cells.rate.flatten()
    assert math.isnan(rate[2]) and rate[0] == 1.0 and rate[4] == 0.5
    assert cells.average() == pytest.approx((1 + 1 + 0 + 0.5 + 1 + 1 + 0) / 7)
    assert cells.pooled() == pytest.approx(8 / 13)


def test_lab_predictions_match_direct_renders_and_share_the_noise():
    views = tiny_views()
    model = RedBlue().eval()
    stop = all_signs()[0]
    pred = lab_predictions(model, stop, views)
    assert pred.shape == (views.count,)
    assert torch.equal(pred, lab_predictions(model, stop, views))  # the camera noise is seeded
    cond, bg = views.batch(0, 7)
    direct = render(stop[None], bg, cond, generator=torch.Generator().manual_seed(views.seed * 1_000_003))
    assert torch.equal(pred[:7], model(direct).argmax(1))


def test_the_lab_counts_a_blue_sign_read_as_the_target():
    views = tiny_views()
    model = RedBlue().eval()
    clean = lab_predictions(model, all_signs()[0], views)
    adv = lab_predictions(model, blue_sign(), views)
    cells = cell_counts(views, clean, adv, 0, 5)
    assert int(cells.counted.sum()) == int((clean == 0).sum()) > 0
    assert int(cells.hits.sum()) == int(((clean == 0) & (adv == 5)).sum())
    assert cells.pooled() > 0.9  # a blue sign reads as speed-80 nearly everywhere


def test_run_lab_summary_is_consistent():
    bg = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    setup = LabSetup(RedBlue().eval(), SIGN_CLASSES, all_signs(), "stop", "speed-80", bg[:5], bg[5:], draws=1,
                     grid=choose_grid([40], [0, 30], [1.0]))
    out = run_lab(setup, "rp2", {"rp2": {"steps": 2, "samples_per_step": 4, "mask_steps": 1}, "pgd": {"steps": 2}})
    s = out.summary
    assert [a["name"] for a in s["attacks"]] == ["rp2", "pgd"] and s["views_per_cell"] == 3
    for a in s["attacks"]:
        assert len(a["rate"]) == 1 and len(a["rate"][0]) == 2 and len(a["rate"][0][0]) == 1
        assert 0.08 < a["notes"]["share"] <= 0.095
    assert s["attacks"][1]["params"]["mask"] == "the rp2 mask" and len(s["attacks"][0]["history"]) == 1 + 12 + 2  # L1 pass, 12 cuts, rp2
    assert set(out.examples) == {"clean", "rp2", "pgd"} and out.examples["rp2"][0].shape == (1, 2, 1, 3, 48, 48)
    json.dumps(s, allow_nan=False)


def test_the_command_writes_its_report(tmp_path, capsys):
    out = tmp_path / "lab"
    code = main(["physical", "--attack", "rp2", "--model", RED_BLUE, "-o", "steps=2", "-o", "samples_per_step=4",
                 "-o", "mask=bars",
                 "-o", "pgd.steps=2", "--draws", "1", "--backgrounds", "2", "--train-backgrounds", "4",
                 "--widths", "40,16", "--angles", "0", "--lights", "1", "--threads", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "grid average" in text and "rp2" in text and "pgd" in text
    s = json.loads((out / "results.json").read_text())
    assert "command" in s and s["grid"]["widths"] == [40.0, 16.0] and s["model"] == RED_BLUE
    assert [a["params"]["steps"] for a in s["attacks"]] == [2, 2]
    page = (out / "report.html").read_text()
    # the signs, one view grid per sign (clean, rp2, pgd) at the one light, rp2's crafting curve
    assert page.count("data:image/png;base64,") == 5
    assert "Lab table: rp2" in (out / "report.md").read_text()
    assert (out / "figures" / "views-rp2-light0.png").stat().st_size > 1000


def test_an_attack_not_built_is_not_a_choice(capsys):
    with pytest.raises(SystemExit) as e:
        main(["physical", "--attack", "turtle"])
    assert e.value.code == 2
    assert "invalid choice: 'turtle' (choose from 'rp2', 'pgd', 'patch', 'uap', 'print-photo')" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--attack", "rp2", "-o", "stepz=3"], "-o stepz: rp2 has no option 'stepz' (did you mean 'steps'"),
    (["--attack", "rp2", "-o", "steps=0"], "-o steps: expected an integer >= 1"),
    (["--attack", "rp2", "-o", "norm=linf"], "-o norm: expected one of 'l1', 'l2'"),
    (["--attack", "rp2", "-o", "fgsm.steps=3"], "-o fgsm.steps: 'fgsm' is not a baseline of rp2"),
    (["--attack", "pgd", "-o", "region=face"], "-o region: expected one of 'mask', 'sign'"),
    (["--attack", "rp2", "--widths", "40,20"], "--widths: expected values among 40, 32, 24, 16"),
    (["--attack", "rp2", "--lights", "x"], "--lights: expected comma-separated numbers"),
    (["--attack", "rp2", "--target", "speed-90"], "--target: expected one of"),
    (["--attack", "rp2", "--target", "stop"], "--target: must differ from the source class"),
    (["--attack", "rp2", "--draws", "0"], "--draws: expected an integer >= 1"),
    (["--attack", "rp2", "-o", "mask=[[60, 70, 0, 10]]"], "does not lie inside the 64×64 sign"),
    (["--attack", "rp2", "-o", "mask=stripes"], "-o mask: expected"),
    (["--attack", "rp2", "-o", "mask_share=1.5"], "-o mask_share: expected a number in (0, 1]"),
])
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    code = main(["physical", "--model", RED_BLUE, "--draws", "1", "--backgrounds", "1", "--train-backgrounds", "2",
                 "--widths", "40", "--angles", "0", "--lights", "1", "-o", "pgd.steps=1", *argv,
                 "--out", str(tmp_path / "x")] if argv[1] == "rp2" else
                ["physical", "--model", RED_BLUE, "--draws", "1", "--backgrounds", "1", "--train-backgrounds", "2",
                 *argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and err.count("\n") == 1, err


def test_a_model_of_other_classes_is_refused(tmp_path, capsys):
    spec = f"{HERE / 'factory_models.py'}:make_tiny"  # 3×16×16 → 2 classes
    assert main(["physical", "--attack", "pgd", "--model", spec, "--out", str(tmp_path / "x")]) == 2
    assert "--model: expected a classifier of the 12 signs classes" in capsys.readouterr().err


class GainedRedBlue(RedBlue):
    """RedBlue with a parameter, so that a factory's --weights has something to load."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain


def gained_red_blue() -> nn.Module:
    """A factory whose network needs its weights file."""
    return GainedRedBlue().eval()


def test_a_factory_model_takes_its_weights_as_the_other_commands_do(tmp_path, capsys):
    """``advlab physical --model FILE.py:factory --weights W.safetensors``, as attack, evaluate and certify take it."""
    from safetensors.torch import save_file

    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_file({"gain": torch.tensor(1.0)}, good)
    save_file({"other": torch.tensor(1.0)}, bad)
    argv = ["physical", "--attack", "pgd", "--model", f"{HERE / 'test_physical_cmd.py'}:gained_red_blue",
            "-o", "steps=1", "--draws", "1", "--backgrounds", "1", "--train-backgrounds", "2", "--widths", "40",
            "--angles", "0", "--lights", "1", "--threads", "1"]
    assert main([*argv, "--weights", str(good), "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main([*argv, "--weights", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and err.count("\n") == 1, err
