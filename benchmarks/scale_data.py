"""Your own data and models at scale: streamed ImageFolders (peak memory vs folder size) and ONNX vs torch.

(1) Writes two synthetic ImageFolders (10 classes of 224×224 RGB JPEGs, deterministic from a
seed) of 1 000 and 4 000 images, then runs ``python -m advlab evaluate --model
benchmarks/scale_models.py:resnet18_w16 --dataset folder:DIR:size=224 --attacks fgsm`` on each in a
child process and reads the child's peak RSS from ``os.wait4``. (2) Exports lenet-mnist to ONNX
and runs Square (L∞, ε 0.3) and HopSkipJump (L2, minimal) on the first MNIST test images under
the same seed against the torch model and the ONNX model (onnxruntime BlackBox), comparing x_adv,
success and queries example by example.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scale_data.py            # both parts
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scale_data.py --part onnx
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

from advlab.threat import ThreatModel

ROOT = Path(__file__).resolve().parent.parent
FACTORY = "benchmarks/scale_models.py:resnet18_w16"
SIZES = (1000, 4000)
CLASSES = 10
EPS = 4 / 255
RUNS = (("square L∞ 0.1", "square", ThreatModel("linf", 0.1)), ("square L∞ 0.3", "square", ThreatModel("linf", 0.3)),
        ("hopskipjump L2 minimal", "hopskipjump", ThreatModel("l2", float("inf"))))


def write_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` 224×224 RGB JPEGs in 10 class folders: smooth random fields (8×8 noise upsampled) plus a class tint."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    tint = rng.uniform(0.2, 0.8, (CLASSES, 3))
    for i in range(n):
        c = i % CLASSES
        low = rng.uniform(-0.25, 0.25, (8, 8, 3)) + tint[c]
        img = np.kron(low, np.ones((28, 28, 1))) + rng.normal(0, 0.03, (224, 224, 3))
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(root / f"class{c:02d}" / f"{i:05d}.jpg",
                                                                         quality=90)


def run_child(cmd: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of a child process, its RSS from ``os.wait4``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(err.decode()[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, proc.returncode


def scale_part(tmp: Path, batch_size: int) -> dict[str, object]:
    """Peak RSS and time of the evaluation on each folder size."""
    runs = []
    for n in SIZES:
        folder = tmp / f"folder{n}"
        t0 = time.perf_counter()
        write_folder(folder, n)
        mb = sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 2 ** 20
        print(f"wrote {n} images ({mb:.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
        out = tmp / f"out{n}"
        cmd = [sys.executable, "-m", "advlab", "evaluate", "--model", FACTORY, "--dataset", f"folder:{folder}:size=224",
               "--attacks", "fgsm", "--eps", f"{EPS:.6f}", "--batch-size", str(batch_size), "--threads", "1",
               "--no-progress", "--no-checks", "--out", str(out)]
        rss, seconds, rc = run_child(cmd)
        rows = json.loads((out / "results.json").read_text()) if rc == 0 else []
        runs.append({"n": n, "folder_mib": round(mb, 1), "peak_rss_mib": round(rss, 1), "seconds": round(seconds, 1),
                     "rc": rc, "acc1_clean": rows[0]["acc1_clean"] if rows else None,
                     "acc1_adv": rows[0]["acc1_adv"] if rows else None})
        print(runs[-1], flush=True)
    shown = " ".join(cmd[3:]).replace(str(tmp), "$TMP")
    return {"runs": runs, "ratio": runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], "command": shown}


def compare(a: object, b: object, x: torch.Tensor) -> dict[str, object]:
    """Per-example agreement of two AttackResults, and each one's median L2 perturbation."""
    xa, xb = a.x_adv, b.x_adv  # type: ignore[attr-defined]
    med = [float((z - x).flatten(1).norm(dim=1).median()) for z in (xa, xb)]
    same_x = (xa.flatten(1) == xb.flatten(1)).all(dim=1)
    qa, qb = a.queries, b.queries  # type: ignore[attr-defined]
    return {"x_adv_identical": int(same_x.sum()), "success_equal": int((a.success == b.success).sum()),  # type: ignore[attr-defined]
            "queries_equal": None if qa is None or qb is None else int((qa == qb).sum()),
            "max_abs_diff": float((xa - xb).abs().max()), "success_a": int(a.success.sum()),  # type: ignore[attr-defined]
            "success_b": int(b.success.sum()), "median_l2_a": med[0], "median_l2_b": med[1]}  # type: ignore[attr-defined]


def onnx_part(tmp: Path, n: int) -> dict[str, object]:
    """Square and HopSkipJump on lenet-mnist as torch and as ONNX (two graph-optimisation levels), same seed."""
    from advlab.attacks import fast_views, get_attack
    from advlab.data import load_dataset
    from advlab.models import load_model
    from advlab.models.blackbox import as_blackbox
    from advlab.models.onnx import export_onnx, load_onnx
    net = load_model("lenet-mnist")
    path = export_onnx(net, tmp / "lenet-mnist.onnx", (1, 28, 28))
    x, y = load_dataset("mnist", "test")
    x, y = x[:n], y[:n]
    models = {"torch": net, "torch-plain": as_blackbox(net), "onnx": load_onnx(path),
              "onnx-noopt": load_onnx(path, optimization="none")}
    with torch.no_grad():
        logit_gap = {k: float((torch.as_tensor(m.fn(x.numpy()) if k.startswith("onnx") else net(x)) - net(x)).abs().max())
                     for k, m in models.items()}
    out: dict[str, object] = {"n": n, "logit_max_abs_diff_vs_torch": logit_gap}
    pairs = (("torch", "onnx"), ("torch", "onnx-noopt"), ("torch-plain", "onnx"), ("torch-plain", "onnx-noopt"),
             ("torch", "torch-plain"))
    for label, attack, threat in RUNS:
        res, secs = {}, {}
        for name, model in models.items():
            t0 = time.perf_counter()
            with fast_views(name != "torch-plain"):
                res[name] = get_attack(attack)(model, x, y, threat, generator=torch.Generator().manual_seed(0))
            secs[name] = round(time.perf_counter() - t0, 1)
        out[label] = {"seconds": secs, **{f"{a} vs {b}": compare(res[a], res[b], x) for a, b in pairs}}
        print(label, json.dumps(out[label]), flush=True)
    return out


def scale_text(s: dict[str, object]) -> list[str]:
    runs = s["runs"]  # type: ignore[index]
    lines = ["| images | folder (JPEG) | peak RSS of the evaluate process | wall time | clean Acc@1 | Acc@1 under FGSM |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in runs:  # type: ignore[attr-defined]
        lines.append(f"| {r['n']} | {r['folder_mib']} MiB | {r['peak_rss_mib']:.0f} MiB | {r['seconds']:.0f} s | "
                     f"{r['acc1_clean']} | {r['acc1_adv']} |")
    ratio = float(s["ratio"])  # type: ignore[arg-type]
    return [*lines, "", f"Peak RSS ratio 4 000 / 1 000 images: **{ratio:.3f}** (criterion: within 10%).", "",
                    f"Each run: `python -m advlab {s['command']}` with `$TMP/folderN` the generated folder."]


def onnx_text(o: dict[str, object]) -> list[str]:
    gaps = ", ".join(f"{k} {v:.2g}" for k, v in o["logit_max_abs_diff_vs_torch"].items())  # type: ignore[attr-defined]
    lines = [f"Largest |logit difference| from the torch model on the {o['n']} images: {gaps}.", "",
             "| attack | comparison | x_adv identical | success equal | queries equal | max abs x_adv diff | successes (a / b) "
             "| median L2 (a / b) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for attack, _, _ in RUNS:
        for key, c in o[attack].items():  # type: ignore[attr-defined]
            if key == "seconds":
                continue
            lines.append(f"| {attack} | {key} | {c['x_adv_identical']} / {o['n']} | {c['success_equal']} / {o['n']} | "
                         f"{c['queries_equal']} / {o['n']} | {c['max_abs_diff']:.3g} | {c['success_a']} / {c['success_b']} | "
                         f"{c['median_l2_a']:.4f} / {c['median_l2_b']:.4f} |")
    return [*lines, "", "Seconds per run: " + "; ".join(
        f"{a}: " + ", ".join(f"{k} {v}" for k, v in o[a]["seconds"].items()) for a, _, _ in RUNS)]  # type: ignore[index]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "scale", "onnx"), default="all")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--n-onnx", type=int, default=100)
    p.add_argument("--json", default=None, help="also write the raw figures here")
    args = p.parse_args()
    torch.set_num_threads(1)
    raw: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="advlab-scale-") as d:
        if args.part in ("all", "scale"):
            raw["scale"] = scale_part(Path(d), args.batch_size)
        if args.part in ("all", "onnx"):
            raw["onnx"] = onnx_part(Path(d), args.n_onnx)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))
    if args.part == "all":
        write_section("scale-data", "\n".join(section(raw)))


def section(raw: dict[str, object]) -> list[str]:
    return ["## Your own data and models: streamed folders, ONNX", "", environment(), "",
            "Reproduce: `OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scale_data.py` (both parts, about "
            "15 min on 1 thread; needs the onnx extra).", "",
            "### Peak memory does not grow with the folder", "",
            "Synthetic ImageFolders (10 classes, 224×224 RGB JPEGs from a seed) evaluated by a ResNet-18-style "
            "network at a quarter of ResNet-18's width (`benchmarks/scale_models.py:resnet18_w16`: 4 stages of 2 "
            "BasicBlocks, widths 16-32-64-128, untrained — a memory check, not an accuracy one), FGSM at ε = 4/255, "
            "batches of 100, without the gradient-masking checks (`--no-checks`: their subset is capped at "
            "check_n = 200 whatever the folder size, and on an untrained net they fire and add pgd-adaptive over "
            "every image). Full width was measured at 0.08 s per image forward and 0.20 s per image for FGSM on "
            "this CPU: the 4 000-image run would take over 20 minutes.", "",
            *scale_text(raw["scale"]),  # type: ignore[arg-type]
            "", "### ONNX lenet-mnist vs torch lenet-mnist, same seed", "",
            "lenet-mnist exported with `advlab.models.onnx.export_onnx` (torch.onnx.export, dynamo=False) and run by "
            "onnxruntime on the CPU (1 thread; `onnx`: all graph optimisations, `onnx-noopt`: none); `torch` is the "
            "module as evaluate runs it (advlab's channels-last fast view), `torch-plain` the module itself behind "
            "a BlackBox (fast views off). Square at L∞ ε = 0.1 and 0.3 (default parameters, 5 000 queries); "
            "HopSkipJump L2, minimal (ε = ∞); generator seed 0, the first MNIST test images.", "",
            *onnx_text(raw["onnx"]),  # type: ignore[arg-type]
            "", "Why they are not all bitwise equal: onnxruntime's CPU kernels and torch's sum in other orders, so "
            "the logits differ by a few 1e-6 (line above); torch's own channels-last fast view rounds differently from "
            "the plain module too, and its trajectories diverge the same way (`torch vs torch-plain`). No "
            "onnxruntime setting removes the gap (all graph optimisations or none leave the same 5.7e-6), and "
            "torch's rounding also depends on the batch an image is in, so how many trajectories diverge depends "
            "on which images are attacked together. Square accepts a step "
            "when the margin loss falls: where images fall within the first queries (ε 0.3) every run is "
            "identical; with up to 5 000 queries (ε 0.1) a near-tie now and then goes the other way and that "
            "image's trajectory diverges. HopSkipJump's binary searches end within θ of the decision boundary, "
            "where a 1e-6 difference decides a query's label, so most of its trajectories diverge: its x_adv "
            "differ while successes and query counts agree and the median L2 distances are close (last column)."]


if __name__ == "__main__":
    main()
