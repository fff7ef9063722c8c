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

import copy
import os
import random
import sys
import types
import warnings
import weakref
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeGuard

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as _module

Model = Callable[[torch.Tensor], torch.Tensor]
_ENABLED: ContextVar[bool] = ContextVar("advlab_fast_views", default=True)
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOOKS = {"_forward_hooks": "forward hooks", "_forward_pre_hooks": "forward pre-hooks",
          "_backward_hooks": "backward hooks", "_backward_pre_hooks": "backward pre-hooks"}
_TREE = ("_parameters", "_buffers", "_modules")
# Values a forward cannot change in place (shared by the copies as they are), and containers whose
# .copy() returns the same type.
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size})
_COPYABLE = frozenset({list, dict, set, deque, OrderedDict, defaultdict})


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
        tree = _Tree()
        view = tree.module(model, "")
        stage = "running a copy of it"
        with _rng_sandbox(probe.device) as moved, torch.no_grad():
            first, second = view(probe), view(probe)
            drew = moved()
        stage = "comparing the copy's state"
        changed = tree.changed()
        if changed is not None:
            return None, f"its forward changes state: {changed}"
        if drew is not None:
            return None, f"it draws from {drew} in forward but does not declare randomized = True"
        if not _same(second, first, {}):
            return None, "two calls on the same input differ, but it does not declare randomized = True"
        stage = "building the channels_last view"
        tree.channels_last()
        stage = "running the channels_last view"
        with _rng_sandbox(probe.device), torch.no_grad():
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


class _Tree:
    """A copy of a module tree that shares no tensor and no mutable container with the original.

    ``memo`` maps the id of every original object copied to its copy (tied parameters and shared
    submodules stay tied and shared); ``modules`` lists (name, original, copy, attribute names
    right after copying) for the state comparison.
    """

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.modules: list[tuple[str, nn.Module, nn.Module, frozenset[str]]] = []
        self.params: list[int] = []

    def module(self, m: nn.Module, name: str) -> nn.Module:
        """The copy of ``m``: own attribute dicts, cloned parameters and buffers, copied containers."""
        if id(m) in self.memo:
            return self.memo[id(m)]  # type: ignore[no-any-return]
        new = object.__new__(type(m))  # not copy.copy: no __reduce__/__setstate__ round trip
        self.memo[id(m)] = new
        d = new.__dict__
        for key, value in m.__dict__.items():
            if key == "_parameters":
                d[key] = {n: None if p is None else self._param(p) for n, p in value.items()}
            elif key == "_modules":
                d[key] = {n: None if c is None else self.module(c, _join(name, n)) for n, c in value.items()}
            elif key == "_buffers":
                d[key] = {n: self.value(b, name) for n, b in value.items()}
            else:
                d[key] = self.value(value, _join(name, key))
        self.modules.append((name, m, new, frozenset(d)))
        return new

    def _param(self, p: torch.Tensor) -> torch.Tensor:
        if id(p) not in self.memo:
            self.params.append(id(p))
            self.memo[id(p)] = p.detach().clone()
        return self.memo[id(p)]  # type: ignore[no-any-return]

    def value(self, v: Any, name: str) -> Any:
        """An attribute value the copy may change without changing ``v``; immutable and foreign objects are ``v``."""
        kind = type(v)
        if kind in _ATOMIC:
            return v
        if id(v) in self.memo:
            return self.memo[id(v)]
        if isinstance(v, nn.Module):
            return self.module(v, name)
        if isinstance(v, nn.Parameter):  # a parameter also held elsewhere (a list, a weak reference)
            return self._param(v)
        if isinstance(v, torch.Tensor):
            new: Any = v.detach().clone()
        elif kind is torch.Generator:
            new = torch.Generator(v.device)
            new.set_state(v.get_state())
        elif isinstance(v, np.ndarray):
            new = v.copy()
        elif isinstance(v, types.MethodType) and isinstance(v.__self__, nn.Module):
            new = types.MethodType(v.__func__, self.module(v.__self__, name))
        elif type(v) is weakref.ref:  # e.g. an RNN's references to its own weights
            target = v()
            new = v if target is None else weakref.ref(self.value(target, name))
        elif isinstance(v, (list, dict, set, deque)):
            new = v.copy() if kind in _COPYABLE else copy.copy(v)
            self.memo[id(v)] = new
            if v and not isinstance(v, set):
                for k, x in (v.items() if isinstance(v, dict) else enumerate(v)):
                    new[k] = self.value(x, name)
        elif isinstance(v, tuple):
            items = [self.value(x, name) for x in v]
            if all(a is b for a, b in zip(items, v, strict=True)):
                return v
            new = type(v)(*items) if hasattr(v, "_fields") else type(v)(items)
        else:
            return v
        self.memo[id(v)] = new
        return new

    def changed(self) -> str | None:
        """The first attribute (dotted name) of a copied module that differs from the original's, or None."""
        for name, old, new, keys in self.modules:
            added = sorted(set(new.__dict__) - keys) + sorted(keys - set(new.__dict__))
            if added:
                return f"{_join(name, added[0])} was set or deleted"
            for key, value in old.__dict__.items():
                now = new.__dict__[key]
                if now is value:  # shared as it is: immutable, or a foreign object
                    continue
                if key in _TREE:
                    if now.keys() != value.keys():
                        return f"{_join(name, key)} gained or lost entries"
                    bad = [n for n, v in value.items() if not _same(now[n], v, self.memo)]
                    if bad:
                        return f"{_join(name, bad[0])} changed"
                elif not _same(now, value, self.memo):
                    return f"{_join(name, key)} changed"
        return None

    def channels_last(self) -> None:
        """Swap every 4-D CPU parameter clone for a ``channels_last`` one (tied parameters stay tied)."""
        for key in self.params:
            t = self.memo[key]
            if t.dim() == 4 and t.device.type == "cpu":
                # explicit strides: .contiguous() would keep a 1-input-channel weight as it is
                self.memo[key] = torch.empty_like(t, memory_format=torch.channels_last).copy_(t)
        for _, old, new, _ in self.modules:
            new.__dict__["_parameters"] = {
                n: None if p is None else self.memo[id(p)] for n, p in old.__dict__["_parameters"].items()
            }

    def mark(self) -> None:
        """Mark every copied module as a view (a view is never viewed again)."""
        for _, _, new, _ in self.modules:
            new.__dict__["_advlab_view"] = True


def _same(new: Any, old: Any, memo: dict[int, Any]) -> bool:
    """Whether ``new`` (in a copy) holds what ``old`` (in the original) holds: content, not identity."""
    kind = type(old)
    if kind in _ATOMIC:
        return type(new) is kind and (new is old or bool(new == old))
    if kind in _COPYABLE and not old:  # an empty container (the hook dicts): is it still empty?
        return type(new) is kind and not new
    if isinstance(old, nn.Module):
        return new is memo.get(id(old), old)
    if isinstance(old, torch.Tensor):
        return isinstance(new, torch.Tensor) and _equal(new, old)
    if type(old) is torch.Generator:
        return type(new) is torch.Generator and torch.equal(new.get_state(), old.get_state())
    if isinstance(old, np.ndarray):
        return (isinstance(new, np.ndarray) and new.shape == old.shape and new.dtype == old.dtype
                and bool(np.array_equal(new, old, equal_nan=old.dtype.kind in "fc")))
    if type(old) is weakref.ref:
        return type(new) is weakref.ref and new() is memo.get(id(old()), old())
    if isinstance(old, types.MethodType) and isinstance(old.__self__, nn.Module):
        return isinstance(new, types.MethodType) and new.__func__ is old.__func__ and _same(
            new.__self__, old.__self__, memo)
    if isinstance(old, (list, tuple, deque)):
        return (type(new) is type(old) and len(new) == len(old)
                and all(_same(a, b, memo) for a, b in zip(new, old, strict=True)))
    if isinstance(old, dict):
        return (type(new) is type(old) and new.keys() == old.keys()
                and all(_same(new[k], v, memo) for k, v in old.items()))
    if new is old:
        return True
    try:
        equal = new == old
    except Exception:
        return False
    return equal if isinstance(equal, bool) else False


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype, device and values (NaN equal to NaN), whatever the memory layout."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if torch.equal(a, b):
        return True
    return (a.is_floating_point() or a.is_complex()) and bool(((a == b) | (a.isnan() & b.isnan())).all())


@contextmanager
def _rng_sandbox(device: torch.device) -> Iterator[Callable[[], str | None]]:
    """Run the block with every random stream it may draw from restored afterwards.

    Yields a function naming the first stream the block has drawn from so far (torch's CPU or
    ``device``'s generator, NumPy's or Python's global one), or None.
    """
    on_cpu = device.type == "cpu"
    mod = None if on_cpu else torch.get_device_module(device.type)
    np_state, py_state = _np_state(), random.getstate()

    def torch_states() -> list[torch.Tensor]:
        return [torch.get_rng_state()] + ([] if mod is None else [mod.get_rng_state(device)])

    def moved() -> str | None:
        if not all(torch.equal(a, b) for a, b in zip(before, torch_states(), strict=True)):
            return "torch's random generator"
        now = _np_state()
        if not (now[0] == np_state[0] and np.array_equal(now[1], np_state[1]) and now[2:] == np_state[2:]):
            return "NumPy's global random generator"
        return "Python's random module" if random.getstate() != py_state else None

    with torch.random.fork_rng(devices=[] if on_cpu else [device], device_type=None if on_cpu else device.type):
        before = torch_states()
        try:
            yield moved
        finally:
            np.random.set_state(np_state)  # noqa: NPY002 -- restoring the caller's legacy global stream
            random.setstate(py_state)


def _np_state() -> tuple[Any, ...]:
    """NumPy's legacy global RNG state (what ``np.random.seed`` and ``np.random.rand`` use)."""
    return tuple(np.random.get_state(legacy=True))  # noqa: NPY002 -- the global stream is what is guarded


def _join(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


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
