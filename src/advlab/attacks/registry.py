"""The attack registry and the call contract every registered attack keeps.

An attack is a function ``attack(model, x, y, threat, *, target=None, generator=None, **params)
-> AttackResult`` whose body is only its math. :func:`register_attack` records its metadata and
returns the function wrapped in the contract, so a direct call (``from advlab.attacks import
pgd``) and a registry call (``get_attack("pgd")``) take the same path:

1. the inputs are checked against the metadata — the threat model's norm and budget, images
   (shape, dtype, NaN, bounds), labels through the task's label check, targeted mode and
   targets — with one-line errors naming the argument (labels and targets by the task of a
   task loss given as ``loss=``, see :mod:`advlab.attacks.tasks`, else by the attack's task);
2. keyword parameters are bound against the function's signature: an unknown or misspelled name
   fails with the closest names, a renamed one still works for one release with a
   ``DeprecationWarning``, and each value is checked against its annotation (type, ``Literal``
   choices, ``Annotated[..., Range(...)]``); defaults are the signature's;
3. the attack runs on :func:`~advlab.attacks.fastview.attack_view` of the model (an eval-mode
   copy where the model is in training mode, then its fast view), and the logits the view's probe
   computed on copies for ``x[:2]`` are checked: finite, and as many classes as the labels and
   targets need. A BlackBox or a plain function is never queried for this (those checks are
   skipped), and no target may equal its true label.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, get_type_hints

import torch

from advlab._checks import check_images, check_labels, check_param, plain_number, suggest
from advlab._deprecation import warn_renamed
from advlab._grad_mode import with_autograd
from advlab.attacks.fastview import prepare
from advlab.attacks.guard import check_io
from advlab.attacks.input_errors import (
    NoInputGradient,
    layout_message,
    leaves_autograd,
    no_gradient_message,
    numpy_only_message,
    threat_message,
)
from advlab.attacks.peer_names import peer_hint, peer_param_hint
from advlab.attacks.result import AttackResult as AttackResult  # (re-exported: its home until now)
from advlab.models.blackbox import BlackBox
from advlab.threat import Norm, ThreatModel

AttackKind = Literal["white-box", "score-based", "decision-based", "transfer", "baseline"]
Budget = Literal["fixed", "minimal", "unbounded"]
P = ParamSpec("P")
# The parameters every attack takes besides its own keyword parameters.
CALL_ARGS = ("model", "x", "y", "threat", "target", "generator")


@dataclass(frozen=True)
class Renamed:
    """A parameter's old name, kept working for one release: the new name and a value conversion."""

    new: str
    convert: Callable[[Any], Any] = lambda v: v


# Label checks per task: (argument name, labels, images) -> int64 labels. Segmentation and
# detection register their own (``register_task``) without touching the attacks.
LabelCheck = Callable[[str, object, torch.Tensor], torch.Tensor]
TASKS: dict[str, LabelCheck] = {
    "classification": lambda arg, labels, x: check_labels(arg, labels, x.shape[0]),
}


def register_task(name: str, check: LabelCheck) -> None:
    """Add a task whose label (and target) format ``check`` validates and normalises."""
    if name in TASKS:
        raise ValueError(f"register_task: task {name!r} is already registered")
    TASKS[name] = check


@dataclass(frozen=True)
class AttackInfo:
    """An attack in the registry: its function and the metadata the contract is checked against.

    Attributes:
        name: Registry name (lower case).
        fn: The attack's implementation (its body is only the math; call the info or the
            registered function, which check the contract first).
        kind: ``"white-box"``, ``"score-based"``, ``"decision-based"``, ``"transfer"`` or ``"baseline"``.
        norms: The norms it supports.
        targeted: Whether it supports targeted mode.
        budget: ``"fixed"`` (runs once per ε, inside the ε-ball), ``"minimal"`` (minimal
            perturbation: runs once with ε = inf and is scored at every ε; with a finite ε its
            answer is projected into the ball) or ``"unbounded"`` (ignores ε: the negative image).
        needs_grad: Whether it needs a differentiable torch model.
        paper: Reference (authors, year, link).
        task: What its labels are (``"classification"``: one class per example).
        adaptive: Whether it is the adaptive attack (BPDA, EOT) the evaluation adds when a
            gradient-masking check fires.
        finite_eps: Whether ε must be finite (default: for fixed-budget attacks).
        renamed: Old parameter names still accepted (with a ``DeprecationWarning``).
        parameters: The keyword parameters from the function's signature: name → (default, annotation).
    """

    name: str
    fn: Callable[..., AttackResult]
    kind: AttackKind
    norms: tuple[Norm, ...]
    targeted: bool
    budget: Budget
    needs_grad: bool
    paper: str
    task: str = "classification"
    adaptive: bool = False
    finite_eps: bool = True
    renamed: Mapping[str, Renamed] = field(default_factory=dict)
    parameters: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def minimal(self) -> bool:
        """Whether it is a minimal-perturbation attack (run once, scored at every ε)."""
        return self.budget == "minimal"

    @property
    def bounded(self) -> bool:
        """Whether x_adv is meant to lie inside the ε-ball (False for attacks that ignore ε)."""
        return self.budget != "unbounded"

    @property
    def maskable(self) -> bool:
        """Whether a gradient-masking warning puts its numbers in doubt (a non-adaptive white-box attack)."""
        return self.kind == "white-box" and not self.adaptive

    @property
    def defaults(self) -> dict[str, Any]:
        """Default keyword parameters, read from the signature."""
        return {k: default for k, (default, _) in self.parameters.items()}

    @with_autograd
    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel | None = None,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **params: Any,
    ) -> AttackResult:
        """Check the inputs, bind the parameters, and run the attack on the fast view of ``model`` (in autograd)."""
        if not isinstance(threat, ThreatModel):
            raise TypeError(threat_message(self.name, self.norms, threat, params))
        task = task_of(params.get("loss")) or self.task
        y, target = self.check_inputs(model, x, y, threat, target, task=task)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        bound = self.bind(params)
        try:
            net, logits = prepare(check_io(model, x), x)
        except Exception as e:
            layout = layout_message(model, x, e)
            if layout is not None:
                raise ValueError(layout) from e
            raise
        self.check_outputs(logits, y, target, task=task)
        try:
            return self.fn(net, x, y, threat, target=target, generator=generator, **bound)
        except Exception as e:
            if (isinstance(e, RuntimeError) and self.needs_grad and not isinstance(e, NoInputGradient)
                    and "does not require grad" in str(e) and leaves_autograd(net, x[:2])):
                raise NoInputGradient(no_gradient_message(self.name)) from e
            message = numpy_only_message(model, x, self.needs_grad)
            if message is not None:
                raise TypeError(message) from e
            layout = layout_message(model, x, e)
            if layout is not None:
                raise ValueError(layout) from e
            raise

    def check_inputs(
        self, model: Any, x: object, y: object, threat: object, target: object, *, task: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate model, threat model, images, labels and targets; returns (labels, targets).

        ``task``: whose label check applies (default the attack's; a task loss's task when one is given).
        """
        if not isinstance(threat, ThreatModel):
            raise TypeError(threat_message(self.name, self.norms, threat, {}))
        if threat.norm not in self.norms:
            raise ValueError(f"threat.norm: {self.name} supports {', '.join(self.norms)}, got {threat.norm!r}")
        if self.finite_eps and not threat.bounded:
            raise ValueError(f"threat.eps: {self.name} is a fixed-budget attack and needs a finite eps, got inf")
        if not callable(model):
            raise TypeError(f"model: expected a torch model, a callable or a BlackBox, got {type(model).__name__}")
        if self.needs_grad and isinstance(model, BlackBox):
            raise TypeError(f"model: {self.name} is {self.kind} and needs a differentiable torch model, got a "
                            "BlackBox (use a black-box attack: advlab attacks lists their kinds)")
        if self.kind == "score-based" and isinstance(model, BlackBox) and not model.has_scores:
            raise ValueError(f"model: {self.name} is score-based; got a labels-only BlackBox")
        xt = check_images("x", x, threat.bounds)
        task = task or self.task
        labels = TASKS[task]("y", y, xt)
        classes = task == "classification"
        if classes:
            check_class_range("y", labels, None)
        if threat.targeted:
            if not self.targeted:
                raise ValueError(f"threat.targeted: {self.name} has no targeted mode")
            if target is None:
                raise ValueError("target: a targeted threat model needs target=, the target labels, with y the true "
                                 "ones (ART takes targets as y; advlab.attacks.choose_targets draws some)")
            targets = TASKS[task]("target", target, xt)
            if classes:
                check_class_range("target", targets, None)
                check_targets(labels, targets)
            return labels, targets
        if target is not None:
            raise ValueError("target: given, but threat.targeted is False")
        return labels, None

    def check_outputs(self, logits: torch.Tensor | None, labels: torch.Tensor, target: torch.Tensor | None, *,
                      task: str | None = None) -> None:
        """Check the model's logits on a couple of the inputs (computed on copies; None: skipped) against the labels."""
        if logits is None or (task or self.task) != "classification":
            return
        if logits.dim() != 2:
            squeeze = logits.dim() > 2 and all(n == 1 for n in logits.shape[2:])
            raise ValueError(f"model: returns outputs of shape {tuple(logits.shape)} for {len(logits)} images; a "
                             "classifier must return N×K logits" + (" (flatten them: z.flatten(1))" if squeeze else ""))
        check_finite_logits(logits, "on the attacked inputs")
        check_class_range("y", labels, logits.shape[1])
        if target is not None:
            check_class_range("target", target, logits.shape[1])

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword parameters checked against the signature (renamed ones translated, with a warning)."""
        bound: dict[str, Any] = {}
        for key, value in params.items():
            if key in self.renamed and key not in self.parameters:
                ren = self.renamed[key]
                warn_renamed(self.name, key, ren.new, stacklevel=4)
                key, value = ren.new, ren.convert(value)
            bound[key] = value
        unknown = sorted(k for k in bound if k not in self.parameters)
        if unknown:
            hint = peer_param_hint(unknown[0], self.parameters) or suggest(unknown[0], self.parameters)
            raise TypeError(f"{self.name}: unexpected parameter(s) {', '.join(unknown)}{hint}")
        for key, value in bound.items():
            bound[key] = value = plain_number(self.parameters[key][1], value)
            check_param(key, self.parameters[key][1], value)
        return bound


def task_of(loss: object) -> str | None:
    """The task a ``loss=`` parameter names: a task loss's ``task`` (a registered one), else None (a loss name)."""
    task = getattr(loss, "task", None)
    return task if isinstance(task, str) and not isinstance(loss, str) and task in TASKS else None


def check_finite_logits(logits: torch.Tensor, where: str) -> None:
    """Refuse non-finite model outputs in one line: a model that outputs NaN must not get a plausible number."""
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        kinds = [k for k, hit in (("nan", logits.isnan().any()), ("inf", logits.isinf().any())) if bool(hit)]
        raise ValueError(f"model: returns non-finite logits ({', '.join(kinds)}) {where}")


def check_class_range(arg: str, labels: torch.Tensor, num_classes: int | None, what: str | None = None) -> None:
    """Labels (or targets) must name one of the model's ``num_classes`` outputs (None: only >= 0 is known)."""
    if not labels.numel():
        return
    lo, hi = int(labels.min()), int(labels.max())
    if num_classes is None:
        if lo < 0:
            raise ValueError(f"{arg}: labels must be class indices >= 0, got range [{lo}, {hi}]")
    elif lo < 0 or hi >= num_classes:
        what = what or f"this model's {num_classes} outputs"
        hint = ("; a binary classifier is attacked as two classes: from a single logit z return "
                "torch.cat([-z, z], 1), from a sigmoid p torch.cat([1 - p, p], 1)" if num_classes == 1 else "")
        raise ValueError(f"{arg}: labels must be in [0, {num_classes}) for {what}, got range [{lo}, {hi}]{hint}")


def check_targets(labels: torch.Tensor, targets: torch.Tensor) -> None:
    """No target may equal its true label (a targeted attack would 'succeed' without changing anything)."""
    same = (targets == labels).nonzero().flatten().tolist()
    if same:
        shown = ", ".join(str(i) for i in same[:5]) + (", …" if len(same) > 5 else "")
        raise ValueError(f"target: {len(same)} target{'s' if len(same) > 1 else ''} equal"
                         f"{'' if len(same) > 1 else 's'} the true label (example{'s' if len(same) > 1 else ''} "
                         f"{shown}); a targeted attack needs another class")


_REGISTRY: dict[str, AttackInfo] = {}


def signature_parameters(fn: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """An attack function's own keyword parameters: name → (default, resolved annotation)."""
    hints = get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    names = list(sig.parameters)
    if names[:4] != list(CALL_ARGS[:4]) or not {"target", "generator"} <= set(names):
        raise TypeError(f"register_attack: {fn.__name__} must take (model, x, y, threat, *, target, generator, ...)")
    out = {}
    for name, p in sig.parameters.items():
        if name in CALL_ARGS:
            continue
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise TypeError(f"register_attack: {fn.__name__}: parameter {name!r} must be keyword-only with a default")
        out[name] = (p.default, hints.get(name, Any))
    return out


def register_attack(
    name: str,
    *,
    kind: AttackKind,
    norms: tuple[Norm, ...],
    targeted: bool,
    budget: Budget = "fixed",
    needs_grad: bool = True,
    paper: str = "",
    task: str = "classification",
    adaptive: bool = False,
    finite_eps: bool | None = None,
    renamed: Mapping[str, Renamed] | None = None,
) -> Callable[[Callable[P, AttackResult]], Callable[P, AttackResult]]:
    """Decorator: add an attack to the registry and return it wrapped in the call contract.

    The returned function has the same signature and checks its inputs and parameters like
    ``get_attack(name)`` does; the registry keeps the undecorated function as ``info.fn``.
    """

    def deco(fn: Callable[P, AttackResult]) -> Callable[P, AttackResult]:
        if name in _REGISTRY:
            raise ValueError(f"register_attack: name {name!r} is already registered")
        if task not in TASKS:
            raise ValueError(f"register_attack: unknown task {task!r}{suggest(task, TASKS)}")
        info = AttackInfo(
            name, fn, kind, norms, targeted, budget, needs_grad, paper, task, adaptive,
            budget == "fixed" if finite_eps is None else finite_eps, dict(renamed or {}), signature_parameters(fn),
        )
        _REGISTRY[name] = info

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> AttackResult:
            run: Callable[..., AttackResult] = info
            return run(*args, **kwargs)

        return call

    return deco


def get_attack(name: str) -> AttackInfo:
    """Look an attack up by name; an unknown name fails with close-name suggestions."""
    key = name.lower()
    if key not in _REGISTRY:
        hint = peer_hint(name) or suggest(key, _REGISTRY)
        raise ValueError(f"attack: unknown attack {name!r}{hint}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def registered_as(obj: object) -> AttackInfo | None:
    """The registry entry of an attack given as its AttackInfo or its function (``advlab.attacks.pgd``); else None."""
    if isinstance(obj, AttackInfo):
        return obj
    inner = getattr(obj, "__wrapped__", None)
    return next((info for info in _REGISTRY.values() if inner is not None and info.fn is inner), None)


def list_attacks(pattern: str = "*", task: str | None = "classification") -> list[str]:
    """Registered attack names matching a shell-style wildcard, sorted.

    ``task``: only the attacks of that task (default ``"classification"``, the attacks that take class
    labels: what the evaluation's defaults and the classification contract tests iterate over);
    ``None``: every task's. The classification attacks that take a task loss (FGSM, BIM, PGD, APGD)
    are listed under classification.
    """
    return sorted(n for n, info in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern.lower()) and (task is None or info.task == task))
