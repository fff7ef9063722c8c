"""A model as a chain of bound-propagation layers, read with ``torch.fx`` (the model is never changed).

advlab's networks are not ``nn.Sequential`` (LeNet-5 is ``norm`` → ``features`` →
``.flatten(1)`` → ``classifier``), so the forward code is traced symbolically: every standard
layer and :class:`advlab.models.nets.Normalize` is a leaf, and the traced graph must be a single
chain (each operation's input is the previous one's output). Supported: Linear, Conv2d, ReLU,
Flatten / ``flatten(1)`` / an example's ``view`` or ``reshape`` (``x.view(x.size(0), -1)``), BatchNorm1d/2d
in eval mode, AvgPool2d and MaxPool2d (modules or ``F.max_pool2d`` / ``F.avg_pool2d``), Normalize,
Identity and Dropout in eval mode, adding, subtracting, multiplying or dividing by a constant
(``(x - self.mean) / self.std``: :mod:`advlab.certify.affine`); a softmax or log-softmax over the
classes as the very last operation is left out (it keeps each row's order, so the certified
prediction is the logits' one). Anything else is a one-line ``ValueError`` naming the layer.
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Collection
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from advlab._device import module_device
from advlab.attacks.modulecopy import rng_sandbox
from advlab.certify.affine import FROZEN, NOT_CONSTANT, affine_op, constant
from advlab.certify.layers import (
    ConvOp,
    FlattenOp,
    LinearOp,
    MaxPoolOp,
    Op,
    ReLUOp,
    ScaleShiftOp,
    avgpool_op,
)
from advlab.models.nets import Normalize

LEAVES = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d,
          nn.MaxPool2d, nn.Identity, nn.Dropout, Normalize)
_Step = tuple[torch.fx.Node, tuple[int, ...], tuple[int, ...]]
_RELU_FUNCS = (F.relu, torch.relu, torch.nn.functional.relu)
_FLATTEN_FUNCS = (torch.flatten,)
_SOFTMAX_FUNCS = (F.softmax, torch.softmax, F.log_softmax, torch.log_softmax)
# (F.max_pool2d is a dispatch wrapper named ``fn``: its name for a message is kept beside its module)
_POOL_FUNCS: dict[Any, tuple[type[nn.Module], str]] = {F.max_pool2d: (nn.MaxPool2d, "max_pool2d"),
                                                       F.avg_pool2d: (nn.AvgPool2d, "avg_pool2d")}


class _Tracer(torch.fx.Tracer):
    """Stops at the supported layers (so Normalize stays one node) and at any other standard layer."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


def _unsupported(name: str, what: str) -> ValueError:
    return ValueError(f"certify: unsupported layer {name!r} ({what}); supported: Linear, Conv2d, ReLU, Flatten, "
                      "BatchNorm (eval), AvgPool2d, MaxPool2d, Normalize, Identity, Dropout (eval), +−×÷ by constants")


def trace(model: nn.Module) -> torch.fx.Graph:
    """The model's forward graph with supported layers as leaves (ValueError when it cannot be traced)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"certify: {type(model).__name__} is a TorchScript model, which torch.fx cannot read as a "
                         "chain of layers; certify the nn.Module it was scripted or traced from (randomized "
                         "smoothing needs no chain)")
    # Tracing runs the forward's Python once: what it draws (torch.randn, random.uniform) would be frozen
    # into the graph. Every generator is restored afterwards, and one drawn from names the model random.
    with rng_sandbox(module_device(model)) as drawn_from:
        graph, made = _trace_once(model)
        drawn = drawn_from()
    if drawn is not None:
        raise ValueError(f"certify: {type(model).__name__}'s forward draws from {drawn} (torch.randn, "
                         "random.uniform, …): bounds would hold for one draw only; certify the model without it, "
                         "or use randomized smoothing")
    FROZEN[model] = made
    return graph


def _trace_once(model: nn.Module) -> tuple[torch.fx.Graph, dict[str, torch.Tensor]]:
    """One trace, and the tensors the forward made from constants (``torch.tensor([...])``), by name.

    The tracer hangs those on the model as attributes; they are taken off it again (the model is never
    changed), where the trace raised too.
    """
    before = {k: set(d) for k, d in _attr_dicts(model).items()}
    try:
        graph = _Tracer().trace(model)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"certify: cannot trace {type(model).__name__} into a chain of layers: {msg}") from None
    finally:
        added = {k: d.pop(k) for name, d in _attr_dicts(model).items() for k in set(d) - before[name]}
    return graph, {k: v for k, v in added.items() if isinstance(v, torch.Tensor)}


def _attr_dicts(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Where a module keeps its attributes: plain ones, buffers, parameters, submodules."""
    return {"dict": model.__dict__, "buffers": model._buffers, "parameters": model._parameters,
            "modules": model._modules}


def _module_op(name: str, m: nn.Module, shape: tuple[int, ...], out: tuple[int, ...], dev: torch.device) -> Op:
    """The op for a leaf module with input shape ``shape`` and output shape ``out``; constants on ``dev``."""
    if isinstance(m, nn.Linear):
        return LinearOp(name, m, shape)
    if isinstance(m, nn.Conv2d):
        return ConvOp.from_module(name, m, shape, out)
    if isinstance(m, nn.ReLU):
        return ReLUOp(name, shape)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise _unsupported(name, f"Flatten(start_dim={m.start_dim}, end_dim={m.end_dim})")
        return FlattenOp(name, shape)
    if isinstance(m, nn.MaxPool2d):
        return MaxPoolOp(name, m, shape, out)
    if isinstance(m, nn.AvgPool2d):
        return avgpool_op(name, m, shape, out, dev)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.training:
            raise ValueError(f"certify: layer {name!r} ({type(m).__name__}) is in train mode: its output depends on "
                             "the batch; call model.eval() (bounds need the running statistics)")
        return ScaleShiftOp.of_module(name, m, shape, dev)
    if isinstance(m, nn.Dropout):
        if m.training and m.p > 0:
            raise ValueError(f"certify: layer {name!r} (Dropout) is in train mode; call model.eval()")
        return ScaleShiftOp(name, torch.ones((), device=dev), torch.zeros((), device=dev), shape)
    if isinstance(m, Normalize):
        return ScaleShiftOp.of_module(name, m, shape, dev)
    if isinstance(m, nn.Identity):
        return ScaleShiftOp(name, torch.ones((), device=dev), torch.zeros((), device=dev), shape)
    raise _unsupported(name, type(m).__name__)


def _function_op(node: torch.fx.Node, shape: tuple[int, ...], dev: torch.device, model: nn.Module) -> Op:
    """The op for a ``call_function`` / ``call_method`` node (relu, flatten(1), view / reshape, pools, constants)."""
    target = node.target
    affine = affine_op(node, shape, model, dev)
    if affine is not None:
        return affine
    if node.op == "call_function" and target in _POOL_FUNCS:
        module, pool_name = _POOL_FUNCS[target]
        try:
            pool = module(*node.args[1:], **node.kwargs)
        except TypeError as e:
            raise _unsupported(node.name, f"{node.op} {pool_name} ({e})") from None
        with torch.no_grad():
            pooled = tuple(pool(torch.zeros(1, *shape)).shape[1:])
        return _module_op(node.name, pool, shape, pooled, dev)
    if (node.op == "call_function" and target in _RELU_FUNCS) or (node.op == "call_method" and target == "relu"):
        return ReLUOp(node.name, shape)
    if (node.op == "call_method" and target in ("view", "reshape")) or (
            node.op == "call_function" and target is torch.reshape):
        reshaped = _reshaped(node, shape)
        if reshaped is not None:
            return FlattenOp(node.name, shape, reshaped)
    is_flatten = (node.op == "call_function" and target in _FLATTEN_FUNCS) or (node.op == "call_method" and \
        target == "flatten")
    if is_flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if start == 1 and end == -1:
            return FlattenOp(node.name, shape)
    what = getattr(target, "__name__", str(target))
    if target in (operator.getitem,):
        what = "indexing"
    raise _unsupported(node.name, f"{node.op} {what}")


def _batch_size(node: object, chain: Collection[torch.fx.Node] | None) -> bool:
    """Whether ``node`` is ``t.size(0)`` or ``t.shape[0]`` for a tensor ``t`` of the chain (any, if ``chain`` is None).

    That is the batch size, as a reshape's first dimension: every tensor of a chain has it.
    """
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_method" and node.target == "size":
        return bool(_in(node.args[0], chain) and (node.args[1:] or (node.kwargs.get("dim"),)) == (0,))
    base = node.args[0] if node.op == "call_function" and node.target is operator.getitem else None
    return _shape_of(base, chain) and bool(node.args[1] == 0)


def _shape_of(node: object, chain: Collection[torch.fx.Node] | None) -> bool:
    """Whether ``node`` is ``t.shape`` for a tensor ``t`` of the chain (any tensor where ``chain`` is None)."""
    return bool(isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target is getattr
                and node.args[1:] == ("shape",) and _in(node.args[0], chain))


def _in(node: object, chain: Collection[torch.fx.Node] | None) -> bool:
    return isinstance(node, torch.fx.Node) and (chain is None or node in chain)


def _reshaped(node: torch.fx.Node, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Each example's shape after a ``view`` / ``reshape`` node that keeps the batch dimension, else None."""
    dims: tuple[Any, ...] = tuple(node.args[1:] if node.op == "call_method" else node.args[1:2])
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    first, rest = (dims[0], dims[1:]) if dims else (None, ())
    src = node.args[0]
    if not isinstance(src, torch.fx.Node) or not (first == -1 or _batch_size(first, None)) or not all(
            type(d) is int for d in rest):
        return None
    ints: tuple[int, ...] = rest
    n, free = math.prod(shape), [i for i, d in enumerate(ints) if d == -1]
    known = math.prod(d for d in ints if d != -1)
    if len(free) > 1 or known <= 0 or n % known or (not free and known != n) or (first == -1 and free):
        return None
    return tuple(n // known if d == -1 else d for d in ints)


def _check_args(node: torch.fx.Node, prev: torch.fx.Node, chain: Collection[torch.fx.Node], model: nn.Module) -> None:
    """The node's only tensor input, constants aside, is the previous node's output (a chain, no branches)."""
    nodes = [a for a in _node_args(node) if not _batch_size(a, chain) and constant(a, model) is NOT_CONSTANT]
    if nodes != [prev]:
        raise ValueError(f"certify: unsupported layer {node.name!r} ({node.op} {node.target}): not a chain "
                         "(inputs other than the previous layer's output: branches, residuals or attributes)")


def _node_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The nodes among ``node``'s arguments, one level into tuples and lists (a reshape's dimensions)."""
    flat: list[object] = []
    for a in (*node.args, *node.kwargs.values()):
        flat += list(a) if isinstance(a, (tuple, list)) else [a]
    return [a for a in flat if isinstance(a, torch.fx.Node)]


# Per model and input shape: each layer's traced node with its input and output shapes. Only the
# structure is cached; the ops (and the mode checks) are rebuilt from the live modules on every call.
_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], list[_Step]]] = weakref.WeakKeyDictionary()


def _plan(model: nn.Module, in_shape: tuple[int, ...]) -> list[_Step]:
    """The chain's nodes with their shapes (validated: a single chain of supported operations)."""
    graph = trace(model)
    modules = dict(model.named_modules())
    steps: list[_Step] = []
    prev: torch.fx.Node | None = None
    chain: set[torch.fx.Node] = set()
    shape, dev = tuple(in_shape), module_device(model)
    x = torch.zeros(1, *shape, device=dev)
    for node in graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise ValueError("certify: the model takes more than one input")
            prev = node
            chain.add(node)
            continue
        assert prev is not None
        if _batch_size(node, chain) or _shape_of(node, chain) or constant(node, model) is not NOT_CONSTANT:
            continue  # (read by the reshape or the arithmetic that follows: not a layer)
        if node.op == "output":
            if node.args[0] is not prev:
                raise ValueError("certify: the model's output is not the last layer's output")
            break
        _check_args(node, prev, chain, model)
        if len(shape) == 1 and _final_softmax(node, modules):
            prev = node  # (the logits before it decide the same class)
            continue
        op = _node_op(node, model, modules, shape, x)  # x is on the model's device: the op's constants follow it
        with torch.no_grad():
            x = op.forward(x)
        steps.append((node, shape, tuple(x.shape[1:])))
        shape = steps[-1][2]
        prev = node
        chain.add(node)
    return steps


def _final_softmax(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is a softmax or log-softmax over dimension 1 whose only use is the model's output."""
    if [u.op for u in node.users] != ["output"]:
        return False
    if node.op == "call_module":
        m = modules[str(node.target)]
        return isinstance(m, (nn.Softmax, nn.LogSoftmax)) and m.dim in (1, -1)
    is_softmax = (node.op == "call_function" and node.target in _SOFTMAX_FUNCS) or (
        node.op == "call_method" and node.target in ("softmax", "log_softmax"))
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return is_softmax and dim in (1, -1)


def build_chain(model: nn.Module, in_shape: tuple[int, ...]) -> list[Op]:
    """The model as a list of ops for inputs of shape ``in_shape`` (without the batch dimension)."""
    in_shape = tuple(in_shape)
    plans = _PLANS.setdefault(model, {})
    if in_shape not in plans:
        plans[in_shape] = _plan(model, in_shape)
    modules, dev = dict(model.named_modules()), module_device(model)
    ops = []
    for node, shape, out in plans[in_shape]:
        if node.op == "call_module":
            ops.append(_module_op(str(node.target), modules[str(node.target)], shape, out, dev))
        else:
            ops.append(_function_op(node, shape, dev, model))
    return ops


def _node_op(node: torch.fx.Node, model: nn.Module, modules: dict[str, nn.Module], shape: tuple[int, ...],
             x: torch.Tensor) -> Op:
    """The op of a node, its output shape found by running the layer once on ``x``.

    Never a layer whose forward changes state: BatchNorm and Dropout keep their shape and are not run.
    """
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)):
            return _module_op(str(node.target), m, shape, shape, x.device)
        with torch.no_grad():
            out: Any = m(x)
        return _module_op(str(node.target), m, shape, tuple(out.shape[1:]), x.device)
    if node.op in ("call_function", "call_method"):
        return _function_op(node, shape, x.device, model)
    raise _unsupported(node.name, f"{node.op} {node.target}")
