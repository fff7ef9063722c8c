"""The fast view of a model that attacks run on: same function, faster on the CPU, model untouched.

Every registered attack, called directly or through the registry, runs on
``attack_view(model, x)``; ``with fast_views(False):`` turns the view off in the current context
(a context variable, so threads and async tasks each keep their own setting).

The view is a copy of the module tree that shares no tensor and no mutable attribute with the
model: parameters are detached clones (4-D CPU weights in ``channels_last`` layout), buffers,
tensor and NumPy attributes are clones, lists, dicts, sets and torch generators are copies;
a plain ``nn.Sequential`` holding a ReLU followed by max-pooling runs them as pooling then ReLU
(:class:`PoolFirstSequential`: the same logits and gradients bit for bit, less work).
Whether it may be used is decided on copies only, under a forked RNG, so deciding never changes
the model or the caller's random streams. Where the view could change the outcome or the model's
state, the model itself is returned and :class:`FastViewSkipped` says why.

A model with a submodule in training mode is never run as it is: :func:`inference_view` gives an
eval-mode copy (with a :class:`ModelInTrainingMode` warning), or under :func:`keep_train_mode` a
copy that keeps the training flags, whose buffers are its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module

from advlab._deprecation import caller_level
from advlab.attacks.guard import shown_name
from advlab.attacks.input_errors import first_layer_message
from advlab.attacks.modulecopy import Tree, reads_training, rng_sandbox, same

Model = Callable[[torch.Tensor], torch.Tensor]
_ENABLED: ContextVar[bool] = ContextVar("advlab_fast_views", default=True)
_KEEP_TRAIN: ContextVar[bool] = ContextVar("advlab_keep_train_mode", default=False)
_HOOKS = {"_forward_hooks": "forward hooks", "_forward_pre_hooks": "forward pre-hooks",
          "_backward_hooks": "backward hooks", "_backward_pre_hooks": "backward pre-hooks"}


class FastViewSkipped(UserWarning):
    """The fast view of a model was not used: the attack runs on the model as given (the message says why)."""


class ModelInTrainingMode(UserWarning):
    """A model with a submodule in training mode is attacked or evaluated through an eval-mode copy."""


@contextmanager
def fast_views(enabled: bool = True) -> Iterator[None]:
    """Within the block, attacks run on :func:`fast_view` of the model, or not (on by default)."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


@contextmanager
def keep_train_mode(enabled: bool = True) -> Iterator[None]:
    """Within the block, a model in training mode is attacked with its training-mode randomness.

    Its copy keeps the training flags (dropout random, BatchNorm on batch statistics) so that EOT
    can attack that randomness, and declares ``randomized = True`` (``pgd-adaptive`` then uses
    EOT); the copy's buffers are its own clones, so no buffer of the model is ever updated.
    """
    token = _KEEP_TRAIN.set(bool(enabled))
    try:
        yield
    finally:
        _KEEP_TRAIN.reset(token)


def inference_view(model: Any) -> Any:
    """What advlab runs instead of ``model``: ``model`` itself, or a copy where it is in training mode.

    A torch model with any submodule in training mode is replaced by a copy of it (detached
    parameter clones, own buffers) whose submodules are in eval mode, with a
    :class:`ModelInTrainingMode` warning, except for a wrapper made around an eval-mode model (some
    submodules in eval mode, and none of those in training mode reads its flag:
    :func:`~advlab.attacks.modulecopy.reads_training`; a container's flag changes nothing); the model's own
    ``training`` flags, parameters and buffers are never written. Under :func:`keep_train_mode` the copy
    keeps the training flags, declares ``randomized = True`` and no warning is given (unless none of
    them is read: then it is the quiet eval-mode copy). Anything else is returned as it is.

    Raises:
        ValueError: The model is in training mode and cannot be copied (copying raised, or a
            submodule is a ScriptModule, whose state a copy would share).
    """
    if not isinstance(model, nn.Module) or getattr(model, "_advlab_inference", False):
        return model
    modules = list(model.modules())
    training = [m for m in modules if m.training]
    if not training:
        return model
    # (a wrapper built around an eval-mode model, nn.DataParallel(net) or nn.Sequential(normalize, net), is in
    # training mode in name only where none of the modules in training mode reads its flag: copied quietly)
    quiet = len(training) < len(modules) and not any(reads_training(type(m)) for m in training)
    name, keep = shown_name(model), _KEEP_TRAIN.get() and not quiet
    scripted = next((n for n, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:
        raise ValueError(f"model: {name} is in training mode and {scripted or 'it'} is a ScriptModule, which advlab "
                         "cannot copy without sharing its state; call model.eval() first")
    try:
        tree = Tree()
        copied = tree.module(model, "")
    except Exception as e:  # never fall back to the live model: its buffers would be updated
        raise ValueError(f"model: {name} is in training mode and copying it raised {_short(e)}; "
                         "call model.eval() first") from None
    for _, _, new, _ in tree.modules:
        if not keep:
            new.__dict__["training"] = False
    copied.__dict__["_advlab_inference"] = True
    if keep:
        copied.__dict__["randomized"] = True
    elif not quiet:
        warnings.warn(f"advlab: {name} is in training mode: attacking an eval-mode copy (the model is left as it "
                      "is; call model.eval() to silence this, or use advlab.attacks.keep_train_mode() to attack "
                      "its training-mode randomness)", ModelInTrainingMode, stacklevel=caller_level())
    return copied


@contextmanager
def sandboxed_view(model: Any, device: torch.device) -> Iterator[Any]:
    """:func:`inference_view` of ``model`` for a probe of the caller's own (a shape, a memory measure).

    Its warnings are the attacks' to give, so they are left out here; every random stream the
    model may draw from (torch's, ``device``'s, NumPy's, Python's) is restored after the block.
    """
    with rng_sandbox(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield inference_view(model)


def attack_view(model: Any, x: torch.Tensor) -> Any:
    """What an attack runs on: :func:`prepare`'s model, without the probe's logits."""
    return prepare(model, x)[0]


def prepare(model: Any, x: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """What an attack runs on, and logits on ``x[:2]`` computed on a copy of it (None where no copy ran).

    The model is :func:`inference_view` of ``model`` (an eval-mode copy where it is in training
    mode), then its :func:`fast_view` probed on ``x[:2]`` while fast views are on. The logits come
    from the probe's plain copy, or for a model the view declines silently (``randomized``, a
    training-mode copy under :func:`keep_train_mode`) from one forward of a plain copy under
    forked RNGs. None with fast views off, for anything that is not an ``nn.Module`` (a
    BlackBox, a function: no query is spent), a model with hooks or a ScriptModule inside.
    """
    net = inference_view(model)
    if not _ENABLED.get():
        return net, None
    return _view(net, x[:2].detach())


def fast_view(model: Model, probe: torch.Tensor) -> Model:
    """The same network, set up for attacking it: a copy of ``model`` that computes faster on the CPU.

    The view's parameters are detached clones (autograd keeps nothing for the weight gradients
    an attack never asks for) and its 4-D CPU weights are ``channels_last`` (convolutions then
    take PyTorch's oneDNN path: LeNet-5's forward+backward on 1 000 MNIST images runs about 2.4×
    faster on 2 cores). On CUDA the weights keep their layout: channels_last pays there mainly
    through TF32 / half-precision tensor-core kernels, which advlab's commands switch off for
    determinism (:func:`advlab._device.setup_cuda_determinism`); the detached clones still save
    the weight-gradient work on any device (``benchmarks/gpu.py`` times the view on and off). It
    runs each ReLU → max-pool pair of a plain ``nn.Sequential`` as max-pool → ReLU
    (:class:`PoolFirstSequential`, kept only where the probe's logits stay bitwise the same). It
    shares no tensor and no mutable attribute with the model, so nothing
    the view does changes the model (its parameters, buffers, attributes or mode); its methods
    (``bpda``, ...) and flags (``randomized``, ...) are the model's. A model in training mode is
    viewed through :func:`inference_view` (an eval-mode copy, with a warning).

    Deciding is done on copies, under forked RNGs (torch CPU and the probe's device, NumPy,
    ``random``): a plain copy (original layout) runs twice on ``probe`` (a couple of the attacked
    images), then the same copy with ``channels_last`` weights once (where only that raises, as a
    ``x.view(x.size(0), -1)`` after a convolution does on channels_last activations, the view keeps
    the model's layout, with the detached clones). The model itself is
    returned, with a :class:`FastViewSkipped` warning naming the reason, when a submodule has
    forward or backward hooks (or global module hooks are set), when the forward changes the
    copy's state (attributes, containers, buffers, parameters, generators), when the model is
    random without declaring ``randomized = True`` (an RNG stream moved, or two calls differ),
    when copying or running raises, or when the view's logits differ from the plain copy's
    beyond float32 rounding. Silently returned as given: anything that is not an ``nn.Module``,
    a view, a model with a submodule that is a ScriptModule or declares ``randomized = True``,
    and a training-mode copy made under :func:`keep_train_mode`.
    """
    return _view(inference_view(model), probe.detach())[0]  # type: ignore[no-any-return]


def _view(model: Any, probe: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """The fast view of a model not in training mode (or the model), and the logits of a copy on ``probe``."""
    if not isinstance(model, nn.Module) or getattr(model, "_advlab_view", False):
        return model, None
    reason = _hooks(model)
    if _declared(model):
        return model, None if reason is not None or _scripted(model) else _copy_logits(model, probe)
    logits = None
    if reason is None:
        view, reason, logits = _probe(model, probe)
        if view is not None:
            return view, logits
    warnings.warn(f"advlab: fast view of {shown_name(model)} not used ({reason}); attacking the model as given",
                  FastViewSkipped, stacklevel=caller_level())
    return model, logits


def _declared(model: nn.Module) -> bool:
    """The declared cases, returned unchanged without a warning: random, scripted or training-mode submodules."""
    return any(m.training or getattr(m, "randomized", False) for m in model.modules()) or _scripted(model)


def _scripted(model: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def _hooks(model: nn.Module) -> str | None:
    """Why hooks rule the view out (global module hooks, or hooks on a submodule), or None."""
    for attr, what in _HOOKS.items():
        if getattr(_module, "_global" + attr, None):
            return f"global module {what} are registered"
    for name, m in model.named_modules():
        for attr, what in _HOOKS.items():
            if getattr(m, attr, None):
                return f"it has {what}" + (f" on {name}" if name else "")
    return None


def _copy_logits(model: nn.Module, probe: torch.Tensor) -> torch.Tensor | None:
    """One forward of a plain copy of ``model`` on ``probe`` under forked RNGs; None where that raises."""
    try:
        copied = Tree().module(model, "")
        with rng_sandbox(probe.device), torch.no_grad():
            out = copied(probe)
    except Exception:  # the attack itself then meets the problem and reports it
        return None
    return out if isinstance(out, torch.Tensor) else None


def _probe(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module | None, str | None, torch.Tensor | None]:
    """(the view, None, the copy's logits) if it may be used, else (None, the reason, logits if a copy ran)."""
    stage, first = "copying it", None
    try:
        tree = Tree()
        view = tree.module(model, "")
        stage = "running a copy of it"
        with rng_sandbox(probe.device) as moved, torch.no_grad():
            first, second = view(probe), view(probe)
            drew = moved()
        logits = first if isinstance(first, torch.Tensor) else None
        stage = "comparing the copy's state"
        changed = tree.changed()
        if changed is not None:
            return None, f"its forward changes state: {changed}", logits
        if drew is not None:
            return None, f"it draws from {drew} in forward but does not declare randomized = True", logits
        if not same(second, first, {}):
            return None, "two calls on the same input differ, but it does not declare randomized = True", logits
        stage = "building the channels_last view"
        tree.channels_last()
        stage = "running the channels_last view"
        try:
            with rng_sandbox(probe.device), torch.no_grad():
                got = view(probe)
        except RuntimeError:  # (a step bound to the layout, as x.view(x.size(0), -1) after a conv: keep it)
            stage = "running a copy of it"
            tree = Tree()
            view = tree.module(model, "")
            with rng_sandbox(probe.device), torch.no_grad():
                got = view(probe)
        if isinstance(got, torch.Tensor):
            _reorder(tree, view, probe, got)
    except Exception as e:  # reported to the user: the attack then runs on the model as given
        if stage == "running a copy of it" and first_layer_message(e, probe) is not None:
            raise  # (the images' fault, not the copy's: the model fails on them too, and the caller names the fix)
        return None, f"{stage} raised {_short(e)}", first if isinstance(first, torch.Tensor) else None
    if logits is None or not isinstance(got, torch.Tensor):
        return None, f"its output is a {type(first).__name__}, not a tensor of logits", None
    if got.shape != logits.shape:
        return None, f"the view's logits have shape {tuple(got.shape)}, the model's {tuple(logits.shape)}", logits
    scale = float(logits.nan_to_num(0.0, 0.0, 0.0).abs().max())  # non-finite logits are the contract's error
    if not torch.allclose(got, logits, rtol=1e-3, atol=1e-4 * (1.0 + scale), equal_nan=True):
        diff = float((got - logits).abs().max())
        return None, f"the view's logits differ from the model's by {diff:.1e}, beyond float32 rounding", logits
    tree.mark()
    return view, None, logits


class PoolFirstSequential(nn.Sequential):
    """An ``nn.Sequential`` that runs each ``ReLU`` followed by a max-pooling layer as the pooling, then the ReLU.

    ReLU is monotone, so max(ReLU(a)) = ReLU(max(a)) in every window, and the gradients are the
    same too: where the window's maximum is positive both orders send the gradient to the first
    position holding it (torch's tie rule), where it is ≤ 0 both give 0. The ReLU and its backward
    then run on the pooled tensor (4× smaller after a 2×2 pool). The children, their order,
    indexing, slicing and iteration are the ``nn.Sequential``'s own; only this container's forward
    changes, and the fast view keeps it only where it gives bitwise the same logits on the probe.
    """

    def forward(self, input: Any) -> Any:  # noqa: D102
        mods = list(self._modules.values())
        i = 0
        while i < len(mods):
            if i + 1 < len(mods) and _swappable(mods[i], mods[i + 1]):
                input = mods[i](mods[i + 1](input))
                i += 2
            else:
                input = mods[i](input)
                i += 1
        return input


def _swappable(relu: Any, pool: Any) -> bool:
    """A plain ``nn.ReLU`` followed by a plain max-pooling layer that returns no indices."""
    return (type(relu) is nn.ReLU and type(pool) in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
            and not pool.return_indices)


def _reorder(tree: Tree, view: nn.Module, probe: torch.Tensor, logits: torch.Tensor) -> None:
    """Make every plain ``nn.Sequential`` of the view with a ReLU → max-pool pair a :class:`PoolFirstSequential`.

    Kept only if the view's logits on ``probe`` stay bitwise ``logits`` (else undone, as when it raises).
    """
    seqs = [new for _, _, new, _ in tree.modules if type(new) is nn.Sequential
            and any(_swappable(a, b) for a, b in zip(list(new), list(new)[1:], strict=False))]
    if not seqs:
        return
    for s in seqs:
        s.__class__ = PoolFirstSequential
    try:
        with rng_sandbox(probe.device), torch.no_grad():
            got = view(probe)
        kept = isinstance(got, torch.Tensor) and got.shape == logits.shape and torch.equal(got, logits)
    except Exception:  # the reordered forward is only an option: the view runs in the given order
        kept = False
    if not kept:
        for s in seqs:
            s.__class__ = nn.Sequential


def _short(e: BaseException, limit: int = 120) -> str:
    """``Type: message`` on one line, shortened."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[: limit - 1] + '…' if len(text) > limit else text}".rstrip(": ")
