"""What an evaluation is asked to do (:class:`Settings`) and what it will do once validated (:class:`Plan`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._device import module_device
from advlab.data.torch_dataset import Data
from advlab.detect.base import Detector
from advlab.evaluation.defaults import N_EXAMPLES
from advlab.evaluation.detection import DetectorPlan
from advlab.models.blackbox import BlackBox
from advlab.results.plan import Job


@dataclass
class Settings:
    """The arguments of :func:`evaluate` (documented there), with its defaults."""

    model: nn.Module | BlackBox | str
    data: Data = None
    attacks: str | Sequence[Any] | None = None
    eps: float | Sequence[float] | None = None
    norm: str = "linf"
    n: int | None = None
    batch_size: int = 500
    seed: int = 0
    out: str | Path | None = None
    params: dict[str, dict[str, Any]] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    progress: bool = True
    force: bool = False
    model_name: str | None = None
    data_dir: str | None = None
    command: str | None = None
    examples_per_job: int = N_EXAMPLES
    checks: bool = True
    check_n: int = 200
    ensemble: bool | None = None
    surrogate: str | None = None
    targeted: str | None = None
    certify: str | Sequence[str] | None = None
    device: str | torch.device | None = None
    detector: str | Detector | None = None


@dataclass
class Plan:
    """A validated evaluation before it runs: model, data, configuration, jobs, why the checks are skipped."""

    net: nn.Module | BlackBox
    x: torch.Tensor
    y: torch.Tensor
    params: dict[str, dict[str, Any]]
    config: dict[str, Any]
    jobs: list[Job]
    checks_skipped: str | None
    target: torch.Tensor | None = None
    detector: DetectorPlan | None = None  # the reject option (advlab.evaluation.detection)

    @property
    def device(self) -> torch.device:
        """Where the model computes (a model off the CPU is an :class:`~advlab._device.OnDevice`)."""
        return module_device(self.net)


__all__ = ["Plan", "Settings"]
