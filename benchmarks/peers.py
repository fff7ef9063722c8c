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
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import environment, write_section

import advlab
from advlab.attacks import fast_view, get_attack, loss_grad
from advlab.metrics import acc_at_k, perturbation_norms, predict_logits

INF = float("inf")
SEED = 0
RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
LIBRARIES = ("advlab", "torchattacks", "foolbox", "art")
LIB_NAMES = {"advlab": "advlab", "torchattacks": "torchattacks", "foolbox": "Foolbox", "art": "ART"}
DIST = {"torchattacks": "torchattacks", "foolbox": "foolbox", "art": "adversarial-robustness-toolbox"}

Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> x_adv
Factory = Callable[["Ctx"], Runner]


@dataclass
class Ctx:
    """What runner factories need: the model and each library's wrapper of it (built once)."""

    model: nn.Module
    input_shape: tuple[int, ...]
    nb_classes: int
    batch_size: int  # ART's batch_size, set to the number of images so ART batches like the others
    _fmodel: object = None
    _art: object = None

    def channels_last(self) -> Ctx:
        """The same context around a copy of the model with channels_last weights (a user's own tuning)."""
        model = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
        return Ctx(model, self.input_shape, self.nb_classes, self.batch_size)

    def fmodel(self):
        if self._fmodel is None:
            import foolbox as fb

            self._fmodel = fb.PyTorchModel(self.model, bounds=(0, 1))
        return self._fmodel

    def art(self):
        if self._art is None:
            from art.estimators.classification import PyTorchClassifier

            self._art = PyTorchClassifier(
                model=self.model, loss=nn.CrossEntropyLoss(), input_shape=self.input_shape,
                nb_classes=self.nb_classes, clip_values=(0.0, 1.0), device_type="cpu",
            )
        return self._art


@dataclass(frozen=True)
class Case:
    """One attack with one matched setting.

    Attributes:
        key: Short id (``--only``, JSON, targets).
        label: The attack column of the table.
        norm: ``"linf"`` or ``"l2"``: the norm of the ε budget checked by ``valid``.
        eps: The budget (``inf`` for minimal-perturbation attacks).
        settings: One line stating the matched setting and how each library spells it.
        runners: Library → factory of a runner ``(x, y) -> x_adv``; a library missing here is
            reported as not having the attack.
        grad_steps: Gradient steps per image, for the floor efficiency (None: not a fixed count).
        n_cap: Library → at most this many images (for very slow peers).
        compare_to: The key of the advlab case the peers' speed ratio is taken against (default:
            this case).
    """

    key: str
    label: str
    norm: str
    eps: float
    settings: str
    runners: dict[str, Factory]
    grad_steps: int | None = None
    n_cap: dict[str, int] = field(default_factory=dict)
    compare_to: str | None = None


# ---- runner factories, one helper per library ---------------------------------------------

def advlab_runner(attack: str, norm: str, eps: float, **params) -> Factory:
    def make(ctx: Ctx) -> Runner:
        threat = advlab.ThreatModel(norm, eps)

        def run(x, y):
            gen = torch.Generator().manual_seed(SEED)
            return get_attack(attack)(ctx.model, x, y, threat, generator=gen, **params).x_adv

        return run

    return make


def ta_runner(build: Callable[[nn.Module], object]) -> Factory:
    def make(ctx: Ctx) -> Runner:
        attack = build(ctx.model)
        return lambda x, y: attack(x, y)

    return make


def fb_runner(build: Callable[[], object], eps: float | None) -> Factory:
    def make(ctx: Ctx) -> Runner:
        fmodel, attack = ctx.fmodel(), build()

        def run(x, y):
            _, clipped, _ = attack(fmodel, x, y, epsilons=eps)
            return clipped

        return run

    return make


def art_runner(build: Callable[[object, int], object]) -> Factory:
    def make(ctx: Ctx) -> Runner:
        attack = build(ctx.art(), ctx.batch_size)
        return lambda x, y: torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

    return make


def _ta():
    import torchattacks

    return torchattacks


def _fb():
    import foolbox

    return foolbox.attacks


def _art():
    import art.attacks.evasion as ev

    return ev


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


# ---- scoring -----------------------------------------------------------------------------------

def score(model, case: Case, x, y, x_adv) -> dict:
    """The same figures for every library, from the model's prediction on the returned x_adv."""
    x_adv = x_adv.detach().to(torch.float32).reshape(x.shape)
    logits = predict_logits(model, x_adv)
    ok = logits.argmax(1) != y
    norms = perturbation_norms(x, x_adv)
    finite = torch.isfinite(x_adv).flatten(1).all(1)
    inside = (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
    dist = norms["linf"] if case.norm == "linf" else norms["l2"]
    within = dist <= case.eps + 1e-5 if case.eps != INF else torch.ones_like(inside)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -INF).amax(1)
    blank = (x_adv.flatten(1) == 0).all(1) & (x.flatten(1) != 0).any(1)
    gap = true - other  # > 0: still classified correctly; 0: an exact tie, which argmax breaks by index

    def med(v):
        return float(v[ok].median()) if ok.any() else float("nan")

    return {
        "acc1": acc_at_k(logits, y, 1), "acc5": acc_at_k(logits, y, 5), "success": float(ok.float().mean()),
        "median_l2": med(norms["l2"]), "median_linf": med(norms["linf"]),
        "valid": float((finite & inside & within).float().mean()),
        # What the observations report: images returned all black, and examples left on the boundary.
        "all_black": int(blank.sum()),
        "ties": int((gap == 0).sum()), "ties_success": int(((gap == 0) & ok).sum()),
        "near_boundary": int((gap.abs() <= 1e-5).sum()), "near_boundary_correct": int(((gap.abs() <= 1e-5) & ~ok).sum()),
    }


def floor_time(model, x, y) -> float:
    """Seconds for one forward+backward (input gradient) pass over the batch: the median of 5.

    Measured on the model as given (the floor every library starts from); ``fast_view(model)``
    gives the same pass as advlab's attacks run it.
    """
    loss_grad(model, x, y)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        loss_grad(model, x, y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fingerprint(t: torch.Tensor) -> str:
    t = t.detach().double()
    return f"{float(t.sum()):.10g}/{float(t.square().sum()):.10g}"


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
    jobs = []  # (case, lib, n, runner)
    skipped = []
    for case in cases:
        for lib in LIBRARIES:
            if lib not in case.runners:
                if case.compare_to is None:  # variants (early stop, channels_last) name only who runs them
                    skipped.append((case.key, lib, "has no such attack" if versions[lib] else "not installed"))
                continue
            if versions[lib] is None:
                skipped.append((case.key, lib, "not installed"))
                continue
            n = min(len(x_all), case.n_cap.get(lib, len(x_all)))
            jobs.append((case, lib, n, case.runners[lib](ctx)))

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
    rows = []
    for case, lib, n, _ in jobs:
        t = statistics.median(times[case.key, lib])
        row = {"case": case.key, "attack": case.label, "library": lib, "n": n, "seconds": t,
               "times": times[case.key, lib], "images_per_s": n / t,
               "deterministic": len(prints[case.key, lib]) == 1, **scores[case.key, lib]}
        if case.grad_steps:
            row["floor_efficiency"] = n * case.grad_steps / t / floor_ips
            if lib == "advlab":  # against the same pass as advlab runs it
                row["view_floor_efficiency"] = row["floor_efficiency"] * view_floor_s / floor_s
        rows.append(row)
    by = {(r["case"], r["library"]): r for r in rows}
    for row in rows:  # advlab ÷ peer speed, per image (n may differ)
        case = next(c for c in cases if c.key == row["case"])
        ref = by.get((case.compare_to or case.key, "advlab"))
        if row["library"] != "advlab" and ref:
            row["advlab_speedup"] = (row["seconds"] / row["n"]) / (ref["seconds"] / ref["n"])
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


# ---- agreement and speed targets ---------------------------------------------------------------

def _per_image(r: dict) -> float:
    return r["seconds"] / r["n"]


def _fastest_peer(res: dict, key: str) -> dict | None:
    peers = [r for r in res["rows"] if r["case"] == key and r["library"] != "advlab"]
    return min(peers, key=_per_image) if peers else None


def _get(res: dict, key: str, lib: str) -> dict | None:
    return next((r for r in res["rows"] if r["case"] == key and r["library"] == lib), None)


def agreement(res: dict) -> list[str]:
    lines = []
    for key, name in (("pgd", "PGD"), ("fgsm", "FGSM")):
        a, t = _get(res, key, "advlab"), _get(res, key, "torchattacks")
        if a and t:
            lines.append(f"{name} robust accuracy: advlab {a['acc1']:.3f} vs torchattacks {t['acc1']:.3f} "
                         f"({100 * (a['acc1'] - t['acc1']):+.1f} points)")
    for key, name in (("deepfool", "DeepFool"), ("cw", "CW-L2")):
        a = _get(res, key, "advlab")
        peers = [r for r in res["rows"] if r["case"] == key and r["library"] != "advlab"]
        if a and peers:
            best = max(peers, key=lambda r: r["success"])
            lines.append(f"{name} success: advlab {a['success']:.3f} vs best peer {LIB_NAMES[best['library']]} "
                         f"{best['success']:.3f} ({100 * (a['success'] - best['success']):+.1f} points); median L2 "
                         f"advlab {a['median_l2']:.3f} vs {best['median_l2']:.3f}")
    return lines


def _speed(res: dict, key: str, ref: str | None = None) -> tuple[float, dict] | None:
    """advlab's speed on case ``key`` ÷ the fastest peer's on case ``ref`` (per image)."""
    a, p = _get(res, key, "advlab"), _fastest_peer(res, ref or key)
    return (_per_image(p) / _per_image(a), p) if a and p else None


def target_pgd(res: dict) -> tuple[str, bool] | None:
    s, a = _speed(res, "pgd"), _get(res, "pgd", "advlab")
    if not s or not a:
        return None
    ratio, p = s
    eff = a["floor_efficiency"]
    text = (f"PGD fixed steps ≥ 1.0× fastest peer ({LIB_NAMES[p['library']]}) and ≥ 0.9 floor efficiency: "
            f"{ratio:.2f}×, efficiency {eff:.2f}")
    if "view_floor_efficiency" in a:
        text += (f" (against the floor pass through advlab's view of the model, as its attacks run it: "
                 f"{a['view_floor_efficiency']:.2f})")
    cl = _speed(res, "pgd", "pgd-cl")
    if cl:
        text += (f"; against the fastest peer handed a channels_last copy of the model "
                 f"({LIB_NAMES[cl[1]['library']]}): {cl[0]:.2f}×")
    return text, ratio >= 1.0 and eff >= 0.9


def target_pgd_es(res: dict) -> tuple[str, bool] | None:
    s, a, fixed = _speed(res, "pgd-es", "pgd"), _get(res, "pgd-es", "advlab"), _get(res, "pgd", "advlab")
    if not s or not a or not fixed:
        return None
    ratio, p = s
    same = a["acc1"] == fixed["acc1"] == p["acc1"]
    return (f"PGD early stop ≥ 1.5× fastest peer's fixed-step PGD ({LIB_NAMES[p['library']]}) with identical "
            f"robust accuracy: {ratio:.2f}×, Acc@1 {a['acc1']:.3f} (advlab fixed {fixed['acc1']:.3f}, "
            f"{LIB_NAMES[p['library']]} {p['acc1']:.3f})", ratio >= 1.5 and same)


def _minimal_target(res: dict, key: str, name: str, need: float) -> tuple[str, bool] | None:
    s, a = _speed(res, key), _get(res, key, "advlab")
    if not s or not a:
        return None
    ratio, p = s
    l2 = a["median_l2"] / p["median_l2"] - 1
    text = (f"{name} ≥ {need:g}× fastest peer ({LIB_NAMES[p['library']]}) with median L2 ≤ its +2%: "
            f"{ratio:.2f}×, median L2 {a['median_l2']:.3f} vs {p['median_l2']:.3f} ({100 * l2:+.1f}%)")
    # Medians compare only over the same images: peers run on all of advlab's, at no lower success.
    same = [r for r in res["rows"] if r["case"] == key and r["library"] != "advlab" and r["n"] == a["n"]
            and r["success"] >= a["success"]]
    best = min(same, key=lambda r: r["median_l2"]) if same else p
    if best is not p:
        text += (f" [for reference, vs the peer with the smallest median L2 on the same images at no lower success, "
                 f"{LIB_NAMES[best['library']]}: {_per_image(best) / _per_image(a):.2f}×, median L2 "
                 f"{100 * (a['median_l2'] / best['median_l2'] - 1):+.1f}%]")
    return text, ratio >= need and l2 <= 0.02


TARGETS: list[Callable[[dict], tuple[str, bool] | None]] = [
    target_pgd,
    target_pgd_es,
    lambda res: _minimal_target(res, "deepfool", "DeepFool", 3.0),
    lambda res: _minimal_target(res, "cw", "CW-L2", 1.0),
]


# ---- reporting ---------------------------------------------------------------------------------

def _f(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def table(res: dict) -> list[str]:
    lines = [
        "| library | attack | n | wall time (median s) | images/s | Acc@1 | Acc@5 | success | median L2 | "
        "median L∞ | valid | advlab/peer speed | floor efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        speed = f"{r['advlab_speedup']:.2f}×" if "advlab_speedup" in r else "—"
        lines.append(
            f"| {LIB_NAMES[r['library']]} | {r['attack']} | {r['n']} | {r['seconds']:.2f} | "
            f"{r['images_per_s']:.0f} | {r['acc1']:.3f} | {r['acc5']:.3f} | {r['success']:.3f} | "
            f"{_f(r['median_l2'])} | {_f(r['median_linf'])} | {r['valid']:.3f} | {speed} | "
            f"{_f(r.get('floor_efficiency'), '.2f')} |"
        )
    return lines


def observations(res: dict) -> list[str]:
    lines = []
    for r in res["rows"]:
        who = f"{LIB_NAMES[r['library']]} {r['attack']}"
        if r["all_black"]:
            lines.append(f"{who} returned {r['all_black']} all-black images (its failures); scored as the model "
                         "sees them, so they count as successes if the black image is misclassified")
        if r["near_boundary"]:
            lines.append(f"{who} left {r['near_boundary']} images within 1e-5 of the decision boundary (true-class "
                         f"logit minus the best other), {r['ties']} of them exact ties; {r['near_boundary_correct']} "
                         f"of them are still classified correctly (argmax breaks a tie towards the lower class index, "
                         f"so {r['ties_success']} of the ties count as successes)")
        if r["valid"] < 1:
            lines.append(f"{who}: only {r['valid']:.3f} of x_adv inside [0, 1] and the ε-ball (+1e-5)")
        if not r["deterministic"]:
            lines.append(f"{who}: x_adv differed between repeats (scores are from the first)")
    for s in res["skipped"]:
        lines.append(f"{LIB_NAMES[s['library']]} skipped for {s['case']}: {s['why']}")
    lines += [
        "Foolbox's CW returns an all-black (all-zero) image for every example it fails on; any such image is "
        "scored like any other x_adv (all-black CW images in this run: "
        + ", ".join(f"{LIB_NAMES[r['library']]} {r['all_black']}" for r in res["rows"] if r["case"] == "cw")
        + ").",
        "torchattacks' DeepFool leaves images on (not past) the boundary: where clipping to [0, 1] eats part of "
        "each step it converges to the tie and runs all 50 iterations; argmax then breaks the tie towards the "
        "lower class index, so many of its x_adv are still classified correctly. ART's DeepFool attacks the "
        "predicted class, not the label.",
        "Speed ratios are per image. Where a peer ran on fewer images (the n column) its batches are smaller, "
        "which on a CPU costs some per-image efficiency, so those ratios overstate the gap somewhat.",
        "Floor efficiency above 1 means a library's gradient steps ran faster than the floor pass measured at the "
        "start of the repeat: under a varying load the floor is itself noisy.",
    ]
    return lines


def report(res: dict, targets: list[tuple[str, bool]]) -> str:
    v = res["versions"]
    caps = sorted({r["n"] for r in res["rows"]} - {res["n"]})
    lines = [
        "## advlab vs torchattacks, Foolbox, ART",
        "",
        f"`python benchmarks/peers.py --n {res['n']} --repeats {res['repeats']} --model {res['model']}` "
        f"(`make bench-peers`) — `{res['model']}`, first {res['n']} MNIST test images"
        + (f" (fewer where the n column says so: {', '.join(map(str, caps))})" if caps else "")
        + f", seed {SEED}. {res['environment']}. Libraries: advlab {v['advlab']}, torchattacks "
        f"{v['torchattacks']}, Foolbox {v['foolbox']}, ART {v['art']}; CPU {res['processor'] or res['machine']}. "
        f"Clean Acc@1 {res['clean_acc1']:.3f}, Acc@5 {res['clean_acc5']:.3f}. Whole run "
        + (f"{res['end_to_end_seconds'] / 60:.1f} min end to end (this model's cases "
           f"{res['total_seconds'] / 60:.1f} min)" if "end_to_end_seconds" in res
           else f"{res['total_seconds'] / 60:.1f} min")
        + f"; load average {res['load_average_before'][0]:.1f} before, "
        f"{res['load_average_after'][0]:.1f} after (2 cores shared with other jobs: the times are noisy, "
        "and the floor is measured under the same load).",
        "",
        f"Each time is the median of {res['repeats']} interleaved repeats (repeat r runs every case of every "
        "library before repeat r+1). Every x_adv is scored here, from the model's prediction on it, never "
        "from a library's own success flag: success = prediction ≠ label; medians over successful examples; "
        "valid = fraction finite, inside [0, 1] and inside the ε-ball (+1e-5). advlab/peer speed = the "
        "peer's time per image ÷ advlab's (for the same case; advlab's fixed-step PGD for the peers' PGD). "
        f"Floor: one forward+backward (input gradient) pass over the {res['n']}-image batch, "
        f"{res['floor_images_per_s']:.0f} images/s ({res['floor_seconds'] * 1000:.1f} ms); floor efficiency = "
        "(images × gradient steps / time) ÷ floor. advlab's attacks run the model through "
        "`advlab.attacks.fast_view` (detached parameters, channels_last convolution weights; the model "
        "itself is untouched): the same pass through that view runs at "
        + (f"{res['n'] / res['view_floor_seconds']:.0f} images/s" if "view_floor_seconds" in res else "—")
        + ", and the `pgd-cl` row hands the peers a channels_last copy of the model to show how much of "
        "the difference is that layout.",
        "",
        "Matched settings:",
        "",
    ]
    lines += [f"- {c.label}: {res['settings'][c.key]}" for c in CASES if c.key in res["settings"]]
    rob = res.get("robust")
    lines += ["", *table(res), "", "Agreement:", ""]
    lines += [f"- {s}" for s in agreement(res)]
    lines += ["", "Speed targets:", ""]
    lines += [f"- **{'PASS' if ok else 'MISS'}** {s}" for s, ok in targets]
    obs = observations(res)
    if obs:
        lines += ["", "Observations:", ""] + [f"- {s}" for s in obs]
    if rob:
        lines += ["", f"### On the adversarially trained `{rob['model']}` (first {rob['n']} images, "
                  f"{rob['repeats']} repeat(s))", "", "Matched settings:", ""]
        lines += [f"- {c.label}: {rob['settings'][c.key]}" for c in ROBUST_CASES if c.key in rob["settings"]]
        lines += ["", *table(rob), ""]
        for key, what in (("autoattack", "10 iterations, as torchattacks ships AutoAttack-standard"),
                          ("autoattack-100", "100 iterations, as the original AutoAttack")):
            a, t = _get(rob, key, "advlab"), _get(rob, key, "torchattacks")
            if a and t:
                lines.append(f"- {what}: robust accuracy advlab APGD ensemble {a['acc1']:.3f} vs torchattacks "
                             f"{t['acc1']:.3f} ({100 * (a['acc1'] - t['acc1']):+.1f} points); advlab "
                             f"{_per_image(t) / _per_image(a):.2f}× torchattacks' speed per image.")
        a, p40 = _get(rob, "autoattack-100", "advlab"), _get(rob, "pgd", "advlab")
        if a and p40:
            lines.append(f"- The 100-iteration ensemble's robust accuracy {a['acc1']:.3f} is "
                         f"{'≤' if a['acc1'] <= p40['acc1'] else '>'} PGD-40's {p40['acc1']:.3f} on the same images.")
    return "\n".join(lines)


def _json_safe(v):
    """NaN → null, so the file is strict JSON."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def _nan(d: dict) -> dict:
    """null → NaN for the median columns (the inverse of _json_safe)."""
    return {k: float("nan") if v is None and k.startswith("median") else v for k, v in d.items()}


FAMILIES = {"sparse": "peers_sparse", "minnorm": "peers_minnorm", "cw": "peers_cw"}


def main() -> None:
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
