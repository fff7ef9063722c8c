"""Your own models: factories with safetensors weights, and ONNX models through onnxruntime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advlab.attacks import get_attack
from advlab.cli import main
from advlab.data import load_dataset
from advlab.models import BlackBox, load_model
from advlab.models.blackbox import ModelReturnsProbabilities
from advlab.models.factory import is_factory_spec, load_factory
from advlab.threat import ThreatModel

HERE = Path(__file__).resolve().parent
FILE_SPEC = f"{HERE / 'factory_models.py'}:make_tiny"


def test_factory_by_module_and_by_file():
    a = load_factory("factory_models:make_tiny")  # tests/ is on sys.path under pytest
    b = load_model(FILE_SPEC)
    for net in (a, b):
        assert isinstance(net, torch.nn.Module) and not net.training
        assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(a(x), b(x))
    assert is_factory_spec("pkg.mod:make") and not is_factory_spec("lenet-mnist") and not is_factory_spec("a/b.pt")


def test_weights_are_loaded_strictly(tmp_path):
    from factory_models import make_tiny

    state = {k: v + 1.0 for k, v in make_tiny().state_dict().items()}
    w = tmp_path / "w.safetensors"
    save_file(state, str(w))
    net = load_model("factory_models:make_tiny", weights=w)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    extra = tmp_path / "extra.safetensors"
    save_file({**{k: v for k, v in state.items() if k != "0.bias"}, "head.w": torch.zeros(1)}, str(extra))
    with pytest.raises(ValueError, match=r"^weights: .* does not fit the model: missing 0\.bias; unexpected head\.w$"):
        load_model("factory_models:make_tiny", weights=extra)
    shaped = tmp_path / "shape.safetensors"
    save_file({**state, "4.bias": torch.zeros(3)}, str(shaped))
    with pytest.raises(ValueError, match=r"1 tensor\(s\) of another shape, e\.g\. 4\.bias is \(3,\) in the file"):
        load_model("factory_models:make_tiny", weights=shaped)


@pytest.mark.parametrize(("prefix", "side"), [("module.", "file"), ("_orig_mod.", "file"), ("net.", "model")])
def test_a_wrappers_state_dict_is_read_as_the_models_own(tmp_path, prefix, side):
    """DDP's module., torch.compile's _orig_mod. (or a model built inside a wrapper): one prefix more or fewer."""
    from advlab.models.factory import WeightsRenamed, load_weights
    from factory_models import make_tiny

    state = {k: v + 1.0 for k, v in make_tiny().state_dict().items()}
    w = tmp_path / "w.safetensors"
    save_file({(prefix + k if side == "file" else k): v for k, v in state.items()}, str(w))
    net = make_tiny() if side == "file" else torch.nn.Module()
    if side == "model":
        net.net = make_tiny()  # type: ignore[assignment]
    with pytest.warns(WeightsRenamed, match=f"every key (carries|lacks) the prefix '{re.escape(prefix)}'"):
        load_weights(net, w)
    got = net.state_dict()
    assert all(torch.equal(got[(k if side == "file" else prefix + k)], v) for k, v in state.items())
    half = tmp_path / "half.safetensors"  # (a prefix on some keys only is not a wrapper's: refused as before)
    save_file({(prefix + k if i % 2 else k): v for i, (k, v) in enumerate(state.items())}, str(half))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_weights(make_tiny() if side == "file" else net, half)


@pytest.mark.parametrize(("spec", "weights", "message"), [
    ("factory_models:make_tiny", "w.pt", r"^weights: .*w\.pt is a pickle file, which can run code"),
    ("factory_models:make_tiny", "none.safetensors", r"^weights: .*none\.safetensors does not exist"),
    ("factory_models:make_tiny", "junk.safetensors", r"^weights: .*junk\.safetensors is not a safetensors file"),
    ("lenet-mnist", "w.safetensors", r"^weights: only read for a factory 'package\.module:factory'"),
    ("factory_models:not_a_model", None, r"^model: factory_models:not_a_model\(\) must return a torch\.nn\.Module, "
                                         r"got str$"),
    ("factory_models:broken", None, r"^model: factory_models:broken\(\) failed \(RuntimeError: out of coffee\)$"),
    ("factory_models:nothing", None, r"^model: factory_models:nothing: factory_models\.nothing does not exist$"),
    ("no_such_module_xyz:make", None, r"^model: no_such_module_xyz:make: cannot import no_such_module_xyz "
                                      r"\(ModuleNotFoundError"),
    ("missing_dir/nets.py:make", None, r"^model: missing_dir/nets\.py:make: file missing_dir/nets\.py does not exist"),
])
def test_bad_factories_and_weights_fail_in_one_line(tmp_path, spec, weights, message):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    exc = FileNotFoundError if weights == "none.safetensors" else ValueError
    with pytest.raises(exc, match=message) as err:
        load_model(spec, weights=None if weights is None else tmp_path / weights)
    assert "\n" not in str(err.value)


def test_shipped_names_still_load():
    net = load_model("lenet-mnist")
    assert net.advlab_meta["dataset"] == "mnist"


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from advlab.models.onnx import export_onnx

    return export_onnx(load_model("lenet-mnist"), tmp_path_factory.mktemp("onnx") / "lenet.onnx", (1, 28, 28))


@pytest.fixture(scope="module")
def mnist8():
    x, y = load_dataset("mnist", "test")
    return x[:8], y[:8]


def test_onnx_is_a_blackbox_with_torch_logits(lenet_onnx, mnist8):
    box = load_model(str(lenet_onnx))
    assert isinstance(box, BlackBox) and box.has_scores and box.meta["input"] == "x"
    x, _ = mnist8
    with torch.no_grad():
        ref = load_model("lenet-mnist")(x)
    got = torch.as_tensor(box.fn(x.numpy()))
    assert torch.allclose(got, ref, atol=1e-4) and torch.equal(got.argmax(1), ref.argmax(1))
    with pytest.raises(FileNotFoundError, match=r"^model: ONNX file .*nope\.onnx does not exist$"):
        load_model(str(lenet_onnx.parent / "nope.onnx"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_an_onnx_graph_with_a_fixed_batch_is_fed_batches_of_that_size(lenet_onnx, mnist8, tmp_path):
    """torch.onnx.export without dynamic_axes fixes N: advlab fills the last batch up and drops what it added."""
    x, y = mnist8
    fixed = tmp_path / "fixed3.onnx"
    torch.onnx.export(load_model("lenet-mnist"), (torch.zeros(3, 1, 28, 28),), str(fixed), dynamo=False,
                      input_names=["x"], output_names=["logits"])
    box, ref = load_model(str(fixed)), load_model(str(lenet_onnx))
    assert box.meta["input_shape"][0] == 3
    for n in (8, 3, 1):  # (8 = 3 + 3 + 2: the last batch filled up)
        assert torch.equal(torch.as_tensor(box.fn(x[:n].numpy())), torch.as_tensor(ref.fn(x[:n].numpy())))
    threat = ThreatModel("linf", 0.3)
    a = get_attack("square")(ref, x, y, threat, generator=torch.Generator().manual_seed(0))
    b = get_attack("square")(box, x, y, threat, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    rgb = torch.zeros(4, 3, 28, 28).numpy()
    with pytest.raises(ValueError, match=r"^model: fixed3\.onnx fails on images of shape \(3, 3, 28, 28\); its "
                                         r"input is x of shape \[3, 1, 28, 28\] \(") as e:
        box.fn(rgb)
    assert "\n" not in str(e.value)


class _ChannelsLast(torch.nn.Module):
    """lenet-mnist taking N×H×W×C (``"NHWC"``) or N×H×W (``"NHW"``), as Keras and TensorFlow exports do."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.net, self.layout = load_model("lenet-mnist"), layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2) if self.layout == "NHWC" else x[:, None])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("layout", ["NHWC", "NHW"])
def test_an_onnx_graph_taking_channels_last_is_fed_that_layout(layout, lenet_onnx, mnist8, tmp_path):
    """A Keras/TensorFlow export takes N×H×W×C: advlab's N×C×H×W images are transposed for it, not refused."""
    pytest.importorskip("onnxruntime")
    x, y = mnist8
    path = tmp_path / f"{layout}.onnx"
    shape = (1, 28, 28, 1) if layout == "NHWC" else (1, 28, 28)
    torch.onnx.export(_ChannelsLast(layout).eval(), (torch.zeros(*shape),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    box, ref = load_model(str(path)), load_model(str(lenet_onnx))
    assert box.meta["layout"] == layout and ref.meta["layout"] == "NCHW"
    assert torch.equal(torch.as_tensor(box.fn(x.numpy())), torch.as_tensor(ref.fn(x.numpy())))
    threat = ThreatModel("linf", 0.3)
    a, b = (get_attack("square")(m, x, y, threat, generator=torch.Generator().manual_seed(0)) for m in (ref, box))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_an_onnx_graph_ending_in_a_softmax_is_read_through_its_log(lenet_onnx, tmp_path):
    """Keras exports end in a softmax (ART's predict functions return one too): read as logits, its saturated
    rows left Square weaker (185 of 200 broken, against 195)."""
    pytest.importorskip("onnxruntime")
    x, y = load_dataset("mnist", "test")
    x, y = x[:200], y[:200]
    path = tmp_path / "soft.onnx"
    torch.onnx.export(torch.nn.Sequential(load_model("lenet-mnist"), torch.nn.Softmax(dim=1)).eval(),
                      (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    box, ref = load_model(str(path)), load_model(str(lenet_onnx))
    with pytest.warns(ModelReturnsProbabilities, match=r"soft\.onnx returns probabilities .* though output='logits'"):
        got = box.scores(x[:8])
    assert torch.allclose(got, ref.scores(x[:8]).log_softmax(1), atol=1e-3)
    threat = ThreatModel("linf", 0.2)
    a, b = (get_attack("square")(m, x, y, threat, generator=torch.Generator().manual_seed(0), max_queries=1000)
            for m in (box, ref))
    assert int(a.success.sum()) == int(b.success.sum()) == 195  # (the logits' own count, 0.975)


def test_onnx_square_matches_torch_under_a_seed(lenet_onnx, mnist8):
    """At ε 0.3 Square's steps are accepted by clear loss changes, so ~1e-6 logit differences change nothing.

    (At ε 0.1, with up to 5 000 queries, a near-tie sometimes goes the other way and a trajectory
    diverges; docs/benchmarks.md counts how often.)
    """
    x, y = mnist8
    threat = ThreatModel("linf", 0.3)
    a = get_attack("square")(load_model("lenet-mnist"), x, y, threat, generator=torch.Generator().manual_seed(0))
    b = get_attack("square")(load_model(str(lenet_onnx)), x, y, threat, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success) and torch.equal(a.queries, b.queries)


def test_onnx_hopskipjump_agrees_with_torch_under_a_seed(lenet_onnx, mnist8):
    """HopSkipJump's binary searches end within θ of the boundary, where ~1e-6 logit differences can flip a label.

    So its x_adv need not be bitwise equal (docs/benchmarks.md counts how many are); success and
    queries must agree, and the perturbation sizes stay close.
    """
    x, y = mnist8
    threat = ThreatModel("l2", float("inf"))
    a = get_attack("hopskipjump")(load_model("lenet-mnist"), x, y, threat, generator=torch.Generator().manual_seed(0))
    b = get_attack("hopskipjump")(load_model(str(lenet_onnx)), x, y, threat,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.success, b.success) and torch.equal(a.queries, b.queries)
    da, db = (a.x_adv - x).flatten(1).norm(dim=1), (b.x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(da, db, rtol=0.25), (da, db)


def test_evaluate_onnx_end_to_end_equals_torch_rows(lenet_onnx, tmp_path, capsys):
    rows = {}
    for name, model in (("torch", "lenet-mnist"), ("onnx", str(lenet_onnx))):
        out = tmp_path / name
        assert main(["evaluate", "--model", model, "--attacks", "square", "--eps", "0.3", "--n", "12", "--threads",
                     "1", "--no-progress", "--no-checks", "--out", str(out)]) == 0
        rows[name] = json.loads((out / "results.json").read_text())
    keys = ("attack", "eps", "n", "acc1_adv", "acc1_clean", "success_rate", "median_linf", "mean_queries")
    assert [[r[k] for k in keys] for r in rows["torch"]] == [[r[k] for k in keys] for r in rows["onnx"]]



def test_a_file_factory_resumes_in_a_new_process(tmp_path):
    """The class's module name is part of the store's model identity: a second process must find the same model."""
    import os
    import subprocess
    import sys

    (tmp_path / "mine.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Mine(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        torch.manual_seed(0)\n"
        "        self.fc = nn.Linear(64, 10)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
        "\n\ndef make():\n    return Mine()\n")
    cmd = [sys.executable, "-m", "advlab", "evaluate", "--model", f"{tmp_path / 'mine.py'}:make", "--dataset", "digits",
           "--attacks", "fgsm", "--eps", "0.1", "--n", "20", "--no-checks", "--no-progress", "--threads", "1",
           "--out", str(tmp_path / "out")]
    for seed in ("1", "2"):  # str hashes differ between these two processes
        done = subprocess.run(cmd, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "holds results of another model" not in done.stderr
