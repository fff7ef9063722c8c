"""Deprecated module path: the scikit-learn targets live in :mod:`advlab.models.sklearn` (until advlab 0.3).

``advlab.models.load_model("sklearn-logreg")`` loads one like any other model.
"""

from advlab._deprecation import alias_module
from advlab.models.sklearn import (
    SKLEARN_MODELS,
    SklearnSpec,
    cache_dir,
    is_sklearn_model,
    load_estimator,
    load_sklearn_model,
    train_sklearn_model,
)

alias_module("advlab.sklearn_models", "advlab.models.sklearn")

__all__ = [
    "SKLEARN_MODELS", "SklearnSpec", "cache_dir", "is_sklearn_model", "load_estimator",
    "load_sklearn_model", "train_sklearn_model",
]
