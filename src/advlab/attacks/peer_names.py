"""The names torchattacks, ART, Foolbox and AutoAttack give their attacks, and advlab's attack for each.

A user arriving from one of them types ``AutoAttack``, ``ProjectedGradientDescent`` or ``L2CarliniWagnerAttack``.
:func:`peer_hint` turns such a name into the sentence an unknown-attack error ends with: advlab's name, and
the norm where the peer's name carries one (advlab puts the norm in the ThreatModel). Nothing is run under a
peer's name: the algorithms differ in their details, so the user chooses advlab's attack knowingly.
"""

from __future__ import annotations

import re

# peer name (lower case, letters and digits only) → (advlab's attack, the norm the name implies or "")
_SAME: dict[str, tuple[str, str]] = {
    # torchattacks
    "pgd": ("pgd", ""), "pgdl2": ("pgd", "l2"), "fgsm": ("fgsm", ""), "bim": ("bim", ""), "cw": ("cw", "l2"),
    "deepfool": ("deepfool", ""), "square": ("square", ""), "apgd": ("apgd", ""), "apgdt": ("apgd-t", ""),
    "autoattack": ("apgd-ensemble", ""), "apgdce": ("apgd", ""), "apgddlr": ("apgd", ""),
    "mifgsm": ("mi-fgsm", ""), "jsma": ("jsma", "l0"),
    "eadl1": ("ead", "l1"), "eaden": ("ead", "l1"), "eotpgd": ("pgd-adaptive", ""), "gn": ("noise", ""),
    "onepixel": ("sparse-rs", "l0"), "fab": ("fmn", ""),
    # ART
    "fastgradientmethod": ("fgsm", ""), "projectedgradientdescent": ("pgd", ""),
    "basiciterativemethod": ("bim", ""), "momentumiterativemethod": ("mi-fgsm", ""),
    "carlinil2method": ("cw", "l2"), "carlinilinfmethod": ("cw-linf", "linf"), "carlinil0method": ("cw-l0", "l0"),
    "autoprojectedgradientdescent": ("apgd", ""), "squareattack": ("square", ""), "hopskipjump": ("hopskipjump", ""),
    "elasticnet": ("ead", "l1"), "saliencymapmethod": ("jsma", "l0"), "boundaryattack": ("hopskipjump", "l2"),
    # Foolbox
    "linfpgd": ("pgd", "linf"), "l2pgd": ("pgd", "l2"), "l1pgd": ("pgd", "l1"),
    "linffastgradientattack": ("fgsm", "linf"), "l2fastgradientattack": ("fgsm", "l2"),
    "linfbasiciterativeattack": ("bim", "linf"), "l2basiciterativeattack": ("bim", "l2"),
    "l2carliniwagnerattack": ("cw", "l2"), "linfdeepfoolattack": ("deepfool", "linf"),
    "l2deepfoolattack": ("deepfool", "l2"), "eadattack": ("ead", "l1"), "hopskipjumpattack": ("hopskipjump", ""),
    "l0fmnattack": ("fmn", "l0"), "l1fmnattack": ("fmn", "l1"), "l2fmnattack": ("fmn", "l2"),
    "linffmnattack": ("fmn", "linf"), "inversionattack": ("semantic", ""),
    "l2additivegaussiannoiseattack": ("noise", "l2"), "linfadditiveuniformnoiseattack": ("noise", "linf"),
}
# where advlab's counterpart is a relative, not the same attack: said so
_RELATIVE = {"onepixel": "an L0 score-based random search, of which one pixel is a budget",
             "fab": "a minimal-norm attack of the same family (FAB itself is not in advlab)",
             "boundaryattack": "the decision-based attack that refines it",
             "eaden": "the elastic-net attack, with the L1 decision rule", "gn": "random noise at the budget",
             "apgdce": "with loss='ce' (its default)", "apgddlr": "with loss='dlr'"}


def peer_hint(name: str) -> str:
    """``"; 'NAME' is advlab's 'X' (...)"`` for a peer library's attack name, else ``""``."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key not in _SAME:
        return ""
    attack, norm = _SAME[key]
    where = f" with ThreatModel({norm!r}, ...)" if norm else ""
    kind = f", {_RELATIVE[key]}" if key in _RELATIVE else ""
    return f"; from torchattacks, ART or Foolbox: advlab's {attack!r}{where}{kind}"


__all__ = ["peer_hint"]
