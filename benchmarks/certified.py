"""Certified (verified) accuracy next to attacked accuracy; writes docs/certified.md.

    python benchmarks/certified.py verify --model cnn-mnist-ibp01 --eps 0.1,0.2,0.3 --threads 1
    python benchmarks/certified.py verify --model lenet-mnist --eps 0.01,0.1 --crown-n 200 --threads 1
    python benchmarks/certified.py soundness --model cnn-mnist-ibp01 --eps 0.1 --n 1000 --threads 1
    python benchmarks/certified.py render

``verify``: verified accuracy on the first --n test images (default all 10 000) by IBP and
CROWN-IBP, and by CROWN on the first --crown-n (CROWN bounds every unstable neuron of every layer:
slow); "any" is the union (every method is sound, so an example certified by one is certified).
``soundness``: on the first --n images, the examples certified at ε (by IBP or CROWN-IBP) are
attacked with PGD (--pgd-steps 100, --pgd-restarts 10 on the examples still robust, step ε/4) and the APGD ensemble at the same ε; the script
*fails* if any certified example is misclassified on an attack's output; it also records the
attacked (upper-bound) accuracy of all n images. Results: benchmarks/results/certified.json;
``render`` writes docs/certified.md from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment
from certified_doc import render

import advlab
from advlab.attacks import get_attack
from advlab.certify import margin_lower_bounds, verified
from advlab.metrics import predict_logits

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "certified.json"
SEED = 0


def _load() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def _save(key: str, model: str, record: dict[str, Any]) -> None:
    data = _load()
    data.setdefault(model, {})[key] = record
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def _data(n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = advlab.load_dataset("mnist", "test")
    return (x, y) if n is None else (x[:n], y[:n])


def _verify_rows(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 methods: list[str], crown_n: int) -> list[dict[str, Any]]:
    rows, union = [], torch.zeros(len(y), dtype=torch.bool)
    for method in methods:
        n = min(crown_n, len(y)) if method == "crown" else len(y)
        t0 = time.perf_counter()
        worst = margin_lower_bounds(model, x[:n], y[:n], eps, method=method,
                                    batch_size=64 if method == "crown" else 500).amin(1)
        ok = worst > 0
        rows.append({"method": method, "eps": eps, "n": n, "verified": float(ok.float().mean()),
                     "seconds": round(time.perf_counter() - t0, 1), "mean_margin": float(worst.mean())})
        union[:n] |= ok
        print(rows[-1], flush=True)
    rows.append({"method": "any", "eps": eps, "n": len(y), "verified": float(union.float().mean()),
                 "seconds": None})
    return rows


def cmd_verify(args: argparse.Namespace) -> None:
    """Verified accuracy per method and ε."""
    model = advlab.load_model(args.model)
    x, y = _data(args.n)
    clean = float((predict_logits(model, x).argmax(1) == y).float().mean())
    rows = [r for e in args.eps for r in _verify_rows(model, x, y, e, args.methods, args.crown_n)]
    meta = getattr(model, "advlab_meta", {})
    _save("verify", args.model, {
        "environment": environment(), "command": " ".join(["python benchmarks/certified.py", *sys.argv[1:]]),
        "n": len(y), "clean": clean, "rows": rows,
        "train": {k: meta.get(k) for k in ("command", "train_seconds", "acc1", "defense")},
    })


def _attacked(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float,
              **params: Any) -> tuple[torch.Tensor, float]:
    """Which examples stay correct on the attack's output, and the seconds it took."""
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    outs = []
    for i in range(0, len(x), 250):
        res = get_attack(attack)(model, x[i:i + 250], y[i:i + 250], advlab.ThreatModel("linf", eps),
                                 generator=gen, **params)
        outs.append(res.x_adv)
    x_adv = torch.cat(outs)
    if float((x_adv - x).abs().max()) > eps + 1e-6 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
        raise RuntimeError(f"{attack}: x_adv outside the ε-ball or the bounds")
    return predict_logits(model, x_adv).argmax(1) == y, time.perf_counter() - t0


def cmd_soundness(args: argparse.Namespace) -> None:
    """Certified examples against PGD with restarts and the APGD ensemble; fails on a violation."""
    model = advlab.load_model(args.model)
    x, y = _data(args.n)
    record: dict[str, Any] = {"environment": environment(), "n": len(y),
                              "command": " ".join(["python benchmarks/certified.py", *sys.argv[1:]]), "rows": []}
    for eps in args.eps:
        cert = verified(model, x, y, eps, method="ibp") | verified(model, x, y, eps, method="crown-ibp")
        pgd_ok, pgd_s = _attacked(model, x, y, "pgd", eps, steps=args.pgd_steps, restarts=args.pgd_restarts,
                                  step_size=eps / 4)
        ens_ok, ens_s = _attacked(model, x, y, "apgd-ensemble", eps)
        row = {"eps": eps, "pgd_steps": args.pgd_steps, "pgd_restarts": args.pgd_restarts, "certified": float(cert.float().mean()), "pgd": float(pgd_ok.float().mean()),
               "ensemble": float(ens_ok.float().mean()), "pgd_seconds": round(pgd_s), "ensemble_seconds": round(ens_s),
               "broken_certified_pgd": int((cert & ~pgd_ok).sum()), "broken_certified_ensemble": int((cert & ~ens_ok).sum())}
        record["rows"].append(row)
        print(row, flush=True)
        _save("soundness", args.model, record)
        if row["broken_certified_pgd"] or row["broken_certified_ensemble"]:
            raise SystemExit(f"UNSOUND: certified examples broken at eps={eps}: {row}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("verify", "soundness"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--eps", type=lambda t: [float(v) for v in t.split(",")], default=[0.1])
        s.add_argument("--n", type=int, default=None if name == "verify" else 1000)
        s.add_argument("--threads", type=int, default=1)
        if name == "soundness":
            s.add_argument("--pgd-steps", type=int, default=100)
            s.add_argument("--pgd-restarts", type=int, default=10)
        if name == "verify":
            s.add_argument("--methods", type=lambda t: t.split(","), default=["ibp", "crown-ibp", "crown"])
            s.add_argument("--crown-n", type=int, default=1000)
    sub.add_parser("render")
    args = p.parse_args()
    torch.set_num_threads(getattr(args, "threads", 1))
    if args.cmd == "verify":
        cmd_verify(args)
    elif args.cmd == "soundness":
        cmd_soundness(args)
    render(_load())


if __name__ == "__main__":
    main()
