"""Adaptive attacks on any detector: the classifier and the detector attacked as one model.

Carlini & Wagner 2017, "Adversarial examples are not easily detected: Bypassing ten detection
methods", https://arxiv.org/abs/1705.07263, §3: given a classifier with logits Z(x) (K classes)
and a detector D, build a classifier G with K + 1 classes, the last one meaning "adversarial,
rejected", such that G's winner is a real class exactly when the detector accepts the input; then
an attack on G is an attack on the defended system. Their extra logit is
``(Z_D(x) + 1) · max_j Z_j(x)``. Here (:class:`Joint`) it is the equivalent additive form::

    G_{K+1}(x) = max_j Z_j(x) + scale · (D(x) − τ)

with τ the detector's calibrated threshold: it beats every real logit exactly when D(x) > τ,
i.e. exactly when ``detector.reject`` says so (a zero-gradient correction makes this hold even
where ``scale · (D − τ)`` is below the floating-point spacing of ``max_j Z_j``; ties go to the real
class, as ``reject`` is strict). Unlike the product form it needs no positive max logit.

Success means **misclassified and accepted**: G's arg-max is a real class other than y
(untargeted), or is the target t < K (targeted). :class:`JointLoss` is the task loss the existing
gradient loops ascend (PGD, APGD; no copied loop): untargeted, the CW margin with the rejection
logit counted on the true class's side, ``max_{i≠y, i<K} G_i − max(G_y, G_{K+1})``; targeted,
``G_t − max_{i≠t} G_i``; both capped at κ (the high-confidence variant, κ > 0, needs that margin).
The unbounded Carlini–Wagner L2 (``advlab.attacks.cw``) runs on G itself when targeted, and,
untargeted, on G with the rejection logit merged into the true class's
(:class:`TrueClassMerged`: ``G_y ← max(G_y, G_{K+1})``, K logits, so CW's own untargeted f6 and
success rule mean exactly "a real class ≠ y wins and the detector accepts").

With ``confidence`` c > 0 (:class:`JointLoss`; for CW, :class:`TrueClassMerged`) the attack is
*confident-first*: the classifier's
own margin is ascended up to c before G's margin counts, so an example crosses the decision
boundary before the detector pulls on it (needed against LID with its softmax layer, whose score
pulls a correctly classified example back toward confidence in its true class).

A randomized detector (MC dropout) makes G random: PGD and APGD then average ``eot_samples``
gradient draws (EOT, :func:`advlab.attacks.adaptive.eot_bpda`, default 10); CW takes one draw per
step, so with κ = 0 it ends on the boundary where another draw may reject: use κ > 0 against such a
detector (measured in docs/defenses.md, ``detectors-adaptive``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from advlab.attacks.adaptive import DEFAULT_EOT_SAMPLES, eot_bpda
from advlab.attacks.autopgd import apgd
from advlab.attacks.carlini_wagner import cw
from advlab.attacks.fastview import fast_views
from advlab.attacks.gradient import pgd
from advlab.attacks.losses import loss_grad
from advlab.attacks.registry import AttackResult
from advlab.attacks.tasks import Rows, TaskLoss
from advlab.detect.base import Detector, defended_outcome
from advlab.threat import ThreatModel

PAPER = ("Carlini, Wagner 2017, Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection Methods, "
         "https://arxiv.org/abs/1705.07263")
AdaptiveAttack = Literal["pgd", "apgd", "cw"]
ATTACKS: tuple[str, ...] = ("pgd", "apgd", "cw")


class Joint(nn.Module):
    """C&W's G: the classifier's K logits and a (K+1)-th "rejected" logit from the detector's score.

    Args:
        model: The classifier (held, never changed).
        detector: A fitted detector of ``model``.
        threshold: τ; default the detector's calibrated threshold (a one-line error if uncalibrated).
        scale: The weight of ``D(x) − τ`` in the extra logit (> 0).
    """

    def __init__(self, model: nn.Module, detector: Detector, *, threshold: float | None = None,
                 scale: float = 1.0) -> None:
        super().__init__()
        if not isinstance(detector, Detector):
            raise TypeError(f"detector: expected an advlab Detector, got {type(detector).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch nn.Module classifier, got {type(model).__name__}")
        if threshold is None:
            if torch.isnan(detector.threshold):
                raise RuntimeError(f"{detector.name}: no threshold; call calibrate(x_heldout_clean, fpr=0.05) before "
                                   "attacking it (or pass threshold=)")
            threshold = float(detector.threshold)
        if not float(scale) > 0:
            raise ValueError(f"scale: expected a number > 0, got {scale!r}")
        self._parts: list[nn.Module] = [model, detector]
        self.tau, self.scale = float(threshold), float(scale)
        self.eval()  # (its own flag: the classifier and detector are held in a list, not submodules)

    @property
    def randomized(self) -> bool:
        """Random when the detector's score is (its forward draws randomness)."""
        return bool(getattr(self._parts[1], "randomized", False))

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's logits (N×K) and the detector's margin D(x) − τ (N; > 0 = rejected)."""
        model, detector = self._parts
        return model(x), detector(x) - self.tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """G(x): N×(K+1) logits; the last wins exactly when the detector rejects ``x``."""
        logits, margin = self.parts(x)
        top = logits.amax(dim=1)
        extra = top + self.scale * margin.to(top.dtype)  # (a float64 score joins float32 logits as float32)
        with torch.no_grad():  # exact: > top where rejected, ≤ top where accepted (argmax takes the first tie)
            exact = torch.where(margin > 0, torch.maximum(extra, torch.nextafter(top, top + 1)),
                                torch.minimum(extra, top))
        extra = extra + (exact - extra).detach()
        return torch.cat([logits, extra[:, None]], dim=1)


def joint_success(out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per example, from G's logits: misclassified and accepted (the winner is a real class ≠ y, or the target)."""
    pred = out.argmax(dim=1)
    if target is not None:
        return pred == target
    return (pred != y) & (pred != out.shape[1] - 1)


def _split(out: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G_label, max over the other columns) per row."""
    lab = out.gather(1, labels[:, None]).squeeze(1)
    return lab, out.scatter(1, labels[:, None], float("-inf")).amax(dim=1)


class JointLoss(TaskLoss):
    """The margin the adaptive PGD/APGD ascend on G's logits (see the module docstring); κ: the confidence.

    Success: misclassified and accepted, with margin ≥ κ when κ > 0.

    ``confidence`` c > 0 gates the detector behind the classifier (the *confident-first* variant,
    ``pgd-joint-hc`` in ``advlab evaluate``): the objective is the classifier's own margin (best
    other real logit − true logit; targeted: target − best other) capped at c, plus, once that margin
    has reached c, G's margin. An example is first driven deep into a wrong class, then the detector
    is attacked from there. Why: on a correctly classified but rejected input G's margin is the
    classifier's margin minus ``scale · (D − τ)``; where the score falls as the classifier grows
    more confident (LID with the softmax layer: its LID shrinks as the softmax nears a one-hot),
    −∇D points back toward the true class, and the two terms balance at a point that is still
    correct and rejected (lenet-mnist: 93 % of the examples after 20 steps, none misclassified;
    docs/defenses.md, "inside evaluate"). The success rule is the same (misclassified and accepted).
    """

    task = "classification"

    def __init__(self, kappa: float = 0.0, confidence: float = 0.0) -> None:
        if not float(kappa) >= 0:
            raise ValueError(f"kappa: expected a number >= 0, got {kappa!r}")
        if not float(confidence) >= 0:
            raise ValueError(f"confidence: expected a number >= 0, got {confidence!r}")
        self.kappa, self.confidence = float(kappa), float(confidence)

    def margin(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Uncapped margin: > 0 iff the attack has succeeded (ties aside)."""
        if target is not None:
            lab, other = _split(out, target)
            return lab - other
        true, best_other = _split(out[:, :-1], y)
        return best_other - torch.maximum(true, out[:, -1])

    @staticmethod
    def classifier_margin(out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """The classifier's own margin from G's real logits: best other − true (targeted: target − best other)."""
        lab, other = _split(out[:, :-1], y if target is None else target)
        return other - lab if target is None else lab - other

    def objective(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """The margin capped at κ (a point beyond the confidence pulls no further); gated by ``confidence``."""
        m = self.margin(out, y, target)
        m = m.clamp(max=self.kappa) if self.kappa > 0 else m
        if self.confidence <= 0:
            return m
        cls = self.classifier_margin(out, y, target)
        return cls.clamp(max=self.confidence) + torch.where(cls >= self.confidence, m, torch.zeros_like(m))

    def success(self, out: torch.Tensor, y: Rows, target: Rows | None) -> torch.Tensor:
        """Misclassified and accepted (and, with κ > 0, by a margin of at least κ)."""
        hit = joint_success(out, y, target)
        return hit & (self.margin(out, y, target) >= self.kappa) if self.kappa > 0 else hit


class TrueClassMerged(nn.Module):
    """G with its rejection logit merged into the true class's: K logits, column y ← max(G_y, G_{K+1}).

    Bound to the labels ``y`` of one batch (called on that batch only: a one-line error otherwise),
    it turns "misclassified and accepted" into plain untargeted misclassification, so an untargeted
    minimal attack (CW) runs on it unchanged.

    With ``confidence`` c > 0 (confident-first, as :class:`JointLoss`): column y ← G_y + c while the
    classifier's margin (best other − G_y) is below c, and max(G_y + c, G_{K+1}) once it is not, so
    the detector pulls only on inputs already misclassified by c, and "misclassified" on this model
    means misclassified by c *and* accepted (stricter than the success it is re-scored on).
    """

    def __init__(self, joint: Joint, y: torch.Tensor, confidence: float = 0.0) -> None:
        super().__init__()
        self.joint, self.y, self.confidence = joint, y, float(confidence)
        self.randomized = joint.randomized
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """K logits with the true class's raised to the rejection logit where that is higher."""
        if len(x) != len(self.y):
            raise ValueError(f"TrueClassMerged: bound to a batch of {len(self.y)} labels, called on {len(x)} inputs")
        out: torch.Tensor = self.joint(x)
        real, extra = out[:, :-1], out[:, -1]
        if self.confidence > 0:
            true, other = _split(real, self.y)
            raised = true + self.confidence
            col = torch.where(other - true >= self.confidence, torch.maximum(raised, extra), raised)
        else:  # (CW calls this every step: no best-other column where none is needed)
            col = torch.maximum(real.gather(1, self.y[:, None]).squeeze(1), extra)
        return real.scatter(1, self.y[:, None], col[:, None])


def _check_inputs(x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, attack: str) -> None:
    if attack not in ATTACKS:
        raise ValueError(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat: expected a ThreatModel, got {type(threat).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) != len(y):
        raise ValueError("x, y: expected tensors with one label per input")
    if attack == "cw" and threat.norm != "l2":
        raise ValueError(f"attack 'cw' is an L2 attack; got a {threat.norm!r} threat model")


def adaptive_attack(model: nn.Module, detector: Detector, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                    attack: AdaptiveAttack = "pgd", *, target: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, kappa: float = 0.0, confidence: float = 0.0,
                    threshold: float | None = None, scale: float = 1.0, eot_samples: int | None = None,
                    **params: Any) -> AttackResult:
    """Attack ``model`` and ``detector`` jointly (C&W 2017); ``success``: misclassified and accepted.

    ``attack``: ``"pgd"`` / ``"apgd"`` (bounded, :class:`JointLoss` through the shared loops, EOT
    over ``eot_samples`` draws for a randomized detector, default 10) or ``"cw"`` (the L2
    Carlini–Wagner attack on G; with ``threat.eps = inf`` unbounded, returning the clean image where
    it fails). ``kappa`` > 0 is the high-confidence variant; ``confidence`` > 0 the confident-first
    attack (:class:`JointLoss`, and for an untargeted CW :class:`TrueClassMerged`: the classifier's
    margin to c first, then G's).
    ``params`` go to the attack (e.g. ``steps``, ``restarts``, ``binary_search_steps``). A ``target``
    (classes < K) needs a targeted ``threat`` (``ThreatModel(..., targeted=True)``), as every attack.
    The success is re-scored on the returned points by one forward pass of G (one draw for a
    randomized detector).
    """
    _check_inputs(x, y, threat, attack)
    loss = JointLoss(kappa, confidence)  # (checks both; the PGD/APGD loss)
    if attack == "cw" and confidence and target is not None:
        raise ValueError("confidence: the confident-first CW is untargeted; a targeted cw takes kappa")
    joint = Joint(model, detector, threshold=threshold, scale=scale)
    if attack == "cw":
        victim: nn.Module = joint if target is not None else TrueClassMerged(joint, y, confidence)
        with fast_views(target is not None):  # (the merged model answers only its own batch, not a probe)
            x_adv = cw(victim, x, y, threat, target=target, generator=generator, kappa=kappa, **params).x_adv
    else:
        samples = eot_samples if eot_samples is not None else (DEFAULT_EOT_SAMPLES if joint.randomized else 1)
        grad_fn = eot_bpda(samples) if samples > 1 else loss_grad
        run = pgd if attack == "pgd" else apgd
        x_adv = run(joint, x, y, threat, target=target, generator=generator, loss=loss,
                    grad_fn=grad_fn, **params).x_adv
    with torch.no_grad():
        success = JointLoss(kappa).success(joint(x_adv), y, target)
    return AttackResult(x_adv.detach(), success)


def defended_accuracy(model: nn.Module, detector: Detector, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """The share of adversarial inputs handled (rejected, or still classified correctly) by the calibrated detector."""
    with torch.no_grad():
        correct = torch.cat([model(x_adv[i : i + 500]).argmax(1) for i in range(0, len(x_adv), 500)]) == y
    return float(defended_outcome(correct, detector.reject(x_adv), adversarial=True).float().mean())


__all__ = ["ATTACKS", "PAPER", "Joint", "JointLoss", "TrueClassMerged", "adaptive_attack", "defended_accuracy",
           "joint_success"]
