"""One registry of certification methods, shared by ``advlab certify`` and ``advlab evaluate --certify``.

A method is named ``NAME[:KEY=VALUE...]`` (e.g. ``smoothing:sigma=0.5:n=1000``) and answers, for
a batch and a list of radii, which examples it certifies: correctly classified on the whole ball.

* ``ibp``, ``crown-ibp``, ``crown`` — L∞ bound propagation (:mod:`advlab.certify.bounds`);
* ``lipschitz`` — margin / (√2·L), L an upper bound on the L2 Lipschitz constant
  (:mod:`advlab.certify.lipschitz`); an L∞ ε is certified when ε·√d is (the L∞ ball lies in that L2 ball);
* ``smoothing`` — Cohen et al.'s randomized smoothing (``sigma``, ``n``, ``n0``, ``alpha``,
  ``batch_size``; :mod:`advlab.certify.smoothing`): it certifies the *smoothed* classifier, with
  probability 1 − α per example; likewise for L∞ through ε·√d.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advlab._checks import suggest
from advlab.certify.bounds import verified
from advlab.certify.chain import build_chain
from advlab.certify.lipschitz import lipschitz_constant, lipschitz_radius
from advlab.certify.smoothing import Smoothed
from advlab.metrics import predict_logits

DETERMINISTIC = ("ibp", "crown-ibp", "crown", "lipschitz")
METHOD_NORMS = {"ibp": ("linf",), "crown-ibp": ("linf",), "crown": ("linf",),
                "lipschitz": ("l2", "linf"), "smoothing": ("l2", "linf")}
DEFAULT_METHODS = {"linf": ("ibp", "crown-ibp"), "l2": ("lipschitz",)}
SMOOTHING_DEFAULTS: dict[str, float | int] = {"sigma": 0.25, "n": 10_000, "n0": 100, "alpha": 0.001, "batch_size": 1000}


@dataclass(frozen=True)
class Method:
    """A certification method and its options, parsed from ``NAME[:KEY=VALUE...]``."""

    name: str
    options: tuple[tuple[str, float | int], ...] = ()

    @property
    def label(self) -> str:
        """The name with its options, as the rows and the report show it."""
        return self.name + "".join(f":{k}={v:g}" for k, v in self.options)


def parse_method(spec: str, norm: str) -> Method:
    """One ``NAME[:KEY=VALUE...]`` for the threat model's ``norm`` (a one-line error names what is wrong)."""
    name, *parts = spec.strip().split(":")
    if name not in METHOD_NORMS:
        raise ValueError(f"certify: unknown method {name!r}{suggest(name, METHOD_NORMS)}; "
                         f"known: {', '.join(METHOD_NORMS)}")
    if norm not in METHOD_NORMS[name]:
        raise ValueError(f"certify: {name} certifies {' and '.join(METHOD_NORMS[name])} balls, not {norm}")
    opts: dict[str, float | int] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if name != "smoothing" or not sep or key not in SMOOTHING_DEFAULTS:
            allowed = ", ".join(SMOOTHING_DEFAULTS) if name == "smoothing" else "none"
            raise ValueError(f"certify: {name} option {part!r} is not KEY=VALUE with KEY one of: {allowed}")
        try:
            opts[key] = int(value) if key in ("n", "n0", "batch_size") else float(value)
        except ValueError:
            raise ValueError(f"certify: {name} option {key} expects a number, got {value!r}") from None
    return Method(name, tuple(sorted(opts.items())))


def parse_methods(spec: str | Sequence[str] | None, norm: str) -> list[Method]:
    """``"default"`` (the norm's default methods), a comma-separated string or a list; None: none."""
    if spec is None:
        return []
    items = [s for s in (spec.split(",") if isinstance(spec, str) else list(spec)) if s.strip()]
    if items == ["default"]:
        if norm not in DEFAULT_METHODS:
            raise ValueError(f"certify: advlab has no certificate for {norm} balls (only linf and l2)")
        items = list(DEFAULT_METHODS[norm])
    methods = [parse_method(s, norm) for s in items]
    if len({m.label for m in methods}) != len(methods):
        raise ValueError(f"certify: a method is named twice in {spec!r}")
    return methods


def _radius_to_eps(norm: str, x: torch.Tensor) -> float:
    """The factor turning an ε of ``norm`` into the L2 radius whose ball contains its ball."""
    return math.sqrt(x[0].numel()) if norm == "linf" else 1.0


def certified_masks(net: Any, x: torch.Tensor, y: torch.Tensor, method: Method, norm: str,
                    eps: Sequence[float], bounds: tuple[float, float], seed: int,
                    batch_size: int = 256) -> dict[float, torch.Tensor]:
    """Per ε: which examples ``method`` certifies (correctly classified on the whole ball).

    ``batch_size`` is the number of examples bounded at once (bound propagation); smoothing's own
    ``batch_size`` option is the number of noisy inputs per forward pass.
    """
    if method.name in ("ibp", "crown-ibp", "crown"):
        correct = predict_logits(net, x, batch_size).argmax(1) == y
        return {e: correct & verified(net, x, y, e, method=method.name, bounds=bounds,  # type: ignore[arg-type]
                                      batch_size=batch_size) for e in eps}
    if method.name == "lipschitz":
        pred, radius = lipschitz_radius(net, x, y)
    else:
        o = {**SMOOTHING_DEFAULTS, **dict(method.options)}
        with torch.no_grad():
            classes = int(net(x[:1]).shape[1])
        pred, radius = Smoothed(net, float(o["sigma"]), classes).certify(
            x, int(o["n0"]), int(o["n"]), float(o["alpha"]), batch_size=int(o["batch_size"]),
            generator=torch.Generator().manual_seed(seed))
    scale = _radius_to_eps(norm, x)
    return {e: (pred == y) & (radius >= e * scale) for e in eps}


def check_certifiable(net: Any, in_shape: tuple[int, ...], methods: Sequence[Method]) -> None:
    """Before any work: the model must be one the methods can read (a one-line error names what is not)."""
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"certify: a certificate needs the model's layers; {type(net).__name__} is a black box")
    names = {m.name for m in methods}
    if names & {"ibp", "crown-ibp", "crown"}:
        build_chain(net, in_shape)
    if "lipschitz" in names:
        lipschitz_constant(net, in_shape)


__all__ = ["DEFAULT_METHODS", "DETERMINISTIC", "METHOD_NORMS", "SMOOTHING_DEFAULTS", "Method", "certified_masks",
           "check_certifiable", "parse_method", "parse_methods"]
