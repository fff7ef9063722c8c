"""``advlab attacks`` (list the registry) and ``advlab attack`` (attack the first n test images)."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any, cast

import torch
from safetensors.torch import save

from advlab._checks import budget_type, parse_budget
from advlab._io import atomic_write_bytes, atomic_write_text
from advlab._paths import check_out_dir
from advlab.attacks import AttackInfo, choose_targets, get_attack, list_attacks
from advlab.commands.device import add_device_argument, use_device
from advlab.commands.inputs import add_model_arguments, model_and_images, norm_word
from advlab.metrics import acc_at_k, predict_logits
from advlab.report.figures import adversarial_grid
from advlab.threat import NORMS, Norm, ThreatModel


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``attacks`` and ``attack`` sub-commands."""
    p = sub.add_parser("attacks", help="list registered attacks (wildcards allowed)")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=run_list)

    p = sub.add_parser("attack", help="attack the first n test images and save x_adv and a PNG grid")
    add_model_arguments(p, model_default="lenet-mnist")
    p.add_argument("--attack", required=True)
    p.add_argument("--norm", default=None, type=norm_word, choices=NORMS, help="default: the attack's first norm")
    p.add_argument("--eps", type=budget_type, default=None,
                   help="budget, a number or a fraction like 8/255 (default 0.3 L∞ / 2.0 L2; inf for minimal attacks)")
    p.add_argument("--targeted", choices=("random", "least-likely"), default=None)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--option", "--param", dest="param", action="append", default=[], metavar="KEY=VALUE",
                   help="attack parameter (JSON value), e.g. -o steps=40 -o step_size=0.01 (also --param, as the "
                        "other commands' -o)")
    p.add_argument("--out", required=True)
    add_device_argument(p)
    p.set_defaults(func=run_attack)


def run_list(args: argparse.Namespace) -> int:
    """Print the registry."""
    print(f"{'name':<14} {'task':<15} {'kind':<15} {'norms':<16} {'targeted':<9} {'minimal':<8} paper")
    for name in list_attacks(args.pattern, task=None):
        a = get_attack(name)
        print(f"{name:<14} {a.task:<15} {a.kind:<15} {','.join(a.norms):<16} {a.targeted!s:<9} {a.minimal!s:<8} "
              f"{a.paper.split(',')[0]}")
    return 0


def parse_options(items: list[str], flag: str = "--param") -> dict[str, Any]:
    """``["steps=40", "loss=ce", "eps=8/255"]`` → ``{"steps": 40, "loss": "ce", "eps": 0.0313…}``.

    Values are parsed as JSON where they are, a fraction of numbers as its quotient, anything else kept as text.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = fraction(value)
    return out


FRACTION = re.compile(r"^\s*[0-9.]+(e[-+]?\d+)?\s*/\s*[0-9.]+(e[-+]?\d+)?\s*$", re.IGNORECASE)


def fraction(value: str) -> Any:
    """``8/255`` as the number it is, as the --eps flags read budgets; any other text as it is."""
    if FRACTION.match(value):
        try:
            return parse_budget("-o", value)
        except ValueError:
            return value
    return value


def _threat(args: argparse.Namespace, info: AttackInfo) -> tuple[str, ThreatModel]:
    norm = args.norm or info.norms[0]
    eps = args.eps
    if eps is None:
        eps = float("inf") if info.minimal else {"linf": 0.3, "l2": 2.0, "l1": 10.0, "l0": 20.0}[norm]
    return norm, ThreatModel(cast(Norm, norm), eps, targeted=args.targeted is not None)


def run_attack(args: argparse.Namespace) -> int:
    """Attack, report Acc@1/Acc@5 and success, save x_adv (safetensors) and a PNG grid (each file atomically).

    Every argument is checked (names, --out, the model against the data, the threat model, the
    attack's parameters and inputs) before the attack runs and before anything is written.
    """
    info = get_attack(args.attack)
    out = check_out_dir("--out", args.out)
    params = info.bind(parse_options(args.param))
    norm, threat = _threat(args, info)
    device = use_device(args)
    model, dataset, x, y = model_and_images(args, args.n)
    x, y = x.to(device), y.to(device)
    if isinstance(model, torch.nn.Module):  # loaded here, a fresh object: moving it changes nothing of the caller's
        model = model.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    target = choose_targets(model, x, y, args.targeted, generator=gen) if args.targeted else None
    info.check_inputs(model, x, y, threat, target)
    t0 = time.perf_counter()
    res = info(model, x, y, threat, target=target, generator=gen, **params)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "x_adv.safetensors",
                       save({"x_adv": res.x_adv.contiguous().cpu(), "y": y.cpu(), "success": res.success.cpu()}))
    logits = predict_logits(model, res.x_adv)
    clean = predict_logits(model, x)
    summary = {
        "attack": info.name, "model": args.model, "dataset": dataset, "norm": norm, "eps": threat.eps, "n": len(y),
        "targeted": args.targeted, "acc1_clean": acc_at_k(clean, y, 1), "acc5_clean": acc_at_k(clean, y, 5),
        "acc1_adv": acc_at_k(logits, y, 1), "acc5_adv": acc_at_k(logits, y, 5),
        "success_rate": float(res.success.float().mean()), "seconds": seconds, "seed": args.seed,
    }
    if target is not None:
        summary["target_hit_rate"] = float((logits.argmax(1) == target).float().mean())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    grid = adversarial_grid(x.cpu(), res.x_adv.cpu(), y.cpu(), clean.argmax(1).cpu(), logits.argmax(1).cpu())
    atomic_write_bytes(out / "grid.png", grid)
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'x_adv.safetensors'}, {out / 'grid.png'}, {out / 'summary.json'}")
    return 0

