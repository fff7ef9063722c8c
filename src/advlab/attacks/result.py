"""What an attack returns: :class:`AttackResult` (re-exported by :mod:`advlab.attacks.registry`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: The adversarial batch, always inside the bounds (and the ε-ball when bounded).
        success: Per-example bool: the model's prediction on ``x_adv`` is wrong (untargeted) or
            equals the target (targeted), as seen by the attack at its last query.
        queries: Per-example model queries (int64), or ``None`` where the attack does not count.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor | None = None

    def __repr__(self) -> str:
        """One line (a REPL's echo), not the whole batch: shape, dtype and device, successes, queries."""
        x, ok = self.x_adv, self.success
        where = "" if x.device.type == "cpu" else f" on {x.device}"
        shape = "×".join(map(str, x.shape))
        queries = "" if self.queries is None else f", mean queries {float(self.queries.double().mean()):.1f}"
        return (f"AttackResult(x_adv: {str(x.dtype).removeprefix('torch.')} {shape}{where}, success "
                f"{int(ok.sum())}/{ok.numel()}{queries})")


__all__ = ["AttackResult"]
