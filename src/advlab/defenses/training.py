"""Training-time defenses: each is a step function (and optional hooks) for the one loop in train.py.

A :class:`TrainingDefense` changes what one batch contributes to the loss (adversarial examples,
a KL term, a gradient penalty, soft labels), optionally the training set (negative images), and
optionally the weights after every optimiser step (Parseval). The loop, the optimiser, the
schedule and the determinism are train.py's, shared by every defense.

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
* ``parseval`` — Cisse et al. 2017 (https://arxiv.org/abs/1704.08847): after every step,
  W ← (1+β)W − βWWᵀW on every linear and (reshaped) convolution weight, keeping it near a
  Parseval tight frame (largest singular value near 1).
* ``gradnorm`` — an input-gradient-norm penalty: CE + λ·‖∇ₓCE‖₂² (double back-propagation,
  Drucker & LeCun 1992; Ross & Doshi-Velez 2018, https://arxiv.org/abs/1711.09404).
* ``distill`` — Papernot et al. 2016 (https://arxiv.org/abs/1511.04508): a teacher trained with
  softmax at temperature T labels the training set with soft labels at T; the student is
  trained on them at T and deployed at T = 1 (its raw logits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import check_nonneg, check_positive_int, suggest
from advlab.attacks import get_attack
from advlab.attacks.base import loss_grad
from advlab.attacks.gradient import steepest_step
from advlab.threat import Norm, ThreatModel
from advlab.train import TrainConfig, TrainingDefense, TrainResult, fit


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
    of training (a ramp keeps small networks from collapsing early at large ε). For the gradient
    attacks the step size follows ε: ``rel_step``·ε per step (default 2.5/steps).
    """

    name: str = "adversarial"
    attack: str = "fgsm"
    norm: Norm = "linf"
    eps: float = 0.3
    clean_weight: float = 0.5
    eps_warmup: float = 0.0
    steps: int = 10
    rel_step: float | None = None
    attack_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
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
        """The step of the iterative attacks at budget ε: ``rel_step``·ε (default 2.5·ε/steps)."""
        return (self.rel_step if self.rel_step is not None else 2.5 / self.steps) * eps

    def craft(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float
    ) -> torch.Tensor:
        """Adversarial examples for this batch (model in eval mode while crafting)."""
        eps = self.eps_at(progress)
        if eps == 0:
            return xb
        params = dict(self.attack_params)
        if self.attack in ("pgd", "bim"):
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
    """Fast adversarial training (Wong et al. 2020): FGSM from a uniform random start, step α·ε.

    That is the registered PGD with one step of α·ε from its random start, so it crafts through it.
    """

    name: str = "fast"
    attack: str = "pgd"
    steps: int = 1
    clean_weight: float = 0.0
    alpha: float = 1.25

    def __post_init__(self) -> None:
        self.rel_step = self.alpha
        super().__post_init__()


@dataclass
class Trades(AdversarialTraining):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(softmax f(x) ‖ softmax f(x′)).

    x′ starts at x + 0.001·N(0, 1) and takes ``steps`` signed-gradient steps of ``rel_step``·ε
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

            noise = torch.randn(xb.shape, generator=generator, dtype=xb.dtype)
            x_adv = threat.project(xb, xb + 0.001 * noise)
            for _ in range(self.steps):
                _, grad, _ = loss_grad(model, x_adv, p_clean, kl)
                x_adv = threat.project(xb, x_adv + steepest_step(grad, self.norm, alpha))
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
        idx = torch.randperm(len(x), generator=generator)[:n]
        return torch.cat([x, 1.0 - x[idx]]), torch.cat([y, y[idx]])


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
    does). ``beta`` is the retraction strength (the paper uses 0.0003 with SGD; the larger default
    here matches Adam's larger steps).
    """

    name: str = "parseval"
    beta: float = 0.003
    iterations: int = 1

    def after_step(self, model: nn.Module) -> None:  # noqa: D102
        with torch.no_grad():
            for m in parseval_layers(model):
                w = m.weight.flatten(1)
                for _ in range(self.iterations):
                    if w.shape[0] <= w.shape[1]:
                        w = (1 + self.beta) * w - self.beta * (w @ w.T) @ w
                    else:
                        w = (1 + self.beta) * w - self.beta * w @ (w.T @ w)
                m.weight.copy_(w.view_as(m.weight))


@dataclass
class GradNormPenalty(TrainingDefense):
    """Input-gradient penalty: CE + λ·mean ‖∇ₓ CE‖₂² (double back-propagation)."""

    name: str = "gradnorm"
    lam: float = 1.0

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = xb.detach().requires_grad_(True)
        logits = model(x)
        ce = F.cross_entropy(logits, yb, reduction="none")
        (g,) = torch.autograd.grad(ce.sum(), x, create_graph=True)
        penalty = g.flatten(1).pow(2).sum(1).mean()
        return ce.mean() + self.lam * penalty, logits


@dataclass
class DistillationStudent(TrainingDefense):
    """The student of defensive distillation: cross-entropy against soft labels, softmax at T.

    ``soft_labels`` holds the teacher's softmax(logits / T) for each training example, row i for
    training example i; :func:`distill` builds it. Deployed at T = 1: the student's raw logits.
    """

    name: str = "distill"
    temperature: float = 100.0
    soft_labels: torch.Tensor | None = field(default=None, repr=False)

    def prepare_data(  # noqa: D102
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.soft_labels is None or len(self.soft_labels) != len(x):
            raise ValueError("distill: soft_labels must hold one row per training example; use defenses.distill()")
        return x, y

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.soft_labels is not None  # prepare_data refused otherwise
        soft = self.soft_labels[index]
        logits = model(xb)
        loss = -(soft * F.log_softmax(logits / self.temperature, dim=1)).sum(1).mean()
        return loss, logits

    def options(self) -> dict[str, Any]:  # noqa: D102
        return {"temperature": self.temperature}


@dataclass
class TemperatureTeacher(TrainingDefense):
    """The teacher of defensive distillation: cross-entropy with softmax at temperature T."""

    name: str = "distill-teacher"
    temperature: float = 100.0

    def step(  # noqa: D102
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(xb)
        return F.cross_entropy(logits / self.temperature, yb), logits


DEFENSES: dict[str, Callable[..., TrainingDefense]] = {
    "none": TrainingDefense,
    "adversarial": AdversarialTraining,
    "pgd": lambda **kw: AdversarialTraining(**{"name": "pgd", "attack": "pgd", "clean_weight": 0.0, **kw}),
    "fast": FastAdversarialTraining,
    "trades": Trades,
    "negative": NegativeImages,
    "parseval": Parseval,
    "gradnorm": GradNormPenalty,
    "distill": DistillationStudent,
}


def list_training_defenses() -> list[str]:
    """Names accepted by :func:`make_training_defense` and ``advlab train --defense``."""
    return sorted(DEFENSES)


def make_training_defense(name: str, **options: Any) -> TrainingDefense:
    """Build a training defense by name with keyword options (unknown options are refused)."""
    if name not in DEFENSES:
        raise ValueError(
            f"defense: expected one of {', '.join(repr(d) for d in sorted(DEFENSES))}, got {name!r}"
            f"{suggest(name, DEFENSES)}"
        )
    try:
        return DEFENSES[name](**options)
    except TypeError as e:
        allowed = _fields(name)
        bad = sorted(set(options) - set(allowed))
        if bad:
            raise ValueError(
                f"defense {name!r}: unknown option(s) {', '.join(bad)}; expected some of {', '.join(allowed)}"
            ) from None
        raise ValueError(f"defense {name!r}: {e}") from None


def _fields(name: str) -> list[str]:
    probe = DEFENSES[name]()
    return sorted(k for k in probe.__dict__ if not k.startswith("_") and k != "name")



def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: tuple[torch.Tensor, torch.Tensor],
    test_data: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    *,
    temperature: float = 100.0,
    train_teacher: bool = True,
    progress: bool = False,
) -> tuple[TrainResult, TrainResult | None]:
    """Defensive distillation (Papernot et al. 2016): teacher at T, soft labels at T, student at T.

    Args:
        teacher: The teacher network, trained here at temperature T unless ``train_teacher`` is
            False (then it is used as given).
        student: The student network (trained in place); deployed at T = 1, i.e. its raw logits.
        train_data: ``(x, y)`` training tensors.
        test_data: ``(x, y)`` for the test accuracy of both networks, or ``None``.
        config: The training configuration of both networks (the student's seed is seed + 1).
        temperature: T.
        train_teacher: Whether to train the teacher first.
        progress: Show progress bars.

    Returns:
        ``(student result, teacher result or None)``.
    """
    check_nonneg("temperature", temperature)
    if temperature == 0:
        raise ValueError("temperature: expected a number > 0, got 0")
    teacher_result = None
    if train_teacher:
        teacher_result = fit(teacher, train_data, test_data, config,
                             defense=TemperatureTeacher(temperature=temperature), progress=progress)
    x = train_data[0]
    teacher.eval()
    with torch.no_grad():
        soft = torch.cat([F.softmax(teacher(x[i : i + 1000]) / temperature, dim=1) for i in range(0, len(x), 1000)])
    student_defense = DistillationStudent(temperature=temperature, soft_labels=soft)
    result = fit(student, train_data, test_data, replace(config, seed=config.seed + 1),
                 defense=student_defense, progress=progress)
    return result, teacher_result
