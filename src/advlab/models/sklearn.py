"""Non-neural target models: scikit-learn classifiers trained by advlab, seen only as black boxes.

``load_sklearn_model("sklearn-logreg")`` trains (once) a multinomial LogisticRegression on the
MNIST training split, caches its coefficients as a plain ``.npz`` (numpy arrays only, loaded with
``allow_pickle=False``; the estimator itself is never pickled) in the user cache directory, and
returns a :class:`~advlab.models.blackbox.BlackBox` over the estimator's ``predict_proba`` (or
``predict``, labels only). Attacks reach the model only through that predict function.

The cache directory is ``$ADVLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/advlab``, else
``~/.cache/advlab``. Training is deterministic (L-BFGS, no random state involved).
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from advlab._checks import suggest
from advlab._io import atomic_write_bytes
from advlab.data import load_dataset
from advlab.models.blackbox import BlackBox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SklearnSpec:
    """A scikit-learn target model advlab can train: dataset and hyper-parameters."""

    name: str
    dataset: str
    C: float
    max_iter: int
    description: str


SKLEARN_MODELS: dict[str, SklearnSpec] = {
    "sklearn-logreg": SklearnSpec(
        "sklearn-logreg", "mnist", 0.1, 100,
        "multinomial LogisticRegression (L-BFGS, C=0.1, 100 iterations) on MNIST pixels",
    ),
    "sklearn-logreg-digits": SklearnSpec(
        "sklearn-logreg-digits", "digits", 1.0, 200,
        "multinomial LogisticRegression (L-BFGS, C=1, 200 iterations) on 8×8 digits",
    ),
}
# The keys of SKLEARN_MODELS, for type checkers (load_model returns a BlackBox for these).
SklearnName = Literal["sklearn-logreg", "sklearn-logreg-digits"]


def cache_dir() -> Path:
    """Where advlab caches models it trains on demand.

    Returns:
        ``$ADVLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/advlab``, else ``~/.cache/advlab``.
    """
    env = os.environ.get("ADVLAB_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "advlab"


def is_sklearn_model(name: str) -> bool:
    """Whether ``name`` names one of the scikit-learn target models."""
    return name in SKLEARN_MODELS


def _spec(name: str) -> SklearnSpec:
    if name not in SKLEARN_MODELS:
        raise ValueError(
            f"model: unknown scikit-learn model {name!r}{suggest(name, SKLEARN_MODELS)}; "
            f"known: {', '.join(SKLEARN_MODELS)}"
        )
    return SKLEARN_MODELS[name]


def train_sklearn_model(name: str) -> tuple[Any, dict[str, float]]:
    """Train the named estimator from scratch on its dataset's training split.

    Args:
        name: A key of :data:`SKLEARN_MODELS`.

    Returns:
        The fitted estimator and its facts: ``{"acc1": test accuracy, "train_seconds": ...}``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    spec = _spec(name)
    x, y = load_dataset(spec.dataset, "train")
    xt, yt = load_dataset(spec.dataset, "test")
    clf = LogisticRegression(C=spec.C, max_iter=spec.max_iter, tol=1e-4)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed iteration budget is the spec
        clf.fit(x.flatten(1).numpy(), y.numpy())
    seconds = time.perf_counter() - start
    acc = float(clf.score(xt.flatten(1).numpy(), yt.numpy()))
    return clf, {"acc1": acc, "train_seconds": seconds}


def _restore(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression()
    clf.coef_, clf.intercept_, clf.classes_ = coef, intercept, classes
    clf.n_features_in_ = coef.shape[1]
    return clf


def load_estimator(name: str, *, retrain: bool = False) -> tuple[Any, dict[str, float]]:
    """The fitted estimator ``name``, read from the cache or trained now and cached.

    The cache file (numpy arrays only) is named after the hyper-parameters and the scikit-learn
    version, and is written atomically, so concurrent runs never read half a file.

    Args:
        name: A key of :data:`SKLEARN_MODELS`.
        retrain: Train again even if a cached copy exists (and overwrite it).

    Returns:
        The estimator and its facts (``acc1``, ``train_seconds``), as :func:`train_sklearn_model`.
    """
    import sklearn

    spec = _spec(name)
    path = cache_dir() / f"{name}-C{spec.C}-it{spec.max_iter}-sk{sklearn.__version__}.npz"
    if path.exists() and not retrain:
        with np.load(path, allow_pickle=False) as z:
            clf = _restore(z["coef"], z["intercept"], z["classes"])
            facts = {"acc1": float(z["acc1"]), "train_seconds": float(z["train_seconds"])}
        return clf, facts
    log.info("training %s (%s); cached at %s", name, spec.description, path)
    clf, facts = train_sklearn_model(name)
    buf = io.BytesIO()
    np.savez(buf, coef=clf.coef_, intercept=clf.intercept_, classes=clf.classes_,
             acc1=facts["acc1"], train_seconds=facts["train_seconds"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return clf, facts


def _flat(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    def predict(batch: np.ndarray) -> Any:
        return fn(batch.reshape(len(batch), -1))

    predict.__name__ = getattr(fn, "__name__", "predict")
    return predict


def load_sklearn_model(
    name: str, *, output: Literal["probs", "labels"] = "probs", retrain: bool = False
) -> BlackBox:
    """A scikit-learn target as a :class:`~advlab.models.blackbox.BlackBox` over its predict function.

    Args:
        name: ``"sklearn-logreg"`` (MNIST) or ``"sklearn-logreg-digits"``.
        output: ``"probs"`` (``predict_proba``; score-based attacks work) or ``"labels"``
            (``predict``; decision-based attacks only).
        retrain: Train again even if a cached copy exists.

    Returns:
        A black box taking N×C×H×W images in [0, 1]; ``box.meta['acc1']`` is its test accuracy and
        ``box.meta['dataset']`` the dataset it was trained on.
    """
    if output not in ("probs", "labels"):
        raise ValueError(f"output: expected 'probs' or 'labels', got {output!r}")
    clf, facts = load_estimator(name, retrain=retrain)
    fn = _flat(clf.predict_proba if output == "probs" else clf.predict)
    return BlackBox(fn, output=output, input_format="numpy", name=name,
                    meta={"dataset": SKLEARN_MODELS[name].dataset, **facts})


__all__ = [
    "SKLEARN_MODELS", "SklearnName", "SklearnSpec", "cache_dir", "is_sklearn_model", "load_estimator",
    "load_sklearn_model", "train_sklearn_model",
]
