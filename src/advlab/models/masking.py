"""Models that hide their gradients the way users write them: in ``forward``, declaring nothing.

The wrappers of :mod:`advlab.models.wrappers` tell an attacker what it needs (``differentiable``,
``randomized``, ``bpda``, ``surrogate``). The six modules here compute the same things (or a
classic accident) but carry none of those attributes, as a model handed to advlab by a user
would: the evaluation has to notice the masking from the model's behaviour alone (issue #14).

Each wraps any classifier ``net`` (images N×C×H×W in [0, 1] → logits), never changes it (not its
parameters, its mode or ``requires_grad``), takes the classifier's mode when built, and works on
images of any size. Where a declared twin exists, ``UndeclaredX(net)(x)`` equals
``wrap_defense(net, spec)(x)`` exactly (for :class:`RandomResize`: with the same seed).

====================  ==========================  ==============================================
name                  class                       declared twin
====================  ==========================  ==============================================
``quantise``          :class:`QuantisedInput`     ``bitdepth:2`` (3 levels)
``softmax``           :class:`SaturatedSoftmax`   none: compare with the undefended net
``numpy-median``      :class:`NumpyMedian`        ``median:3``
``resize``            :class:`RandomResize`       ``resize:22``
``pillow-jpeg``       :class:`PillowJPEG`         ``jpeg:75``
``no-grad``           :class:`NoGradClamp`        none: compare with the undefended net
====================  ==========================  ==============================================
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import suggest
from advlab._device import draw
from advlab.physical import jpeg


class _Undeclared(nn.Module):
    """A classifier ``net`` behind a forward-pass trick; in ``net``'s mode, ``net`` itself untouched."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net: expected a torch model (nn.Module), got {type(net).__name__}")
        self.net = net
        self.training = net.training  # the wrapper's own flag only: net's mode is not touched


class QuantisedInput(_Undeclared):
    """``net(round(x · levels) / levels)``: input quantisation, whose gradient is zero almost everywhere.

    Declared twin: ``bitdepth:2`` (``levels=3``; ``bitdepth:b`` is ``levels = 2**b − 1``).
    """

    def __init__(self, net: nn.Module, levels: int = 3) -> None:
        super().__init__(net)
        self.levels = int(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(torch.round(x * self.levels) / self.levels)
        return out


class SaturatedSoftmax(_Undeclared):
    """Returns ``scale · softmax(net(x))`` as its "logits": the same argmax, a saturated, vanishing gradient.

    Cross-entropy on these "logits" is exactly 0 (in float32) for a confidently, correctly
    classified input, and so is its gradient. Declared twin: none: compare with the undefended net.
    """

    def __init__(self, net: nn.Module, scale: float = 1e4) -> None:
        super().__init__(net)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.scale * self.net(x).softmax(1)
        return out


def numpy_median(a: np.ndarray, size: int) -> np.ndarray:
    """``size``×``size`` median of each channel of N×C×H×W ``a``, reflect padding, in numpy.

    The same values as :class:`~advlab.models.wrappers.MedianSmoothing` (torch's ``reflect`` pad
    is numpy's ``reflect``), and also defined for images no larger than the window's reach.
    """
    p = size // 2
    padded = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
    flat = windows.reshape(*windows.shape[:4], size * size)
    mid = size * size // 2
    return np.partition(flat, mid, axis=-1)[..., mid]


class NumpyMedian(_Undeclared):
    """A median filter computed in numpy: the graph is cut at ``.detach().numpy()``, no gradient reaches x.

    Declared twin: ``median:3`` (reflect padding; ``size`` must be odd).
    """

    def __init__(self, net: nn.Module, size: int = 3) -> None:
        super().__init__(net)
        if int(size) < 1 or int(size) % 2 == 0:
            raise ValueError(f"size: expected an odd integer >= 1, got {size!r}")
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        smooth = numpy_median(x.detach().cpu().numpy(), self.size)
        out: torch.Tensor = self.net(torch.from_numpy(np.ascontiguousarray(smooth)).to(x.device, x.dtype))
        return out


class RandomResize(_Undeclared):
    """Xie et al. 2018 in ``forward``: resize to a random r×r, zero-pad at a random offset; new draws per call.

    Differentiable but random: two calls on the same input give two different gradients. Uses
    its own ``torch.Generator`` (seeded with ``seed``) and draws r, top, left in the order of
    :class:`~advlab.models.wrappers.RandomResizePad`, so the same seed gives the same outputs.
    Images smaller than ``min_size`` are resized to r ∈ [min(H, W), min(H, W)] (no error).
    Declared twin: ``resize:22``.
    """

    def __init__(self, net: nn.Module, min_size: int = 22, seed: int = 0) -> None:
        super().__init__(net)
        if int(min_size) < 1:
            raise ValueError(f"min_size: expected an integer >= 1, got {min_size!r}")
        self.min_size = int(min_size)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h, w = x.shape[-2:]
        side = min(h, w)
        r = int(draw(torch.randint, min(self.min_size, side), side + 1, (1,), generator=self.generator))
        small = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
        top = int(draw(torch.randint, 0, h - r + 1, (1,), generator=self.generator))
        left = int(draw(torch.randint, 0, w - r + 1, (1,), generator=self.generator))
        out: torch.Tensor = self.net(F.pad(small, (left, w - r - left, top, h - r - top)))
        return out


def pillow_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG encode/decode of each image through Pillow, as uint8; a new tensor, detached from ``x``.

    Grey (1 channel) and RGB (3 channels) images go through whole, as in
    :class:`~advlab.models.wrappers.JPEG`; any other channel count, channel by channel as grey.
    """
    if x.shape[1] in (1, 3):
        return jpeg(x, quality)
    return jpeg(x.reshape(-1, 1, *x.shape[2:]), quality).reshape(x.shape)


class PillowJPEG(_Undeclared):
    """JPEG compression through Pillow, image by image: the graph is cut, no gradient reaches x.

    Declared twin: ``jpeg:75`` (the declared one attaches a zero gradient; this one attaches none).
    """

    def __init__(self, net: nn.Module, quality: int = 75) -> None:
        super().__init__(net)
        if not 1 <= int(quality) <= 95:
            raise ValueError(f"quality: expected an integer in [1, 95], got {quality!r}")
        self.quality = int(quality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(pillow_jpeg(x, self.quality))
        return out


class NoGradClamp(_Undeclared):
    """``with torch.no_grad(): x = x.clamp(0, 1)``, then ``net(x)``: the classic accidental detach in forward.

    On inputs in [0, 1] it computes exactly ``net(x)``, but no gradient reaches x.
    Declared twin: none: compare with the undefended net.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with torch.no_grad():
            x = x.clamp(0, 1)
        out: torch.Tensor = self.net(x)
        return out


# short name -> (class, the equivalent declared defense spec for wrap_defense, or None: the undefended net)
UNDECLARED: dict[str, tuple[type[nn.Module], str | None]] = {
    "quantise": (QuantisedInput, "bitdepth:2"),
    "softmax": (SaturatedSoftmax, None),
    "numpy-median": (NumpyMedian, "median:3"),
    "resize": (RandomResize, "resize:22"),
    "pillow-jpeg": (PillowJPEG, "jpeg:75"),
    "no-grad": (NoGradClamp, None),
}


def make_undeclared(name: str, net: nn.Module) -> nn.Module:
    """The undeclared masking model ``name`` (a key of :data:`UNDECLARED`) around ``net``, default arguments.

    Raises:
        ValueError: ``name`` is not a key of :data:`UNDECLARED`.
        TypeError: ``net`` is not a torch module.
    """
    if name not in UNDECLARED:
        raise ValueError(f"name: expected one of {', '.join(repr(k) for k in UNDECLARED)}, got {name!r}"
                         f"{suggest(str(name), UNDECLARED)}")
    return UNDECLARED[name][0](net)


__all__ = [
    "UNDECLARED", "NoGradClamp", "NumpyMedian", "PillowJPEG", "QuantisedInput", "RandomResize", "SaturatedSoftmax",
    "make_undeclared", "numpy_median", "pillow_jpeg",
]
