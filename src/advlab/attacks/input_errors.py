"""The one-line errors of a model an attack cannot differentiate or call: no input gradient, numpy input, one output.

Kept apart from :mod:`advlab.attacks.guard` (the adapters), which re-exports them.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from advlab._checks import looks_channels_last
from advlab.models.blackbox import BlackBox
from advlab.models.wrappers import declared_input_shape
from advlab.models.zoo import layout_hint
from advlab.threat import canonical_norm


class NoInputGradient(RuntimeError):
    """A gradient attack met a model whose output does not depend on its input in autograd.

    Raised in place of autograd's own "element 0 of tensors does not require grad" when the model's
    ``forward`` leaves autograd (numpy, Pillow, ``.detach()`` or ``torch.no_grad()`` inside it), and
    by ``pgd-bpda`` when no stand-in routes a gradient around such a break.
    """


def no_gradient_message(name: str) -> str:
    """The one-line error of a gradient attack on a model whose output leaves autograd."""
    return (f"{name}: the model's output does not depend on its input in autograd (numpy, Pillow, .detach(), "
            "torch.no_grad() or torch.inference_mode() inside its forward), so a gradient attack has nothing to "
            "follow; use a black-box attack (square, hopskipjump), a transfer attack, or pgd-bpda, which routes "
            "around such a break where it sits at a submodule's input")


def leaves_autograd(model: Any, x: torch.Tensor) -> bool:
    """Whether ``model``'s output is cut off from its input in the autograd graph (or refuses a grad input)."""
    xr = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(xr)
            if not out.requires_grad:
                return True
            (g,) = torch.autograd.grad(out.float().sum(), xr, allow_unused=True)
    except RuntimeError:
        return True
    return g is None


def numpy_only_message(model: Any, x: torch.Tensor, white_box: bool) -> str | None:
    """The one-line error for a plain function that fails on a torch tensor and runs on a numpy array, else None.

    Called only after the function raised inside an attack, so a working function is never called more.
    """
    if isinstance(model, (nn.Module, BlackBox)) or not callable(model):
        return None
    probe = x[:2].detach()
    for given, works in ((probe.clone(), False), (probe.cpu().numpy().copy(), True)):
        try:
            with torch.no_grad():
                model(given)
        except Exception:
            if works:
                return None
        else:
            if not works:
                return None  # (it runs on a tensor: the attack's error is its own)
    name = getattr(model, "__name__", type(model).__name__)
    wrap = "advlab.models.BlackBox(fn, output='logits' | 'probs' | 'labels', input_format='numpy')"
    if white_box:
        return (f"model: {name} takes numpy arrays, not torch tensors, so no gradient can pass through it; attack it "
                f"with a black-box attack (square, hopskipjump) through {wrap}")
    return f"model: {name} takes numpy arrays, not torch tensors; wrap it as {wrap}"


def one_output_message(name: str, shape: tuple[int, ...]) -> str:
    """The one-line error for a model with one output per image (a binary classifier's single logit or sigmoid)."""
    shown = "(N,)" if len(shape) == 1 else f"(N, {', '.join(str(d) for d in shape[1:])})"
    return (f"model: {name} returns one number per image (shape {shown}), not a score per class; advlab attacks a "
            "binary classifier as two classes: from a single logit z return torch.stack([-z, z], 1) (z of shape "
            "(N,)), from a sigmoid p return torch.stack([1 - p, p], 1)")


def threat_message(name: str, norms: Sequence[str], threat: object, params: Mapping[str, Any]) -> str:
    """The one-line error of an attack called without a ThreatModel: no threat, or the budget where it goes.

    ``params`` are the call's keywords: a peer's ``eps=`` / ``norm=`` among them goes into the example.
    """
    eps = params.get("eps", threat if isinstance(threat, numbers.Real) and not isinstance(threat, bool) else None)
    norm: str = norms[0]
    try:
        norm = canonical_norm(params.get("norm", threat if isinstance(threat, str) else norm))
    except (TypeError, ValueError):
        pass
    example = f"advlab.ThreatModel({norm!r}, eps={f'{eps:.6g}' if isinstance(eps, numbers.Real) else '...'})"
    if threat is None:
        return (f"{name}: missing its threat model, the fourth argument: {name}(model, x, y, {example}) (the "
                "budget, the norm, the bounds and targeting are the ThreatModel's)")
    return f"threat: expected a ThreatModel, got {type(threat).__name__}: {example}"


CHANNELS = re.compile(r"expected input\[([\d, ]+)\] to have (\d+) channels, but got (\d+) channels")
MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")


def first_layer_message(error: BaseException, x: Any) -> str | None:
    """Why the model's first layer refused the images themselves, with the conversion; None if ``error`` says not.

    A convolution that names the images' own shape (the batch size aside: the attacks probe their model on two
    of the images) and another channel count, or a ``Flatten``-then-``Linear`` model whose inputs per image
    equal the images' values; a deeper layer's mismatch is the model's own.
    """
    if not isinstance(error, RuntimeError):
        return None
    shape, text = tuple(x.shape[1:]), str(error)
    if (m := CHANNELS.search(text)) and tuple(int(d) for d in m.group(1).split(","))[1:] == shape:
        takes, has = int(m.group(2)), int(m.group(3))
        fix = {(3, 1): "grey images as RGB: x.repeat(1, 3, 1, 1)",
               (1, 3): "colour images as grey: x.mean(1, keepdim=True), or luminance weights (0.299, 0.587, 0.114)",
               (3, 4): "RGBA images without alpha: x[:, :3]"}.get((takes, has), "the model's own input")
        return (f"the model's first convolution takes {takes}-channel images, the images of "
                f"{'×'.join(map(str, shape))} have {has} ({fix})")
    values = math.prod(shape)
    if (m := MATMUL.search(text)) and int(m.group(2)) == values and len(shape) >= 2:
        takes = int(m.group(3))
        fix = {3 * values: "grey images as RGB: x.repeat(1, 3, 1, 1)",
               values // 3: "colour images as grey: x.mean(1, keepdim=True)"}.get(takes, "images of the size it was "
                                                                                 "trained on")
        return (f"the model's first linear layer takes {takes} values per image, the images have {values} "
                f"({'×'.join(map(str, shape))}): {fix}")
    return None


def layout_message(model: Any, x: Any, error: Exception, arg: str = "x") -> str | None:
    """The one-line error of a model that failed on images laid out otherwise than it takes them; None if unknown.

    A model whose checkpoint declares its input shape is compared with it; any other model is only suspected of a
    layout mistake when it raised a RuntimeError on channels-last (N×H×W×C) or channel-less (N×H×W) images, or
    its first convolution named another channel count than the images have (grey into RGB, or the reverse).
    """
    takes, got = declared_input_shape(model), tuple(x.shape[1:])
    if takes is not None and got != takes:
        return (f"{arg}: the model takes images of {'×'.join(map(str, takes))} (its checkpoint's in_shape), got a "
                f"batch of shape {tuple(x.shape)}{layout_hint(got, takes)}")
    if takes is not None or not isinstance(error, RuntimeError):
        return None
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if looks_channels_last(x.shape):
        return (f"{arg}: the model failed on a batch of shape {tuple(x.shape)}, which looks channels-last (N×H×W×C); "
                f"advlab passes images as N×C×H×W: x.permute(0, 3, 1, 2) (the model said: {first})")
    if len(x.shape) == 3 and "channel" in first:
        return (f"{arg}: the model failed on a batch of shape {tuple(x.shape)} (N×H×W, no channel axis); grey images "
                f"are N×1×H×W: x.unsqueeze(1) (the model said: {first})")
    said = first_layer_message(error, x)
    return None if said is None else f"{arg}: {said}"


__all__ = [
    "NoInputGradient",
    "first_layer_message",
    "layout_message",
    "leaves_autograd",
    "no_gradient_message",
    "numpy_only_message",
    "one_output_message",
    "threat_message",
]
