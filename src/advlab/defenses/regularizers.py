"""Robust optimisation: Parseval networks and an input-gradient penalty.

* ``parseval`` — Cisse et al. 2017 (https://arxiv.org/abs/1704.08847): after every step,
  W ← (1+β)W − βWWᵀW on every linear and (reshaped) convolution weight, keeping it near a
  Parseval tight frame (largest singular value near 1).
* ``gradnorm`` — an input-gradient-norm penalty: CE + β·‖∇ₓCE‖₂² (double back-propagation,
  Drucker & LeCun 1992; Ross & Doshi-Velez 2018, https://arxiv.org/abs/1711.09404).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advlab._deprecation import renamed_value
from advlab.train import TrainingDefense


def parseval_layers(model: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    """The layers Parseval regularisation constrains: every Linear and Conv2d except the last Linear."""
    layers: list[nn.Linear | nn.Conv2d] = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers[:-1] if layers and isinstance(layers[-1], nn.Linear) else layers


def spectral_norms(model: nn.Module) -> list[float]:
    """Largest singular value of each Parseval-constrained layer's weight (conv: reshaped to out × in·k·k)."""
    return [float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)) for m in parseval_layers(model)]


@dataclass
class Parseval(TrainingDefense):
    """Parseval regularisation (Cisse et al. 2017): W ← (1+β)W − βWWᵀW after every step.

    Applied to every Linear and Conv2d weight except the output layer (conv kernels reshaped to
    out × in·k·k; the rows are normalised when there are more rows than columns, as the paper
    does). ``retraction`` is the retraction strength β of the paper (0.0003 with SGD there; the
    larger default here matches Adam's larger steps).
    """

    name: str = "parseval"
    retraction: float = 0.003
    iterations: int = 1
    beta: InitVar[float | None] = None  # the old name of retraction (until advlab 0.3)

    def __post_init__(self, beta: float | None) -> None:
        self.retraction = renamed_value(self.name, "beta", "retraction", beta, self.retraction)

    def after_step(self, model: nn.Module) -> None:  # noqa: D102
        with torch.no_grad():
            for m in parseval_layers(model):
                w = m.weight.flatten(1)
                for _ in range(self.iterations):
                    if w.shape[0] <= w.shape[1]:
                        w = (1 + self.retraction) * w - self.retraction * (w @ w.T) @ w
                    else:
                        w = (1 + self.retraction) * w - self.retraction * w @ (w.T @ w)
                m.weight.copy_(w.view_as(m.weight))


@dataclass
class GradNormPenalty(TrainingDefense):
    """Input-gradient penalty: CE + β·mean ‖∇ₓ CE‖₂² (double back-propagation).

    ``beta`` weighs the penalty, as TRADES' ``beta`` weighs its KL term (the paper's λ).
    """

    name: str = "gradnorm"
    beta: float = 1.0
    lam: InitVar[float | None] = None  # the old name of beta (until advlab 0.3)

    def __post_init__(self, lam: float | None) -> None:
        self.beta = renamed_value(self.name, "lam", "beta", lam, self.beta)

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = xb.detach().requires_grad_(True)
        logits = model(x)
        ce = F.cross_entropy(logits, yb, reduction="none")
        (g,) = torch.autograd.grad(ce.sum(), x, create_graph=True)
        penalty = g.flatten(1).pow(2).sum(1).mean()
        return ce.mean() + self.beta * penalty, logits
