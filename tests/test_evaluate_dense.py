"""``evaluate()`` on segmentation and detection models: the task's metrics, the store, resume, the report."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import advlab
from advlab.evaluation.dense import DenseEvaluation
from advlab.metrics_dense import confusion, miou, pixel_accuracy
from advlab.report import render_report

SIDE = 16


class TinySeg(nn.Module):
    """A seeded per-pixel classifier with a little context: 1×16×16 → 11×16×16 logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 11, 3, padding=1))
        self.advlab_meta = {"task": "segmentation"}
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyDet(nn.Module):
    """A seeded stride-4 head: 1×16×16 → 14×4×4 (10 heat-map logits, log w/h, offsets)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Conv2d(8, 14, 1))
        self.advlab_meta = {"task": "detection"}
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return torch.cat([out[:, :10], out[:, 10:12] + 2.0, out[:, 12:].sigmoid()], dim=1)


def seg_data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, SIDE, SIDE, generator=g)
    y = torch.where(x[:, 0] > 0.5, torch.randint(1, 11, (n, 1, 1), generator=g), torch.zeros((), dtype=torch.long))
    return x, y.long()


def det_data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, SIDE, SIDE, generator=g) * 0.3
    boxes = torch.full((n, 5, 5), -1.0)
    boxes[:, 0] = torch.tensor([3.0, 2.0, 2.0, 10.0, 10.0])
    boxes[:, 0, 0] = torch.randint(0, 10, (n,), generator=g).float()
    x[:, :, 2:10, 2:10] += 0.6
    return x, boxes


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_dense_evaluation_rows_store_and_report(task: str, tmp_path) -> None:
    model, data = (TinySeg(), seg_data()) if task == "segmentation" else (TinyDet(), det_data())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attacks = ["fgsm", "pgd"]
    ev = advlab.evaluate(model, data, attacks, [0.05, 0.2], n=12, batch_size=5, out=tmp_path, progress=False,
                         params={"pgd": {"steps": 5}})
    assert isinstance(ev, DenseEvaluation)
    assert [(r.attack, r.eps) for r in ev.rows] == [("fgsm", 0.05), ("fgsm", 0.2), ("pgd", 0.05), ("pgd", 0.2)]
    names = ("miou", "pixel_acc") if task == "segmentation" else ("map50", "recall")
    for r in ev.rows:
        assert r.task == task and r.n == 12
        for k in names:
            assert 0.0 <= r.metrics[f"{k}_adv"] <= 1.0 and 0.0 <= r.metrics[f"{k}_clean"] <= 1.0
        assert r.median_linf is None or r.median_linf <= r.eps + 1e-6
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is untouched
    if task == "segmentation":  # the clean metric is the model's own, computed directly
        x, y = data
        conf = confusion(model(x).argmax(1), y).sum(0)
        assert math.isclose(ev.rows[0].metrics["miou_clean"], float(miou(conf)), rel_tol=1e-6)
        assert math.isclose(ev.rows[0].metrics["pixel_acc_clean"], float(pixel_accuracy(conf)), rel_tol=1e-6)
        # a stronger budget never helps the model here
        assert ev.rows[3].metrics["miou_adv"] <= ev.rows[0].metrics["miou_clean"]
    ev.save(tmp_path)
    records = json.loads((tmp_path / "results.json").read_text())
    assert records == ev.to_records() and set(records[0]["metrics"]) >= {f"{names[0]}_adv", f"{names[0]}_clean"}
    md, html = render_report(tmp_path)
    assert "| Attack |" in md.read_text() and 'id="results"' in html.read_text()
    assert (tmp_path / "figures" / "metrics.png").is_file()
    again = advlab.evaluate(model, data, attacks, [0.05, 0.2], n=12, batch_size=5, out=tmp_path, progress=False,
                            params={"pgd": {"steps": 5}})  # resumed from the store: the same rows
    assert [r.as_dict() | {"seconds": 0} for r in again.rows] == [r.as_dict() | {"seconds": 0} for r in ev.rows]


def test_dense_evaluation_refuses_what_it_cannot_do(tmp_path) -> None:
    model, data = TinySeg(), seg_data()
    with pytest.raises(ValueError, match="does not attack a segmentation model"):
        advlab.evaluate(model, data, ["deepfool"], [0.1], progress=False)
    with pytest.raises(ValueError, match="targeted"):
        advlab.evaluate(model, data, ["pgd"], [0.1], targeted="random", progress=False)
    with pytest.raises(ValueError, match="data"):
        advlab.evaluate(model, (data[0], data[1][:, :4]), ["pgd"], [0.1], progress=False)
