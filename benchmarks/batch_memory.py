"""The memory check before an evaluation runs: what it costs, and how its estimate compares with the peak.

    python benchmarks/batch_memory.py [--threads 1] [--batches 50,100,200] [--repeats 20]

Three measurements, printed as Markdown for docs/benchmarks.md (section ``batch-memory``):

1. The check's cost on the default evaluation's model and data: ``check_batch_memory(lenet-mnist, MNIST's
   test split, 500)``, the median of ``--repeats`` calls (it runs the model on 4 and on 2 images).
2. The saved bytes per image it measures for a 7-convolution net at 3×224×224 (64 channels, the first
   convolution of stride 2), the size of network the check is for.
3. The peak memory of one forward and backward pass through that net at each batch size, each in a fresh
   process (``ru_maxrss`` after minus before), against the saved bytes: the ratio is the backward pass's
   own allocations, which ``BACKWARD_FACTOR`` covers.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import advlab
from advlab.evaluation import memory

# (the child imports torch alone: advlab's own imports would raise the peak before the pass and hide part of it)
CHILD = """
import json, resource, torch
from torch import nn
{net_source}
torch.set_num_threads({threads})
net, b = wide_net(), {batch}
x = torch.rand(b, 3, 224, 224, requires_grad=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
net(x).sum().backward()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024))
"""


def wide_net() -> nn.Module:
    """7 convolutions of 64 channels at 112×112 after a stride-2 stem, then a linear head (eval mode, seeded)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def check_cost(repeats: int) -> float:
    model = advlab.load_model("lenet-mnist")
    x, _ = advlab.load_dataset("mnist", "test")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        memory.check_batch_memory(model, x, 500)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="50,100,200")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the peaks first, from a parent that has done nothing yet: children started after check_cost (which loads
    # MNIST and lenet) measured lower peaks (585 / 2 145 / 5 265 MiB at 50 / 100 / 200), for a reason not found
    peaks = {b: json.loads(subprocess.run(
        [sys.executable, "-c", CHILD.format(net_source=inspect.getsource(wide_net), threads=args.threads, batch=b)],
        capture_output=True, text=True, check=True).stdout) for b in (int(v) for v in args.batches.split(","))}
    cost = check_cost(args.repeats)
    four = torch.rand(4, 3, 224, 224)
    net = wide_net()
    per_image = (memory.saved_bytes(net, four) - memory.saved_bytes(net, four[:2])) / 2
    print(f"`python benchmarks/batch_memory.py --threads {args.threads} --batches {args.batches} --repeats "
          f"{args.repeats}` · torch {torch.__version__}\n")
    print(f"- check_batch_memory(lenet-mnist, MNIST test, batch 500): median {cost * 1e3:.1f} ms over "
          f"{args.repeats} calls")
    print(f"- saved for backward by the 7-conv net at 3×224×224: {per_image / 2**20:.1f} MiB per image\n")
    print("| batch | peak of forward + backward (MiB) | saved bytes × batch (MiB) | ratio |")
    print("|---:|---:|---:|---:|")
    for b, peak in peaks.items():
        print(f"| {b} | {peak / 2**20:.0f} | {per_image * b / 2**20:.0f} | {peak / (per_image * b):.2f} |")
    print(f"\nBACKWARD_FACTOR in advlab/evaluation/memory.py: {memory.BACKWARD_FACTOR}")


if __name__ == "__main__":
    main()
