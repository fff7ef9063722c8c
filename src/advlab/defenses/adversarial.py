"""Adversarial training: a batch's loss on attacked inputs (Goodfellow et al., Madry et al., Wong et al., TRADES).

* ``adversarial`` — Goodfellow, Shlens, Szegedy 2015 (https://arxiv.org/abs/1412.6572): each
  batch mixes clean and adversarial examples, loss = w·CE(clean) + (1−w)·CE(adv); the crafting
  attack is any registered attack (FGSM by default).
* ``pgd`` — Madry et al. 2018 (https://arxiv.org/abs/1706.06083): train on PGD examples only.
* ``fast`` — Wong, Rice, Kolter 2020 (https://arxiv.org/abs/2001.03994): FGSM from a uniform
  random start with step 1.25·ε.
* ``trades`` — Zhang et al. 2019 (https://arxiv.org/abs/1901.08573): CE(clean) + β·KL(f(x)‖f(x′)),
  x′ maximising the KL inside the ε-ball.
* ``negative`` — Hosseini et al. 2017 (https://arxiv.org/abs/1703.06857): add the negatives
  1 − x of ``count`` training images to the training set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import check_nonneg, check_positive_int
from advlab._deprecation import renamed_value
from advlab._device import draw
from advlab.attacks import get_attack
from advlab.attacks.gradient import steepest_step
from advlab.attacks.losses import loss_grad
from advlab.threat import Norm, ThreatModel
from advlab.train import TrainingDefense


def _frac(arg: str, value: float) -> float:
    value = check_nonneg(arg, value)
    if value > 1:
        raise ValueError(f"{arg}: expected a number in [0, 1], got {value}")
    return value


@contextmanager
def _crafting_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode while crafting (BatchNorm statistics frozen); the previous mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@dataclass
class AdversarialTraining(TrainingDefense):
    """Adversarial training with any registered attack: loss = w·CE(clean) + (1 − w)·CE(adv).

    ``clean_weight`` w = 0.5 is Goodfellow et al.'s mixed training; w = 0 trains on adversarial
    examples only (Madry et al.). ε rises linearly from 0 over the first ``eps_warmup`` fraction
    of training (a ramp keeps small networks from collapsing early at large ε). For attacks that
    take ``steps`` and ``step_size`` the step follows ε: ``rel_step_size``·ε (default 2.5/steps).
    """

    name: str = "adversarial"
    attack: str = "fgsm"
    norm: Norm = "linf"
    eps: float = 0.3
    clean_weight: float = 0.5
    eps_warmup: float = 0.0
    steps: int = 10
    rel_step_size: float | None = None
    attack_params: dict[str, Any] = field(default_factory=dict)
    rel_step: InitVar[float | None] = None  # the old name of rel_step_size (until advlab 0.3)

    def __post_init__(self, rel_step: float | None) -> None:
        self.rel_step_size = renamed_value(self.name, "rel_step", "rel_step_size", rel_step, self.rel_step_size)
        self._info = get_attack(self.attack)
        check_nonneg("eps", self.eps)
        _frac("clean_weight", self.clean_weight)
        _frac("eps_warmup", self.eps_warmup)
        check_positive_int("steps", self.steps)
        if self.norm not in self._info.norms:
            raise ValueError(f"norm: attack {self.attack!r} supports {', '.join(self._info.norms)}, got {self.norm!r}")

    def eps_at(self, progress: float) -> float:
        """ε at this point of training (the warm-up ramp)."""
        if self.eps_warmup <= 0:
            return self.eps
        return self.eps * min(1.0, progress / self.eps_warmup)

    def step_size(self, eps: float) -> float:
        """The step of the iterative attacks at budget ε: ``rel_step_size``·ε (default 2.5·ε/steps)."""
        return (self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps) * eps

    def craft(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float
    ) -> torch.Tensor:
        """Adversarial examples for this batch (model in eval mode while crafting)."""
        eps = self.eps_at(progress)
        if eps == 0:
            return xb
        params = dict(self.attack_params)
        if {"steps", "step_size"} <= set(self._info.parameters):  # an iterative attack: the step follows ε
            params.setdefault("steps", self.steps)
            params.setdefault("step_size", self.step_size(eps))
        with _crafting_mode(model):
            res = self._info(model, xb, yb, ThreatModel(self.norm, eps), generator=generator, **params)
        return res.x_adv.detach()

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.craft(model, xb, yb, generator, progress)
        w = self.clean_weight
        if w > 0:
            logits_all = model(torch.cat([xb, x_adv]))
            clean, adv = logits_all[: len(xb)], logits_all[len(xb) :]
            loss = w * F.cross_entropy(clean, yb) + (1 - w) * F.cross_entropy(adv, yb)
            return loss, clean
        adv = model(x_adv)
        return F.cross_entropy(adv, yb), adv


@dataclass
class FastAdversarialTraining(AdversarialTraining):
    """Fast adversarial training (Wong et al. 2020): FGSM from a uniform random start, step 1.25·ε.

    That is the registered PGD with one step of ``rel_step_size``·ε from its random start, so it
    crafts through it.
    """

    name: str = "fast"
    attack: str = "pgd"
    steps: int = 1
    clean_weight: float = 0.0
    rel_step_size: float | None = 1.25
    alpha: InitVar[float | None] = None  # the old name of rel_step_size (until advlab 0.3)

    def __post_init__(self, rel_step: float | None, alpha: float | None) -> None:
        self.rel_step_size = renamed_value(self.name, "alpha", "rel_step_size", alpha, self.rel_step_size)
        super().__post_init__(rel_step)


@dataclass
class Trades(AdversarialTraining):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(softmax f(x) ‖ softmax f(x′)).

    x′ starts at x + 0.001·N(0, 1) and takes ``steps`` signed-gradient steps of ``rel_step_size``·ε
    (default 2.5/steps) maximising the KL term, projected onto the ε-ball ∩ bounds.
    """

    name: str = "trades"
    attack: str = "pgd"
    beta: float = 6.0
    clean_weight: float = 0.0

    def craft(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float
    ) -> torch.Tensor:
        eps = self.eps_at(progress)
        if eps == 0:
            return xb
        threat = ThreatModel(self.norm, eps)
        alpha = self.step_size(eps)
        with _crafting_mode(model):
            with torch.no_grad():
                p_clean = F.softmax(model(xb), dim=1)

            def kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="none").sum(1)

            noise = draw(torch.randn, xb.shape, generator=generator, dtype=xb.dtype, device=xb.device)
            x_adv = threat.project(xb, xb + 0.001 * noise)
            for _ in range(self.steps):
                _, grad, _ = loss_grad(model, x_adv, p_clean, kl)
                step = steepest_step(grad, self.norm, alpha, at=x_adv, bounds=threat.bounds)
                x_adv = threat.project(xb, x_adv + step)
        return x_adv.detach()

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.craft(model, xb, yb, generator, progress)
        logits_all = model(torch.cat([xb, x_adv]))
        clean, adv = logits_all[: len(xb)], logits_all[len(xb) :]
        kl = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return F.cross_entropy(clean, yb) + self.beta * kl, clean


@dataclass
class NegativeImages(TrainingDefense):
    """Negative-image augmentation (Hosseini et al. 2017): add 1 − x for ``count`` training images.

    ``count`` images are drawn without replacement (seeded); their negatives keep their labels and
    join the training set, which grows by ``count``. ``count = -1`` adds the negative of every image.
    """

    name: str = "negative"
    count: int = -1

    def prepare_data(  # noqa: D102
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(self.count, int) or self.count < -1:
            raise ValueError(f"count: expected an integer >= 0 (or -1 for all), got {self.count!r}")
        n = len(x) if self.count == -1 else min(self.count, len(x))
        if n == 0:
            return x, y
        idx = draw(torch.randperm, len(x), generator=generator, device=x.device)[:n]
        return torch.cat([x, 1.0 - x[idx]]), torch.cat([y, y[idx]])
