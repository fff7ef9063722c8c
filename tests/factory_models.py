"""Factories the user-model tests load as ``factory_models:NAME`` (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import torch
from torch import nn


def make_tiny() -> nn.Module:
    """A tiny CNN for 3×16×16 images in [0, 1], 2 classes; its weights fixed by a seed."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 2))


def make_digits_mlp() -> nn.Module:
    """An untrained MLP for 1×8×8 images, 10 classes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def not_a_model() -> str:
    """A factory that returns no module."""
    return "not a model"


def broken() -> nn.Module:
    """A factory that fails."""
    raise RuntimeError("out of coffee")


def make_linear() -> nn.Module:
    """A certifiable MLP (Flatten, Linear, ReLU, Linear) for 3×16×16 images, 2 classes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(768, 16), nn.ReLU(), nn.Linear(16, 2))


def make_digits_net() -> nn.Module:
    """An MLP for 1×8×8 images, 10 classes, with its own (Kaiming) initialisation drawn from the global RNG."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    return net
