"""A small standardised, L2-regularised logistic regression in torch (the detectors' last stage).

Feinman et al. 2017 combine their two features, and Ma et al. 2018 their per-layer LID estimates,
with a logistic regression on z-scored features; this is that regression, fitted by Newton's method
in float64 (deterministic: no random initialisation, no minibatches) and evaluated as a torch
module, so a detector's score stays differentiable in its input. The means, standard deviations,
weights and bias are buffers: they are saved with the detector that owns the regression.

Both papers' code fits scikit-learn's ``LogisticRegressionCV``, which picks the penalty by
cross-validation; :meth:`LogisticRegression.fit_cv` does the same over :data:`L2_GRID` (5 folds
interleaved within each class, so deterministic; held-out class-balanced log-loss).
"""

from __future__ import annotations

import torch
from torch import nn

L2_GRID = tuple(10.0**e for e in range(-8, 1))


class LogisticRegression(nn.Module):
    """``logit(f) = w · (f − mean) / std + b``, fitted by :meth:`fit`; ``forward`` returns the logit (N)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    l2: torch.Tensor

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        for key in ("mean", "std", "weight"):
            self.register_buffer(key, torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros((), dtype=torch.float64))
        self.register_buffer("l2", torch.tensor(float("nan"), dtype=torch.float64))

    def fit(self, features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3,
            steps: int = 50) -> LogisticRegression:
        """Fit on ``features`` (N×D) and 0/1 ``labels`` (N): minimise log-loss + ``l2``·‖w‖²/2 (bias unpenalised).

        The log-loss is class-balanced (each class weighs ½ however many examples it has, like
        scikit-learn's ``class_weight="balanced"``). Newton's method with a backtracking line search;
        stops when the step is below 1e-10.
        """
        if features.ndim != 2 or labels.shape != (len(features),):
            raise ValueError(f"logistic regression: expected N×D features and N labels, got {tuple(features.shape)} "
                             f"and {tuple(labels.shape)}")
        y = labels.detach().double()
        if not bool(((y == 0) | (y == 1)).all()) or not 0 < float(y.sum()) < len(y):
            raise ValueError("logistic regression: labels must be 0/1 with both classes present")
        f = features.detach().double()
        self.mean = f.mean(0)
        self.std = f.std(0, unbiased=False).clamp_min(1e-12)
        z = torch.cat([(f - self.mean) / self.std, torch.ones(len(f), 1, dtype=torch.float64)], 1)
        w = torch.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum()) * len(y)
        theta = _newton(z, y, w, l2, steps)
        self.weight, self.bias = theta[:-1].clone(), theta[-1].clone()
        self.l2 = torch.tensor(float(l2), dtype=torch.float64)
        return self

    def fit_cv(self, features: torch.Tensor, labels: torch.Tensor, grid: tuple[float, ...] = L2_GRID,
               folds: int = 5) -> LogisticRegression:
        """:meth:`fit` with the ``l2`` of ``grid`` that minimises the held-out balanced log-loss over ``folds`` folds.

        Fold ``j`` holds every ``folds``-th example of each class, starting at its ``j``-th; ties go to
        the smaller penalty. The chosen penalty is kept in the ``l2`` buffer.
        """
        y = labels.detach().double()
        fold = torch.empty(len(y), dtype=torch.long)
        for c in (0, 1):
            idx = (y == c).nonzero().squeeze(1)
            fold[idx] = torch.arange(len(idx)) % folds
        losses = [self._held_out(features, y, fold, folds, l2) for l2 in grid]
        return self.fit(features, labels, grid[min(range(len(grid)), key=lambda i: (losses[i], i))])

    @staticmethod
    def _held_out(features: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, folds: int, l2: float) -> float:
        total = 0.0
        for j in range(folds):
            test = fold == j
            reg = LogisticRegression(features.shape[1]).fit(features[~test], y[~test], l2)
            with torch.no_grad():
                logits, yt = reg(features[test]), y[test]
            w = torch.where(yt == 1, 0.5 / yt.sum(), 0.5 / (1 - yt).sum())
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none")
            total += float((w * loss).sum())
        return total / folds

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        z = (features.double() - self.mean) / self.std
        return z @ self.weight + self.bias


def _objective(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, theta: torch.Tensor,
               penalty: torch.Tensor) -> torch.Tensor:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ theta, y, weight=w)
    return loss + 0.5 * (penalty * theta**2).sum()


def _newton(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, l2: float, steps: int) -> torch.Tensor:
    """Newton iterations for the weighted, penalised mean log-loss (``z``'s last column: the unpenalised bias)."""
    d = z.shape[1]
    penalty = torch.full((d,), float(l2), dtype=torch.float64)
    penalty[-1] = 0.0
    theta = torch.zeros(d, dtype=torch.float64)
    loss = _objective(z, y, w, theta, penalty)
    for _ in range(steps):
        p = torch.sigmoid(z @ theta)
        grad = z.T @ (w * (p - y)) / len(y) + penalty * theta
        hess = (z * (w * p * (1 - p))[:, None]).T @ z / len(y) + torch.diag(penalty + 1e-9)
        step = torch.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:
            new = _objective(z, y, w, theta - t * step, penalty)
            if new <= loss:
                break
            t *= 0.5
        theta, loss = theta - t * step, _objective(z, y, w, theta - t * step, penalty)
        if float((t * step).abs().max()) < 1e-10:
            break
    return theta


def fit_regression(features: torch.Tensor, labels: torch.Tensor, l2: float | None) -> LogisticRegression:
    """A regression fitted with penalty ``l2``, or cross-validated over :data:`L2_GRID` when ``l2`` is None."""
    reg = LogisticRegression(features.shape[1])
    return reg.fit_cv(features, labels) if l2 is None else reg.fit(features, labels, l2)


__all__ = ["L2_GRID", "LogisticRegression", "fit_regression"]
