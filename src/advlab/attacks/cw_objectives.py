"""Carlini & Wagner's seven objective functions f1–f7, targeted and untargeted.

Carlini & Wagner 2017 (§V, https://arxiv.org/abs/1608.04644) ask of an objective f that
C(x′) = t if and only if f(x′) ≤ 0, and compare seven (F = softmax, Z = logits, t the target,
(e)⁺ = max(e, 0), softplus(e) = log(1 + exp e)). As printed:

* f1 = −loss_{F,t}(x′) + 1,  f2 = (max_{i≠t} F_i − F_t)⁺,  f3 = softplus(max_{i≠t} F_i − F_t) − log 2,
* f4 = (0.5 − F_t)⁺,  f5 = −log(2F_t − 2),  f6 = (max_{i≠t} Z_i − Z_t)⁺,
* f7 = softplus(max_{i≠t} Z_i − Z_t) − log 2.

Two of the printed forms do not meet the paper's own condition, and here they are used in the
form that does (the smallest change that makes f ≤ 0 mean "F_t ≥ 1/2", like f4):

* **f1**: −loss + 1 with the cross-entropy loss = −log F_t is ≤ 0 when F_t ≤ 1/e, the wrong way
  round (it is the untargeted objective). Used: f1 = loss_{F,t}(x′)/ln 2 − 1 = −log₂ F_t − 1,
  the cross-entropy in bits minus one, ≤ 0 exactly when F_t ≥ 1/2.
* **f5**: the argument 2F_t − 2 is never positive, so the log is undefined everywhere. Used:
  f5 = log(2 − 2F_t) = log 2 + log(1 − F_t), ≤ 0 exactly when F_t ≥ 1/2 (the sign of the
  argument flipped and the outer minus dropped; −log(2F_t), the other repair, is f1 times ln 2
  and would make f5 a copy of f1).

f4 (and f1, f5) are sufficient, not necessary: F_t ≥ 1/2 implies C(x′) = t but not conversely.

κ (the confidence margin) is the paper's f6 of §VI, max(max_{i≠t} Z_i − Z_t, −κ); the paper
defines it for f6 only, and so does advlab (``check_kappa``).

**Untargeted analogues** swap the roles of the target and the true class y: a margin
max_{i≠t} v_i − v_t becomes v_y − max_{i≠y} v_i (f2, f3, f6, f7), and the probability F_t of
the target becomes 1 − F_y, the probability of any other class (f1 = −log₂(1 − F_y) − 1,
f4 = (F_y − 0.5)⁺, f5 = log(2F_y)). Each is ≤ 0 when the attack has succeeded (f2, f3, f6,
f7) or when F_y ≤ 1/2 (f1, f4, f5: necessary for C(x′) ≠ y with two classes, neither necessary
nor sufficient with more). Log-probabilities are computed from the logits with log-sum-exp, so a
confident model (F_y = 1 in float32) gives finite values and gradients.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Objective = Literal["f1", "f2", "f3", "f4", "f5", "f6", "f7"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
_LN2 = math.log(2.0)


def check_kappa(objective: str, kappa: float) -> None:
    """κ > 0 is defined for f6 only (Carlini & Wagner §VI); a one-line error otherwise."""
    if kappa > 0 and objective != "f6":
        raise ValueError(f"kappa: the confidence margin is defined for objective 'f6' only (Carlini & Wagner "
                         f"2017, §VI), got kappa={kappa} with objective={objective!r}")


def _lab_other(v: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_label, max_{i≠label} v_i) per row."""
    lab = v.gather(1, labels[:, None]).squeeze(1)
    other = v.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return lab, other


def _log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log F_label, log(1 − F_label)) per row, from the logits (stable for a saturated softmax)."""
    total = logits.logsumexp(dim=1)
    lab = logits.gather(1, labels[:, None]).squeeze(1)
    rest = logits.scatter(1, labels[:, None], float("-inf")).logsumexp(dim=1)
    return lab - total, rest - total


def f6(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, kappa: float, clamp: bool = True) -> torch.Tensor:
    """max(max_{i≠t} Z_i − Z_t, −κ) (targeted) or max(Z_y − max_{i≠y} Z_i, −κ) (untargeted)."""
    z_lab = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    diff = other - z_lab if targeted else z_lab - other
    return diff.clamp_min(-kappa) if clamp else diff


def _margin(v: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """max_{i≠t} v_i − v_t (targeted) or v_y − max_{i≠y} v_i (untargeted): > 0 while the attack has not succeeded."""
    lab, other = _lab_other(v, labels)
    return other - lab if targeted else lab - other


def cw_objective(
    name: Objective,
    logits: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    kappa: float = 0.0,
    clamp: bool = True,
) -> torch.Tensor:
    """Carlini & Wagner's objective ``name`` per example (module docstring: the forms used).

    Args:
        name: ``"f1"`` … ``"f7"``.
        logits: N×K logits Z (F = softmax(Z)).
        labels: The target t (``targeted``) or the true class y (untargeted), shape N.
        targeted: Whether ``labels`` are targets.
        kappa: Confidence margin κ of f6 (0 for the others; see :func:`check_kappa`).
        clamp: Whether to apply the (·)⁺ / −κ floor of f2, f4 and f6; without it they give the
            raw margin, whose gradient stays informative past the boundary (CW-L0's pixel choice).
    """
    if name == "f6":
        return f6(logits, labels, targeted, kappa, clamp)
    if name == "f7":
        return F.softplus(_margin(logits, labels, targeted)) - _LN2
    if name in ("f1", "f5"):
        log_p, log_rest = _log_probs(logits, labels)
        # goal: log of the probability the attack raises (F_t, or 1 − F_y); bad: of its complement.
        goal, bad = (log_p, log_rest) if targeted else (log_rest, log_p)
        return -goal / _LN2 - 1 if name == "f1" else bad + _LN2
    probs = logits.softmax(dim=1)
    if name == "f3":
        return F.softplus(_margin(probs, labels, targeted)) - _LN2
    if name == "f2":
        raw = _margin(probs, labels, targeted)
    else:  # f4
        p_lab = probs.gather(1, labels[:, None]).squeeze(1)
        raw = 0.5 - p_lab if targeted else p_lab - 0.5
    return raw.clamp_min(0.0) if clamp else raw


def meets_kappa(f: torch.Tensor, name: str, kappa: float) -> torch.Tensor:
    """Where f6 is at its floor −κ (up to 1e-6): the success condition κ adds; all True without κ."""
    if kappa > 0 and name == "f6":
        return f <= -kappa + 1e-6
    return torch.ones_like(f, dtype=torch.bool)
