"""The ``--device`` flag the sub-commands that run a model share.

``--device auto|cpu|cuda|cuda:N`` (default ``auto``: the GPU when torch sees one, else the CPU).
Only models advlab itself loads or builds are moved there (``load_model``, ``create_model``:
fresh objects), together with the data; a run on CUDA first switches TF32 off and cuDNN to
deterministic kernels (:func:`advlab._device.setup_cuda_determinism`), so its decisions match the
float32 CPU run's as closely as the hardware allows and repeat under a seed.
"""

from __future__ import annotations

import argparse

import torch

from advlab._device import DEVICE_CHOICES, resolve_device, setup_cuda_determinism
from advlab.evaluation.distributed import launched_size, local_rank


def add_device_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--device`` to a sub-command's parser."""
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help=f"where the models run: {DEVICE_CHOICES} (default auto: cuda when available, else cpu)")


def use_device(args: argparse.Namespace) -> torch.device:
    """The device ``--device`` names, set up for deterministic runs; a one-line error naming ``--device``."""
    return device_for(args.device)


def device_for(spec: str) -> torch.device:
    """:func:`use_device` for a spec: under torchrun a bare ``cuda`` is the process's own GPU (``cuda:LOCAL_RANK``)."""
    try:
        device = resolve_device(spec)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    if device.type == "cuda" and device.index is None and launched_size() > 1:
        device = torch.device("cuda", local_rank())
    setup_cuda_determinism(device)
    return device


__all__ = ["add_device_argument", "device_for", "use_device"]
