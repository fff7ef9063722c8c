"""Kernel density + Bayesian uncertainty (Feinman et al. 2017), registered as ``"kdbu"``.

KD: a Gaussian kernel density (bandwidth σ, the paper's MNIST σ = 1.20) on the classifier's
last-hidden-layer features (the input of its last ``nn.Linear``) of clean *training* images,
per class, evaluated at the class the classifier predicts — the log-density, as scikit-learn's
``KernelDensity.score_samples`` that the authors used gives it, computed by log-sum-exp so it is
differentiable in x. At most ``cap`` reference images per class are kept (a seeded subsample of
the clean images passed to ``fit``, stored as buffers: 1 000 per class by default).

BU: the MC-dropout uncertainty (mean over T draws of ‖p‖² minus ‖mean p‖², on softmax outputs,
T = ``passes``, the paper's 50). A classifier with ``nn.Dropout`` is sampled through forward
hooks (never in train mode); one without gets a dropout-enabled copy (``advlab.detect.dropout``:
dropout p before every fully connected layer but the first, fine-tuned from the classifier's
weights by ``advlab.train.fit`` for ``epochs`` epochs on the clean images passed to ``fit``, with
the classifier's own predictions as labels, since a detector's ``fit`` gets no labels), which is
a submodule, saved with the detector. Draws come from the detector's generator seeded by
``seed``; ``score`` reseeds it first, so a score is reproducible, while repeated ``forward`` calls
draw afresh (``randomized = True``: an adaptive attacker averages over draws).

The two features, z-scored, are combined by a class-balanced logistic regression (its L2 penalty
``l2``, or, by default, cross-validated like the paper's ``LogisticRegressionCV``) fitted on
clean + noisy images (negatives) against adversarial ones (positives), as in the paper; the score
is its logit. ``use="kd"`` or ``"bu"`` keeps one feature (the paper's single-feature rows).
Clean images passed to ``fit`` are scored leave-one-out against the reference set; the noisy and
adversarial ones should be made from *other* images than ``x_clean`` (else their clean sources
sit in the reference set).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advlab._checks import check_choice, check_nonneg, check_positive_int
from advlab._grad_mode import with_autograd
from advlab.detect.base import Detector, register_detector
from advlab.detect.dropout import dropout_layers, mc_softmax, train_dropout_variant, uncertainty, with_dropout
from advlab.detect.logistic import LogisticRegression, fit_regression
from advlab.models.features import last_linear

PAPER = ("Feinman, Shinn, Gardner, Curtis 2017, Detecting Adversarial Samples from Artifacts, "
         "https://arxiv.org/abs/1703.00410")


def check_input(name: str, x: object, in_shape: torch.Tensor) -> torch.Tensor:
    """A one-line error unless ``x`` is a float tensor N×(the shape the detector was fitted on)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point torch.Tensor, got {type(x).__name__}"
                        f"{'' if not isinstance(x, torch.Tensor) else ' of dtype ' + str(x.dtype)}")
    want = tuple(int(s) for s in in_shape)
    if in_shape.numel() and tuple(x.shape[1:]) != want:
        raise ValueError(f"{name}: expected inputs of shape N×{'×'.join(map(str, want))} (as fitted), "
                         f"got {tuple(x.shape)}")
    return x


def check_fit_sets(name: str, model: object, sets: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """Check the classifier and the fit sets (same per-example shape, non-empty); return that shape."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: detectors need a torch nn.Module classifier (white box), got {type(model).__name__}")
    shape: tuple[int, ...] | None = None
    for arg, x in sets.items():
        if x is None:
            continue
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or not len(x):
            raise ValueError(f"{name}: {arg} must be a non-empty float tensor N×C×H×W, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if shape is not None and tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name}: {arg} has examples of shape {tuple(x.shape[1:])}, x_clean {shape}")
        shape = tuple(x.shape[1:])
    return torch.tensor(shape, dtype=torch.long)


def batched(fn: Any, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``fn`` over ``x`` in batches, without gradients (concatenated along dim 0)."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    captured: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
    try:
        logits = model(x)
    finally:
        hook.remove()
    return captured[0].flatten(1), logits


@register_detector
class KernelDensityUncertainty(Detector):
    """KD + BU (Feinman et al. 2017); see the module docstring."""

    name = "kdbu"
    randomized = True
    ref: torch.Tensor
    ref_labels: torch.Tensor
    counts: torch.Tensor
    in_shape: torch.Tensor

    def __init__(self, bandwidth: float = 1.2, cap: int = 1000, passes: int = 50, p: float = 0.5, epochs: int = 5,
                 use: str = "kd+bu", seed: int = 0, l2: float | None = None) -> None:
        super().__init__()
        if check_nonneg("bandwidth", bandwidth) == 0:
            raise ValueError("bandwidth: expected a number > 0, got 0")
        if not 0 < p < 1:
            raise ValueError(f"p: expected a dropout probability in (0, 1), got {p}")
        self.bandwidth, self.p, self.l2 = float(bandwidth), float(p), None if l2 is None else check_nonneg("l2", l2)
        self.cap, self.passes = check_positive_int("cap", cap), check_positive_int("passes", passes)
        self.epochs, self.seed = check_positive_int("epochs", epochs), int(seed)
        self.use = check_choice("use", use, ("kd+bu", "kd", "bu"))
        self.register_buffer("ref", torch.zeros(0, 0))
        self.register_buffer("ref_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(0, dtype=torch.long))
        self.register_buffer("in_shape", torch.zeros(0, dtype=torch.long))
        self.reg = LogisticRegression(0)
        self.dropnet: nn.Module | None = None
        self.train_seconds = 0.0
        self._gen = torch.Generator().manual_seed(self.seed)

    def config(self) -> dict[str, Any]:  # noqa: D102
        return {"bandwidth": self.bandwidth, "cap": self.cap, "passes": self.passes, "p": self.p,
                "epochs": self.epochs, "use": self.use, "seed": self.seed, "l2": self.l2}

    # -- the two features --------------------------------------------------------------------------
    def kd(self, x: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Log kernel density of ``x``'s features among the reference features of its predicted class (N).

        ``exclude``: per input, a reference row to leave out (−1: none) — the leave-one-out of ``fit``.
        """
        feat, logits = _features_and_logits(self.model, x)
        pred = logits.argmax(1)
        ends = torch.cumsum(self.counts, 0).tolist()
        norm = 0.5 * feat.shape[1] * math.log(2 * math.pi * self.bandwidth**2)
        out = feat.new_zeros(len(x))
        for c in sorted(set(pred.tolist())):  # one block per predicted class (the reference is grouped by class)
            sel = (pred == c).nonzero().squeeze(1)
            lo, hi = ends[c] - int(self.counts[c]), ends[c]
            ref, f = self.ref[lo:hi].to(feat.device), feat[sel]
            d2 = ((f**2).sum(1, keepdim=True) - 2 * f @ ref.T + (ref**2).sum(1)).clamp_min(0)
            logk = -d2 / (2 * self.bandwidth**2)
            count = torch.full((len(sel),), float(hi - lo), dtype=feat.dtype, device=feat.device)
            if exclude is not None:
                drop = torch.arange(lo, hi, device=feat.device)[None, :] == exclude[sel].to(feat.device)[:, None]
                logk, count = logk.masked_fill(drop, -math.inf), count - drop.sum(1)
            out = out.index_put((sel,), torch.logsumexp(logk, 1) - count.clamp_min(1).log() - norm)
        return out

    def bu(self, x: torch.Tensor) -> torch.Tensor:
        """Feinman et al.'s MC-dropout uncertainty of ``x`` (N), ``passes`` draws from the detector's generator."""
        net = self.dropnet if self.dropnet is not None else self.model
        return uncertainty(mc_softmax(net, x, self.passes, self._gen))

    def _features(self, x: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        cols = []
        if self.use != "bu":
            cols.append(self.kd(x, exclude))
        if self.use != "kd":
            cols.append(self.bu(x))
        return torch.stack(cols, 1)

    # -- fitting -----------------------------------------------------------------------------------
    @with_autograd
    def fit(self, model: nn.Module, x_clean: torch.Tensor, x_adv: torch.Tensor, x_noisy: torch.Tensor | None = None,
            *, generator: torch.Generator | None = None) -> KernelDensityUncertainty:
        """Keep the reference features, train the dropout variant if needed, fit the regression."""
        self.in_shape = check_fit_sets(self.name, model, {"x_clean": x_clean, "x_adv": x_adv, "x_noisy": x_noisy})
        self.bind(model)
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            parts = [_features_and_logits(model, x_clean[i : i + 500]) for i in range(0, len(x_clean), 500)]
        feats, logits = torch.cat([f for f, _ in parts]), torch.cat([lg for _, lg in parts])
        pred = logits.argmax(1)
        rows = self._reference(pred, logits.shape[1], gen)
        self.ref, self.ref_labels = feats[rows].detach().clone(), pred[rows].clone()
        self.counts = torch.bincount(self.ref_labels, minlength=logits.shape[1])
        self.dropnet = None
        if self.use != "kd" and not dropout_layers(model):
            self.dropnet = with_dropout(model, self.p)
            self.train_seconds = train_dropout_variant(self.dropnet, x_clean, pred, self.epochs, self.seed)
        own = torch.full((len(x_clean),), -1, dtype=torch.long)
        own[rows] = torch.arange(len(rows))
        self._gen.manual_seed(self.seed)
        negatives = [batched(lambda i: self._features(x_clean[i], own[i]), torch.arange(len(x_clean)))]
        if x_noisy is not None:
            negatives.append(batched(self._features, x_noisy))
        positives = batched(self._features, x_adv)
        neg = torch.cat(negatives)
        self.reg = fit_regression(
            torch.cat([neg, positives]), torch.cat([torch.zeros(len(neg)), torch.ones(len(positives))]), self.l2)
        return self

    def _reference(self, pred: torch.Tensor, classes: int, gen: torch.Generator) -> torch.Tensor:
        """Indices of at most ``cap`` clean images per predicted class (a seeded subsample), grouped by class."""
        order = torch.randperm(len(pred), generator=gen)
        keep = [order[pred[order] == c][: self.cap] for c in range(classes)]
        missing = [c for c, k in enumerate(keep) if not len(k)]
        if missing:
            raise ValueError(f"{self.name}: no clean image is predicted as class(es) {missing}; KD needs clean "
                             f"reference images of every class")
        return torch.cat([k.sort().values for k in keep])

    # -- scoring -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The regression's logit on (KD, BU) of ``x`` (N, float64), differentiable in ``x``."""
        check_input(self.name, x, self.in_shape)
        if not len(self.reg.weight):
            raise RuntimeError(f"{self.name}: not fitted; call fit(model, x_clean, x_adv) or load_detector first")
        out: torch.Tensor = self.reg(self._features(x))
        return out

    def score(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """``forward`` in batches after reseeding the dropout draws with ``seed`` (reproducible)."""
        self._gen.manual_seed(self.seed)
        return super().score(check_input(self.name, x, self.in_shape), batch_size)

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Holders for a saved detector: the buffers, the regression and (if saved) the dropout variant."""
        super().prepare(shapes)
        self.reg = LogisticRegression(shapes["reg.weight"][0])
        if any(k.startswith("dropnet.") for k in shapes):
            self.dropnet = with_dropout(self.model, self.p)


__all__ = ["PAPER", "KernelDensityUncertainty", "batched", "check_fit_sets", "check_input"]
