"""``advlab transfer``: the transferability matrix (table, heat-map, HTML); half-data models."""

from __future__ import annotations

import argparse
import json
import time

import torch

from advlab._checks import budget_type
from advlab._io import atomic_write_bytes, atomic_write_text
from advlab._paths import check_out_dir, check_out_file
from advlab.attacks import get_attack
from advlab.commands.device import add_device_argument, use_device
from advlab.commands.inputs import norm_word
from advlab.data import HALF_SPLIT_SEED, dataset_info, load_dataset
from advlab.evaluation.transfer import transfer_matrix
from advlab.models import check_input_shape, create_model, load_model, save_checkpoint
from advlab.threat import NORMS, ThreatModel
from advlab.train import TrainConfig, checkpoint_meta, command_line, train_half


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``transfer`` sub-command."""
    p = sub.add_parser(
        "transfer",
        help="transferability matrix: craft on each model, evaluate on every model",
        description=(
            "Craft adversarial examples on each differentiable model (white-box) and evaluate "
            "them on every model, including scikit-learn targets seen only through their predict "
            "function. Writes transfer.md, transfer.json, transfer.png and transfer.html to "
            "--out. With --train-half a|b, instead train one architecture on half a or b of the "
            "MNIST training split (disjoint halves) and write a checkpoint to --out."
        ),
    )
    p.add_argument(
        "--models",
        default="lenet-mnist,googlenet-mnist,mlp-mnist,lenet-mnist-half-a,lenet-mnist-half-b,"
        "sklearn-logreg",
        help="comma-separated: shipped names, checkpoint paths, sklearn-logreg (target only)",
    )
    p.add_argument("--attack", default="pgd", help="white-box attack run on each source")
    p.add_argument("--norm", default="linf", type=norm_word, choices=NORMS)
    p.add_argument("--eps", type=budget_type, default=0.3, help="budget, a number or a fraction like 8/255")
    p.add_argument("--steps", type=int, default=None, help="attack iterations (if it takes steps)")
    p.add_argument("--n", type=int, default=1000, help="first N MNIST test images (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", required=True, help="output dir (checkpoint path with --train-half)")
    p.add_argument("--train-half", choices=("a", "b"), default=None,
                   help="train --arch on MNIST training half a or b and save to --out")
    p.add_argument("--arch", default="lenet", help="architecture for --train-half")
    p.add_argument("--epochs", type=int, default=10, help="epochs for --train-half")
    add_device_argument(p)
    p.set_defaults(func=run)


def _train_half(args: argparse.Namespace) -> int:
    check_out_file("--out", args.out)
    create_model(args.arch)  # an unknown --arch fails here, with suggestions, before any training
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    result = train_half(args.train_half, arch=args.arch, config=config, device=use_device(args))
    info = dataset_info("mnist")
    arch_kwargs = {"in_shape": list(info.shape), "num_classes": info.num_classes}
    meta = checkpoint_meta(
        args.arch, arch_kwargs, "mnist", result, config, command_line(),
        train_subset=f"half {args.train_half} of MNIST train (30 000 images; permutation seed "
        f"{HALF_SPLIT_SEED}, advlab.data.half_indices)",
    )
    save_checkpoint(result.model, args.out, meta)
    print(f"{args.arch} on MNIST half {args.train_half}: test Acc@1 {result.acc1:.4f} "
          f"({result.seconds:.0f} s) -> {args.out}")
    return 0


def _to(model: object, device: torch.device) -> object:
    return model.to(device) if isinstance(model, torch.nn.Module) else model


def run(args: argparse.Namespace) -> int:
    """Build the matrix and write the table, JSON, heat-map and HTML page."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_half:
        return _train_half(args)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(names) < 2:
        raise ValueError(f"--models: expected at least two models, got {args.models!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"--models: expected distinct models, got {args.models!r}")
    if args.n < 1:
        raise ValueError(f"--n: expected an integer >= 1, got {args.n}")
    info = get_attack(args.attack)
    if info.kind != "white-box":
        raise ValueError(f"--attack: needs a white-box attack, got {args.attack!r} ({info.kind})")
    threat = ThreatModel(args.norm, args.eps)
    params = info.bind({"steps": args.steps} if args.steps is not None else {})
    out = check_out_dir("--out", args.out)
    device = use_device(args)
    x, y = load_dataset("mnist", "test")
    x, y = x[: args.n].to(device), y[: args.n].to(device)
    # loaded here, fresh objects: the torch models move to the device; scikit-learn black boxes stay on the CPU
    models = {name: _to(load_model(name), device) for name in names}
    for name, model in models.items():
        check_input_shape(model, x, name=name, source="mnist")
    t0 = time.perf_counter()
    mat = transfer_matrix(
        models, x, y, threat, attack=args.attack, seed=args.seed, batch_size=args.batch_size, **params,
    )
    out.mkdir(parents=True, exist_ok=True)
    record = json.loads(mat.to_json())  # the numbers first: a failing figure or page loses none of them
    record["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "transfer.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(out / "transfer.md", mat.to_markdown())
    png = mat.heatmap_png()
    atomic_write_bytes(out / "transfer.png", png)
    atomic_write_text(out / "transfer.html", mat.to_html(png))
    print(mat.to_markdown())
    print(f"wrote {out}/transfer.{{md,json,png,html}} ({record['seconds']} s)")
    return 0
