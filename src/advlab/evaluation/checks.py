"""Gradient-masking checks: the signs that an evaluation's white-box number cannot be trusted.

Each check has a code and an entry in docs/warnings.md (raised if / why it matters / what to do).
They run on a small subset of the evaluated images (the first ``n`` the model classifies
correctly) at the sweep's largest ε, after the evaluation's attacks, and cost about as much as
one PGD job on that subset. Athalye, Carlini, Wagner 2018 (https://arxiv.org/abs/1802.00420) and
Carlini et al. 2019, "On evaluating adversarial robustness" (https://arxiv.org/abs/1902.06705)
list these symptoms; a check that fires makes ``advlab evaluate`` re-run the adaptive attack
(``pgd-adaptive``: margin loss, BPDA, EOT) and report the strongest result.

Each check is one function below; every threshold is a named constant of this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from advlab._deprecation import warn_renamed
from advlab.attacks import get_attack, inference_view
from advlab.attacks.autobpda import PROBE_N
from advlab.attacks.gradient import steepest_step
from advlab.attacks.guard import leaves_autograd as cut_from_autograd
from advlab.attacks.losses import ce_loss, loss_grad
from advlab.threat import Norm, ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]

# code -> (short name, one-line explanation used in the table's note)
CHECKS: dict[str, tuple[str, str]] = {
    "GM01": ("large-eps-not-broken", "accuracy does not fall to 0 when ε is the whole input range"),
    "GM02": ("unbounded-attack-fails", "an unbounded attack (DeepFool, ε = ∞) fails on some inputs"),
    "GM03": ("black-box-beats-white-box", "a black-box attack (Square) beats the white-box attack"),
    "GM04": ("transfer-beats-white-box", "examples transferred from the undefended model beat the white-box attack"),
    "GM05": ("noise-beats-gradient", "random noise beats the gradient attack"),
    "GM06": ("zero-or-nan-gradients", "input gradients are zero or NaN on many inputs"),
    "GM07": ("random-gradients", "input gradients differ between two identical calls (a random model)"),
    "GM08": ("loss-not-rising", "gradient steps do not raise the attack loss"),
    "GM09": ("leaves-autograd", "the model's output is cut off from its input in autograd (no input gradient)"),
}
MARGIN = 0.02  # accuracy gap (absolute) that counts as "beats" (GM03, GM04, GM05)
ZERO_GRADIENT_SHARE = 0.1  # GM06 fires when at least this share of inputs has a zero or NaN gradient
GRADIENT_RTOL, GRADIENT_ATOL = 1e-4, 1e-7  # GM07: two gradient calls agree within these tolerances
LOSS_STEPS = 20  # GM08: gradient steps taken from the random start
LOSS_RISE_TOL = 1e-6  # GM08: a loss "rose" if it grew by more than this
LOSS_RISE_SHARE = 0.5  # GM08 fires when the loss rose on fewer than this share of inputs
LARGE_EPS_ACCURACY = 0.05  # GM01 fires when PGD at ε = the whole input range leaves more accuracy
UNBOUNDED_SUCCESS = 0.95  # GM02 fires when unbounded DeepFool succeeds on fewer than this share
DEEPFOOL_STEPS = 100  # GM02: DeepFool's iterations
PGD_STEPS = 40  # the checks' PGD (white-box reference, transfer, GM01)
PGD_LINF_STEP = 0.01  # its L∞ step up to PGD_LINF_STEP_MAX_EPS ...
PGD_LINF_STEP_MAX_EPS = 0.4
STEP_FACTOR = 2.5  # ... and otherwise a step of STEP_FACTOR · ε / steps (also GM08's step)
MAX_QUERIES = 1000  # GM03: Square's query budget per input
BATCH = 500  # inputs per forward pass when picking the correctly classified subset


@dataclass
class CheckResult:
    """One check's outcome on the subset."""

    code: str
    name: str
    fired: bool
    detail: str
    value: float | None = None

    def as_dict(self) -> dict[str, Any]:  # noqa: D102
        return asdict(self)

    @property
    def message(self) -> str:
        """The warning text shown in the table: code, what, measured detail."""
        return f"{self.code} {CHECKS[self.code][1]} ({self.detail})"


@dataclass
class Subset:
    """What every check works on: the model, the correctly classified inputs, the threat model, the RNG."""

    model: Model
    x: torch.Tensor
    y: torch.Tensor
    threat: ThreatModel
    gen: torch.Generator
    seed: int
    # the checks' own attacks at ε: name -> (x_adv, minimal); they count towards the worst case
    found: dict[str, tuple[torch.Tensor, bool]] = field(default_factory=dict)


@dataclass
class CheckRun:
    """Every check's result, the subset it ran on (indices into the evaluated inputs) and its attacks' x_adv."""

    results: list[CheckResult]
    idx: torch.Tensor
    found: dict[str, tuple[torch.Tensor, bool]]
    eps: float


def result(code: str, fired: bool, detail: str, value: float | None = None) -> CheckResult:
    """A check's result under its registered name."""
    return CheckResult(code, CHECKS[code][0], bool(fired), detail, value)


def _acc(model: Model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _keep(s: Subset, name: str, x_adv: torch.Tensor, minimal: bool = False) -> float:
    """Keep a check's own attack (it counts towards the worst case); its Acc@1 on the subset."""
    s.found[f"check:{name}"] = (x_adv, minimal)
    return _acc(s.model, x_adv, s.y)


def _pgd(model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, gen: torch.Generator,
         steps: int = PGD_STEPS, random_start: bool = True) -> torch.Tensor:
    small_linf = threat.norm == "linf" and threat.eps <= PGD_LINF_STEP_MAX_EPS
    step = PGD_LINF_STEP if small_linf else STEP_FACTOR * threat.eps / steps
    return get_attack("pgd")(model, x, y, threat, generator=gen, steps=steps, step_size=step,
                             random_start=random_start).x_adv


def correct_subset(model: Model, x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first ``n`` inputs the model classifies correctly."""
    with torch.no_grad():
        ok = torch.cat([model(x[i : i + BATCH]).argmax(1) == y[i : i + BATCH] for i in range(0, len(x), BATCH)])
    return ok.nonzero().squeeze(1)[:n]


def zero_or_nan_gradients(g: torch.Tensor) -> CheckResult:
    """GM06: many inputs whose loss gradient is zero or not finite."""
    gnorm = g.flatten(1).norm(dim=1)
    bad = (gnorm == 0) | ~torch.isfinite(gnorm)
    share = float(bad.float().mean())
    return result("GM06", share >= ZERO_GRADIENT_SHARE, f"{int(bad.sum())} of {len(g)} inputs have a zero or NaN "
                  "gradient", share)


def random_gradients(g1: torch.Tensor, g2: torch.Tensor) -> CheckResult:
    """GM07: two identical gradient calls disagree (the model is random)."""
    differs = not torch.allclose(g1, g2, rtol=GRADIENT_RTOL, atol=GRADIENT_ATOL)
    return result("GM07", differs, "two calls gave different gradients" if differs else "two calls agreed")


def white_box_accuracy(s: Subset) -> float:
    """The white-box reference on the subset: the lower Acc@1 of PGD and (where it applies) FGSM at ε."""
    acc = _keep(s, "pgd", _pgd(s.model, s.x, s.y, s.threat, s.gen))
    if s.threat.norm in get_attack("fgsm").norms:
        acc = min(acc, _keep(s, "fgsm", get_attack("fgsm")(s.model, s.x, s.y, s.threat).x_adv))
    return acc


def loss_not_rising(s: Subset) -> CheckResult:
    """GM08: gradient steps from the random start do not raise the cross-entropy on most inputs."""
    threat, model = s.threat, s.model
    x0 = threat.random_init(s.x, torch.Generator().manual_seed(s.seed + 1))
    with torch.no_grad():
        l0 = ce_loss(model(x0), s.y)
    xk = x0.clone()
    alpha = STEP_FACTOR * threat.eps / LOSS_STEPS if threat.eps > 0 else 0.0
    for _ in range(LOSS_STEPS):
        _, g, _ = loss_grad(model, xk, s.y)
        xk = threat.project(s.x, xk + steepest_step(g, threat.norm, alpha, at=xk, bounds=threat.bounds))
    with torch.no_grad():
        lk = ce_loss(model(xk), s.y)
    rose = float((lk > l0 + LOSS_RISE_TOL).float().mean())
    return result("GM08", rose < LOSS_RISE_SHARE, f"the loss rose on {rose:.0%} of inputs over {LOSS_STEPS} steps",
                  rose)


def noise_accuracy(s: Subset) -> float:
    """Acc@1 on the subset under uniform noise in the ε-ball (kept as a check's attack)."""
    return _keep(s, "noise", get_attack("noise")(s.model, s.x, s.y, s.threat, generator=s.gen).x_adv)


def noise_beats_gradient(s: Subset, acc_wb: float) -> CheckResult:
    """GM05: random noise in the ε-ball beats the white-box attack."""
    acc = noise_accuracy(s)
    return result("GM05", acc < acc_wb - MARGIN, f"noise Acc@1 {acc:.3f} vs white-box {acc_wb:.3f}", acc)


def black_box_beats_white_box(s: Subset, acc_wb: float | None, max_queries: int) -> CheckResult | None:
    """GM03: the Square attack (scores only) beats the white-box attack; None where Square has no such norm."""
    square = get_attack("square")
    if s.threat.norm not in square.norms:
        return None
    acc = _keep(s, "square", square(s.model, s.x, s.y, s.threat, generator=s.gen, max_queries=max_queries).x_adv)
    if acc_wb is None:
        return None
    return result("GM03", acc < acc_wb - MARGIN,
                  f"Square ({max_queries} queries) Acc@1 {acc:.3f} vs white-box {acc_wb:.3f}", acc)


def transfer_beats_white_box(s: Subset, acc_wb: float) -> CheckResult | None:
    """GM04: PGD on the undefended model behind a wrapper beats the white-box attack; None without one."""
    surrogate = getattr(s.model, "surrogate", None)
    if not callable(surrogate) or surrogate() is s.model:
        return None
    acc = _keep(s, "transfer", _pgd(surrogate(), s.x, s.y, s.threat, s.gen))
    return result("GM04", acc < acc_wb - MARGIN, f"transfer Acc@1 {acc:.3f} vs white-box {acc_wb:.3f}", acc)


def large_eps_not_broken(s: Subset) -> CheckResult | None:
    """GM01: PGD with ε as large as the whole input range, no random start, leaves accuracy above 0."""
    lo, hi = s.threat.bounds
    size = s.x[0].numel()
    big = {"linf": hi - lo, "l2": (hi - lo) * math.sqrt(size), "l1": (hi - lo) * size}.get(s.threat.norm)
    if big is None:
        return None
    threat = ThreatModel(s.threat.norm, big, s.threat.bounds)
    acc = _acc(s.model, _pgd(s.model, s.x, s.y, threat, s.gen, random_start=False), s.y)
    return result("GM01", acc > LARGE_EPS_ACCURACY, f"PGD at ε = {big:g} leaves Acc@1 {acc:.3f}", acc)


def unbounded_attack_fails(s: Subset) -> CheckResult | None:
    """GM02: DeepFool with ε = ∞, which should always succeed, fails on some inputs (L2 and L∞ only)."""
    if s.threat.norm not in ("l2", "linf"):
        return None
    df = get_attack("deepfool")(s.model, s.x, s.y, ThreatModel(s.threat.norm, math.inf, s.threat.bounds),
                                steps=DEEPFOOL_STEPS)
    s.found["check:deepfool"] = (df.x_adv, True)  # (counted at ε by its distance: a minimal attack)
    with torch.no_grad():
        succ = float((s.model(df.x_adv).argmax(1) != s.y).float().mean())
    return result("GM02", succ < UNBOUNDED_SUCCESS, f"DeepFool (ε = ∞, {DEEPFOOL_STEPS} steps) succeeds on {succ:.1%}",
                  succ)


def leaves_autograd_check(s: Subset, cut: bool | None = None) -> CheckResult:
    """GM09: the output is cut off from the input in autograd (numpy, Pillow, ``.detach()`` in ``forward``).

    ``cut`` is the answer where the caller probed the model already.
    """
    cut = cut_from_autograd(s.model, s.x[:PROBE_N]) if cut is None else cut
    return result("GM09", cut, "the output does not depend on the input in autograd: white-box attacks cannot run"
                  if cut else "the output depends on the input in autograd")


def check_model(
    model: Model, x: torch.Tensor, y: torch.Tensor, norm: Norm, eps: float, *,
    bounds: tuple[float, float] = (0.0, 1.0), n: int = 200, seed: int = 0, max_queries: int = MAX_QUERIES,
    leaves_autograd: bool | None = None,
) -> CheckRun:
    """Every check on the first ``n`` correctly classified inputs, with the subset and the checks' own x_adv.

    A model whose forward leaves autograd (GM09) gets the checks that need no gradient only: its
    noise and Square results are still measured (and count towards the worst case).
    ``leaves_autograd`` passes on what the caller has probed already (None: probe here).
    """
    model = inference_view(model)
    idx = correct_subset(model, x, y, n)
    s = Subset(model, x[idx], y[idx], ThreatModel(norm, eps, bounds), torch.Generator().manual_seed(seed), seed)
    if len(idx) == 0:
        return CheckRun([], idx, {}, eps)
    gm09 = leaves_autograd_check(s, leaves_autograd)
    if gm09.fired:
        noise_accuracy(s)
        black_box_beats_white_box(s, None, max_queries)
        return CheckRun([gm09], idx, s.found, eps)
    _, g1, _ = loss_grad(model, s.x, s.y)
    _, g2, _ = loss_grad(model, s.x, s.y)
    results = [zero_or_nan_gradients(g1), random_gradients(g1, g2)]
    acc_wb = white_box_accuracy(s)  # consumes the shared generator first, as every check after it does
    results += [loss_not_rising(s), noise_beats_gradient(s, acc_wb)]
    found = [black_box_beats_white_box(s, acc_wb, max_queries), transfer_beats_white_box(s, acc_wb),
             large_eps_not_broken(s), unbounded_attack_fails(s), gm09]
    return CheckRun(results + [r for r in found if r is not None], idx, s.found, eps)


def run_checks(
    model: Model, x: torch.Tensor, y: torch.Tensor, norm: Norm, eps: float, *,
    bounds: tuple[float, float] = (0.0, 1.0), n: int = 200, seed: int = 0, max_queries: int = MAX_QUERIES,
    square_queries: int | None = None,
) -> list[CheckResult]:
    """Run every gradient-masking check on the first ``n`` correctly classified inputs.

    Args:
        model: The model under evaluation (any torch model; a defended wrapper may declare
            ``randomized``, ``differentiable`` and offer ``surrogate()``). A model in training
            mode is checked through its eval-mode copy (:func:`~advlab.attacks.inference_view`).
        x: Inputs.
        y: Labels.
        norm: The threat model's norm (``linf`` or ``l2``; others use ``linf``-free checks only).
        eps: The largest budget of the sweep.
        bounds: Input bounds.
        n: Subset size.
        seed: Seed of the checks' own attacks.
        max_queries: Query budget per input of the black-box comparison (GM03).
        square_queries: Deprecated name of ``max_queries`` (until advlab 0.3).

    Returns:
        One :class:`CheckResult` per check that could run (:func:`check_model` also returns the
        subset and the checks' adversarial examples).
    """
    if square_queries is not None:
        warn_renamed("run_checks", "square_queries", "max_queries")
        max_queries = square_queries
    return check_model(model, x, y, norm, eps, bounds=bounds, n=n, seed=seed, max_queries=max_queries).results
