"""Randomized smoothing and Lipschitz certificates on MNIST (issue 20 part B), written to docs/certified-smoothing.md.

    python benchmarks/smoothing.py certify --threads 2     # CERTIFY on 500 test images (σ 0.5, N 10 000, n0 100, α 0.001)
    python benchmarks/smoothing.py attacked --threads 1    # L2 PGD / APGD ensemble on the base classifier (context)
    python benchmarks/smoothing.py lipschitz --threads 1   # Lipschitz bounds and radii; PGD/CW inside the radii
    python benchmarks/smoothing.py doc                     # re-render the page from the JSON caches

Each part writes benchmarks/results/smoothing-<part>.json and re-renders docs/certified-smoothing.md
(with docs/figures/certified-smoothing.png) from whichever caches exist.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment
from smoothing_doc import render

from advlab.attacks import get_attack
from advlab.certify.lipschitz import lipschitz_constant, lipschitz_radius
from advlab.certify.smoothing import Smoothed, certified_accuracy
from advlab.data import load_dataset
from advlab.models import load_model
from advlab.threat import ThreatModel

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SMOOTH_MODEL = "lenet-mnist-noise05"
RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
SEED = 0


def _save(part: str, record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"smoothing-{part}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("radius", "pred")}, indent=2))


def _command(args: argparse.Namespace) -> str:
    return shlex.join(["python", "benchmarks/smoothing.py", *sys.argv[1:]])


def run_certify(args: argparse.Namespace) -> None:
    """CERTIFY on the first ``--images`` MNIST test images; the time of the whole run."""
    x, y = load_dataset("mnist", "test")
    x, y = x[: args.images], y[: args.images]
    model = load_model(args.model)
    sm = Smoothed(model, args.sigma, 10)
    gen = torch.Generator().manual_seed(SEED)
    load_start = os.getloadavg()
    start = time.perf_counter()
    pred, radius = sm.certify(x, args.n0, args.n, args.alpha, batch_size=args.batch_size, generator=gen)
    seconds = time.perf_counter() - start
    clean = float((model(x).argmax(1) == y).float().mean())
    _save(f"certify-{Path(args.model).stem}", {
        "command": _command(args), "environment": environment(), "model": Path(args.model).stem,
        "load_start": [round(v, 2) for v in load_start], "load_end": [round(v, 2) for v in os.getloadavg()],
        "images": len(x), "sigma": args.sigma, "n0": args.n0, "n": args.n, "alpha": args.alpha,
        "batch_size": args.batch_size, "seconds": round(seconds, 1), "radii": RADII,
        "certified_accuracy": certified_accuracy(pred, radius, y, RADII),
        "abstain": float((pred == -1).float().mean()), "wrong": float(((pred != y) & (pred != -1)).float().mean()),
        "base_clean_accuracy": clean, "model_meta": _meta(model),
        "pred": pred.tolist(), "radius": [round(float(r), 5) for r in radius],
    })


def _meta(model: torch.nn.Module) -> dict:
    meta = dict(getattr(model, "advlab_meta", {}))
    return {k: meta[k] for k in ("acc1", "epochs", "batch_size", "lr", "train_seconds", "command", "defense")
            if k in meta}


def _attacked(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float,
              params: dict) -> float:
    gen = torch.Generator().manual_seed(SEED)
    res = get_attack(attack)(model, x, y, ThreatModel("l2", eps), generator=gen, **params)
    with torch.no_grad():
        return float((model(res.x_adv).argmax(1) == y).float().mean())


def run_attacked(args: argparse.Namespace) -> None:
    """L2 attacked accuracy of the base classifier at the certified radii (an upper bound, for context)."""
    x, y = load_dataset("mnist", "test")
    x, y = x[: args.images], y[: args.images]
    model = load_model(args.model)
    attacks = {"pgd": {"steps": 50, "restarts": 1}, "apgd-ensemble": {"max_queries": args.max_queries}}
    old = _load("attacked")
    rows = [] if old is None or old["model"] != args.model or old["images"] != len(x) else old["rows"]
    for eps in [r for r in RADII if r > 0]:
        for name, params in attacks.items():
            if (name == "apgd-ensemble" and eps not in args.ensemble_eps) or (name in args.skip):
                continue
            rows = [r for r in rows if (r["attack"], r["eps"]) != (name, eps)]
            t = time.perf_counter()
            acc = _attacked(model, x, y, name, eps, params)
            rows.append({"attack": name, "params": params, "eps": eps, "accuracy": acc,
                         "seconds": round(time.perf_counter() - t, 1),
                         "command": _command(args)})
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: (list(attacks).index(r["attack"]), r["eps"]))
    _save("attacked", {"command": _command(args), "environment": environment(), "model": args.model,
                       "images": len(x), "rows": rows})


def _lipschitz_row(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    t = time.perf_counter()
    lip = lipschitz_constant(model, (1, 28, 28))
    seconds = time.perf_counter() - t
    pred, radius = lipschitz_radius(model, x, y, constant=lip)
    correct = radius[pred == y]
    eps = float(correct.median())
    inside = radius >= eps
    broken = {}
    for attack, params in (("pgd", {"steps": 100, "restarts": 2}), ("cw", {"steps": 200})):
        gen = torch.Generator().manual_seed(SEED)
        res = get_attack(attack)(model, x[inside], y[inside], ThreatModel("l2", eps), generator=gen, **params)
        with torch.no_grad():
            broken[attack] = int((model(res.x_adv).argmax(1) != y[inside]).sum())
    return {"model": name, "L": lip, "seconds": round(seconds, 1), "clean": float((pred == y).float().mean()),
            "median_radius": eps, "max_radius": float(radius.max()),
            "certified": {str(r): float((radius >= r).float().mean()) for r in (0.01, 0.05, 0.1, 0.25, 0.5)},
            "attacked_inside": {"eps": eps, "examples": int(inside.sum()), "broken": broken},
            "meta": _meta(model)}


def run_lipschitz(args: argparse.Namespace) -> None:
    """L, the radii and an attack at the median radius on the examples certified there, per model."""
    x, y = load_dataset("mnist", "test")
    x, y = x[: args.images], y[: args.images]
    names = ["lenet-mnist", args.parseval, *args.smooth_models, "mlp-mnist"]
    rows = []
    for name in names:
        rows.append(_lipschitz_row(Path(name).stem, load_model(name), x, y))
        print(rows[-1], flush=True)
    _save("lipschitz", {"command": _command(args), "environment": environment(), "images": len(x), "rows": rows})


def _load(part: str) -> dict | None:
    path = RESULTS / f"smoothing-{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_doc(args: argparse.Namespace) -> None:
    """Re-render docs/certified-smoothing.md and its figure from the caches."""
    certs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("smoothing-certify-*.json"))]
    y = load_dataset("mnist", "test")[1]
    for c in certs:  # the whole curve, from the per-example radii (the table samples it at RADII)
        pred, radius = torch.tensor(c["pred"]), torch.tensor(c["radius"])
        grid = torch.linspace(0, max(RADII[-1], float(radius.max())) + 0.05, 241).tolist()
        c["curve"] = [grid, certified_accuracy(pred, radius, y[: len(pred)], grid)]
    render({"certify": certs, **{p: _load(p) for p in ("attacked", "lipschitz")}}, ROOT)


def main() -> None:
    """Parse the sub-command and run it; every part re-renders the page."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["certify", "attacked", "lipschitz", "doc"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default=SMOOTH_MODEL)
    p.add_argument("--parseval", default="benchmarks/results/lenet-mnist-parseval.safetensors",
                   help="the Parseval-trained lenet (advlab train --model lenet --defense parseval ...)")
    p.add_argument("--smooth-models", type=lambda s: s.split(","), default=[SMOOTH_MODEL],
                   help="lipschitz: the Gaussian-noise-trained models to bound (comma-separated)")
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--max-queries", type=int, default=1000, help="attacked: Square's budget in the APGD ensemble")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[], help="attacked: attacks not to (re)run")
    p.add_argument("--ensemble-eps", type=lambda s: [float(v) for v in s.split(",") if v], default=[1.0],
                   help="attacked: the radii where the (slow) APGD ensemble runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.images is None:
        args.images = {"certify": 500, "attacked": 500, "lipschitz": 1000}.get(args.part, 0)
    {"certify": run_certify, "attacked": run_attacked, "lipschitz": run_lipschitz, "doc": run_doc}[args.part](args)
    if args.part != "doc":
        run_doc(args)


if __name__ == "__main__":
    main()
