"""Certified L∞ bounds by bound propagation: IBP, CROWN-IBP and CROWN.

* IBP — Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for Training
  Verifiably Robust Models", https://arxiv.org/abs/1810.12715: intervals layer by layer
  (centre/radius through affine layers, monotone through ReLU and max-pooling); the margins
  z_y − z_j come from the specification matrix C folded into the trailing affine layers, tighter
  than subtracting logit intervals.
* CROWN — Zhang et al. 2018, "Efficient Neural Network Robustness Certification with General
  Activation Functions", https://arxiv.org/abs/1811.00866: a backward pass of linear bounds
  through the network, relaxing each ReLU by two lines (adaptive lower slope) and each
  max-pooling by the relaxation documented in :mod:`advlab.certify.layers`; intermediate bounds
  (the inputs of every ReLU / max-pool) are themselves computed by CROWN, layer by layer, and
  intersected with IBP's.
* CROWN-IBP — Zhang et al. 2020, "Towards Stable and Efficient Training of Verifiably Robust
  Neural Networks", https://arxiv.org/abs/1906.06316: IBP intermediate bounds, one CROWN pass for
  the final specification.

The input region is the L∞ box [max(x − ε, lo), min(x + ε, hi)] clipped to the input bounds.
All bounds are computed for a batch of examples at once. The model is never changed.
"""

from __future__ import annotations

import math
from typing import Literal, cast, get_args

import torch
from torch import nn

from advlab._checks import as_number, check_bounds, check_choice, check_images, check_labels
from advlab.certify.chain import build_chain
from advlab.certify.layers import FlattenOp, NonlinearOp, Op, Relaxation, ReLUOp, ScaleShiftOp

PAPER = ("Gowal et al. 2018, On the Effectiveness of Interval Bound Propagation, https://arxiv.org/abs/1810.12715; "
         "Zhang et al. 2018, CROWN, https://arxiv.org/abs/1811.00866; "
         "Zhang et al. 2020, CROWN-IBP, https://arxiv.org/abs/1906.06316")

Method = Literal["ibp", "crown-ibp", "crown"]
METHODS: tuple[str, ...] = get_args(Method)
Box = tuple[torch.Tensor, torch.Tensor]
# Elements of a bound matrix processed at once when CROWN bounds many neurons (memory: 4 bytes each).
CHUNK_ELEMENTS = 1 << 24


def input_box(x: torch.Tensor, eps: float, bounds: tuple[float, float] = (0.0, 1.0)) -> Box:
    """The L∞ ball of radius ``eps`` around ``x`` clipped to ``bounds``."""
    return (x - eps).clamp(bounds[0], bounds[1]), (x + eps).clamp(bounds[0], bounds[1])


def spec_matrix(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C of shape (B, K, K): row j is e_y − e_j (the margin z_y − z_j); row y is zero."""
    eye = torch.eye(num_classes, dtype=torch.float32, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def _concretize(a: torch.Tensor, bias: torch.Tensor, box: Box) -> torch.Tensor:
    """Min over the box of A·x + bias: A⁺·lo + A⁻·hi + bias, shape (B, S)."""
    lo, hi = box[0].unsqueeze(1), box[1].unsqueeze(1)
    return bias + (a.clamp_min(0) * lo + a.clamp_max(0) * hi).flatten(2).sum(2)


def backward_lower(ops: list[Op], a: torch.Tensor, end: int, stop: int, relax: dict[int, Relaxation],
                   box: Box) -> torch.Tensor:
    """Lower bounds of the linear functions ``a`` of op ``end − 1``'s output, over op ``stop``'s input box.

    Goes back through ``ops[stop:end]``: affine ops exactly, nonlinear ops by their relaxation
    ``relax[i]`` (needed for each nonlinear op in the range).
    """
    bias = a.new_zeros(a.shape[:2])
    for i in reversed(range(stop, end)):
        op = ops[i]
        if isinstance(op, NonlinearOp):
            a, c = op.backward(a, relax[i])
            bias = bias + c
        else:
            bias = bias + op.bias_term(a)  # type: ignore[attr-defined]
            a = op.transpose(a)  # type: ignore[attr-defined]
    return _concretize(a, bias, box)


def crown_interval(ops: list[Op], end: int, relax: dict[int, Relaxation], box: Box,
                   neurons: torch.Tensor | None = None) -> Box:
    """CROWN lower and upper bounds of elements of op ``end − 1``'s output (back to the input box).

    ``neurons`` (flat indices) restricts the bounds to those elements (default: all); the result
    then has shape (B, len(neurons)). The identity specification is processed in chunks of neurons
    so that a bound matrix holds at most :data:`CHUNK_ELEMENTS` numbers.
    """
    shape = ops[end - 1].out_shape
    n, b = math.prod(shape), box[0].shape[0]
    index = torch.arange(n, device=box[0].device) if neurons is None else neurons
    widest = max(math.prod(op.in_shape) for op in ops[:end])
    rows = max(1, CHUNK_ELEMENTS // (2 * b * max(widest, n)))
    lows, highs = [], []
    for start in range(0, len(index), rows):
        part = torch.zeros(len(index[start:start + rows]), n, dtype=box[0].dtype, device=box[0].device)
        part[torch.arange(len(part), device=part.device), index[start:start + rows].to(part.device)] = 1.0
        a = torch.cat([part, -part]).reshape(1, -1, *shape).expand(b, -1, *shape)
        bound = backward_lower(ops, a, end, 0, relax, box)
        lows.append(bound[:, :len(part)])
        highs.append(-bound[:, len(part):])
    lo, hi = torch.cat(lows, 1), torch.cat(highs, 1)
    return (lo.reshape(b, *shape), hi.reshape(b, *shape)) if neurons is None else (lo, hi)


def _exact_by_ibp(ops: list[Op], end: int) -> bool:
    """Whether IBP is already exact for op ``end − 1``'s output.

    True for affine ops only with at most one of them not element-wise (|D₂ W D₁| = |D₂| |W| |D₁| for diagonal D).
    """
    if any(isinstance(op, NonlinearOp) for op in ops[:end]):
        return False
    return sum(not isinstance(op, (ScaleShiftOp, FlattenOp)) for op in ops[:end]) <= 1


def _tighten(ops: list[Op], i: int, relax: dict[int, Relaxation], bounds: list[Box]) -> Box:
    """CROWN bounds of nonlinear op ``i``'s input intersected with its IBP bounds ``bounds[i]``.

    For a ReLU only the neurons unstable under IBP somewhere in the batch are re-bounded: a stable
    neuron's relaxation is exact whatever its bounds.
    """
    lo, hi = bounds[i]
    if isinstance(ops[i], ReLUOp):
        neurons = ((lo < 0) & (hi > 0)).flatten(1).any(0).nonzero().flatten()
        if len(neurons) == 0:
            return lo, hi
        clo, chi = crown_interval(ops, i, relax, bounds[0], neurons)
        flo, fhi = lo.flatten(1).clone(), hi.flatten(1).clone()
        flo[:, neurons] = torch.maximum(flo[:, neurons], clo)
        fhi[:, neurons] = torch.minimum(fhi[:, neurons], chi)
        return flo.reshape(lo.shape), fhi.reshape(hi.shape)
    clo, chi = crown_interval(ops, i, relax, bounds[0])
    return torch.maximum(lo, clo), torch.minimum(hi, chi)


def intermediate_bounds(ops: list[Op], box: Box, method: Method) -> tuple[list[Box], dict[int, Relaxation]]:
    """Bounds of every op's input (index ``len(ops)``: the output) and each nonlinear op's relaxation.

    IBP throughout for ``"ibp"`` and ``"crown-ibp"``; for ``"crown"`` the input of every nonlinear op
    that follows an affine op is bounded by CROWN and intersected with the IBP interval (skipped
    where IBP is already exact).
    """
    bounds: list[Box] = [box]
    relax: dict[int, Relaxation] = {}
    for i, op in enumerate(ops):
        if isinstance(op, NonlinearOp):
            if method == "crown" and i > 0 and not isinstance(ops[i - 1], NonlinearOp) and not _exact_by_ibp(ops, i):
                bounds[i] = _tighten(ops, i, relax, bounds)
            relax[i] = op.relax(*bounds[i])
        bounds.append(op.ibp(*bounds[i]))
    return bounds, relax


def _last_nonlinear(ops: list[Op]) -> int:
    """Index of the last nonlinear op (−1 when the network is affine)."""
    return max((i for i, op in enumerate(ops) if isinstance(op, NonlinearOp)), default=-1)


def chain_margins(ops: list[Op], box: Box, y: torch.Tensor, method: Method, *, beta: float = 1.0) -> torch.Tensor:
    """Lower bounds (B, K) of z_y − z_j (0 at j = y), differentiable (used by certified training too).

    ``beta`` mixes the final specification for ``"crown-ibp"``: β·CROWN-IBP + (1 − β)·IBP (Zhang et
    al. 2020's schedule); β = 1 is pure CROWN-IBP.
    """
    bounds, relax = intermediate_bounds(ops, box, "crown" if method == "crown" else "ibp")
    k = ops[-1].out_shape[0]
    c = spec_matrix(y, k).to(box[0].dtype)
    if method == "ibp" or beta == 0.0:
        stop = _last_nonlinear(ops) + 1
        return backward_lower(ops, c, len(ops), stop, relax, bounds[stop])
    crown = backward_lower(ops, c, len(ops), 0, relax, box)
    if method == "crown-ibp" and beta < 1.0:
        stop = _last_nonlinear(ops) + 1
        return beta * crown + (1 - beta) * backward_lower(ops, c, len(ops), stop, relax, bounds[stop])
    return crown


def _check(model: nn.Module, x: object, eps: object, method: object, bounds: tuple[float, float]
           ) -> tuple[list[Op], torch.Tensor, float, Method]:
    """The chain, the images, ε and the method, checked (a NumPy or 0-d tensor ε, a method in any case)."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {type(method).__name__}")
    method = check_choice("method", method.lower(), METHODS)
    eps = as_number("eps", eps, "a finite number ≥ 0")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: expected a finite number ≥ 0, got {eps!r}")
    xt = check_images("x", x, check_bounds("bounds", bounds))
    ops = build_chain(model, tuple(xt.shape[1:]))
    if not ops or len(ops[-1].out_shape) != 1:
        raise ValueError("certify: the model's output must be a batch of logit vectors (N×K)")
    return ops, xt, eps, cast(Method, method)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def margin_lower_bounds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, method: Method = "ibp",
    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
) -> torch.Tensor:
    """Certified lower bounds of the margins z_y − z_j over the clipped L∞ ball of radius ``eps``.

    Args:
        model: A network made of supported layers (see :mod:`advlab.certify.chain`); not changed.
        x: Inputs N×C×H×W (or N×D) inside ``bounds``.
        y: True labels (N,).
        eps: The L∞ radius.
        method: ``"ibp"``, ``"crown-ibp"`` or ``"crown"`` (slowest, tightest).
        bounds: The input domain the box is clipped to.
        batch_size: Examples bounded at once.

    Returns:
        (N, K) lower bounds; the column of the true class is +inf. For ``"crown-ibp"`` and ``"crown"``
        each bound is the larger of the method's and IBP's (on IBP-trained nets CROWN-IBP's final
        pass is sometimes the looser one).
    """
    ops, x, eps, method = _check(model, x, eps, method, bounds)
    y = check_labels("y", y, len(x)).to(x.device)
    out = []
    with torch.no_grad():
        for sl in _batches(len(x), batch_size):
            box = input_box(x[sl], eps, bounds)
            margins = chain_margins(ops, box, y[sl], method)
            if method != "ibp":  # both are lower bounds, so their maximum is one too (and never looser than IBP)
                margins = torch.maximum(margins, chain_margins(ops, box, y[sl], "ibp"))
            out.append(margins.scatter(1, y[sl].unsqueeze(1), math.inf))
    return torch.cat(out)


def verified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, method: Method = "ibp",
    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
) -> torch.Tensor:
    """Which examples are certified: every margin's lower bound is > 0 on the whole ε-ball (BoolTensor (N,))."""
    return margin_lower_bounds(model, x, y, eps, method=method, bounds=bounds, batch_size=batch_size).amin(1) > 0


def logit_bounds(
    model: nn.Module, x: torch.Tensor, eps: float, *, method: Method = "ibp",
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Box:
    """Lower and upper bounds of every logit over the clipped L∞ ball.

    For ``"crown-ibp"``: IBP intermediate bounds and a CROWN pass for the logits.
    """
    ops, x, eps, method = _check(model, x, eps, method, bounds)
    box = input_box(x, eps, bounds)
    with torch.no_grad():
        inter, relax = intermediate_bounds(ops, box, "crown" if method == "crown" else "ibp")
        if method == "ibp":
            return inter[-1]
        lo, hi = crown_interval(ops, len(ops), relax, box)
        return torch.maximum(lo, inter[-1][0]), torch.minimum(hi, inter[-1][1])
