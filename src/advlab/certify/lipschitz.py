"""Lipschitz certificates for L2: radius = margin / (√2·L), L an upper bound on the net's L2 Lipschitz constant.

For logits z and a class y, z_y − z_j changes by at most ‖e_y − e_j‖₂·‖Δz‖₂ ≤ √2·L·‖δ‖₂ under an
input change δ, so no δ with ‖δ‖₂ < (z_y − max_{j≠y} z_j)/(√2·L) changes the decision (Tsuzuku,
Sato, Sugiyama 2018, https://arxiv.org/abs/1802.04034). L is the product of per-layer upper bounds
of a chain of layers, walked with ``torch.fx.symbolic_trace``:

* ``Linear``: the exact spectral norm of W (the largest singular value, float64).
* ``Conv2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``: linear maps; for the actual input shape their
  explicit matrix is formed (the layer applied, without bias, to every basis image) and its exact
  spectral norm taken (float64 eigenvalues of the smaller Gram matrix). Where that matrix would
  exceed ``max_entries``, a convolution gets the provable bound √(⌈k_h/s_h⌉⌈k_w/s_w⌉)·‖W_mat‖₂
  (W_mat = out × in·k_h·k_w): the conv is W_mat applied at every position to the unfolded input
  (im2col), and the unfolding copies each input element into at most ⌈k_h/s_h⌉·⌈k_w/s_w⌉ patches.
* advlab's ``Normalize``: max 1/|std|. ``BatchNorm`` (eval mode, running statistics): the diagonal
  max |γ|/√(var + ε).
* ``ReLU`` (and ``flatten``/``view``/``reshape``, ``Dropout`` in eval, ``Identity``): 1.
* ``MaxPool2d``: each output is the max over a window, and |max a − max b| ≤ max |a − b| ≤ ‖a − b‖₂
  over that window; summing the squares over windows counts each input element at most
  ⌈k_h/s_h⌉·⌈k_w/s_w⌉ times, so L ≤ √(⌈k_h/s_h⌉⌈k_w/s_w⌉): 1 for non-overlapping pooling (stride ≥
  kernel, LeNet's 2×2/2). Padding (−∞) adds nothing; dilation is refused.

Power iteration converges to the spectral norm from below, so it is not used: every factor is an
exact norm (up to float64 rounding) or a proven upper bound. Anything else (a branch or residual
graph, ``cat``, another layer) raises ``ValueError`` naming it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from advlab._device import module_device
from advlab.certify.affine import FROZEN
from advlab.certify.chain import LEAVES, trace
from advlab.models.nets import Normalize

PAPER = ("Tsuzuku, Sato, Sugiyama 2018, Lipschitz-Margin Training: Scalable Certification of Perturbation "
         "Invariance for Deep Neural Networks, https://arxiv.org/abs/1802.04034")
MAX_ENTRIES = 40_000_000  # explicit matrices up to this many entries (160 MB in float32)
_ONE_MODULES = (nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)
_ONE_FUNCTIONS: set[Any] = {torch.flatten, torch.relu, F.relu}
_ONE_METHODS = {"flatten", "view", "reshape", "relu", "contiguous"}


def _gram_norm(matrix: torch.Tensor) -> float:
    """Exact spectral norm of ``matrix``: √ of the largest eigenvalue of its smaller Gram matrix, in float64."""
    m = matrix.double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


def _explicit_norm(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], dev: torch.device) -> float:
    """Spectral norm of the linear map ``fn`` on inputs of ``in_shape`` (C×H×W) on ``dev``, from its explicit matrix."""
    d = math.prod(in_shape)
    with torch.no_grad():
        cols = fn(torch.eye(d, device=dev).view(d, *in_shape)).flatten(1)  # row i = the map applied to basis image i
    return _gram_norm(cols)


def _overlap(kernel: Any, stride: Any) -> int:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    return math.ceil(kh / sh) * math.ceil(kw / sw)


def _conv_norm(m: nn.Conv2d, in_shape: tuple[int, ...], max_entries: int, dev: torch.device) -> float:
    out_numel = math.prod(m(torch.zeros(1, *in_shape, device=dev)).shape[1:])
    if m.groups == 1 and (m.dilation in (1, (1, 1))) and math.prod(in_shape) * out_numel > max_entries:
        w = m.weight.detach()
        return math.sqrt(_overlap(m.kernel_size, m.stride)) * _gram_norm(w.flatten(1))
    if math.prod(in_shape) * out_numel > max_entries:
        raise ValueError(f"lipschitz: {m} on input {in_shape} is too large for an explicit matrix and has "
                         "groups or dilation (no bound implemented)")

    def conv(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, m.weight.detach(), None, m.stride, m.padding, m.dilation, m.groups)

    return _explicit_norm(conv, in_shape, dev)


def _pool_norm(m: nn.MaxPool2d) -> float:
    if m.dilation not in (1, (1, 1)):
        raise ValueError(f"lipschitz: unsupported layer {m} (dilated max-pooling)")
    return math.sqrt(_overlap(m.kernel_size, m.stride if m.stride is not None else m.kernel_size))


def _module_norm(m: nn.Module, in_shape: tuple[int, ...], max_entries: int, dev: torch.device) -> float:
    """Upper bound on the L2 Lipschitz constant of layer ``m`` on inputs of ``in_shape`` (on the model's ``dev``)."""
    if isinstance(m, _ONE_MODULES):
        return 1.0
    if isinstance(m, nn.Linear):
        return _gram_norm(m.weight.detach())
    if isinstance(m, nn.Conv2d):
        return _conv_norm(m, in_shape, max_entries, dev)
    if isinstance(m, nn.MaxPool2d):
        return _pool_norm(m)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _explicit_norm(m, in_shape, dev)
    if isinstance(m, Normalize):
        return float((1 / m.std.detach().abs().double()).max())
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.running_var is None:
            raise ValueError(f"lipschitz: unsupported layer {m} (BatchNorm without running statistics)")
        scale = torch.ones_like(m.running_var) if m.weight is None else m.weight.detach().abs()
        return float((scale.double() / torch.sqrt(m.running_var.double() + m.eps)).max())
    raise ValueError(f"lipschitz: unsupported layer {type(m).__name__} ({m})")


def _node_norm(node: fx.Node, modules: dict[str, nn.Module], x: torch.Tensor, max_entries: int) -> float:
    """The bound of one graph node applied to ``x`` (one example)."""
    if node.op == "call_module":
        return _module_norm(modules[str(node.target)], tuple(x.shape[1:]), max_entries, x.device)
    if node.op == "call_function" and node.target in _ONE_FUNCTIONS:
        return 1.0
    if node.op == "call_method" and node.target in _ONE_METHODS:
        return 1.0
    name = getattr(node.target, "__name__", str(node.target))
    if node.target in (operator.add, torch.add, torch.cat):
        raise ValueError(f"lipschitz: unsupported operation {name!r} (only a chain of layers is supported)")
    raise ValueError(f"lipschitz: unsupported operation {name!r} ({node.op})")


def _trace(model: nn.Module) -> fx.GraphModule:
    """The model's graph, traced as bound propagation traces it (:func:`advlab.certify.chain.trace`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch nn.Module, got {type(model).__name__}")
    if isinstance(model, LEAVES) or not any(True for _ in model.children()):  # one layer: a chain of one
        model = nn.Sequential(model)
    graph = trace(model)
    made = FROZEN.get(model)
    if made:
        raise ValueError(f"lipschitz: unsupported operation: the forward makes a tensor ({next(iter(made))}) "
                         "(only a chain of layers is supported)")
    return fx.GraphModule(model, graph)


def lipschitz_constant(model: nn.Module, in_shape: tuple[int, ...], *, max_entries: int = MAX_ENTRIES) -> float:
    """An upper bound L on the L2 Lipschitz constant of ``model`` (input → logits) on inputs of ``in_shape``.

    Args:
        model: A chain of supported layers (module docstring), e.g. advlab's lenet, mlp, cnn.
        in_shape: One input's shape, C×H×W (the convolutions' explicit matrices depend on it).
        max_entries: Largest explicit conv matrix formed; larger convs get the im2col bound.

    Returns:
        The product of the layers' bounds.

    Raises:
        ValueError: A layer or operation is not supported, or the graph is not a chain.
    """
    shape = tuple(int(s) for s in in_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"in_shape: expected positive dimensions like (1, 28, 28), got {in_shape!r}")
    gm = _trace(model)
    modules = dict(gm.named_modules())
    values: dict[fx.Node, torch.Tensor] = {}
    prev: fx.Node | None = None
    bound = 1.0
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                if prev is not None:
                    raise ValueError("lipschitz: models with more than one input are not supported")
                values[node], prev = torch.zeros(1, *shape, device=module_device(model)), node
                continue
            if node.op == "output":
                if node.args[0] is not prev:
                    raise ValueError("lipschitz: the output is not the last layer of a chain")
                break
            _check_chain(node, prev)
            assert prev is not None
            bound *= _node_norm(node, modules, values[prev], max_entries)
            values[node] = _run(node, modules, values[prev])
            prev = node
    return bound


def _check_chain(node: fx.Node, prev: fx.Node | None) -> None:
    inputs = [a for a in node.all_input_nodes]
    if inputs != [prev] or (prev is not None and len(prev.users) != 1):
        name = getattr(node.target, "__name__", str(node.target))
        raise ValueError(f"lipschitz: unsupported graph at {name!r} (only a chain of layers is supported)")


def _run(node: fx.Node, modules: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
    args = [x if a is node.args[0] else a for a in node.args]
    if node.op == "call_module":
        out: torch.Tensor = modules[str(node.target)](*args, **node.kwargs)
    elif node.op == "call_method":
        out = getattr(x, str(node.target))(*args[1:], **node.kwargs)
    else:
        out = node.target(*args, **node.kwargs)  # type: ignore[operator]
    return out


def lipschitz_radius(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, constant: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and certified L2 radii (z_y − max_{j≠y} z_j) / (√2·L), 0 where misclassified.

    Args:
        model: The classifier (see :func:`lipschitz_constant` for the supported layers).
        x: Images N×C×H×W.
        y: True labels, shape N.
        constant: L if already computed (default: :func:`lipschitz_constant` on ``x``'s shape).

    Returns:
        ``(pred, radius)``: int64 argmax predictions and float32 radii within which the prediction
        provably stays y (0 where the model is wrong).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x: expected a non-empty float tensor N×C×H×W, got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),) or y.is_floating_point():
        raise ValueError(f"y: expected {len(x)} integer labels, got {getattr(y, 'shape', type(y))}")
    lip = lipschitz_constant(model, tuple(x.shape[1:])) if constant is None else float(constant)
    if not lip > 0 or math.isinf(lip):
        raise ValueError(f"constant: expected a finite number > 0, got {lip}")
    with torch.no_grad():
        z = model(x).double()
    if bool((y < 0).any()) or bool((y >= z.shape[1]).any()):
        raise ValueError(f"y: expected labels in [0, {z.shape[1]}), got {int(y.min())}..{int(y.max())}")
    true = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], float("-inf")).max(1).values
    radius = ((true - others).clamp(min=0) / (math.sqrt(2) * lip)).float()
    return z.argmax(1), radius
