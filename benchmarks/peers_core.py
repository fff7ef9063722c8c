"""The peers benchmark's building blocks: cases, runner factories per library, scoring (from peers.py).

benchmarks/peers.py (the cases and the run) and the family modules (peers_sparse, peers_minnorm,
peers_cw) import these; peers.py re-exports them, so ``from peers import Case, ...`` keeps working.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import advlab
from advlab.attacks import get_attack, loss_grad
from advlab.metrics import acc_at_k, perturbation_norms, predict_logits

INF = float("inf")
SEED = 0
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
