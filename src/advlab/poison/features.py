"""Penultimate-layer features: the input of a network's last linear layer.

The defenses (spectral signatures, activation clustering) inspect a trained model's penultimate
representation, and the feature-collision poison matches it. A forward hook on the last
``nn.Linear`` reads it for any architecture that ends in one (lenet, cnn, mlp, googlenet); the
hook is removed before returning, so the model is left as it was.
"""

from __future__ import annotations

import torch
from torch import nn


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` module (its classifier head); a one-line error if there is none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch nn.Module (penultimate features need one), got "
                        f"{type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no nn.Linear layer to read penultimate features from")
    return layers[-1]


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The penultimate features of ``x`` (differentiable when ``x`` requires grad)."""
    captured: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0].flatten(1)


def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate features of a whole set, in batches, without gradients (N×D)."""
    with torch.no_grad():
        return torch.cat([features(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


__all__ = ["features", "last_linear", "penultimate_features"]
