"""Deprecated module path: the metric functions live in :mod:`advlab.metrics` (until advlab 0.3)."""

from advlab._deprecation import alias_module
from advlab.metrics import (
    acc_at_k,
    clean_accuracy,
    mean_or_none,
    median_or_none,
    outcome_at_eps,
    perturbation_norms,
    predict_logits,
    topk_correct,
)

alias_module("advlab.evaluation.metrics", "advlab.metrics")

__all__ = [
    "acc_at_k", "clean_accuracy", "mean_or_none", "median_or_none", "outcome_at_eps",
    "perturbation_norms", "predict_logits", "topk_correct",
]
