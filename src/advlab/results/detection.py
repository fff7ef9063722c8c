"""The reject option's numbers, from the store's per-example detector scores alone (issue 16).

An evaluation with a detector stores, beside each example's outcome, the detector's score of the
input the attack returned and whether the calibrated detector rejects it (the ``detect`` table;
the clean test images under the key :data:`~advlab.results.store.CLEAN_JOB`). Per row:

* ``detect_auc`` — ROC-AUC of the scores of the adversarial examples that *fool the classifier*
  (correctly classified clean, misclassified adversarial: the row's successes) against the scores of
  every clean test image; None when the attack fooled none;
* ``detect_tpr`` — the share of those adversarial examples rejected at the calibrated threshold;
* ``clean_rejected`` — the share of the clean test images rejected (the same in every row);
* ``defended_acc`` — the share of examples handled (:func:`~advlab.detect.defended_outcome`):
  an adversarial input counts if it is rejected or still correctly classified. The ``clean`` row's
  is the clean defended accuracy: a clean input counts only if accepted and correct.

A minimal-perturbation attack is scored at each ε as the table scores it: where its example is
farther than ε the attacker is left with the clean image, so the clean image's score and decision
count there. A fixed-budget attack's returned input counts as returned (a failed attack's too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advlab.detect.base import defended_outcome
from advlab.metrics import roc_auc
from advlab.results.plan import Job
from advlab.results.store import CLEAN_JOB, Store


@dataclass
class Detected:
    """Per example: the score and the decision (True = rejected) of the input the defender sees."""

    score: torch.Tensor
    rejected: torch.Tensor


def clean_detected(store: Store, n: int) -> Detected | None:
    """The clean test images' scores and decisions (None: the evaluation has no detector)."""
    d = store.detect(CLEAN_JOB)
    if not len(d["idx"]):
        return None
    if len(d["idx"]) != n:
        raise RuntimeError(f"store: the detector scored {len(d['idx'])} of {n} clean images; re-run to finish it")
    return Detected(d["score"], d["rejected"])


def job_detected(store: Store, job: Job, n: int) -> Detected:
    """A job's stored scores and decisions, one per example (a one-line error if some are missing)."""
    d = store.detect(job.key)
    if len(d["idx"]) != n:
        raise RuntimeError(f"store: job {job.key} has detector scores for {len(d['idx'])} of {n} examples; "
                           "re-run to finish it")
    return Detected(d["score"], d["rejected"])


def at_budget(job: Job, d: Detected, clean: Detected, within: torch.Tensor) -> Detected:
    """What the defender sees at one budget: a minimal attack's example only ``within`` ε, else the clean image."""
    if job.eps != math.inf:
        return d
    return Detected(torch.where(within, d.score, clean.score), torch.where(within, d.rejected, clean.rejected))


def row_numbers(broken: torch.Tensor, top1: torch.Tensor, d: Detected, clean: Detected
                ) -> tuple[dict[str, float | None], torch.Tensor]:
    """A row's reject-option columns and the per-example handled mask (for the worst case).

    Args:
        broken: The row's successes (correctly classified clean, misclassified adversarial at this ε).
        top1: Whether the input the defender sees is correctly classified.
        d: Its score and decision (:func:`at_budget`).
        clean: The clean test images' scores and decisions.
    """
    handled = defended_outcome(top1.bool(), d.rejected, adversarial=True)
    fooled = d.score[broken]
    return {
        "detect_auc": roc_auc(fooled, clean.score) if len(fooled) else None,
        "detect_tpr": float(d.rejected[broken].double().mean()) if len(fooled) else None,
        "clean_rejected": float(clean.rejected.double().mean()),
        "defended_acc": float(handled.double().mean()),
    }, handled


def clean_numbers(top1_clean: torch.Tensor, clean: Detected) -> dict[str, float | None]:
    """The clean row's columns: no attack, the clean defended accuracy (accepted and correct)."""
    handled = defended_outcome(top1_clean.bool(), clean.rejected, adversarial=False)
    return {"detect_auc": None, "detect_tpr": None, "clean_rejected": float(clean.rejected.double().mean()),
            "defended_acc": float(handled.double().mean())}


__all__ = ["Detected", "at_budget", "clean_detected", "clean_numbers", "job_detected", "row_numbers"]
