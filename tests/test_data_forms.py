"""Data as users hand it to ``evaluate`` besides a tuple: ``[x, y]``, a dict or ``np.load("f.npz")`` of arrays, a
list of (image, label) pairs; and the one-line errors for a mapping or list advlab cannot read, and an iterator."""

from __future__ import annotations

import numpy as np
import pytest

import advlab
from evaluation_helpers import without_seconds

KW = {"attacks": ["fgsm"], "eps": [0.1], "progress": False, "checks": False}


@pytest.fixture(scope="module")
def data(mnist_test):
    x, y = mnist_test
    return x[:20], y[:20]


@pytest.fixture(scope="module")
def reference(lenet, data):
    return without_seconds(advlab.evaluate(lenet, data, **KW).to_records())


def strip(records):
    """Rows without the dataset's name (``tensors``, ``torch:list``): the rest must be the tuple's."""
    return [{k: v for k, v in r.items() if k != "dataset"} for r in records]


def rows(lenet, data, **kw):
    return strip(without_seconds(advlab.evaluate(lenet, data, **KW, **kw).to_records()))


@pytest.mark.parametrize("form", [
    lambda x, y: [x, y],
    lambda x, y: {"x": x, "y": y},
    lambda x, y: {"x_test": x.numpy(), "y_test": y.numpy(), "x_train": x[:2].numpy(), "y_train": y[:2].numpy()},
    lambda x, y: {"pixel_values": x, "labels": y},
    lambda x, y: list(zip(x, y.tolist(), strict=True)),
], ids=["list", "dict", "keras-keys", "hugging-face-keys", "pairs"])
def test_every_form_gives_the_tuples_rows(lenet, data, reference, form):
    assert rows(lenet, form(*data)) == strip(reference)


def test_a_loaded_npz_file_is_read_by_its_keys(lenet, data, reference, tmp_path):
    x, y = data
    np.savez(tmp_path / "d.npz", images=x.numpy(), labels=y.numpy())
    with np.load(tmp_path / "d.npz") as f:
        assert rows(lenet, f) == strip(reference)


def test_a_list_of_pairs_takes_the_first_n(lenet, data):
    x, y = data
    assert rows(lenet, list(zip(x, y.tolist(), strict=True)), n=7) == rows(lenet, (x[:7], y[:7]))


@pytest.mark.parametrize(("form", "error", "message"), [
    ({"a": 1, "b": 2}, ValueError, r"^data: a mapping with keys a, b; advlab reads its images and labels from x/y, "),
    ([1, 2, 3], TypeError, r"^data: a list is read as \(image, label\) pairs \(list\(zip\(x, y\)\)\) or as \[x, y\], "
                           r"got a list of int$"),
    ([], TypeError, r"got a list of nothing$"),
    (iter([]), TypeError, r"got list_iterator \(an iterator is read once; advlab reads images again by position\)$"),
])
def test_forms_advlab_cannot_read_fail_in_one_line(lenet, form, error, message):
    with pytest.raises(error, match=message):
        advlab.evaluate(lenet, form, **KW)
