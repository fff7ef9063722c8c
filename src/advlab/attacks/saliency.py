"""JSMA: Papernot et al.'s Jacobian-based saliency map attack (pairs of features), batched.

Papernot, McDaniel, Jha, Fredrikson, Celik, Swami 2016, "The Limitations of Deep Learning in
Adversarial Settings", https://arxiv.org/abs/1511.07528.

**Which Jacobian.** Carlini & Wagner 2017 (https://arxiv.org/abs/1608.04644) name the two
versions by the output F whose Jacobian the map uses: JSMA-F (F = the softmax output) and JSMA-Z
(F = the logits Z). advlab has both (``jacobian="softmax"`` or ``"logits"``) and defaults to the
softmax: on the shipped lenet-mnist it comes close to the paper's MNIST figures (first 200 test images,
each targeted at a random other class, γ = 14.5%: 100% success with 4.07% of pixels changed on
average, against the paper's 97% and 4.02%), while the logits version succeeds on 77% with 7.68%
of pixels changed (docs/benchmarks.md, "lecture-sparse"). With the softmax, Σ_j F_j = 1 makes
β = −α, so the map reduces to the pair with the largest α_p + α_q > 0: one backward pass per iteration, against
two for the logits and a costlier pair search.

**Weighted (not in the paper).** The map ranks features by their slope, yet each chosen feature
jumps to the bound: a pixel at 0.99 is as likely to be spent as one at 0, for almost no effect
(on lenet-mnist 5% of JSMA-F's and 10% of JSMA-Z's changed pixels were already ≥ 0.99).
``weighted=True`` multiplies each feature's derivatives by the change the jump makes, so the map
ranks the linearised effect of the step; off by default, to stay the paper's algorithm.

**Budget.** JSMA stops at success, so it is a minimal-perturbation attack (``budget="minimal"``):
it runs once with ε = inf and x_adv's L0 distance tells at which budgets it counts — how ``advlab
evaluate`` scores it at every ε of an L0 sweep — while γ caps the search. With a finite ε the cap
is min(⌊γ·D⌋, ⌊ε⌋) changed features, so x_adv is inside the ball by construction. A fixed budget
with ε = number of pixels would run the same deterministic search once per ε and stop it
earlier, for the same answer at each ε.

**The pair search** is exact without scoring all D² pairs of every image: a pair's score is
bounded by each of its features' own bound (see :func:`best_pairs`), so the pairs among the
features with the largest bounds are scored first and the search widens only where that bound
does not certify the winner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from advlab._checks import Fraction
from advlab.attacks.losses import is_adversarial, several_gradients
from advlab.attacks.registry import AttackResult, register_attack
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PAPER = (
    "Papernot, McDaniel, Jha, Fredrikson, Celik, Swami 2016, The Limitations of Deep Learning in "
    "Adversarial Settings, https://arxiv.org/abs/1511.07528"
)
_FIRST_K = 64  # features whose pairs are scored first; widened ×4 where the bound does not certify
_CHUNK = 1 << 23  # at most this many pair scores in memory at once (32 MiB of float32)


def _pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Scores (a_p + a_q)₊ · (b_p + b_q)₊ of every pair of the given features, 0 on the diagonal (N×K×K)."""
    s = (a[:, :, None] + a[:, None, :]).clamp_min_(0)
    s.mul_((b[:, :, None] + b[:, None, :]).clamp_min_(0))
    s.diagonal(dim1=1, dim2=2).zero_()
    return s


def _best_among(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best pair among the features ``idx`` (N×K) of each row: (score, p, q), in chunks of rows."""
    n, k = idx.shape
    step = max(1, _CHUNK // (k * k))
    best, p, q = [], [], []
    for i in range(0, n, step):
        ii = idx[i : i + step]
        s = _pair_scores(a[i : i + step].gather(1, ii), b[i : i + step].gather(1, ii))
        val, flat = s.flatten(1).max(dim=1)
        best.append(val)
        p.append(ii.gather(1, (flat // k)[:, None]).squeeze(1))
        q.append(ii.gather(1, (flat % k)[:, None]).squeeze(1))
    return torch.cat(best), torch.cat(p), torch.cat(q)


def pair_bounds(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per feature r, an upper bound on the score of any pair containing it.

    (a_r + a_q)₊ · (b_r + b_q)₊ is at most (a_r + max a)₊ · (b_r + max b)₊ and, the product of
    two positive numbers being at most the square of their mean, at most
    ((a_r + b_r + max(a + b))₊ / 2)²; the bound is the smaller of the two.
    """
    u = (a + a.amax(dim=1, keepdim=True)).clamp_min(0) * (b + b.amax(dim=1, keepdim=True)).clamp_min(0)
    s = a + b
    return torch.minimum(u, ((s + s.amax(dim=1, keepdim=True)).clamp_min(0) / 2).square())


def best_pairs(a: torch.Tensor, b: torch.Tensor, first_k: int = _FIRST_K) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Per row, the pair p ≠ q maximising (a_p + a_q)₊ · (b_p + b_q)₊, found exactly.

    A pair scores > 0 exactly when a_p + a_q > 0 and b_p + b_q > 0 (the saliency map's two
    conditions). Features outside the search domain carry a = b = −inf. A pair scores at most the
    bound of each of its features (:func:`pair_bounds`), so the best pair among the K features of
    largest bound is the best overall once its score v is ≥ the (K+1)-th largest bound; rows where
    it is not are searched again among every feature whose bound exceeds v, which certainly holds
    the best pair.

    Args:
        a: N×D per-feature terms (−inf outside the domain).
        b: N×D per-feature terms (−inf outside the domain).
        first_k: Features scored first.

    Returns:
        (found, p, q): whether a pair with a positive score exists, and the pair (p, q).
    """
    d = a.shape[1]
    u = pair_bounds(a, b)
    k = min(first_k, d)
    top = u.topk(min(k + 1, d), dim=1)
    val, p, q = _best_among(a, b, top.indices[:, :k])
    if k < d:
        redo = (val < top.values[:, k]).nonzero().squeeze(1)
        if len(redo):
            ur = u[redo]
            wide = min(int((ur > val[redo, None]).sum(dim=1).max()), d)
            val[redo], p[redo], q[redo] = _best_among(a[redo], b[redo], ur.topk(wide, dim=1).indices)
    return val > 0, p, q


@dataclass(frozen=True)
class _Map:
    """How the saliency map is computed: θ, whose Jacobian, weighted by the change or not, targeted or not."""

    theta: int
    jacobian: str
    weighted: bool
    targeted: bool

    def terms(self, model: Model, x: torch.Tensor, cls: torch.Tensor, to_bound: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """Logits and the per-feature terms (a, b), flattened, of the examples ``x``.

        A pair is salient when a_p + a_q > 0 and b_p + b_q > 0; the larger (a_p + a_q)·(b_p + b_q),
        the more salient. ``cls`` is the target (targeted) or the true label (untargeted);
        ``to_bound`` is |bound − x| per feature (the change setting it to the bound makes).

        With the logits Z (JSMA-Z), targeted: a = θ·∂Z_t/∂x (the target rises), b = −θ·∂Σ_{j≠t}Z_j/∂x
        (the others fall), from one forward and two backward passes; untargeted, the roles swap:
        a = −θ·∂Z_y/∂x, b = θ·∂Σ_{j≠y}Z_j/∂x. With the softmax output F (JSMA-F) the probabilities
        sum to 1, so Σ_{j≠t}∂F_j = −∂F_t and b = a = ±θ·∂F_cls/∂x, taken as ±θ·∂log F_cls/∂x (the
        same direction divided by F_cls > 0: no sign or ranking changes, and no underflow when F_cls
        is tiny): one backward pass. Weighted, both are multiplied by ``to_bound``.
        """
        sign = self.theta if self.targeted else -self.theta
        w = to_bound if self.weighted else 1.0
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            if self.jacobian == "softmax":
                (g,) = torch.autograd.grad(logits.log_softmax(dim=1).gather(1, cls[:, None]).sum(), xr)
                a = sign * g.flatten(1) * w
                return logits.detach(), a, a
            g_cls, g_all = several_gradients(model, xr, logits, [lambda z: z.gather(1, cls[:, None]).sum(),
                                                                 lambda z: z.sum()])
        g_cls = g_cls.flatten(1)
        return logits.detach(), sign * g_cls * w, -sign * (g_all.flatten(1) - g_cls) * w


@register_attack("jsma", kind="white-box", norms=("l0",), targeted=True, budget="minimal", paper=PAPER)
def jsma(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    theta: Literal[1, -1] = 1,
    gamma: Fraction = 0.145,
    jacobian: Literal["softmax", "logits"] = "softmax",
    weighted: bool = False,
) -> AttackResult:
    """JSMA: set the most salient pair of input features to the bound, until the model is fooled.

    Papernot et al. 2016 (https://arxiv.org/abs/1511.07528), Algorithms 2–3 with the saliency
    map over pairs of features (equation 10). At each iteration, with α_p = ∂F_t/∂x_p and
    β_p = Σ_{j≠t} ∂F_j/∂x_p, among the features still in the search domain (θ = +1: below the
    upper bound; θ = −1: above the lower bound) the pair (p, q) with θ(α_p+α_q) > 0 and
    θ(β_p+β_q) < 0 maximising |α_p+α_q|·|β_p+β_q| (exactly, :func:`best_pairs`) is set to the
    upper (θ = +1) or lower (θ = −1) bound and leaves the domain. An example stops when the model
    predicts the target, when no pair meets both conditions, or when another pair would take it
    past the cap of ⌊γ·D⌋ changed features (D = input elements, pixels × channels, as
    ``ThreatModel`` counts L0; γ = 0.145 as in the paper: at most 112 of MNIST's 784 pixels).
    Untargeted, the roles of the two groups swap: the pair must lower F_y and raise the sum of
    the others; the example stops at any misclassification.

    Minimal-perturbation (the module docstring says why): run it with ε = inf; with a finite ε the
    cap is min(⌊γ·D⌋, ⌊ε⌋) (pairs only: an odd cap leaves its last feature unused). Where it
    fails, the clean image is returned. Deterministic. White-box. Cost per iteration on the
    examples still active: 1 forward and 1 (softmax) or 2 (logits) backward passes, and the pair
    search (typically the pairs of 64 features; at worst all D² pairs); at most ⌊cap/2⌋
    iterations, then one forward pass.

    Args:
        model: A differentiable torch model (logits).
        x: Clean batch inside ``threat.bounds`` (any shape N×…; features are its elements).
        y: True labels.
        threat: L0 threat model (ε = inf: minimal, the usual way; finite ε caps the changes).
        target: Target labels when ``threat.targeted``.
        generator: Unused (JSMA is deterministic).
        theta: +1 (increase features to the upper bound, the paper's MNIST setting) or −1
            (decrease them to the lower bound).
        gamma: Maximum fraction of the input's elements changed, in (0, 1].
        jacobian: ``"softmax"`` (JSMA-F) or ``"logits"`` (JSMA-Z): whose Jacobian the map uses.
        weighted: Multiply each feature's derivatives by the change setting it to the bound makes
            (1 − x for θ = +1 on [0, 1]): the map then ranks the linearised effect of the step, not
            the slope. Not in the paper (docs/benchmarks.md "lecture-sparse" measures it).

    Returns:
        ``AttackResult`` with x_adv (the clean image where JSMA failed) and per-example success.
    """
    x = x.detach()
    cap = math.floor(gamma * x[0].numel() + 1e-9)  # 1e-9: 0.145 · 800 is 115.99999… in floating point
    if threat.bounded:
        cap = min(cap, math.floor(threat.eps))
    smap = _Map(theta, jacobian, weighted, target is not None)
    flat, success = _pair_steps(model, x, y, target, threat.bounds, smap, cap // 2)
    x_adv = torch.where(success[:, None], flat, x.flatten(1)).view_as(x)
    return AttackResult(threat.clip(x_adv), success)


def _pair_steps(model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                bounds: tuple[float, float], smap: _Map, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``pairs`` saliency steps on the examples not yet fooled: (flattened last iterates, success)."""
    lo, hi = bounds
    bound = hi if smap.theta > 0 else lo
    flat = x.flatten(1).clone()
    domain = flat < hi if smap.theta > 0 else flat > lo
    cls = y if target is None else target
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    active = torch.arange(len(x), device=x.device)
    for it in range(pairs + 1):
        xa = flat[active].view(-1, *x.shape[1:])
        if it == pairs:  # out of budget: score the last pair only
            with torch.no_grad():
                success[active] = is_adversarial(model(xa), y[active], _sub(target, active))
            break
        logits, a, b = smap.terms(model, xa, cls[active], (bound - flat[active]).abs())
        fooled = is_adversarial(logits, y[active], _sub(target, active))
        success[active] = fooled
        dom = domain[active]
        found, p, q = best_pairs(a.masked_fill(~dom, -math.inf), b.masked_fill(~dom, -math.inf))
        go = found & ~fooled
        active, p, q = active[go], p[go], q[go]
        flat[active, p], flat[active, q] = bound, bound
        domain[active, p], domain[active, q] = False, False
        if not len(active):
            break
    return flat, success


def _sub(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[idx]


__all__ = ["best_pairs", "jsma"]
