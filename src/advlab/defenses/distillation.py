"""Defensive distillation (Papernot et al. 2016, https://arxiv.org/abs/1511.04508).

A teacher trained with softmax at temperature T labels the training set with soft labels at T;
the student is trained on them at T and deployed at T = 1 (its raw logits).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import check_nonneg
from advlab._device import module_device
from advlab.train import TrainConfig, TrainingDefense, TrainResult, fit


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
        soft = self.soft_labels[index.to(self.soft_labels.device)].to(xb.device)
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
    device: str | torch.device | None = None,
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
        device: Where both networks train (see :func:`~advlab.train.fit`; ``None``: where each is).

    Returns:
        ``(student result, teacher result or None)``.
    """
    check_nonneg("temperature", temperature)
    if temperature == 0:
        raise ValueError("temperature: expected a number > 0, got 0")
    teacher_result = None
    if train_teacher:
        teacher_result = fit(teacher, train_data, test_data, config,
                             defense=TemperatureTeacher(temperature=temperature), progress=progress, device=device)
    x, dev = train_data[0], module_device(teacher)
    teacher.eval()
    with torch.no_grad():
        soft = torch.cat([F.softmax(teacher(x[i : i + 1000].to(dev)) / temperature, dim=1).to(x.device)
                          for i in range(0, len(x), 1000)])
    student_defense = DistillationStudent(temperature=temperature, soft_labels=soft)
    result = fit(student, train_data, test_data, replace(config, seed=config.seed + 1),
                 defense=student_defense, progress=progress, device=device)
    return result, teacher_result
