"""Defenses. Training-time defenses plug into the one training loop (:func:`advlab.train.fit`).

``make_training_defense("pgd", eps=0.3)`` builds one by name; ``advlab train --defense NAME -o
KEY=VALUE`` is the command-line equivalent. See :mod:`advlab.defenses.training` for the list
and the papers.
"""

from advlab.defenses.training import (
    DEFENSES,
    AdversarialTraining,
    DistillationStudent,
    FastAdversarialTraining,
    GradNormPenalty,
    NegativeImages,
    Parseval,
    TemperatureTeacher,
    Trades,
    distill,
    list_training_defenses,
    make_training_defense,
    parseval_layers,
    spectral_norms,
)
from advlab.train import TrainingDefense

__all__ = [
    "DEFENSES",
    "AdversarialTraining",
    "DistillationStudent",
    "FastAdversarialTraining",
    "GradNormPenalty",
    "NegativeImages",
    "Parseval",
    "TemperatureTeacher",
    "Trades",
    "TrainingDefense",
    "distill",
    "list_training_defenses",
    "make_training_defense",
    "parseval_layers",
    "spectral_norms",
]
