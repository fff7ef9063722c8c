"""What a user's model must give back, checked before advlab relies on it: logits, and its input left alone.

A model written for training or serving need not keep the contract an attack relies on. The ways
it breaks it are caught here, on a copy of the model and two of the attacked images, under forked
random streams (the model and the caller's RNGs are untouched):

* **Its output is not a tensor** (a tuple of logits and auxiliary outputs, a dict, a Hugging Face
  output object): a one-line ``ValueError`` says what it returned and how to pass the logits,
  instead of an error deep inside a loss function.
* **Its forward changes its input in place** (``x.sub_(mean)`` inside ``forward``): every call
  would rewrite the caller's tensor, so the clean images, the attack's iterates and the norms
  measured on them would all be wrong, or autograd refuses the in-place change of a leaf. Such a
  model is run through :class:`InputCopy`, which hands it a copy of each input, with a
  :class:`ModelChangesInput` warning: the numbers are then those of the function the model
  computes on a fresh input.
* **It returns one number per image** (a binary classifier's single logit or sigmoid, shape N or
  N×1): whether 0 or 0.5 separates the classes cannot be read from it, so a one-line
  ``ValueError`` says how to return two columns.
* **It computes in another floating dtype** (``model.double()``, ``model.bfloat16()``) and fails
  on the images' float32: it is run through :class:`InputCast` (inputs cast to its dtype, logits
  back), with a :class:`ModelDtype` warning. A float16 model (cast or not) is also run through
  :class:`ScaledGradient`, so that its small gradients do not underflow.
* **It returns probabilities** (a softmax at the end of ``forward``: non-negative rows that sum to
  1): every attack would read them as logits, so cross-entropy is taken of a softmax of
  probabilities, whose gradient nearly vanishes, and DeepFool's and Carlini–Wagner's margins are
  differences of probabilities, which saturate. On lenet-mnist behind a softmax this left CW-L2
  at Acc@1 0.825 at ε = 2 and DeepFool at 0.970 at ε = 0.3, against 0.040 and 0.000 on the logits.
  Such a model is run through :class:`LogProbabilities`, which returns log p (= the logits up to a
  per-row constant: the same prediction, margins and cross-entropy as the logits, as Carlini and
  Wagner attacked defensive distillation), with a :class:`ModelReturnsProbabilities` warning.
  Rows that sum to another constant (``c · softmax``, a deliberately saturated output) are not
  changed: the gradient-masking checks flag those.
* **Its output for one image depends on the other images of the batch** (BatchNorm on batch
  statistics baked into a model traced in training mode, where no flag can switch it): every
  number then depends on the batch size and order. Nothing can be adapted; a
  :class:`ModelBatchDependent` warning says so. (A module left in training mode is not this case:
  advlab runs an eval-mode copy of it, see :func:`~advlab.attacks.fastview.inference_view`.)
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from advlab._deprecation import caller_level
from advlab.attacks.input_errors import (
    NoInputGradient,
    leaves_autograd,
    no_gradient_message,
    one_output_message,
)
from advlab.attacks.modulecopy import Tree, rng_sandbox
from advlab.models.blackbox import PROBABILITY_ATOL, ModelReturnsProbabilities, is_probabilities, row_sums
from advlab.threat import per_row

# Models checked once per image dtype (a float32 model keeps the contract for float32 images, not float64
# ones): those found to keep it, with the dtypes seen; the adapters made for the others (None: any dtype).
_CHECKED: weakref.WeakKeyDictionary[nn.Module, set[torch.dtype] | None] = weakref.WeakKeyDictionary()


class ModelChangesInput(UserWarning):
    """The model's forward changes its input in place: advlab hands it a copy of each input."""


class ModelDtype(UserWarning):
    """The model computes in another floating dtype than the images: advlab casts its inputs and logits."""


class ModelBatchDependent(UserWarning):
    """The model's output for one image changes with the other images of its batch (batch statistics)."""


def shown_name(model: Any) -> str:
    """The name of the user's model behind advlab's adapters (its class name)."""
    return str(getattr(model, "_advlab_shown", None) or type(model).__name__)


class _Adapter(nn.Module):
    """``model`` behind a change of how it is called; the model's own attributes (``bpda``, flags) read through."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training
        # (the user's model's name, for warnings about the adapter: it is what the user wrote)
        self.__dict__["_advlab_shown"] = shown_name(model)
        _CHECKED[self] = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


class InputCopy(_Adapter):
    """``model`` called on a copy of its input (its forward changes its input in place)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return self.model(x.clone(), *args, **kwargs)


class InputCast(_Adapter):
    """``model`` called on its input cast to ``dtype`` (a new tensor), its logits cast back to the input's dtype."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__(model)
        self.dtype = dtype

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        out = self.model(x.to(self.dtype, copy=True), *args, **kwargs)
        return out.to(x.dtype) if isinstance(out, torch.Tensor) else out


class ScaledGradient(_Adapter):
    """``model`` (computing in float16) with its output cast to the input's dtype and its gradients scaled per example.

    A gradient reaching a float16 model from a float32 loss is cast to float16 on its way in, where an
    example's cross-entropy gradient (1e-8 for a confident prediction) underflows to zero: the attack
    would see no gradient where the model has one (half of lenet-mnist's test images in float16). Each
    example's output gradient is scaled by a power of two to a largest magnitude in [1, 2) and divided
    by it again at the input: exact but for float16's own rounding, as in mixed-precision training's
    loss scaling. Values are unchanged (the logits are only cast).
    """

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        scale: list[torch.Tensor] = []  # (set by the output's hook, read by the input's)
        scaled = torch.is_grad_enabled() and x.requires_grad
        if scaled:  # (through an alias: the caller's tensor carries no hook)
            x = x.view_as(x)
            x.register_hook(lambda g: g / per_row(scale[0], g) if scale else g)  # type: ignore[no-untyped-call]
        out = self.model(x, *args, **kwargs)
        if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
            return out
        out = out.to(x.dtype)
        if scaled and out.requires_grad:
            out.register_hook(lambda g: _scaled(g, scale))  # type: ignore[no-untyped-call]
        return out


def narrower_exponent(dtype: torch.dtype, than: torch.dtype) -> bool:
    """Whether floating ``dtype`` underflows before both ``than`` and float32 do (float16: its gradients vanish)."""
    if not (dtype.is_floating_point and than.is_floating_point):
        return False
    tiny = torch.finfo(dtype).tiny
    return tiny > torch.finfo(than).tiny and tiny > torch.finfo(torch.float32).tiny


def _scaled(g: torch.Tensor, scale: list[torch.Tensor]) -> torch.Tensor:
    """The output's gradient, each row scaled by a power of two to a largest magnitude in [1, 2) (kept in ``scale``)."""
    peak = g.detach().flatten(1).abs().amax(dim=1)  # (N×K or more: one output per image is refused)
    s = torch.where(peak > 0, torch.exp2(-torch.floor(torch.log2(peak.clamp_min(torch.finfo(g.dtype).tiny)))), 1.0)
    scale[:] = [s]
    return g * per_row(s, g)


class LogitsField(_Adapter):
    """``model(x).logits`` (or ``["logits"]``): the logits of a model that returns an output object (Hugging Face)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return logits_field(self.model(x, *args, **kwargs))


def logits_field(out: Any) -> Any:
    """``out.logits`` or ``out["logits"]`` where it is a tensor (an output object's logits), else None."""
    found = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    return found if isinstance(found, torch.Tensor) else None


class ModelOutputObject(UserWarning):
    """The model returns an output object with a ``logits`` field: advlab attacks that field."""


class LogProbabilities(_Adapter):
    """``log model(x)``: log-probabilities from a model that returns probabilities (clamped at the dtype's tiny)."""

    returns_probabilities = True  # (what the model itself returns: the escalation's decision-based step reads it)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        out = self.model(x, *args, **kwargs)
        return out.clamp_min(torch.finfo(out.dtype).tiny).log()


def unadapted(net: Any) -> Any:
    """The model under the adapters :func:`check_io` put around it (itself where there are none)."""
    while isinstance(net, _Adapter):
        net = net.model
    return net


def _run(model: nn.Module, x: torch.Tensor) -> Any:
    """The model's output on ``x`` under forked random streams and no autograd, or the exception it raised."""
    try:
        with rng_sandbox(x.device), torch.no_grad():
            return model(x)
    except Exception as e:  # (the caller decides: try another dtype, or leave it to the attack)
        return e


def _own_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter (else buffer), or None."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def check_io(model: Any, x: torch.Tensor) -> Any:
    """``model``, or an adapter of it that keeps the contract an attack relies on.

    Runs a copy of ``model`` once on a copy of ``x[:2]`` (once per model and image dtype: a model found
    to keep the contract is remembered, weakly). Where that raises and the model's parameters are of another
    floating dtype than ``x`` (``model.double()``, ``model.bfloat16()``) and the probe cast to it
    runs, the model is run through :class:`InputCast` (a :class:`ModelDtype` warning). Where its
    forward changes its input, through :class:`InputCopy`. Where it returns probabilities, through
    :class:`LogProbabilities` (a :class:`ModelReturnsProbabilities` warning). Where it returns an output object
    with a ``logits`` field, through :class:`LogitsField`. Anything that is not an ``nn.Module``
    (a BlackBox, a function), a model that cannot be copied, or one whose copy still raises is
    returned as it is: the attack then meets the problem and reports it.

    Raises:
        ValueError: The model's output is not a tensor of logits.
    """
    seen = _CHECKED.get(model, set()) if isinstance(model, nn.Module) else None
    if seen is None or x.dtype in seen or len(x) == 0:
        return model
    probe, name = x[:2].detach(), shown_name(model)
    try:
        copied = Tree().module(model, "")
    except Exception:  # (copying is the fast view's business too: it reports it)
        return model
    given = probe.clone()
    out = _run(copied, given)
    dtype = _own_dtype(model)
    if isinstance(out, Exception) and probe.is_floating_point() and dtype is not None and dtype != probe.dtype:
        given = probe.to(dtype, copy=True)
        out = _run(copied, given)
        if not isinstance(out, Exception):
            warnings.warn(f"advlab: {name} computes in {dtype}, the images are {probe.dtype}; advlab casts every "
                          f"input to {dtype} and the logits back", ModelDtype, stacklevel=caller_level())
            model = InputCast(model, dtype)  # (a new tensor per call: an in-place forward changes only it)
    if isinstance(out, Exception):
        return model
    if not isinstance(out, torch.Tensor):
        return _output_object(model, out, name, x)
    if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
        raise ValueError(one_output_message(name, tuple(out.shape)))
    _warn_if_batch_dependent(copied, given if isinstance(model, InputCast) else probe, out, name)
    adapted = model if isinstance(model, InputCast) else _input_left_alone(model, given, probe, name)
    if probe.is_floating_point() and any(narrower_exponent(d, probe.dtype) for d in (out.dtype, dtype) if d):
        warnings.warn(f"advlab: {name} computes in {out.dtype if out.dtype != probe.dtype else dtype}, whose small "
                      "gradients underflow; advlab scales each example's gradient through it (and back)",
                      ModelDtype, stacklevel=caller_level())
        adapted = ScaledGradient(adapted)
    if is_probabilities(out):
        warnings.warn(f"advlab: {name} returns probabilities (its rows are non-negative and sum to 1); advlab "
                      "attacks their logarithm, which has the logits' margins (return the logits to silence this)",
                      ModelReturnsProbabilities, stacklevel=caller_level())
        adapted = LogProbabilities(adapted)
    if adapted is model and not isinstance(model, _Adapter):
        _CHECKED.setdefault(model, set()).add(x.dtype)  # type: ignore[union-attr]
    return adapted


def _output_object(model: nn.Module, out: Any, name: str, x: torch.Tensor) -> Any:
    """A model returning an object with a ``logits`` field, as :class:`LogitsField` (checked); else one line."""
    if logits_field(out) is None:
        raise ValueError(f"model: {name} returns a {type(out).__name__}, not a tensor of logits; give advlab a "
                         "model whose forward returns the logits alone (for example a wrapper returning "
                         "model(x)[0], or model(x).logits)")
    warnings.warn(f"advlab: {name} returns an output object ({type(out).__name__}); advlab attacks its logits",
                  ModelOutputObject, stacklevel=caller_level())
    field = LogitsField(model)
    _CHECKED.pop(field, None)  # (checked now, as the model it stands for)
    return check_io(field, x)


def _warn_if_batch_dependent(copied: nn.Module, probe: torch.Tensor, out: torch.Tensor, name: str) -> None:
    """A :class:`ModelBatchDependent` warning where image 0's output changes when image 1 is replaced.

    Nothing is concluded for a model in training mode (advlab attacks an eval-mode copy of it), a
    single image, or a model whose two calls on the same batch differ (a random one).
    """
    if len(probe) < 2 or any(m.training for m in copied.modules()) or out.dim() != 2:
        return
    again = _run(copied, probe.clone())
    other = probe.clone()
    other[1:] = probe[1:].flip(-1).flip(-2)  # (another image in the same range: rotated by 180°)
    moved = _run(copied, other)
    if not (isinstance(again, torch.Tensor) and isinstance(moved, torch.Tensor) and torch.equal(again[:1], out[:1])):
        return
    if torch.equal(moved[1:], out[1:]) or torch.allclose(moved[:1], out[:1], rtol=1e-5, atol=1e-6):
        return  # (image 1 made no difference to the model, or none to image 0)
    warnings.warn(f"advlab: {name}'s output for one image changes with the other images of its batch (BatchNorm "
                  "on batch statistics, e.g. traced in training mode?): every number depends on the batch size and "
                  "order; evaluate the model in eval mode", ModelBatchDependent, stacklevel=caller_level())


def _input_left_alone(model: nn.Module, given: torch.Tensor, probe: torch.Tensor, name: str) -> nn.Module:
    """``model``, or :class:`InputCopy` of it (a warning) where its forward changed ``given`` (a copy of ``probe``)."""
    if torch.equal(given, probe):
        return model
    warnings.warn(f"advlab: {name}'s forward changes its input in place; advlab hands it a copy of every "
                  "input (write x = x - mean, not x.sub_(mean), to silence this)", ModelChangesInput,
                  stacklevel=caller_level())
    return InputCopy(model)


__all__ = [
    "PROBABILITY_ATOL",
    "InputCast",
    "InputCopy",
    "LogProbabilities",
    "LogitsField",
    "ModelBatchDependent",
    "ModelChangesInput",
    "ModelDtype",
    "ModelOutputObject",
    "ModelReturnsProbabilities",
    "NoInputGradient",
    "ScaledGradient",
    "check_io",
    "is_probabilities",
    "leaves_autograd",
    "no_gradient_message",
    "one_output_message",
    "row_sums",
    "unadapted",
]
