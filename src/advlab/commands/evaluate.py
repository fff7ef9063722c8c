"""``advlab evaluate`` (the robustness table and report) and ``advlab report DIR``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import tomllib
import torch

from advlab._io import atomic_write_text
from advlab.evaluation import DEFAULT_ATTACKS, evaluate
from advlab.models import load_model
from advlab.models.wrappers import wrap_defense
from advlab.report import format_comparison, render_report
from advlab.results import environment
from advlab.train import command_line

# Keys a TOML config may set (the same as the flags).
CONFIG_KEYS = ("model", "dataset", "data_dir", "attacks", "eps", "norm", "n", "batch_size", "seed", "out",
               "threads", "params", "defense", "checks", "baseline")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``evaluate`` and ``report`` sub-commands."""
    p = sub.add_parser("evaluate", help="robustness table and report for a model against attacks over ε")
    p.add_argument("--model", default=None, help="pretrained name or checkpoint path (default lenet-mnist)")
    p.add_argument("--dataset", default=None, help="dataset whose test split is used (default mnist)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--attacks", default=None, help=f"comma-separated (default {','.join(DEFAULT_ATTACKS)})")
    p.add_argument("--eps", default=None, help="comma-separated budgets (default per norm, see docs/evaluation.md)")
    p.add_argument("--norm", default=None, choices=("linf", "l2", "l1"), help="default linf")
    p.add_argument("--n", type=int, default=None, help="first n test examples (default all)")
    p.add_argument("--batch-size", type=int, default=None, help="default 500")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    p.add_argument("--config", default=None, help="TOML file with the same keys; flags override it")
    p.add_argument("--out", default=None, help="output directory (default runs/evaluate-MODEL)")
    p.add_argument("--force", action="store_true", help="replace results of a different configuration in --out")
    p.add_argument("--defense", default=None,
                   help="evaluate the model behind an input-transformation defense, e.g. bitdepth:3, resize:22, "
                        "jpeg:75, median:3, gaussian:1")
    p.add_argument("--checks", default=None, action=argparse.BooleanOptionalAction,
                   help="gradient-masking checks and the adaptive attack when one fires (default on)")
    p.add_argument("--baseline", default=None,
                   help="also evaluate this model (e.g. the undefended lenet-mnist) with the same settings and show "
                        "its rows next to the model's")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("report", help="re-render report.md / report.html from DIR/results.sqlite alone")
    p.add_argument("dir")
    p.set_defaults(func=run_report)


def load_config(path: str) -> dict[str, Any]:
    """Read a TOML config; unknown keys are an error."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--config: {p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config: {p} is not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"--config: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    return data


def _split(v: Any, cast: type) -> list[Any] | None:
    if v is None:
        return None
    items = v if isinstance(v, list) else [s for s in str(v).split(",") if s.strip()]
    try:
        return [cast(s.strip() if isinstance(s, str) else s) for s in items]
    except ValueError:
        raise ValueError(f"expected a comma-separated list, got {v!r}") from None


def effective_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the TOML config, then the flags."""
    cfg: dict[str, Any] = {"model": "lenet-mnist", "dataset": "mnist", "data_dir": None,
                           "attacks": list(DEFAULT_ATTACKS), "eps": None, "norm": "linf", "n": None,
                           "batch_size": 500, "seed": 0, "out": None, "threads": 2, "params": {},
                           "defense": None, "checks": True, "baseline": None}
    if args.config:
        cfg.update(load_config(args.config))
    for key in CONFIG_KEYS:
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
    cfg["attacks"] = _split(cfg["attacks"], str)
    try:
        cfg["eps"] = _split(cfg["eps"], float)
    except ValueError as e:
        raise ValueError(f"--eps: {e}") from None
    if cfg["out"] is None:
        suffix = f"-{str(cfg['defense']).replace(':', '')}" if cfg["defense"] else ""
        cfg["out"] = f"runs/evaluate-{Path(str(cfg['model'])).stem}{suffix}"
    return cfg


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation, save results.json/csv and config.json, render the report, print the table."""
    cfg = effective_config(args)
    torch.set_num_threads(int(cfg["threads"]))
    t0 = time.perf_counter()
    model: Any = cfg["model"]
    name = str(cfg["model"])
    if cfg["defense"]:
        model = wrap_defense(load_model(name), str(cfg["defense"]))
        name = f"{name}+{cfg['defense']}"
    ev = evaluate(
        model, cfg["dataset"], cfg["attacks"], cfg["eps"], norm=cfg["norm"], n=cfg["n"],
        batch_size=cfg["batch_size"], seed=cfg["seed"], out=cfg["out"], params=cfg["params"],
        progress=not args.no_progress, force=args.force,
        model_name=name, data_dir=cfg["data_dir"], command=command_line(), checks=bool(cfg["checks"]),
    )
    out = Path(cfg["out"])
    ev.save(out)
    if cfg["baseline"]:
        base_dir = out / "baseline"
        base = evaluate(
            str(cfg["baseline"]), cfg["dataset"], cfg["attacks"], cfg["eps"], norm=cfg["norm"], n=cfg["n"],
            batch_size=cfg["batch_size"], seed=cfg["seed"], out=base_dir, params=cfg["params"],
            progress=not args.no_progress, force=args.force, model_name=str(cfg["baseline"]),
            data_dir=cfg["data_dir"], command=command_line(), checks=bool(cfg["checks"]),
        )
        base.save(base_dir)
    atomic_write_text(out / "config.json", json.dumps(
        {"config": cfg, "evaluation": ev.config, "environment": environment(), "command": command_line()},
        indent=2) + "\n")
    md, html = render_report(out)
    if cfg["baseline"]:
        print(format_comparison(ev.rows, base.rows))
    else:
        print(ev)
    print(f"\n{len(ev.rows)} rows in {time.perf_counter() - t0:.1f} s → {out / 'results.json'}, {md}, {html}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Re-render the report from the store."""
    md, html = render_report(args.dir)
    print(f"wrote {md} and {html}")
    return 0
