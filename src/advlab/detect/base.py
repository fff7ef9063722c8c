"""The interface every detector of adversarial examples keeps, its registry and its files (issue 16).

A detector is fitted to one classifier, scores inputs (higher = more likely adversarial) and, once
calibrated, rejects the inputs that score above a threshold::

    det = make_detector("kdbu").fit(model, x_clean, x_adv, x_noisy)
    det.calibrate(x_heldout_clean, fpr=0.05)   # the threshold: 5% of clean inputs rejected
    rejected = det.reject(x)                    # bool per input
    save_detector(det, "kdbu.safetensors"); det = load_detector("kdbu.safetensors", model)

``Detector.forward(x)`` is the score as a differentiable function of ``x`` (autograd), which is what
the adaptive attacks of Carlini & Wagner 2017 ("Adversarial examples are not easily detected",
https://arxiv.org/abs/1705.07263) need; ``score`` is the same without gradients, in batches. A
detector whose score draws randomness (MC dropout) declares ``randomized = True`` and draws from
its own seeded generator, so an adaptive attacker averages over draws (EOT).

Files are safetensors (no pickle): the fitted tensors, with the detector's name, its constructor
arguments (JSON) and the digest of the classifier it was fitted to in the header; loading onto a
different classifier is a one-line error.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from advlab._checks import suggest
from advlab._device import module_device
from advlab._io import atomic_path
from advlab.metrics import threshold_at_fpr
from advlab.models.checkpoint import tensor_digest


class Detector(nn.Module, ABC):
    """A detector fitted to one classifier. Subclasses set ``name`` and implement ``fit`` and ``forward``.

    Fitted state lives in buffers and submodules (so ``state_dict`` is the whole of it); constructor
    arguments are JSON values returned by ``config``. The classifier is held, never owned: it is not
    a submodule, never saved with the detector and never changed by it.
    """

    name: ClassVar[str] = ""
    randomized: ClassVar[bool] = False
    threshold: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._classifier: list[nn.Module] = []
        self.register_buffer("threshold", torch.tensor(float("nan"), dtype=torch.float64))

    @property
    def model(self) -> nn.Module:
        """The classifier this detector was fitted to (a one-line error before ``fit``)."""
        if not self._classifier:
            raise RuntimeError(f"{self.name}: not fitted; call fit(model, x_clean, x_adv) or load_detector first")
        return self._classifier[0]

    def bind(self, model: nn.Module) -> None:
        """Attach the classifier (``fit`` and ``load_detector`` call this)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}: detectors need a torch nn.Module classifier (white box), got "
                            f"{type(model).__name__}")
        self._classifier[:] = [model]

    @abstractmethod
    def fit(self, model: nn.Module, x_clean: torch.Tensor, x_adv: torch.Tensor,
            x_noisy: torch.Tensor | None = None, *, generator: torch.Generator | None = None) -> Detector:
        """Fit to ``model`` on clean inputs and adversarial (or noisy) ones; return ``self``."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The score of each input (N), higher = more likely adversarial; differentiable w.r.t. ``x``."""

    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments as JSON values (``cls(**config())`` rebuilds it)."""
        return {}

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Create holders of the fitted state's shapes before loading (default: top-level buffers).

        A detector with submodules built in ``fit`` (a detector network) overrides this to build them.
        """
        for key, shape in shapes.items():
            if "." not in key:
                current = getattr(self, key, None)
                dtype = current.dtype if isinstance(current, torch.Tensor) else torch.float32
                self.register_buffer(key, torch.empty(shape, dtype=dtype))

    def score(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """``forward`` over a whole set in batches, without gradients, on the classifier's device (N, on x's)."""
        dev = module_device(self.model)
        if len(x) == 0:
            return torch.zeros(0, dtype=self.threshold.dtype, device=x.device)
        with torch.no_grad():
            return torch.cat([self(x[i : i + batch_size].to(dev)).detach().to(x.device)
                              for i in range(0, len(x), batch_size)])

    def calibrate(self, x_clean: torch.Tensor, fpr: float = 0.05) -> float:
        """Set the threshold so that at most ``fpr`` of ``x_clean`` (held-out clean inputs) are rejected."""
        t = threshold_at_fpr(self.score(x_clean), fpr)
        self.threshold.fill_(t)
        return t

    def reject(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """True for each input scoring above the calibrated threshold."""
        if torch.isnan(self.threshold):
            raise RuntimeError(f"{self.name}: no threshold; call calibrate(x_heldout_clean, fpr=0.05) first")
        return self.score(x, batch_size) > self.threshold.to(x.device)


D = TypeVar("D", bound=type[Detector])
DETECTORS: dict[str, type[Detector]] = {}


def register_detector(cls: D) -> D:
    """Class decorator: make ``cls`` available by its ``name`` to ``make_detector`` and ``load_detector``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a registered detector needs a name")
    DETECTORS[cls.name] = cls
    return cls


def _lookup(name: str) -> type[Detector]:
    if name not in DETECTORS:
        raise ValueError(f"detector: unknown detector {name!r}{suggest(name, DETECTORS)}; known: "
                         f"{', '.join(sorted(DETECTORS))}")
    return DETECTORS[name]


def make_detector(spec: str, **kwargs: Any) -> Detector:
    """A new, unfitted detector from ``"name"`` or ``"name:key=value:key=value"`` (values read as JSON)."""
    name, *options = spec.split(":")
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise ValueError(f"detector: {spec!r}: options are key=value, got {opt!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    cls = _lookup(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"detector: {spec!r}: {e}") from None


def save_detector(detector: Detector, path: str | os.PathLike[str]) -> None:
    """Write a fitted detector to a safetensors file (tensors + name, config, classifier digest)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    meta = {"advlab_detector": detector.name, "config": json.dumps(detector.config()),
            "model_digest": tensor_digest(detector.model)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_detector(path: str | os.PathLike[str], model: nn.Module) -> Detector:
    """A detector saved by ``save_detector``, bound to ``model`` (which must be the one it was fitted to)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"detector file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a corrupt or non-safetensors file
        raise ValueError(f"{p}: not a detector file ({type(e).__name__}: {e})") from None
    if "advlab_detector" not in meta:
        raise ValueError(f"{p}: not an advlab detector file (no 'advlab_detector' in its header)")
    if meta.get("model_digest") != tensor_digest(model):
        raise ValueError(f"{p}: this {meta['advlab_detector']} detector was fitted to a different classifier "
                         f"(weights digest {meta.get('model_digest')}, got {tensor_digest(model)})")
    det = _lookup(meta["advlab_detector"])(**json.loads(meta.get("config", "{}")))
    det.bind(model)
    det.prepare({k: tuple(v.shape) for k, v in tensors.items()})
    det.load_state_dict(tensors, strict=True)
    return det.to(module_device(model))


def defended_outcome(correct: torch.Tensor, rejected: torch.Tensor, adversarial: bool) -> torch.Tensor:
    """Whether each input is handled under the reject option (issue 16's counting).

    An adversarial input is handled if it is rejected or still correctly classified; a clean input
    only if it is accepted and correct. The mean is the *defended accuracy*.
    """
    return (rejected | correct) if adversarial else (~rejected & correct)


ScoreFn = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["DETECTORS", "Detector", "ScoreFn", "defended_outcome", "load_detector", "make_detector",
           "register_detector", "save_detector"]
