"""Pure metric functions. Every metric advlab reports is computed here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable

import torch


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per-example bool: the true label is among the ``k`` highest logits.

    Top-1 uses ``argmax`` so that it agrees exactly with how attacks judge success (a tie between
    logits cannot make an example count as both correct and fooled).
    """
    if k == 1:
        return logits.argmax(dim=1) == y
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1)


def acc_at_k(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy of ``logits`` against labels ``y`` (a float in [0, 1])."""
    return float(topk_correct(logits, y, k).float().mean()) if len(y) else float("nan")


@torch.no_grad()
def predict_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1000,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on ``x``, in batches, without gradients, on ``x``'s device.

    ``device``: where the model computes (each batch is moved there, the logits come back to
    ``x.device``); ``None`` runs the model on ``x`` where it is.
    """
    where = x.device if device is None else device  # (.to the tensor's own device returns it, no copy)
    return torch.cat([model(x[i : i + batch_size].to(where)).to(x.device) for i in range(0, len(x), batch_size)])


def clean_accuracy(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """(Acc@1, Acc@5) of ``model`` on ``(x, y)``; ``device``: where the model computes (see :func:`predict_logits`)."""
    logits = predict_logits(model, x, batch_size, device)
    y = y.to(logits.device)
    return acc_at_k(logits, y, 1), acc_at_k(logits, y, 5)


def median_or_none(values: torch.Tensor) -> float | None:
    """Median of a 1-D tensor (lower median for even counts, like torch), or None when empty."""
    return float(values.median()) if values.numel() else None


def mean_or_none(values: torch.Tensor) -> float | None:
    """Mean of a 1-D tensor as float, or None when empty."""
    return float(values.double().mean()) if values.numel() else None


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example L0 (changed elements), L1, L2 and L∞ norms of x_adv − x."""
    d = (x_adv - x).flatten(1)
    return {
        "l0": (d != 0).sum(dim=1).to(torch.float64),
        "l1": d.abs().sum(dim=1).to(torch.float64),
        "l2": d.norm(dim=1).to(torch.float64),
        "linf": d.abs().amax(dim=1).to(torch.float64),
    }


def outcome_at_eps(
    adv: torch.Tensor,
    dist: torch.Tensor,
    eps: float | None,
    top1_adv: torch.Tensor,
    top5_adv: torch.Tensor,
    top1_clean: torch.Tensor,
    top5_clean: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example (broken, top-1 correct, top-5 correct) of an attack scored at budget ε.

    An adversarial example counts at ε only if its distance is ≤ ε; otherwise the attacker at
    that budget is left with the clean image. ``eps=None`` scores the attack as it ran.
    """
    within = adv if eps is None else adv & (dist <= eps * (1 + 1e-6) + 1e-7)
    top1 = torch.where(within, top1_adv, top1_clean)
    top5 = torch.where(within, top5_adv, top5_clean)
    return within & top1_clean, top1, top5


def label_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Share of predicted labels ``pred`` equal to ``y`` (models seen through their labels only)."""
    return float((pred == y).float().mean()) if len(y) else float("nan")


def transfer_success(clean_correct: torch.Tensor, adv_correct: torch.Tensor) -> float:
    """Share of the examples a model classifies correctly whose adversarial version it misclassifies.

    NaN when the model classifies no example correctly (the rate is undefined, not 0).
    """
    if not bool(clean_correct.any()):
        return float("nan")
    return float((~adv_correct[clean_correct]).float().mean())


__all__ = [
    "acc_at_k", "clean_accuracy", "label_accuracy", "mean_or_none", "median_or_none", "outcome_at_eps",
    "perturbation_norms", "predict_logits", "roc_auc", "roc_curve", "threshold_at_fpr", "topk_correct",
    "transfer_success",
]


def fooling_rate(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> float:
    """The share of examples whose top-1 prediction changes from ``clean_logits`` to ``adv_logits``.

    Moosavi-Dezfooli et al. 2017's fooling rate of a universal perturbation: the true label plays no
    part (a clean error that the perturbation moves to another wrong class counts as fooled).
    """
    if len(clean_logits) == 0:
        return float("nan")
    return float((clean_logits.argmax(dim=1) != adv_logits.argmax(dim=1)).float().mean())


def roc_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of scores where positives should score higher (ties count ½).

    Computed from ranks (the Mann–Whitney U statistic), in O(n log n).

    Example:
        >>> roc_auc(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 2.0]))
        0.875
    """
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("roc_auc: expected at least one positive and one negative score")
    both = torch.cat([positive.double(), negative.double()])
    _values, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first occurrence
    ranks = (first + (counts - 1) / 2.0 + 1.0)[inverse]  # average 1-based ranks
    n_pos, n_neg = len(positive), len(negative)
    u = float(ranks[:n_pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_curve(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ROC curve of scores where positives should score higher: (false-positive rates, true-positive rates).

    One point per distinct threshold, from (0, 0) to (1, 1); a threshold t flags every score ≥ t.

    Example:
        >>> fpr, tpr = roc_curve(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 2.0]))
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("roc_curve: expected at least one positive and one negative score")
    thresholds = torch.unique(torch.cat([positive.double(), negative.double()])).flip(0)
    tpr = (positive.double()[None, :] >= thresholds[:, None]).double().mean(1)
    fpr = (negative.double()[None, :] >= thresholds[:, None]).double().mean(1)
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([zero, fpr]), torch.cat([zero, tpr])


def threshold_at_fpr(negative: torch.Tensor, fpr: float = 0.05) -> float:
    """The threshold that flags at most ``fpr`` of the negatives: an input is flagged when its score is > t.

    Scores are "higher = more suspect". At most
    ⌊fpr·n⌋ of the n negatives are flagged (ties never push the rate over ``fpr``).

    Example:
        >>> threshold_at_fpr(torch.arange(100.0), 0.05)
        94.0
    """
    if len(negative) == 0:
        raise ValueError("threshold_at_fpr: expected at least one negative score")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"threshold_at_fpr: fpr must be in [0, 1), got {fpr}")
    ordered = torch.sort(negative.double(), descending=True).values
    allowed = int(fpr * len(ordered) + 1e-9)  # negatives that may be flagged
    return float(ordered[allowed])
