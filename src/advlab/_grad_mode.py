"""Attacks need autograd whatever mode their caller is in.

A caller's ``torch.no_grad()`` is undone where an attack differentiates (``torch.enable_grad()``), but
``torch.inference_mode()`` cannot be: under it no graph is recorded at all, so a gradient attack would find
the model's output cut off from its input and blame the model (or fail in autograd's words). Attacks,
evaluations, Defense-GAN's projection and the detectors' fitting therefore run with inference mode off
(``torch.inference_mode(False)``), on normal copies of any inference tensors they are given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def normal(value: T) -> T:
    """A tensor created under inference mode as a normal tensor autograd can use (a copy); anything else as is."""
    if isinstance(value, torch.Tensor) and value.is_inference():
        return value.clone()  # type: ignore[return-value]
    return value


def autograd_on() -> torch.inference_mode:
    """A context in which autograd records graphs even when the caller is in inference mode."""
    return torch.inference_mode(False)


def with_autograd(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run with inference mode off, its tensor arguments made normal tensors (:func:`normal`)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with autograd_on():
            return fn(*(normal(a) for a in args), **{k: normal(v) for k, v in kwargs.items()})  # type: ignore[arg-type]

    return run
