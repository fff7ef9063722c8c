"""Helpers of the results-store tests (tests/test_store*.py): a small evaluation, store reads, the CLI."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from advlab.evaluation import evaluate
from advlab.models import create_model, save_checkpoint, tensor_digest
from advlab.results.store import STORE_NAME
from advlab.train import TrainConfig, fit

DIGITS_META = {"architecture": "mlp", "dataset": "digits", "bounds": [0.0, 1.0],
               "arch_kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 16, "mean": 0.3, "std": 0.4}}


def run(model, data, out, **kw):
    kw = {"attacks": ["fgsm"], "eps": [0.1], "batch_size": 20, "progress": False, "checks": False, **kw}
    return evaluate(model, data, kw.pop("attacks"), kw.pop("eps"), out=out, model_name="m", **kw)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def one_line(message):
    return "\n" not in message.rstrip("\n") and "Traceback" not in message


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def batches(directory):
    """The stored (job, batch, seconds) rows, read without writing (another process may hold the store)."""
    try:
        db = sqlite3.connect(f"file:{Path(directory) / STORE_NAME}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        return sorted(db.execute("SELECT job, batch, seconds FROM batches").fetchall())
    except sqlite3.Error:  # not created yet
        return []
    finally:
        db.close()


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "advlab", *map(str, argv)], capture_output=True, text=True)


def train_tiny(digits, path, seed):
    """A small digits MLP (one epoch) written to ``path``; returns its weights digest."""
    xtr, ytr, xte, yte = digits
    model = create_model("mlp", **DIGITS_META["arch_kwargs"])
    fit(model, (xtr, ytr), (xte, yte), TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=seed), progress=False)
    save_checkpoint(model, path, DIGITS_META)
    return tensor_digest(model)
