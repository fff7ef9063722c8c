"""Transfer attacks measured: the substitute attack's outcome on its target, and the transferability matrix.

* :func:`substitute_attack` — attack a substitute white-box (FGSM, PGD, … by registry name) and
  apply the examples to the target (the substitute itself is trained by
  :func:`advlab.attacks.substitute.train_substitute`).
* :func:`transfer_matrix` — adversarial examples crafted on each differentiable source model,
  evaluated on every target model (torch models or any :class:`~advlab.models.blackbox.BlackBox`, e.g.
  a scikit-learn model seen only through its predict function).

Every number comes from :mod:`advlab.metrics`; the tables and figures from :mod:`advlab.report.transfer`.
A torch model in training mode is crafted on and measured through its eval-mode copy
(:func:`~advlab.attacks.inference_view`), so no model is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advlab.attacks import get_attack, inference_view
from advlab.metrics import label_accuracy, predict_logits, transfer_success
from advlab.models.blackbox import BlackBox
from advlab.report.transfer import transfer_html, transfer_markdown, transfer_png
from advlab.results.records import TransferRecord
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]


class TransferMatrix(TransferRecord):
    """A :class:`~advlab.results.records.TransferRecord` that renders itself (through :mod:`advlab.report`)."""

    def to_markdown(self) -> str:
        """A Markdown table: rows are sources, columns targets; cells are transfer success."""
        return transfer_markdown(self)

    def heatmap_png(self) -> bytes:
        """A heat-map of the matrix as PNG bytes."""
        return transfer_png(self)

    def to_html(self, png: bytes | None = None) -> str:
        """A small self-contained HTML page: the heat-map (embedded) and the table."""
        return transfer_html(self, png)


@dataclass
class TransferOutcome:
    """The substitute attack's result on the target.

    Attributes:
        x_adv: Examples crafted on the substitute.
        target_acc_clean: Target Acc@1 on the clean inputs.
        target_acc_adv: Target Acc@1 on ``x_adv``.
        success: Fraction of inputs the target classifies correctly whose adversarial version
            it misclassifies (transfer success).
        agreement: Substitute vs target labels on the clean inputs.
    """

    x_adv: torch.Tensor
    target_acc_clean: float
    target_acc_adv: float
    success: float
    agreement: float


def predict_labels(model: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels of a torch model or a BlackBox, in batches, without gradients."""
    if isinstance(model, BlackBox):
        return torch.cat([model.labels(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    with torch.no_grad():
        return predict_logits(inference_view(model), x, batch_size).argmax(1)


def craft(source: Model, x: torch.Tensor, y: torch.Tensor, attack: str, threat: ThreatModel, seed: int,
          batch_size: int, params: dict[str, Any]) -> torch.Tensor:
    """Adversarial examples crafted on ``source`` by a registered attack, batch by batch, from one seeded generator."""
    info = get_attack(attack)
    gen = torch.Generator().manual_seed(seed)
    out = [info(source, x[i : i + batch_size], y[i : i + batch_size], threat,
                generator=gen, **params).x_adv for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def substitute_attack(
    substitute: Model, target: Any, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
    attack: str = "pgd", seed: int = 0, batch_size: int = 500, **params: Any,
) -> TransferOutcome:
    """Craft adversarial examples on ``substitute`` (white-box) and measure them on ``target``."""
    substitute, target = inference_view(substitute), inference_view(target)
    x_adv = craft(substitute, x, y, attack, threat, seed, batch_size, params)
    clean = predict_labels(target, x)
    adv = predict_labels(target, x_adv)
    sub = predict_labels(substitute, x)
    return TransferOutcome(x_adv, label_accuracy(clean, y), label_accuracy(adv, y),
                           transfer_success(clean == y, adv == y), label_accuracy(sub, clean))


def transfer_matrix(
    models: dict[str, Any], x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, attack: str = "pgd",
    seed: int = 0, batch_size: int = 500, sources: Sequence[str] | None = None, **params: Any,
) -> TransferMatrix:
    """Craft on every differentiable model, evaluate on every model.

    Args:
        models: Name → torch model (source and target) or :class:`~advlab.models.blackbox.BlackBox`
            (target only).
        x: Clean inputs.
        y: True labels.
        threat: Threat model of the crafting attack.
        attack: Registry name of a white-box attack (``"pgd"``, ``"fgsm"``, …).
        seed: Seed of the attack's generator (the same for every source).
        batch_size: Examples per attack call.
        sources: Names that craft (default: every model that is not a BlackBox).
        **params: Extra attack parameters.

    Returns:
        The :class:`TransferMatrix`.
    """
    if not models:
        raise ValueError("models: expected at least one model")
    models = {name: inference_view(m) for name, m in models.items()}
    names = list(models)
    if sources is None:
        sources = [n for n in names if not isinstance(models[n], BlackBox)]
    for s in sources:
        if s not in models:
            raise ValueError(f"sources: {s!r} is not among the models")
    clean = {t: predict_labels(models[t], x) for t in names}
    success: list[list[float | None]] = []
    adv_acc: list[list[float | None]] = []
    for s in names:
        if s not in sources or isinstance(models[s], BlackBox):
            success.append([None] * len(names))
            adv_acc.append([None] * len(names))
            continue
        x_adv = craft(models[s], x, y, attack, threat, seed, batch_size, params)
        adv = {t: predict_labels(models[t], x_adv) for t in names}
        success.append([transfer_success(clean[t] == y, adv[t] == y) for t in names])
        adv_acc.append([label_accuracy(adv[t], y) for t in names])
    return TransferMatrix(
        names, names, success, adv_acc, [label_accuracy(clean[t], y) for t in names],
        attack, threat.norm, threat.eps, len(x), seed, dict(params),
    )


__all__ = ["TransferMatrix", "TransferOutcome", "craft", "predict_labels", "substitute_attack",
           "transfer_matrix"]
