"""Penultimate-layer features: the input of a network's last linear layer.

The defenses (spectral signatures, activation clustering) inspect a trained model's penultimate
representation, and the feature-collision poison matches it. A forward hook on the last
``nn.Linear`` reads it for any architecture that ends in one (lenet, cnn, mlp, googlenet); the
hook is removed before returning, so the model is left as it was. ``depth`` reaches further back:
``depth=2`` reads the input of the second-to-last ``nn.Linear`` (lenet: the 120-unit layer), where
a backdoor's poisons still differ from the target class's own images more than at the last one.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab._device import module_device


def last_linear(model: nn.Module, depth: int = 1) -> nn.Linear:
    """The model's ``depth``-th ``nn.Linear`` from the end (1: its classifier head); a one-line error if none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch nn.Module (penultimate features need one), got "
                        f"{type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth: expected a positive int (1 = the last nn.Linear), got {depth!r}")
    if len(layers) < depth:
        raise ValueError(f"model: {type(model).__name__} has {len(layers)} nn.Linear layer(s); features at depth "
                         f"{depth} need at least {depth}")
    return layers[-depth]


def features(model: nn.Module, x: torch.Tensor, depth: int = 1) -> torch.Tensor:
    """The input of the ``depth``-th ``nn.Linear`` from the end for ``x`` (differentiable when ``x`` requires grad)."""
    captured: list[torch.Tensor] = []
    hook = last_linear(model, depth).register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0].flatten(1)


def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, depth: int = 1) -> torch.Tensor:
    """Features of a whole set (penultimate for ``depth=1``), in batches, without gradients (N×D).

    Each batch runs where the model is; the features come back to ``x``'s device.
    """
    last_linear(model, depth)  # a bad depth fails before any forward pass
    dev = module_device(model)
    with torch.no_grad():
        return torch.cat([features(model, x[i : i + batch_size].to(dev), depth).to(x.device)
                          for i in range(0, len(x), batch_size)])


__all__ = ["features", "last_linear", "penultimate_features"]
