"""signs: the canonical signs, the backgrounds, and the dataset's balance, determinism and formats."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import advlab.data.signs as signs_mod
from advlab.data import dataset_info, load_dataset
from advlab.data.sign_art import SIGN_CLASSES, all_signs, sign_mask, sign_rgba
from advlab.data.sign_backgrounds import KINDS, make_backgrounds
from advlab.data.signs import SEEDS, SIGNS, make_signs


@pytest.fixture(scope="module")
def small():
    """Two small generations from the same seed and one from another."""
    return make_signs(96, seed=5), make_signs(96, seed=5), make_signs(96, seed=6)


def test_canonical_signs_shape_range_and_distinct():
    s = all_signs()
    assert s.shape == (12, 4, 64, 64) and s.dtype == torch.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    differ = ((s[:, None] - s[None]).abs().amax(2) > 0.25).sum((-1, -2))  # pixels clearly different, per pair
    differ = differ + torch.eye(12, dtype=differ.dtype) * 4096
    assert int(differ.min()) >= 40, "two canonical signs are (nearly) the same picture"  # closest: 30 vs 80
    for cls in ("stop", "speed-30", "priority"):  # alpha is the shape: opaque centre, clear corners
        a = sign_mask(cls)
        assert a[32, 32] == 1.0 and a[0, 0] == 0.0 and a.shape == (64, 64)
    # turn-left and turn-right are mirror images in spirit, never equal
    assert not torch.equal(sign_rgba("turn-left"), sign_rgba("turn-right"))


def test_sign_rgba_names_indices_and_copies():
    assert torch.equal(sign_rgba(0), sign_rgba("stop"))
    assert torch.equal(sign_rgba(11), sign_rgba(SIGN_CLASSES[-1]))
    a = sign_rgba("yield")
    a.zero_()
    assert float(sign_rgba("yield").sum()) > 0, "the cache must not be changed through a returned tensor"
    with pytest.raises(ValueError, match="unknown sign"):
        sign_rgba("speed-45")
    with pytest.raises(ValueError, match="sign index"):
        sign_mask(12)


def test_backgrounds_deterministic_varied_in_range():
    a, b, c = make_backgrounds(30, seed=1), make_backgrounds(30, seed=1), make_backgrounds(30, seed=2)
    assert a.shape == (30, 3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float(a.std(dim=(2, 3)).mean()) > 0.02  # textured, not flat
    assert len(KINDS) == 6


def test_small_generation_balanced_deterministic_formats(small):
    (x, y), (x2, y2), (x3, y3) = small
    assert x.shape == (96, 3, 48, 48) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y, minlength=12).tolist() == [8] * 12
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, x3) and not torch.equal(y, y3)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_labels_exactly_balanced(k, seed):
    y = signs_mod._labels(12 * k, torch.Generator().manual_seed(seed))
    assert torch.bincount(y, minlength=12).tolist() == [k] * 12


def test_unbalanced_n_refused():
    with pytest.raises(ValueError, match="multiple of 12"):
        make_signs(100, seed=0)


def test_split_sizes_and_info():
    info = dataset_info("signs")
    assert info.shape == (3, 48, 48) and info.num_classes == 12 == len(SIGN_CLASSES)
    assert SIGNS["train"] >= 20_000 and SIGNS["test"] >= 4_000
    assert SIGNS["train"] % 12 == 0 and SIGNS["test"] % 12 == 0
    assert SEEDS["train"] != SEEDS["test"]


def test_load_dataset_path(monkeypatch):
    """load_dataset("signs") through a shrunken split table: float32 in [0, 1], splits differ, cache per split."""
    monkeypatch.setattr(signs_mod, "SIGNS", {"train": 48, "test": 24})
    signs_mod.signs_split.cache_clear()
    try:
        xtr, ytr = load_dataset("signs", "train")
        xte, yte = load_dataset("signs", "test")
        assert xtr.shape == (48, 3, 48, 48) and xte.shape == (24, 3, 48, 48)
        assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
        assert float(xtr.min()) >= 0.0 and float(xtr.max()) <= 1.0
        assert torch.bincount(yte, minlength=12).tolist() == [2] * 12
        assert not torch.equal(xtr[:24], xte)
        xtr[:] = 0  # a fresh tensor each call: the cache is untouched
        assert float(load_dataset("signs", "train")[0].max()) > 0
        with pytest.raises(ValueError, match="no data directory"):
            load_dataset("signs", "train", root="/tmp")
    finally:
        signs_mod.signs_split.cache_clear()


def test_shipped_signnet_loads_and_classifies(small):
    from advlab.models import list_pretrained, load_model

    assert "signnet-signs" in list_pretrained()
    model = load_model("signnet-signs")
    meta = model.advlab_meta
    assert meta["architecture"] == "signnet" and meta["dataset"] == "signs"
    assert meta["command"].startswith("advlab train --model signnet --dataset signs")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    (x, y), _, _ = small
    with torch.no_grad():
        logits = model(x.float() / 255)
    assert logits.shape == (96, 12)
    assert float((logits.argmax(1) == y).float().mean()) > 0.9  # held-out seed, 96 images


@pytest.mark.slow
def test_shipped_signnet_accuracy():
    from advlab.metrics import clean_accuracy
    from advlab.models import load_model

    model = load_model("signnet-signs")
    x, y = load_dataset("signs", "test")
    acc1, _ = clean_accuracy(model, x, y)
    assert acc1 == pytest.approx(model.advlab_meta["acc1"], abs=1e-6)  # the card's figure is the true one
    assert acc1 >= 0.97, acc1
