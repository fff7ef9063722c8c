"""Network architectures. Every net takes images in [0, 1] and normalises inside itself."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advlab._deprecation import caller_level


class Normalize(nn.Module):
    """(x - mean) / std as a layer, so that ε stays in pixel units: one mean and std, or one per channel.

    Args:
        mean: A number, or a sequence of one per channel (ImageNet's ``(0.485, 0.456, 0.406)``).
        std: Likewise; every value non-zero.
        persistent: Whether the statistics are in the state dict (they are in advlab's checkpoints).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], *, persistent: bool = True) -> None:
        super().__init__()
        m, s = _statistic("mean", mean), _statistic("std", std)
        if isinstance(m, list) and isinstance(s, list) and len(m) != len(s):
            raise ValueError(f"mean, std: one value per channel each, got {len(m)} and {len(s)}")
        if 0.0 in (s if isinstance(s, list) else [s]):
            raise ValueError("std: every value must be non-zero")
        # (checked as numbers: a model may be built on the meta device, where a tensor has no values)
        for key, v in (("mean", m), ("std", s)):
            self.register_buffer(key, torch.tensor(v).view(-1, 1, 1) if isinstance(v, list) else torch.tensor(v),
                                 persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (x - self.mean) / self.std


def _statistic(name: str, value: float | Sequence[float]) -> float | list[float]:
    """A number as a float, a sequence (one value per channel, broadcast over H×W) as a list of floats."""
    values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        out = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number or a sequence of numbers, got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: expected finite numbers, got {value!r}")
    return out[0] if values is not value else out


class Normalized(nn.Module):
    """A network trained on normalised inputs, taking pixels in [0, 1]: ``net(Normalize(mean, std)(x))``.

    What torchattacks' ``set_normalization_used(mean, std)`` and ART's ``preprocessing=(mean, std)`` do: the
    threat model stays in pixel units, and the normalisation is part of the model every attack, check and
    certificate sees. The statistics are constants, not weights: the state dict is ``net``'s under
    ``net.``, and a factory's ``--weights`` may be either that or the bare network's own.
    """

    def __init__(self, net: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net: expected a torch nn.Module, got {type(net).__name__}")
        super().__init__()
        self.norm = Normalize(mean, std, persistent=False).eval()
        self.net = net
        self.training = net.training  # (not .train(): that would set every submodule of the network)
        m, s = _statistic("mean", mean), _statistic("std", std)
        means, stds = (m if isinstance(m, list) else [m]), (s if isinstance(s, list) else [s])
        self.channels = len(means) if isinstance(m, list) and len(means) > 1 else None  # (checked in forward)
        if max(map(abs, means)) > 1 or max(stds) > 1:
            warnings.warn(f"advlab: with_normalization's mean {m} and std {s} look like 0–255 units: for images in "
                          "[0, 1] divide both by 255 (a model that takes 0–255 pixels: keep them, with "
                          "bounds=(0, 255))", NormalizationUnits, stacklevel=caller_level())

    def forward(self, x: torch.Tensor) -> Any:  # noqa: D102
        if (self.channels is not None and not isinstance(x, torch.fx.Proxy)  # (fx: certify traces it)
                and x.dim() == 4 and x.shape[1] != self.channels):
            raise ValueError(f"with_normalization: {self.channels} means and stds, one per channel, for "
                             f"images of {x.shape[1]} channel(s) (shape {tuple(x.shape)})")
        return self.net(self.norm(x))


class NormalizationUnits(UserWarning):
    """``with_normalization`` was given statistics in 0–255 units (mmcv's 123.675, …) for a model on [0, 1] images."""


def with_normalization(model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]) -> Normalized:
    """``model`` behind ``(x - mean) / std``, one value or one per channel (a :class:`Normalized`)."""
    return Normalized(model, mean, std)


def _flat_dim(body: nn.Module, in_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *in_shape)).flatten(1).shape[1])


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: conv6-pool-conv16-pool-120-84-C.

    For 28×28 inputs the first convolution pads by 2, as the classic 32×32 LeNet input does.
    """

    def __init__(
        self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
        mean: float = 0.1307, std: float = 0.3081,
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        if min(h, w) < 16:
            raise ValueError(f"in_shape: lenet needs images of at least 16×16, got {h}×{w}")
        self.norm = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_dim(self.features, in_shape), 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.classifier(self.features(self.norm(x)).flatten(1))
        return out


class SmallCNN(nn.Module):
    """A small strided CNN: conv32/4/s2 → conv64/4/s2 → 128 → C (436k parameters for MNIST).

    The shape of the small MNIST networks used for adversarial training by Wong, Rice and Kolter
    (2020), widened (32/64 channels, 128 hidden units): adversarial training needs more capacity
    than standard training (Madry et al. 2018), and strided convolutions without pooling keep a
    forward+backward pass as cheap as LeNet-5's on the CPU.
    """

    def __init__(
        self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
        mean: float = 0.1307, std: float = 0.3081, width: int = 32, hidden: int = 128,
    ) -> None:
        super().__init__()
        self.norm = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[0], width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_dim(self.features, in_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.classifier(self.features(self.norm(x)).flatten(1))
        return out


class MLP(nn.Module):
    """A fully connected net: flatten, two hidden ReLU layers, logits."""

    def __init__(
        self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
        hidden: int = 256, mean: float = 0.1307, std: float = 0.3081,
    ) -> None:
        super().__init__()
        dim = in_shape[0] * in_shape[1] * in_shape[2]
        self.norm = Normalize(mean, std)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(self.norm(x))
        return out


class ConvBN(nn.Sequential):
    """Conv → BatchNorm → ReLU."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Inception(nn.Module):
    """An Inception block (Szegedy et al. 2015): 1×1 | 1×1→3×3 | 1×1→3×3→3×3 | pool→1×1."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = ConvBN(cin, c1, 1)
        self.b3 = nn.Sequential(ConvBN(cin, c3r, 1), ConvBN(c3r, c3, 3))
        self.b5 = nn.Sequential(ConvBN(cin, c5r, 1), ConvBN(c5r, c5, 3), ConvBN(c5, c5, 3))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBN(cin, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class SmallGoogLeNet(nn.Module):
    """A small Inception-style network ("GoogLeNet") sized for 28×28 inputs.

    Stem conv → pool → 1 Inception block at 14×14 → pool → 3 blocks at 7×7 → global average → linear.
    """

    def __init__(
        self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
        mean: float = 0.1307, std: float = 0.3081,
    ) -> None:
        super().__init__()
        self.norm = Normalize(mean, std)
        a = Inception(32, 16, 16, 24, 8, 8, 16)  # -> 64
        b = Inception(a.out_channels, 24, 24, 32, 8, 16, 16)  # -> 88
        c = Inception(b.out_channels, 32, 24, 48, 8, 16, 24)  # -> 120
        d = Inception(c.out_channels, 40, 32, 56, 12, 24, 24)  # -> 144
        self.features = nn.Sequential(
            ConvBN(in_shape[0], 32, 3), nn.MaxPool2d(2),
            a, nn.MaxPool2d(2), b, c, d,
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(d.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.fc(self.features(self.norm(x)).flatten(1))
        return out
