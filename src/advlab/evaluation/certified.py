"""Certified lower bounds next to the attacked upper bounds: ``advlab evaluate --certify``.

Every attacked accuracy is an upper bound on robustness (what survived the attacks tried); a
certificate is a lower bound no attack can beat. After the attacks (and the checks' additions),
each method named in ``certify`` certifies the same examples at every ε of the sweep, and a row
per (method, ε) records the certified accuracy beside the worst-case attacked accuracy:
"at least X % (proven), at most Y % (attacked)".

Methods (``NAME[:KEY=VALUE...]``, e.g. ``smoothing:sigma=0.5:n=1000``):

* ``ibp``, ``crown-ibp``, ``crown`` — L∞ bound propagation (:mod:`advlab.certify.bounds`);
* ``lipschitz`` — margin / (√2·L) with L an upper bound on the L2 Lipschitz constant
  (:mod:`advlab.certify.lipschitz`); an L∞ ε is certified when ε·√d is (the L∞ ball lies in that L2 ball);
* ``smoothing`` — Cohen et al.'s randomized smoothing (``sigma``, ``n``, ``n0``, ``alpha``): it
  certifies the *smoothed* classifier, with probability 1 − α; likewise for L∞ through ε·√d.

Each row is checked when it is written. For a deterministic method, an example certified at ε
that an attack broke at ε, or a certified accuracy above the attacked one, is an error
(:class:`UnsoundCertificate`): the bound or the attack is wrong, and the numbers are not written.
Smoothing certifies another classifier with probability 1 − α, so there a violation is a warning
naming both numbers.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advlab._checks import suggest

DETERMINISTIC = ("ibp", "crown-ibp", "crown", "lipschitz")
METHOD_NORMS = {"ibp": ("linf",), "crown-ibp": ("linf",), "crown": ("linf",),
                "lipschitz": ("l2", "linf"), "smoothing": ("l2", "linf")}
DEFAULT_METHODS = {"linf": ("ibp", "crown-ibp"), "l2": ("lipschitz",)}
SMOOTHING_DEFAULTS: dict[str, float | int] = {"sigma": 0.25, "n": 10_000, "n0": 100, "alpha": 0.001, "batch_size": 1000}


class UnsoundCertificate(RuntimeError):
    """A deterministic certificate claims more than an attack left: the bound or the attack is wrong."""


@dataclass(frozen=True)
class Method:
    """A certification method and its options, parsed from ``NAME[:KEY=VALUE...]``."""

    name: str
    options: tuple[tuple[str, float | int], ...] = ()

    @property
    def label(self) -> str:
        """The name with its options, as the rows and the report show it."""
        return self.name + "".join(f":{k}={v:g}" for k, v in self.options)


def _parse_one(spec: str, norm: str) -> Method:
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
    methods = [_parse_one(s, norm) for s in items]
    if len({m.label for m in methods}) != len(methods):
        raise ValueError(f"certify: a method is named twice in {spec!r}")
    return methods


def _radius_to_eps(norm: str, x: torch.Tensor) -> float:
    """The factor turning an ε of ``norm`` into the L2 radius whose ball contains its ball."""
    return math.sqrt(x[0].numel()) if norm == "linf" else 1.0


def certified_masks(net: Any, x: torch.Tensor, y: torch.Tensor, method: Method, norm: str,
                    eps: Sequence[float], bounds: tuple[float, float], seed: int) -> dict[float, torch.Tensor]:
    """Per ε: which examples ``method`` certifies (correctly classified on the whole ball)."""
    from advlab.certify.bounds import verified

    if method.name in ("ibp", "crown-ibp", "crown"):
        correct = net(x).argmax(1) == y
        return {e: correct & verified(net, x, y, e, method=method.name, bounds=bounds)  # type: ignore[arg-type]
                for e in eps}
    if method.name == "lipschitz":
        from advlab.certify.lipschitz import lipschitz_radius

        pred, radius = lipschitz_radius(net, x, y)
    else:
        from advlab.certify.smoothing import Smoothed

        o = {**SMOOTHING_DEFAULTS, **dict(method.options)}
        with torch.no_grad():
            classes = int(net(x[:1]).shape[1])
        pred, radius = Smoothed(net, float(o["sigma"]), classes).certify(
            x, int(o["n0"]), int(o["n"]), float(o["alpha"]), batch_size=int(o["batch_size"]),
            generator=torch.Generator().manual_seed(seed))
    scale = _radius_to_eps(norm, x)
    return {e: (pred == y) & (radius >= e * scale) for e in eps}


def check_row(row: dict[str, Any], both: int) -> None:
    """A certificate never exceeds the attacked accuracy: an error for deterministic methods, else a warning."""
    over = row["certified"] > row["attacked"] + 1e-12 or both > 0
    if not over:
        return
    text = (f"{row['method']} certifies {row['certified']:.4f} at {row['norm']} ε = {row['eps']:g} but the attacks "
            f"leave {row['attacked']:.4f}; {both} certified example(s) were broken by an attack")
    if row["method"].split(":")[0] in DETERMINISTIC:
        raise UnsoundCertificate(f"{text}: the bound or the attack is wrong, so the row is not written")
    warnings.warn(f"{text} (smoothing certifies the smoothed classifier, with probability 1 − α)", stacklevel=2)


def certify_rows(net: Any, x: torch.Tensor, y: torch.Tensor, worst: dict[float, Any], methods: list[Method],
                 config: dict[str, Any]) -> list[dict[str, Any]]:
    """One checked row per (method, ε): certified accuracy, attacked (worst-case) accuracy, clean accuracy."""
    eps = sorted(worst)
    with torch.no_grad():
        clean = float((net(x).argmax(1) == y).double().mean())
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        masks = certified_masks(net, x, y, m, config["norm"], eps, tuple(config["bounds"]), int(config["seed"]))
        seconds = time.perf_counter() - t0
        for e in eps:
            robust = worst[e].top1.bool()
            row = {"method": m.label, "norm": config["norm"], "eps": e, "n": len(y), "clean": clean,
                   "certified": float(masks[e].double().mean()), "attacked": float(robust.double().mean()),
                   "seconds": seconds}
            check_row(row, int((masks[e] & ~robust).sum()))
            rows.append(row)
    return rows


def preflight_certify(net: Any, x: torch.Tensor, methods: list[Method], targeted: bool) -> None:
    """Before any attack runs: the model must be one the methods can read (a one-line error names what is not)."""
    if not methods:
        return
    if targeted:
        raise ValueError("certify: certificates are untargeted claims; run --certify without --targeted")
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"certify: a certificate needs the model's layers; {type(net).__name__} is a black box")
    names = {m.name for m in methods}
    if names & {"ibp", "crown-ibp", "crown"}:
        from advlab.certify.chain import build_chain

        build_chain(net, tuple(x.shape[1:]))
    if "lipschitz" in names:
        from advlab.certify.lipschitz import lipschitz_constant

        lipschitz_constant(net, tuple(x.shape[1:]))


def certify_step(run: Any, worst: dict[float, Any]) -> list[dict[str, Any]]:
    """The certified rows of ``run`` (computed once and kept in its store, so a resumed run reads them back)."""
    labels = run.config.get("certify") or []
    stored = run.store.get_meta("certified")
    if stored is not None and list(dict.fromkeys(r["method"] for r in stored)) == labels:
        return list(stored)
    methods = [_parse_one(label, run.config["norm"]) for label in labels]
    rows = certify_rows(run.net, run.x, run.y, worst, methods, run.config)
    run.store.set_meta("certified", rows)
    return rows


__all__ = ["DEFAULT_METHODS", "METHOD_NORMS", "Method", "UnsoundCertificate", "certified_masks", "certify_rows",
           "certify_step", "check_row", "parse_methods", "preflight_certify"]
