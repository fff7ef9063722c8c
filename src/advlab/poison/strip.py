"""STRIP (Gao et al. 2019): a test-time backdoor detector from the entropy of superimposed inputs.

Each input is superimposed on ``n`` clean images drawn from a held-out pool (pixel-wise sum,
saturated to [0, 1], as Gao et al. add the two images); the model's mean prediction entropy over
those blends is the input's score. A clean input's prediction scatters once another digit is laid
over it (high entropy); a triggered input stays pinned to the backdoor's target (low entropy).
:func:`roc_auc` measures how well the entropy separates triggered from clean inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from advlab._checks import check_images, check_positive_int
from advlab._device import draw, module_device
from advlab.metrics import predict_logits, roc_auc
from advlab.poison.base import default_generator

PAPER = ("Gao, Xu, Wang, Chen, Ranasinghe, Nepal 2019, STRIP: A Defence Against Trojan Attacks on Deep Neural "
         "Networks, https://arxiv.org/abs/1902.06531")


def strip_entropy(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, pool: torch.Tensor, *,
                  n: int = 32, generator: torch.Generator | None = None, batch_size: int = 4096) -> torch.Tensor:
    """Per input: the mean entropy (nats) of the model's softmax over ``n`` superimpositions with pool images."""
    x = check_images("x", x, (0.0, 1.0))
    pool = check_images("pool", pool, (0.0, 1.0))
    check_positive_int("n", n)
    if pool.shape[1:] != x.shape[1:]:
        raise ValueError(f"pool: expected images of shape {tuple(x.shape[1:])}, got {tuple(pool.shape[1:])}")
    which = draw(torch.randint, 0, len(pool), (len(x), n), generator=default_generator(generator), device=pool.device)
    blends = (x[:, None] + pool[which].to(x.device)).clamp(0.0, 1.0).flatten(0, 1)
    logp = torch.log_softmax(predict_logits(model, blends, batch_size, module_device(model)).double(), 1)
    entropy = -(logp.exp() * logp).sum(1)
    return entropy.view(len(x), n).mean(1)


def far_at_frr(positive: torch.Tensor, negative: torch.Tensor, frr: float = 0.01) -> float:
    """Share of positives missed at the threshold that flags ``frr`` of the negatives (Gao et al.'s FAR at FRR).

    Scores are "higher = more suspect"; the threshold is the negatives' (1 − frr) quantile.
    """
    threshold = torch.quantile(negative.double(), 1.0 - frr)
    return float((positive.double() <= threshold).double().mean())


__all__ = ["PAPER", "far_at_frr", "roc_auc", "strip_entropy"]
