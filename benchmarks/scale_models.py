"""A ResNet-18-style network for the data-scale benchmark (benchmarks/scale_data.py), as ``--model`` factories.

Same topology as ResNet-18 (He et al. 2016): a 7×7/2 stem and 3×3/2 max-pool, 4 stages of 2
BasicBlocks (3×3 convolutions, batch norm, identity or 1×1/2 projection shortcuts) at widths
w, 2w, 4w, 8w, global average pooling and a linear head; ImageNet normalisation inside (the
threat model is in pixel space). ``resnet18`` is full width (w = 64, 11.7 M parameters);
``resnet18_w16`` a quarter of it (w = 16, about 16× fewer multiply-adds). Weights are untrained
(seeded): the benchmark measures memory and time, not accuracy.
"""

from __future__ import annotations

import torch
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


class ResNet18Style(nn.Module):
    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i in range(4):
            cout = width * 2 ** i
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem((x - self.mean) / self.std))
        return self.head(h.mean(dim=(2, 3)))


def resnet18() -> nn.Module:
    """Full width (64), 10 classes, seeded untrained weights."""
    torch.manual_seed(0)
    return ResNet18Style(64)


def resnet18_w16() -> nn.Module:
    """Width 16 (a quarter), 10 classes, seeded untrained weights."""
    torch.manual_seed(0)
    return ResNet18Style(16)
