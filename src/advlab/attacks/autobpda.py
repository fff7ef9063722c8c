"""Automatic BPDA: find where a model loses its gradient, from its behaviour alone, and attack through it.

A user's model declares nothing: no ``differentiable = False``, no ``bpda``. This module finds
what an adaptive attacker (Athalye, Carlini, Wagner 2018, https://arxiv.org/abs/1802.00420) would
find by hand, by *running* the model — never by reading module types or operation names:

* **A forward that leaves autograd** (numpy/Pillow inside ``forward``, ``.detach()``,
  ``torch.no_grad()``): the output does not depend on the input in the autograd graph.
* **A stage with a zero or NaN gradient** (rounding, quantisation): the input gradient is zero or
  not finite on many inputs, while the gradient at a later submodule's input is healthy.
* **A random forward** (random resizing inside ``forward``): two identical calls differ.
* **Probabilities returned as logits** (a saturated softmax ×10⁴): every output row is
  non-negative with the same sum; the attack then works on their logarithm, which keeps the
  argmax and un-saturates the loss.

The stand-in at a break is the identity (straight-through): the first submodule whose input is
cut off from the input, or whose input gradient is healthy when the input's is not, receives
``u.detach() + (s − s.detach())`` — the value it would have received, with the gradient of the
latest earlier tensor ``s`` of the same shape that is still connected (the input itself, or an
earlier submodule's output). Submodules whose output is cut off from a connected input run with
autograd on. :func:`auto_bpda` returns a view of the model declaring what was found, so the
adaptive attack (:func:`~advlab.attacks.adaptive.eot_bpda`) runs through it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab._checks import NonNegFloat, PositiveInt
from advlab.attacks.adaptive import DEFAULT_EOT_SAMPLES, PAPER
from advlab.attacks.gradient import GRADIENT_NORMS
from advlab.attacks.input_errors import NoInputGradient, leaves_autograd
from advlab.attacks.losses import Loss, ce_loss
from advlab.attacks.registry import AttackResult, get_attack, register_attack
from advlab.models.blackbox import row_sums
from advlab.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]
PROBE_N = 32  # inputs each behavioural probe runs on
UNHEALTHY_SHARE = 0.1  # a gradient is unhealthy when at least this share of inputs has a zero or NaN one
SUM_RTOL = 1e-3  # rows summing to the same value within this (relative): probabilities, not logits
MAX_BREAKS = 3  # stand-ins placed before giving up
TINY = 1e-30  # floor of a probability before its logarithm
OUTPUT = "(output)"  # the module of a stand-in at the model's output itself (no submodule has this name)


@dataclass(frozen=True)
class Fix:
    """One stand-in: at submodule ``module``, straight-through from ``source`` ("" = the input), or autograd on."""

    module: str
    kind: str  # "identity" or "enable-grad"
    source: str = ""

    def describe(self) -> str:
        """E.g. ``identity from the input to net's input``."""
        if self.kind == "enable-grad":
            return f"autograd switched on inside {self.module}"
        to = "the model's output" if self.module == OUTPUT else f"{self.module}'s input"
        return f"identity from {self.source or 'the input'} to {to}"


@dataclass
class Probe:
    """What the model does to gradients, measured on a few inputs."""

    leaves_autograd: bool = False
    unhealthy: bool = False
    random: bool = False
    probabilities: bool = False
    fixes: list[Fix] = field(default_factory=list)
    healed: bool = True  # the gradient through the stand-ins is healthy
    reached: bool = True  # a gradient reaches the input through the stand-ins at all (healthy or not)

    @property
    def masked(self) -> bool:
        """Whether anything was found that a plain gradient attack would be fooled by."""
        return self.leaves_autograd or self.unhealthy or self.random or self.probabilities

    def describe(self) -> str:
        """A one-line summary for the report."""
        parts = [f.describe() for f in self.fixes]
        if self.probabilities:
            parts.append("log of the probabilities it returns")
        if self.random:
            parts.append(f"EOT×{DEFAULT_EOT_SAMPLES} (random forward)")
        if not self.healed:
            parts.append("no stand-in restored the gradient")
        return "; ".join(parts) or "nothing to route around"


def is_random(model: Model, x: torch.Tensor) -> bool:
    """Whether two identical forward passes differ."""
    with torch.no_grad():
        return not torch.equal(model(x), model(x))


def returns_probabilities(model: Model, x: torch.Tensor) -> bool:
    """Whether every output row is non-negative and all rows have the same sum (a softmax, maybe scaled)."""
    with torch.no_grad():
        sums = row_sums(model(x))
    return sums is not None and bool(torch.allclose(sums, sums[0].expand_as(sums), rtol=SUM_RTOL)) and bool(
        sums[0] > 0)


def unhealthy(g: torch.Tensor | None) -> bool:
    """A gradient that is absent, or zero or not finite on at least :data:`UNHEALTHY_SHARE` of the inputs."""
    if g is None:
        return True
    norms = g.flatten(1).norm(dim=1)
    return float(((norms == 0) | ~torch.isfinite(norms)).float().mean()) >= UNHEALTHY_SHARE


@dataclass
class _Trace:
    """The submodules' inputs and outputs of one forward pass, in execution order."""

    names: list[str] = field(default_factory=list)
    inputs: list[torch.Tensor | None] = field(default_factory=list)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # names in the order their outputs appeared


def _first_tensor(args: Any) -> torch.Tensor | None:
    if isinstance(args, torch.Tensor):
        return args
    if isinstance(args, (tuple, list)) and args and isinstance(args[0], torch.Tensor):
        return args[0]
    return None


def _submodules(model: Any) -> dict[str, nn.Module]:
    if not isinstance(model, nn.Module):
        return {}
    return {name: m for name, m in model.named_modules() if name}


@contextmanager
def _hooks(mods: dict[str, nn.Module], fixes: list[Fix], x: torch.Tensor,
           trace: _Trace | None) -> Iterator[dict[str, torch.Tensor]]:
    """Place the stand-ins of ``fixes`` (and record a trace) for the forward passes inside the block.

    Only a trace hooks every submodule; an attack's forward pass (no trace) hooks the stand-ins'
    modules and their sources alone, and nothing at all where there is no stand-in. Yields the
    sources' outputs as they are captured (for a stand-in at the model's output).
    """
    captured: dict[str, torch.Tensor] = {"": x}
    handles = []
    sources = {f.source for f in fixes if f.kind == "identity"}
    identity = {f.module: f.source for f in fixes if f.kind == "identity"}
    grad_on = {f.module for f in fixes}  # a stand-in works inside a no_grad block of the caller too
    state: dict[str, bool] = {}
    hooked = mods if trace is not None else {n: m for n, m in mods.items() if n in grad_on or n in sources}
    for name, mod in hooked.items():
        def pre(m: nn.Module, args: tuple[Any, ...], name: str = name) -> tuple[Any, ...] | None:
            if name in grad_on:
                state[name] = torch.is_grad_enabled()
                torch.set_grad_enabled(True)
            new = None
            u = _first_tensor(args)
            if name in identity and u is not None:
                s = captured[identity[name]]
                new = (u.detach() + (s - s.detach()).to(u.dtype), *args[1:])
            if trace is not None:
                trace.names.append(name)
                trace.inputs.append(new[0] if new is not None else u)
            return new

        def post(m: nn.Module, args: tuple[Any, ...], out: Any, name: str = name) -> None:
            if name in grad_on:
                torch.set_grad_enabled(state.pop(name, False))
            t = _first_tensor(out)
            if t is not None and (name in sources or trace is not None):
                captured[name] = t
                if trace is not None:
                    trace.outputs[name] = t
                    trace.order.append(name)

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def _logits(model: Model, mods: dict[str, nn.Module], x: torch.Tensor, fixes: list[Fix], probabilities: bool,
            trace: _Trace | None = None) -> torch.Tensor:
    with _hooks(mods, fixes, x, trace) as captured:
        out = model(x)
    at_output = [f.source for f in fixes if f.module == OUTPUT]
    if at_output and torch.is_grad_enabled():
        s = captured[at_output[0]]
        out = out.detach() + (s - s.detach()).to(out.dtype)
    return torch.log(out.clamp_min(TINY)) if probabilities else out


def _connected(t: torch.Tensor | None) -> bool:
    return t is not None and t.requires_grad


def _next_fix(model: Model, x: torch.Tensor, y: torch.Tensor, fixes: list[Fix], probabilities: bool
              ) -> tuple[bool, Fix | None, bool]:
    """(gradient healthy, the next stand-in to place, the input reached at all) from one traced forward and backward."""
    xr = x.detach().clone().requires_grad_(True)
    trace = _Trace()
    with torch.enable_grad():
        try:
            z = _logits(model, _submodules(model), xr, fixes, probabilities, trace)
        except RuntimeError:
            return False, None, False
        if not z.requires_grad:
            return False, _cut_fix(trace, xr, fixes) or _output_fix(trace, z), False
        want: list[torch.Tensor] = [xr] + [u for u in trace.inputs if u is not None and u.requires_grad]
        grads = torch.autograd.grad(ce_loss(z, y).sum(), want, allow_unused=True)
    if not unhealthy(grads[0]):
        return True, None, True
    healthy_inputs = {id(u) for u, g in zip(want[1:], grads[1:], strict=True) if not unhealthy(g)}
    for name, u in zip(trace.names, trace.inputs, strict=True):
        if u is None or any(f.module == name for f in fixes):
            continue
        if not _connected(u) or id(u) in healthy_inputs:
            return False, _identity_fix(trace, xr, name, u), grads[0] is not None
    return False, _cut_fix(trace, xr, fixes), grads[0] is not None


def _identity_fix(trace: _Trace, x: torch.Tensor, name: str, u: torch.Tensor) -> Fix | None:
    """Straight-through into ``name`` from the latest earlier connected tensor of the same shape."""
    k = trace.names.index(name)
    before = set(trace.names[:k])
    for src in reversed(trace.order):
        s = trace.outputs[src]
        if src in before and not name.startswith(src + ".") and _connected(s) and s.shape == u.shape:
            return Fix(name, "identity", src)
    return Fix(name, "identity", "") if u.shape == x.shape else None


def _cut_fix(trace: _Trace, x: torch.Tensor, fixes: list[Fix]) -> Fix | None:
    """Where the output is cut off: a stand-in at the innermost submodule whose input is connected and output is not.

    Inside it, a child whose input is cut off (numpy between two children of a wrapped model) gets
    the identity; otherwise autograd is switched on inside it (a ``torch.no_grad()`` block). Without
    such a submodule, the first submodule whose input is cut off gets the identity. A submodule
    already given a stand-in is not given another.
    """
    done = {f.module for f in fixes}
    pairs = [(n, u) for n, u in zip(trace.names, trace.inputs, strict=True) if n not in done]
    cut = [n for n, u in pairs if _connected(u) and (o := trace.outputs.get(n)) is not None and not _connected(o)]
    inner = [n for n in cut if not any(m.startswith(n + ".") for m in cut)]
    for name in inner[:1]:
        for child, u in pairs:
            if child.startswith(name + ".") and u is not None and not _connected(u):
                fix = _identity_fix(trace, x, child, u)
                if fix is not None:
                    return fix
        return Fix(name, "enable-grad")
    for name, u in pairs:
        if u is not None and not _connected(u):
            return _identity_fix(trace, x, name, u)
    return None


def _output_fix(trace: _Trace, z: torch.Tensor) -> Fix | None:
    """Straight-through into the model's output from the latest connected submodule output of its shape.

    For a break after the last submodule (numpy or ``.detach()`` on the logits inside ``forward``),
    where no submodule's input is cut off.
    """
    for src in reversed(trace.order):
        s = trace.outputs[src]
        if _connected(s) and s.shape == z.shape:
            return Fix(OUTPUT, "identity", src)
    return None


def probe(model: Model, x: torch.Tensor, y: torch.Tensor) -> Probe:
    """Measure on ``x[:PROBE_N]`` what the model does to gradients, and find stand-ins for the breaks."""
    x, y = x[:PROBE_N].detach(), y[:PROBE_N]
    p = Probe(leaves_autograd=leaves_autograd(model, x), random=is_random(model, x),
              probabilities=returns_probabilities(model, x))
    fixes: list[Fix] = []
    healthy, fix, reached = _next_fix(model, x, y, fixes, False)
    p.unhealthy = not healthy and not p.leaves_autograd
    if p.probabilities and not healthy:
        healthy, fix, reached = _next_fix(model, x, y, fixes, True)
    else:
        p.probabilities = False
    while not healthy and fix is not None and len(fixes) < MAX_BREAKS:
        fixes.append(fix)
        healthy, fix, reached = _next_fix(model, x, y, fixes, p.probabilities)
    p.fixes, p.healed, p.reached = fixes, healthy, reached
    return p


class AutoBPDA:
    """A model seen through the stand-ins a :class:`Probe` found; declares them for the adaptive attack.

    ``view(x)`` is the model's output (the log of it where the model returns probabilities: same
    argmax); ``view.bpda(x)`` is the same values with the stand-ins' gradients. ``differentiable``
    and ``randomized`` are what :mod:`advlab.attacks.adaptive` reads.
    """

    def __init__(self, model: Model, found: Probe) -> None:
        self.model, self.found = model, found
        self.differentiable = not found.fixes
        self.randomized = found.random
        self._mods = _submodules(model) if found.fixes else {}  # looked up once, not at every step

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output (the log of its probabilities where it returns them); stand-ins under autograd."""
        if not torch.is_grad_enabled():
            return _logits(self.model, {}, x, [], self.found.probabilities)
        return self.bpda(x)

    def bpda(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass with the stand-ins in place."""
        return _logits(self.model, self._mods, x, self.found.fixes, self.found.probabilities)


def auto_bpda(model: Model, x: torch.Tensor, y: torch.Tensor) -> AutoBPDA:
    """Probe ``model`` on a few of ``x`` and return the view the adaptive attack differentiates."""
    return AutoBPDA(model, probe(model, x, y))


def route(model: Model, x: torch.Tensor, y: torch.Tensor) -> tuple[AutoBPDA, str | None]:
    """:func:`auto_bpda`'s view, and why no gradient reaches the input through it (None where one does)."""
    view = auto_bpda(model, x, y)
    if view.found.reached or not view.found.leaves_autograd:  # (reached: the probe's last pass, stand-ins kept)
        return view, None
    return view, ("pgd-bpda: the model's output leaves autograd where no stand-in fits (inside its forward itself, "
                  f"after its last submodule; stand-ins found: {view.found.describe()}), so no gradient reaches the "
                  "input; wrap the non-differentiable step in a submodule or declare it (differentiable = False "
                  "and a bpda() stand-in), or use a black-box attack (square, hopskipjump)")


@register_attack("pgd-bpda", kind="white-box", norms=GRADIENT_NORMS, targeted=True, paper=PAPER, adaptive=True)
def pgd_bpda(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: PositiveInt = 100,
    step_size: NonNegFloat | None = None,
    restarts: PositiveInt = 1,
    loss: Loss = "margin",
    eot_samples: PositiveInt | None = None,
    early_stop: bool = False,
) -> AttackResult:
    """PGD through stand-ins found automatically: BPDA, EOT and log-probabilities with no declaration.

    The model is probed on the first 32 inputs (:func:`probe`): where its forward leaves autograd
    or has a stage with zero/NaN gradients, the gradient goes through an identity stand-in (BPDA);
    where two identical calls differ, it is averaged over ``eot_samples`` draws (default 10; 1 for
    a deterministic model); where it returns probabilities, the margin loss is taken on their
    logarithm. It is ``pgd-adaptive`` run on the view :func:`auto_bpda` returns (on an honest
    model, ``pgd-adaptive`` itself). Cost: ``steps`` × EOT draws forward and backward passes per
    restart, and four probing passes.
    """
    adaptive = get_attack("pgd-adaptive").fn  # (its undecorated function: the inputs are checked already)
    view, why_not = route(model, x, y)
    if why_not is not None:
        raise NoInputGradient(why_not)
    return adaptive(view, x, y, threat, target=target, generator=generator, steps=steps,
                    step_size=step_size, restarts=restarts, loss=loss, eot_samples=eot_samples, early_stop=early_stop)


__all__ = [
    "AutoBPDA",
    "Fix",
    "Probe",
    "auto_bpda",
    "is_random",
    "pgd_bpda",
    "probe",
    "returns_probabilities",
    "route",
    "unhealthy",
]
