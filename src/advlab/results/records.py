"""The records an evaluation produces: table rows, the environment, the transfer matrix."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from advlab._version import __version__

CONTRACT_KEYS = (
    "attack", "dataset", "model", "norm", "eps", "n", "acc1_adv", "acc5_adv", "acc1_clean", "acc5_clean",
    "success_rate", "median_l0", "median_l1", "median_l2", "median_linf", "mean_queries", "seconds", "seed",
)


@dataclass
class Row:
    """One row of the robustness table (the JSON keys are a public contract)."""

    attack: str
    dataset: str
    model: str
    norm: str
    eps: float | None
    n: int
    acc1_adv: float
    acc5_adv: float
    acc1_clean: float
    acc5_clean: float
    success_rate: float
    median_l0: float | None
    median_l1: float | None
    median_l2: float | None
    median_linf: float | None
    mean_queries: float | None
    seconds: float
    seed: int
    warnings: list[str] = field(default_factory=list)
    strongest: str | None = None  # worst-case rows: the attack with the lowest Acc@1 at this ε

    def as_dict(self) -> dict[str, Any]:
        """The contract keys only."""
        d = asdict(self)
        return {k: d[k] for k in CONTRACT_KEYS}


def environment() -> dict[str, Any]:
    """Versions and machine, saved with every result."""
    return {
        "advlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "threads": torch.get_num_threads(),
    }


@dataclass
class TransferRecord:
    """Transfer success of adversarial examples from each source (rows) to each target (columns).

    ``success[i][j]`` is the fraction of the inputs that target j classifies correctly whose
    adversarial version crafted on source i it misclassifies; ``None`` where source i cannot
    craft (a non-differentiable model is a target only). The diagonal is the white-box success.
    ``adv_acc[i][j]`` is target j's Acc@1 on those adversarial examples, ``clean_acc[j]`` its
    clean Acc@1.
    """

    sources: list[str]
    targets: list[str]
    success: list[list[float | None]]
    adv_acc: list[list[float | None]]
    clean_acc: list[float]
    attack: str
    norm: str
    eps: float
    n: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The matrix and its settings as JSON."""
        return json.dumps(asdict(self), indent=2)


__all__ = ["CONTRACT_KEYS", "Row", "TransferRecord", "environment"]
