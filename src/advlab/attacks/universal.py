"""Universal adversarial perturbations (UAP): one perturbation that fools a classifier on most images.

Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017 (Algorithm 1). A UAP is a property of a model and a
data distribution, not of one image, so it is a function here (:func:`universal_perturbation`
returns one C×H×W tensor v), not a registered per-image attack: the registry's contract —
``x_adv`` for the batch given, scored per example, swept by the evaluation at every ε — would
craft v on the very images it is scored on, which is not what the paper measures (v is crafted on
one set and its fooling rate read on held-out images, :func:`universal_score`).

The algorithm: v = 0; pass over the crafting images in a random order (from the generator); for
every image still not fooled at x + v, DeepFool (:mod:`advlab.attacks.linearised`, run from
x + v) gives the minimal perturbation Δ that fools it, and v ← Proj(v + Δ), the projection onto
the threat's ε-ball (L∞ or L2) around 0; stop once the fooling rate on the crafting set reaches
``target_rate`` (checked before every pass) or after ``max_passes`` passes. The perturbed image
is always clip(x + v) to the threat's bounds (the paper does not clip; pixel values here must stay
valid), and DeepFool's Δ is measured from that clipped image.

Batching (``batch`` > 1): the not-yet-fooled images of a chunk of ``batch`` images (in the
shuffled order) get their Δ from one batched DeepFool call at the same v, and v ← Proj(v + mean Δ)
(the mean over the images DeepFool fooled). With ``batch=1`` this is exactly the paper's per-image
update. Why the mean and not the sum: one image's Δ is a full step to the boundary, and on small
images its size is of the order of ε itself (lenet-mnist, 300 test images: L2 DeepFool's Δ has a
median L∞ of 0.31, 85% of them above 0.2), so the sum of a chunk's Δ, projected, mostly replaces
v by the chunk's own direction and v does not accumulate (lenet-mnist, L∞ ε = 0.2, batches of 32:
the fooling rate of the crafting set stayed at 2–5% over 4 passes with the sum, and rose
5 → 8 → 10 → 11% with the mean). The mean is a step in the direction the chunk agrees on; it is
an approximation of the paper's loop, which processes one image at a time (and costs one
DeepFool call per image).

DeepFool is run in L2 (``deepfool_norm``) whatever the threat's norm, as in the authors' code
(which uses its L2 DeepFool for p = ∞ too and lets the projection enforce the L∞ ball); an update
is made only from images DeepFool fools within ``deepfool_steps`` iterations (the authors' code
also skips images whose DeepFool did not converge; 10 iterations, as there).

"Fooled" is the paper's: the prediction at x + v differs from the reference class — the model's
clean prediction when ``y`` is None (the paper's definition), else the label ``y`` (then clean
errors count as fooled from the start and are never attacked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from advlab._checks import Fraction, NonNegFloat, PositiveInt, check_images, check_labels, check_param
from advlab._device import draw
from advlab._grad_mode import with_autograd
from advlab.attacks.fastview import attack_view, inference_view
from advlab.attacks.registry import get_attack
from advlab.metrics import acc_at_k, fooling_rate, predict_logits
from advlab.models.blackbox import BlackBox
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017, Universal adversarial perturbations, "
    "https://arxiv.org/abs/1610.08401"
)
__all__ = ["UniversalScore", "apply_universal", "universal_perturbation", "universal_score"]


class UniversalScore(NamedTuple):
    """A universal perturbation measured on a set of images.

    ``fooling_rate``: the share whose prediction changes (the paper's figure); ``accuracy``: Acc@1
    at clip(x + v); ``clean_accuracy``: Acc@1 at x.
    """

    fooling_rate: float
    accuracy: float
    clean_accuracy: float


def apply_universal(x: torch.Tensor, v: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Every image of ``x`` (N×C×H×W) plus the one perturbation ``v`` (C×H×W), clipped to ``bounds``."""
    return (x + v.to(x.dtype)).clamp(*bounds)


@with_autograd
def universal_perturbation(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor | None,
    threat: ThreatModel,
    *,
    max_passes: PositiveInt = 10,
    target_rate: Fraction = 0.8,
    overshoot: NonNegFloat = 0.02,
    deepfool_steps: PositiveInt = 10,
    deepfool_norm: Literal["l2", "linf"] = "l2",
    batch: PositiveInt = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A universal perturbation v (C×H×W, ‖v‖ ≤ ε in ``threat.norm``) crafted on ``x`` (the module docstring).

    Moosavi-Dezfooli et al. 2017 (https://arxiv.org/abs/1610.08401), Algorithm 1 with DeepFool as
    the inner attack. ``y``: None for the paper's reference classes (the clean predictions) or
    labels. ``target_rate`` is the paper's 1 − δ (stop once that share of ``x`` is fooled);
    ``overshoot`` is DeepFool's (the paper's code uses 0.02), ``deepfool_steps`` its iteration cap
    and ``deepfool_norm`` its norm (L2, as the authors' code, for either ball); ``batch``: images
    per DeepFool call (1: the paper's per-image update; more: the mean update of the module
    docstring). Apply v with :func:`apply_universal`; measure it on held-out images with
    :func:`universal_score`. Deterministic under ``generator`` (it orders the passes). The model is
    never changed (it runs through the attacks' fast view). Cost per pass: at most one forward per
    chunk plus DeepFool on the images not yet fooled, plus one forward over ``x`` per stopping check.
    """
    ref = _check(model, x, y, threat, max_passes=max_passes, target_rate=target_rate, overshoot=overshoot,
                 deepfool_steps=deepfool_steps, deepfool_norm=deepfool_norm, batch=batch, generator=generator)
    net = attack_view(model, x)
    x = x.detach()
    if ref is None:
        ref = predict_logits(net, x).argmax(dim=1)
    span = threat.bounds[1] - threat.bounds[0]
    ball = ThreatModel(threat.norm, threat.eps, (-span, span))  # the ball around 0 (v's own box is never binding)
    v = torch.zeros_like(x[0])
    for _ in range(max_passes):
        if _fooled(net, x, ref, v, threat.bounds).float().mean() >= target_rate:
            break
        order = draw(torch.randperm, len(x), generator=generator, device=x.device)
        for start in range(0, len(x), batch):
            chunk = order[start:start + batch]
            v = _update(net, x[chunk], ref[chunk], v, ball, threat.bounds, (deepfool_norm, deepfool_steps, overshoot))
    return v


def _update(net: Model, x: torch.Tensor, ref: torch.Tensor, v: torch.Tensor, ball: ThreatModel,
            bounds: tuple[float, float], deepfool: tuple[str, int, float]) -> torch.Tensor:
    """One update of v on a chunk: DeepFool from x + v on the images not yet fooled, v ← Proj(v + mean Δ).

    ``deepfool``: DeepFool's norm, iteration cap and overshoot. Only images DeepFool fools within
    its cap contribute (the authors' code likewise skips an update whose DeepFool did not converge).
    """
    norm, steps, overshoot = deepfool
    xv = apply_universal(x, v, bounds)
    with torch.no_grad():
        keep = net(xv).argmax(dim=1) == ref
    if not bool(keep.any()):
        return v
    start = xv[keep]
    found = get_attack("deepfool").fn(net, start, ref[keep], ThreatModel(norm, float("inf"), bounds),  # type: ignore[arg-type]
                                      steps=steps, overshoot=overshoot)
    if not bool(found.success.any()):
        return v
    delta = (found.x_adv - start)[found.success].mean(dim=0)
    zero = torch.zeros_like(v)[None]
    return ball.project(zero, (v + delta)[None])[0]


def _fooled(net: Model, x: torch.Tensor, ref: torch.Tensor, v: torch.Tensor,
            bounds: tuple[float, float]) -> torch.Tensor:
    """Per image: the prediction at clip(x + v) differs from its reference class."""
    return predict_logits(net, apply_universal(x, v, bounds)).argmax(dim=1) != ref


def universal_score(model: Model, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
                    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 1000) -> UniversalScore:
    """The fooling rate, accuracy and clean accuracy of ``v`` on the images ``x`` with labels ``y``.

    Measure on images v was not crafted on (the paper's held-out figure). A model in training mode
    is run as an eval-mode copy (:func:`~advlab.attacks.inference_view`).
    """
    net = inference_view(model)
    clean = predict_logits(net, x, batch_size)
    adv = predict_logits(net, apply_universal(x, v, bounds), batch_size)
    y = y.to(clean.device)
    return UniversalScore(fooling_rate(clean, adv), acc_at_k(adv, y), acc_at_k(clean, y))


def _check(model: object, x: object, y: object, threat: object, **params: object) -> torch.Tensor | None:
    """Validate the arguments with one-line errors; returns the labels (None when ``y`` is None)."""
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat: expected a ThreatModel, got {type(threat).__name__}")
    if threat.norm not in ("linf", "l2"):
        raise ValueError(f"threat.norm: universal_perturbation supports linf, l2, got {threat.norm!r}")
    if not threat.bounded:
        raise ValueError("threat.eps: a universal perturbation needs a finite eps, got inf")
    if threat.targeted:
        raise ValueError("threat.targeted: universal_perturbation is untargeted")
    if isinstance(model, BlackBox) or not callable(model):
        raise TypeError(f"model: universal_perturbation needs a differentiable torch model, got {type(model).__name__}")
    xt = check_images("x", x, threat.bounds)
    hints = {"max_passes": PositiveInt, "target_rate": Fraction, "overshoot": NonNegFloat,
             "deepfool_steps": PositiveInt, "deepfool_norm": Literal["l2", "linf"], "batch": PositiveInt}
    for name, hint in hints.items():
        check_param(name, hint, params[name])
    generator = params["generator"]
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return None if y is None else check_labels("y", y, xt.shape[0]).to(xt.device)
