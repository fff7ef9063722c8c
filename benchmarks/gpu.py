"""advlab on a CUDA GPU: PGD-40, APGD and CW timed against torchattacks on the same GPU, decisions vs the CPU.

For each case, on the same model, images and settings:

* advlab on the GPU, with its fast view on (the default) and off, and torchattacks on the GPU:
  median wall time of ``--repeats`` runs (after one warm-up), with ``torch.cuda.synchronize``
  around each run, and the Acc@1 each leaves;
* advlab on the CPU (``--threads`` threads, once): the decision per image (fooled or not) compared
  with the GPU run's: how many images the two runs decide differently, and the largest difference
  between the two x_adv. The CUDA run uses :func:`advlab._device.setup_cuda_determinism` (TF32 off,
  deterministic cuDNN), so the GPU computes in float32 as the CPU does; differences left come from
  the order of floating-point sums.

Run it where a GPU is (``python benchmarks/gpu.py --n 1000``); it writes the ``gpu`` section of
docs/benchmarks.md. Without a GPU it exits with a one-line message (status 2), writing nothing;
``--record-unavailable`` writes a section saying the benchmark was not run, and why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab._device import resolve_device, setup_cuda_determinism
from advlab.attacks import fast_views, get_attack
from advlab.data import load_dataset
from advlab.metrics import acc_at_k, predict_logits

SEED = 0
INF = float("inf")
# name -> (advlab attack, norm, eps, advlab parameters, torchattacks builder), the matched settings of peers.py
CASES: dict[str, tuple[str, str, float, dict, Callable]] = {
    "pgd40": ("pgd", "linf", 0.3, {"steps": 40, "step_size": 0.01},
              lambda ta, m: ta.PGD(m, eps=0.3, alpha=0.01, steps=40, random_start=True)),
    "apgd": ("apgd", "linf", 0.3, {"steps": 100, "loss": "ce", "restarts": 1},
             lambda ta, m: ta.APGD(m, norm="Linf", eps=0.3, steps=100, loss="ce", n_restarts=1, seed=SEED)),
    "cw": ("cw", "l2", INF, {"steps": 100, "lr": 0.1, "binary_search_steps": 1, "initial_const": 1.0, "kappa": 0.0},
           lambda ta, m: ta.CW(m, c=1.0, kappa=0.0, steps=100, lr=0.1)),
}
COMMAND = "python benchmarks/gpu.py --n {n} --model {model} --repeats {repeats} --threads {threads}"


def advlab_run(case: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """advlab's x_adv for ``case`` (seeded: the random start is drawn on the CPU, so it is the CPU run's)."""
    attack, norm, eps, params, _ = CASES[case]
    threat = advlab.ThreatModel(norm, eps)
    return get_attack(attack)(model, x, y, threat, generator=torch.Generator().manual_seed(SEED), **params).x_adv


def timed(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up, synchronising the device around each."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(case: str, model_cpu: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            repeats: int) -> dict[str, object]:
    """One case: GPU timings (advlab view on/off, torchattacks), Acc@1 left, CPU-vs-GPU decisions."""
    import torchattacks

    model = model_cpu.to(device)  # the benchmark's own copy (loaded by main): moving it is ours to do
    xd, yd = x.to(device), y.to(device)
    row: dict[str, object] = {"case": case}
    t, adv = timed(lambda: advlab_run(case, model, xd, yd), repeats, device)
    row["advlab_s"], row["advlab_acc1"] = t, acc_at_k(predict_logits(model, adv), yd)
    with fast_views(False):
        row["advlab_noview_s"] = timed(lambda: advlab_run(case, model, xd, yd), repeats, device)[0]
    ta_attack = CASES[case][4](torchattacks, model)
    t, ta_adv = timed(lambda: ta_attack(xd, yd), repeats, device)
    row["ta_s"], row["ta_acc1"] = t, acc_at_k(predict_logits(model, ta_adv), yd)
    cpu_model = model.to("cpu")
    cpu_adv = advlab_run(case, cpu_model, x, y)
    fooled_cpu = predict_logits(cpu_model, cpu_adv).argmax(1) != y
    model = cpu_model.to(device)
    fooled_gpu = (predict_logits(model, adv).argmax(1) != yd).cpu()
    row["decisions_differ"] = int((fooled_cpu != fooled_gpu).sum())
    row["max_abs_diff"] = float((cpu_adv - adv.cpu()).abs().max())
    row["cpu_acc1"] = acc_at_k(predict_logits(cpu_model, cpu_adv), y)
    model_cpu.to("cpu")
    return row


def table(rows: list[dict[str, object]], n: int) -> str:
    head = ("| case | advlab GPU s | advlab GPU s, view off | torchattacks GPU s | advlab / torchattacks | "
            "Acc@1 advlab GPU | Acc@1 torchattacks | Acc@1 advlab CPU | decisions differing CPU vs GPU | "
            "max abs x_adv diff |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['case']} | {r['advlab_s']:.3f} | {r['advlab_noview_s']:.3f} | {r['ta_s']:.3f} | "
                     f"{r['advlab_s'] / r['ta_s']:.2f} | {r['advlab_acc1']:.4f} | {r['ta_acc1']:.4f} | "
                     f"{r['cpu_acc1']:.4f} | {r['decisions_differ']} of {n} | {r['max_abs_diff']:.2e} |")
    return "\n".join(lines)


def not_run_body(args: argparse.Namespace) -> str:
    """The section saying the benchmark was not run here, and how to run it."""
    return (f"## GPU: advlab vs torchattacks on CUDA, decisions vs the CPU\n\n_{environment()}_\n\n"
            "**Not run: this machine has no CUDA GPU** (torch "
            f"{torch.__version__} sees none), so there are no GPU timings or CPU-vs-GPU decision counts here. "
            "`benchmarks/gpu.py` times PGD-40 (L∞ ε=0.3, 40×0.01), APGD-CE (L∞ ε=0.3, 100 steps) and CW-L2 "
            "(100 × lr 0.1, c=1) for advlab (fast view on and off) and torchattacks on the same GPU, with TF32 "
            "off and deterministic cuDNN, and counts the images whose decision (fooled or not) differs from "
            "advlab's CPU run. On a machine with a GPU run:\n\n"
            f"```\n{COMMAND.format(**vars(args))}\n```\n\n"
            "Device bugs are caught here without a GPU: tests/test_attacks_device.py and tests/test_device_meta.py "
            "run the attack contract, the training loops, certify and the metrics under "
            "`torch.set_default_device(\"meta\")`; `pytest -m cuda` runs the contract on a GPU (skipped here).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="first N MNIST test images (default 1000)")
    p.add_argument("--model", default="lenet-mnist")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the CPU run (default 1)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    p.add_argument("--record-unavailable", action="store_true",
                   help="without a GPU: write the docs section saying the benchmark was not run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        if args.record_unavailable:
            write_section("gpu", not_run_body(args))
            print("wrote the 'gpu' section of docs/benchmarks.md: not run (no CUDA GPU)")
            return
        print(f"benchmarks/gpu.py: no CUDA GPU (torch {torch.__version__} sees none); nothing measured "
              "(--record-unavailable writes the docs section saying so)", file=sys.stderr)
        sys.exit(2)
    device = resolve_device(args.device)
    setup_cuda_determinism(device)
    model = advlab.load_model(args.model)
    x, y = load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    rows = [measure(c, model, x, y, device, args.repeats) for c in args.only.split(",")]
    for r in rows:
        print(r)
    body = (f"## GPU: advlab vs torchattacks on CUDA, decisions vs the CPU\n\n_{environment()} · "
            f"{torch.cuda.get_device_name(device)}_\n\n`{COMMAND.format(**vars(args))}` — {args.model}, first "
            f"{args.n} MNIST test images; median of {args.repeats} timed runs after a warm-up; TF32 off, "
            f"deterministic cuDNN.\n\n{table(rows, args.n)}")
    write_section("gpu", body)


if __name__ == "__main__":
    main()
