"""Gradient-masking checks: the signs that an evaluation's white-box number cannot be trusted.

Each check has a code and an entry in docs/warnings.md (raised if / why it matters / what to do).
They run on a small subset of the evaluated images (the first ``n`` the model classifies
correctly) at the sweep's largest ε, after the evaluation's attacks, and cost about as much as
one PGD job on that subset. Athalye, Carlini, Wagner 2018 (https://arxiv.org/abs/1802.00420) and
Carlini et al. 2019, "On evaluating adversarial robustness" (https://arxiv.org/abs/1902.06705)
list these symptoms; a check that fires makes ``advlab evaluate`` re-run the adaptive attack
(``pgd-adaptive``: margin loss, BPDA, EOT) and report the strongest result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from advlab.attacks import get_attack
from advlab.attacks.adaptive import needs_bpda, needs_eot
from advlab.attacks.gradient import steepest_step
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
}
MARGIN = 0.02  # accuracy gap (absolute) that counts as "beats"


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


def _acc(model: Model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _pgd(model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, gen: torch.Generator,
         steps: int = 40, random_start: bool = True) -> torch.Tensor:
    step = 0.01 if threat.norm == "linf" and threat.eps <= 0.4 else 2.5 * threat.eps / steps
    return get_attack("pgd")(model, x, y, threat, generator=gen, steps=steps, step_size=step,
                             random_start=random_start).x_adv


def run_checks(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: Norm,
    eps: float,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    n: int = 200,
    seed: int = 0,
    square_queries: int = 1000,
) -> list[CheckResult]:
    """Run every gradient-masking check on the first ``n`` correctly classified inputs.

    Args:
        model: The model under evaluation (any torch model; a defended wrapper may declare
            ``randomized``, ``differentiable`` and offer ``surrogate()``).
        x: Inputs.
        y: Labels.
        norm: The threat model's norm (``linf`` or ``l2``; others use ``linf``-free checks only).
        eps: The largest budget of the sweep.
        bounds: Input bounds.
        n: Subset size.
        seed: Seed of the checks' own attacks.
        square_queries: Query budget of the black-box comparison.

    Returns:
        One :class:`CheckResult` per check that could run.
    """
    with torch.no_grad():
        ok = torch.cat([model(x[i : i + 500]).argmax(1) == y[i : i + 500] for i in range(0, len(x), 500)])
    idx = ok.nonzero().squeeze(1)[:n]
    if len(idx) == 0:
        return []
    xs, ys = x[idx], y[idx]
    lo, hi = bounds
    threat = ThreatModel(norm, eps, bounds)
    gen = torch.Generator().manual_seed(seed)
    results: list[CheckResult] = []

    def add(code: str, fired: bool, detail: str, value: float | None = None) -> None:
        results.append(CheckResult(code, CHECKS[code][0], bool(fired), detail, value))

    # GM06/GM07: the gradients themselves.
    _, g1, _ = loss_grad(model, xs, ys)
    _, g2, _ = loss_grad(model, xs, ys)
    gnorm = g1.flatten(1).norm(dim=1)
    bad = (gnorm == 0) | ~torch.isfinite(gnorm)
    add("GM06", float(bad.float().mean()) >= 0.1,
        f"{int(bad.sum())} of {len(xs)} inputs have a zero or NaN gradient", float(bad.float().mean()))
    differs = not torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)
    add("GM07", differs, "two calls gave different gradients" if differs else "two calls agreed")

    # White-box reference on the subset: the better of FGSM and PGD-40 at ε.
    pgd_x = _pgd(model, xs, ys, threat, gen)
    acc_wb = _acc(model, pgd_x, ys)
    if norm in get_attack("fgsm").norms:
        acc_wb = min(acc_wb, _acc(model, get_attack("fgsm")(model, xs, ys, threat).x_adv, ys))

    # GM08: does the attack loss rise from the random start?
    x0 = threat.random_init(xs, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        l0 = ce_loss(model(x0), ys)
    xk = x0.clone()
    alpha = 2.5 * eps / 20 if eps > 0 else 0.0
    for _ in range(20):
        _, g, _ = loss_grad(model, xk, ys)
        xk = threat.project(xs, xk + steepest_step(g, norm, alpha))
    with torch.no_grad():
        lk = ce_loss(model(xk), ys)
    rose = float((lk > l0 + 1e-6).float().mean())
    add("GM08", rose < 0.5, f"the loss rose on {rose:.0%} of inputs over 20 steps", rose)

    # GM05: random noise vs the gradient attack.
    noise_x = get_attack("noise")(model, xs, ys, threat, generator=gen).x_adv
    acc_noise = _acc(model, noise_x, ys)
    add("GM05", acc_noise < acc_wb - MARGIN, f"noise Acc@1 {acc_noise:.3f} vs white-box {acc_wb:.3f}", acc_noise)

    # GM03: black-box vs white-box.
    if norm in get_attack("square").norms:
        sq = get_attack("square")(model, xs, ys, threat, generator=gen, max_queries=square_queries)
        acc_sq = _acc(model, sq.x_adv, ys)
        add("GM03", acc_sq < acc_wb - MARGIN,
            f"Square ({square_queries} queries) Acc@1 {acc_sq:.3f} vs white-box {acc_wb:.3f}", acc_sq)

    # GM04: transfer from the undefended model behind a wrapper.
    surrogate = getattr(model, "surrogate", None)
    if callable(surrogate) and surrogate() is not model:
        tr_x = _pgd(surrogate(), xs, ys, threat, gen)
        acc_tr = _acc(model, tr_x, ys)
        add("GM04", acc_tr < acc_wb - MARGIN, f"transfer Acc@1 {acc_tr:.3f} vs white-box {acc_wb:.3f}", acc_tr)

    # GM01: ε as large as the whole input range, no random start (so the gradient must do the work).
    big = {"linf": hi - lo, "l2": (hi - lo) * math.sqrt(xs[0].numel()), "l1": (hi - lo) * xs[0].numel()}.get(norm)
    if big is not None:
        big_threat = ThreatModel(norm, big, bounds)
        acc_big = _acc(model, _pgd(model, xs, ys, big_threat, gen, steps=40, random_start=False), ys)
        add("GM01", acc_big > 0.05, f"PGD at ε = {big:g} leaves Acc@1 {acc_big:.3f}", acc_big)

    # GM02: an unbounded minimal attack should always succeed.
    if norm in ("l2", "linf"):
        df = get_attack("deepfool")(model, xs, ys, ThreatModel("l2" if norm == "l2" else "linf", math.inf, bounds),
                                    steps=100)
        with torch.no_grad():
            succ = float((model(df.x_adv).argmax(1) != ys).float().mean())
        add("GM02", succ < 0.95, f"DeepFool (ε = ∞, 100 steps) succeeds on {succ:.1%}", succ)
    return results


def adaptive_reason(model: Any, fired: list[CheckResult]) -> str:
    """Why the adaptive attack runs, naming what it adds for this model."""
    parts = []
    if needs_bpda(model):
        parts.append("BPDA through the non-differentiable preprocessing")
    if needs_eot(model):
        parts.append("EOT over the model's randomness")
    parts.append("the margin loss on the logits")
    return f"{', '.join(c.code for c in fired)} fired: pgd-adaptive uses " + ", ".join(parts)
