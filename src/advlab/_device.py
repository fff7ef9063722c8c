"""Devices: parsing ``--device`` / ``device=``, drawing random numbers device-independently.

advlab's rule is that every tensor an attack, defense, check or metric creates lives on the
device of its input, and every result comes back there. Two helpers keep that rule simple:

* :func:`resolve_device` turns ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a
  :class:`torch.device`, or ``None`` = ``"auto"``) into a :class:`torch.device`, with a one-line
  ``ValueError`` naming ``device`` for a bad spec or a CUDA device this machine does not have.
* :func:`draw` samples with a generator *on the generator's device* (the CPU for ``None``: the
  global CPU stream) and moves the sample to the target device. A ``torch.Generator()`` is a CPU
  generator, and sampling with it straight onto a CUDA tensor fails; drawing on the CPU and
  moving also means a seed gives the same numbers on every device, and CPU results stay
  bit-identical to drawing without ``device=``.

:func:`setup_cuda_determinism` switches off what makes CUDA runs differ between calls or from
the float32 CPU answer (TF32 matmuls and convolutions, cuDNN autotuning) and asks cuDNN for
deterministic kernels; the commands call it when they run on CUDA.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["DEVICE_CHOICES", "OnDevice", "draw", "module_device", "place_model", "resolve_device", "rng_device",
           "setup_cuda_determinism"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` a ``--device`` / ``device=`` value names.

    Args:
        spec: ``"auto"`` (or ``None``): ``cuda`` when a GPU is available, else ``cpu``;
            ``"cpu"``; ``"cuda"`` (the current GPU); ``"cuda:N"``; or a :class:`torch.device`.

    Raises:
        ValueError: one line naming ``device``: an unknown spec, or a CUDA device that is not
            available on this machine.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if spec is None:
        spec = "auto"
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"device: expected {DEVICE_CHOICES}, got {type(spec).__name__}")
    m = _SPEC.match(spec.strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"device: expected {DEVICE_CHOICES}, got {spec!r}")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    return _cuda(spec, None if index is None else int(index))


def _cuda(spec: str, index: int | None) -> torch.device:
    """``cuda`` / ``cuda:N`` after checking that this machine has it."""
    if not torch.cuda.is_available():
        raise ValueError(f"device: {spec!r} is not available (torch {torch.__version__} sees no CUDA GPU); "
                         f"use --device cpu or auto")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ValueError(f"device: {spec!r} is not available (this machine has {count} CUDA device(s): "
                         f"cuda:0..cuda:{count - 1})")
    return torch.device("cuda") if index is None else torch.device("cuda", index)


def module_device(model: object) -> torch.device:
    """Where a model computes: the device of its first parameter (or buffer); the CPU for anything else.

    >>> module_device(torch.nn.Linear(2, 2))
    device(type='cpu')
    """
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


def rng_device(generator: torch.Generator | None) -> torch.device:
    """Where ``generator`` samples: its own device, or the CPU for ``None`` (the global CPU stream)."""
    return torch.device("cpu") if generator is None else generator.device


def draw(sample: Callable[..., torch.Tensor], *args: Any, generator: torch.Generator | None = None,
         device: torch.device | None = None, **kwargs: Any) -> torch.Tensor:
    """``sample(*args, generator=generator, **kwargs)`` drawn on the generator's device, moved to ``device``.

    ``sample`` is a torch sampling function (``torch.rand``, ``torch.randn``, ``torch.randint``,
    ``torch.randperm``, ...). ``device=None`` leaves the sample where it was drawn.

    >>> g = torch.Generator().manual_seed(0)
    >>> torch.equal(draw(torch.rand, 3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(0)))
    True
    """
    out = sample(*args, generator=generator, device=rng_device(generator), **kwargs)
    return out if device is None else out.to(device)


def setup_cuda_determinism(device: torch.device) -> None:
    """On CUDA: TF32 off (float32 matmuls and convolutions as on the CPU), deterministic cuDNN, no autotuning.

    A no-op for any other device. TF32 trades about three decimal digits of every matmul for
    speed on Ampere and later GPUs; an attack's decisions (which examples flip) then drift from
    the CPU run. Deterministic cuDNN kernels and no benchmark autotuning make a seeded run repeat
    bit for bit on the same GPU.
    """
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class OnDevice(torch.nn.Module):
    """``model`` computing on ``device`` for inputs on any device: the input goes there, the output comes back.

    Both moves are differentiable, so an attack holding its tensors on the CPU still gets the
    input gradient of a model on a GPU; an input already on ``device`` is not copied. Attributes
    the wrapper does not have (``advlab_meta``, ``randomized``, ...) are read from ``model``.

    >>> net = OnDevice(torch.nn.Linear(2, 1), torch.device("cpu"))
    >>> net(torch.ones(1, 2)).shape
    torch.Size([1, 1])
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.training = model.training  # (its model's flag only, not its submodules': a new module is in training mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)`` computed on ``device``, returned on ``x``'s device."""
        out: torch.Tensor = self.model(x.to(self.device))
        return out.to(x.device)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self._modules["model"], name)


def place_model(model: torch.nn.Module, device: str | torch.device | None, *, owned: bool) -> torch.nn.Module:
    """``model`` where ``device`` says, never moving a caller's model: a copy of it is moved instead.

    Args:
        model: The model.
        device: ``None`` (where the model is), or a :func:`resolve_device` spec.
        owned: Whether advlab loaded the model itself (then it is moved, not copied).

    Returns:
        ``model`` (or its moved copy); on a device other than the CPU, wrapped in :class:`OnDevice`
        so that inputs and outputs on the CPU still work.
    """
    target = module_device(model) if device is None else resolve_device(device)
    if module_device(model) != target:
        model = (model if owned else copy.deepcopy(model)).to(target)
    return model if target.type == "cpu" else OnDevice(model, target)
