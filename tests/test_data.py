import gzip

import numpy as np
import pytest
import torch

import advlab
from advlab.data import HALVES, half_indices, load_dataset, read_idx, write_idx
from advlab.data.mnist import load_mnist_uint8

OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist_test():
    return advlab.load_dataset("mnist", "test")


def test_mnist_test_split_is_official(mnist_test):
    x, y = mnist_test
    assert x.shape == (10_000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y, minlength=10).tolist() == OFFICIAL_TEST_COUNTS
    # pixel values are exactly k/255 for integer k, as in the official uint8 IDX files
    k = x * 255
    assert torch.equal(k, k.round())


def test_mnist_train_split_is_official():
    x, y = load_dataset("mnist", "train")
    assert x.shape == (60_000, 1, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == OFFICIAL_TRAIN_COUNTS


def test_idx_round_trip_from_directory(tmp_path, mnist_test):
    """Write the test split as IDX (gzip and plain) with our writer and read it back."""
    images, labels = load_mnist_uint8("test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels.astype(np.uint8))
    x, y = load_dataset("mnist", "test", root=tmp_path)
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_dtypes(tmp_path, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", arr)
    back = read_idx(tmp_path / "a.idx")
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_wrong_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(ValueError, match="wrong magic number"):
        read_idx(tmp_path / "bad")


def test_idx_truncated(tmp_path):
    write_idx(tmp_path / "a", np.zeros((10, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "a").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "a")
    # a truncated gzip stream is reported the same way
    with gzip.open(tmp_path / "b.gz", "wb") as f:
        f.write(raw)
    (tmp_path / "c.gz").write_bytes((tmp_path / "b.gz").read_bytes()[:-30])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "c.gz")


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", "test", root=tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", "test", root=tmp_path / "nope")


def test_unknown_dataset_suggests():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnsit'.*did you mean 'mnist'"):
        load_dataset("mnsit", "test")


def test_bad_split():
    with pytest.raises(ValueError, match=r"split: expected one of 'train', 'test', got 'val'"):
        load_dataset("mnist", "val")


def test_digits():
    xtr, ytr = load_dataset("digits", "train")
    xte, _ = load_dataset("digits", "test")
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) <= 1.0
    assert set(ytr.tolist()) == set(range(10))


def test_half_indices_split_into_two_fixed_disjoint_halves():
    a, b = half_indices(1001, "a"), half_indices(1001, "b")
    assert HALVES == ("a", "b") and (len(a), len(b)) == (500, 501)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(1001))
    assert torch.equal(a, half_indices(1001, "a"))
    with pytest.raises(ValueError, match=r"half: expected one of 'a', 'b', got 'c'"):
        half_indices(10, "c")


class _Hostile:
    """Unpickling this would call os.system: the allow-list must refuse it before anything runs."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/advlab-pwned-by-pickle",))


def test_the_mnist_unpickler_refuses_anything_but_arrays(tmp_path):
    import io
    import os
    import pickle

    from advlab.data.mnist import _ArraysOnly

    marker = "/tmp/advlab-pwned-by-pickle"
    if os.path.exists(marker):
        os.unlink(marker)
    payload = pickle.dumps((np.zeros((2, 3), np.float32), _Hostile()))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load posix\.system"):
        _ArraysOnly(io.BytesIO(payload), encoding="latin1").load()
    assert not os.path.exists(marker)
    arrays = _ArraysOnly(io.BytesIO(pickle.dumps([np.arange(4, dtype=np.float32)])), encoding="latin1").load()
    assert arrays[0].tolist() == [0.0, 1.0, 2.0, 3.0]
