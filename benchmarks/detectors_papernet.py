"""The detectors on the papers' own MNIST network: does the network explain the gaps to the papers? (issue 16)

    python benchmarks/detectors_papernet.py --threads 1 --n 500 --clean 5000 --train-n 20000

Feinman et al.'s (and Ma et al.'s) MNIST classifier, rebuilt in torch from their released Keras code:
conv 64 3×3 - ReLU - conv 64 3×3 - ReLU - max-pool 2 - dropout 0.5 - dense 128 - ReLU - dropout 0.5 -
dense 10 (- softmax). Trained here by advlab.train.fit (Adam, lr 1e-3, batch 128, ``--epochs`` epochs on
the first ``--train-n`` training images, seed 0; the weights are cached under benchmarks/results/detectors/,
gitignored). BU samples the network's own dropout layers (no variant is trained). Everything else
is benchmarks/detectors.py's protocol (fit on the training split, one detector per attack, AUC of
adversarial vs clean + noisy on test images), for FGSM, BIM-A and BIM-B at ε = 0.3 (C&W, PGD and
DeepFool are left out for time). Writes benchmarks/results/detectors-papernet.json, which
benchmarks/detectors.py puts into its docs/defenses.md section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detectors as bench
from _doc import environment

from advlab.data import load_dataset
from advlab.metrics import clean_accuracy
from advlab.train import TrainConfig, fit

SPECS = {"KD": "kdbu:use=kd", "BU": "kdbu:use=bu", "KD+BU": "kdbu", "LID": "lid"}


def paper_net() -> nn.Sequential:
    """Feinman et al.'s MNIST CNN (their detect/util.py ``get_model('mnist')``), softmax left to the loss."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )


def trained(epochs: int, n: int) -> tuple[nn.Module, float, float]:
    """The network trained on MNIST's first ``n`` training images (cached), its test Acc@1 and the training seconds."""
    path = bench.CACHE / f"papernet-{epochs}ep-{n}.safetensors"
    net = paper_net()
    xtr, ytr = load_dataset("mnist", "train")
    xte, yte = load_dataset("mnist", "test")
    seconds = 0.0
    if path.exists():
        net.load_state_dict(load_file(str(path)))
    else:
        start = time.perf_counter()
        fit(net, (xtr[:n], ytr[:n]), None, TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=0), progress=False)
        seconds = time.perf_counter() - start
        bench.CACHE.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    net.eval().requires_grad_(False)
    return net, clean_accuracy(net, xte, yte)[0], seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fit and score each detector per attack on the papers' network."""
    net, acc, train_s = trained(args.epochs, args.train_n)
    print(f"paper net: test Acc@1 {acc:.4f}, trained in {train_s:.0f} s", flush=True)
    xtr, ytr = load_dataset("mnist", "train")
    xte, yte = load_dataset("mnist", "test")
    x_clean = xtr[: args.clean]
    x_fit, y_fit = xtr[args.clean : args.clean + args.n], ytr[args.clean : args.clean + args.n]
    rows = []
    for attack in ("fgsm", "bim-a", "bim-b"):
        fit_set = bench.sets(net, attack, "train", x_fit, y_fit, tag=f"papernet-{args.epochs}ep-{args.train_n}-")
        test_set = bench.sets(net, attack, "test", xte[: args.n], yte[: args.n], tag=f"papernet-{args.epochs}ep-{args.train_n}-")
        for label, spec in SPECS.items():
            r = bench.evaluate(net, spec, x_clean, fit_set, test_set)
            r.update(attack=attack, detector=label, n_pos_test=test_set["n_pos"], adv_conf=test_set["adv_conf"],
                     paper=bench.PAPER.get((label, attack)))
            rows.append(r)
            print(f"{attack:6s} {label:6s} AUC {r['auc']:.2f} (paper {r['paper']})", flush=True)
    return {"environment": environment(), "args": vars(args), "acc1": acc, "train_s": train_s, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=500, help="test images, and training images attacked for fitting")
    p.add_argument("--clean", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-n", type=int, default=20000, help="training images the network is trained on")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    record = run(args)
    record["seconds"] = time.perf_counter() - start
    out = bench.ROOT / "benchmarks" / "results" / "detectors-papernet.json"
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
