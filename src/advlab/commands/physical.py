"""``advlab physical``: attack a traffic sign in the simulated physical world and run the lab test.

``advlab physical --attack rp2 --model signnet-signs`` crafts RP2's sticker on the stop sign
(target ``speed-80``) and, next to it, the single-view PGD baseline; photographs the clean and
both attacked signs at every cell of the lab grid (width × viewing angle × light) in front of
held-out backgrounds; and writes results.json, report.md and report.html (with example views for
every cell) into ``--out``. ``-o KEY=VALUE`` sets an option of the attack (``-o steps=300``);
``-o pgd.KEY=VALUE`` one of the baseline next to it (``-o pgd.region=sign``). ``--widths``,
``--angles`` and ``--lights`` restrict the grid to a subset of its values (a quick run).

``--attack patch|uap|print-photo`` runs the attacks on whole images instead (:mod:`advlab.lab.images`):
crafted on ``--craft`` images of the model's training split, measured on ``--n`` held-out test
images, with ``-o KEY=VALUE`` their options (``-o target=speed-80 -o size_fraction=0.1``).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from advlab._io import locked_directory
from advlab._paths import check_out_dir
from advlab.commands.attack import parse_options
from advlab.commands.device import add_device_argument, use_device
from advlab.commands.inputs import MODEL_HELP, WEIGHTS_HELP
from advlab.data import load_dataset
from advlab.data.sign_art import SIGN_CLASSES, all_signs
from advlab.evaluation.inputs import model_dataset
from advlab.lab import COMPARE, CRAFTERS, LabSetup, choose_grid, run_lab
from advlab.lab.backgrounds import lab_backgrounds
from advlab.lab.images import IMAGE_STUDIES, Study
from advlab.models import load_model
from advlab.report.physical import terminal, write_report
from advlab.report.physical_images import image_report, image_terminal
from advlab.train import command_line


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``physical`` sub-command."""
    p = sub.add_parser("physical", help="attack a traffic sign in simulation and run the lab test (distance × angle "
                                        "× light)")
    p.add_argument("--attack", required=True, choices=(*CRAFTERS, *IMAGE_STUDIES),
                   help="rp2 (a sticker crafted with EOT; the single-view PGD baseline runs next to it) or pgd on the "
                        "lab grid; patch (universal patch), uap (universal perturbation) or print-photo on images")
    p.add_argument("--model", default="signnet-signs", help="the classifier (default signnet-signs; the lab grid "
                                                            "needs a classifier of the signs): " + MODEL_HELP)
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--craft", type=int, default=2000, help="patch/uap: crafting images from the training split "
                                                          "(default 2000)")
    p.add_argument("--n", type=int, default=1000, help="patch/uap/print-photo: held-out test images (default 1000)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="attack option (JSON value), e.g. -o steps=300 -o lr=0.05; the baseline's as -o pgd.KEY=VALUE")
    p.add_argument("--source", default="stop", help="the attacked sign (default stop)")
    p.add_argument("--target", default="speed-80", help="what it should be read as (default speed-80)")
    p.add_argument("--draws", type=int, default=3, help="held-out draws per lab cell (default 3)")
    p.add_argument("--backgrounds", type=int, default=10, help="held-out backgrounds per draw (default 10)")
    p.add_argument("--train-backgrounds", type=int, default=512, help="training backgrounds for crafting (default 512)")
    p.add_argument("--widths", default=None, metavar="W1,W2,...", help="a subset of the lab widths (40,32,24,16)")
    p.add_argument("--angles", default=None, metavar="A1,A2,...", help="a subset of the lab angles (0,15,30,45)")
    p.add_argument("--lights", default=None, metavar="L1,L2,...", help="a subset of the lab lights (0.6,1,1.4)")
    p.add_argument("--seed", type=int, default=0, help="seed of crafting and of the lab's camera noise")
    p.add_argument("--batch-size", type=int, default=256, help="views rendered and classified at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="physical-report", help="output directory (default physical-report)")
    add_device_argument(p)
    p.set_defaults(func=run)


def parse_values(flag: str, text: str | None) -> list[float] | None:
    """``"40,16"`` → ``[40.0, 16.0]``; None stays None."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def split_options(attack: str, items: list[str]) -> dict[str, dict[str, Any]]:
    """``-o`` items by the attack they set: plain keys the attack's, ``NAME.KEY`` a baseline's."""
    out: dict[str, dict[str, Any]] = {attack: {}}
    for key, value in parse_options(items, "-o/--option").items():
        name, dot, rest = key.partition(".")
        if not dot:
            out[attack][key] = value
            continue
        if name not in COMPARE.get(attack, ()):
            runs = ", ".join(COMPARE.get(attack, ())) or "none"
            raise ValueError(f"-o {key}: {name!r} is not a baseline of {attack} (baselines: {runs})")
        out.setdefault(name, {})[rest] = value
    return out


def _model_classes(model: Any) -> None:
    """Refuse a model whose output is not the signs' classes (one line)."""
    with torch.no_grad():
        k = model(torch.zeros(1, 3, 48, 48)).shape[-1]
    if k != len(SIGN_CLASSES):
        raise ValueError(f"--model: expected a classifier of the {len(SIGN_CLASSES)} signs classes (3×48×48 inputs), "
                         f"got {k} outputs")


def _counts_and_model(args: argparse.Namespace, flags: tuple[str, ...]) -> tuple[torch.device, torch.nn.Module]:
    """Check the count flags (each >= 1), set the threads, and load the model onto ``--device``."""
    for flag in flags:
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: expected an integer >= 1, got {getattr(args, flag)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args)
    return device, load_model(args.model, weights=args.weights).to(device)


def run_images(args: argparse.Namespace) -> int:
    """An attack on whole images (patch, uap, print-photo): craft on training images, measure on test images."""
    out = check_out_dir("--out", args.out)
    options = parse_options(args.option, "-o/--option")
    device, model = _counts_and_model(args, ("craft", "n"))
    dataset = model_dataset(model)
    classes = SIGN_CLASSES if dataset == "signs" else [str(k) for k in range(10)]
    (xc, yc), (xt, yt) = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    study = Study(model, classes, xc[:args.craft].to(device), yc[:args.craft].to(device), xt[:args.n].to(device),
                  yt[:args.n].to(device), seed=args.seed)
    command = command_line()
    with locked_directory(out, arg="out", command=command) as d:
        o = IMAGE_STUDIES[args.attack](study, options)
        summary = {"attack": args.attack, "model": args.model, "dataset": dataset, "seed": args.seed,
                   "craft_images": len(study.x_craft), "test_images": len(study.x_test), "title": o.title,
                   "verdict": o.verdict, "settings": o.settings,
                   "tables": [{"title": t, "head": h, "rows": r} for t, h, r in o.tables]}
        paths = image_report(d, summary, o.examples, command)
    print(image_terminal(summary))
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Craft, run the lab test and write the report."""
    if args.attack in IMAGE_STUDIES:
        return run_images(args)
    out = check_out_dir("--out", args.out)
    options = split_options(args.attack, args.option)
    grid = choose_grid(parse_values("--widths", args.widths), parse_values("--angles", args.angles),
                       parse_values("--lights", args.lights))
    device, model = _counts_and_model(args, ("draws", "backgrounds", "train_backgrounds"))
    _model_classes(model)
    setup = LabSetup(model, SIGN_CLASSES, all_signs().to(device), args.source, args.target,
                     lab_backgrounds("train", args.train_backgrounds).to(device),
                     lab_backgrounds("test", args.backgrounds).to(device),
                     draws=args.draws, grid=grid, seed=args.seed, batch_size=args.batch_size)
    setup.scene()  # class names checked before any work
    command = command_line()
    with locked_directory(out, arg="out", command=command) as d:
        outcome = run_lab(setup, args.attack, options)
        summary = {"model": args.model, **outcome.summary}
        paths = write_report(d, summary, outcome.examples, outcome.signs, command)
    print(terminal(summary))
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
