"""What an evaluation with a detector adds on its own: the C&W 2017 joint attacks on classifier and detector.

The planned attacks are *zero-knowledge*: they attack the classifier and ignore the detector.
Carlini & Wagner 2017 ("Adversarial examples are not easily detected", https://arxiv.org/abs/1705.07263)
attack both at once: :func:`advlab.detect.adaptive.adaptive_attack` builds their joint model G
(the classifier's logits and a "rejected" logit from the detector's score, winning exactly when the
calibrated detector rejects) and attacks it; success means misclassified *and* accepted. With a
detector, after the planned attacks, evaluate adds (as it adds ``pgd-adaptive`` for masking):

* ``pgd-joint`` — PGD on G (the evaluation's PGD parameters; EOT over the detector's draws when it
  is randomized) at every ε of the sweep, where PGD has the evaluation's norm;
* ``pgd-joint-hc`` — the same PGD with the confident-first loss (``confidence`` = :data:`CONFIDENCE`
  logits, :class:`advlab.detect.adaptive.JointLoss`): each example is first driven to a classifier
  margin of c, then G's margin is ascended from there. Where the detector's score falls as the
  classifier grows more confident (LID with the softmax layer), ``pgd-joint`` settles on inputs that
  are still correct and rejected, while this one crosses the boundary first (docs/defenses.md,
  "inside evaluate");
* ``cw-joint`` — the unbounded Carlini–Wagner L2 attack on G (the evaluation's CW parameters),
  once, scored at every ε of the L2 sweep, when ``cw`` is among the evaluation's attacks: its
  median L2 is the distortion that fools classifier and detector together, next to ``cw``'s;
* ``cw-joint-hc`` — the same CW, confident-first (:class:`advlab.detect.adaptive.TrueClassMerged`
  with ``confidence`` = :data:`CONFIDENCE`): it stops only where the classifier is fooled by c
  logits and the detector accepts, so its L2 is an upper bound on the distortion needed, for a
  detector on which ``cw-joint`` stalls as ``pgd-joint`` does.

Their rows are scored like every other row (the model's own prediction, the stored detector
decision), so the report shows each attack's zero-knowledge defended accuracy next to the adaptive one.
"""

from __future__ import annotations

import math
import time
from typing import Any

from advlab.attacks import get_attack
from advlab.evaluation.respond import add_cost
from advlab.evaluation.run import JOINT, Run
from advlab.results.plan import DEFAULT_EPS, Job

CONFIDENCE = 10.0  # pgd-joint-hc, cw-joint-hc: the classifier margin (logits) reached before the detector counts


def joint_jobs(config: dict[str, Any]) -> list[Job]:
    """The joint attacks of an evaluation with a detector (see the module docstring)."""
    norm, sweep = config["norm"], tuple(config["eps"])
    jobs = []
    if norm in get_attack("pgd").norms:
        budgets = [float(e) for e in sweep if 0 < e < math.inf]
        jobs += [Job("pgd", norm, e, sweep, label="pgd-joint") for e in budgets]
        jobs += [Job("pgd", norm, e, sweep, label="pgd-joint-hc", params=(("confidence", CONFIDENCE),))
                 for e in budgets]
    if "cw" in config["attacks"]:
        l2 = sweep if norm == "l2" else DEFAULT_EPS["l2"]
        jobs.append(Job("cw", "l2", math.inf, l2, label="cw-joint"))
        jobs.append(Job("cw", "l2", math.inf, l2, label="cw-joint-hc", params=(("confidence", CONFIDENCE),)))
    return jobs


def add_joint(run: Run) -> None:
    """Run the joint attacks (recorded as jobs the evaluation added; a resumed run finishes them)."""
    if run.detector is None or (run.store.get_meta("skipped") or {}).get("leaves_autograd"):
        return  # (a model whose output leaves autograd has no gradient for the joint attacks either)
    t0 = time.perf_counter()
    run.add_jobs(joint_jobs(run.config))
    add_cost(run, "adaptive vs detector", time.perf_counter() - t0)


__all__ = ["CONFIDENCE", "JOINT", "add_joint", "joint_jobs"]
