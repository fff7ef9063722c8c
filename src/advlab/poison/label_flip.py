"""Label flipping: change the labels of a fraction of the training set, leave the images alone.

Three ways to choose what to flip (every one changes exactly ``poison_count(fraction, N)`` labels):

- ``uniform``: examples drawn uniformly from the whole set, each given a label drawn uniformly
  from the other classes — the "uniform label noise" Rolnick et al. 2017 found deep networks
  largely tolerate;
- ``pair``: examples of one ``source`` class relabelled as one ``target`` class (the systematic
  noise of Rolnick et al.'s "structured" setting, Biggio et al.'s class-pair flips);
- ``concentrated``: the examples nearest a class boundary, by a given model's margin (true-class
  logit minus the largest other), each relabelled as its runner-up class — flips an attacker
  concentrates where they move the boundary most.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advlab._device import draw, module_device
from advlab.attacks.fastview import fast_view
from advlab.metrics import predict_logits
from advlab.poison.base import PoisonedData, check_class, check_data, default_generator, finish, pick, poison_count

PAPER = ("Rolnick, Veit, Belongie, Shavit 2017, Deep Learning is Robust to Massive Label Noise, "
         "https://arxiv.org/abs/1705.10694")
PAPER_FLIPS = ("Biggio, Nelson, Laskov 2011, Support Vector Machines Under Adversarial Label Noise, "
               "https://proceedings.mlr.press/v20/biggio11.html")


def uniform_flip(x: torch.Tensor, y: torch.Tensor, *, fraction: float, generator: torch.Generator | None = None,
                 num_classes: int | None = None) -> PoisonedData:
    """Flip ``round(fraction·N)`` labels drawn uniformly, each to a uniformly drawn other class."""
    x, y, classes = check_data(x, y, num_classes)
    gen = default_generator(generator)
    idx = pick(torch.arange(len(y), device=y.device), poison_count(fraction, len(y)), gen, "examples")
    shift = draw(torch.randint, 1, classes, (len(idx),), generator=gen, device=y.device)
    return finish(x, y, idx, None, (y[idx] + shift) % classes, "flip-uniform", params={"fraction": fraction})


def pair_flip(x: torch.Tensor, y: torch.Tensor, *, fraction: float, source: int, target: int,
              generator: torch.Generator | None = None, num_classes: int | None = None) -> PoisonedData:
    """Relabel ``round(fraction·N)`` examples of class ``source`` (drawn uniformly) as ``target``."""
    x, y, classes = check_data(x, y, num_classes)
    check_class("source", source, classes)
    check_class("target", target, classes)
    if source == target:
        raise ValueError(f"target: expected a class other than the source {source}, got {target}")
    pool = (y == source).nonzero().flatten()
    idx = pick(pool, poison_count(fraction, len(y)), default_generator(generator), f"examples of class {source}")
    return finish(x, y, idx, None, torch.full_like(idx, target), "flip-pair",
                  params={"fraction": fraction, "source": source, "target": target}, target=target)


def margins(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
            batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the true-class logit minus the largest other, and that other (runner-up) class.

    One pass without gradients, on the model's fast view (:func:`advlab.attacks.fastview.fast_view`:
    the same network with ``channels_last`` weights, its logits equal to the model's up to float32
    rounding; the model itself is untouched), in batches of ``batch_size`` (measured on lenet / MNIST,
    one thread: the view halves the pass's time; 512 is as fast as 1 000 there, and faster on a plain model).
    """
    dev = module_device(model)
    net = fast_view(model, x[:2].to(dev)) if isinstance(model, nn.Module) and len(x) else model
    with torch.no_grad():
        logits = predict_logits(net, x, batch_size, device=dev)
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    best, runner_up = others.max(1)
    return true - best, runner_up


def concentrated_flip(x: torch.Tensor, y: torch.Tensor, *, fraction: float,
                      model: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None = None,
                      num_classes: int | None = None) -> PoisonedData:
    """Relabel the ``round(fraction·N)`` examples of smallest margin under ``model`` as their runner-up class.

    Deterministic given the model (ties go to the lower row number); ``generator`` is accepted for
    the common signature and not used.
    """
    x, y, _ = check_data(x, y, num_classes)
    default_generator(generator)
    k = poison_count(fraction, len(y))
    margin, runner_up = margins(model, x, y)
    order = torch.sort(margin.double(), stable=True).indices
    idx = order[:k].sort().values
    return finish(x, y, idx, None, runner_up[idx], "flip-concentrated", params={"fraction": fraction})


__all__ = ["PAPER", "PAPER_FLIPS", "concentrated_flip", "margins", "pair_flip", "uniform_flip"]
