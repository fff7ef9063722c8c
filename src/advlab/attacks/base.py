"""What every attack shares: the result type, the registry, input validation, targets, gradients.

An attack is a function ``attack(model, x, y, threat, *, target=None, generator=None, **params)
-> AttackResult``. It never changes the model (parameters, ``.grad``, train/eval mode,
``requires_grad``) and never mutates ``x``. Gradients are taken with respect to the input only,
through :func:`loss_grad`, the one seam where adaptive estimators (EOT, BPDA) plug in.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import check_choice, check_images, check_labels, suggest
from advlab.threat import ThreatModel

AttackKind = Literal["white-box", "score-based", "decision-based", "transfer", "baseline"]


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


class AttackFn(Protocol):
    """The call signature every registered attack implements."""

    def __call__(  # noqa: D102
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **params: Any,
    ) -> AttackResult: ...


@dataclass(frozen=True)
class AttackInfo:
    """Registry metadata for an attack.

    Attributes:
        name: Registry name (lower case).
        fn: The attack function.
        kind: ``"white-box"``, ``"score-based"``, ``"decision-based"``, ``"transfer"`` or
            ``"baseline"``.
        norms: The norms it supports.
        targeted: Whether it supports targeted mode.
        minimal: True for minimal-perturbation attacks (DeepFool, CW): run once, scored at every
            ε of a sweep. False for fixed-budget attacks that run once per ε.
        bounded: Whether x_adv is guaranteed inside the ε-ball (False for noise/semantic
            baselines, which ignore ε, and for minimal attacks run with ε = inf).
        needs_grad: Whether it needs a differentiable torch model.
        paper: Reference (authors, year, arXiv link).
        defaults: Default keyword parameters, for documentation and the CLI.
    """

    name: str
    fn: AttackFn
    kind: AttackKind
    norms: tuple[str, ...]
    targeted: bool
    minimal: bool
    bounded: bool
    needs_grad: bool
    paper: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> AttackResult:
        """Run the attack on :func:`fast_view` of the model (see :func:`fast_views` to turn it off)."""
        if _FAST_VIEWS[-1] and isinstance(x, torch.Tensor) and x.dim() > 1 and len(x):
            model = fast_view(model, x[:2].detach())
        return self.fn(model, x, *args, **kwargs)


_REGISTRY: dict[str, AttackInfo] = {}
_FAST_VIEWS = [True]


@contextmanager
def fast_views(enabled: bool = True) -> Iterator[None]:
    """Within the block, registered attacks run on :func:`fast_view` of the model, or not.

    On by default; ``with fast_views(False): ...`` attacks the model exactly as given (for
    measuring what the view gains, or to rule it out while debugging).
    """
    _FAST_VIEWS.append(bool(enabled))
    try:
        yield
    finally:
        _FAST_VIEWS.pop()


def register_attack(
    name: str,
    *,
    kind: AttackKind,
    norms: tuple[str, ...],
    targeted: bool,
    minimal: bool = False,
    bounded: bool = True,
    needs_grad: bool = True,
    paper: str = "",
    defaults: dict[str, Any] | None = None,
) -> Callable[[AttackFn], AttackFn]:
    """Decorator that adds an attack function to the registry under ``name``."""

    def deco(fn: AttackFn) -> AttackFn:
        if name in _REGISTRY:
            raise ValueError(f"register_attack: name {name!r} is already registered")
        _REGISTRY[name] = AttackInfo(
            name, fn, kind, norms, targeted, minimal, bounded, needs_grad, paper,
            dict(defaults or {}),
        )
        return fn

    return deco


def get_attack(name: str) -> AttackInfo:
    """Look an attack up by name; an unknown name fails with close-name suggestions."""
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(
            f"attack: unknown attack {name!r}{suggest(key, _REGISTRY)}; "
            f"known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[key]


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching a shell-style wildcard, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower()))


def reject_unknown(name: str, unused: dict[str, Any]) -> None:
    """Raise a one-line TypeError for parameters an attack does not take."""
    if unused:
        raise TypeError(f"{name}: unexpected parameter(s) {', '.join(sorted(unused))}")


def validate(
    info_name: str,
    norms: tuple[str, ...],
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    target: torch.Tensor | None,
    *,
    supports_targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate an attack's inputs at the boundary; returns (labels, targets) as int64."""
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat: expected a ThreatModel, got {type(threat).__name__}")
    if threat.norm not in norms:
        raise ValueError(
            f"threat.norm: {info_name} supports {', '.join(norms)}, got {threat.norm!r}"
        )
    check_images("x", x, threat.bounds)
    y = check_labels("y", y, x.shape[0])
    if threat.targeted:
        if not supports_targeted:
            raise ValueError(f"threat.targeted: {info_name} has no targeted mode")
        if target is None:
            raise ValueError(
                "target: targeted threat model needs target labels "
                "(see advlab.attacks.choose_targets)"
            )
        target = check_labels("target", target, x.shape[0])
    elif target is not None:
        raise ValueError("target: given, but threat.targeted is False")
    return y, target


def choose_targets(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mode: Literal["random", "least-likely"] = "random",
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick a target class per example: a random class other than ``y``, or the least likely.

    Args:
        model: Maps a batch to logits (used for ``"least-likely"`` and to count classes).
        x: The clean batch.
        y: True labels.
        mode: ``"random"`` (uniform over the other classes) or ``"least-likely"``.
        num_classes: Number of classes; read off the model's output when not given.
        generator: Source of randomness for ``"random"`` (drawn on the CPU).

    Returns:
        int64 targets, never equal to ``y``.
    """
    check_choice("mode", mode, ("random", "least-likely"))
    if mode == "least-likely" or num_classes is None:
        with torch.no_grad():
            logits = model(x)
        num_classes = logits.shape[1]
        if mode == "least-likely":
            masked = logits.clone()
            masked[torch.arange(len(y)), y] = float("inf")
            return masked.argmin(dim=1)
    offset = torch.randint(1, num_classes, (len(y),), generator=generator).to(y.device)
    return (y + offset) % num_classes


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = float("inf")) -> torch.Tensor:
    """Per-example max_{i≠y} Z_i − Z_y, capped at κ: positive means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    m = other.amax(dim=1) - true
    return m.clamp(max=kappa) if kappa != float("inf") else m


def is_adversarial(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Per-example success: prediction ≠ y (untargeted) or = target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradFn = Callable[
    [Callable[[torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor, LossFn],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


def loss_grad(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: LossFn = ce_loss,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example loss, its gradient w.r.t. the input only, and the logits.

    This is the gradient seam: attacks take a ``grad_fn`` with this signature (default: this
    function), so EOT, BPDA or estimated gradients replace it without touching the attack.
    The model's parameters accumulate no ``.grad`` (``torch.autograd.grad`` w.r.t. x only).
    """
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        loss = loss_fn(logits, labels)
        (grad,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), grad.detach(), logits.detach()


def fast_view(model: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor) -> Callable[
    [torch.Tensor], torch.Tensor
]:
    """The same network, set up for attacking it: a view of ``model`` that computes faster on the CPU.

    The view is a shallow copy of the module tree whose parameters are detached (so autograd
    keeps nothing for weight gradients an attack never asks for) and whose 4-D CPU weights are
    in ``channels_last`` layout (convolutions then take PyTorch's oneDNN path: LeNet-5's
    forward+backward on 1 000 MNIST images runs about 2.5× faster on 2 cores). The model itself is
    not touched: not its parameters, their layout or ``requires_grad``, not its mode; buffers,
    hooks, methods and attributes (``bpda``, ``randomized``, ...) are shared with it.

    The view is checked on ``probe`` (a couple of the attacked images): if copying fails, the
    view raises (e.g. a ``.view`` call that needs contiguous features) or its logits differ from
    the model's beyond float32 rounding, the model itself is returned. Randomised models
    (``randomized = True``), models with a submodule in training mode (dropout is random, and a
    probe would move BatchNorm statistics) and anything that is not an ``nn.Module`` are returned
    unchanged, as is a view.
    """
    if (
        not isinstance(model, nn.Module)
        or isinstance(model, torch.jit.ScriptModule)
        or getattr(model, "_advlab_view", False)
        or getattr(model, "randomized", False)
        or any(m.training for m in model.modules())
    ):
        return model
    try:
        view = _copy_tree(model, {})
        with torch.no_grad():
            want, got = model(probe), view(probe)
        close = want.shape == got.shape and torch.allclose(
            got, want, rtol=1e-3, atol=1e-4 * (1.0 + float(want.abs().max()))
        )
    except Exception:  # any failure means: attack the model as it is
        return model
    return view if close else model


def _copy_tree(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """Shallow-copy ``module`` and its submodules, swapping each parameter for a detached tensor."""
    if id(module) in memo:
        return memo[id(module)]
    new = copy.copy(module)
    memo[id(module)] = new
    params: dict[str, torch.Tensor | None] = {}
    for name, p in module._parameters.items():
        if p is not None and id(p) not in memo:
            t = p.detach()
            if t.dim() == 4 and t.device.type == "cpu":
                # explicit strides: .contiguous() would keep a 1-input-channel weight as it is
                t = torch.empty_like(t, memory_format=torch.channels_last).copy_(t)
            memo[id(p)] = t
        params[name] = None if p is None else memo[id(p)]
    new.__dict__["_parameters"] = params
    new.__dict__["_modules"] = {
        name: None if m is None else _copy_tree(m, memo) for name, m in module._modules.items()
    }
    new.__dict__["_advlab_view"] = True
    return new
