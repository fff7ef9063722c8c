"""Evaluation: ``evaluate()``, the gradient-masking checks and the transferability matrix.

``evaluate()`` plans, runs and aggregates through the results store.

The records, the store and the aggregation live in :mod:`advlab.results`, the tables and figures
in :mod:`advlab.report`; the names below are re-exported from there for convenience.
"""

from advlab.evaluation.checks import CheckResult, run_checks
from advlab.evaluation.defaults import (
    ADAPTIVE,
    DEFAULT_ATTACKS,
    DEFAULT_NORM_PARAMS,
    DEFAULT_PARAMS,
    attack_params,
    blackbox_attacks,
)
from advlab.evaluation.engine import ConfigMismatchError, Evaluation, evaluate
from advlab.evaluation.transfer import TransferMatrix, TransferOutcome, substitute_attack, transfer_matrix
from advlab.results import CONTRACT_KEYS, DEFAULT_EPS, Row, compute_rows

__all__ = [
    "ADAPTIVE", "CONTRACT_KEYS", "DEFAULT_ATTACKS", "DEFAULT_EPS", "DEFAULT_NORM_PARAMS", "DEFAULT_PARAMS",
    "CheckResult", "ConfigMismatchError", "Evaluation", "Row", "TransferMatrix", "TransferOutcome", "attack_params",
    "blackbox_attacks", "compute_rows", "evaluate", "run_checks", "substitute_attack", "transfer_matrix",
]
