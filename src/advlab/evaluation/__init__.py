"""Evaluation: pure metrics, the runner over (model × attack × ε), the results store."""

from advlab.evaluation.runner import (
    CONTRACT_KEYS,
    DEFAULT_ATTACKS,
    DEFAULT_EPS,
    DEFAULT_PARAMS,
    ConfigMismatchError,
    Evaluation,
    Row,
    compute_rows,
    evaluate,
)

__all__ = [
    "CONTRACT_KEYS", "DEFAULT_ATTACKS", "DEFAULT_EPS", "DEFAULT_PARAMS", "ConfigMismatchError", "Evaluation",
    "Row", "compute_rows", "evaluate",
]
