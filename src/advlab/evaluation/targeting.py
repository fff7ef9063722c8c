"""Targeted evaluation: which class each example is pushed towards, and which attacks can push it.

``advlab evaluate --targeted MODE`` runs every attack in targeted mode; an attack succeeds on an
example only where the model classifies its x_adv as the target (the store's ``adv`` column
then means "reached the target"), so the table's success rate is the targeted success rate and
Acc@1 with attack is the accuracy left when the attacker keeps the clean image wherever it missed
its target. The modes:

* ``random`` — one target per example, uniform over the other classes, drawn from the evaluation
  seed (the same targets on every run and every resume);
* ``least-likely`` — the class the model finds least likely on the clean image;
* ``all`` — every other class: each example is attacked once towards each of the other C − 1
  classes (Carlini & Wagner's protocol), so the table has n·(C − 1) examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from advlab.attacks import choose_targets, get_attack, inference_view
from advlab.attacks.registry import check_finite_logits
from advlab.data.source import Images

TARGETED = ("random", "least-likely", "all")
TARGET_SEED_OFFSET = 7919  # (the random targets' generator: seed-derived, apart from the attacks' batches)
CHECKS_SKIPPED_TARGETED = ("a targeted evaluation: the gradient-masking checks and the ensemble are untargeted "
                           "(evaluate without --targeted for them)")


def num_classes(net: Any, x: torch.Tensor) -> int:
    """The number of the model's outputs, from one clean image."""
    with torch.no_grad():
        logits = inference_view(net)(x[:1])
    check_finite_logits(logits, "on the first input")
    return int(logits.shape[1])


def targeted_data(net: Any, x: torch.Tensor, y: torch.Tensor, mode: str, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images, labels and targets of a targeted evaluation (``all``: each example once per other class).

    A lazy image set (:class:`~advlab.data.source.Images`) stays lazy: ``all`` repeats its index,
    not its images, and the other modes read the model's logits in one streamed pass.
    """
    if mode == "all":
        c = num_classes(net, x)
        offsets = torch.arange(1, c, dtype=y.dtype)
        target = ((y[:, None] + offsets[None, :]) % c).flatten()
        if isinstance(x, Images):
            lazy = x.subset(torch.arange(len(x)).repeat_interleave(c - 1))
            return cast(torch.Tensor, lazy), y.repeat_interleave(c - 1), target
        return x.repeat_interleave(c - 1, dim=0), y.repeat_interleave(c - 1), target
    gen = torch.Generator().manual_seed(seed + TARGET_SEED_OFFSET)
    if isinstance(x, Images):
        return x, y, _streamed_targets(net, x, y, mode, gen)
    return x, y, choose_targets(net, x, y, mode, generator=gen)  # type: ignore[arg-type]


def _streamed_targets(net: Any, x: Images, y: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """:func:`~advlab.attacks.choose_targets` on a lazy set: the logits streamed once, then chosen from as usual.

    ``choose_targets`` sees a stand-in N×1 input and a model that returns the precomputed logits,
    so the targets (and the generator's draws) are exactly those of the materialised images.
    """
    view = inference_view(net)
    with torch.no_grad():
        logits = torch.cat([view(xb) for xb in x.iter_batches()])
    return choose_targets(lambda _: logits, torch.zeros(len(x), 1), y, mode, generator=gen)  # type: ignore[arg-type]


def targeted_attacks(attacks: list[str], given: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The attacks that have a targeted mode, and those left out (only from the defaults: a named one must have it)."""
    lacking = [a for a in attacks if not get_attack(a).targeted]
    if lacking and given is not None:
        many = len(lacking) > 1
        raise ValueError(f"attacks: {', '.join(lacking)} ha{'ve' if many else 's'} no targeted mode (advlab attacks "
                         f"lists which do); drop {'them' if many else 'it'} or evaluate without --targeted")
    kept = [a for a in attacks if a not in lacking]
    if not kept:
        raise ValueError("attacks: none of them has a targeted mode")
    return kept, lacking


__all__ = ["CHECKS_SKIPPED_TARGETED", "TARGETED", "targeted_attacks", "targeted_data"]
