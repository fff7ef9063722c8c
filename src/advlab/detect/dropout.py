"""Monte-Carlo dropout without train mode, and the dropout-enabled copy of a classifier (BU of issue 16).

Feinman et al. 2017's Bayesian uncertainty runs the network T times with dropout on. Here the
network stays in eval mode: forward hooks on its ``nn.Dropout`` modules (which are the identity in
eval mode) multiply their output by a Bernoulli mask drawn from a caller's ``torch.Generator``, so
the draws are seeded and the model's mode is never touched. The first dropout layer the forward
pass reaches repeats its input T times along the batch, so everything before it runs once and
everything after it runs on a T·N batch (one pass instead of T); a network where a tensor from
before that layer meets one from after it (a skip connection across it) falls back to T passes.

:func:`with_dropout` copies a classifier that has no dropout and puts an ``nn.Dropout(p)`` before
every ``nn.Linear`` that follows another ``nn.Linear`` (the hidden fully connected layers: lenet's
120→84 and 84→10, an MLP's hidden→hidden and hidden→classes); :func:`train_dropout_variant`
fine-tunes that copy with :func:`advlab.train.fit`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from advlab.train import TrainConfig, fit


def dropout_layers(model: nn.Module) -> list[nn.Dropout]:
    """The model's ``nn.Dropout`` modules (the ones MC dropout draws masks for)."""
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def with_dropout(model: nn.Module, p: float) -> nn.Module:
    """A deep copy of ``model`` with ``nn.Dropout(p)`` before each ``nn.Linear`` but the first (eval mode, frozen)."""
    net = copy.deepcopy(model)
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError(f"BU: {type(model).__name__} has {len(linears)} nn.Linear layer(s) and no dropout; the "
                         f"dropout variant needs at least two fully connected layers")
    for name in linears[1:]:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, nn.Sequential(nn.Dropout(p), getattr(parent, child)))
    return net.eval().requires_grad_(False)


def train_dropout_variant(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> float:
    """Fine-tune ``net`` (from :func:`with_dropout`) in place on ``(x, y)``; return the seconds it took.

    Adam, lr 1e-3, batch 128, cosine schedule, ``epochs`` epochs, starting from the classifier's own
    weights (``init_seed=False``); the network is left in eval mode with gradients off.
    """
    start = time.perf_counter()
    net.requires_grad_(True)
    fit(net, (x, y), None, TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=seed), progress=False,
        init_seed=False)
    net.eval().requires_grad_(False)
    return time.perf_counter() - start


def _mask_hook(p: float, passes: int, gen: torch.Generator, state: dict[str, bool],
               expand: bool) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
    def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> torch.Tensor:
        h = inp[0]
        if expand and not state["expanded"]:
            state["expanded"] = True
            h = h.repeat(passes, *([1] * (h.ndim - 1)))
        keep = torch.rand(h.shape, generator=gen, dtype=h.dtype).to(h.device) >= p
        return h * keep / (1.0 - p)
    return hook


def _run(model: nn.Module, x: torch.Tensor, passes: int, gen: torch.Generator, expand: bool) -> torch.Tensor:
    state = {"expanded": False}
    handles = [m.register_forward_hook(_mask_hook(m.p, passes, gen, state, expand)) for m in dropout_layers(model)]
    try:
        out: torch.Tensor = model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def mc_softmax(model: nn.Module, x: torch.Tensor, passes: int, gen: torch.Generator) -> torch.Tensor:
    """Softmax outputs of ``passes`` dropout draws (T×N×C), differentiable in ``x``; the model stays in eval mode."""
    if not dropout_layers(model):
        raise ValueError(f"MC dropout: {type(model).__name__} has no nn.Dropout layer")
    n = len(x)
    try:
        logits = _run(model, x, passes, gen, expand=True)
        if logits.shape[0] != passes * n:
            raise RuntimeError("dropout expansion did not reach the output")
        return logits.reshape(passes, n, -1).softmax(-1)
    except RuntimeError:  # a tensor from before the first dropout meets the T·N batch: T plain passes
        return torch.stack([_run(model, x, 1, gen, expand=False).softmax(-1) for _ in range(passes)])


def uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """Feinman et al.'s MC-dropout uncertainty of T×N×C softmax draws: mean ‖p_t‖² − ‖mean p_t‖² (N)."""
    return (probs**2).sum(-1).mean(0) - (probs.mean(0) ** 2).sum(-1)


__all__ = ["dropout_layers", "mc_softmax", "train_dropout_variant", "uncertainty", "with_dropout"]
