"""The fast view of a model that attacks run on: same function, faster on the CPU, model untouched.

Every registered attack, called directly or through the registry, runs on
``attack_view(model, x)``; ``with fast_views(False):`` turns the view off in the current context
(a context variable, so threads and async tasks each keep their own setting).

The view is a copy of the module tree that shares no tensor and no mutable attribute with the
model: parameters are detached clones (4-D CPU weights in ``channels_last`` layout), buffers,
tensor and NumPy attributes are clones, lists, dicts, sets and torch generators are copies.
Whether it may be used is decided on copies only, under a forked RNG, so deciding never changes
the model or the caller's random streams. Where the view could change the outcome or the model's
state, the model itself is returned and :class:`FastViewSkipped` says why.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeGuard

import torch
from torch import nn
from torch.nn.modules import module as _module

from advlab.attacks.modulecopy import Tree, rng_sandbox, same

Model = Callable[[torch.Tensor], torch.Tensor]
_ENABLED: ContextVar[bool] = ContextVar("advlab_fast_views", default=True)
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOOKS = {"_forward_hooks": "forward hooks", "_forward_pre_hooks": "forward pre-hooks",
          "_backward_hooks": "backward hooks", "_backward_pre_hooks": "backward pre-hooks"}


class FastViewSkipped(UserWarning):
    """The fast view of a model was not used: the attack runs on the model as given (the message says why)."""


@contextmanager
def fast_views(enabled: bool = True) -> Iterator[None]:
    """Within the block, attacks run on :func:`fast_view` of the model, or not (on by default)."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def attack_view(model: Any, x: torch.Tensor) -> Any:
    """What an attack runs on: :func:`fast_view` of ``model`` probed on ``x[:2]``, or ``model`` when off."""
    if not _ENABLED.get():
        return model
    return fast_view(model, x[:2])


def fast_view(model: Model, probe: torch.Tensor) -> Model:
    """The same network, set up for attacking it: a copy of ``model`` that computes faster on the CPU.

    The view's parameters are detached clones (autograd keeps nothing for the weight gradients
    an attack never asks for) and its 4-D CPU weights are ``channels_last`` (convolutions then
    take PyTorch's oneDNN path: LeNet-5's forward+backward on 1 000 MNIST images runs about 2.4×
    faster on 2 cores). It shares no tensor and no mutable attribute with the model, so nothing
    the view does changes the model (its parameters, buffers, attributes or mode); its methods
    (``bpda``, ...) and flags (``randomized``, ...) are the model's.

    Deciding is done on copies, under forked RNGs (torch CPU and the probe's device, NumPy,
    ``random``): a plain copy (original layout) runs twice on ``probe`` (a couple of the attacked
    images), then the same copy with ``channels_last`` weights once. The model itself is
    returned, with a :class:`FastViewSkipped` warning naming the reason, when a submodule has
    forward or backward hooks (or global module hooks are set), when the forward changes the
    copy's state (attributes, containers, buffers, parameters, generators), when the model is
    random without declaring ``randomized = True`` (an RNG stream moved, or two calls differ),
    when copying or running raises, or when the view's logits differ from the plain copy's
    beyond float32 rounding. Silently returned as given: anything that is not an ``nn.Module``,
    a view, a model with a submodule that is a ScriptModule, declares ``randomized = True`` or is
    in training mode (dropout is random, BatchNorm would update its statistics).
    """
    if not _viewable(model):
        return model
    reason = _hooks(model)
    if reason is None:
        view, reason = _probe(model, probe.detach())
        if view is not None:
            return view
    warnings.warn(f"advlab: fast view of {type(model).__name__} not used ({reason}); attacking the model as given",
                  FastViewSkipped, stacklevel=_caller_level())
    return model


def _viewable(model: object) -> TypeGuard[nn.Module]:
    """False for the declared cases, which are returned unchanged without a warning."""
    return (
        isinstance(model, nn.Module)
        and not getattr(model, "_advlab_view", False)
        and not any(m.training or getattr(m, "randomized", False) or isinstance(m, torch.jit.ScriptModule)
                    for m in model.modules())
    )


def _hooks(model: nn.Module) -> str | None:
    """Why hooks rule the view out (global module hooks, or hooks on a submodule), or None."""
    for attr, what in _HOOKS.items():
        if getattr(_module, "_global" + attr, None):
            return f"global module {what} are registered"
    for name, m in model.named_modules():
        for attr, what in _HOOKS.items():
            if getattr(m, attr, None):
                return f"it has {what}" + (f" on {name}" if name else "")
    return None


def _probe(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module | None, str | None]:
    """The view if it may be used, else (None, the reason); the model is never run or changed."""
    stage = "copying it"
    try:
        tree = Tree()
        view = tree.module(model, "")
        stage = "running a copy of it"
        with rng_sandbox(probe.device) as moved, torch.no_grad():
            first, second = view(probe), view(probe)
            drew = moved()
        stage = "comparing the copy's state"
        changed = tree.changed()
        if changed is not None:
            return None, f"its forward changes state: {changed}"
        if drew is not None:
            return None, f"it draws from {drew} in forward but does not declare randomized = True"
        if not same(second, first, {}):
            return None, "two calls on the same input differ, but it does not declare randomized = True"
        stage = "building the channels_last view"
        tree.channels_last()
        stage = "running the channels_last view"
        with rng_sandbox(probe.device), torch.no_grad():
            got = view(probe)
    except Exception as e:  # reported to the user: the attack then runs on the model as given
        return None, f"{stage} raised {_short(e)}"
    if not isinstance(first, torch.Tensor) or not isinstance(got, torch.Tensor):
        return None, f"its output is a {type(first).__name__}, not a tensor of logits"
    if got.shape != first.shape:
        return None, f"the view's logits have shape {tuple(got.shape)}, the model's {tuple(first.shape)}"
    if not torch.allclose(got, first, rtol=1e-3, atol=1e-4 * (1.0 + float(first.abs().max()))):
        diff = float((got - first).abs().max())
        return None, f"the view's logits differ from the model's by {diff:.1e}, beyond float32 rounding"
    tree.mark()
    return view, None


def _short(e: BaseException, limit: int = 120) -> str:
    """``Type: message`` on one line, shortened."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[: limit - 1] + '…' if len(text) > limit else text}".rstrip(": ")


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside advlab, so the warning points at the user's call."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    return level
