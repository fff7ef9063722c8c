"""Poisoning and backdoor attacks on the training set, and the defenses that find and remove them.

Attacks are pure, seeded data transforms ``attack(x, y, *, fraction, generator, ...) ->
PoisonedData`` applied before :func:`advlab.train.fit` (the training loop is unchanged); each
changes exactly ``round(fraction·N)`` examples (halves rounded up; :func:`poison_count`):

- label flipping: :func:`uniform_flip`, :func:`pair_flip`, :func:`concentrated_flip`;
- BadNets backdoors (Gu et al. 2017): :func:`badnets` (pattern or pixel trigger, single-target or
  all-to-all); the trigger is stamped by :func:`apply_trigger`, at test time too;
- the clean-label backdoor (Turner et al. 2019): :func:`clean_label`;
- feature-collision "poison frogs" (Shafahi et al. 2018): :func:`feature_collision`, against a
  model fine-tuned on frozen features (:func:`fine_tune_head`).

Defenses: :func:`spectral_signatures` (Tran et al. 2018) and :func:`activation_clustering` (Chen
et al. 2018) flag suspected poisons from a trained model's :func:`penultimate_features`;
:func:`remove_flagged` gives the set to retrain on. Their robust variants
:func:`robust_spectral` and :func:`robust_activation_clustering` (``spectral-robust``,
``activation-clustering-robust``: robust whitening after SPECTRE, Hayase et al. 2021, and a
data-adaptive cut) flag without a fixed removal share. :func:`strip_entropy` (STRIP, Gao et al.
2019) detects triggered inputs at test time. :mod:`advlab.poison.experiment` runs the whole
clean / poisoned / cleaned comparison that ``advlab poison`` reports.
"""

from advlab.models.features import penultimate_features
from advlab.poison.backdoor import badnets, clean_label
from advlab.poison.base import PoisonedData, poison_count
from advlab.poison.collision import FineTuned, collision_success, feature_collision, fine_tune_head
from advlab.poison.detect import (
    Detection,
    activation_clustering,
    detection_rates,
    remove_flagged,
    spectral_signatures,
)
from advlab.poison.label_flip import concentrated_flip, margins, pair_flip, uniform_flip
from advlab.poison.robust import robust_activation_clustering, robust_spectral
from advlab.poison.strip import far_at_frr, roc_auc, strip_entropy
from advlab.poison.triggers import Trigger, apply_trigger, attack_success_rate, make_trigger

__all__ = [
    "Detection", "FineTuned", "PoisonedData", "Trigger", "activation_clustering", "apply_trigger",
    "attack_success_rate", "badnets", "clean_label", "collision_success", "concentrated_flip", "detection_rates",
    "far_at_frr", "feature_collision", "fine_tune_head", "make_trigger", "margins", "pair_flip",
    "penultimate_features", "poison_count", "remove_flagged", "robust_activation_clustering", "robust_spectral",
    "roc_auc", "spectral_signatures", "strip_entropy",
    "uniform_flip",
]
