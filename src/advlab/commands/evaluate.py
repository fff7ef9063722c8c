"""``advlab evaluate`` (the robustness table and report) and ``advlab report DIR``."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib
import torch

from advlab._checks import parse_budget
from advlab._device import DEVICE_CHOICES
from advlab._io import atomic_write_text, locked_directory
from advlab.commands.attack import fraction, parse_options
from advlab.commands.device import device_for
from advlab.commands.inputs import norm_word
from advlab.evaluation import DEFAULT_ATTACKS
from advlab.evaluation.defaults import NORM_ATTACKS
from advlab.evaluation.distributed import current_world, launched_size
from advlab.evaluation.engine import Evaluation, Plan, Settings, plan, run_plan
from advlab.evaluation.targeting import TARGETED
from advlab.models import load_model
from advlab.models.wrappers import wrap_defense
from advlab.report import format_comparison, render_report
from advlab.results import environment
from advlab.results.store import STORE_NAME
from advlab.train import command_line

# Keys a TOML config may set (the same as the flags), and the type each must have.
CONFIG_KEYS = ("model", "weights", "dataset", "data_dir", "attacks", "eps", "norm", "n", "batch_size", "seed", "out",
               "threads", "params", "defense", "checks", "baseline", "ensemble", "targeted", "certify", "device",
               "detector")
STRING_KEYS = ("model", "weights", "dataset", "data_dir", "norm", "out", "defense", "baseline", "targeted", "certify",
               "device", "detector")
INT_MINIMA = {"n": 1, "batch_size": 1, "seed": 0, "threads": 1}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``evaluate`` and ``report`` sub-commands."""
    p = sub.add_parser("evaluate", help="robustness table and report for a model against attacks over ε")
    p.add_argument("--model", default=None, help="pretrained name, checkpoint path, your factory "
                   "package.module:factory (or file.py:factory), or an .onnx file (default lenet-mnist)")
    p.add_argument("--weights", default=None, help="a factory model's .safetensors state dict (loaded strictly)")
    p.add_argument("--dataset", default=None,
                   help="dataset whose test split is used (default: the model's own, else mnist), or your images: "
                   "folder:PATH[:size=224] (PATH/CLASS/IMAGE) or npz:PATH (arrays x, y); streamed, never loaded whole")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--attacks", default=None, help=f"comma-separated (default {','.join(DEFAULT_ATTACKS)}; "
                   f"--norm l0: {','.join(NORM_ATTACKS['l0'])})")
    p.add_argument("--eps", default=None, help="comma-separated budgets, numbers or fractions like 8/255 "
                   "(default per norm, see docs/evaluation.md)")
    p.add_argument("--norm", default=None, type=norm_word, choices=("linf", "l2", "l1", "l0"),
                   help="default linf (l0: eps counts changed input elements)")
    p.add_argument("--n", type=int, default=None, help="first n test examples (default all)")
    p.add_argument("--batch-size", type=int, default=None, help="default 500")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 2; under torchrun OMP_NUM_THREADS, which torchrun sets to 1)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="an attack's parameter (JSON value), e.g. -o pgd.steps=100 -o cw.steps=200 (the TOML "
                        "config's params table; given here, it overrides the config's)")
    p.add_argument("--config", default=None, help="TOML file with the same keys; flags override it")
    p.add_argument("--out", default=None, help="output directory (default runs/evaluate-MODEL)")
    p.add_argument("--force", action="store_true", help="replace results of a different configuration in --out")
    p.add_argument("--defense", default=None,
                   help="evaluate the model behind an input-transformation defense, e.g. bitdepth:3, resize:22, "
                        "jpeg:75, median:3, gaussian:1")
    p.add_argument("--checks", default=None, action=argparse.BooleanOptionalAction,
                   help="gradient-masking checks and the adaptive attack when one fires (default on)")
    p.add_argument("--ensemble", default=None, action=argparse.BooleanOptionalAction,
                   help="the APGD ensemble at standard budgets at the largest eps when the model looks robust "
                        "(worst case > 0.05; default: on with the default attacks)")
    p.add_argument("--baseline", default=None,
                   help="also evaluate this model (e.g. the undefended lenet-mnist) with the same settings and show "
                        "its rows next to the model's (it is also the escalation's transfer surrogate)")
    p.add_argument("--targeted", default=None, choices=TARGETED,
                   help="run every attack in targeted mode towards a random other class, the least likely one, or "
                        "all other classes (each example once per class); success = classified as the target")
    p.add_argument("--certify", default=None, nargs="?", const="default", metavar="METHODS",
                   help="after the attacks, certify the same examples at every ε and show the proven lower bound "
                        "next to the attacked upper bound: ibp, crown-ibp, crown (linf), lipschitz, "
                        "smoothing[:sigma=S][:n=N] (comma-separated; alone: ibp,crown-ibp for linf, lipschitz for l2)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help=f"where the model computes: {DEVICE_CHOICES} (default auto: cuda when available, else cpu; "
                        "under torchrun cuda means each process's own GPU, cuda:LOCAL_RANK)")
    p.add_argument("--detector", default=None, metavar="SPEC",
                   help="the reject option: a detector NAME[:key=value...] fitted on the training split (threshold at "
                        "5%% FPR on held-out training images; saved as OUT/detector.safetensors), or "
                        "NAME:PATH.safetensors / PATH.safetensors fitted before; adds detection ROC-AUC, TPR, "
                        "clean rejection and defended accuracy per row (docs/evaluation.md)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("report", help="re-render report.md / report.html from DIR/results.sqlite alone")
    p.add_argument("dir")
    p.set_defaults(func=run_report)


def check_value(name: str, key: str, value: Any) -> None:
    """A one-line error unless ``value`` has the type of ``key`` (TOML ``true`` is no budget, ``"no"`` no boolean).

    Args:
        name: How the message names the value (``--config eval.toml: eps``, ``--threads``).
        key: The configuration key.
        value: The value read from the TOML file or the flag.
    """
    if key in STRING_KEYS:
        ok, expected = isinstance(value, str), "a string"
    elif key in INT_MINIMA:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= INT_MINIMA[key]
        expected = f"an integer >= {INT_MINIMA[key]}"
    elif key in ("checks", "ensemble"):
        ok, expected = isinstance(value, bool), "true or false"
    elif key == "attacks":
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(a, str) for a in value))
        expected = "attack names (a list of strings or one comma-separated string)"
    elif key == "eps":
        ok = isinstance(value, str) or _is_number(value) or (isinstance(value, list) and all(map(_is_number, value)))
        expected = "budgets (a list of numbers, a number or one comma-separated string)"
    else:  # params
        ok = isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
        expected = "a table of attack name = {parameter = value}"
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_config(path: str) -> dict[str, Any]:
    """Read a TOML config; unknown keys and values of the wrong type are an error."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config: {p} does not exist" if not p.exists() else f"--config: {p} is not a file")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config: {p} is not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"--config: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    for key, value in data.items():
        check_value(f"--config {p}: {key}", key, value)
    return data


def _items(name: str, v: Any, cast: Callable[[Any], Any]) -> list[Any] | None:
    """A list, a number or a comma-separated string as a list of ``cast`` values (validated types only)."""
    if v is None:
        return None
    items = v if isinstance(v, list) else [v] if _is_number(v) else [s.strip() for s in str(v).split(",") if s.strip()]
    try:
        return [cast(s) for s in items]
    except ValueError as e:  # (a cast's own message where it names the flag, e.g. a budget's)
        text = str(e) if str(e).startswith(f"{name}:") else f"{name}: expected a comma-separated list, got {v!r}"
        raise ValueError(text) from None


def default_threads() -> int:
    """Torch threads when none are given: 2, or under torchrun ``OMP_NUM_THREADS`` (torchrun sets 1) per process."""
    if launched_size() > 1:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    return 2


def with_options(params: dict[str, dict[str, Any]], options: list[str]) -> dict[str, dict[str, Any]]:
    """The params table with ``-o ATTACK.KEY=VALUE`` options set in it (a new table; the attacks check the keys)."""
    out = {attack.lower(): {k: fraction(v) if isinstance(v, str) else v for k, v in values.items()}  # ("1/255")
           for attack, values in params.items()}  # (names lower-cased as -o's: [params.PGD] and -o pgd.x meet)
    for key, value in parse_options(options, "-o").items():
        attack, dot, name = key.partition(".")
        if not (dot and attack and name):
            raise ValueError(f"-o: expected ATTACK.KEY=VALUE, e.g. -o pgd.steps=100, got {key!r}")
        out.setdefault(attack.lower(), {})[name] = value
    return out


def effective_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the TOML config, then the flags; every value type-checked."""
    cfg: dict[str, Any] = {"model": "lenet-mnist", "weights": None, "dataset": None, "data_dir": None,
                           "attacks": None, "eps": None, "norm": "linf", "n": None,
                           "batch_size": 500, "seed": 0, "out": None, "threads": default_threads(), "params": {},
                           "defense": None, "checks": True, "baseline": None, "ensemble": None, "targeted": None,
                           "certify": None, "device": "auto", "detector": None}
    if args.config:
        cfg.update(load_config(args.config))
    for key in CONFIG_KEYS:
        v = getattr(args, key, None)
        if v is not None:
            check_value(f"--{key.replace('_', '-')}", key, v)
            cfg[key] = v
    cfg["params"] = with_options(cfg["params"], getattr(args, "option", None) or [])
    cfg["attacks"] = _items("--attacks", cfg["attacks"], str)
    cfg["eps"] = _items("--eps", cfg["eps"], lambda t: parse_budget("--eps", t))
    if cfg["out"] is None:
        suffix = f"-{str(cfg['defense']).replace(':', '')}" if cfg["defense"] else ""
        suffix += f"-{Path(str(cfg['detector']).split(':')[0]).stem}" if cfg["detector"] else ""
        cfg["out"] = f"runs/evaluate-{Path(str(cfg['model'])).stem}{suffix}"
    return cfg


def plans(cfg: dict[str, Any], progress: bool, force: bool, command: str,
          device: torch.device | None = None) -> list[tuple[Plan, Settings]]:
    """The model's evaluation, then the baseline's (if any), each validated and planned: nothing is written yet."""
    model: Any = cfg["model"]
    name = str(cfg["model"])
    if cfg["weights"]:  # (a factory's weights: load_model refuses them for any other model)
        model = load_model(name, weights=str(cfg["weights"]))
    if cfg["defense"]:
        model = wrap_defense(model if cfg["weights"] else load_model(name), str(cfg["defense"]))
        name = f"{name}+{cfg['defense']}"
    common: dict[str, Any] = {
        "data": cfg["dataset"], "attacks": cfg["attacks"], "eps": cfg["eps"], "norm": cfg["norm"], "n": cfg["n"],
        "batch_size": cfg["batch_size"], "seed": cfg["seed"], "params": cfg["params"], "progress": progress,
        "force": force, "data_dir": cfg["data_dir"], "command": command, "checks": bool(cfg["checks"]),
        "ensemble": cfg["ensemble"], "targeted": cfg["targeted"], "certify": cfg["certify"],
        "device": device,
    }
    surrogate = str(cfg["baseline"]) if cfg["baseline"] else None
    settings = [Settings(model, out=cfg["out"], model_name=name, surrogate=surrogate, detector=cfg["detector"],
                         **common)]
    if cfg["baseline"]:
        base = str(cfg["baseline"])
        settings.append(Settings(base, out=Path(cfg["out"]) / "baseline", model_name=base, **common))
    return [(plan(s), s) for s in settings]


def run_evaluate(args: argparse.Namespace) -> int:
    """Validate everything, then (holding the lock of --out) run, save results.json/csv and config.json, render.

    The results are saved as soon as the rows exist: a failing baseline or report does not lose them.
    """
    cfg = effective_config(args)
    torch.set_num_threads(int(cfg["threads"]))
    t0 = time.perf_counter()
    command = command_line()
    device = device_for(str(cfg["device"]))
    world = current_world("nccl" if device.type == "cuda" else "gloo")
    planned = plans(cfg, not args.no_progress and world.rank == 0, args.force, command, device)
    out = Path(cfg["out"])
    if world.rank != 0:  # a torchrun worker: its share of the batches; rank 0 writes and shows the results
        for pl in planned:
            run_plan(*pl)
        return 0
    with locked_directory(out, arg="out", command=command):
        ev = run_plan(*planned[0])
        ev.save(out)
        atomic_write_text(out / "config.json", json.dumps(
            {"config": cfg, "evaluation": ev.config, "environment": environment(), "command": command},
            indent=2) + "\n")
        base = None
        if len(planned) > 1:
            base = run_plan(*planned[1])
            base.save(out / "baseline")
        md, html = render_report(out)
    if isinstance(ev, Evaluation) and isinstance(base, Evaluation):
        print(format_comparison(ev.rows, base.rows))
    else:  # (a dense task's rows have the task's columns: the baseline's table follows the model's)
        print(ev if base is None else f"{ev}\n\nbaseline {base.config['model']}:\n{base}")
    print(f"\n{len(ev.rows)} rows in {time.perf_counter() - t0:.1f} s → {out / 'results.json'}, {md}, {html}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Re-render the report from the store, holding the directory's lock (an evaluation writing it refuses this)."""
    d = Path(args.dir)
    if not (d / STORE_NAME).is_file():
        raise FileNotFoundError(f"dir: {d / STORE_NAME} does not exist (run `advlab evaluate --out {d}` first)")
    with locked_directory(d, arg="dir", command=command_line()):
        md, html = render_report(d)
    print(f"wrote {md} and {html}")
    return 0
