"""What ``advlab evaluate`` runs when not told otherwise: attacks, budgets, attack parameters.

Every table is data keyed by attack name (documented in docs/evaluation.md); the user's
parameters override them, and are bound against each attack's signature here before anything runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from advlab._checks import plain_number
from advlab.attacks import AttackInfo, get_attack, list_attacks
from advlab.attacks.registry import registered_as
from advlab.models.blackbox import BlackBox
from advlab.results.plan import Job

DEFAULT_ATTACKS = ("noise", "semantic", "fgsm", "bim", "pgd", "deepfool", "cw")
# ... where the threat model's norm has attacks of its own: an L0 evaluation runs the sparse attacks
# (the gradient attacks above have no L0 mode and would run at their own norms instead)
NORM_ATTACKS: dict[str, tuple[str, ...]] = {"l0": ("noise", "semantic", "jsma", "sparse-rs")}
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
    "sparse-rs": {"max_queries": 1000},
    "hopskipjump": {"max_queries": 1000},
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
    free = [a for a in infos if not a.needs_grad and not a.adaptive and a.kind != "transfer"]
    return tuple(a.name for a in sorted(free, key=lambda a: (KIND_ORDER.index(a.kind), a.name)))


def attack_params(info: AttackInfo, job: Job, user: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parameters an attack runs with in the evaluation."""
    return {**DEFAULT_PARAMS.get(info.name, {}), **DEFAULT_NORM_PARAMS.get((info.name, job.norm), {}),
            **user.get(info.name, {}), **dict(job.params)}


def default_attacks(net: nn.Module | BlackBox, norm: str = "linf") -> tuple[str, ...]:
    """The attacks an evaluation runs when given none: a black box's, else the norm's own or the defaults."""
    return blackbox_attacks() if isinstance(net, BlackBox) else NORM_ATTACKS.get(norm, DEFAULT_ATTACKS)


def _attack_name(a: object) -> str:
    """A registered attack's name, given as its name, its AttackInfo or its function (``advlab.attacks.pgd``)."""
    info = get_attack(a) if isinstance(a, str) else registered_as(a)
    if info is None:
        raise TypeError(f"attacks: expected attack names, got {type(a).__name__}"
                        + ("; an attack of your own runs once it is registered (advlab.attacks.register_attack)"
                           if callable(a) else ""))
    return info.name


def choose_attacks(attacks: str | Sequence[object] | None, net: nn.Module | BlackBox, norm: str = "linf") -> list[str]:
    """Registry names of the attacks, each once, in the order first given; the defaults depend on the model.

    An attack is given by its name, its :class:`AttackInfo` or its registered function (``advlab.attacks.pgd``);
    one string may name several (``"fgsm,pgd"``, as the command line takes them). Unknown names fail with
    suggestions; a repeated name (``fgsm,fgsm``) runs once, so no row is duplicated.
    """
    given: object = default_attacks(net, norm) if attacks is None else attacks
    if isinstance(given, str):
        given = [a.strip() for a in given.split(",") if a.strip()]
    if registered_as(given) is not None or not isinstance(given, Sequence) or isinstance(given, bytes):
        given = [given]
    names = list(dict.fromkeys(_attack_name(a) for a in given))
    if not names:
        raise ValueError("attacks: expected at least one attack name")
    return names


def bind_params(params: Mapping[str, Mapping[str, Any]] | None, jobs: Sequence[Job],
                extra: Sequence[Job] = ()) -> dict[str, dict[str, Any]]:
    """The user's per-attack parameters, checked before anything is written.

    Each attack's parameters are bound against its signature alone, then merged with the defaults
    for every job (``extra``: jobs that may join later, the adaptive attack's): the registry's own
    check, so a misspelt name fails naming the closest and a value out of range fails. Renamed
    parameters warn when the attack runs, not here.

    Args:
        params: Attack name → parameters, as the user gave them (None: none).
        jobs: The planned jobs.
        extra: Jobs that may be added while running.

    Returns:
        A copy of ``params`` (plain dicts) under the attacks' registered names (``"PGD"`` is pgd's), values as
        plain numbers.

    Raises:
        TypeError, ValueError: The registry's one-line errors (unknown attack or parameter, bad value).
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a mapping of attack name to parameters, got {type(params).__name__}")
    out: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, values in params.items():
            if not isinstance(values, Mapping):
                raise TypeError(f"params: expected a table of parameters for {name!r}, got {type(values).__name__}")
            info = get_attack(name)  # (its name as the jobs know it: "PGD" is pgd's parameters, not nobody's)
            info.bind(values)
            if info.name in out:
                raise ValueError(f"params: two tables name {info.name}; give its parameters once")
            out[info.name] = {k: plain_number(int | float | bool, v) for k, v in values.items()}  # (JSON: the store)
        for job in [*jobs, *extra]:
            info = get_attack(job.attack)
            info.bind(attack_params(info, job, out))
    return out


__all__ = [
    "ADAPTIVE",
    "DEFAULT_ATTACKS",
    "DEFAULT_NORM_PARAMS",
    "DEFAULT_PARAMS",
    "KIND_ORDER",
    "LINF_STEP",
    "NORM_ATTACKS",
    "N_EXAMPLES",
    "attack_params",
    "bind_params",
    "blackbox_attacks",
    "choose_attacks",
    "default_attacks",
]
