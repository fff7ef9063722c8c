"""Deprecated module path (until advlab 0.3): the runner was split into rooms.

``evaluate``, ``Evaluation`` and ``ConfigMismatchError`` live in :mod:`advlab.evaluation.engine`,
the defaults in :mod:`advlab.evaluation.defaults`, rows, jobs and aggregation in
:mod:`advlab.results`, the table formatting in :mod:`advlab.report.tables`.
"""

from advlab._deprecation import alias_module
from advlab.evaluation.defaults import (
    ADAPTIVE,
    DEFAULT_ATTACKS,
    DEFAULT_NORM_PARAMS,
    DEFAULT_PARAMS,
    LINF_STEP,
    N_EXAMPLES,
    attack_params,
)
from advlab.evaluation.engine import ConfigMismatchError, Evaluation, evaluate
from advlab.report.tables import eps_label, format_comparison, format_table
from advlab.results.aggregate import compute_rows
from advlab.results.plan import DEFAULT_EPS, Job, batch_seed, plan_jobs
from advlab.results.records import CONTRACT_KEYS, Row, environment

alias_module("advlab.evaluation.runner",
             "advlab.evaluation (evaluate, defaults), advlab.results (rows, jobs), advlab.report.tables")

__all__ = [
    "ADAPTIVE", "CONTRACT_KEYS", "DEFAULT_ATTACKS", "DEFAULT_EPS", "DEFAULT_NORM_PARAMS", "DEFAULT_PARAMS",
    "LINF_STEP", "N_EXAMPLES", "ConfigMismatchError", "Evaluation", "Job", "Row", "attack_params", "batch_seed",
    "compute_rows", "environment", "eps_label", "evaluate", "format_comparison", "format_table", "plan_jobs",
]
