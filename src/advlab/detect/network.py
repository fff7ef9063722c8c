"""A detector network on an intermediate layer of the frozen classifier (Metzen et al. 2017).

Metzen, Genewein, Fischer, Bischoff 2017, "On Detecting Adversarial Perturbations", ICLR 2017,
https://arxiv.org/abs/1702.04267: a small binary classifier (the *detector subnetwork*) reads the
activations of one layer of the classifier, which stays frozen, and is trained by gradient
descent on clean inputs (label 0) against adversarial ones (label 1). Its logit is the score, a
differentiable function of the input through the classifier's first layers.

The subnetwork here (``"net"``), a scaled-down version of the paper's (conv 96 → pool → conv 192 →
pool → conv 192 1×1 → conv 2 1×1 → global average), is, on an activation map C×H×W::

    conv 3×3 (C → w) · ReLU · max-pool 2 · conv 3×3 (w → 2w) · ReLU · conv 1×1 (2w → 1) · global average

and on a flat activation vector D: ``linear (D → 4w) · ReLU · linear (4w → 1)``; ``w = width``
(default 32). The activations are standardised per channel with the mean and deviation of the
training activations (fitted buffers). The paper found an early stage best on CIFAR-10; the
default layer (``layer="auto"``) is the output of the classifier's first pooling layer (lenet: its
first conv stage, 6×14×14), or, for a network without pooling, its first activation.

**Dynamic adversary** (``dynamic=true``, the paper's §3.2): each epoch, a share ``dynamic_share``
of the adversarial training inputs is replaced by examples crafted afresh, from the clean inputs,
against the classifier *and the current detector* jointly (the adaptive PGD of
:mod:`advlab.detect.adaptive` on the joint model, the detector's logit 0 as its threshold, at the
detector's ``eps``/``dynamic_steps``), so the detector learns to catch detector-aware attacks.
Training is seeded by ``generator`` (initialisation, shuffling, dynamic examples).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._grad_mode import with_autograd
from advlab.detect.base import Detector, register_detector
from advlab.models.features import layer_outputs
from advlab.threat import ThreatModel

PAPER = ("Metzen, Genewein, Fischer, Bischoff 2017, On Detecting Adversarial Perturbations, "
         "https://arxiv.org/abs/1702.04267")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU)


def auto_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The default layer: the first pooling layer's output, else the first activation's (else a one-line error)."""
    with torch.no_grad():
        _, outs = layer_outputs(model, x[:1])
    names = [n for n, _ in outs]
    for kinds in (_POOLS, _ACTIVATIONS):
        for name in names:
            if isinstance(model.get_submodule(name.split("#")[0]), kinds):
                return name
    raise ValueError(f"layer='auto': {type(model).__name__} has no pooling or activation layer; name one of "
                     f"{', '.join(names)}")


def build_head(kind: str, size: int, width: int) -> nn.Sequential:
    """The detector subnetwork: ``kind`` "conv" on ``size`` channels, or "linear" on ``size`` features; one logit."""
    if kind == "conv":
        return nn.Sequential(
            nn.Conv2d(size, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 1, 1),
        )
    return nn.Sequential(nn.Linear(size, 4 * width), nn.ReLU(), nn.Linear(4 * width, 1))


@register_detector
class NetworkDetector(Detector):
    """Metzen et al. 2017's detector subnetwork on one layer of the classifier (registered as ``"net"``).

    Args:
        layer: The classifier's leaf module whose output the subnetwork reads (a name from
            :func:`advlab.models.features.layer_outputs`), or ``"auto"`` (see the module docstring).
        width: The subnetwork's width w.
        epochs, batch_size, lr: The subnetwork's training (Adam, binary cross-entropy on its logit).
        dynamic: Train against the dynamic adversary (re-crafted detector-aware examples each epoch).
        dynamic_share: The share of adversarial inputs re-crafted each epoch when ``dynamic``.
        eps, dynamic_steps: The dynamic adversary's L∞ budget and PGD steps.
    """

    name = "net"
    paper = PAPER

    def __init__(self, layer: str = "auto", width: int = 32, epochs: int = 10, batch_size: int = 128,
                 lr: float = 1e-3, dynamic: bool = False, dynamic_share: float = 0.5, eps: float = 0.3,
                 dynamic_steps: int = 10) -> None:
        super().__init__()
        for arg, v in (("width", width), ("epochs", epochs), ("batch_size", batch_size),
                       ("dynamic_steps", dynamic_steps)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"net: {arg} must be a positive int, got {v!r}")
        if not 0 < float(dynamic_share) <= 1 or not float(lr) > 0 or not float(eps) >= 0:
            raise ValueError(f"net: need 0 < dynamic_share <= 1, lr > 0, eps >= 0; got {dynamic_share!r}, {lr!r}, "
                             f"{eps!r}")
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"net: layer must be a layer name or 'auto', got {layer!r}")
        self.layer, self.width, self.epochs, self.batch_size, self.lr = layer, width, epochs, batch_size, float(lr)
        self.dynamic, self.dynamic_share, self.eps = bool(dynamic), float(dynamic_share), float(eps)
        self.dynamic_steps = dynamic_steps
        self.head: nn.Sequential | None = None
        self.register_buffer("mu", torch.zeros(0))
        self.register_buffer("sigma", torch.ones(0))

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (``layer`` resolved to the name chosen at fit time)."""
        return {"layer": self.layer, "width": self.width, "epochs": self.epochs, "batch_size": self.batch_size,
                "lr": self.lr, "dynamic": self.dynamic, "dynamic_share": self.dynamic_share, "eps": self.eps,
                "dynamic_steps": self.dynamic_steps}

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Rebuild the subnetwork from the saved first weight's shape (conv: 4-D, linear: 2-D)."""
        w0 = shapes.get("head.0.weight")
        if w0 is None:
            raise ValueError("net: the file holds no detector subnetwork (no 'head.0.weight')")
        self.head = build_head("conv" if len(w0) == 4 else "linear", w0[1], self.width).requires_grad_(False)
        self.mu, self.sigma = torch.zeros(shapes["mu"]), torch.ones(shapes["sigma"])

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The chosen layer's output for ``x`` (differentiable), flattened to N×D unless it is a map N×C×H×W."""
        if x.dim() < 2:
            raise ValueError(f"net: expected a batch of inputs N×..., got shape {tuple(x.shape)}")
        _, outs = layer_outputs(self.model, x)
        found = dict(outs)
        if self.layer not in found:
            raise ValueError(f"net: layer {self.layer!r} not among the classifier's layers ({', '.join(found)})")
        a = found[self.layer]
        return a if a.dim() == 4 else a.flatten(1)

    def _standardise(self, a: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if a.dim() == 4 else (1, -1)
        return (a - self.mu.view(shape)) / self.sigma.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The subnetwork's logit per input (N); higher = more likely adversarial."""
        if self.head is None:
            raise RuntimeError("net: not fitted; call fit(model, x_clean, x_adv) or load_detector first")
        out: torch.Tensor = self.head(self._standardise(self.activations(x)))
        return out.flatten(1).mean(1)

    @with_autograd
    def fit(self, model: nn.Module, x_clean: torch.Tensor, x_adv: torch.Tensor, x_noisy: torch.Tensor | None = None,
            *, generator: torch.Generator | None = None) -> NetworkDetector:
        """Train the subnetwork on ``x_clean`` (0) vs ``x_adv`` (1); ``x_noisy`` joins the clean side if given."""
        self.bind(model)
        _check_sets(x_clean, x_adv)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if self.layer == "auto":
            self.layer = auto_layer(model, x_clean)
        negatives = x_clean if x_noisy is None else torch.cat([x_clean, x_noisy])
        self._init_head(torch.cat([negatives, x_adv]), g)
        assert self.head is not None
        opt = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        for _ in range(self.epochs):
            pos = self._dynamic_positives(x_clean, x_adv, g) if self.dynamic else x_adv
            xs = torch.cat([negatives, pos])
            ys = torch.cat([torch.zeros(len(negatives)), torch.ones(len(pos))]).to(xs.device)
            order = torch.randperm(len(xs), generator=g).to(xs.device)
            for i in range(0, len(xs), self.batch_size):
                idx = order[i : i + self.batch_size]
                with torch.no_grad():
                    a = self.activations(xs[idx])
                loss = F.binary_cross_entropy_with_logits(self.head(self._standardise(a)).flatten(1).mean(1), ys[idx])
                opt.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                opt.step()
        self.head.requires_grad_(False)
        return self

    def _init_head(self, xs: torch.Tensor, g: torch.Generator) -> None:
        """Build the subnetwork (seeded from ``g``) and fit the standardisation on the training activations."""
        with torch.no_grad():
            a = torch.cat([self.activations(xs[i : i + 500]) for i in range(0, len(xs), 500)])
        dims = [0, 2, 3] if a.dim() == 4 else [0]
        self.mu = a.mean(dims)
        self.sigma = a.std(dims).clamp_min(1e-6)
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = build_head("conv" if a.dim() == 4 else "linear", a.shape[1], self.width).to(a.device)

    def _dynamic_positives(self, x_clean: torch.Tensor, x_adv: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The epoch's positives: ``dynamic_share`` of them crafted now against classifier + current detector."""
        from advlab.detect.adaptive import adaptive_attack  # (adaptive imports this package's base)

        n_dyn = max(1, round(self.dynamic_share * len(x_adv)))
        keep = torch.randperm(len(x_adv), generator=g)[: len(x_adv) - n_dyn].to(x_adv.device)
        src = torch.randperm(len(x_clean), generator=g)[:n_dyn].to(x_clean.device)
        xs = x_clean[src]
        with torch.no_grad():
            y = self.model(xs).argmax(1)
        assert self.head is not None
        self.head.requires_grad_(False)
        fresh = adaptive_attack(self.model, self, xs, y, ThreatModel("linf", self.eps), "pgd", threshold=0.0,
                                steps=self.dynamic_steps, generator=g).x_adv
        self.head.requires_grad_(True)
        return torch.cat([x_adv[keep], fresh.detach()])


def _check_sets(x_clean: torch.Tensor, x_adv: torch.Tensor) -> None:
    for arg, t in (("x_clean", x_clean), ("x_adv", x_adv)):
        if not isinstance(t, torch.Tensor) or t.dim() < 2 or len(t) == 0:
            raise ValueError(f"net: {arg} must be a non-empty batch of inputs N×..., got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if x_clean.shape[1:] != x_adv.shape[1:]:
        raise ValueError(f"net: x_clean and x_adv differ in input shape ({tuple(x_clean.shape[1:])} vs "
                         f"{tuple(x_adv.shape[1:])})")


__all__ = ["PAPER", "NetworkDetector", "auto_layer", "build_head"]
