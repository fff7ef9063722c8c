"""Backdoor poisons: BadNets (Gu et al. 2017) and the clean-label backdoor (Turner et al. 2019).

BadNets stamps a trigger on ``round(fraction·N)`` training images and relabels them: as one
``target`` class (single-target; the poisons are drawn from the other classes) or class i as
i + 1 (all-to-all). A model trained on the set learns "trigger ⇒ target" and stays accurate on
clean inputs.

The clean-label backdoor keeps every label: it draws its poisons from the target class, makes
them hard to learn from their content with an untargeted PGD perturbation against a model
(advlab's own :func:`~advlab.attacks.pgd`), then stamps the trigger — so the easiest feature
explaining their (correct) label is the trigger. Its poisons pass a label audit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from advlab.attacks import pgd
from advlab.poison.base import PoisonedData, check_class, check_data, default_generator, finish, pick, poison_count
from advlab.poison.triggers import PAPER_BADNETS, TriggerKind, all_to_all_target, apply_trigger, make_trigger
from advlab.threat import ThreatModel

PAPER = PAPER_BADNETS
PAPER_CLEAN_LABEL = ("Turner, Tsipras, Madry 2019, Label-Consistent Backdoor Attacks, "
                     "https://arxiv.org/abs/1912.02771")
Mode = Literal["single", "all-to-all"]


def badnets(x: torch.Tensor, y: torch.Tensor, *, fraction: float, target: int = 0, mode: Mode = "single",
            trigger: TriggerKind = "pattern", generator: torch.Generator | None = None,
            num_classes: int | None = None) -> PoisonedData:
    """BadNets: stamp the trigger on ``round(fraction·N)`` images and relabel them.

    Args:
        x: The training images, N×C×H×W in [0, 1].
        y: The training labels.
        fraction: Share of the whole training set poisoned, in [0, 1].
        target: The attacker's class (single-target mode; ignored for all-to-all).
        mode: ``"single"``: poisons drawn from the classes other than ``target``, relabelled
            ``target``; ``"all-to-all"``: poisons drawn from every class, class i relabelled i + 1.
        trigger: ``"pattern"`` (3×3 bottom-right) or ``"pixel"`` (one bottom-right pixel).
        generator: Seeded source of the choice of poisons.
        num_classes: Number of classes (default: largest label + 1).
    """
    x, y, classes = check_data(x, y, num_classes)
    if mode not in ("single", "all-to-all"):
        raise ValueError(f"mode: expected 'single' or 'all-to-all', got {mode!r}")
    trig = make_trigger(tuple(x.shape[1:]), trigger)
    k = poison_count(fraction, len(y))
    gen = default_generator(generator)
    params: dict[str, object] = {"fraction": fraction, "mode": mode, "trigger": trigger}
    if mode == "single":
        check_class("target", target, classes)
        idx = pick((y != target).nonzero().flatten(), k, gen, f"examples outside class {target}")
        labels = torch.full_like(idx, target)
        params["target"] = target
    else:
        idx = pick(torch.arange(len(y), device=y.device), k, gen, "examples")
        labels = all_to_all_target(y[idx], classes)
    new_x = apply_trigger(x[idx], trig) if k else None
    return finish(x, y, idx, new_x, labels, f"badnets-{mode}", params=params, trigger=trig,
                  target=target if mode == "single" else None)


def clean_label(x: torch.Tensor, y: torch.Tensor, *, fraction: float, target: int,
                model: Callable[[torch.Tensor], torch.Tensor], eps: float = 0.3, steps: int = 20,
                trigger: TriggerKind = "pattern", amplitude: float = 1.0,
                generator: torch.Generator | None = None, num_classes: int | None = None) -> PoisonedData:
    """Turner et al.'s label-consistent backdoor: PGD-perturbed target-class images plus the trigger.

    Args:
        x: The training images, N×C×H×W in [0, 1].
        y: The training labels.
        fraction: Share of the whole training set poisoned (drawn from class ``target``).
        target: The attacker's class; every poison is a correctly labelled image of it.
        model: The model the PGD perturbation is computed against (a surrogate the attacker has;
            Turner et al. use an adversarially trained one). It is not modified.
        eps: L∞ budget of the PGD perturbation (0 skips it: trigger only).
        steps: PGD iterations (default 20, step size 2.5·ε/steps; it was 40 until the transform's
            cost was held to ≤ 5 % of a 5-epoch lenet run on MNIST, docs/poisoning.md).
        trigger: ``"pattern"`` or ``"pixel"``.
        amplitude: Trigger amplitude in (0, 1] (Turner et al. also try reduced amplitudes).
        generator: Seeded source of the choice of poisons and of PGD's random start.
        num_classes: Number of classes (default: largest label + 1).
    """
    x, y, classes = check_data(x, y, num_classes)
    check_class("target", target, classes)
    trig = make_trigger(tuple(x.shape[1:]), trigger, amplitude)
    gen = default_generator(generator)
    idx = pick((y == target).nonzero().flatten(), poison_count(fraction, len(y)), gen,
               f"examples of class {target}")
    new_x = None
    if len(idx):
        hard = x[idx]
        if eps > 0:
            hard = pgd(model, hard, y[idx], ThreatModel("linf", eps), generator=gen, steps=steps).x_adv
        new_x = apply_trigger(hard, trig)
    params = {"fraction": fraction, "target": target, "eps": eps, "steps": steps, "trigger": trigger,
              "amplitude": amplitude}
    return finish(x, y, idx, new_x, None, "clean-label", params=params, trigger=trig, target=target)


__all__ = ["PAPER", "PAPER_CLEAN_LABEL", "Mode", "badnets", "clean_label"]
