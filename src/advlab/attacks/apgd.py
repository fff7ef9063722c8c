"""Deprecated module path (until advlab 0.3): the attack lives in :mod:`advlab.attacks.autopgd`.

The module was renamed so that no module of ``advlab.attacks`` is shadowed by the attack function
the package exports under the same name (``advlab.attacks.apgd`` is that function).
"""

from advlab._deprecation import alias_module
from advlab.attacks.autopgd import (
    APGD_NORMS,
    apgd,
    apgd_core,
    apgd_ensemble,
    apgd_t,
    checkpoints,
    dlr_loss,
    dlr_targeted_loss,
)

alias_module("advlab.attacks.apgd", "advlab.attacks.autopgd")

__all__ = ["APGD_NORMS", "apgd", "apgd_core", "apgd_ensemble", "apgd_t", "checkpoints", "dlr_loss", "dlr_targeted_loss"]
