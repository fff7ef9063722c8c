"""The issue-17 acceptance figures on MNIST / lenet (slow: three 5-epoch trainings, about 2 minutes on 1 core)."""

from __future__ import annotations

import pytest

from advlab.poison.experiment import Setup, run_experiment


@pytest.mark.slow
def test_badnets_one_percent_and_activation_clustering_on_mnist():
    outcome = run_experiment(Setup(epochs=5).load(), "badnets", {"fraction": 0.01, "target": 7},
                             defense="activation-clustering")
    s = outcome.summary
    assert s["poisons"] == 600
    assert s["poisoned"]["asr"] >= 0.99
    assert abs(s["poisoned"]["acc1"] - s["clean"]["acc1"]) <= 0.005
    assert s["poison_share_of_training"] <= 0.05
    d = s["defense"]
    assert d["tpr"] >= 0.9 and d["fpr_class"] <= 0.05 and d["asr"] < 0.05
    assert s["poisoned"]["strip_auc"] > 0.9
