"""The records an evaluation produces: table rows, the environment, fingerprints, the transfer matrix."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advlab._device import OnDevice
from advlab._version import __version__
from advlab.data.source import Images, stream_batches
from advlab.models.blackbox import BlackBox
from advlab.models.checkpoint import tensor_digest

DIGEST_ROWS = 1024  # rows of x hashed at a time: the data is never copied whole to be fingerprinted

CONTRACT_KEYS = (
    "attack", "dataset", "model", "norm", "eps", "n", "acc1_adv", "acc5_adv", "acc1_clean", "acc5_clean",
    "success_rate", "median_l0", "median_l1", "median_l2", "median_linf", "mean_queries", "seconds", "seed",
)
# ... and with a detector (``evaluate(detector=...)``, the reject option of docs/evaluation.md), after them:
DETECT_KEYS = ("detect_auc", "detect_tpr", "clean_rejected", "defended_acc")


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
    broken_by: dict[str, int] = field(default_factory=dict)  # worst-case rows: examples each attack broke first
    # with a detector: ROC-AUC and TPR at the calibrated threshold (adversarial examples that fool the
    # classifier vs the clean test images), the clean test images rejected, and the defended accuracy
    detect_auc: float | None = None
    detect_tpr: float | None = None
    clean_rejected: float | None = None
    defended_acc: float | None = None

    @property
    def has_detector(self) -> bool:
        """Whether the row carries the reject option's columns (an evaluation with a detector)."""
        return self.defended_acc is not None

    def as_dict(self) -> dict[str, Any]:
        """The contract keys only (and :data:`DETECT_KEYS` after them in an evaluation with a detector)."""
        d = asdict(self)
        return {k: d[k] for k in CONTRACT_KEYS + (DETECT_KEYS if self.has_detector else ())}


def environment() -> dict[str, Any]:
    """Versions and machine, saved with every result."""
    return {
        "advlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "threads": torch.get_num_threads(),
    }


def model_fingerprint(model: nn.Module | BlackBox) -> dict[str, Any]:
    """What identifies a model's content, not its name: the weights for a network, the name and meta of a black box.

    A network is its class (module and qualified name) and a SHA-256 of its ``state_dict``
    tensors (:func:`~advlab.models.checkpoint.tensor_digest`). A :class:`BlackBox` has no weights to
    read: its name and a SHA-256 of its ``meta`` stand for it.

    Args:
        model: The model as evaluated (after loading, wrapping behind a defense).

    Returns:
        ``{"class", "weights"}`` for a network, ``{"class": "BlackBox", "name", "meta"}`` for a black box.
    """
    if isinstance(model, BlackBox):
        meta = json.dumps(model.meta, sort_keys=True, default=repr)
        return {"class": "BlackBox", "name": str(model.name), "meta": hashlib.sha256(meta.encode()).hexdigest()}
    if isinstance(model, OnDevice):  # the same weights on another device are the same model
        model = model.model
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "weights": tensor_digest(model)}


def data_fingerprint(x: torch.Tensor | Images, y: torch.Tensor, data_dir: str | os.PathLike[str] | None
                     ) -> dict[str, Any]:
    """A SHA-256 over the evaluated images and labels (dtype, shape, bytes), hashed in chunks, and the data directory.

    A lazy image set (:class:`~advlab.data.source.Images`) is hashed as its batches stream past,
    to the digest its materialised tensor would have.

    Args:
        x: The evaluated images (a tensor or a lazy image set).
        y: Their labels.
        data_dir: The data directory as given (None: the offline copy), recorded beside the digest.

    Returns:
        ``{"digest": hex SHA-256, "data_dir": str or None}``.
    """
    h = hashlib.sha256()
    for t in (x, y):
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        for chunk in stream_batches(t, DIGEST_ROWS):
            h.update(chunk.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"digest": h.hexdigest(), "data_dir": None if data_dir is None else os.fspath(data_dir)}


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


CHANCE_MIN_N = 20  # fewer clean examples say nothing about chance
CHANCE_MARGIN = 0.02  # clean Acc@1 within this of a constant answer's is "no better than chance"


def chance_note(clean: dict[str, torch.Tensor]) -> str | None:
    """A warning where the clean Acc@1 is no better than always answering the most frequent label, else None.

    Such a model does not read the images at all (pixels in another range or layout than it expects,
    normalisation applied twice or never, labels in another order), and every attacked number beside it
    is meaningless; ``clean`` is :meth:`~advlab.results.store.Store.clean`'s dict.
    """
    labels, n = clean["label"], len(clean["label"])
    if n < CHANCE_MIN_N:
        return None
    acc = float(clean["top1"].float().mean())
    majority = float(torch.bincount(labels).max()) / n
    if acc > majority + CHANCE_MARGIN:
        return None
    answers = torch.bincount(clean["pred"].clamp_min(0))
    return (f"clean Acc@1 {acc:.3f} is no better than always answering the most frequent label ({majority:.3f} of "
            f"these {n} examples), and the model answers {int(answers.argmax())} on {float(answers.max()) / n:.0%} "
            "of them: it does not read these images. Does it expect another input range or layout? advlab feeds the "
            "images as the dataset gives them (pixels in [0, 1] for its datasets and folders), and normalisation "
            "belongs inside the model")


def top5_note(classes: int | None) -> str | None:
    """A note where the model has 5 classes or fewer, so that Acc@5 counts every class; else None."""
    if classes is None or classes > 5:
        return None
    return (f"the model has {classes} classes, so Acc@5 counts every class and is 1 by definition; read Acc@1 "
            "(Acc@5 says something from 6 classes on)")


def table_notes(clean: dict[str, torch.Tensor], classes: int | None) -> list[str]:
    """The notes printed under a robustness table: :func:`chance_note` and :func:`top5_note`, where they apply."""
    return [n for n in (chance_note(clean), top5_note(classes)) if n]


__all__ = ["CHANCE_MARGIN", "CONTRACT_KEYS", "DETECT_KEYS", "DIGEST_ROWS", "Row", "TransferRecord", "chance_note",
           "data_fingerprint", "environment", "model_fingerprint", "table_notes", "top5_note"]
