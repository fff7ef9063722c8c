"""The substitute (transfer) attack's model: trained from a target's labels alone.

Papernot, McDaniel, Goodfellow, Jha, Celik and Swami, "Practical black-box attacks against
machine learning", AsiaCCS 2017, https://arxiv.org/abs/1602.02697: label a small seed set by
querying the target, train a substitute, grow the set by Jacobian-based dataset augmentation
(x + λ·sign(∇ₓ F_{O(x)}(x))), and repeat. Every label query to the target is counted. The
examples crafted on the substitute are measured on the target by
:func:`advlab.evaluation.transfer.substitute_attack`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advlab._checks import check_nonneg, check_positive_int
from advlab.attacks.losses import loss_grad
from advlab.metrics import label_accuracy, predict_logits
from advlab.models import create_model
from advlab.models.blackbox import BlackBox, as_blackbox
from advlab.train import TrainConfig, TrainingDefense, fit

Model = Callable[[torch.Tensor], torch.Tensor]
LABEL_BATCH = 1000  # rows per label query and per augmentation step


@dataclass
class SubstituteResult:
    """A trained substitute and what it cost.

    Attributes:
        model: The substitute (frozen, eval mode).
        queries: Label queries made to the target (one per training point).
        train_size: Final size of the substitute's training set.
        history: Per round: ``round``, ``size`` (training points), ``queries`` (cumulative) and
            ``agreement`` (substitute vs target labels on ``eval_x``, if given).
        x_train: The final training set (seed points and their augmentations).
        y_train: The target's labels for ``x_train``.
    """

    model: nn.Module
    queries: int
    train_size: int
    history: list[dict[str, float]] = field(default_factory=list)
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None


def seed_set(x: torch.Tensor, y: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` examples of each class (a balanced seed set)."""
    check_positive_int("per_class", per_class)
    picks = [(y == c).nonzero().squeeze(1)[:per_class] for c in torch.unique(y).tolist()]
    return torch.cat(picks).sort().values


def jacobian_augment(
    substitute: Model, x: torch.Tensor, labels: torch.Tensor, lam: float,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """New points x + λ·sign(∇ₓ F_label(x)) (clipped to ``bounds``): Jacobian augmentation.

    F is the substitute's softmax output; its gradient has the sign of ∇ₓ log F_label(x), the
    gradient of the log-softmax, which is what is computed.
    """

    def log_prob_of(logits: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        return logits.log_softmax(dim=1).gather(1, lab[:, None]).squeeze(1)

    _, grad, _ = loss_grad(substitute, x, labels, log_prob_of)
    return (x + lam * grad.sign()).clamp(*bounds)


@dataclass
class LabelOracle:
    """The target seen through its labels, counting the attacker's queries (``spent``)."""

    box: BlackBox
    spent: int = 0

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """The target's labels of ``x``, counted as the attacker's queries."""
        before = self.box.total_queries
        out = self.box.labels(x)
        self.spent += self.box.total_queries - before
        return out

    def uncounted(self, x: torch.Tensor) -> torch.Tensor:
        """The target's labels of ``x`` for measuring agreement (not the attacker's queries)."""
        return torch.cat([self.box.labels(x[i : i + LABEL_BATCH]) for i in range(0, len(x), LABEL_BATCH)])


def check_schedule(n_seed: int, rounds: int, lam: float, tau: int, max_queries: int | None) -> None:
    """Refuse a bad schedule, or one that needs more than ``max_queries`` label queries, before any query."""
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds: expected an integer >= 0, got {rounds!r}")
    check_nonneg("lam", lam)
    check_positive_int("tau", tau)
    needed = n_seed * 2**rounds
    if max_queries is not None and needed > max_queries:
        raise ValueError(
            f"max_queries: {n_seed} seed points and {rounds} rounds need {needed} label "
            f"queries, more than {max_queries}"
        )


def round_config(config: TrainConfig, n: int, rho: int, min_steps: int) -> TrainConfig:
    """Round ρ's training: seed + ρ, and enough epochs for ``min_steps`` steps on ``n`` points."""
    epochs = max(config.epochs, math.ceil(min_steps / math.ceil(n / config.batch_size)))
    return TrainConfig(**{**asdict(config), "seed": config.seed + rho, "epochs": epochs})


def augment(model: Model, xs: torch.Tensor, ys: torch.Tensor, step: float,
            bounds: tuple[float, float]) -> torch.Tensor:
    """One augmentation of the whole training set, in batches."""
    return torch.cat([jacobian_augment(model, xs[i : i + LABEL_BATCH], ys[i : i + LABEL_BATCH], step, bounds)
                      for i in range(0, len(xs), LABEL_BATCH)])


def train_substitute(
    target: Any, seed_x: torch.Tensor, *, arch: str = "lenet", rounds: int = 6, lam: float = 0.1, tau: int = 3,
    config: TrainConfig | None = None, eval_x: torch.Tensor | None = None, num_classes: int = 10,
    bounds: tuple[float, float] = (0.0, 1.0), max_queries: int | None = None, min_steps: int = 500,
    defense: TrainingDefense | None = None,
) -> SubstituteResult:
    """Train a substitute of a labels-only target by Jacobian-based dataset augmentation.

    Papernot et al. 2017, https://arxiv.org/abs/1602.02697. Black-box: only the target's labels
    are used. Round 0 labels the seed set; each of ``rounds`` further rounds doubles the set
    with x + λ_ρ·sign(∇ₓ F_{O(x)}(x)) and labels only the new points, so the target answers
    ``len(seed_x) · 2**rounds`` label queries in all. The step's sign flips every ``tau``
    rounds (λ_ρ = λ·(−1)^⌊ρ/τ⌋), as in the paper, so the set does not drift off the data.

    Args:
        target: The target: a :class:`~advlab.models.blackbox.BlackBox` (labels suffice) or a torch
            model (only its argmax is used).
        seed_x: The attacker's initial unlabelled inputs.
        arch: Substitute architecture (advlab model registry).
        rounds: Augmentation rounds ρ.
        lam: Augmentation step λ.
        tau: Rounds between sign flips of λ.
        config: Training of the substitute at every round (from scratch, seeded).
        eval_x: Held-out inputs on which the substitute's agreement with the target is
            reported per round (these evaluation queries are not counted as the attacker's).
        num_classes: Number of classes of the target.
        bounds: Input bounds.
        max_queries: Refuse to start if the schedule needs more label queries than this.
        min_steps: Train each round for at least this many gradient steps (more epochs on
            the small early sets, which ``config.epochs`` alone would leave under-trained).
        defense: A training defense for the substitute (None: plain cross-entropy). Light
            adversarial training (e.g. PGD at ε = 0.1) costs no queries and makes the
            substitute's adversarial directions transfer far better (measured on lenet-mnist:
            see docs/benchmarks.md, "Black-box"; Springer, Mitchell, Kenyon, "A little robustness
            goes a long way", NeurIPS 2021, report the same effect for slightly robust surrogates).

    Returns:
        The substitute, the label queries spent and the per-round history.
    """
    check_schedule(len(seed_x), rounds, lam, tau, max_queries)
    oracle = LabelOracle(as_blackbox(target))
    config = config or TrainConfig(epochs=10, batch_size=32, lr=2e-3)
    shape = tuple(seed_x.shape[1:])
    xs = seed_x.detach().clone()
    ys = oracle.label(xs)
    eval_labels = oracle.uncounted(eval_x) if eval_x is not None else None
    history: list[dict[str, float]] = []
    model: nn.Module = create_model(arch, in_shape=shape, num_classes=num_classes)
    for rho in range(rounds + 1):
        model = create_model(arch, in_shape=shape, num_classes=num_classes)
        fit(model, (xs, ys), None, round_config(config, len(xs), rho, min_steps), progress=False, defense=defense,
            device=xs.device)  # the substitute advlab builds trains (and is returned) on the seed set's device
        history.append({"round": rho, "size": len(xs), "queries": oracle.spent})
        if eval_x is not None and eval_labels is not None:
            history[-1]["agreement"] = label_accuracy(predict_logits(model, eval_x, LABEL_BATCH).argmax(1), eval_labels)
        if rho == rounds:
            break
        new_x = augment(model, xs, ys, lam * (-1) ** (rho // tau), bounds)
        xs, ys = torch.cat([xs, new_x]), torch.cat([ys, oracle.label(new_x)])
    return SubstituteResult(model, oracle.spent, len(xs), history, xs, ys)


__all__ = ["LabelOracle", "SubstituteResult", "jacobian_augment", "seed_set", "train_substitute"]
