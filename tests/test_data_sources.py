"""Your own images: folder:PATH and npz:PATH specs, the lazy image set, streamed checks and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from advlab._checks import check_image_batches
from advlab.cli import main
from advlab.data import Images, load_dataset, open_images, parse_spec, resize_crop
from advlab.evaluation.targeting import targeted_data
from advlab.results.records import data_fingerprint

FACTORY = f"{Path(__file__).resolve().parent / 'factory_models.py'}:make_tiny"


def write_folder(root: Path, per_class: int = 10, classes: tuple[str, ...] = ("cat", "dog"), seed: int = 0) -> Path:
    """An ImageFolder of small RGB PNGs (20×24, so resizing to 16 both scales and crops)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("imgs") / "f")


@pytest.fixture(scope="module")
def npz_pair(tmp_path_factory):
    """The same 25 images as uncompressed float N×C×H×W and compressed uint8 N×H×W×C files."""
    d = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (25, 6, 5, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 25)
    np.savez(d / "float.npz", x=(u8.astype(np.float32) / 255).transpose(0, 3, 1, 2), y=y)
    np.savez_compressed(d / "u8.npz", x=u8, y=y)
    return d / "float.npz", d / "u8.npz", y


def test_folder_layout_labels_and_shapes(folder):
    x, y = open_images(f"folder:{folder}:size=16")
    assert isinstance(x, Images) and tuple(x.shape) == (20, 3, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == [0] * 10 + [1] * 10
    assert x.source.files[0].name == "000.png" and x.source.classes == ["cat", "dog"]
    one = x[3]
    assert one.shape == (3, 16, 16) and 0.0 <= float(one.min()) and float(one.max()) <= 1.0
    # the same pixels as Pillow's decoding, resized by resize_crop
    raw = np.asarray(Image.open(folder / "cat" / "003.png").convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(one, resize_crop(torch.from_numpy(raw).permute(2, 0, 1), 16))


def test_npz_memory_mapped_and_compressed_agree(npz_pair):
    f32, u8, y = npz_pair
    a, ya = open_images(f"npz:{f32}")
    b, yb = open_images(f"npz:{u8}")
    assert a.source.mapped and not b.source.mapped
    assert tuple(a.shape) == tuple(b.shape) == (25, 3, 6, 5)
    assert torch.equal(ya, yb) and ya.tolist() == y.tolist()
    assert torch.allclose(a[:], b[:], atol=1e-6)
    xl, _ = load_dataset(f"npz:{u8}")  # load_dataset reads the whole set into a tensor
    assert isinstance(xl, torch.Tensor) and torch.equal(xl, b.materialise(batch_size=7))


@settings(max_examples=40, deadline=None)
@given(start=st.integers(-30, 30), stop=st.integers(-30, 30), step=st.integers(1, 4),
       picks=st.lists(st.integers(-25, 24), max_size=8), n=st.integers(1, 25))
def test_lazy_indexing_matches_materialised(npz_pair, start, stop, step, picks, n):
    x, _ = open_images(f"npz:{npz_pair[0]}")
    x = x.subset(slice(0, n))
    full = x.materialise(batch_size=4)
    assert torch.equal(x[start:stop:step], full[start:stop:step])
    ok = [p for p in picks if -n <= p < n]
    assert torch.equal(x[ok], full[ok]) and torch.equal(x[torch.tensor(ok, dtype=torch.long)], full[ok])
    assert torch.equal(x[ok[0] if ok else 0], full[ok[0] if ok else 0])
    assert torch.equal(x.subset(ok)[:], full[ok])


def test_resize_crop_by_hand():
    img = torch.tensor([[[0.0, 1, 2], [3, 4, 5]]])  # 1×2×3: shorter side 2 → ×2 bilinear → 4×6 → centre 4×4
    base = torch.tensor([0.25, 0.75, 1.25, 1.75])  # columns 1..4 of the ×2 row [0, .25, .75, 1.25, 1.75, 2]
    # rows r0, ¾r0+¼r1, ¼r0+¾r1, r1 with r1 = r0 + 3: offsets 0, 0.75, 2.25, 3
    want = base[None, :] + torch.tensor([0.0, 0.75, 2.25, 3.0])[:, None]
    assert torch.allclose(resize_crop(img, 4)[0], want)
    assert torch.equal(resize_crop(torch.arange(8.0).reshape(1, 2, 4), 2)[0], torch.tensor([[1.0, 2], [5, 6]]))
    assert resize_crop(torch.ones(3, 40, 30), 16).shape == (3, 16, 16)
    # resize=4 then crop 2: the centre 2×2 of the ×2 image above (rows 1..2, columns 2..3)
    assert torch.allclose(resize_crop(img, 2, resize=4)[0], (base[1:3][None, :] + torch.tensor([0.75, 2.25])[:, None]))


def test_per_class_subset_and_resize(folder):
    x, y = open_images(f"folder:{folder}:size=8:resize=12:per_class=3")
    assert tuple(x.shape) == (6, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert [p.name for p in x.source.files[:3]] == ["000.png", "001.png", "002.png"]
    with pytest.raises(ValueError, match=r"resize \(4\) must be at least size \(8\)"):
        open_images(f"folder:{folder}:size=8:resize=4")


def test_fingerprint_streams_to_the_materialised_digest(folder):
    x, y = open_images(f"folder:{folder}:size=16")
    assert data_fingerprint(x, y, None) == data_fingerprint(x.materialise(), y, None)
    xd, yd = load_dataset("digits", "test")  # a tensor's digest is the one stores already hold
    assert data_fingerprint(xd, yd, None)["digest"] == "837637accc55c878da2426c530d1461e9c97d0e220380699e0f198a1ea8c5c40"


def test_streamed_bounds_check(npz_pair):
    x, _ = open_images(f"npz:{npz_pair[0]}")
    assert check_image_batches("data", x.iter_batches(4), (0.0, 1.0)) == 25
    with pytest.raises(ValueError, match=r"^data: values must lie in the bounds \[0.1, 1.0\], got range \[0"):
        check_image_batches("data", x.iter_batches(4), (0.1, 1.0))


@pytest.mark.parametrize("mode", ["random", "least-likely", "all"])
def test_targets_of_a_lazy_set_equal_the_tensor_ones(folder, mode):
    from factory_models import make_tiny

    net = make_tiny().eval()
    x, y = open_images(f"folder:{folder}:size=16")
    xl, yl, tl = targeted_data(net, x, y, mode, seed=3)
    xt, yt, tt = targeted_data(net, x.materialise(), y, mode, seed=3)
    assert isinstance(xl, Images) and torch.equal(tl, tt) and torch.equal(yl, yt) and torch.equal(xl[:], xt)


def test_evaluate_folder_with_a_factory_end_to_end(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", FACTORY, "--dataset", f"folder:{folder}:size=16", "--attacks", "fgsm",
               "--eps", "0.05,0.1", "--n", "14", "--batch-size", "6", "--threads", "1", "--no-progress",
               "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["attack"], r["eps"]) for r in rows] == [("fgsm", 0.05), ("fgsm", 0.1), ("worst-case", 0.05),
                                                       ("worst-case", 0.1)]
    for r in rows:
        assert r["n"] == 14 and r["dataset"] == f"folder:{folder}:size=16" and r["model"] == FACTORY
        assert 0.0 <= r["acc1_adv"] <= r["acc1_clean"] <= 1.0
    assert (out / "report.html").is_file()


def test_evaluate_npz_with_weights(npz_pair, tmp_path, capsys):
    from safetensors.torch import save_file

    from factory_models import make_tiny

    w = tmp_path / "tiny.safetensors"
    save_file({k: v * 0.5 for k, v in make_tiny().state_dict().items()}, str(w))
    out = tmp_path / "out"
    spec = f"npz:{npz_pair[1]}"
    rc = main(["evaluate", "--model", FACTORY, "--weights", str(w), "--dataset", spec, "--attacks", "fgsm",
               "--eps", "0.1", "--threads", "1", "--no-progress", "--out", str(out), "--no-checks"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["weights"] == str(w) and cfg["evaluation"]["dataset"] == spec


def _bad(tmp_path: Path, case: str) -> str:
    """A spec that must fail, built under tmp_path."""
    if case == "empty":
        (tmp_path / "e").mkdir()
        return f"folder:{tmp_path / 'e'}:size=8"
    if case == "no-images":
        write_folder(tmp_path / "n", per_class=2)
        (tmp_path / "n" / "zebra").mkdir()
        (tmp_path / "n" / "zebra" / "notes.txt").write_text("x")
        return f"folder:{tmp_path / 'n'}:size=8"
    if case == "unreadable":
        write_folder(tmp_path / "u", per_class=2)
        (tmp_path / "u" / "cat" / "000.png").write_bytes(b"not a png")
        return f"folder:{tmp_path / 'u'}:size=8"
    if case == "channels":
        write_folder(tmp_path / "c", per_class=1)
        return f"folder:{tmp_path / 'c'}:size=8:channels=2"
    if case == "no-size":
        write_folder(tmp_path / "s", per_class=1)
        return f"folder:{tmp_path / 's'}"
    arrays = {"missing-y": {"x": np.zeros((3, 1, 4, 4), np.float32)},
              "shape": {"x": np.zeros((3, 4, 4, 4, 1), np.float32), "y": np.zeros(3, np.int64)},
              "range": {"x": np.full((3, 1, 4, 4), 2.0, np.float32), "y": np.zeros(3, np.int64)},
              "labels": {"x": np.zeros((3, 1, 4, 4), np.float32), "y": np.zeros(2, np.int64)},
              "dtype": {"x": np.zeros((3, 1, 4, 4), np.int32), "y": np.zeros(3, np.int64)},
              "soft-labels": {"x": np.zeros((3, 1, 4, 4), np.float32), "y": np.full((3, 2), 0.5)}}[case]
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    return f"npz:{tmp_path / 'bad.npz'}"


@pytest.mark.parametrize(("case", "message"), [
    ("empty", r"^folder: .* has no class folders"),
    ("no-images", r"^folder: class folder .*zebra has no images"),
    ("unreadable", r"^folder: cannot read image .*000\.png \(UnidentifiedImageError"),
    ("no-size", r"^dataset: .*give the image size, e\.g\. folder:.*:size=224"),
    ("channels", r"^dataset: .*channels must be 1 \(greyscale\) or 3 \(RGB\), got 2"),
    ("missing-y", r"^npz: .* lacks array\(s\) y \(has: x; also read: x_test and y_test, images and labels\)"),
    ("shape", r"^npz: .*x must be N×C×H×W, N×H×W×C or N×H×W, got shape \(3, 4, 4, 4, 1\)"),
    ("range", r"^npz: .*float x must lie in \[0, 1\], got values in \[2, 2\]"),
    ("labels", r"^npz: .*y must be 3 integer labels \(one per image\), got shape \(2,\)"),
    ("dtype", r"^npz: .*x must be uint8 \(0–255\) or float in \[0, 1\], got dtype int32"),
])
def test_bad_inputs_fail_in_one_line(tmp_path, case, message):
    spec = _bad(tmp_path, case)
    with pytest.raises(ValueError, match=message) as err:
        load_dataset(spec)  # (reads every image)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("layout", ["keras", "named", "one-hot"])
def test_npz_files_as_other_tools_write_them(tmp_path, layout):
    """Keras' dataset files (x_test/y_test beside the training split), images/labels, one-hot labels: same images."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)
    y = np.array([0, 2, 1, 2, 0, 1])
    arrays = {"keras": {"x_train": x[::-1].copy(), "y_train": y[::-1].copy(), "x_test": x, "y_test": y},
              "named": {"images": x, "labels": y},
              "one-hot": {"x": x, "y": np.eye(3, dtype=np.float32)[y]}}[layout]
    np.savez(tmp_path / "d.npz", **arrays)  # type: ignore[arg-type]
    np.savez(tmp_path / "ref.npz", x=x, y=y)
    got, ref = load_dataset(f"npz:{tmp_path / 'd.npz'}"), load_dataset(f"npz:{tmp_path / 'ref.npz'}")
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and got[1].tolist() == y.tolist()


def test_folders_named_by_numbers_that_are_not_their_positions_are_named(tmp_path):
    """A class missing from a folder named 0..9 shifts every later label (ImageFolder's rule): warned, or read by name."""
    from advlab.data.folder import FolderLabels

    root = write_folder(tmp_path / "digits", per_class=2, classes=("0", "1", "3"))
    with pytest.warns(FolderLabels, match=r"folder '3' is label 2; if the names are the labels, add :labels=names"):
        _, by_position = load_dataset(f"folder:{root}:size=8")
    assert by_position.tolist() == [0, 0, 1, 1, 2, 2]
    _, by_name = load_dataset(f"folder:{root}:size=8:labels=names")
    assert by_name.tolist() == [0, 0, 1, 1, 3, 3]
    assert parse_spec(f"folder:{root}:labels=names:size=8")[2] == {"labels": "names", "size": 8}
    named = write_folder(tmp_path / "named", per_class=1)
    with pytest.raises(ValueError, match=r"labels=names needs class folders named by numbers 0, 1, …, got 'cat'"):
        load_dataset(f"folder:{named}:size=8:labels=names")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FolderLabels)
        load_dataset(f"folder:{named}:size=8")  # (names that are not numbers: nothing to warn about)
        load_dataset(f"folder:{write_folder(tmp_path / 'full', per_class=1, classes=('0', '1', '2'))}:size=8")


def test_the_first_n_images_of_a_folder_that_leave_classes_out_are_named(tmp_path):
    """--n takes a folder's first images in class order: 4 of 3 classes × 3 images cover 2 classes, and it says so."""
    import warnings

    from advlab.data.folder import FolderSubset

    root = write_folder(tmp_path / "three", per_class=3, classes=("a", "b", "c"))
    with pytest.warns(FolderSubset, match=r"the first 4 images cover 2 of the folder's 3 classes .*:per_class=K"):
        _, labels = open_images(f"folder:{root}:size=8", n=4)
    assert labels.tolist() == [0, 0, 0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FolderSubset)
        open_images(f"folder:{root}:size=8", n=7)  # (every class in the first 7)
        open_images(f"folder:{root}:size=8:per_class=1", n=3)


def test_a_folders_label_warning_reaches_the_report(tmp_path):
    from advlab.data.folder import FolderLabels

    root = write_folder(tmp_path / "gap", per_class=3, classes=("0", "2"))
    out = tmp_path / "ev"
    with pytest.warns(FolderLabels):
        assert main(["evaluate", "--model", FACTORY, "--dataset", f"folder:{root}:size=16", "--attacks", "fgsm",
                     "--eps", "0.1", "--no-checks", "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## The model as advlab ran it" in md and "FolderLabels | folder: " in md and "folder '2' is label 1" in md


def test_a_folder_read_at_a_height_and_width(folder):
    """size=HxW: each image scaled to cover H×W and centre-cropped (size=SxS is size=S, bit for bit)."""
    x, _ = load_dataset(f"folder:{folder}:size=8x12")
    assert tuple(x.shape[1:]) == (3, 8, 12) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    tall, _ = load_dataset(f"folder:{folder}:size=12x6")
    assert tuple(tall.shape[1:]) == (3, 12, 6)
    assert torch.equal(load_dataset(f"folder:{folder}:size=8x8")[0], load_dataset(f"folder:{folder}:size=8")[0])
    assert parse_spec(f"folder:{folder}:size=8x12")[2] == {"size": (8, 12)}
    img = torch.rand(3, 20, 24)  # (the same image 20×24 read at 10×12 is a plain downscale: nothing cropped)
    got = resize_crop(img, (10, 12))
    ref = torch.nn.functional.interpolate(img[None], size=(10, 12), mode="bilinear", align_corners=False,
                                          antialias=True)[0].clamp(float(img.min()), float(img.max()))
    assert torch.equal(got, ref)
    with pytest.raises(ValueError, match=r"resize \(10\) must be at least size \(12\)"):
        load_dataset(f"folder:{folder}:size=8x12:resize=10")


def test_spec_parsing_and_split():
    assert parse_spec("folder:/a:b/c:size=224:workers=2") == ("folder", Path("/a:b/c"), {"size": 224, "workers": 2})
    with pytest.raises(ValueError, match="size= is a folder option"):
        parse_spec("npz:/x.npz:size=3")
    with pytest.raises(ValueError, match=r"is one split read as 'test'"):
        load_dataset("npz:/x.npz", "train")


def test_attack_command_reads_the_first_n_of_a_folder(folder, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "atk"
    assert main(["attack", "--model", FACTORY, "--dataset", f"folder:{folder}:size=16", "--attack", "fgsm",
                 "--eps", "0.1", "--n", "5", "--out", str(out)]) == 0
    saved = load_file(str(out / "x_adv.safetensors"))
    assert tuple(saved["x_adv"].shape) == (5, 3, 16, 16) and saved["y"].tolist() == [0] * 5


def test_evaluate_certify_on_a_folder(folder, tmp_path, capsys):
    out = tmp_path / "cert"
    spec = FACTORY.replace(":make_tiny", ":make_linear")
    assert main(["evaluate", "--model", spec, "--dataset", f"folder:{folder}:size=16", "--attacks", "fgsm", "--eps",
                 "0.01", "--certify", "ibp", "--threads", "1", "--no-progress", "--no-checks", "--out", str(out)]) == 0
    import re

    assert re.search(r"^ibp\s+linf\s+0\.01\s+[01]\.\d{3}\s+[01]\.\d{3}", capsys.readouterr().out, re.M)


def test_a_greyscale_model_reads_a_folder_in_greyscale(tmp_path, capsys):
    """The channels follow the model's declared input shape (lenet-mnist: 1×28×28) unless the spec names them."""
    x, y = load_dataset("mnist")
    for i in range(20):
        d = tmp_path / "digits" / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8), "L").convert("RGB").save(d / f"{i:02d}.png")
    imgs, _ = open_images(f"folder:{tmp_path / 'digits'}", size=(1, 28, 28))
    assert tuple(imgs[0].shape) == (1, 28, 28)
    first = int((y[:20] == y[:20].min()).nonzero()[0])  # the folder's image 0: the smallest label's first file
    assert float((imgs[0] - x[first]).abs().max()) <= 0.5 / 255 + 1e-6  # the grey PNG read back as it was written
    assert tuple(open_images(f"folder:{tmp_path / 'digits'}:channels=3", size=(1, 28, 28))[0][0].shape) == (3, 28, 28)
    rc = main(["evaluate", "--dataset", f"folder:{tmp_path / 'digits'}", "--attacks", "fgsm", "--eps", "0.3",
               "--no-checks", "--no-progress", "--threads", "1", "--out", str(tmp_path / "out")])
    assert rc == 0 and "folder:" in capsys.readouterr().out
