"""PGD and BIM ignore ``early_stop`` on a model that declares itself randomized."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import ThreatModel
from advlab.attacks import bim, pgd


class _AlreadyFooled(nn.Module):
    """A linear classifier that reads every input as class 1 (so label 0 is fooled from the start)."""

    def __init__(self, randomized: bool) -> None:
        super().__init__()
        self.randomized = randomized
        self.lin = nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.2, 0.0, 0.0, 0.0]]))
            self.lin.bias.copy_(torch.tensor([0.0, 5.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


@pytest.mark.parametrize("attack", [pgd, bim])
def test_early_stop_freezes_examples_on_a_deterministic_model_only(attack) -> None:
    x, y = torch.full((3, 4), 0.5), torch.zeros(3, dtype=torch.long)
    threat = ThreatModel("linf", 0.1)
    kw = {"steps": 7, "early_stop": True} | ({"random_start": False} if attack is pgd else {})
    frozen = attack(_AlreadyFooled(False).eval(), x, y, threat, **kw)
    kept_on = attack(_AlreadyFooled(True).eval(), x, y, threat, **kw)
    assert bool(frozen.success.all()) and bool(kept_on.success.all())
    # deterministic: fooled before the first step, so early stop keeps the clean point
    assert torch.equal(frozen.x_adv, x)
    # randomized: every one of the 7 steps of 2.5·ε/7 is taken along the gradient (coordinate 0), up to ε
    assert torch.allclose((kept_on.x_adv - x)[:, 0].abs(), torch.full((3,), 0.1))
    assert torch.equal(kept_on.x_adv[:, 1:], x[:, 1:])  # zero gradient there: no move
