"""Deprecated module path (until advlab 0.3): transfer attacks were split into rooms.

The substitute's training (:func:`train_substitute`, :func:`jacobian_augment`, :func:`seed_set`)
lives in :mod:`advlab.attacks.substitute`; the substitute attack's outcome and the
transferability matrix in :mod:`advlab.evaluation.transfer`; the training halves in
:mod:`advlab.data` and :mod:`advlab.train`.
"""

from advlab._deprecation import alias_module
from advlab.attacks.substitute import SubstituteResult, jacobian_augment, seed_set, train_substitute
from advlab.data import HALF_SPLIT_SEED, HALVES, half_indices
from advlab.evaluation.transfer import TransferMatrix, TransferOutcome, substitute_attack, transfer_matrix
from advlab.models import load_model as load_any
from advlab.train import train_half

alias_module("advlab.transfer", "advlab.attacks.substitute / advlab.evaluation.transfer")

__all__ = [
    "HALF_SPLIT_SEED", "HALVES", "SubstituteResult", "TransferMatrix", "TransferOutcome", "half_indices",
    "jacobian_augment", "load_any", "seed_set", "substitute_attack", "train_half", "train_substitute",
    "transfer_matrix",
]
