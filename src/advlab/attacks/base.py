"""Deprecated alias of the attack building blocks' old home (until advlab 0.3).

Import from :mod:`advlab.attacks` (or :mod:`advlab.attacks.registry`, :mod:`.losses`,
:mod:`.fastview`, :mod:`.targets`) instead.
"""

from advlab._deprecation import alias_module
from advlab.attacks.fastview import fast_view, fast_views
from advlab.attacks.losses import GradFn, LossFn, ce_loss, is_adversarial, loss_grad, margin_loss
from advlab.attacks.registry import AttackInfo, AttackKind, AttackResult, get_attack, list_attacks, register_attack
from advlab.attacks.targets import choose_targets

alias_module("advlab.attacks.base", "advlab.attacks")

__all__ = [
    "AttackInfo", "AttackKind", "AttackResult", "GradFn", "LossFn", "ce_loss", "choose_targets", "fast_view",
    "fast_views", "get_attack", "is_adversarial", "list_attacks", "loss_grad", "margin_loss", "register_attack",
]
