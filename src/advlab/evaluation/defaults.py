"""What ``advlab evaluate`` runs when not told otherwise: attacks, budgets, attack parameters.

Every table is data keyed by attack name (documented in docs/evaluation.md); the user's
parameters override them.
"""

from __future__ import annotations

from typing import Any

from advlab.attacks import AttackInfo, get_attack, list_attacks
from advlab.results.plan import Job

DEFAULT_ATTACKS = ("noise", "semantic", "fgsm", "bim", "pgd", "deepfool", "cw")
# A black box has no gradients: its default attacks are every registered attack that needs none,
# baselines first, then score-based, then decision-based (the order of the table's rows).
KIND_ORDER = ("baseline", "score-based", "decision-based", "transfer", "white-box")
LINF_STEP = 0.01  # BIM/PGD step for L∞ (the classic 40 × 0.01 schedule); other norms: 2.5·ε/steps
# Budgets advlab evaluate uses by default (documented in docs/evaluation.md); user params override.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "bim": {"steps": 40, "early_stop": True},
    "pgd": {"steps": 40, "early_stop": True},
    "deepfool": {"steps": 50, "overshoot": 0.02},
    "cw": {"steps": 100, "binary_search_steps": 5, "lr": 0.1},
    "square": {"max_queries": 1000},
    "hopskipjump": {"max_queries": 1000},
    "apgd-ensemble": {"max_queries": 1000},
}
# ... and per (attack, norm): the classic 40 × 0.01 L∞ schedule of BIM/PGD (other norms: 2.5·ε/steps)
DEFAULT_NORM_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("bim", "linf"): {"step_size": LINF_STEP},
    ("pgd", "linf"): {"step_size": LINF_STEP},
}
# what evaluate adds when a gradient-masking check fires: the attack registered as adaptive
ADAPTIVE = next(name for name in list_attacks() if get_attack(name).adaptive)
N_EXAMPLES = 6  # examples per job kept in the store for the report's figures


def blackbox_attacks() -> tuple[str, ...]:
    """The default attacks of a black box: every registered attack that needs no gradient."""
    infos = [get_attack(name) for name in list_attacks()]
    free = [a for a in infos if not a.needs_grad and not a.adaptive]
    return tuple(a.name for a in sorted(free, key=lambda a: (KIND_ORDER.index(a.kind), a.name)))


def attack_params(info: AttackInfo, job: Job, user: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parameters an attack runs with in the evaluation."""
    return {**DEFAULT_PARAMS.get(info.name, {}), **DEFAULT_NORM_PARAMS.get((info.name, job.norm), {}),
            **user.get(info.name, {})}


__all__ = [
    "ADAPTIVE", "DEFAULT_ATTACKS", "DEFAULT_NORM_PARAMS", "DEFAULT_PARAMS", "KIND_ORDER", "LINF_STEP", "N_EXAMPLES",
    "attack_params", "blackbox_attacks",
]
