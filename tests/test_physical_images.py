"""``advlab physical --attack patch|uap|print-photo``: the attacks on whole images, end to end on small settings."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.cli import main
from advlab.lab.images import Study, patch_study, print_photo_study, uap_study
from advlab.models import load_model


def _results(path) -> dict:
    out = json.loads((path / "results.json").read_text())
    for table in out["tables"]:
        table["rows"] = [[c for c, h in zip(r, table["head"], strict=True) if h not in ("s", "crafting s")]
                         for r in table["rows"]]
    return out


def test_print_photo_command_writes_the_destruction_table_deterministically(tmp_path, capsys):
    args = ["physical", "--attack", "print-photo", "--model", "lenet-mnist", "--n", "40", "-o", "eps=[0.3]",
            "-o", "draws=1", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert a["tables"] == b["tables"]  # same seed, same tables
    rows = {(r[0], r[1]): r for r in a["tables"][0]["rows"]}
    fgsm, bim = rows[("FGSM", "0.3")], rows[("BIM", "0.3")]
    for r in (fgsm, bim):
        base, destroyed, rate = int(r[4]), int(r[5]), float(r[6])
        assert 0 < base <= 40 and 0 <= destroyed <= base and rate == pytest.approx(destroyed / base, abs=1e-3)
    assert float(bim[2]) <= float(fgsm[2])  # BIM at ε 0.3 fools lenet at least as often as FGSM before the photo
    assert (tmp_path / "a" / "report.html").read_text().count("<img") == 3  # clean, FGSM, BIM example rows
    assert "destroyed more" in capsys.readouterr().out


def test_patch_study_beats_a_grey_disc_and_stays_a_disc_of_its_area():
    model = load_model("signnet-signs")
    from advlab.data import load_dataset

    (xc, yc), (xt, yt) = load_dataset("signs", "train"), load_dataset("signs", "test")
    study = Study(model, [str(k) for k in range(12)], xc[:64], yc[:64], xt[:48], yt[:48], seed=0)
    out = patch_study(study, {"target": 5, "steps": 15, "draws": 1})
    adv, grey = out.tables[0][2]
    assert float(adv[4]) > float(grey[4]) + 0.05  # a crafted patch fools more than covering the image does
    images = out.examples[1][1]
    changed = (images != xt[yt != 5][:8]).any(1).float().mean((1, 2))
    assert (changed <= 0.1 + 0.02).all()  # the patch covers at most its area (plus antialiased rim)


def test_uap_study_reports_pgd_and_noise_next_to_the_universal_perturbation(digits, digits_mlp):
    xtr, ytr, xte, yte = digits
    study = Study(digits_mlp, [str(k) for k in range(10)], xtr[:64], ytr[:64], xte[:64], yte[:64], seed=0)
    out = uap_study(study, {"eps": 0.3, "max_passes": 2})
    uap, noise, per_image = out.tables[0][2]
    assert [r[0] for r in (uap, noise, per_image)] == ["universal (one v)", "random, same norm", "PGD per image"]
    assert float(per_image[3]) >= max(float(uap[3]), float(noise[3]))  # one v per image is the upper bound
    shown = out.examples[1][1]
    assert float((shown - xte[:8]).abs().max()) <= 0.3 + 1e-6  # v stays in the L∞ ball, images in [0, 1]
    assert 0 <= float(shown.min()) and float(shown.max()) <= 1


def test_image_studies_refuse_unknown_options_and_targets(digits, digits_mlp):
    xtr, ytr, xte, yte = digits
    study = Study(digits_mlp, [str(k) for k in range(10)], xtr[:8], ytr[:8], xte[:8], yte[:8])
    with pytest.raises(ValueError, match=r"-o stepz: patch has no option 'stepz' .*did you mean 'steps'"):
        patch_study(study, {"stepz": 3})
    with pytest.raises(ValueError, match="-o target: expected a class name"):
        patch_study(study, {"target": "stop"})
    with pytest.raises(ValueError, match="-o draw"):
        print_photo_study(study, {"draw": 1})
    assert torch.equal(xtr[:8], study.x_craft)  # nothing was changed in place
