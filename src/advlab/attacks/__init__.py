"""Attacks, one module per family, imported explicitly here so the registry is complete.

``get_attack(name)`` returns an :class:`AttackInfo` (callable); ``list_attacks("pgd*")`` lists names.
"""

from advlab.attacks.base import (
    AttackInfo,
    AttackResult,
    choose_targets,
    fast_view,
    fast_views,
    get_attack,
    is_adversarial,
    list_attacks,
    loss_grad,
    margin_loss,
    register_attack,
)

__all__ = [
    "AttackInfo",
    "AttackResult",
    "choose_targets",
    "fast_view",
    "fast_views",
    "get_attack",
    "is_adversarial",
    "list_attacks",
    "loss_grad",
    "margin_loss",
    "register_attack",
]

# White-box (issue 3), black-box (issue 5), APGD and its ensemble (issue 7).
from advlab.attacks import adaptive, apgd, baselines, cw, deepfool, gradient, hopskipjump, square  # noqa: F401
