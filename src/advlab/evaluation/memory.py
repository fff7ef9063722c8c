"""The memory a gradient step on one batch needs, measured before the evaluation runs.

A gradient attack keeps every tensor the model's forward saves for the backward pass. On MNIST that is
kilobytes per image; on 224×224 ImageNet images through a ResNet it is tens of megabytes, so the
default batch of 500 can ask for more memory than the machine has, and the system's OOM killer then
ends the process without a word. :func:`check_batch_memory` measures the saved tensors on two and on
four images (the difference is the per-image cost, the model's weights cancel out), and refuses a batch
that needs more than the memory available, naming the batch size that fits.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from advlab._deprecation import caller_level
from advlab._device import module_device
from advlab.attacks.fastview import sandboxed_view

GIB = 2**30
# the saved tensors, plus what the backward pass allocates beside them: a plain forward and backward through a
# 7-layer convolutional net at 224×224 peaked at 1.40× its saved bytes (batches of 50, 100 and 200, ru_maxrss)
BACKWARD_FACTOR = 1.5


class LargeBatch(UserWarning):
    """A batch's gradient step needs more than half of the memory available."""


def saved_bytes(model: Any, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors the forward on ``x`` saves for the backward pass (the model's own excluded)."""
    own = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in own and t.device.type != "meta":
            seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.detach().clone().requires_grad_(True))
    return sum(seen.values())


def available_bytes(device: torch.device) -> int | None:
    """Memory that can still be allocated on ``device``: a GPU's free memory, Linux's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_batch_memory(model: Any, x: torch.Tensor, batch_size: int) -> None:
    """Refuse, in one line, a batch whose gradient step needs more memory than is available; warn above half.

    Nothing is checked for a model that is not a torch module (a black box needs no gradient), a set of
    fewer than four images, or where the available memory is unknown.

    Raises:
        ValueError: ``batch_size: a gradient step on 500 images of 3×224×224 needs about 48.1 GiB ...``.
    """
    if not isinstance(model, torch.nn.Module) or len(x) < 4:
        return
    device = module_device(model)  # (where the attacks' batches go: a GPU model's memory is the GPU's)
    free = available_bytes(device)
    if free is None:
        return
    four = x[:4].to(device)  # (a lazy folder's first images, read; torch.as_tensor would take the default device)
    try:  # (a model this cannot run is the attacks' to refuse)
        with sandboxed_view(model, device) as net:
            per_image = max(0, saved_bytes(net, four) - saved_bytes(net, four[:2])) / 2
    except Exception:
        return
    batch = min(batch_size, len(x))
    need = BACKWARD_FACTOR * per_image * batch
    if need <= free / 2:
        return
    fits = max(1, int(free / 2 / (BACKWARD_FACTOR * per_image)))
    text = (f"a gradient step on {batch} images of {'×'.join(map(str, x.shape[1:]))} needs about "
            f"{need / GIB:.1f} GiB (the tensors the model saves for its backward pass, measured on 2 and 4 images); "
            f"{free / GIB:.1f} GiB {'are' if free != GIB else 'is'} available on {device}: --batch-size {fits} "
            f"(batch_size={fits}) fits in half of it")
    if need > free:
        raise ValueError(f"batch_size: {text}")
    warnings.warn(f"advlab: {text}", LargeBatch, stacklevel=caller_level())


__all__ = ["LargeBatch", "available_bytes", "check_batch_memory", "saved_bytes"]
