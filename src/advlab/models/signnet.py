"""signnet: a small VGG-style classifier for the 48×48 colour traffic signs of ``load_dataset("signs")``."""

from __future__ import annotations

import torch
from torch import nn

from advlab.models.nets import Normalize

# Per-channel statistics would need a per-channel Normalize; the signs data's overall mean and spread
# (about 0.45 and 0.25) are close enough for BatchNorm to take over after the first layer.
SIGNS_MEAN, SIGNS_STD = 0.45, 0.25


def _conv(cin: int, cout: int) -> list[nn.Module]:
    """3×3 convolution (same padding) → BatchNorm → ReLU."""
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SignNet(nn.Module):
    """conv16-conv16-pool-conv32-conv32-pool-conv64-conv64-pool → global average → dropout → fc.

    Every convolution is 3×3 with BatchNorm and ReLU (``width`` = 16 channels in the first block,
    doubling per block). For 3×48×48 inputs the feature maps are 48, 24, 12 and 6 pixels wide;
    global average pooling over the last 6×6 keeps the classifier small (73k parameters in all at
    ``width`` 16) and indifferent to where in the frame the sign is. Normalisation is the first
    layer, so ε stays in pixel units.
    """

    def __init__(
        self, in_shape: tuple[int, int, int] = (3, 48, 48), num_classes: int = 12,
        mean: float = SIGNS_MEAN, std: float = SIGNS_STD, width: int = 16, dropout: float = 0.2,
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        if min(h, w) < 8:
            raise ValueError(f"in_shape: signnet needs images of at least 8×8, got {h}×{w}")
        self.norm = Normalize(mean, std)
        self.features = nn.Sequential(
            *_conv(c, width), *_conv(width, width), nn.MaxPool2d(2),
            *_conv(width, 2 * width), *_conv(2 * width, 2 * width), nn.MaxPool2d(2),
            *_conv(2 * width, 4 * width), *_conv(4 * width, 4 * width), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.classifier(self.features(self.norm(x)))
        return out


__all__ = ["SIGNS_MEAN", "SIGNS_STD", "SignNet"]
