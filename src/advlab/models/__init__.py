"""The model zoo: architectures by name, pretrained checkpoints by name, checkpoint I/O.

``create_model("lenet")`` builds an untrained architecture; ``load_model("lenet-mnist")`` loads
a shipped pretrained checkpoint (or any advlab checkpoint path) in eval mode with frozen
parameters (``requires_grad=False``: attacks differentiate with respect to the input only).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from advlab._checks import suggest
from advlab.models.checkpoint import (
    CheckpointError,
    load_state,
    read_metadata,
    save_checkpoint,
    tensor_digest,
)
from advlab.models.nets import MLP, LeNet5, Normalize, SmallCNN, SmallGoogLeNet


@dataclass(frozen=True)
class ArchInfo:
    """An architecture in the registry."""

    name: str
    build: Callable[..., nn.Module]
    description: str


ARCHITECTURES: dict[str, ArchInfo] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding an architecture constructor to the registry."""

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"register_model: {name!r} is already registered")
        ARCHITECTURES[name] = ArchInfo(name, build, description)
        return build

    return deco


register_model("lenet", "LeNet-5 (LeCun et al. 1998), ReLU + max-pool, 62k parameters")(LeNet5)
register_model("googlenet", "small Inception-style net for 28×28 (Szegedy et al. 2015), 83k parameters")(
    SmallGoogLeNet
)
register_model("mlp", "2 hidden layers of 256 ReLU units, 269k parameters")(MLP)
register_model("cnn", "small strided CNN conv32-conv64-128 (adversarial-training size), 436k parameters")(SmallCNN)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def list_models(pattern: str = "*") -> list[str]:
    """Architecture names matching a wildcard."""
    return sorted(n for n in ARCHITECTURES if fnmatch.fnmatch(n, pattern))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the checkpoints shipped in the package (``load_model`` takes them)."""
    return sorted(
        p.name.removesuffix(".safetensors")
        for p in WEIGHTS_DIR.glob("*.safetensors")
        if fnmatch.fnmatch(p.name.removesuffix(".safetensors"), pattern)
    )


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build an untrained architecture from the registry."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"model: unknown architecture {name!r}{suggest(name, ARCHITECTURES)}; "
            f"known: {', '.join(sorted(ARCHITECTURES))}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return ARCHITECTURES[name].build(**kwargs)


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """The file behind a pretrained name or a path; clear errors for anything else."""
    s = str(name_or_path)
    shipped = WEIGHTS_DIR / f"{s}.safetensors"
    if shipped.exists():
        return shipped
    p = Path(s)
    if p.exists():
        return p
    if any(ch in s for ch in "/\\") or s.endswith((".safetensors", ".pt", ".pth", ".ckpt")):
        raise FileNotFoundError(f"model: checkpoint file {s} does not exist")
    hint = ""
    if s in ARCHITECTURES:
        hint = f"; {s!r} is an architecture: use create_model({s!r}) or `advlab train --model {s}`"
    raise ValueError(
        f"model: unknown model {s!r}{suggest(s, list_pretrained())}; "
        f"pretrained: {', '.join(list_pretrained()) or 'none'}{hint}"
    )


def load_model(name_or_path: str | os.PathLike[str], *, freeze: bool = True) -> nn.Module:
    """Load a pretrained model by name (``"lenet-mnist"``) or from an advlab checkpoint path.

    The model comes back in eval mode; with ``freeze`` its parameters have
    ``requires_grad=False``. Its metadata is at ``model.advlab_meta``.

    Raises:
        ValueError: Unknown name (with suggestions), a pickle file, a foreign safetensors file,
            or metadata that does not match the weights.
        FileNotFoundError: A path that does not exist.
    """
    path = resolve_checkpoint(name_or_path)
    meta = read_metadata(path)
    arch = meta["architecture"]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"checkpoint: {path} names unknown architecture {arch!r}")
    try:
        model = create_model(arch, **meta["arch_kwargs"])
    except TypeError as e:
        raise CheckpointError(f"checkpoint: {path} has arch_kwargs that {arch} does not take ({e})") from None
    load_state(path, model)
    if meta.get("wrapper"):  # a network trained behind an input transformation (thermometer encoding)
        from advlab.defenses.wrappers import Defended, parse_defense

        model = Defended(model, parse_defense(meta["wrapper"]))
    model.eval()
    if freeze:
        model.requires_grad_(False)
    model.advlab_meta = meta  # type: ignore[assignment]
    return model


__all__ = [
    "ARCHITECTURES", "MLP", "WEIGHTS_DIR", "ArchInfo", "CheckpointError", "LeNet5", "Normalize",
    "SmallCNN", "SmallGoogLeNet", "create_model", "list_models", "list_pretrained", "load_model",
    "read_metadata", "register_model", "resolve_checkpoint", "save_checkpoint", "tensor_digest",
]
