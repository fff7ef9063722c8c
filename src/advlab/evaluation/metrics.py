"""Pure metric functions. Every metric advlab reports is computed here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable

import torch


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per-example bool: the true label is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1)


def acc_at_k(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy of ``logits`` against labels ``y`` (a float in [0, 1])."""
    return float(topk_correct(logits, y, k).float().mean()) if len(y) else float("nan")


@torch.no_grad()
def predict_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """Logits of ``model`` on ``x``, in batches, without gradients."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def clean_accuracy(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> tuple[float, float]:
    """(Acc@1, Acc@5) of ``model`` on ``(x, y)``."""
    logits = predict_logits(model, x, batch_size)
    return acc_at_k(logits, y, 1), acc_at_k(logits, y, 5)
