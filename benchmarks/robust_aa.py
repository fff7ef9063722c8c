"""Robust MNIST models: advlab's default evaluation against AutoAttack, example by example (issue 14).

    python benchmarks/robust_aa.py                         # the three models below + cnn-mnist-robust, 500 images
    python benchmarks/robust_aa.py --n 20 --models cnn-mnist-robust   # a fast check
    python benchmarks/robust_aa.py --skip-advlab           # the peers only (cached per model)
    python benchmarks/robust_aa.py --skip-advlab --skip-peers   # rewrite the report from the caches only

For each model, on the first ``--n`` MNIST test images at L∞ ε = ``--eps``:

1. torchattacks ``AutoAttack(model, norm="Linf", eps=0.3, version="standard", n_classes=10, seed=0)``
   (torchattacks' default of 10 APGD/FAB iterations), and the 100-iteration AutoAttack that
   benchmarks/peers.py builds from torchattacks' own attacks (``_ta_autoattack_100``, imported from
   there). Each gives a per-example "robust after attack" mask (the model's own argmax on x_adv ==
   label) and a wall time, cached in ``benchmarks/results/robust_aa/<model-stem>.json`` under the
   sha256 of the model's weights (its tensors, not the file's metadata), n and ε: a re-run redoes only advlab's part.
2. advlab's DEFAULT evaluation, ``advlab.evaluate(model, "mnist", n=n, progress=False,
   out=benchmarks/results/robust_aa/<stem>-eval, force=True)`` (default attacks, default ε sweep,
   gradient-masking checks on), timed. Its per-example worst case at ε: ``ev.robust_mask(eps)`` where
   the evaluation has it, otherwise every stored job at ε (the adaptive attack a check added
   included) ANDed from the results store, as the table's worst-case row counts them.
3. Per model: clean Acc@1, advlab's worst-case Acc@1 (its strongest row, the rows added by the
   checks), AutoAttack-standard and AutoAttack-100 Acc@1 and times, advlab's time; the verdict
   "advlab ≤ both"; the examples either AutoAttack breaks that advlab leaves robust ("misses") and
   the count of the reverse (advlab breaks, neither AutoAttack does).

Writes benchmarks/results/robust_aa.json and the "robust-aa" section of docs/benchmarks.md.

The three adversarially trained models (issue 14: different recipes) come from
/work/robust/train.sh and train2.sh (the first PGD-40 and fast recipes, without an ε warm-up, failed: the
former collapsed to one class, the latter overfitted catastrophically; both are kept in the report);
a missing one is trained by the same command into ``--dir``:

    advlab train --model cnn --dataset mnist --epochs 8 --batch-size 128 --lr 1e-3 --defense fast -o eps=0.3 --seed 1 --threads 1 --no-progress --out /work/robust/cnn-fast.safetensors
    advlab train --model cnn --dataset mnist --epochs 4 --batch-size 128 --lr 1e-3 --defense trades -o eps=0.3 -o steps=10 --seed 2 --threads 1 --no-progress --out /work/robust/cnn-trades.safetensors
    advlab train --model cnn --dataset mnist --epochs 3 --batch-size 128 --lr 1e-3 --defense pgd -o eps=0.3 -o steps=40 --seed 3 --threads 1 --no-progress --out /work/robust/cnn-pgd40.safetensors
    advlab train --model cnn --dataset mnist --epochs 8 --batch-size 128 --lr 1e-3 --defense fast -o eps=0.3 -o eps_warmup=0.3 --seed 1 --threads 1 --no-progress --out /work/robust/cnn-fast-warmup.safetensors
    advlab train --model cnn --dataset mnist --epochs 3 --batch-size 128 --lr 1e-3 --defense pgd -o eps=0.3 -o steps=20 -o eps_warmup=0.3 --seed 3 --threads 1 --no-progress --out /work/robust/cnn-pgd20-warmup.safetensors
    advlab train --model cnn --dataset mnist --epochs 3 --batch-size 128 --lr 1e-3 --defense adversarial -o attack=pgd -o eps=0.3 -o steps=10 -o clean_weight=0.5 -o eps_warmup=0.3 --seed 4 --threads 1 --no-progress --out /work/robust/cnn-mixed-pgd10.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section
from peers import SEED, _ta, _ta_autoattack_100
from robust_aa_report import SHIPPED, TRAIN, VERSIONS, acc, report, summarize

import advlab
from advlab.evaluation.defaults import DEFAULT_ATTACKS
from advlab.metrics import outcome_at_eps, predict_logits
from advlab.models.zoo import _find_checkpoint
from advlab.results.aggregate import stored_jobs
from advlab.results.store import Store

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "robust_aa.json"
CACHE = HERE / "results" / "robust_aa"
DEFAULT_DIR = Path("/work/robust")
# ---- models -------------------------------------------------------------------------------------

def model_stem(spec: str) -> str:
    """The cache name of a model: a checkpoint's file stem, or a shipped name."""
    return Path(spec).stem if spec.endswith(".safetensors") else spec


def checkpoint_path(spec: str) -> Path | None:
    """The safetensors file of a model spec (a path, or the shipped checkpoint of a name)."""
    if spec.endswith(".safetensors"):
        return Path(spec)
    found = _find_checkpoint(spec)
    return Path(found) if found is not None else None


def sha256(path: Path) -> str:
    """The sha256 of the weights themselves (names, dtypes, shapes and bytes of every tensor, in name order).

    Not of the file: a retrained model with the same weights differs in its metadata (``train_seconds``),
    and AutoAttack gives it the same figures, so the cached peers' results stay valid for it.
    """
    h = hashlib.sha256()
    tensors = load_file(str(path))
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train_command(stem: str, directory: Path) -> list[str]:
    """train.sh's command for ``stem``, writing into ``directory``."""
    argv = shlex.split(TRAIN[stem])
    argv[argv.index("--out") + 1] = str(directory / f"{stem}.safetensors")
    exe = shutil.which("advlab")
    return [exe, *argv[1:]] if exe else [sys.executable, "-m", "advlab", *argv[1:]]


def ensure_model(spec: str) -> Path | None:
    """The model's checkpoint, trained first by train.sh's command when it is missing (None: unavailable)."""
    path = checkpoint_path(spec)
    if path is not None and path.exists():
        return path
    stem = model_stem(spec)
    if path is None or stem not in TRAIN:
        print(f"{spec}: no such checkpoint, and no training command for it: skipped", flush=True)
        return None
    if (path.parent / f".{path.name}.lock").exists():
        print(f"{spec}: being trained by another process (lock file): skipped", flush=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = train_command(stem, path.parent)
    print("training:", shlex.join(argv), flush=True)
    subprocess.run(argv, check=True)
    return path


# ---- the cache ------------------------------------------------------------------------------------

def cache_key(digest: str, n: int, eps: float) -> str:
    return f"{digest}|n={n}|eps={eps!r}"


def load_cache(stem: str) -> dict:
    path = CACHE / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else {}


_FLAT_LIST = re.compile(r'\[(?:\s*(?:-?[\d.e+-]+|null|true|false|"[^"\n]*")\s*,?)+\s*\]')


def dumps(obj: object, indent: int) -> str:
    """JSON with every list of scalars on one line (the per-example masks)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    return _FLAT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0)), ensure_ascii=False), text) + "\n"


def save_cache(stem: str, cache: dict) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(cache, indent=1))
    tmp.replace(path)


# ---- the peers ------------------------------------------------------------------------------------

def build_peer(version: str, model, eps: float):
    if version == "aa-standard":
        return _ta().AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=SEED)
    if eps != 0.3:
        raise ValueError(f"eps: peers.py's _ta_autoattack_100 is fixed at ε=0.3, got {eps}")
    return _ta_autoattack_100(model)


def run_peer(version: str, model, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    """One AutoAttack over all images: per-example robust mask (own argmax on x_adv), wall time, validity."""
    torch.manual_seed(SEED)
    attack = build_peer(version, model, eps)
    t0 = time.perf_counter()
    x_adv = attack(x, y)
    seconds = time.perf_counter() - t0
    x_adv = x_adv.detach().to(torch.float32).reshape(x.shape)
    robust = predict_logits(model, x_adv).argmax(1) == y
    flat = x_adv.flatten(1)
    valid = (torch.isfinite(flat).all(1) & (flat >= 0).all(1) & (flat <= 1).all(1)
             & ((x_adv - x).flatten(1).abs().amax(1) <= eps + 1e-5))
    return {"mask": robust.int().tolist(), "seconds": seconds, "valid": float(valid.double().mean()),
            "threads": torch.get_num_threads(), "torchattacks": _ta().__version__}


def peers_part(entry: dict, model, x, y, eps: float, save) -> None:
    """Run every AutoAttack version the cache entry lacks; ``save()`` after each."""
    for version in VERSIONS:
        if version in entry["peers"]:
            res = entry["peers"][version]
            print(f"  {version}: cached ({acc(res['mask']):.4f}, {res['seconds']:.0f} s)", flush=True)
            continue
        print(f"  {version}: running on {len(y)} images", flush=True)
        entry["peers"][version] = res = run_peer(version, model, x, y, eps)
        print(f"  {version}: Acc@1 {acc(res['mask']):.4f} in {res['seconds']:.0f} s", flush=True)
        save()



# ---- advlab -----------------------------------------------------------------------------------------

def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-12)


def store_worst(out: Path, eps: float) -> tuple[torch.Tensor, list[str | None]]:
    """The worst case at ε from the results store, as the table's worst-case row counts it.

    Every stored job of the evaluated norm at ε (a minimal-perturbation attack scored at ε, the
    adaptive attack a check added included) ANDed; also the first job (in run order) that broke each
    example. The checks' own attacks (on a subset) are not in the store per example.
    """
    store = Store(out / "results.sqlite")
    try:
        config = store.get_config()
        clean = store.clean()
        robust = clean["top1"].clone()
        broken_by: list[str | None] = [None] * len(robust)
        for job in stored_jobs(store, config):
            if job.norm != config["norm"]:
                continue
            if job.eps == math.inf and any(_same(e, eps) for e in job.sweep):
                at: float | None = eps
            elif _same(job.eps, eps):
                at = None
            else:
                continue
            o = store.outcomes(job.key)
            _, top1, _ = outcome_at_eps(o["adv"], o[job.norm], at, o["top1"], o["top5"], clean["top1"], clean["top5"])
            for i in (robust & ~top1).nonzero().flatten().tolist():
                broken_by[i] = job.attack
            robust &= top1
    finally:
        store.close()
    return robust, broken_by


def advlab_part(spec: str, stem: str, n: int, eps: float) -> dict:
    """advlab's default evaluation, timed; its per-example worst case at ε and its rows at ε."""
    model = advlab.load_model(spec)
    out = CACHE / f"{stem}-eval"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: a finished store would only be re-read
    t0 = time.perf_counter()
    ev = advlab.evaluate(model, "mnist", n=n, progress=False, out=out, force=True, model_name=stem)
    seconds = time.perf_counter() - t0
    if hasattr(ev, "robust_mask"):
        mask, source = ev.robust_mask(eps), "ev.robust_mask"
        broken_by = ev.broken_by(eps) if hasattr(ev, "broken_by") else None
    else:
        (mask, broken_by), source = store_worst(out, eps), "results store (no ev.robust_mask yet)"
    at = [r for r in ev.rows if r.norm == "linf" and _same(r.eps, eps)]
    worst = next(r for r in at if r.attack == "worst-case")
    mask = torch.as_tensor(mask).bool()
    if not math.isclose(float(mask.double().mean()), worst.acc1_adv, abs_tol=1e-9):
        print(f"  WARNING: per-example worst case {float(mask.double().mean()):.4f} ≠ worst-case row "
              f"{worst.acc1_adv:.4f}", flush=True)
    return {
        "mask": mask.int().tolist(), "broken_by": broken_by, "seconds": seconds, "source": source,
        "worst_case_row": worst.acc1_adv, "strongest": worst.strongest,
        "added": sorted({r.attack for r in ev.rows} - set(DEFAULT_ATTACKS) - {"worst-case"}),
        "rows": {r.attack: r.acc1_adv for r in at if r.attack != "worst-case"},
        "checks_fired": [c.get("message") for c in ev.checks if c.get("fired")],
        "meta": json.loads(json.dumps(getattr(ev, "meta", None) or {}, default=str)),  # what evaluate added, costs
        "advlab": advlab.__version__, "src": str(Path(advlab.__file__).resolve().parent),
        "threads": torch.get_num_threads(),
    }


def fab_leftovers(model, x: torch.Tensor, y: torch.Tensor, mask: list[int], eps: float) -> dict:
    """AutoAttack's FAB-T (torchattacks FAB, multi-targeted, 9 targets, 100 steps) on the examples advlab left robust.

    Measures whether adding FAB-T to advlab would help: how many of advlab's survivors it breaks.
    """
    import torchattacks

    idx = torch.tensor([i for i, m in enumerate(mask) if m], dtype=torch.long)
    if len(idx) == 0:
        return {"tried": 0, "broken": [], "seconds": 0.0}
    atk = torchattacks.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10,
                           seed=0)
    t0 = time.perf_counter()
    x_adv = atk(x[idx], y[idx])
    seconds = time.perf_counter() - t0
    inside = (x_adv - x[idx]).flatten(1).abs().amax(1) <= eps + 1e-6
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y[idx]) & inside
    return {"tried": len(idx), "broken": idx[fooled].tolist(), "seconds": seconds}


# ---- one model ------------------------------------------------------------------------------------

def cached_only(stem: str, n: int, eps: float) -> dict | None:
    """A model whose weights are not here: its one cached run at (n, ε), marked as not rerun (None: none)."""
    found = [e for k, e in load_cache(stem).items() if k.endswith(f"|n={n}|eps={eps!r}") and "advlab" in e]
    if len(found) != 1:
        print(f"{stem}: no checkpoint and {len(found)} cached runs: left out", flush=True)
        return None
    print(f"{stem}: no checkpoint: the row is its cached run (not rerun)", flush=True)
    return {**summarize(stem, found[0]), "cached_only": True}


def process(spec: str, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> dict | None:
    """Peers (cached) and advlab for one model; its summary, or None when the model is unavailable."""
    stem = model_stem(spec)
    work = not (args.skip_advlab and args.skip_peers) and not args.no_train
    path = ensure_model(spec) if work else checkpoint_path(spec)
    if path is None or not path.exists():
        return cached_only(stem, len(y), args.eps) if args.no_train else None
    print(f"{stem}: {path}", flush=True)
    digest = sha256(path)
    cache = load_cache(stem)
    entry = cache.setdefault(cache_key(digest, len(y), args.eps),
                             {"model": spec, "sha256": digest, "n": len(y), "eps": args.eps, "peers": {}})

    def save() -> None:
        save_cache(stem, cache)

    if "clean" not in entry:
        model = advlab.load_model(str(path))
        entry["clean"] = (predict_logits(model, x).argmax(1) == y).int().tolist()
        entry["train_command"] = model.advlab_meta.get("command")
        save()
    if not args.skip_peers:
        peers_part(entry, advlab.load_model(str(path)), x, y, args.eps, save)
    if not args.skip_advlab:
        print(f"  advlab: default evaluation of {len(y)} images", flush=True)
        entry["advlab"] = advlab_part(str(path) if spec.endswith(".safetensors") else spec, stem, len(y), args.eps)
        print(f"  advlab: worst case {acc(entry['advlab']['mask']):.4f} in {entry['advlab']['seconds']:.0f} s",
              flush=True)
        save()
    if args.fab and "advlab" in entry:
        entry["fab_leftovers"] = fab_leftovers(advlab.load_model(str(path)).eval(), x, y, entry["advlab"]["mask"],
                                               args.eps)
        print(f"  FAB-T on advlab's {entry['fab_leftovers']['tried']} survivors: broke "
              f"{len(entry['fab_leftovers']['broken'])}", flush=True)
        save()
    return summarize(stem, entry)


# ---- report -----------------------------------------------------------------------------------------

def default_models(directory: Path) -> list[str]:
    return [str(directory / f"{stem}.safetensors") for stem in TRAIN] + [SHIPPED]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=None,
                    help="checkpoint paths or shipped names, space- or comma-separated "
                         "(default: the three models of --dir, then cnn-mnist-robust)")
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the three trained models are (or go)")
    ap.add_argument("--n", type=int, default=500, help="images (the first n of the MNIST test set)")
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-advlab", action="store_true", help="do not run advlab's evaluation (use its cache)")
    ap.add_argument("--skip-peers", action="store_true", help="do not run AutoAttack (use its cache)")
    ap.add_argument("--no-train", action="store_true",
                    help="a model whose weights are missing is not trained: its row is its cached run, marked so")
    ap.add_argument("--fab", action="store_true",
                    help="also run AutoAttack's FAB-T (torchattacks) on the examples advlab left robust: would FAB-T help?")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = [s for m in args.models for s in m.split(",") if s] if args.models else default_models(args.dir)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    records = [r for r in (process(spec, args, x, y) for spec in specs) if r is not None]
    shipped = next((r["train_command"] for r in records if r["model"] == SHIPPED), None)
    res = {"environment": environment(), "command": shlex.join(["python", "benchmarks/robust_aa.py", *sys.argv[1:]]),
           "n": len(y), "eps": args.eps, "versions": VERSIONS, "default_attacks": list(DEFAULT_ATTACKS),
           "train_commands": TRAIN, "shipped_command": shipped, "models": records}
    text = report(res)
    print("\n" + text)
    RESULTS.write_text(dumps(res, indent=2))
    write_section("robust-aa", text)


if __name__ == "__main__":
    main()
