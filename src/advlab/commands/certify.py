"""``advlab certify``: verified (certified) accuracy of a model per ε, by a certification method.

Methods are looked up in :data:`CERTIFIERS` (name → :class:`Certifier`); a new method (randomized
smoothing, Lipschitz margins) is one more entry: a function ``(model, x, y, eps, batch_size) →
BoolTensor`` telling which examples are certified correct at radius ``eps`` in its norm.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._io import atomic_write_text
from advlab.certify.bounds import verified
from advlab.data import load_dataset
from advlab.models import load_model
from advlab.train import command_line

CertifyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]


@dataclass(frozen=True)
class Certifier:
    """A certification method: which examples are certified correct at radius ε (``norm``)."""

    fn: CertifyFn
    norm: str
    description: str


def _bound_method(method: str) -> CertifyFn:
    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int) -> torch.Tensor:
        return verified(model, x, y, eps, method=method, batch_size=batch_size)  # type: ignore[arg-type]
    return fn


CERTIFIERS: dict[str, Certifier] = {
    "ibp": Certifier(_bound_method("ibp"), "linf", "interval bound propagation (Gowal et al. 2018)"),
    "crown-ibp": Certifier(_bound_method("crown-ibp"), "linf",
                           "IBP intermediate bounds, CROWN for the margins (Zhang et al. 2020)"),
    "crown": Certifier(_bound_method("crown"), "linf", "CROWN linear relaxation throughout (Zhang et al. 2018)"),
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``certify`` sub-command."""
    p = sub.add_parser("certify", help="verified accuracy per ε (proven lower bound on robust accuracy)")
    p.add_argument("--model", required=True, help="pretrained name or checkpoint path")
    p.add_argument("--method", default="ibp",
                   help=f"comma-separated certification methods: {', '.join(CERTIFIERS)} (default ibp)")
    p.add_argument("--eps", default="0.1", help="comma-separated radii (default 0.1)")
    p.add_argument("--dataset", default=None, help="test split to certify (default: the model's, else mnist)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=None, help="first n test examples (default all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run)


def _parse_eps(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--eps: expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v >= 0 for v in values):
        raise ValueError(f"--eps: expected numbers ≥ 0, got {text!r}")
    return values


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in CERTIFIERS]
    if not methods or bad:
        raise ValueError(f"--method: expected some of {', '.join(CERTIFIERS)}, got {text!r}")
    return methods


def certify_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: list[str], eps: list[float],
                  batch_size: int = 256) -> dict[str, Any]:
    """Clean accuracy and, per method and ε, the verified accuracy and the seconds it took."""
    with torch.no_grad():
        clean = float((torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).argmax(1)
                       == y).float().mean())
    rows = []
    for method in methods:
        cert = CERTIFIERS[method]
        for e in eps:
            t0 = time.perf_counter()
            ok = cert.fn(model, x, y, e, batch_size)
            rows.append({"method": method, "norm": cert.norm, "eps": e, "verified": float(ok.float().mean()),
                         "seconds": round(time.perf_counter() - t0, 2)})
    return {"n": len(x), "clean_acc": clean, "rows": rows}


def run(args: argparse.Namespace) -> int:
    """Load the model and data, certify, print the table (and write JSON)."""
    methods, eps = _parse_methods(args.method), _parse_eps(args.eps)
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n: expected a positive integer, got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model: {args.model} is not a torch model; bound propagation needs its layers")
    dataset = args.dataset or getattr(model, "advlab_meta", {}).get("dataset", "mnist")
    x, y = load_dataset(dataset, "test", root=args.data_dir)
    if args.n is not None:
        x, y = x[: args.n], y[: args.n]
    table = certify_table(model, x, y, methods, eps, args.batch_size)
    print(f"{args.model} on {dataset} test ({table['n']} images): clean accuracy {table['clean_acc']:.4f}")
    print(f"{'method':<10} {'norm':<5} {'eps':>7} {'verified':>9} {'seconds':>9}")
    for r in table["rows"]:
        print(f"{r['method']:<10} {r['norm']:<5} {r['eps']:>7g} {r['verified']:>9.4f} {r['seconds']:>9.1f}")
    if args.json:
        payload = {"model": args.model, "dataset": dataset, "command": command_line(), **table}
        atomic_write_text(Path(args.json), json.dumps(payload, indent=2) + "\n")
    return 0
