"""A folder's files as users' datasets hold them: 16-bit and float images, nested folders, hidden files, palettes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.data import open_images


def _grey(root: Path, name: str, image: Image.Image) -> None:
    (root / "a").mkdir(parents=True, exist_ok=True)
    image.save(root / "a" / name)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_image_reads_as_its_8_bit_twin(tmp_path, channels):
    """A 16-bit PNG holding v·257 is the 8-bit PNG holding v, bit for bit (Pillow's convert would clip it to 255)."""
    v = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    _grey(tmp_path / "eight", "x.png", Image.fromarray(v, "L"))
    _grey(tmp_path / "sixteen", "x.png", Image.fromarray(v.astype(np.uint16) * 257))
    assert Image.open(tmp_path / "sixteen" / "a" / "x.png").mode == "I;16"
    eight = open_images(f"folder:{tmp_path / 'eight'}:size=12:channels={channels}")[0][0]
    sixteen = open_images(f"folder:{tmp_path / 'sixteen'}:size=12:channels={channels}")[0][0]
    assert sixteen.shape == (channels, 12, 12) and torch.equal(sixteen, eight)


def test_a_16_bit_image_keeps_its_range(tmp_path):
    a = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    _grey(tmp_path, "x.png", Image.fromarray(a))
    got = open_images(f"folder:{tmp_path}:size=16:channels=1")[0][0][0]
    assert torch.allclose(got, torch.from_numpy(a.astype(np.float32) / 65535), atol=1e-6)
    assert float((got == 1.0).float().mean()) < 0.01  # not saturated


def test_a_float_image_in_the_unit_range_is_read_as_it_is_and_any_other_is_refused(tmp_path):
    a = np.random.default_rng(1).random((10, 10)).astype(np.float32)
    _grey(tmp_path / "unit", "x.tif", Image.fromarray(a))
    got = open_images(f"folder:{tmp_path / 'unit'}:size=10:channels=1")[0][0][0]
    assert torch.equal(got, torch.from_numpy(a))
    _grey(tmp_path / "wide", "x.tif", Image.fromarray(a * 1000))
    images, _ = open_images(f"folder:{tmp_path / 'wide'}:size=10:channels=1")
    with pytest.raises(ValueError, match=r"^folder: image .*x\.tif is floating-point with values in \[\d.*\], outside "
                                         r"\[0, 1\]; save it as 8-bit or 16-bit") as e:
        images[0]
    assert "\n" not in str(e.value)


def test_images_in_subfolders_are_found_and_hidden_files_are_not(tmp_path):
    """torchvision's ImageFolder finds a class's images in its subfolders (in its order: the folders' paths
    sorted, the class folder's own files first); macOS' ._NAME resource forks and .ipynb_checkpoints are not
    images."""
    rng = np.random.default_rng(2)

    def png(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)

    for rel in ("cat/b.png", "cat/a.png", "cat/2019/c.png", "cat/2019/deep/d.png", "dog/x.png",
                "cat/.ipynb_checkpoints/e.png"):
        png(tmp_path / rel)
    (tmp_path / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    images, labels = open_images(f"folder:{tmp_path}:size=8")
    rel = [p.relative_to(tmp_path).as_posix() for p in images.source.files]
    assert rel == ["cat/a.png", "cat/b.png", "cat/2019/c.png", "cat/2019/deep/d.png", "dog/x.png"]  # ImageFolder's
    assert labels.tolist() == [0, 0, 0, 0, 1] and images.source.classes == ["cat", "dog"]
    assert torch.stack([images[i] for i in range(5)]).shape == (5, 3, 8, 8)


def test_a_palette_image_with_transparency_reads_without_a_warning_per_file(tmp_path):
    im = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L").convert("P")
    im.info["transparency"] = bytes(range(256))
    im.save(tmp_path / "p.png", transparency=bytes(range(256)))
    (tmp_path / "a").mkdir()
    (tmp_path / "p.png").rename(tmp_path / "a" / "p.png")
    images, _ = open_images(f"folder:{tmp_path}:size=8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = images[0]
    want = np.asarray(Image.open(tmp_path / "a" / "p.png").convert("RGBA").convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(got, torch.from_numpy(want).permute(2, 0, 1))
