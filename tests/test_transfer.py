"""Substitute training (label queries counted), transfer attacks, the transfer matrix, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import advlab
from advlab.attacks.substitute import jacobian_augment, seed_set, train_substitute
from advlab.cli import main
from advlab.data import half_indices
from advlab.evaluation.transfer import TransferMatrix, substitute_attack, transfer_matrix
from advlab.models import create_model
from advlab.models.blackbox import BlackBox
from advlab.models.sklearn import load_sklearn_model
from advlab.train import TrainConfig, fit


class CountingLabels:
    """A labels-only numpy predict function counting the rows it is asked about."""

    def __init__(self, model):
        self.model = model
        self.rows = 0

    def __call__(self, batch):
        self.rows += len(batch)
        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).argmax(1).numpy()


@pytest.fixture(scope="module")
def digits_mlp_b(digits):
    """A second digits MLP (other width and seed): a different architecture-and-weights target."""
    xtr, ytr, xte, yte = digits
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=32, mean=0.3, std=0.4)
    fit(model, (xtr, ytr), (xte, yte), TrainConfig(epochs=30, batch_size=64, lr=3e-3, seed=1),
        progress=False)
    return model


def test_half_indices_are_disjoint_halves():
    a, b = half_indices(1000, "a"), half_indices(1000, "b")
    assert len(a) == len(b) == 500
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert sorted(a.tolist() + b.tolist()) == list(range(1000))
    assert torch.equal(a, half_indices(1000, "a"))  # a fixed split
    with pytest.raises(ValueError, match="half: expected one of"):
        half_indices(10, "c")


def test_jacobian_augmentation_steps_lambda_along_the_label_gradient(digits, digits_mlp):
    _, _, xte, yte = digits
    x, y = xte[:50], yte[:50]
    new = jacobian_augment(digits_mlp, x, y, 0.1)
    step = (new - x).abs()
    assert new.min() >= 0
    assert new.max() <= 1
    inside = (x > 0.1) & (x < 0.9)  # where no clipping can happen the step is exactly λ
    assert torch.allclose(step[inside], torch.full_like(step[inside], 0.1), atol=1e-6)
    with torch.no_grad():
        before = digits_mlp(x).gather(1, y[:, None])
        after = digits_mlp(new).gather(1, y[:, None])
    assert (after > before).float().mean() > 0.9  # moves up the label's logit


def test_substitute_label_queries_are_counted(digits, digits_mlp):
    xtr, ytr, xte, _ = digits
    fn = CountingLabels(digits_mlp)
    target = BlackBox(fn, output="labels", input_format="numpy")
    seed = xtr[seed_set(xtr, ytr, 2)]
    res = train_substitute(target, seed, arch="mlp", rounds=3, eval_x=xte,
                           config=TrainConfig(epochs=3, batch_size=16, seed=0))
    assert len(seed) == 20
    assert res.queries == 20 * 2**3 == res.train_size
    assert fn.rows == res.queries + len(xte)  # the rest is the (uncounted) evaluation
    assert [h["size"] for h in res.history] == [20, 40, 80, 160]
    assert [h["queries"] for h in res.history] == [20, 40, 80, 160]
    assert all(0 <= h["agreement"] <= 1 for h in res.history)
    with pytest.raises(ValueError, match="max_queries: 20 seed points and 3 rounds need 160"):
        train_substitute(target, seed, rounds=3, max_queries=100)


def test_substitute_attack_beats_random_noise(digits, digits_mlp):
    xtr, ytr, xte, yte = digits
    target = BlackBox(CountingLabels(digits_mlp), output="labels", input_format="numpy")
    seed = xtr[seed_set(xtr, ytr, 5)]
    res = train_substitute(target, seed, arch="mlp", rounds=3,
                           config=TrainConfig(epochs=20, batch_size=32, lr=3e-3, seed=0))
    assert res.queries == 400
    threat = advlab.ThreatModel("linf", 0.3)
    out = substitute_attack(res.model, target, xte, yte, threat, attack="fgsm")
    assert float(threat.distance(xte, out.x_adv).max()) <= 0.3 + 1e-6
    noise = threat.project(xte, xte + 0.3 * (torch.randint(0, 2, xte.shape,
                           generator=torch.Generator().manual_seed(0)) * 2 - 1))
    with torch.no_grad():
        ok = digits_mlp(xte).argmax(1) == yte
        noise_success = float((digits_mlp(noise).argmax(1)[ok] != yte[ok]).float().mean())
    assert out.success > noise_success + 0.2
    assert out.agreement > 0.6


def test_matrix_over_torch_models_and_a_sklearn_predict_function(digits, digits_mlp,
                                                                 digits_mlp_b):
    _, _, xte, yte = digits
    models = {"mlp-a": digits_mlp, "mlp-b": digits_mlp_b,
              "logreg": load_sklearn_model("sklearn-logreg-digits")}
    mat = transfer_matrix(models, xte, yte, advlab.ThreatModel("linf", 0.3), attack="fgsm")
    assert mat.sources == mat.targets == ["mlp-a", "mlp-b", "logreg"]
    assert mat.success[2] == [None, None, None]  # the sklearn model is a target only
    for i in range(2):
        assert mat.success[i][i] >= 0.9  # white-box on the diagonal
        for v in mat.success[i]:
            assert 0 <= v <= 1
    with torch.no_grad():
        assert mat.clean_acc[0] == pytest.approx(float((digits_mlp(xte).argmax(1) == yte)
                                                       .float().mean()))
    md = mat.to_markdown()
    assert "| `mlp-a` |" in md
    assert "| `logreg` | — | — | — |" in md
    assert TransferMatrix(**json.loads(mat.to_json())) == mat
    png = mat.heatmap_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = mat.to_html(png)
    assert "data:image/png;base64," in page
    assert "http" not in page.replace("https://arxiv", "")  # self-contained
    with pytest.raises(ValueError, match="sources: 'nope'"):
        transfer_matrix(models, xte[:4], yte[:4], advlab.ThreatModel("linf", 0.3),
                        attack="fgsm", sources=["nope"])


def test_cli_transfer_writes_table_json_png_html(tmp_path, capsys):
    out = tmp_path / "t"
    code = main(["transfer", "--models", "lenet-mnist,mlp-mnist", "--attack", "fgsm",
                 "--n", "24", "--out", str(out), "--threads", "2"])
    assert code == 0
    record = json.loads((out / "transfer.json").read_text())
    assert record["sources"] == ["lenet-mnist", "mlp-mnist"]
    assert record["n"] == 24
    assert np.array(record["success"]).shape == (2, 2)
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table>" in (out / "transfer.html").read_text()
    assert "| `lenet-mnist` |" in (out / "transfer.md").read_text()
    assert "transfer success" in capsys.readouterr().out.lower()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "lenet-mnist"], "--models: expected at least two models"),
        (["--models", "lenet-mnist,mlp-mnist", "--attack", "square"], "needs a white-box attack"),
        (["--models", "lenet-mnist,nonexistent-model"], "unknown model 'nonexistent-model'"),
    ],
)
def test_cli_transfer_bad_input_one_line_error(tmp_path, capsys, argv, message):
    assert main(["transfer", *argv, "--n", "4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
