"""Local intrinsic dimensionality (Ma et al. 2018), registered as ``"lid"``.

Per layer, the maximum-likelihood LID estimate of an input's activation among the ``k`` nearest
activations of a minibatch of clean images (the paper's MNIST setting: k = 20, minibatch 100):
``LID(x) = −(1/k · Σᵢ log(rᵢ(x) / r_k(x)))⁻¹`` with rᵢ the distance to the i-th nearest neighbour.
The layers are every leaf module's output of ``advlab.models.features.layer_outputs`` (input
normalisation, each convolution, activation, pooling and linear layer, the last linear layer's
output being the logits), with an output equal to an earlier one on the reference batch dropped
(a flatten of the previous layer, an in-place activation): :meth:`layer_names` lists them. With
``softmax=True`` (the default) the softmax of the logits is one more layer, as in the paper, whose
Keras networks end in a softmax layer whose output is among the layers it estimates LID on.

The paper estimates LID within each random minibatch; here the minibatch is fixed: one reference
batch of ``batch`` clean images, drawn (seeded) from the clean images passed to ``fit`` and
stored as buffers (one per layer), so an input's score is a deterministic, differentiable function
of that input alone, which an adaptive attack can follow. The per-layer LIDs, z-scored, go to a
class-balanced logistic regression (penalty ``l2``, by default cross-validated) fitted on clean
images (the ones not in the reference batch) + noisy ones against adversarial ones; the score is
its logit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab._checks import check_nonneg, check_positive_int
from advlab.detect.base import Detector, register_detector
from advlab.detect.kdbu import batched, check_fit_sets, check_input
from advlab.detect.logistic import LogisticRegression, fit_regression
from advlab.models.features import layer_outputs

PAPER = ("Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle, Bailey 2018, Characterizing Adversarial "
         "Subspaces Using Local Intrinsic Dimensionality, https://arxiv.org/abs/1801.02613")


def mle_lid(acts: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """MLE LID of each row of ``acts`` (N×D) among its ``k`` nearest rows of ``ref`` (M×D), in float64 (N)."""
    a, r = acts.double(), ref.double()
    d2 = ((a**2).sum(1, keepdim=True) - 2 * a @ r.T + (r**2).sum(1)).clamp_min(1e-24)
    dist = d2.topk(k, dim=1, largest=False).values.sqrt()  # ascending: r_1 ≤ … ≤ r_k
    total = torch.log(dist / dist[:, -1:]).sum(1).clamp_max(-1e-12)
    return -k / total


def _outputs(model: nn.Module, x: torch.Tensor, softmax: bool) -> list[torch.Tensor]:
    logits, outs = layer_outputs(model, x)
    return [out.flatten(1) for _name, out in outs] + ([logits.softmax(1)] if softmax else [])


@register_detector
class LocalIntrinsicDimensionality(Detector):
    """Per-layer LID + logistic regression (Ma et al. 2018); see the module docstring."""

    name = "lid"
    layers: torch.Tensor
    in_shape: torch.Tensor

    def __init__(self, k: int = 20, batch: int = 100, softmax: bool = True, seed: int = 0,
                 l2: float | None = None) -> None:
        super().__init__()
        self.k, self.batch = check_positive_int("k", k), check_positive_int("batch", batch)
        if self.k >= self.batch:
            raise ValueError(f"k: expected fewer neighbours than the reference batch ({batch}), got {k}")
        self.seed, self.l2, self.softmax = int(seed), None if l2 is None else check_nonneg("l2", l2), bool(softmax)
        self.register_buffer("layers", torch.zeros(0, dtype=torch.long))
        self.register_buffer("in_shape", torch.zeros(0, dtype=torch.long))
        self.reg = LogisticRegression(0)

    def config(self) -> dict[str, Any]:  # noqa: D102
        return {"k": self.k, "batch": self.batch, "softmax": self.softmax, "seed": self.seed, "l2": self.l2}

    def layer_names(self) -> list[str]:
        """The names (as in ``layer_outputs``) of the layers whose LID the detector uses."""
        shape = (1, *(int(s) for s in self.in_shape))
        with torch.no_grad():
            names = [name for name, _ in layer_outputs(self.model, torch.zeros(shape))[1]] + ["softmax"]
        return [names[i] for i in self.layers.tolist()]

    def lids(self, x: torch.Tensor) -> torch.Tensor:
        """Per-layer LID estimates of ``x`` against the stored reference batch (N×L, float64), differentiable."""
        outs = _outputs(self.model, x, self.softmax)
        return torch.stack([mle_lid(outs[i], getattr(self, f"ref_{j}").to(x.device), self.k)
                            for j, i in enumerate(self.layers.tolist())], 1)

    def fit(self, model: nn.Module, x_clean: torch.Tensor, x_adv: torch.Tensor, x_noisy: torch.Tensor | None = None,
            *, generator: torch.Generator | None = None) -> LocalIntrinsicDimensionality:
        """Draw the reference batch, pick the distinct layers, fit the regression on the other images' LIDs."""
        self.in_shape = check_fit_sets(self.name, model, {"x_clean": x_clean, "x_adv": x_adv, "x_noisy": x_noisy})
        if len(x_clean) <= self.batch:
            raise ValueError(f"{self.name}: x_clean needs more than batch={self.batch} images (a reference batch "
                             f"and clean negatives), got {len(x_clean)}")
        self.bind(model)
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(x_clean), generator=gen)
        with torch.no_grad():
            outs = _outputs(model, x_clean[order[: self.batch]], self.softmax)
        kept: list[int] = []
        for i, out in enumerate(outs):
            if not any(outs[j].shape == out.shape and torch.equal(outs[j], out) for j in kept):
                kept.append(i)
        self.layers = torch.tensor(kept, dtype=torch.long)
        for j, i in enumerate(kept):
            self.register_buffer(f"ref_{j}", outs[i].detach().clone())
        negatives = [batched(self.lids, x_clean[order[self.batch :]])]
        if x_noisy is not None:
            negatives.append(batched(self.lids, x_noisy))
        neg, pos = torch.cat(negatives), batched(self.lids, x_adv)
        self.reg = fit_regression(
            torch.cat([neg, pos]), torch.cat([torch.zeros(len(neg)), torch.ones(len(pos))]), self.l2)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The regression's logit on the per-layer LIDs of ``x`` (N, float64), differentiable in ``x``."""
        check_input(self.name, x, self.in_shape)
        if not len(self.reg.weight):
            raise RuntimeError(f"{self.name}: not fitted; call fit(model, x_clean, x_adv) or load_detector first")
        out: torch.Tensor = self.reg(self.lids(x))
        return out

    def score(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:  # noqa: D102
        return super().score(check_input(self.name, x, self.in_shape), batch_size)

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Holders for a saved detector: the reference batches, the layer indices and the regression."""
        super().prepare(shapes)
        self.reg = LogisticRegression(shapes["reg.weight"][0])


__all__ = ["PAPER", "LocalIntrinsicDimensionality", "mle_lid"]
