"""The detectors on the papers' own MNIST network: does the network explain the gaps to the papers? (issue 16)

    python benchmarks/detectors_papernet.py --threads 1 --n 500 --clean 5000 --train-n 20000
    python benchmarks/detectors_papernet.py --threads 1 --recipe papers --epochs 8 --train-n 60000 --eps 0.4

Feinman et al.'s (and Ma et al.'s) MNIST classifier, rebuilt in torch from their released Keras code:
conv 64 3×3 - ReLU - conv 64 3×3 - ReLU - max-pool 2 - dropout 0.5 - dense 128 - ReLU - dropout 0.5 -
dense 10 (- softmax). Trained here by advlab.train.fit (Adam, lr 1e-3, batch 128, ``--epochs`` epochs on
the first ``--train-n`` training images, seed 0; the weights are cached under benchmarks/results/detectors/,
gitignored). ``--recipe papers`` trains it as the papers' released code does instead (Keras initialisation,
Adadelta lr 1.0, batch 128, inputs in [−0.5, 0.5]; see :func:`train_papers_way`). ``--eps``, ``--noise`` and
``--positives`` are benchmarks/detectors.py's options. BU samples the network's own dropout layers (no variant is trained). Everything else
is benchmarks/detectors.py's protocol (fit on the training split, one detector per attack, AUC of
adversarial vs clean + noisy on test images), for FGSM, BIM-A and BIM-B at ε = 0.3 (C&W, PGD and
DeepFool are left out for time). Writes benchmarks/results/detectors-papernet[-papers-<E>ep][-<settings>].json,
which benchmarks/detectors.py (--doc-only) puts into its docs/defenses.md section.
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
from detectors_doc import variant_name

from advlab.data import load_dataset
from advlab.detect import make_detector
from advlab.metrics import clean_accuracy
from advlab.train import TrainConfig, fit

SPECS = {"KD": "kdbu:use=kd", "BU": "kdbu:use=bu", "KD+BU": "kdbu", "LID": "lid",
         "KD (σ 3.79)": "kdbu:use=kd:bandwidth=3.7926",  # Ma et al.'s code's MNIST bandwidth (Feinman's: 1.20)
         "LID (k 80)": "lid:k=80"}  # k: the code's default is 20; its output paths name a grid search over k


class _Centre(nn.Module):
    """Shift [0, 1] images to [−0.5, 0.5], the range Ma et al.'s released code trains and attacks in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5


def paper_net(centred: bool = False) -> nn.Sequential:
    """Feinman et al.'s MNIST CNN (their detect/util.py ``get_model('mnist')``), softmax left to the loss.

    ``centred`` puts a fixed shift by −0.5 first (Ma et al.'s code feeds images in [−0.5, 0.5]); the
    network still takes [0, 1] images, so ε stays in [0, 1] pixel units (the same units as theirs).
    """
    layers: list[nn.Module] = [_Centre()] if centred else []
    return nn.Sequential(
        *layers, nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )


def _keras_init(net: nn.Module, gen: torch.Generator) -> None:
    """Keras 2's defaults: Glorot-uniform weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 2 * bound - bound)
                m.bias.zero_()


def _state(net: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The weights and the optimiser's accumulators, so training resumes from a cached epoch exactly."""
    out = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    for i, p in enumerate(net.parameters()):
        out.update({f"opt.{i}.{k}": torch.as_tensor(v).contiguous() for k, v in opt.state[p].items()})
    return out


def _load_state(net: nn.Module, opt: torch.optim.Optimizer, state: dict[str, torch.Tensor]) -> None:
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("opt.")})
    for i, p in enumerate(net.parameters()):
        opt.state[p] = {k.split(".")[2]: v.clone() for k, v in state.items() if k.startswith(f"opt.{i}.")}


def train_papers_way(epochs: int, n: int) -> tuple[nn.Module, list[dict[str, float]]]:
    """The papers' recipe: Keras init, Adadelta (lr 1.0, ρ 0.95), batch 128, cross-entropy, shuffled
    ``n`` training images, inputs centred; a checkpoint per epoch (cached), so ``epochs`` = e reuses e's.

    Returns the network after ``epochs`` epochs and a log of (epoch, seconds, test Acc@1) per epoch trained now.
    """
    xtr, ytr = load_dataset("mnist", "train")
    xte, yte = load_dataset("mnist", "test")
    net = paper_net(centred=True)
    gen = torch.Generator().manual_seed(0)
    _keras_init(net, gen)
    opt = torch.optim.Adadelta(net.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    log: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen)  # drawn every epoch, so a cached epoch keeps the stream in step
        path = bench.CACHE / f"papernet-papers-{epoch}ep-{n}.safetensors"
        if path.exists():
            _load_state(net, opt, load_file(str(path)))
            continue
        start = time.perf_counter()
        net.train()
        with torch.random.fork_rng():
            torch.manual_seed(epoch)  # the dropout masks (the checkpoints measured on 2026-12-07 predate this seed)
            for i in range(0, n, 128):
                idx = order[i : i + 128]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
                opt.step()
        net.eval()
        log.append({"epoch": epoch, "seconds": time.perf_counter() - start, "acc1": clean_accuracy(net, xte, yte)[0]})
        print(f"papers' recipe: epoch {epoch} {log[-1]['seconds']:.0f} s, test Acc@1 {log[-1]['acc1']:.4f}", flush=True)
        bench.CACHE.mkdir(parents=True, exist_ok=True)
        save_file(_state(net, opt), str(path))
    return net, log


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


def network(args: argparse.Namespace) -> tuple[nn.Module, float, float, str]:
    """The network ``args`` asks for (``--recipe``), its test Acc@1, training seconds (0 if cached) and cache tag."""
    if args.recipe == "papers":
        net, log = train_papers_way(args.epochs, args.train_n)
        net.eval().requires_grad_(False)
        xte, yte = load_dataset("mnist", "test")
        return (net, clean_accuracy(net, xte, yte)[0], sum(e["seconds"] for e in log),
                f"papernet-papers-{args.epochs}ep-{args.train_n}-")
    net, acc, train_s = trained(args.epochs, args.train_n)
    return net, acc, train_s, f"papernet-{args.epochs}ep-{args.train_n}-"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fit and score each detector per attack on the papers' network."""
    start = time.perf_counter()
    net, acc, train_s, tag = network(args)
    print(f"paper net: test Acc@1 {acc:.4f}, trained in {train_s:.0f} s", flush=True)
    xtr, ytr = load_dataset("mnist", "train")
    xte, yte = load_dataset("mnist", "test")
    x_clean = xtr[: args.clean]
    n_fit = args.n_fit or args.n
    x_fit, y_fit = xtr[args.clean : args.clean + n_fit], ytr[args.clean : args.clean + n_fit]
    specs = {label: SPECS[label] for label in args.detectors.split(",")} if args.detectors else SPECS
    options = {"eps": args.eps, "noise": args.noise, "positives": args.positives}
    rows, per_layer = [], {}
    attacks = args.attacks.split(",")
    for attack in attacks:
        fit_set = bench.sets(net, attack, "train", x_fit, y_fit, tag=tag, **options)
        test_set = bench.sets(net, attack, "test", xte[: args.n], yte[: args.n], tag=tag, **options)
        if args.lid_protocol:
            gen = torch.Generator().manual_seed(bench.SEED)
            per_layer[attack] = bench.layer_aucs(net, x_clean[torch.randperm(len(x_clean), generator=gen)[:100]], test_set)
        for label, spec in specs.items():
            r = bench.evaluate(net, spec, x_clean, fit_set, test_set)
            r.update(attack=attack, detector=label, n_pos_test=test_set["n_pos"], adv_conf=test_set["adv_conf"],
                     paper=bench.PAPER.get((label, attack)), median_l2=test_set["median_l2"],
                     fooled_rate=test_set["fooled_rate"], n_correct_test=test_set["n_correct"])
            if spec.startswith("lid") and args.lid_protocol:
                det = make_detector(spec).fit(net, x_clean[:200], fit_set["adv"][:10])
                r["lid_protocol"] = bench.lid_protocol(net, det.layers.tolist(), test_set, det.k)
            rows.append(r)
            print(f"{attack:6s} {label:6s} AUC {r['auc']:.2f} (paper {r['paper']}) {r.get('lid_protocol', '')}", flush=True)
        save({"environment": environment(), "args": vars(args), "acc1": acc, "train_s": train_s, "rows": rows,
              "per_layer": per_layer, "seconds": time.perf_counter() - start, "partial": attack != attacks[-1]})
    return {"environment": environment(), "args": vars(args), "acc1": acc, "train_s": train_s, "rows": rows,
            "per_layer": per_layer}


def save(record: dict[str, Any]) -> None:
    """Write the record to benchmarks/results/detectors-papernet[-papers-<E>ep][-<settings>].json."""
    a = record["args"]
    suffix = "" if a["recipe"] == "adam" else f"-papers-{a['epochs']}ep"
    out = bench.ROOT / "benchmarks" / "results" / f"detectors-papernet{suffix}{variant_name(a)}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=500, help="test images, and training images attacked for fitting")
    p.add_argument("--clean", type=int, default=10000)
    p.add_argument("--attacks", default="fgsm,bim-a,bim-b", help="in the order run (a record is saved after each)")
    p.add_argument("--n-fit", type=int, default=0, help="training images attacked for fitting (default: --n)")
    p.add_argument("--recipe", choices=["adam", "papers"], default="adam",
                   help="adam: advlab.train.fit; papers: their code's Keras init + Adadelta, inputs centred")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-n", type=int, default=20000, help="training images the network is trained on")
    p.add_argument("--eps", type=float, default=0.3, help="ε of FGSM and BIM (Ma et al.'s code: 0.4)")
    p.add_argument("--noise", choices=["l2", *bench.NOISE], default="l2")
    p.add_argument("--positives", choices=["successful", "all"], default="successful")
    p.add_argument("--detectors", default="", help="comma-separated row labels (default: all of SPECS)")
    p.add_argument("--lid-protocol", action="store_true", help="also LID as Ma et al.'s code fits and scores it")
    p.add_argument("--train-only", action="store_true", help="train (and cache) the network, nothing else")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.train_only:
        print(f"test Acc@1 {network(args)[1]:.4f}")
        return
    start = time.perf_counter()
    record = run(args)
    record["seconds"] = time.perf_counter() - start
    save(record)


if __name__ == "__main__":
    main()
