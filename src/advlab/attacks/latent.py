"""The attack on Defense-GAN's latent space (Athalye, Carlini, Wagner 2018, §5.3).

Defense-GAN classifies G(z*), the projection of its input onto the generator's range. Athalye et
al. attack it by searching the range directly: find z with G(z) close to x and misclassified,

    minimise over z   ‖G(z) − x‖²₂ + c · max(Z_y − max_{i≠y} Z_i, −κ)      (Z = f(G(z)), f the classifier)

(targeted: max(max_{i≠t} Z_i − Z_t, −κ)); the adversarial example is G(z) itself. A point already in
the range projects (nearly) onto itself, so the defended model misclassifies it too — the attack
checks that at the end: success is the *defended* model's verdict on its output (one projection
per example). Adam on z from the projection z* of x, with a binary search over c per example
(halve towards the last success, ×10 while none), as Carlini & Wagner do over their constant.

Minimal perturbation in L2 by nature: per example the closest misclassified G(z) found is kept
(the clean image where none was); with a finite ε the answer is projected into the ball and
re-scored. It needs a model wrapped as ``wrap_defense(model, "defensegan")``; it is registered under
its own task ``"defense-gan"`` (class labels, like classification) so the classification defaults
and contract tests, which run every classification attack on any classifier, leave it out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from advlab._checks import NonNegFloat, PositiveInt
from advlab.attacks.losses import is_adversarial, margin_loss, minimal_result
from advlab.attacks.registry import TASKS, AttackResult, register_attack, register_task
from advlab.models.defense_gan import DefenseGAN, project
from advlab.models.wrappers import Defended
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = ("Athalye, Carlini, Wagner 2018, Obfuscated Gradients Give a False Sense of Security: Circumventing "
         "Defenses to Adversarial Examples (Sec. 5.3, Defense-GAN), https://arxiv.org/abs/1802.00420")
TASK = "defense-gan"
if TASK not in TASKS:
    register_task(TASK, TASKS["classification"])


def defense_gan_parts(model: object) -> tuple[nn.Module, DefenseGAN]:
    """The classifier and the Defense-GAN transform of a wrapped model, else a one-line ValueError."""
    if isinstance(model, Defended) and isinstance(model.transform, DefenseGAN):
        return model.model, model.transform
    raise ValueError(f"model: defensegan-latent attacks a Defense-GAN-wrapped model "
                     f"(wrap_defense(model, 'defensegan')), got {type(model).__name__}")


def _objective(f: nn.Module, img: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               const: torch.Tensor, kappa: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: the loss ‖G(z) − x‖² + c·max(m, −κ), the squared distance, and whether f is fooled by ≥ κ."""
    logits = f(img)
    dist = (img - x).flatten(1).pow(2).sum(1)
    if target is None:
        m = -margin_loss(logits, y)  # Z_y − max_{i≠y} Z_i: negative when misclassified
    else:
        m = margin_loss(logits, target)  # max_{i≠t} Z_i − Z_t: negative when the target wins
    fooled = is_adversarial(logits.detach(), y, target) & (m.detach() <= -kappa)
    return dist + const * m.clamp(min=-kappa), dist.detach(), fooled


def _round(g: nn.Module, f: nn.Module, z0: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
           target: torch.Tensor | None, const: torch.Tensor, steps: int, lr: float, kappa: float,
           best: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One round of Adam on z at fixed c; updates ``best`` = (image, squared L2) in place; returns who succeeded."""
    best_x, best_d = best
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with torch.enable_grad():
        for _ in range(steps + 1):
            img = g(z)
            loss, dist, fooled = _objective(f, img, x, y, target, const, kappa)
            better = fooled & (dist < best_d)
            best_x[better] = img.detach()[better]
            best_d[better] = dist[better]
            found |= fooled
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # type: ignore[no-untyped-call]
            opt.step()
    return found


@register_attack("defensegan-latent", kind="white-box", norms=("l2",), targeted=True, budget="minimal",
                 paper=PAPER, task=TASK)
def defensegan_latent(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    binary_search_steps: PositiveInt = 4,
    lr: NonNegFloat = 0.05,
    initial_const: NonNegFloat = 1.0,
    kappa: NonNegFloat = 0.0,
) -> AttackResult:
    """Athalye et al. 2018 §5.3: search Defense-GAN's generator range for a close, misclassified G(z).

    Starts from the projection z* of x (the defense's own L, R, optimizer and lr; starting points from
    ``generator``), then ``binary_search_steps`` rounds of ``steps`` Adam steps on z, each at a
    per-example constant c. Returns the closest G(z) the classifier misclassifies (by ≥ κ), the
    clean image where none was found; success is the defended model's prediction on the answer
    (its own projection of it). Cost: binary_search_steps × (steps + 1) generator + classifier
    forward/backward passes, plus two projections (L·R generator passes each) per example.
    """
    f, transform = defense_gan_parts(model)
    g = transform.generator
    x = x.detach()
    z0 = torch.cat([project(g, x[i:i + 256], rng=generator, **transform.options())[1] for i in range(0, len(x), 256)])
    n = len(x)
    best = (x.clone(), torch.full((n,), math.inf, device=x.device))
    const = torch.full((n,), float(initial_const), device=x.device)
    lower, upper = torch.zeros(n, device=x.device), torch.full((n,), math.inf, device=x.device)
    for _ in range(binary_search_steps):
        found = _round(g, f, z0, x, y, target, const, steps, float(lr), float(kappa), best)
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    return minimal_result(model, x, best[0], y, target, threat)


__all__ = ["TASK", "defense_gan_parts", "defensegan_latent"]
