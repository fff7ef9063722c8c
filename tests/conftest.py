"""Shared fixtures: small trained models on the tiny digits dataset, trained once per session."""

from __future__ import annotations

import pytest
import torch

from advlab.data import load_dataset
from advlab.models import create_model, load_model
from advlab.train import TrainConfig, fit

# One thread per test process: the models here are tiny, and several threads on a busy
# 2-core machine spin against each other (measured: 3 s with 1 thread vs 110 s with 2 under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lenet():
    """The shipped lenet-mnist, as users load it (advlab never changes a model it attacks)."""
    return load_model("lenet-mnist")


@pytest.fixture(scope="session")
def mnist_test():
    """MNIST's test split (x, y), from the package data."""
    return load_dataset("mnist", "test")


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test) of scikit-learn's 8×8 digits."""
    xtr, ytr = load_dataset("digits", "train")
    xte, yte = load_dataset("digits", "test")
    return xtr, ytr, xte, yte


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """An MLP trained on digits (test Acc@1 about 0.97), frozen, in eval mode."""
    xtr, ytr, xte, yte = digits
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=64, mean=0.3, std=0.4)
    result = fit(model, (xtr, ytr), (xte, yte), TrainConfig(epochs=30, batch_size=64, lr=3e-3, seed=0),
                 progress=False)
    assert result.acc1 > 0.93, result.acc1
    return model


@pytest.fixture
def digits_ckpt(tmp_path, digits_mlp):
    """The digits MLP saved as an advlab checkpoint (for CLI tests)."""
    from advlab.models import save_checkpoint

    path = tmp_path / "digits-mlp.safetensors"
    save_checkpoint(digits_mlp, path, {
        "architecture": "mlp", "dataset": "digits", "bounds": [0.0, 1.0],
        "arch_kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 64, "mean": 0.3, "std": 0.4},
    })
    return path


# The bad-input catalogue's ``files`` fixture (what a user might hand advlab), shared by its three test files.
from bad_input_helpers import files  # noqa: E402, F401
