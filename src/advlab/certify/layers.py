"""The layers bound propagation understands, each with its interval and linear-relaxation rules.

A model becomes a chain of :class:`Op` (see :mod:`advlab.certify.chain`). Every op is either
*affine* (Linear, Conv2d, AvgPool2d as a depthwise convolution, BatchNorm in eval mode and
Normalize as a per-element scale and shift, Flatten as a reshape) or *nonlinear* (ReLU,
MaxPool2d). Shapes exclude the batch dimension.

Bound matrices ``A`` have shape ``(B, S, *out_shape)``: ``S`` linear functions of the op's output
for each of ``B`` examples. ``transpose(A)`` returns the same functions of the op's input (A·W),
``bias_term(A)`` their constant part (A·b).

ReLU relaxation (CROWN, Zhang et al. 2018): for an unstable neuron (l < 0 < u) the upper line is
the chord u(x − l)/(u − l); the lower line is x if u > −l, else 0 (the "adaptive" choice).

MaxPool2d relaxation (sound, documented here): let i* be the window element with the largest
lower bound. Lower: y ≥ x_{i*} (a max is at least each of its inputs). Upper: y = x_{i*} when
l_{i*} ≥ u_j for every other j (that input always wins), otherwise the constant max_j u_j.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

Pair = tuple[int, int]
ConvGeometry = tuple[Pair, Pair, Pair, int]  # stride, padding, dilation, groups
# A nonlinear op's two bounding lines per output element (their meaning is the op's; see relax()).
Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _pair(v: object) -> Pair:
    t = nn.modules.utils._pair(v)
    return int(t[0]), int(t[1])


def _flat(a: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, S, *shape) → (B·S, *shape)."""
    return a.reshape(-1, *shape)


class Op(ABC):
    """A layer of the chain: ``in_shape`` → ``out_shape``; ``name`` is the model's qualified name."""

    def __init__(self, name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        self.name = name
        self.in_shape = in_shape
        self.out_shape = out_shape

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact layer on a batch."""

    @abstractmethod
    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval bounds of the output from interval bounds of the input."""


class AffineOp(Op):
    """An affine layer f(x) = Lx + c."""

    @abstractmethod
    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """Lx (no constant)."""

    @abstractmethod
    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        """|L| r (for the radius of an interval)."""

    @abstractmethod
    def transpose(self, a: torch.Tensor) -> torch.Tensor:
        """A·L: (B, S, *out_shape) → (B, S, *in_shape)."""

    @abstractmethod
    def bias_term(self, a: torch.Tensor) -> torch.Tensor:
        """A·c: (B, S, *out_shape) → (B, S)."""

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre and radius: centre' = f(centre), radius' = |L| radius."""
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        mid, rad = self.forward(mid), self.abs_linear(rad)
        return mid - rad, mid + rad


class LinearOp(AffineOp):
    """``nn.Linear``."""

    def __init__(self, name: str, module: nn.Linear, in_shape: tuple[int, ...]) -> None:
        super().__init__(name, in_shape, (module.out_features,))
        self.weight, self.bias = module.weight, module.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(x, self.weight, self.bias)

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(x, self.weight)

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(r, self.weight.abs())

    def transpose(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return a @ self.weight

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.bias is None:
            return a.new_zeros(a.shape[:2])
        return a @ self.bias


class ConvOp(AffineOp):
    """``nn.Conv2d`` with zero padding (also AvgPool2d, as a depthwise convolution of constant weights)."""

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None, conv: ConvGeometry,
                 in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__(name, in_shape, out_shape)
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.dilation, self.groups = conv

    @classmethod
    def from_module(cls, name: str, m: nn.Conv2d, in_shape: tuple[int, ...],
                    out_shape: tuple[int, ...]) -> ConvOp:
        """The op of a ``Conv2d`` (zero padding only)."""
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"certify: unsupported layer {name!r} (Conv2d with padding={m.padding!r}, "
                             f"padding_mode={m.padding_mode!r}; only numeric zero padding)")
        conv = (_pair(m.stride), _pair(m.padding), _pair(m.dilation), m.groups)
        return cls(name, m.weight, m.bias, conv, in_shape, out_shape)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv(x, self.weight, self.bias)

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv(x, self.weight, None)

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv(r, self.weight.abs(), None)

    def transpose(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, s = a.shape[:2]
        stride, pad, dil = self.stride, self.padding, self.dilation
        k = self.weight.shape[2:]
        extra = [self.in_shape[1 + i] - ((self.out_shape[1 + i] - 1) * stride[i] - 2 * pad[i]
                                         + dil[i] * (k[i] - 1) + 1) for i in range(2)]
        out = F.conv_transpose2d(_flat(a, self.out_shape), self.weight, None, stride=stride, padding=pad,
                                 output_padding=(extra[0], extra[1]), groups=self.groups, dilation=dil)
        return out.reshape(b, s, *self.in_shape)

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.bias is None:
            return a.new_zeros(a.shape[:2])
        return torch.einsum("bschw,c->bs", a, self.bias)


def avgpool_op(name: str, m: nn.AvgPool2d, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               device: torch.device | None = None) -> ConvOp:
    """``nn.AvgPool2d`` as a depthwise convolution (zero padding counted, as ``count_include_pad``), on ``device``."""
    k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
    if m.ceil_mode or (not m.count_include_pad and any(p)):
        raise ValueError(f"certify: unsupported layer {name!r} (AvgPool2d with ceil_mode or count_include_pad=False)")
    c = in_shape[0]
    div = m.divisor_override or k[0] * k[1]
    weight = torch.full((c, 1, k[0], k[1]), 1.0 / div, device=device)
    conv = (s, p, (1, 1), c)
    return ConvOp(name, weight, None, conv, in_shape, out_shape)


class ScaleShiftOp(AffineOp):
    """A per-element affine map x·scale + shift (Normalize, BatchNorm in eval mode, identity)."""

    def __init__(self, name: str, scale: torch.Tensor, shift: torch.Tensor, shape: tuple[int, ...]) -> None:
        super().__init__(name, shape, shape)
        self.scale, self.shift = scale, shift  # both broadcastable to shape

    @classmethod
    def of_module(cls, name: str, m: nn.Module, shape: tuple[int, ...],
                  device: torch.device | None = None) -> ScaleShiftOp:
        """Read scale and shift off an element-wise affine module by evaluating it at 0 and 1 (on ``device``)."""
        zero = m(torch.zeros(1, *shape, device=device))[0]
        return cls(name, m(torch.ones(1, *shape, device=device))[0] - zero, zero, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.scale + self.shift

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.scale

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return r * self.scale.abs()

    def transpose(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return a * self.scale

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (a * self.shift).flatten(2).sum(2)


class FlattenOp(AffineOp):
    """``flatten(1)``, or each example's ``view`` / ``reshape`` to ``out_shape``: the same numbers, same order."""

    def __init__(self, name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(name, in_shape, out_shape or (math.prod(in_shape),))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.reshape(len(x), *self.out_shape)

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.reshape(len(x), *self.out_shape)

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return r.reshape(len(r), *self.out_shape)

    def transpose(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return a.reshape(*a.shape[:2], *self.in_shape)

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return a.new_zeros(a.shape[:2])


class NonlinearOp(Op):
    """A piecewise-linear layer relaxed by two lines per output element."""

    @abstractmethod
    def relax(self, lo: torch.Tensor, hi: torch.Tensor) -> Relaxation:
        """The relaxation for input bounds ``lo``, ``hi`` (an op-specific object)."""

    @abstractmethod
    def backward(self, a: torch.Tensor, relaxation: Relaxation) -> tuple[torch.Tensor, torch.Tensor]:
        """A lower bound of A·out as A'·in + c: returns (A', c); c has shape (B, S)."""


class ReLUOp(NonlinearOp):
    """``nn.ReLU`` / ``F.relu``."""

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        super().__init__(name, shape, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.relu(x)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        return F.relu(lo), F.relu(hi)

    def relax(self, lo: torch.Tensor, hi: torch.Tensor) -> Relaxation:
        """(lower slope, upper slope, upper intercept) per neuron; the lower intercept is 0."""
        active, unstable = lo >= 0, (lo < 0) & (hi > 0)
        width = (hi - lo).clamp_min(1e-12)
        up_slope = torch.where(unstable, hi / width, active.to(lo.dtype))
        up_icpt = torch.where(unstable, -hi * lo / width, torch.zeros_like(lo))
        low_slope = torch.where(unstable, (hi > -lo).to(lo.dtype), active.to(lo.dtype))
        return low_slope.detach(), up_slope, up_icpt

    def backward(self, a: torch.Tensor, relaxation: Relaxation) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        low, up, icpt = relaxation
        pos, neg = a.clamp_min(0), a.clamp_max(0)
        new = pos * low.unsqueeze(1) + neg * up.unsqueeze(1)
        return new, (neg * icpt.unsqueeze(1)).flatten(2).sum(2)


class MaxPoolOp(NonlinearOp):
    """``nn.MaxPool2d`` (no ceil_mode, no returned indices); see the module docstring for the relaxation."""

    def __init__(self, name: str, m: nn.MaxPool2d, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if m.ceil_mode or m.return_indices:
            raise ValueError(f"certify: unsupported layer {name!r} (MaxPool2d with ceil_mode or return_indices)")
        super().__init__(name, in_shape, out_shape)
        self.k, self.s, self.p, self.d = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.max_pool2d(x, self.k, self.s, self.p, self.d)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        return self.forward(lo), self.forward(hi)

    def _windows(self, v: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C, L, K): the pooling windows, padded with −∞."""
        padded = F.pad(v, (self.p[1], self.p[1], self.p[0], self.p[0]), value=-math.inf)
        cols = F.unfold(padded, self.k, dilation=self.d, stride=self.s)  # (B, C·K, L)
        b, c = v.shape[:2]
        return cols.reshape(b, c, self.k[0] * self.k[1], -1).transpose(2, 3)

    def relax(self, lo: torch.Tensor, hi: torch.Tensor) -> Relaxation:
        """(lower one-hot, upper one-hot, upper constant), windows as (B, C, L, K)."""
        wl, wu = self._windows(lo), self._windows(hi)
        best = wl.argmax(-1, keepdim=True)
        onehot = torch.zeros_like(wl).scatter_(-1, best, 1.0)
        others = wu.masked_fill(onehot.bool(), -math.inf).amax(-1)
        dominates = wl.gather(-1, best).squeeze(-1) >= others
        up_const = torch.where(dominates, torch.zeros_like(others), wu.amax(-1))
        return onehot, onehot * dominates.unsqueeze(-1).to(wl.dtype), up_const

    def _fold(self, coef: torch.Tensor) -> torch.Tensor:
        """(B, S, C, L, K) window coefficients → (B, S, *in_shape), summing overlaps, dropping padding."""
        b, s, c = coef.shape[:3]
        h, w = self.in_shape[1] + 2 * self.p[0], self.in_shape[2] + 2 * self.p[1]
        cols = coef.transpose(3, 4).reshape(b * s, c * self.k[0] * self.k[1], -1)
        out = F.fold(cols, (h, w), self.k, dilation=self.d, stride=self.s)
        out = out[:, :, self.p[0]: h - self.p[0], self.p[1]: w - self.p[1]]
        return out.reshape(b, s, *self.in_shape)

    def backward(self, a: torch.Tensor, relaxation: Relaxation) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        low, up, const = relaxation
        a = a.flatten(3)  # (B, S, C, L)
        pos, neg = a.clamp_min(0), a.clamp_max(0)
        coef = pos.unsqueeze(-1) * low.unsqueeze(1) + neg.unsqueeze(-1) * up.unsqueeze(1)
        return self._fold(coef), (neg * const.unsqueeze(1)).flatten(2).sum(2)
