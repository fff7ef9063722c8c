"""Attacks: one module per family, each registered by its own decorator and imported here.

``get_attack(name)`` returns an :class:`AttackInfo` (callable); ``list_attacks("pgd*")`` lists
names; every attack function is also importable by name (``from advlab.attacks import pgd``) and
keeps the same contract as the registry call. A model in training mode is attacked through an
eval-mode copy (:func:`inference_view`; :func:`keep_train_mode` keeps its training-mode
randomness), so no attack changes the model. Adding an attack is one new module and one line
in the import list below.
"""

import sys
import types

from advlab.attacks.adaptive import eot_bpda, eot_grad_fn, pgd_adaptive
from advlab.attacks.adversarial_patch import Patch, PatchScore, patch_success, universal_patch
from advlab.attacks.autobpda import auto_bpda, pgd_bpda
from advlab.attacks.autopgd import SquareSkipped, apgd, apgd_ensemble, apgd_t
from advlab.attacks.baselines import noise, semantic
from advlab.attacks.carlini_wagner import cw
from advlab.attacks.carlini_wagner_l0 import cw_l0
from advlab.attacks.carlini_wagner_linf import cw_linf
from advlab.attacks.decision_based import hopskipjump
from advlab.attacks.dense_adversary import DenseResult, dag, dag_detection
from advlab.attacks.detection import DetectionLoss, VanishingLoss, vanishing
from advlab.attacks.elastic_net import ead
from advlab.attacks.fastview import (
    FastViewSkipped,
    ModelInTrainingMode,
    fast_view,
    fast_views,
    inference_view,
    keep_train_mode,
)
from advlab.attacks.gradient import bim, fgsm, pgd
from advlab.attacks.guard import NoInputGradient
from advlab.attacks.latent import defensegan_latent
from advlab.attacks.linearised import deepfool
from advlab.attacks.losses import is_adversarial, loss_grad, margin_loss
from advlab.attacks.mifgsm import mi_fgsm
from advlab.attacks.minimum_norm import fmn
from advlab.attacks.quasi_newton import lbfgs
from advlab.attacks.random_search import square
from advlab.attacks.registry import (
    AttackInfo,
    AttackResult,
    get_attack,
    list_attacks,
    register_attack,
)
from advlab.attacks.saliency import jsma
from advlab.attacks.sparse import sparse_rs
from advlab.attacks.surrogate import transfer
from advlab.attacks.targets import choose_targets
from advlab.attacks.tasks import CustomLoss, SegmentationLoss, TaskLoss
from advlab.attacks.universal import UniversalScore, apply_universal, universal_perturbation, universal_score

__all__ = [
    "AttackInfo",
    "AttackResult",
    "CustomLoss",
    "DenseResult",
    "DetectionLoss",
    "FastViewSkipped",
    "ModelInTrainingMode",
    "NoInputGradient",
    "Patch",
    "PatchScore",
    "SegmentationLoss",
    "SquareSkipped",
    "TaskLoss",
    "UniversalScore",
    "VanishingLoss",
    "apgd",
    "apgd_ensemble",
    "apgd_t",
    "apply_universal",
    "auto_bpda",
    "bim",
    "choose_targets",
    "cw",
    "cw_l0",
    "cw_linf",
    "dag",
    "dag_detection",
    "deepfool",
    "defensegan_latent",
    "ead",
    "eot_bpda",
    "eot_grad_fn",
    "fast_view",
    "fast_views",
    "fgsm",
    "fmn",
    "get_attack",
    "hopskipjump",
    "inference_view",
    "is_adversarial",
    "jsma",
    "keep_train_mode",
    "lbfgs",
    "list_attacks",
    "loss_grad",
    "margin_loss",
    "mi_fgsm",
    "noise",
    "patch_success",
    "pgd",
    "pgd_adaptive",
    "pgd_bpda",
    "register_attack",
    "semantic",
    "sparse_rs",
    "square",
    "transfer",
    "universal_patch",
    "universal_perturbation",
    "universal_score",
    "vanishing",
]


class _Package(types.ModuleType):
    """``advlab.attacks`` itself: importing a deprecated alias module leaves the attack of its name in place.

    ``from advlab.attacks.cw import cw`` (the old path) makes the import system set the module
    ``advlab.attacks.cw`` as the package's attribute ``cw``, over the attack: every later ``from
    advlab.attacks import cw`` in the process got a module ("'module' object is not callable"). The
    attack stays; the alias module is still in ``sys.modules`` for imports from it.
    """

    def __setattr__(self, name: str, value: object) -> None:
        current = self.__dict__.get(name)
        if isinstance(value, types.ModuleType) and callable(current) and not isinstance(current, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
