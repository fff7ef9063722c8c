"""The model zoo: architectures by name, and the one ``load_model``.

``create_model("lenet")`` builds an untrained architecture. ``load_model(name_or_path)`` takes
a shipped pretrained checkpoint name (``"lenet-mnist"``), any advlab checkpoint path, or a
scikit-learn target name (``"sklearn-logreg"``). A checkpoint comes back as a torch model in
eval mode with frozen parameters (``requires_grad=False``: attacks differentiate with respect
to the input only); a scikit-learn target comes back as a :class:`~advlab.models.blackbox.BlackBox`
over its ``predict_proba``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch
from torch import nn

from advlab._checks import error_text, suggest
from advlab.models.blackbox import BlackBox
from advlab.models.checkpoint import (
    CheckpointError,
    check_arch_kwargs,
    check_state,
    load_state,
    mark_initial,
    read_metadata,
)
from advlab.models.dense import DetNet, SegNet
from advlab.models.factory import is_factory_spec, load_factory
from advlab.models.nets import MLP, LeNet5, SmallCNN, SmallGoogLeNet
from advlab.models.onnx import load_onnx
from advlab.models.signnet import SignNet
from advlab.models.sklearn import SKLEARN_MODELS, SklearnName, is_sklearn_model, load_sklearn_model
from advlab.models.wrappers import Defended, declared_input_shape, parse_defense

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ArchInfo:
    """An architecture in the registry."""

    name: str
    build: Callable[..., nn.Module]
    description: str


ARCHITECTURES: dict[str, ArchInfo] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding an architecture constructor to the registry.

    Args:
        name: The architecture's name (``create_model(name)``, ``advlab train --model name``).
        description: One line for ``advlab models``.

    Returns:
        A decorator that registers the constructor and returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"register_model: {name!r} is already registered")
        ARCHITECTURES[name] = ArchInfo(name, build, description)
        return build

    return deco


def architecture_task(name: str) -> str:
    """The task an architecture is built for: ``"classification"``, ``"segmentation"`` or ``"detection"``."""
    if name not in ARCHITECTURES:
        raise ValueError(f"model: unknown architecture {name!r}{suggest(name, ARCHITECTURES)}")
    return str(getattr(ARCHITECTURES[name].build, "task", "classification"))


register_model("lenet", "LeNet-5 (LeCun et al. 1998), ReLU + max-pool, 62k parameters")(LeNet5)
register_model("googlenet", "small Inception-style net for 28×28 (Szegedy et al. 2015), 83k parameters")(
    SmallGoogLeNet
)
register_model("mlp", "2 hidden layers of 256 ReLU units, 269k parameters")(MLP)
register_model("segnet", "small U-Net for mnist-scenes segmentation (96→48→24→12, widths 16/32/64), 107k parameters")(
    SegNet
)
register_model("detnet", "small CenterNet for mnist-scenes (stride 4, heat-map/size/offset heads), 170k parameters")(
    DetNet
)
register_model("cnn", "small strided CNN conv32-conv64-128 (adversarial-training size), 436k parameters")(SmallCNN)
register_model("signnet", "VGG-style CNN for 48×48 colour signs, conv16-16-32-32-64-64+BN, 73k parameters")(SignNet)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def list_models(pattern: str = "*") -> list[str]:
    """Architecture names matching a wildcard (``create_model`` takes them)."""
    return sorted(n for n in ARCHITECTURES if fnmatch.fnmatch(n, pattern))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the checkpoints shipped in the package matching a wildcard (``load_model`` takes them)."""
    return sorted(
        p.name.removesuffix(".safetensors")
        for p in WEIGHTS_DIR.glob("*.safetensors")
        if fnmatch.fnmatch(p.name.removesuffix(".safetensors"), pattern)
    )


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build an untrained architecture from the registry.

    Args:
        name: An architecture name (see :func:`list_models`).
        **kwargs: The constructor's arguments (lists become tuples, as JSON metadata stores them).

    Returns:
        The freshly initialised network.

    Raises:
        ValueError: Unknown architecture (with suggestions).
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"model: unknown architecture {name!r}{suggest(name, ARCHITECTURES)}; "
            f"known: {', '.join(sorted(ARCHITECTURES))}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return mark_initial(ARCHITECTURES[name].build(**kwargs))  # (fit re-draws these under its seed)


def _find_checkpoint(s: str) -> Path | None:
    """The file behind a shipped name or an existing path; ``None`` for a name nobody knows."""
    shipped = WEIGHTS_DIR / f"{s}.safetensors"
    if shipped.exists():
        return shipped
    p = Path(s)
    if p.exists():
        return p
    if any(ch in s for ch in "/\\") or s.endswith(CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"model: checkpoint file {s} does not exist")
    return None


def _unknown_model(s: str, *, with_sklearn: bool) -> ValueError:
    """The error for an unknown model name: close names, what exists, and a hint for architectures."""
    pretrained = list_pretrained()
    known = f"pretrained: {', '.join(pretrained) or 'none'}"
    names = list(pretrained)
    if with_sklearn:
        known += f"; scikit-learn: {', '.join(SKLEARN_MODELS)}"
        names += list(SKLEARN_MODELS)
    hint = ("; your own network: package.module:factory or file.py:factory (with --weights FILE.safetensors), "
            "or an .onnx file; nothing is downloaded")
    if s in ARCHITECTURES:
        hint = f"; {s!r} is an architecture: use create_model({s!r}) or `advlab train --model {s}`"
    return ValueError(f"model: unknown model {s!r}{suggest(s, names)}; {known}{hint}")


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """The checkpoint file behind a shipped name or a path.

    Args:
        name_or_path: A shipped checkpoint name (see :func:`list_pretrained`) or a file path.

    Returns:
        The checkpoint's path.

    Raises:
        ValueError: Unknown name (with suggestions).
        FileNotFoundError: A path that does not exist.
    """
    path = _find_checkpoint(str(name_or_path))
    if path is None:
        raise _unknown_model(str(name_or_path), with_sklearn=False)
    return path


def _build(path: Path, arch: str, kwargs: dict[str, Any], device: str) -> nn.Module:
    """``create_model(arch, **kwargs)`` on ``device``; any failure is the checkpoint's, in one line."""
    try:
        with torch.device(device):
            return create_model(arch, **kwargs)
    except Exception as e:  # the constructor's own complaint about its arguments
        raise CheckpointError(f"checkpoint: {path} has arch_kwargs that {arch} cannot take "
                              f"({error_text(e)})") from None


def _load_checkpoint(path: Path, freeze: bool) -> nn.Module:
    """The network stored at ``path`` (re-wrapped behind its input transformation, if any), in eval mode.

    The architecture is first built on the ``meta`` device (no memory) and its tensor names and
    shapes compared with the file's header; only a checkpoint that passes is built for real.
    """
    meta = read_metadata(path)
    arch = meta["architecture"]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"checkpoint: {path} names unknown architecture {arch!r}{suggest(arch, ARCHITECTURES)}")
    kwargs = check_arch_kwargs(path, meta["arch_kwargs"])
    wrapper = None
    if meta.get("wrapper"):  # a network trained behind an input transformation (thermometer encoding)
        try:
            wrapper = parse_defense(meta["wrapper"])
        except ValueError as e:
            raise CheckpointError(f"checkpoint: {path} metadata wrapper: {e}") from None
    check_state(path, _build(path, arch, kwargs, "meta"))
    model = _build(path, arch, kwargs, "cpu")
    load_state(path, model)
    if wrapper is not None:
        model = Defended(model, wrapper)
    model.eval()
    if freeze:
        model.requires_grad_(False)
    model.advlab_meta = meta  # type: ignore[assignment]
    return model


# A scikit-learn name gives a BlackBox; for any other string type checkers see a torch model.
@overload
def load_model(name_or_path: SklearnName, *, freeze: bool = True,  # type: ignore[overload-overlap]
               weights: str | os.PathLike[str] | None = None) -> BlackBox:
    ...


@overload
def load_model(name_or_path: str | os.PathLike[str], *, freeze: bool = True,
               weights: str | os.PathLike[str] | None = None) -> nn.Module:
    ...


def load_model(name_or_path: str | os.PathLike[str], *, freeze: bool = True,
               weights: str | os.PathLike[str] | None = None) -> nn.Module | BlackBox:
    """Load a model: a shipped checkpoint name or path, a scikit-learn target, your own factory, or ONNX.

    Args:
        name_or_path: ``"lenet-mnist"`` (see :func:`list_pretrained`), a checkpoint path,
            ``"sklearn-logreg"`` / ``"sklearn-logreg-digits"`` (trained once, then cached; see
            :func:`~advlab.models.sklearn.load_sklearn_model`), a factory ``"package.module:factory"``
            or ``"file.py:factory"`` (:func:`~advlab.models.factory.load_factory`), or an ``.onnx``
            file (:func:`~advlab.models.onnx.load_onnx`; needs the ``onnx`` extra).
        freeze: For a torch model, set ``requires_grad=False`` on its parameters.
        weights: For a factory only: the ``.safetensors`` state dict to load (strictly).

    Returns:
        A torch model in eval mode, its metadata at ``model.advlab_meta`` (not for a factory's);
        or, for a scikit-learn name, a :class:`~advlab.models.blackbox.BlackBox` over
        ``predict_proba`` (its test accuracy at ``box.meta["acc1"]``); or, for an ONNX file, a
        BlackBox over its logits (typed as the ``str`` overload's ``nn.Module``: check with ``isinstance``).

    Raises:
        ValueError: Unknown name (with suggestions among shipped checkpoints and scikit-learn
            targets), a pickle file, a foreign safetensors file, metadata that does not match
            the weights, a factory that fails, or ``weights`` given for anything but a factory.
        FileNotFoundError: A path that does not exist.
    """
    if is_factory_spec(name_or_path):
        return load_factory(str(name_or_path), weights, freeze=freeze)
    if weights is not None:
        raise ValueError(f"weights: only read for a factory 'package.module:factory', got model {str(name_or_path)!r}")
    if str(name_or_path).lower().endswith(".onnx"):
        return load_onnx(name_or_path)
    if isinstance(name_or_path, str) and is_sklearn_model(name_or_path):
        return load_sklearn_model(name_or_path)
    path = _find_checkpoint(str(name_or_path))
    if path is None:
        raise _unknown_model(str(name_or_path), with_sklearn=True)
    return _load_checkpoint(path, freeze)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def layout_hint(got: tuple[int, ...], takes: tuple[int, ...], items: bool = False) -> str:
    """How images of item shape ``got`` become the ``takes`` (C×H×W) a model takes, where a layout explains it.

    ``items``: the images are a dataset's items, which its transform makes C×H×W (not a batch to permute).
    """
    if len(takes) == 3 and got == (takes[1], takes[2], takes[0]):
        return (" (channels-last: each image to C×H×W in the dataset's transform (ToTensor))" if items
                else " (channels-last: x.permute(0, 3, 1, 2))")
    if len(takes) == 3 and takes[0] == 1 and got == takes[1:]:
        return " (no channel axis: x.unsqueeze(1))"
    return " (one image needs a batch axis: x[None])" if got == takes[1:] else ""


def check_input_shape(model: object, x: torch.Tensor, *, name: str | None = None, source: str = "the data",
                      arg: str = "model") -> None:
    """Refuse images whose shape differs from the one the model's checkpoint declares (``in_shape``).

    Models without that metadata (built in memory, black boxes) pass: nothing is known about them.

    Args:
        model: The model (its ``advlab_meta`` is read, also through input-transformation wrappers).
        x: The images, N×C×H×W.
        name: The model's name for the message (default: the name in its metadata, else its class).
        source: Where the images come from, e.g. ``"mnist"``.
        arg: What the message names (``"surrogate"`` for a transfer attack's source model).

    Raises:
        ValueError: One line, e.g. ``model: lenet-digits expects 1×8×8 inputs (its checkpoint's
            in_shape), got 1×28×28 images from mnist``.
    """
    expected = declared_input_shape(model)
    got = tuple(x.shape[1:])
    if expected is None or got == expected:
        return
    meta = getattr(model, "advlab_meta", {})
    label = name or meta.get("name") or type(model).__name__
    hint = layout_hint(got, expected, items=source.startswith("torch:"))  # (torch:NAME: a Dataset's items)
    raise ValueError(f"{arg}: {label} expects {_shape_text(expected)} inputs (its checkpoint's in_shape), "
                     f"got {_shape_text(got)} images from {source}{hint}")


__all__ = [
    "ARCHITECTURES", "CHECKPOINT_SUFFIXES", "WEIGHTS_DIR", "ArchInfo", "check_input_shape", "create_model",
    "list_models", "list_pretrained", "load_model", "register_model", "resolve_checkpoint",
]
