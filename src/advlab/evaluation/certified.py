"""Certified lower bounds next to the attacked upper bounds: ``advlab evaluate --certify``.

Every attacked accuracy is an upper bound on robustness (what survived the attacks tried); a
certificate is a lower bound no attack can beat. After the attacks (and the checks' additions),
each method named in ``certify`` certifies the same examples at every ε of the sweep, and a row
per (method, ε) records the certified accuracy beside the worst-case attacked accuracy:
"at least X % (proven), at most Y % (attacked)".

The methods and their options are :mod:`advlab.certify.methods`' (the registry ``advlab certify`` shares).

Each row is checked when it is written. For a deterministic method, an example certified at ε
that an attack broke at ε, or a certified accuracy above the attacked one, is an error
(:class:`UnsoundCertificate`): the bound or the attack is wrong, and the numbers are not written.
Smoothing certifies another classifier with probability 1 − α, so there a violation is a warning
naming both numbers.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from advlab.attacks.guard import unadapted
from advlab.certify.methods import (
    DETERMINISTIC,
    Method,
    certified_masks,
    check_certifiable,
    parse_method,
    parse_methods,
)
from advlab.data.source import Images
from advlab.metrics import clean_accuracy


class UnsoundCertificate(RuntimeError):
    """A deterministic certificate claims more than an attack left: the bound or the attack is wrong."""


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
    clean = clean_accuracy(net, x, y, int(config["batch_size"]))[0]
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
    check_certifiable(net, tuple(x.shape[1:]), methods)


def certify_step(run: Any, worst: dict[float, Any]) -> list[dict[str, Any]]:
    """The certified rows of ``run`` (computed once and kept in its store, so a resumed run reads them back)."""
    labels = run.config.get("certify") or []
    stored = run.store.get_meta("certified")
    if stored is not None and list(dict.fromkeys(r["method"] for r in stored)) == labels:
        return list(stored)
    methods = [parse_method(label, run.config["norm"]) for label in labels]
    x = run.x.materialise() if isinstance(run.x, Images) else run.x  # (the bounds need the images as one tensor)
    # (the certificates are the model's own, not those of the adapters the attacks call it through: a
    # final softmax, which LogProbabilities reads the log of, the chain leaves out)
    rows = certify_rows(unadapted(run.net), x, run.y, worst, methods, run.config)
    run.store.set_meta("certified", rows)
    return rows


__all__ = ["UnsoundCertificate", "certify_rows", "certify_step", "check_row", "parse_methods", "preflight_certify"]
