"""The names torchattacks, ART, Foolbox and AutoAttack give their attacks, and advlab's attack for each.

A user arriving from one of them types ``AutoAttack``, ``ProjectedGradientDescent`` or ``L2CarliniWagnerAttack``.
:func:`peer_hint` turns such a name into the sentence an unknown-attack error ends with: advlab's name, and
the norm where the peer's name carries one (advlab puts the norm in the ThreatModel). Nothing is run under a
peer's name: the algorithms differ in their details, so the user chooses advlab's attack knowingly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


# a peer's parameter name → advlab's, and whose name it is
_PARAMS: dict[str, tuple[str, str]] = {
    "alpha": ("step_size", "torchattacks'"), "eps_step": ("step_size", "ART's"),
    "abs_stepsize": ("step_size", "Foolbox's"), "nb_iter": ("steps", "CleverHans'"), "max_iter": ("steps", "ART's"),
    "max_iterations": ("steps", "Carlini and Wagner's"), "num_random_init": ("restarts", "ART's"),
    "n_restarts": ("restarts", "AutoAttack's"), "confidence": ("kappa", "ART's and Carlini and Wagner's"),
    "c": ("initial_const", "torchattacks'"), "learning_rate": ("lr", "ART's"),
    "n_queries": ("max_queries", "AutoAttack's"), "max_eval": ("max_queries", "ART's"),
    "eps_iter": ("step_size", "CleverHans'"), "rand_init": ("random_start", "CleverHans'"),
    "nb_candidate": ("candidates", "ART's"),
}
_THREAT = ("eps", "epsilon", "epsilons", "norm", "targeted", "clip_min", "clip_max")


def peer_param_hint(name: str, known: Iterable[str]) -> str:
    """What an unknown parameter is called in advlab, where it is a peer library's name for it, else ``""``."""
    if name in _THREAT:
        return (" (the budget, the norm, the bounds and targeting are the ThreatModel's: ThreatModel('linf', eps, "
                "bounds=(lo, hi), targeted=True), passed as the attack's threat)")
    if name in ("batch_size", "verbose"):
        what = "batch_size splits the images" if name == "batch_size" else "progress=True shows a progress bar"
        return (f" (an attack takes the batch it is given; to run over a dataset in batches use advlab.evaluate, "
                f"whose {what})")
    if name == "rel_stepsize":
        return " (Foolbox's rel_stepsize is advlab's step_size divided by ε)"
    if name in _PARAMS and _PARAMS[name][0] in set(known):
        new, whose = _PARAMS[name]
        return f" ({whose} {name} is advlab's {new})"
    return ""


__all__ = ["peer_hint", "peer_param_hint"]
