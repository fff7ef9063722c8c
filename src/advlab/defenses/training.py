"""Training-time defenses: each is a step function (and optional hooks) for the one loop in train.py.

A :class:`TrainingDefense` changes what one batch contributes to the loss (adversarial examples,
a KL term, a gradient penalty, soft labels), optionally the training set (negative images), and
optionally the weights after every optimiser step (Parseval). The loop, the optimiser, the
schedule and the determinism are train.py's, shared by every defense. This module is the
registry by name; the defenses live in :mod:`.adversarial`, :mod:`.regularizers` and
:mod:`.distillation`.

* ``adversarial`` — Goodfellow, Shlens, Szegedy 2015 (https://arxiv.org/abs/1412.6572): each
  batch mixes clean and adversarial examples, loss = w·CE(clean) + (1−w)·CE(adv); the crafting
  attack is any registered attack (FGSM by default).
* ``pgd`` — Madry et al. 2018 (https://arxiv.org/abs/1706.06083): train on PGD examples only.
* ``fast`` — Wong, Rice, Kolter 2020 (https://arxiv.org/abs/2001.03994): FGSM from a uniform
  random start with step 1.25·ε.
* ``trades`` — Zhang et al. 2019 (https://arxiv.org/abs/1901.08573): CE(clean) + β·KL(f(x)‖f(x′)),
  x′ maximising the KL inside the ε-ball.
* ``negative`` — Hosseini et al. 2017 (https://arxiv.org/abs/1703.06857): add the negatives
  1 − x of ``count`` training images to the training set.
* ``parseval`` — Cisse et al. 2017 (https://arxiv.org/abs/1704.08847): after every step,
  W ← (1+β)W − βWWᵀW on every linear and (reshaped) convolution weight, keeping it near a
  Parseval tight frame (largest singular value near 1).
* ``gradnorm`` — an input-gradient-norm penalty: CE + β·‖∇ₓCE‖₂² (double back-propagation,
  Drucker & LeCun 1992; Ross & Doshi-Velez 2018, https://arxiv.org/abs/1711.09404).
* ``distill`` — Papernot et al. 2016 (https://arxiv.org/abs/1511.04508): a teacher trained with
  softmax at temperature T labels the training set with soft labels at T; the student is
  trained on them at T and deployed at T = 1 (its raw logits).
* ``ibp`` — Gowal et al. 2018 (https://arxiv.org/abs/1810.12715): κ·CE(clean) + (1−κ)·CE(worst-case
  logits from interval bounds), ε and κ ramped after a warm-up (:mod:`advlab.certify.training`).
* ``crown-ibp`` — Zhang et al. 2020 (https://arxiv.org/abs/1906.06316): the same with the bound
  β·CROWN-IBP + (1−β)·IBP, β 1 → 0 and κ 1 → 0 over the ramp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advlab._checks import suggest
from advlab.certify.training import CrownIBPTraining, IBPTraining
from advlab.defenses.adversarial import (
    AdversarialTraining,
    FastAdversarialTraining,
    NegativeImages,
    Trades,
)
from advlab.defenses.distillation import DistillationStudent, TemperatureTeacher, distill
from advlab.defenses.noise import GaussianNoise
from advlab.defenses.regularizers import GradNormPenalty, Parseval, parseval_layers, spectral_norms
from advlab.train import TrainingDefense

__all__ = [
    "DEFENSES", "AdversarialTraining", "CrownIBPTraining", "DistillationStudent", "FastAdversarialTraining",
    "GradNormPenalty", "IBPTraining",
    "NegativeImages", "Parseval", "TemperatureTeacher", "Trades", "distill", "list_training_defenses",
    "make_training_defense", "parseval_layers", "spectral_norms",
]


DEFENSES: dict[str, Callable[..., TrainingDefense]] = {
    "none": TrainingDefense,
    "adversarial": AdversarialTraining,
    "pgd": lambda **kw: AdversarialTraining(**{"name": "pgd", "attack": "pgd", "clean_weight": 0.0, **kw}),
    "fast": FastAdversarialTraining,
    "trades": Trades,
    "negative": NegativeImages,
    "parseval": Parseval,
    "gradnorm": GradNormPenalty,
    "distill": DistillationStudent,
    "ibp": IBPTraining,
    "crown-ibp": CrownIBPTraining,
    "gaussian-noise": GaussianNoise,
}


def list_training_defenses() -> list[str]:
    """Names accepted by :func:`make_training_defense` and ``advlab train --defense``."""
    return sorted(DEFENSES)


def make_training_defense(name: str, **options: Any) -> TrainingDefense:
    """Build a training defense by name with keyword options (unknown options are refused)."""
    if name not in DEFENSES:
        raise ValueError(
            f"defense: expected one of {', '.join(repr(d) for d in sorted(DEFENSES))}, got {name!r}"
            f"{suggest(name, DEFENSES)}"
        )
    try:
        return DEFENSES[name](**options)
    except TypeError as e:
        allowed = _fields(name)
        bad = sorted(set(options) - set(allowed))
        if bad:
            raise ValueError(
                f"defense {name!r}: unknown option(s) {', '.join(bad)}; expected some of {', '.join(allowed)}"
            ) from None
        raise ValueError(f"defense {name!r}: {e}") from None


def _fields(name: str) -> list[str]:
    probe = DEFENSES[name]()
    return sorted(k for k in probe.__dict__ if not k.startswith("_") and k != "name")
