"""DAG — Dense Adversary Generation (Xie et al. 2017) for segmentation and detection.

Xie, Wang, Zhang, Zhou, Xie, Yuille 2017, "Adversarial Examples for Semantic Segmentation and
Object Detection", https://arxiv.org/abs/1703.08603.

DAG attacks many *targets* at once — every pixel of a segmentation map, every detection of a
detector — each with an adversarial label l′. At step m the active targets (those not yet
predicted as l′) add up ∇ₓ[f_{l′}(x + r, t) − f_{l}(x + r, t)], with l the target's current top
class (the paper's l is the true class: the same while the target still has it; a target that
drifted to a third class is pulled from where it is); the step is r_m = γ·g/‖g‖∞ and r accumulates
until no target is active or after ``steps`` (paper: 200 for segmentation, 150 for detection).

advlab's extensions (not in the paper): after each step x + r is projected onto the threat model's
ε-ball ∩ bounds (L∞ or L2), so DAG is a fixed-budget attack that can be swept over ε like PGD (at
L∞ ε = 1 it is the paper's unconstrained attack clipped to the image range); γ may be
cosine-annealed (``gamma_end``); and each example's answer is its iterate with the fewest active
targets.

Per-target success is kept in :class:`DenseResult` (``reached``, ``is_target``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from advlab._checks import Fraction, PositiveFloat, PositiveInt
from advlab.attacks.detection import centre_cells, heat_logits, logit
from advlab.attacks.registry import AttackResult, register_attack
from advlab.attacks.tasks import SegmentationLoss
from advlab.models.dense import decode
from advlab.threat import Norm, ThreatModel

PAPER = (
    "Xie, Wang, Zhang, Zhou, Xie, Yuille 2017, Adversarial Examples for Semantic Segmentation and Object "
    "Detection, https://arxiv.org/abs/1703.08603"
)
DAG_NORMS: tuple[Norm, ...] = ("linf", "l2")
GAMMA = 0.5 / 255  # the paper's γ = 0.5 on 0–255 images
Model = Callable[[torch.Tensor], torch.Tensor]
# (output of the rows, rows) -> (gain to ascend where active, active), one entry per target of those rows
Gains = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
__all__ = ["DenseResult", "dag", "dag_detection", "dag_loop", "detection_targets", "segmentation_gains"]


@dataclass
class DenseResult(AttackResult):
    """An :class:`AttackResult` with DAG's per-target outcome.

    Attributes:
        reached: Per target, whether it took its adversarial label at ``x_adv`` (segmentation
            N×H×W; detection N×T, T = 9 cells × detections).
        is_target: Which entries of ``reached`` are targets (segmentation: pixels whose
            adversarial label differs from the clean prediction; detection: real cells).
    """

    reached: torch.Tensor | None = None
    is_target: torch.Tensor | None = None


def dag_loop(model: Model, x: torch.Tensor, threat: ThreatModel, gains: Gains, *, steps: int,
             gamma: float, gamma_end: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DAG's iteration; returns, per example, the iterate with the fewest active targets, and its active mask.

    Each step: one forward and backward pass for Σ_active gain over the examples that still have
    an active target (the others are done and leave the batch), the step γ·g/‖g‖∞ per example,
    then projection into the ε-ball ∩ bounds. Stops when no target is active, or after ``steps``.
    ``gamma_end``: γ is cosine-annealed from ``gamma`` to it (None: constant, the paper's). The
    best iterate is read from the forward passes the steps make anyway (no extra query).
    """
    x = x.detach()
    x_adv, best_x = x.clone(), x.clone()
    rows = torch.arange(len(x), device=x.device)
    best_count = torch.full((len(x),), math.inf, device=x.device)
    best_active = torch.empty(0, dtype=torch.bool)
    for m in range(steps + 1):
        xr = x_adv[rows].requires_grad_(True)
        with torch.enable_grad():
            gain, active = gains(model(xr), rows)
            if m == 0:
                best_active = active.clone()
            count = active.flatten(1).sum(1).to(best_count.dtype)
            better = count < best_count[rows]
            best_count[rows[better]] = count[better]
            best_active[rows[better]] = active[better]
            best_x[rows[better]] = xr.detach()[better]
            live = active.flatten(1).any(1)
            if m == steps or not bool(live.any()):
                break
            (g,) = torch.autograd.grad((gain * active).sum(), xr)
        scale = g.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        x_adv[rows] = threat.project(x[rows], xr.detach() + step_length(gamma, gamma_end, m, steps) * g / scale)
        rows = rows[live]
    return best_x, best_active


def step_length(gamma: float, gamma_end: float | None, m: int, steps: int) -> float:
    """γ at step ``m``: constant, or cosine-annealed from ``gamma`` to ``gamma_end`` over ``steps``."""
    if gamma_end is None:
        return gamma
    return gamma_end + (gamma - gamma_end) * 0.5 * (1 + math.cos(math.pi * m / steps))


def segmentation_gains(adv: torch.Tensor) -> Gains:
    """Gains for a map of adversarial labels ``adv`` (N×H×W): z_{l′} − z_{top}, active where top ≠ l′."""

    def gains(out: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = out.argmax(1, keepdim=True)
        gain = out.gather(1, adv[rows, None]) - out.gather(1, top)
        return gain.flatten(1), (top[:, 0] != adv[rows]).flatten(1)

    return gains


def _adversarial_map(clean: torch.Tensor, classes: int, pattern: str,
                     generator: torch.Generator | None) -> torch.Tensor:
    """Untargeted DAG's labels: a random other label per pixel, or another scene's clean map."""
    if pattern == "random":
        shift = torch.randint(1, classes, clean.shape, generator=generator).to(clean.device)
        return (clean + shift) % classes
    return clean.roll(1, 0) if len(clean) > 1 else clean.flip(-1)


@register_attack("dag", kind="white-box", norms=DAG_NORMS, targeted=True, paper=PAPER, task="segmentation")
def dag(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 200,
    gamma: PositiveFloat = GAMMA,
    gamma_end: PositiveFloat | None = None,
    pattern: Literal["random", "other-scene"] = "random",
    min_share: Fraction = 0.9,
) -> DenseResult:
    """DAG on a segmentation network (N×C×H×W logits, int64 N×H×W label maps).

    Targeted: every pixel's adversarial label is the ``target`` map's (e.g. the map of another
    scene, or a letter); pixels whose target equals the clean prediction are kept there (they turn
    active if they drift). Untargeted: ``pattern="random"`` gives each pixel a random other label
    (seeded by ``generator``), ``"other-scene"`` the clean prediction of the next scene in the
    batch. ``gamma`` is the L∞ length of a step (default the paper's 0.5/255), cosine-annealed to
    ``gamma_end`` if given; the accumulated perturbation is projected into the ε-ball, and each
    example's answer is its iterate with the fewest active targets (advlab's extensions). Success per example: the
    :class:`SegmentationLoss` rule with ``min_share`` (targeted: ≥ min_share of the pixels whose
    target differs from ``y`` take it; untargeted: ≥ min_share of the pixels change label).
    Cost: at most ``steps`` + 1 forward and ``steps`` backward passes.
    """
    with torch.no_grad():
        logits = model(x)
    clean = logits.argmax(1)
    adv = target if target is not None else _adversarial_map(clean, logits.shape[1], pattern, generator)
    x_adv, active = dag_loop(model, x, threat, segmentation_gains(adv), steps=steps, gamma=gamma, gamma_end=gamma_end)
    with torch.no_grad():
        out = model(x_adv)
    success = SegmentationLoss(min_share).success(out, y, target)
    return DenseResult(x_adv, success, reached=~active.view_as(adv), is_target=adv != clean)


def detection_targets(dets: torch.Tensor, classes: int, size: int, mode: str,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """DAG's detection targets: the 3×3 cells around each clean detection's centre (N×T, T = 9·D).

    Returns (flat index of the original class's cell, flat index of the adversarial class's cell
    or −1, valid). ``relabel``: the centre cell's adversarial class is a random other class and
    every cell's original class is suppressed; ``remove``: every cell's class is suppressed
    (background). Indices are into the flattened C×S×S heat-map.
    """
    n, d = dets.shape[:2]
    cls = dets[..., 5].long()
    iy, ix, inside = (t.reshape(n, -1) for t in centre_cells(dets[..., :4], size))
    c9 = cls[..., None].expand(n, d, 9).reshape(n, -1)
    valid = (c9 >= 0) & inside
    cell = iy.clamp(0, size - 1) * size + ix.clamp(0, size - 1)
    src = c9.clamp_min(0) * size * size + cell
    dst = torch.full_like(src, -1)
    if mode == "relabel":
        new = (cls + torch.randint(1, classes, cls.shape, generator=generator).to(cls.device)) % classes
        centre = torch.zeros(n, d, 9, dtype=torch.bool, device=dets.device)
        centre[..., 4] = True
        new9 = new[..., None].expand(n, d, 9).reshape(n, -1)
        dst = torch.where(centre.reshape(n, -1) & valid, new9 * size * size + cell, dst)
    return src, dst, valid


def detection_gains(src: torch.Tensor, dst: torch.Tensor, valid: torch.Tensor, tau: float) -> Gains:
    """Gains z_{l′} − z_l (remove: −z_l) per target cell; active while z_l ≥ τ or (relabel) z_{l′} < τ."""

    def gains(out: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat = heat_logits(out).flatten(1)
        z_src = heat.gather(1, src[rows])
        z_dst = heat.gather(1, dst[rows].clamp_min(0))
        has = dst[rows] >= 0
        gain = torch.where(has, z_dst, torch.zeros_like(z_dst)) - z_src
        active = valid[rows] & ((z_src >= tau) | (has & (z_dst < tau)))
        return gain, active

    return gains


@register_attack("dag-detection", kind="white-box", norms=DAG_NORMS, targeted=False, paper=PAPER, task="detection")
def dag_detection(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 150,
    gamma: PositiveFloat = GAMMA,
    gamma_end: PositiveFloat | None = None,
    mode: Literal["remove", "relabel"] = "remove",
    threshold: Fraction = 0.3,
) -> DenseResult:
    """DAG on a CenterNet detector (N×(C+4)×S×S outputs; ``y`` true boxes N×K×5, checked only).

    The targets are the 3×3 heat-map cells around each clean detection's centre (decoded at
    ``threshold``; the cells stand for the paper's proposals). ``mode="remove"``: every target's
    class is pushed below the threshold (to background); ``"relabel"``: the centre cell is pushed to
    a random other class (seeded by ``generator``) above the threshold, and the original class
    below it at all nine cells. Success per example: every target reached (an example without
    clean detections succeeds trivially). ``gamma``, ``gamma_end``, ``steps``, the ε-projection and the
    best iterate as in ``dag``.
    """
    with torch.no_grad():
        out = model(x)
    classes, size = out.shape[1] - 4, out.shape[-1]
    src, dst, valid = detection_targets(decode(out, threshold=threshold), classes, size, mode, generator)
    tau = logit(threshold)
    gains = detection_gains(src, dst, valid, tau)
    x_adv, active = dag_loop(model, x, threat, gains, steps=steps, gamma=gamma, gamma_end=gamma_end)
    return DenseResult(x_adv, ~active.any(1), reached=valid & ~active, is_target=valid)
