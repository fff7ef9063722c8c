"""Copies of a module tree that share no tensor and no mutable container with the original.

:class:`Tree` builds them (tied parameters and shared submodules stay tied and shared) and says
which attribute a forward of the copy changed; :func:`same` compares contents, not identity;
:func:`rng_sandbox` runs a block with every random stream it may draw from restored afterwards.
The fast view (:mod:`advlab.attacks.fastview`) and the eval-mode copy of a model in training mode
are built and probed with them.
"""

from __future__ import annotations

import copy
import random
import types
import weakref
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

_TREE = ("_parameters", "_buffers", "_modules")
# Values a forward cannot change in place (shared by the copies as they are), and containers whose
# .copy() returns the same type.
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size})
_COPYABLE = frozenset({list, dict, set, deque, OrderedDict, defaultdict})


class Tree:
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
                d[key] = {n: None if c is None else self.module(c, join(name, n)) for n, c in value.items()}
            elif key == "_buffers":
                d[key] = {n: self.value(b, name) for n, b in value.items()}
            else:
                d[key] = self.value(value, join(name, key))
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
                return f"{join(name, added[0])} was set or deleted"
            for key, value in old.__dict__.items():
                now = new.__dict__[key]
                if now is value:  # shared as it is: immutable, or a foreign object
                    continue
                if key in _TREE:
                    if now.keys() != value.keys():
                        return f"{join(name, key)} gained or lost entries"
                    bad = [n for n, v in value.items() if not same(now[n], v, self.memo)]
                    if bad:
                        return f"{join(name, bad[0])} changed"
                elif not same(now, value, self.memo):
                    return f"{join(name, key)} changed"
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


def same(new: Any, old: Any, memo: dict[int, Any]) -> bool:
    """Whether ``new`` (in a copy) holds what ``old`` (in the original) holds: content, not identity."""
    kind = type(old)
    if kind in _ATOMIC:
        return type(new) is kind and (new is old or bool(new == old))
    if kind in _COPYABLE and not old:  # an empty container (the hook dicts): is it still empty?
        return type(new) is kind and not new
    if isinstance(old, nn.Module):
        return new is memo.get(id(old), old)
    if isinstance(old, torch.Tensor):
        return isinstance(new, torch.Tensor) and tensors_equal(new, old)
    if type(old) is torch.Generator:
        return type(new) is torch.Generator and torch.equal(new.get_state(), old.get_state())
    if isinstance(old, np.ndarray):
        return (isinstance(new, np.ndarray) and new.shape == old.shape and new.dtype == old.dtype
                and bool(np.array_equal(new, old, equal_nan=old.dtype.kind in "fc")))
    if type(old) is weakref.ref:
        return type(new) is weakref.ref and new() is memo.get(id(old()), old())
    if isinstance(old, types.MethodType) and isinstance(old.__self__, nn.Module):
        return isinstance(new, types.MethodType) and new.__func__ is old.__func__ and same(
            new.__self__, old.__self__, memo)
    if isinstance(old, (list, tuple, deque)):
        return (type(new) is type(old) and len(new) == len(old)
                and all(same(a, b, memo) for a, b in zip(new, old, strict=True)))
    if isinstance(old, dict):
        return (type(new) is type(old) and new.keys() == old.keys()
                and all(same(new[k], v, memo) for k, v in old.items()))
    if new is old:
        return True
    try:
        equal = new == old
    except Exception:
        return False
    return equal if isinstance(equal, bool) else False


def tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype, device and values (NaN equal to NaN), whatever the memory layout."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if torch.equal(a, b):
        return True
    return (a.is_floating_point() or a.is_complex()) and bool(((a == b) | (a.isnan() & b.isnan())).all())


@contextmanager
def rng_sandbox(device: torch.device) -> Iterator[Callable[[], str | None]]:
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


_READS_TRAINING: dict[type, bool] = {}


def reads_training(cls: type) -> bool:
    """Whether a method of module class ``cls`` (or of a base class below ``nn.Module``) reads a ``training`` attribute.

    Read from the bytecode (nested functions included), so it needs no source: ``nn.Dropout``,
    ``nn.BatchNorm2d``, ``nn.RReLU`` and a user's ``F.dropout(x, p, self.training)`` read it;
    ``nn.Sequential``, ``nn.DataParallel``, ``nn.Linear`` and a normalising layer do not, so their
    training flag changes nothing they compute.
    """
    def names(code: types.CodeType) -> set[str]:
        found = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found |= names(const)
        return found

    if cls not in _READS_TRAINING:
        codes = [getattr(f, "__code__", None) for klass in cls.__mro__ if klass not in (nn.Module, object)
                 for value in vars(klass).values() for f in _functions(value)]
        _READS_TRAINING[cls] = any("training" in names(c) for c in codes if isinstance(c, types.CodeType))
    return _READS_TRAINING[cls]


def _functions(value: object) -> tuple[object, ...]:
    """The functions a class attribute holds: a method's (also static or class), a property's getter and setter."""
    value = getattr(value, "__func__", value)
    return (value.fget, value.fset) if isinstance(value, property) else (value,)


def join(name: str, key: str) -> str:
    """A dotted attribute name below a module (``key`` alone at the root)."""
    return f"{name}.{key}" if name else key


__all__ = ["Tree", "join", "reads_training", "rng_sandbox", "same", "tensors_equal"]
