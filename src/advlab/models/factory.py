"""Your own networks: ``load_factory("package.module:factory", weights="FILE.safetensors")``.

The factory is any callable that takes no arguments and returns an ``nn.Module`` mapping
images in pixel space ([0, 1], N×C×H×W) to logits — any normalisation (mean/std) belongs inside
the module, since the threat model's ε is measured in pixels. The module part is an importable
module name (``mypkg.nets``) or a ``.py`` file path (``nets/resnet.py:make``). Weights come from a
safetensors file only, loaded strictly (a wrapper's state dict, whose keys all carry one prefix
such as DDP's ``module.``, is read as the model's own, with a warning): pickle files (``.pt``,
``.pth``, ``.ckpt``, ``.bin``, ``.pkl``) are refused, as loading one runs code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advlab._checks import error_text
from advlab._deprecation import caller_level
from advlab.models.checkpoint import state_differences
from advlab.models.nets import Normalized

FACTORY_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*|.+\.py):(?P<name>[A-Za-z_]\w*)$")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
SHOWN_KEYS = 5  # keys named in a missing/unexpected message


def is_factory_spec(spec: object) -> bool:
    """Whether ``spec`` reads as ``package.module:factory`` or ``file.py:factory``."""
    return isinstance(spec, str) and FACTORY_SPEC.match(spec) is not None


def _import(module: str, spec: str) -> object:
    """The module named ``module`` (a dotted name, or a ``.py`` file loaded under a private name)."""
    try:
        if module.endswith(".py"):
            path = Path(module)
            if not path.is_file():
                raise ValueError(f"model: {spec}: file {path} does not exist")
            # (a digest, not hash(): str hashes are salted per process, and the name is part of the model's
            # identity in the results store, so a resumed run or another torchrun rank must find the same one)
            name = f"advlab_factory_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
            loader = importlib.util.spec_from_file_location(name, path)
            if loader is None or loader.loader is None:
                raise ValueError(f"model: {spec}: cannot load {path} as a Python module")
            mod = importlib.util.module_from_spec(loader)
            sys.modules[name] = mod
            loader.loader.exec_module(mod)
            return mod
        return _import_dotted(module)
    except ValueError:
        raise
    except Exception as e:  # the module's own failure, in one line
        raise ValueError(f"model: {spec}: cannot import {module} ({error_text(e)})") from None


def _import_dotted(module: str) -> object:
    """``importlib.import_module``, falling back on the current folder as ``python -m`` would.

    The ``advlab`` console script does not put the current folder on ``sys.path`` (``python -m
    advlab`` and ``torchrun -m advlab`` do), so a module beside the user is looked for there too when
    it is found nowhere else: the folder is appended, after the installed packages, never before them.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)
        return importlib.import_module(module)


def _keys_text(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def load_weights(model: nn.Module, weights: str | os.PathLike[str]) -> None:
    """Load a safetensors state dict into ``model`` strictly; one-line errors for any mismatch or a pickle file.

    Raises:
        ValueError: A pickle file, a file that is not safetensors, missing or unexpected keys, or
            tensors whose shapes differ from the model's.
        FileNotFoundError: No such file.
    """
    path = Path(weights)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"weights: {path} is a pickle file, which can run code when loaded; advlab reads "
                         "safetensors only (safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))")
    if not path.is_file():
        raise FileNotFoundError(f"weights: {path} does not exist")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"weights: {path} is not a safetensors file ({e})") from None
    if isinstance(model, Normalized) and set(state) == set(model.net.state_dict()):
        model = model.net  # (the bare network's own weights, as trained on normalised inputs)
    own = model.state_dict()
    state = _without_wrapper_prefix(state, set(own), path)
    missing, unexpected, bad = state_differences({k: tuple(v.shape) for k, v in own.items()},
                                                 {k: tuple(v.shape) for k, v in state.items()})
    if missing or unexpected:
        parts = ([f"missing {_keys_text(missing)}"] if missing else []) + (
            [f"unexpected {_keys_text(unexpected)}"] if unexpected else [])
        raise ValueError(f"weights: {path} does not fit the model: {'; '.join(parts)}")
    if bad:
        k = bad[0]
        raise ValueError(f"weights: {path}: {len(bad)} tensor(s) of another shape, e.g. {k} is "
                         f"{tuple(state[k].shape)} in the file and {tuple(own[k].shape)} in the model")
    model.load_state_dict(state, strict=True)


def seeded_factory(spec: str, seed: int, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """The factory's network, trainable, its own initialisation drawn under ``seed`` (the same every run).

    The caller's random generators are left where they were.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return load_factory(spec, weights, freeze=False)


class WeightsRenamed(UserWarning):
    """A weights file's keys carry one prefix more or fewer than the model's (DDP's ``module.``, ``_orig_mod.``)."""


def _without_wrapper_prefix(state: dict[str, torch.Tensor], own: set[str], path: Path) -> dict[str, torch.Tensor]:
    """``state`` with its keys renamed where they are the model's own under one dotted prefix more or fewer.

    A state dict saved from a wrapper carries the wrapper's attribute in every key (``module.`` from
    DistributedDataParallel or DataParallel, ``_orig_mod.`` from ``torch.compile``, ``model.`` from a
    training module); a model built inside a wrapper has one the file lacks. Only a rename that makes
    the two key sets equal is made (then shapes are checked as ever), with a :class:`WeightsRenamed` warning.
    """
    keys = set(state)
    if keys == own or not keys or not own:
        return state
    for extra, fewer in ((keys, own), (own, keys)):
        prefix = _common_prefix(extra)
        if prefix and {k[len(prefix):] for k in extra} == fewer:
            renamed = ({k[len(prefix):]: v for k, v in state.items()} if extra is keys
                       else {prefix + k: v for k, v in state.items()})
            how = (f"carries the prefix {prefix!r}, which the model's keys lack (a wrapper's state dict); advlab "
                   "strips it" if extra is keys
                   else f"lacks the prefix {prefix!r}, which the model's keys carry; advlab adds it")
            warnings.warn(f"weights: {path.name}: every key {how}", WeightsRenamed, stacklevel=caller_level())
            return renamed
    return state


def _common_prefix(keys: set[str]) -> str | None:
    """The dotted prefix (``"module."``) every key starts with, or None."""
    first = {k.split(".", 1)[0] for k in keys}
    return f"{first.pop()}." if len(first) == 1 and all("." in k for k in keys) else None


def load_factory(spec: str, weights: str | os.PathLike[str] | None = None, *, freeze: bool = True) -> nn.Module:
    """Build a network with a user's factory, load its safetensors weights, and return it in eval mode.

    Args:
        spec: ``"package.module:factory"`` or ``"path/to/file.py:factory"``; ``factory()`` must
            return an ``nn.Module`` (pixel-space input in [0, 1], logits out: normalisation inside).
        weights: A ``.safetensors`` state dict for it (loaded strictly); None keeps the factory's weights.
        freeze: Set ``requires_grad=False`` on its parameters (attacks differentiate the input only).

    Returns:
        The network, in eval mode, on the CPU.

    Raises:
        ValueError: A malformed spec, a module that cannot be imported, a missing or non-callable
            factory, a factory that fails or returns no ``nn.Module``, or weights that do not fit.
        FileNotFoundError: The weights file does not exist.

    Example:
        >>> net = load_factory("torch.nn:Flatten")
        >>> net.training
        False
    """
    m = FACTORY_SPEC.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(f"model: expected a factory spec 'package.module:factory' or 'file.py:factory', got {spec!r}")
    mod = _import(m["module"], spec)
    factory = getattr(mod, m["name"], None)
    if not callable(factory):
        what = "is not callable" if factory is not None else "does not exist"
        raise ValueError(f"model: {spec}: {m['module']}.{m['name']} {what}")
    model = _call(factory, spec)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    if freeze:
        for p in model.parameters():  # (per tensor: a ScriptModule has no requires_grad_)
            p.requires_grad_(False)
    return model


def _call(factory: Callable[[], object], spec: str) -> nn.Module:
    """``factory()``, which must return an ``nn.Module``; its own failure in one line."""
    try:
        model = factory()
    except Exception as e:
        raise ValueError(f"model: {spec}() failed ({error_text(e)})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: {spec}() must return a torch.nn.Module, got {type(model).__name__}")
    if any(p.device != torch.device("cpu") for p in model.parameters()):
        model = model.cpu()
    return model


__all__ = ["FACTORY_SPEC", "PICKLE_SUFFIXES", "WeightsRenamed", "is_factory_spec", "load_factory", "load_weights"]
