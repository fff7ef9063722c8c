"""What every poisoning attack shares: the result type, the poison count, the input checks.

A poisoning attack is a pure, seeded data transform ``attack(x, y, *, fraction, generator, ...)
-> PoisonedData`` applied to a training set before :func:`advlab.train.fit` (the training loop is
unchanged). It changes exactly :func:`poison_count` ``(fraction, N)`` examples — ``round(fraction·N)``
with halves rounded up, ``floor(fraction·N + 1/2)`` — and nothing else: every other image and label
is returned bit for bit. The same ``generator`` seed gives the same poisoned set; ``generator=None``
means a generator seeded with 0, so a call without one is deterministic too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch

from advlab._checks import Range, check_images, check_labels, check_param, looks_channels_last, plain_number
from advlab._device import draw

# A share of a set, 0 and 1 included (the registry's ``Fraction`` excludes 0).
Share = Annotated[float, Range(0.0, 1.0)]


@dataclass
class PoisonedData:
    """A poisoned training set.

    Attributes:
        x: All N images, the poisoned ones changed (a new tensor; the input is never modified).
        y: All N labels, the poisoned ones changed where the attack changes labels.
        poisoned_idx: Sorted row numbers (int64) of the changed examples; exactly
            ``poison_count(fraction, N)`` of them.
        attack: The attack's name.
        params: The attack's settings (fraction, target, ...), for reports.
        trigger: The trigger stamped on the poisons (backdoors), to be applied at test time.
        target: The target class of a single-target backdoor or pair flip (None otherwise).
        extra: Attack-specific outputs (e.g. the feature-collision target image).
    """

    x: torch.Tensor
    y: torch.Tensor
    poisoned_idx: torch.Tensor
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    trigger: Any = None
    target: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> torch.Tensor:
        """Per-example bool: poisoned."""
        m = torch.zeros(len(self.y), dtype=torch.bool, device=self.y.device)
        m[self.poisoned_idx] = True
        return m


def poison_count(fraction: float, n: int) -> int:
    """``round(fraction·n)`` with halves rounded up: how many of ``n`` examples an attack changes.

    Example:
        >>> poison_count(0.01, 60000), poison_count(0.005, 100), poison_count(0.0, 7)
        (600, 1, 0)
    """
    check_param("fraction", Share, fraction)
    return math.floor(fraction * n + 0.5)


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a new one seeded with 0 (so a call without one is deterministic)."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return generator


def check_data(x: object, y: object, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check a training set: images N×C×H×W in [0, 1], int labels of shape (N,); returns (x, y, classes).

    ``num_classes`` defaults to the largest label + 1.
    """
    x = check_images("x", x, (0.0, 1.0))
    shape = tuple(x.shape)
    if x.dim() != 4:
        hint = " (grey images without a channel axis: x.unsqueeze(1))" if x.dim() == 3 else ""
        raise ValueError(f"x: expected images N×C×H×W, got shape {shape}{hint}")
    if looks_channels_last(shape):
        raise ValueError(f"x: expected images N×C×H×W, got shape {shape}, which looks channels-last (N×H×W×C): "
                         "x.permute(0, 3, 1, 2)")
    y = check_labels("y", y, len(x))
    classes = int(y.max()) + 1 if num_classes is None else num_classes
    check_param("num_classes", Annotated[int, Range(2)], classes)
    check_labels("y", y, len(x), classes)
    return x, y, classes


def check_class(arg: str, value: object, num_classes: int) -> int:
    """Check a class index (a target, a source) against the number of classes."""
    value = plain_number(int, value)  # (a NumPy integer, or a 0-d tensor: y[i] of the labels)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{arg}: expected a class index (an integer), got {type(value).__name__} {value!r}")
    if not 0 <= value < num_classes:
        raise ValueError(f"{arg}: expected a class in [0, {num_classes}), got {value}")
    return value


def pick(pool: torch.Tensor, k: int, generator: torch.Generator, what: str) -> torch.Tensor:
    """``k`` distinct row numbers drawn uniformly from ``pool`` (sorted); a one-line error if too few.

    Args:
        pool: Candidate row numbers (int64).
        k: How many to draw.
        generator: The seeded source of randomness.
        what: What the pool holds, for the error ("examples of class 3").
    """
    if k > len(pool):
        raise ValueError(f"fraction: asks for {k} poisons but there are only {len(pool)} {what}")
    chosen = pool[draw(torch.randperm, len(pool), generator=generator, device=pool.device)[:k]]
    return chosen.sort().values


def finish(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, new_x: torch.Tensor | None,
           new_y: torch.Tensor | None, attack: str, **kwargs: Any) -> PoisonedData:
    """The poisoned set: copies of ``x``, ``y`` with rows ``idx`` replaced by ``new_x``/``new_y``."""
    px, py = x.clone(), y.clone()
    if new_x is not None:
        px[idx] = new_x.to(px.dtype)
    if new_y is not None:
        py[idx] = new_y.to(py.dtype)
    return PoisonedData(px, py, idx, attack, **kwargs)


__all__ = ["PoisonedData", "Share", "check_class", "check_data", "default_generator", "finish", "pick",
           "poison_count"]
