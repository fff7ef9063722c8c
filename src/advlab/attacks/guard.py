"""What a user's model must give back, checked before advlab relies on it: logits, and its input left alone.

A model written for training or serving need not keep the contract an attack relies on. Two ways
it breaks it silently are caught here, on a copy of the model and two of the attacked images,
under forked random streams (the model and the caller's RNGs are untouched):

* **Its output is not a tensor** (a tuple of logits and auxiliary outputs, a dict, a Hugging Face
  output object): a one-line ``ValueError`` says what it returned and how to pass the logits,
  instead of an error deep inside a loss function.
* **Its forward changes its input in place** (``x.sub_(mean)`` inside ``forward``): every call
  would rewrite the caller's tensor, so the clean images, the attack's iterates and the norms
  measured on them would all be wrong, or autograd refuses the in-place change of a leaf. Such a
  model is run through :class:`InputCopy`, which hands it a copy of each input, with a
  :class:`ModelChangesInput` warning: the numbers are then those of the function the model
  computes on a fresh input.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch
from torch import nn

from advlab.attacks.fastview import _caller_level
from advlab.attacks.modulecopy import Tree, rng_sandbox

_HONEST: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models found to keep the contract (checked once)


class ModelChangesInput(UserWarning):
    """The model's forward changes its input in place: advlab hands it a copy of each input."""


class InputCopy(nn.Module):
    """``model`` called on a copy of its input; the model's own attributes (``bpda``, flags) read through."""

    _advlab_io_checked = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return self.model(x.clone(), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def check_io(model: Any, x: torch.Tensor) -> Any:
    """``model``, or :class:`InputCopy` of it where its forward changes its input in place.

    Runs a copy of ``model`` once on a copy of ``x[:2]`` (once per model: a model found to keep the
    contract is remembered, weakly). Anything that is not an ``nn.Module``
    (a BlackBox, a function), a model that cannot be copied, or one whose copy raises on the
    probe is returned as it is: the attack then meets the problem and reports it.

    Raises:
        ValueError: The model's output is not a tensor of logits.
    """
    if (not isinstance(model, nn.Module) or getattr(model, "_advlab_io_checked", False) or model in _HONEST
            or len(x) == 0):
        return model
    probe = x[:2].detach()
    given = probe.clone()
    try:
        copied = Tree().module(model, "")
        with rng_sandbox(probe.device), torch.no_grad():
            out = copied(given)
    except Exception:  # (the model's own failure: reported by the attack, where it has context)
        return model
    name = type(model).__name__
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model: {name} returns a {type(out).__name__}, not a tensor of logits; give advlab a "
                         "model whose forward returns the logits alone (for example a wrapper returning "
                         "model(x)[0], or model(x).logits)")
    if not torch.equal(given, probe):
        warnings.warn(f"advlab: {name}'s forward changes its input in place; advlab hands it a copy of every "
                      "input (write x = x - mean, not x.sub_(mean), to silence this)", ModelChangesInput,
                      stacklevel=_caller_level())
        return InputCopy(model)
    _HONEST.add(model)
    return model


__all__ = ["InputCopy", "ModelChangesInput", "check_io"]
