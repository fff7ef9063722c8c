"""Network architectures. Every net takes images in [0, 1] and normalises inside itself."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel (x - mean) / std as a layer, so that ε stays in pixel units."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (x - self.mean) / self.std


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
