"""A user's model that returns something other than logits, or changes its input in place (advlab.attacks.guard)."""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab import evaluate
from advlab.attacks import get_attack
from advlab.attacks.guard import (
    InputCast,
    InputCopy,
    LogProbabilities,
    ModelBatchDependent,
    ModelChangesInput,
    ModelDtype,
    ModelOutputObject,
    ModelReturnsProbabilities,
    check_io,
    is_probabilities,
)
from advlab.threat import ThreatModel

LINF = ThreatModel("linf", 0.3)


class InPlaceNormalise(nn.Module):
    """The digits MLP behind a normalisation written in place on the caller's tensor (and undone inside)."""

    randomized = False  # a declared flag, read through the copy

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5).mul_(2.0)
        return self.mlp(x / 2.0 + 0.5)


class LogitsAndProbabilities(nn.Module):
    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.mlp(x)
        return z, z.softmax(1)


def test_an_in_place_forward_gets_a_copy_and_the_plain_models_numbers(digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:100].clone(), y[:100]
    before = x.clone()
    model = InPlaceNormalise(digits_mlp).eval()
    with pytest.warns(ModelChangesInput, match="changes its input in place"):
        got = get_attack("pgd")(model, x, y, LINF, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # the caller's images are untouched
    want = get_attack("pgd")(digits_mlp, x, y, LINF, generator=torch.Generator().manual_seed(0))
    assert float((got.x_adv - want.x_adv).abs().max()) <= 1e-5
    assert torch.equal(got.success, want.success)
    assert float((got.x_adv - x).abs().max()) <= 0.3 + 1e-6


def test_the_evaluation_of_an_in_place_forward_is_the_plain_models(digits, digits_mlp):
    _, _, x, y = digits
    kw = {"n": 60, "progress": False, "checks": False, "ensemble": False}
    with pytest.warns(ModelChangesInput):
        ev = evaluate(InPlaceNormalise(digits_mlp).eval(), (x, y), ["fgsm", "pgd"], [0.1, 0.3], **kw)
    ref = evaluate(digits_mlp, (x, y), ["fgsm", "pgd"], [0.1, 0.3], **kw)
    assert [(r.attack, r.eps, r.acc1_clean, r.acc1_adv) for r in ev.rows] == [
        (r.attack, r.eps, r.acc1_clean, r.acc1_adv) for r in ref.rows]


def test_the_copy_reads_the_models_declarations_through(digits_mlp):
    wrapped = InputCopy(InPlaceNormalise(digits_mlp).eval())
    assert wrapped.randomized is False and not wrapped.training
    assert check_io(wrapped, torch.rand(2, 1, 8, 8)) is wrapped  # checked once, not wrapped twice


def test_an_honest_model_is_returned_as_it_is(digits_mlp):
    assert check_io(digits_mlp, torch.rand(3, 1, 8, 8)) is digits_mlp


def test_a_model_that_returns_a_tuple_fails_in_one_line(digits, digits_mlp):
    _, _, x, y = digits
    model = LogitsAndProbabilities(digits_mlp).eval()
    for call in (lambda: get_attack("fgsm")(model, x[:8], y[:8], LINF),
                 lambda: evaluate(model, (x, y), ["fgsm"], [0.3], n=20, progress=False)):
        with pytest.raises(ValueError, match=r"^model: LogitsAndProbabilities returns a tuple, not a tensor of logits"):
            call()


class _Output:
    """A Hugging Face style output object: the logits as a field, beside other fields."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits, self.hidden_states = logits, None


class OutputObject(nn.Module):
    def __init__(self, net: nn.Module, as_dict: bool) -> None:
        super().__init__()
        self.net, self.as_dict = net, as_dict

    def forward(self, pixel_values: torch.Tensor) -> object:
        z = self.net(pixel_values)
        return {"logits": z, "loss": None} if self.as_dict else _Output(z)


@pytest.mark.parametrize("as_dict", [False, True])
def test_an_output_object_with_logits_is_attacked_through_its_logits(as_dict, digits, digits_mlp):
    """Hugging Face image classifiers return ImageClassifierOutput(logits=...) (or a dict): the same attack."""
    _, _, x, y = digits
    model = OutputObject(digits_mlp, as_dict).eval()
    with pytest.warns(ModelOutputObject, match=r"^advlab: OutputObject returns an output object \((dict|_Output)\)"):
        got = get_attack("pgd")(model, x[:60], y[:60], LINF, generator=torch.Generator().manual_seed(0))
    want = get_attack("pgd")(digits_mlp, x[:60], y[:60], LINF, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.success, want.success)
    kw = {"n": 60, "progress": False, "checks": False}
    with pytest.warns(ModelOutputObject):
        ev = evaluate(model, (x, y), ["fgsm"], [0.3], **kw)
    assert [r.acc1_adv for r in ev.rows] == [r.acc1_adv for r in evaluate(digits_mlp, (x, y), ["fgsm"], [0.3], **kw).rows]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("attack", ["pgd", "square"])
def test_a_model_in_another_dtype_is_attacked_through_a_cast(dtype, attack, digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:60], y[:60]
    model = copy.deepcopy(digits_mlp).to(dtype)
    kw = {"max_queries": 200} if attack == "square" else {}
    with pytest.warns(ModelDtype, match=f"computes in {dtype}"):
        r = get_attack(attack)(model, x, y, LINF, generator=torch.Generator().manual_seed(0), **kw)
    assert r.x_adv.dtype == torch.float32 and float((r.x_adv - x).abs().max()) <= 0.3 + 1e-6
    with torch.no_grad():
        fooled = model(r.x_adv.to(dtype)).argmax(1) != y
    assert torch.equal(r.success, fooled)  # success is the model's own reading, in its own dtype
    assert float(r.success.float().mean()) > 0.5
    assert next(model.parameters()).dtype == dtype  # the model is left as it is


class HalfInside(nn.Module):
    """A user's float16 model: casts its input itself, returns float16 logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).half()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t.half())


def _input_grad(model: object, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xr).float(), y, reduction="sum")  # type: ignore[operator]
    return torch.autograd.grad(loss, xr)[0]


@pytest.fixture(scope="module")
def lenet_200():
    from advlab.data import load_dataset
    from advlab.models import load_model

    x, y = load_dataset("mnist")
    return load_model("lenet-mnist"), x[:200], y[:200]


@pytest.mark.parametrize("inside", [True, False])
def test_a_float16_models_small_gradients_do_not_vanish(inside, lenet_200):
    """float16 underflows the cross-entropy gradient of confident examples to 0; advlab scales it through and back."""
    net, x, y = lenet_200
    model = HalfInside(net) if inside else copy.deepcopy(net).half()
    raw = _input_grad(HalfInside(net), x, y)  # (the underflow this guards against: on about half of the images)
    assert int((raw.flatten(1).abs().amax(1) == 0).sum()) > 50
    with pytest.warns(ModelDtype, match="whose small gradients underflow"):
        adapted = check_io(model, x)
    g, g32 = _input_grad(adapted, x, y), _input_grad(net, x, y)
    assert int((g.flatten(1).abs().amax(1) == 0).sum()) == 0
    assert float(nn.functional.cosine_similarity(g.flatten(1), g32.flatten(1)).median()) > 0.99
    with torch.no_grad():  # (values: only cast)
        assert torch.equal(adapted(x), model(x.half()).float())
    rates = [float(get_attack("fgsm")(m, x, y, ThreatModel("linf", 0.2)).success.float().mean()) for m in (model, net)]
    assert abs(rates[0] - rates[1]) < 0.03, rates


def test_a_bfloat16_model_is_evaluated_and_fingerprinted(digits, digits_mlp):
    """NumPy has no bfloat16: the weights' digest (the results store's identity of the model) reads raw bytes."""
    from advlab.models.checkpoint import tensor_digest

    _, _, x, y = digits
    bf = copy.deepcopy(digits_mlp).bfloat16()
    assert tensor_digest(bf) != tensor_digest(digits_mlp)
    with pytest.warns(ModelDtype):
        ev = evaluate(bf, (x, y), ["fgsm"], [0.1], n=40, progress=False, checks=False, ensemble=False)
    assert ev.rows[0].acc1_clean > 0.9


def test_the_cast_returns_logits_in_the_images_dtype(digits_mlp):
    wrapped = InputCast(copy.deepcopy(digits_mlp).double(), torch.float64)
    x = torch.rand(4, 1, 8, 8)
    assert wrapped(x).dtype == torch.float32
    assert torch.allclose(wrapped(x), digits_mlp(x), atol=1e-5)


def test_logits_that_are_not_a_matrix_are_refused_in_one_line(digits, digits_mlp):
    _, _, x, y = digits

    class Spatial(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return digits_mlp(t)[:, :, None, None]

    with pytest.raises(ValueError, match=r"^model: returns outputs of shape \(2, 10, 1, 1\) .*z\.flatten\(1\)"):
        get_attack("fgsm")(Spatial().eval(), x[:8], y[:8], LINF)


class Softmaxed(nn.Module):
    """A classifier whose forward ends in a softmax, times ``scale``."""

    def __init__(self, net: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(x).softmax(1)


@pytest.mark.parametrize("attack", ["deepfool", "cw"])
def test_a_model_that_returns_probabilities_is_attacked_through_their_log(attack, digits, digits_mlp):
    _, _, x, y = digits
    x, y = x[:100], y[:100]
    model = Softmaxed(digits_mlp).eval()
    threat = ThreatModel("l2", float("inf"))
    with pytest.warns(ModelReturnsProbabilities, match="returns probabilities"):
        got = get_attack(attack)(model, x, y, threat)
    want = get_attack(attack)(digits_mlp, x, y, threat)
    with torch.no_grad():
        fooled = model(got.x_adv).argmax(1) != y
    assert torch.equal(got.success, fooled)  # scored on the model's own output
    norms = (got.x_adv - x).flatten(1).norm(dim=1)[got.success]
    ref = (want.x_adv - x).flatten(1).norm(dim=1)[want.success]
    # the logits' margins: the same success and (nearly) the same minimal norms as on the logits
    assert float(got.success.float().mean()) >= float(want.success.float().mean()) - 0.02
    assert abs(float(norms.median()) - float(ref.median())) <= 0.05 * float(ref.median())


def test_the_log_of_probabilities_has_the_models_prediction(digits_mlp):
    x = torch.rand(16, 1, 8, 8)
    model = Softmaxed(digits_mlp).eval()
    with pytest.warns(ModelReturnsProbabilities):
        wrapped = check_io(model, x)
    assert isinstance(wrapped, LogProbabilities) and wrapped.returns_probabilities is True
    with torch.no_grad():
        assert torch.equal(wrapped(x).argmax(1), model(x).argmax(1))
        assert torch.allclose(wrapped(x), digits_mlp(x).log_softmax(1), atol=1e-5)


def test_a_scaled_softmax_is_left_to_the_checks(digits_mlp):
    model = Softmaxed(digits_mlp, scale=1e4).eval()
    assert check_io(model, torch.rand(4, 1, 8, 8)) is model


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 20), st.integers(1, 8), st.floats(0.1, 30.0), st.integers(0, 2**31 - 1))
def test_softmax_rows_are_probabilities_and_logits_are_not(k, n, scale, seed):
    z = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * scale
    assert is_probabilities(z.softmax(1))
    assert not is_probabilities(z) or bool((z >= 0).all())  # logits only when they happen to be a distribution
    assert not is_probabilities(z.softmax(1) * 2)


def test_a_model_that_does_not_read_the_images_is_named_under_the_table(digits, digits_mlp):
    _, _, x, y = digits

    class Uint8Input(nn.Module):  # expects pixel values 0..255, is given [0, 1]
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return digits_mlp(t / 255.0)

    kw = {"n": 100, "progress": False, "checks": False, "ensemble": False}
    ev = evaluate(Uint8Input().eval(), (x, y), ["fgsm"], [0.1], **kw)
    (note,) = ev.meta["notes"]
    assert "no better than always answering" in note and f"⚠ {note}" in str(ev)
    honest = evaluate(digits_mlp, (x, y), ["fgsm"], [0.1], **kw)
    assert honest.meta["notes"] == [] and "⚠" not in str(honest)


def test_acc5_of_a_model_with_five_classes_or_fewer_is_named_under_the_table(digits, digits_mlp):
    """Acc@5 of a 3-class model is 1 by definition: the table says so instead of letting it read as robustness."""
    _, _, x, y = digits
    keep = y < 3
    three = nn.Sequential(digits_mlp, Columns(3)).eval()
    kw = {"n": 60, "progress": False, "checks": False, "ensemble": False}
    ev = evaluate(three, (x[keep], y[keep]), ["fgsm"], [0.3], **kw)
    assert all(r.acc5_adv == 1.0 for r in ev.rows)
    assert any("the model has 3 classes, so Acc@5 counts every class" in n for n in ev.meta["notes"])
    assert "Acc@5 counts every class" in str(ev)
    ten = evaluate(digits_mlp, (x, y), ["fgsm"], [0.3], **kw)
    assert not any("Acc@5" in n for n in ten.meta["notes"])


class Columns(nn.Module):
    """The first ``k`` logits."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, : self.k]


@pytest.mark.parametrize("shape", ["(N,)", "(N, 1)"])
def test_a_model_with_one_output_per_image_gets_a_one_line_error(digits, digits_mlp, shape):
    """A binary classifier's single logit (or sigmoid) is refused in one line that says how to give two columns."""
    _, _, x, y = digits

    class OneLogit(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            z = digits_mlp(t)
            z = z[:, 1] - z[:, 0]
            return z if shape == "(N,)" else z[:, None]

    kw = {"n": 20, "progress": False, "checks": False, "ensemble": False}
    for call in (lambda: evaluate(OneLogit().eval(), (x, (y > 0).long()), ["fgsm"], [0.1], **kw),
                 lambda: get_attack("pgd")(OneLogit().eval(), x[:4], (y[:4] > 0).long(), ThreatModel("linf", 0.1))):
        with pytest.raises(ValueError, match=r"returns one number per image \(shape " + re.escape(shape)) as e:
            call()
        assert "\n" not in str(e.value) and "torch.stack([1 - p, p], 1)" in str(e.value)


class BatchStatsNet(nn.Module):
    """A conv net with BatchNorm; traced in training mode, its batch statistics are baked into the graph."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_a_model_whose_output_depends_on_the_batch_is_named(digits):
    _, _, x, _ = digits
    traced = torch.jit.trace(BatchStatsNet().train(), torch.rand(4, 1, 8, 8)).eval()  # flags say eval; the graph not
    with pytest.warns(ModelBatchDependent, match="changes with the other images of its batch"):
        check_io(traced, x[:8])
    honest = torch.jit.trace(BatchStatsNet().eval(), torch.rand(4, 1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_io(honest, x[:8]) is honest


def test_a_random_model_is_not_taken_for_a_batch_dependent_one(digits, digits_mlp):
    _, _, x, _ = digits

    class AlwaysDropout(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return digits_mlp(nn.functional.dropout(t, 0.3, training=True))

    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelBatchDependent)
        check_io(AlwaysDropout().eval(), x[:8])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_model_from_a_factory_is_evaluated(tmp_path, digits, digits_mlp):
    from advlab.models.factory import load_factory

    torch.jit.trace(copy.deepcopy(digits_mlp), torch.rand(2, 1, 8, 8)).save(str(tmp_path / "mlp.pt"))
    (tmp_path / "ts.py").write_text(f"import torch\n\n\ndef make():\n    return torch.jit.load({str(tmp_path / 'mlp.pt')!r})\n")
    model = load_factory(f"{tmp_path / 'ts.py'}:make")  # (requires_grad_ is not a ScriptModule method)
    assert not any(p.requires_grad for p in model.parameters())
    _, _, x, y = digits
    kw = {"n": 60, "progress": False, "checks": False, "ensemble": False}
    got = evaluate(model, (x, y), ["fgsm"], [0.3], **kw)
    want = evaluate(digits_mlp, (x, y), ["fgsm"], [0.3], **kw)
    assert [r.acc1_adv for r in got.rows] == [r.acc1_adv for r in want.rows]


def test_images_in_another_dtype_than_a_checked_model_are_cast_for_it(digits, digits_mlp):
    """The check is per image dtype: float32 images first, then numpy's float64 on the same model."""
    _, _, x, y = digits
    x, y = x[:40], y[:40]
    model = copy.deepcopy(digits_mlp)
    get_attack("fgsm")(model, x, y, LINF)  # checked for float32
    with pytest.warns(ModelDtype, match="computes in torch.float32, the images are torch.float64"):
        r = get_attack("pgd")(model, x.double(), y, LINF, generator=torch.Generator().manual_seed(0))
    assert r.x_adv.dtype == torch.float64 and float((r.x_adv - x.double()).abs().max()) <= 0.3 + 1e-9
    with torch.no_grad():
        assert torch.equal(r.success, model(r.x_adv.float()).argmax(1) != y)


def test_an_input_that_requires_grad_raises_no_torch_warning(digits, digits_mlp):
    _, _, x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_attack("fgsm")(digits_mlp, x[:8].clone().requires_grad_(True), y[:8], LINF)


@pytest.mark.parametrize(("attack", "threat"), [("deepfool", ThreatModel("l2", float("inf"))),
                                                ("jsma", ThreatModel("l0", 10.0))])
def test_a_model_whose_backward_cannot_keep_its_graph_gets_fresh_passes(attack, threat, digits, digits_mlp,
                                                                        monkeypatch):
    """torch.compile's backward refuses retain_graph; the attacks that reuse one graph recompute it instead."""
    _, _, x, y = digits
    x, y = x[:30], y[:30]
    want = get_attack(attack)(digits_mlp, x, y, threat)
    real = torch.autograd.grad

    def compiled_like(*args, **kwargs):
        if kwargs.get("retain_graph"):
            raise RuntimeError("This backward function was compiled with non-empty donated buffers which requires "
                               "create_graph=False and retain_graph=False")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", compiled_like)
    got = get_attack(attack)(digits_mlp, x, y, threat)
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.success, want.success)


def test_what_advlab_adapted_in_the_model_is_in_the_report(tmp_path, digits, digits_mlp):
    """The warnings reach a terminal; the report keeps them ("The model as advlab ran it")."""
    from advlab.report import render_report

    _, _, x, y = digits
    with pytest.warns(ModelReturnsProbabilities):
        ev = evaluate(Softmaxed(digits_mlp).eval(), (x, y), ["fgsm"], [0.3], n=40, progress=False, checks=False,
                      out=tmp_path / "run")
    assert [n.split(":")[0] for n in ev.meta["model_notes"]] == ["ModelReturnsProbabilities"]
    md, page = render_report(tmp_path / "run")
    assert "## The model as advlab ran it" in md.read_text() and "returns probabilities" in md.read_text()
    assert 'id="model-notes"' in page.read_text()
    honest = evaluate(digits_mlp, (x, y), ["fgsm"], [0.3], n=40, progress=False, checks=False, out=tmp_path / "h")
    assert honest.meta["model_notes"] is None
