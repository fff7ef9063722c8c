"""``advlab certify``: verified (certified) accuracy of a model per ε, by a certification method.

The methods are :mod:`advlab.certify.methods`' (the registry ``advlab evaluate --certify`` shares):
``ibp``, ``crown-ibp``, ``crown`` (L∞), ``lipschitz`` and ``smoothing[:sigma=S][:n=N]...`` (L2, or
L∞ through ε·√d). A method answers which examples it certifies correct on the whole ε-ball.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._checks import parse_budget
from advlab._io import atomic_write_text
from advlab.certify.methods import METHOD_NORMS, Method, certified_masks, check_certifiable, parse_methods
from advlab.commands.device import add_device_argument, use_device
from advlab.commands.inputs import add_model_arguments, model_and_images, norm_word
from advlab.metrics import clean_accuracy
from advlab.train import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``certify`` sub-command."""
    p = sub.add_parser("certify", help="verified accuracy per ε (proven lower bound on robust accuracy)")
    add_model_arguments(p, model_default=None)
    p.add_argument("--method", default="ibp",
                   help=f"comma-separated certification methods: {', '.join(METHOD_NORMS)}, with options as "
                        "smoothing:sigma=0.5:n=10000 (default ibp)")
    p.add_argument("--norm", default="linf", type=norm_word, choices=("linf", "l2"),
                   help="the ball's norm (default linf)")
    p.add_argument("--seed", type=int, default=0, help="seed of smoothing's noise (default 0)")
    p.add_argument("--eps", default="0.1", help="comma-separated radii, numbers or fractions like 8/255 (default 0.1)")
    p.add_argument("--n", type=int, default=None, help="first n test examples (default all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    add_device_argument(p)
    p.set_defaults(func=run)


def _parse_eps(text: str) -> list[float]:
    values = [parse_budget("--eps", v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"--eps: expected comma-separated numbers or fractions like 8/255, got {text!r}")
    return values


def certify_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: list[Method], eps: list[float],
                  norm: str = "linf", batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Clean accuracy and, per method and ε, the verified accuracy and the seconds the method took."""
    clean = clean_accuracy(model, x, y, batch_size)[0]
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        masks = certified_masks(model, x, y, method, norm, eps, (0.0, 1.0), seed, batch_size)
        seconds = round(time.perf_counter() - t0, 2)
        rows += [{"method": method.label, "norm": norm, "eps": e, "verified": float(masks[e].float().mean()),
                  "seconds": seconds} for e in eps]
    return {"n": len(x), "clean_acc": clean, "rows": rows}


def run(args: argparse.Namespace) -> int:
    """Load the model and data, certify, print the table (and write JSON)."""
    methods, eps = parse_methods(args.method, args.norm), _parse_eps(args.eps)
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n: expected a positive integer, got {args.n}")
    device = use_device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, dataset, x, y = model_and_images(args, args.n)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model: {args.model} is not a torch model; bound propagation needs its layers")
    model = model.to(device)  # loaded here: a fresh object
    x, y = x.to(device), y.to(device)
    check_certifiable(model, tuple(x.shape[1:]), methods)
    table = certify_table(model, x, y, methods, eps, args.norm, args.batch_size, args.seed)
    print(f"{args.model} on {dataset} test ({table['n']} images): clean accuracy {table['clean_acc']:.4f}")
    width = max(10, *(len(m.label) for m in methods))
    print(f"{'method':<{width}} {'norm':<5} {'eps':>7} {'verified':>9} {'seconds':>9}")
    for r in table["rows"]:
        print(f"{r['method']:<{width}} {r['norm']:<5} {r['eps']:>7g} {r['verified']:>9.4f} {r['seconds']:>9.1f}")
    if args.json:
        payload = {"model": args.model, "dataset": dataset, "command": command_line(), **table}
        atomic_write_text(Path(args.json), json.dumps(payload, indent=2) + "\n")
    return 0
