"""advlab side by side with torchattacks, Foolbox 3 and ART: same model, images, settings, scoring.

    python benchmarks/peers.py                  # first 1000 MNIST test images, 3 interleaved repeats
    python benchmarks/peers.py --quick          # 100 images, 1 repeat: for development; writes nothing
    python benchmarks/peers.py --n 500 --repeats 5 --model lenet-mnist
    python benchmarks/peers.py --only pgd,cw    # a subset of the cases (by key); writes nothing
    python benchmarks/peers.py --from-json      # rewrite the docs section from the saved results only
    python benchmarks/peers.py --family sparse  # issue 15's families: sparse (JSMA), minnorm (EAD, FMN), cw (CW-L∞)

The issue-15 families (``--family sparse|minnorm|cw``) live in benchmarks/peers_<family>.py: their
attacks are targeted or minimal in L0/L1, so they are scored by targeted success and L0/L1 medians,
which this module's ``score`` does not compute; they reuse its ``Case``, ``Ctx`` and runners, and
``--family F`` runs that module's own command line (its other flags pass through).

Every case is one attack with one matched setting, run by every library that has it (a library
without it is listed as skipped). Each timing is repeated ``--repeats`` times and the median is
reported; the repeats are interleaved (repeat r runs every case of every library once before
repeat r+1 starts) so that drift in the load of the shared machine hits all libraries alike.

Every library's output is scored the same way, here, from the model's prediction on the returned
x_adv — never a library's own success flag: Acc@1 and Acc@5 under attack, success (prediction ≠
label), median L2 and L∞ over successful examples, and ``valid``, the fraction of x_adv that is
finite, inside [0, 1] and inside the ε-ball (+1e-5). The floor is the throughput of one
forward+backward pass (input gradient) over the same batch; a gradient attack's efficiency is
(images × gradient steps / time) ÷ floor.

Writes the "peers" section of docs/benchmarks.md and benchmarks/results/peers.json (full runs
only). To add a case, append a :class:`Case` to ``CASES`` (runner factories for the libraries that
have the attack) and, if it has a target, a function to ``TARGETS``; ``--model`` picks any model
``advlab.load_model`` knows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section
from peers_core import (  # noqa: F401 — re-exported for the family modules
    DIST,
    INF,
    LIB_NAMES,
    LIBRARIES,
    SEED,
    Case,
    Ctx,
    Factory,
    Runner,
    _art,
    _fb,
    _fingerprint,
    _ta,
    advlab_runner,
    art_runner,
    fb_runner,
    floor_time,
    score,
    ta_runner,
)

import advlab
from advlab.attacks import fast_view
from advlab.metrics import acc_at_k, predict_logits

RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"

# ---- the cases -------------------------------------------------------------------------------

PGD = {"steps": 40, "step_size": 0.01}
DF = {"steps": 50, "overshoot": 0.02}
CW = {"steps": 100, "lr": 0.1, "binary_search_steps": 1, "initial_const": 1.0, "kappa": 0.0}
SQ = {"max_queries": 5000, "p_init": 0.05}

CASES: list[Case] = [
    Case(
        "fgsm", "FGSM L∞ ε=0.3", "linf", 0.3,
        "one signed-gradient step of 0.3 on the cross-entropy, no random start",
        {
            "advlab": advlab_runner("fgsm", "linf", 0.3),
            "torchattacks": ta_runner(lambda m: _ta().FGSM(m, eps=0.3)),
            "foolbox": fb_runner(lambda: _fb().LinfFastGradientAttack(random_start=False), 0.3),
            "art": art_runner(lambda c, b: _art().FastGradientMethod(c, norm=np.inf, eps=0.3, batch_size=b)),
        },
        grad_steps=1,
    ),
    Case(
        "pgd", "PGD L∞ ε=0.3, 40×0.01", "linf", 0.3,
        "40 steps of 0.01 on the cross-entropy, one uniform random start in the ε-ball, fixed step count",
        {
            "advlab": advlab_runner("pgd", "linf", 0.3, **PGD),
            "torchattacks": ta_runner(lambda m: _ta().PGD(m, eps=0.3, alpha=0.01, steps=40, random_start=True)),
            "foolbox": fb_runner(lambda: _fb().LinfPGD(abs_stepsize=0.01, steps=40, random_start=True), 0.3),
            "art": art_runner(lambda c, b: _art().ProjectedGradientDescent(
                c, norm=np.inf, eps=0.3, eps_step=0.01, max_iter=40, num_random_init=1, batch_size=b,
                verbose=False)),
        },
        grad_steps=40,
    ),
    Case(
        "pgd-cl", "PGD L∞ ε=0.3, 40×0.01, peers on a channels_last model", "linf", 0.3,
        "as PGD, but torchattacks and Foolbox attack a copy of the model converted by hand with "
        "`model.to(memory_format=torch.channels_last)` — the layout advlab's attacks use internally "
        "(`advlab.attacks.fast_view`); compared with advlab's fixed-step PGD on the model as given",
        {
            "torchattacks": lambda ctx: ta_runner(
                lambda m: _ta().PGD(m, eps=0.3, alpha=0.01, steps=40, random_start=True))(ctx.channels_last()),
            "foolbox": lambda ctx: fb_runner(
                lambda: _fb().LinfPGD(abs_stepsize=0.01, steps=40, random_start=True), 0.3)(ctx.channels_last()),
        },
        grad_steps=40,
        compare_to="pgd",
    ),
    Case(
        "pgd-es", "PGD L∞ ε=0.3, 40×0.01, early stop", "linf", 0.3,
        "as PGD, but an example stops once misclassified (`early_stop=True`, as `advlab evaluate` runs it); "
        "advlab only — compared with the peers' fixed-step PGD",
        {"advlab": advlab_runner("pgd", "linf", 0.3, early_stop=True, **PGD)},
        compare_to="pgd",
    ),
    Case(
        "deepfool", "DeepFool L2", "l2", INF,
        "overshoot 0.02, ≤ 50 iterations, 10 candidate classes (torchattacks: all classes; ART: `epsilon=0.02`, "
        "`nb_grads=10`, and it applies the overshoot once at the end)",
        {
            "advlab": advlab_runner("deepfool", "l2", INF, **DF),
            "torchattacks": ta_runner(lambda m: _ta().DeepFool(m, steps=50, overshoot=0.02)),
            "foolbox": fb_runner(lambda: _fb().L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02), None),
            "art": art_runner(lambda c, b: _art().DeepFool(
                c, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=b, verbose=False)),
        },
        # torchattacks loops over single images (1 forward + 10 backward passes each, per iteration) and
        # runs all 50 iterations on the images it leaves on the boundary: about 5 s per image here. ART
        # recomputes all 10 class gradients for the whole batch every iteration: about 0.25 s per image.
        n_cap={"torchattacks": 10, "art": 100},
    ),
    Case(
        "cw", "CW-L2", "l2", INF,
        "100 iterations, learning rate 0.1, 1 binary-search step (torchattacks has no binary search), "
        "initial const c=1, κ=0; early abort as each library does it (advlab, torchattacks and "
        "Foolbox per batch, ART none). advlab, torchattacks, Foolbox: Adam in tanh space; ART: gradient "
        "descent with a line search on the step (0.1 is its initial step)",
        {
            "advlab": advlab_runner("cw", "l2", INF, **CW),
            "torchattacks": ta_runner(lambda m: _ta().CW(m, c=1.0, kappa=0.0, steps=100, lr=0.1)),
            "foolbox": fb_runner(lambda: _fb().L2CarliniWagnerAttack(
                binary_search_steps=1, steps=100, stepsize=0.1, confidence=0.0, initial_const=1.0,
                abort_early=True), None),
            "art": art_runner(lambda c, b: _art().CarliniL2Method(
                c, confidence=0.0, learning_rate=0.1, binary_search_steps=1, max_iter=100, initial_const=1.0,
                batch_size=b, verbose=False)),
        },
        n_cap={"art": 40},  # ART's line search: up to 10 extra forward passes (via NumPy) per iteration
    ),
    Case(
        "square", "Square L∞ ε=0.3", "linf", 0.3,
        "5000 queries per image, p_init 0.05, margin loss, 1 restart (ART: `max_iter=5000`)",
        {
            "advlab": advlab_runner("square", "linf", 0.3, **SQ),
            "torchattacks": ta_runner(lambda m: _ta().Square(
                m, norm="Linf", eps=0.3, n_queries=5000, n_restarts=1, p_init=0.05, loss="margin", seed=SEED)),
            "art": art_runner(lambda c, b: _art().SquareAttack(
                c, norm=np.inf, max_iter=5000, eps=0.3, p_init=0.05, nb_restarts=1, batch_size=b, verbose=False)),
        },
        n_cap={"art": 200},
    ),
]


def _ta_autoattack_100(m):
    """AutoAttack-standard as Croce & Hein run it (100 iterations), from torchattacks' own attacks."""
    ta = _ta()
    return ta.MultiAttack([
        ta.APGD(m, norm="Linf", eps=0.3, steps=100, loss="ce", n_restarts=1, seed=SEED),
        ta.APGDT(m, norm="Linf", eps=0.3, steps=100, n_classes=10, n_restarts=1, seed=SEED),
        ta.FAB(m, norm="Linf", eps=0.3, steps=100, multi_targeted=True, n_classes=10, n_restarts=1, seed=SEED),
        ta.Square(m, norm="Linf", eps=0.3, n_queries=5000, n_restarts=1, seed=SEED),
    ])


# Cases run on the adversarially trained model (--robust-model): the strongest-attack comparison.
ROBUST_CASES: list[Case] = [
    Case(
        "pgd", "PGD L∞ ε=0.3, 40×0.01", "linf", 0.3,
        "as above, on the robust model",
        {
            "advlab": advlab_runner("pgd", "linf", 0.3, **PGD),
            "torchattacks": ta_runner(lambda m: _ta().PGD(m, eps=0.3, alpha=0.01, steps=40, random_start=True)),
        },
        grad_steps=40,
    ),
    Case(
        "autoattack", "AutoAttack-standard (as torchattacks ships it) vs APGD ensemble, L∞ ε=0.3", "linf", 0.3,
        "torchattacks AutoAttack(version='standard'): APGD-CE, APGD-T (9 targets), FAB-T (9 targets) with "
        "torchattacks' default of 10 iterations each, then Square (5000 queries); advlab apgd-ensemble with the "
        "same 10 iterations: APGD-CE, APGD-T (9 targets), Square (5000 queries), each on the examples still robust",
        {
            "advlab": advlab_runner("apgd-ensemble", "linf", 0.3, steps=10, candidates=10, max_queries=5000),
            "torchattacks": ta_runner(lambda m: _ta().AutoAttack(m, norm="Linf", eps=0.3, version="standard",
                                                                 n_classes=10, seed=SEED)),
        },
    ),
    Case(
        "autoattack-100", "AutoAttack with 100 iterations vs APGD ensemble, L∞ ε=0.3", "linf", 0.3,
        "the original AutoAttack's standard setting (Croce & Hein 2020: 100 iterations per APGD/FAB run), "
        "built from torchattacks' parts: MultiAttack of APGD-CE, APGD-T (9 targets), FAB-T (9 targets), all "
        "with steps=100, and Square (5000 queries); advlab apgd-ensemble with steps=100",
        {
            "advlab": advlab_runner("apgd-ensemble", "linf", 0.3, steps=100, candidates=10, max_queries=5000),
            "torchattacks": ta_runner(_ta_autoattack_100),
        },
    ),
]


# ---- running -----------------------------------------------------------------------------------

def available(lib: str) -> str | None:
    """The library's version, or None when it is not installed."""
    if lib == "advlab":
        return advlab.__version__
    try:
        __import__(lib)
        return metadata.version(DIST[lib])
    except Exception:
        return None


def _plan(cases: list[Case], versions: dict, ctx: Ctx, n_all: int) -> tuple[list, list]:
    """The (case, library, n, runner) jobs to time, and the (case, library, why) pairs skipped."""
    jobs, skipped = [], []
    for case in cases:
        for lib in LIBRARIES:
            if lib not in case.runners:
                if case.compare_to is None:  # variants (early stop, channels_last) name only who runs them
                    skipped.append((case.key, lib, "has no such attack" if versions[lib] else "not installed"))
                continue
            if versions[lib] is None:
                skipped.append((case.key, lib, "not installed"))
                continue
            n = min(n_all, case.n_cap.get(lib, n_all))
            jobs.append((case, lib, n, case.runners[lib](ctx)))
    return jobs, skipped


def _rows(jobs: list, cases: list[Case], median: dict, times: dict, scores: dict, prints: dict, floor_ips: float,
          view_ratio: float) -> list[dict]:
    """One row per job: median time, speed, determinism, scores, efficiency against the floor, advlab's speed-up."""
    rows = []
    for case, lib, n, _ in jobs:
        t = median[case.key, lib]
        row = {"case": case.key, "attack": case.label, "library": lib, "n": n, "seconds": t,
               "times": times[case.key, lib], "images_per_s": n / t,
               "deterministic": len(prints[case.key, lib]) == 1, **scores[case.key, lib]}
        if case.grad_steps:
            row["floor_efficiency"] = n * case.grad_steps / t / floor_ips
            if lib == "advlab":  # against the same pass as advlab runs it
                row["view_floor_efficiency"] = row["floor_efficiency"] * view_ratio
        rows.append(row)
    by = {(r["case"], r["library"]): r for r in rows}
    for row in rows:  # advlab ÷ peer speed, per image (n may differ)
        case = next(c for c in cases if c.key == row["case"])
        ref = by.get((case.compare_to or case.key, "advlab"))
        if row["library"] != "advlab" and ref:
            row["advlab_speedup"] = (row["seconds"] / row["n"]) / (ref["seconds"] / ref["n"])
    return rows


def run(args, case_list: list[Case] | None = None) -> dict:
    torch.set_num_threads(args.threads)
    x_all, y_all = advlab.load_dataset("mnist", "test")
    x_all, y_all = x_all[: args.n], y_all[: args.n]
    model = advlab.load_model(args.model)
    with torch.no_grad():
        nb_classes = model(x_all[:1]).shape[1]
    ctx = Ctx(model, tuple(x_all.shape[1:]), nb_classes, len(x_all))
    versions = {lib: available(lib) for lib in LIBRARIES}
    cases = [c for c in (case_list or CASES) if not args.only or c.key in args.only]
    jobs, skipped = _plan(cases, versions, ctx, len(x_all))

    times: dict[tuple[str, str], list[float]] = {(c.key, lib): [] for c, lib, _, _ in jobs}
    scores: dict[tuple[str, str], dict] = {}
    prints: dict[tuple[str, str], set[str]] = {(c.key, lib): set() for c, lib, _, _ in jobs}
    floors, view_floors = [], []
    view = fast_view(model, x_all[:2])
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    for r in range(args.repeats):
        floors.append(floor_time(model, x_all, y_all))
        view_floors.append(floor_time(view, x_all, y_all))
        print(f"repeat {r + 1}/{args.repeats} at {time.perf_counter() - t_start:.0f} s: floor "
              f"{len(x_all) / floors[-1]:.0f} images/s (through advlab's view {len(x_all) / view_floors[-1]:.0f})",
              flush=True)
        for case, lib, n, runner in jobs:
            x, y = x_all[:n], y_all[:n]
            torch.manual_seed(SEED)
            np.random.seed(SEED)  # noqa: NPY002 — ART draws from the global NumPy RNG
            t0 = time.perf_counter()
            x_adv = runner(x.clone(), y.clone())
            seconds = time.perf_counter() - t0
            times[case.key, lib].append(seconds)
            prints[case.key, lib].add(_fingerprint(x_adv))
            if r == 0:
                scores[case.key, lib] = score(model, case, x, y, x_adv)
            s = scores[case.key, lib]
            print(f"  {case.key:9s} {lib:13s} n={n:5d} {seconds:8.2f} s  acc1 {s['acc1']:.3f}  success "
                  f"{s['success']:.3f}  med L2 {s['median_l2']:.3f}  valid {s['valid']:.3f}", flush=True)

    floor_s = statistics.median(floors)
    floor_ips = len(x_all) / floor_s
    view_floor_s = statistics.median(view_floors)
    rows = _rows(jobs, cases, {k: statistics.median(v) for k, v in times.items()}, times, scores, prints,
                 floor_ips, view_floor_s / floor_s)
    clean = predict_logits(model, x_all)
    return {
        "model": args.model, "n": len(x_all), "repeats": args.repeats, "threads": args.threads, "seed": SEED,
        "quick": args.quick, "environment": environment(), "torch": torch.__version__,
        "machine": platform.machine(), "processor": platform.processor(), "versions": versions,
        "clean_acc1": acc_at_k(clean, y_all, 1), "clean_acc5": acc_at_k(clean, y_all, 5),
        "floor_seconds": floor_s, "floor_images_per_s": floor_ips, "floor_times": floors,
        "view_floor_seconds": view_floor_s, "view_floor_times": view_floors, "view_is_model": view is model,
        "total_seconds": time.perf_counter() - t_start,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "settings": {c.key: c.settings for c in cases},
        "skipped": [{"case": c, "library": lib, "why": why} for c, lib, why in skipped],
        "rows": rows,
    }


FAMILIES = {"sparse": "peers_sparse", "minnorm": "peers_minnorm", "cw": "peers_cw"}


def main() -> None:
    sys.modules.setdefault("peers", sys.modules[__name__])  # run as a script: peers_report imports this module
    from peers_report import TARGETS, _json_safe, _nan, agreement, report

    if len(sys.argv) > 2 and sys.argv[1] == "--family":
        import importlib

        module = FAMILIES[sys.argv[2]]
        sys.argv = [str(Path(__file__).with_name(module + ".py")), *sys.argv[3:]]
        importlib.import_module(module).main()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images (the first n of the MNIST test set)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats; the median is reported")
    ap.add_argument("--model", default="lenet-mnist", help="any name or checkpoint advlab.load_model takes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", type=lambda s: s.split(","), default=None, help="comma-separated case keys")
    ap.add_argument("--robust-model", default="cnn-mnist-robust",
                    help="also run the robust-model cases (PGD, AutoAttack vs apgd-ensemble) on it; 'none' to skip")
    ap.add_argument("--robust-n", type=int, default=200, help="images for the robust-model cases")
    ap.add_argument("--robust-repeats", type=int, default=None,
                    help="timing repeats for the robust-model cases (default: --repeats)")
    ap.add_argument("--quick", action="store_true", help="100 images, 1 repeat, nothing written (development)")
    ap.add_argument("--from-json", action="store_true",
                    help=f"rerun nothing: rewrite the docs section from {RESULTS.relative_to(RESULTS.parents[2])}")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = min(args.n, 100), 1
    t_start = time.perf_counter()
    res = json.loads(RESULTS.read_text(), object_hook=_nan) if args.from_json else run(args)
    if not args.from_json and args.robust_model != "none":
        rargs = argparse.Namespace(**{**vars(args), "model": args.robust_model, "n": min(args.n, args.robust_n),
                                      "repeats": args.robust_repeats or args.repeats})
        res["robust"] = run(rargs, ROBUST_CASES)
    if not args.from_json:
        res["end_to_end_seconds"] = time.perf_counter() - t_start
    targets = [t for t in (f(res) for f in TARGETS) if t is not None]
    res["agreement"] = agreement(res)
    res["targets"] = [{"target": s, "pass": ok} for s, ok in targets]
    text = report(res, targets)
    print("\n" + text)
    if args.quick or args.only:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(_json_safe(res), indent=2) + "\n")
    write_section("peers", text)


if __name__ == "__main__":
    main()
