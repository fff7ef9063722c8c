"""Hidden features of a network: the input of its last linear layer, or every layer's output.

The defenses (spectral signatures, activation clustering) inspect a trained model's penultimate
representation, and the feature-collision poison matches it. A forward hook on the last
``nn.Linear`` reads it for any architecture that ends in one (lenet, cnn, mlp, googlenet); the
hook is removed before returning, so the model is left as it was. ``depth`` reaches further back:
``depth=2`` reads the input of the second-to-last ``nn.Linear`` (lenet: the 120-unit layer), where
a backdoor's poisons still differ from the target class's own images more than at the last one.

:func:`layer_outputs` reads every leaf module's output in the order the forward pass calls them
(the detectors of issue 16: LID reads each layer, a detector network one intermediate layer).
"""

from __future__ import annotations

from collections.abc import Callable

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


def layer_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The logits and every leaf module's output for ``x``, in call order, as (name, output) pairs.

    A leaf module is one without children (a conv, an activation, a pooling layer, a linear layer).
    A module called twice appears twice, its second output named ``"name#2"``; an output that is
    not a tensor is skipped. Differentiable when ``x`` requires grad; the hooks are removed before
    returning, so the model is left as it was.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch nn.Module (hidden layers need one), got {type(model).__name__}")
    outputs: list[tuple[str, torch.Tensor]] = []
    seen: dict[str, int] = {}

    def hook_for(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_m: nn.Module, _inp: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                seen[name] = seen.get(name, 0) + 1
                outputs.append((name if seen[name] == 1 else f"{name}#{seen[name]}", out))
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, outputs


__all__ = ["features", "last_linear", "layer_outputs", "penultimate_features"]
