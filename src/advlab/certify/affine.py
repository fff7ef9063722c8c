"""Arithmetic with constants in a traced forward: ``(x - self.mean) / self.std``, ``x * 2 - 1``, ``-x``.

Normalisation belongs inside the model (ε is measured in pixels), and users write it as arithmetic in
``forward`` more often than as a module. A node that adds, subtracts, multiplies or divides the chain's
tensor by a constant is an element-wise affine map, read as a :class:`ScaleShiftOp` by evaluating it at
0 and 1, as :meth:`ScaleShiftOp.of_module` reads a module. A constant is a number or a tensor reached
from the model's buffers and parameters (``get_attr``) through deterministic, shape-only steps
(``view``, ``reshape``, ``unsqueeze``, casts, and arithmetic between constants); anything random or
data-dependent is not a constant, so the chain refuses it.
"""

from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
import torch.fx

from advlab.certify.layers import ScaleShiftOp

NOT_CONSTANT = object()
# Per model: tensors its forward makes from constants (``torch.tensor([0.5])``), which tracing runs once and
# keeps as attributes of the graph's root; advlab keeps them here instead (the model is never changed).
FROZEN: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
_ARITH_FUNCS: dict[Any, Any] = {
    operator.add: operator.add, operator.sub: operator.sub, operator.mul: operator.mul,
    operator.truediv: operator.truediv, torch.add: operator.add, torch.sub: operator.sub,
    torch.mul: operator.mul, torch.div: operator.truediv,
}
_ARITH_METHODS: dict[str, Any] = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
                                  "div": operator.truediv}
_SHAPE_METHODS = ("view", "reshape", "unsqueeze", "squeeze", "float", "double", "to", "type_as", "flatten")


def _arith(node: torch.fx.Node) -> Any:
    """The binary operator of an arithmetic node (``operator.add`` …), else None."""
    if node.kwargs or len(node.args) != 2:
        return None
    if node.op == "call_function":
        return _ARITH_FUNCS.get(node.target)
    return _ARITH_METHODS.get(str(node.target)) if node.op == "call_method" else None


def constant(arg: Any, model: torch.nn.Module) -> Any:
    """``arg``'s value where it is a constant of the forward, else :data:`NOT_CONSTANT`.

    A constant: a number, or a buffer/parameter and shape-only or arithmetic steps of constants.
    """
    if isinstance(arg, bool) or arg is None:
        return NOT_CONSTANT
    if isinstance(arg, (int, float, torch.dtype)):
        return arg
    if isinstance(arg, (tuple, list)):
        items = [constant(a, model) for a in arg]
        return NOT_CONSTANT if any(i is NOT_CONSTANT for i in items) else type(arg)(items)
    if not isinstance(arg, torch.fx.Node):
        return NOT_CONSTANT
    if arg.op == "get_attr":
        made = FROZEN.get(model, {})
        target = str(arg.target)
        return (made[target] if target in made else operator.attrgetter(target)(model)).detach()
    shape_only = arg.op == "call_method" and arg.target in _SHAPE_METHODS
    if not (shape_only or _arith(arg) is not None or (arg.op == "call_function" and arg.target is operator.neg)):
        return NOT_CONSTANT
    args = [constant(a, model) for a in arg.args]
    kwargs = {k: constant(v, model) for k, v in arg.kwargs.items()}
    if any(a is NOT_CONSTANT for a in (*args, *kwargs.values())):
        return NOT_CONSTANT
    if shape_only:
        return getattr(args[0], str(arg.target))(*args[1:], **kwargs)
    return -args[0] if arg.target is operator.neg else _arith(arg)(*args)


def affine_op(node: torch.fx.Node, shape: tuple[int, ...], model: torch.nn.Module,
              dev: torch.device) -> ScaleShiftOp | None:
    """The op of ``x ± c``, ``c ± x``, ``x · c``, ``c · x``, ``x / c`` or ``-x``, else None.

    c is a constant that keeps each example's shape; x is the one operand that is not a constant.
    """
    if (node.op == "call_function" and node.target is operator.neg) or (node.op == "call_method"
                                                                        and node.target == "neg"):
        return ScaleShiftOp(node.name, torch.full((), -1.0, device=dev), torch.zeros((), device=dev), shape)
    op = _arith(node)
    if op is None:
        return None
    ca, cb = (constant(a, model) for a in node.args)
    first = ca is NOT_CONSTANT
    if first == (cb is NOT_CONSTANT) or (op is operator.truediv and not first):
        return None  # (both operands constant or neither; c / x is not affine)
    c = cb if first else ca
    c = c.to(dev) if isinstance(c, torch.Tensor) else c
    with torch.no_grad():
        at = [op(t, c) if first else op(c, t) for t in (torch.zeros(1, *shape, device=dev),
                                                         torch.ones(1, *shape, device=dev))]
    if tuple(at[0].shape[1:]) != tuple(shape) or len(at[0]) != 1 or not at[0].is_floating_point():
        return None  # (a constant that broadcasts over the batch or widens the example: not element-wise)
    return ScaleShiftOp(node.name, at[1][0] - at[0][0], at[0][0], shape)


__all__ = ["FROZEN", "NOT_CONSTANT", "affine_op", "constant"]
