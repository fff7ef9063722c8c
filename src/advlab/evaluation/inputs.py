"""What an evaluation reads before it plans: the data (and its labels, by task), the ε sweep, the default dataset.

Shared by the classification engine (:mod:`advlab.evaluation.engine`) and the dense tasks'
planning (:mod:`advlab.evaluation.dense`), so both check their inputs the same way.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from advlab._checks import array_tensor, check_images, check_labels, check_positive_int, error_text
from advlab._device import module_device
from advlab.attacks.fastview import sandboxed_view
from advlab.attacks.input_errors import layout_message
from advlab.attacks.registry import TASKS
from advlab.data import is_spec, load_dataset, open_images
from advlab.data.folder import KEY_PAIRS
from advlab.data.torch_dataset import IMAGE_KEYS, LABEL_KEYS, Data, dataset_images, is_torch_data
from advlab.models.blackbox import BlackBox
from advlab.models.wrappers import declared_input_shape
from advlab.threat import ThreatModel


def recorded_dataset(net: nn.Module | BlackBox) -> str | None:
    """The dataset a model's checkpoint records (``advlab_meta["dataset"]``), or None."""
    meta = getattr(net, "advlab_meta", None)
    found = meta.get("dataset") if isinstance(meta, dict) else None
    return found if isinstance(found, str) else None


def model_dataset(net: nn.Module | BlackBox) -> str:
    """The dataset a model's checkpoint records (``advlab_meta["dataset"]``), else ``"mnist"``."""
    return recorded_dataset(net) or "mnist"


def check_default_data(net: nn.Module | BlackBox, x: torch.Tensor, dataset: str) -> None:
    """Refuse, in one line, default data a model that names no dataset cannot take, saying that it was the default.

    ``evaluate(model)`` without data reads MNIST for a model whose checkpoint records no dataset (a user's
    network); where the model fails on two of those images, the error says so, not only what the model said.
    """
    if isinstance(net, BlackBox) or not isinstance(net, nn.Module):
        return
    device = module_device(net)
    probe = x[:2].to(device)  # (a lazy folder's too: indexing reads)
    try:
        with torch.no_grad(), sandboxed_view(net, device) as view:
            view(probe)
    except Exception as e:
        said = layout_message(net, probe, e, "data") or f"data: {error_text(e)}"
        raise ValueError(f"{said}; no data was given, so evaluate read {dataset}'s test split (the model records no "
                         "dataset): pass your images as data=(x, y), a Dataset, or --dataset folder:PATH / "
                         "npz:PATH") from e


def resolve_data(data: Data, data_dir: str | os.PathLike[str] | None,
                 n: int | None, bounds: tuple[float, float], model: object = None, task: str = "classification"
                 ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` examples (all if None) of a dataset's test split or of a tuple ``(x, y)``, and a name.

    Every image is checked against the bounds and every label for its type and shape here (by the
    ``task``'s label check: class indices, label maps or boxes), before anything runs or is written.
    A ``folder:`` / ``npz:`` spec gives a lazy :class:`~advlab.data.Images`
    (read when indexed, checked in one streamed pass; a folder's size from the spec or ``model``'s
    input shape): it stands for the images tensor, which the engine only indexes or streams.
    """
    if n is not None:
        check_positive_int("n", n)
    if data is None:
        data = "mnist"
    if isinstance(data, str) and is_spec(data):
        if data_dir is not None:
            raise ValueError(f"data_dir: only read for a dataset name, got {os.fspath(data_dir)!r} with {data!r}")
        if task != "classification":
            raise ValueError(f"data: a folder or npz file holds class labels; a {task} model needs its task's labels")
        images, labels = open_images(data, size=declared_input_shape(model), n=n, bounds=bounds)
        return cast(torch.Tensor, images), check_labels("data", labels, len(images)), data
    data = readable_form(data)
    if is_torch_data(data) or isinstance(data, list):
        if data_dir is not None or task != "classification":
            raise ValueError("data: a torch Dataset is read as (image, class label) items, without data_dir")
        images, labels = dataset_images(data, n, bounds)
        return cast(torch.Tensor, images), check_labels("data", labels, len(images)), images.name
    if isinstance(data, str):
        x, y = load_dataset(data, "test", root=data_dir, task=None if task == "classification" else task)
        name = data
    elif isinstance(data, tuple) and len(data) == 2:
        if data_dir is not None:
            raise ValueError(f"data_dir: only read for a dataset name, got {os.fspath(data_dir)!r} with tensors (x, y)")
        wants = ("numeric images in the bounds", "class indices (labels in the model's class order)")
        (x, y), name = tuple(array_tensor("data", a, want) if isinstance(a, np.ndarray) else a
                             for a, want in zip(data, wants, strict=True)), "tensors"
    else:
        once = " (an iterator is read once; advlab reads images again by position)" if isinstance(
            data, Iterator) else ""
        raise TypeError(f"data: expected a dataset name, a tuple (x, y) of tensors or arrays, a torch Dataset or "
                        f"DataLoader, or a list of (image, label) pairs, got {type(data).__name__}{once}")
    if n is not None:
        x, y = x[:n], y[:n]
    check_images("data", x, bounds)
    return x, check_labels("data", y, len(x)) if task == "classification" else TASKS[task]("data", y, x), name


def readable_form(data: Data) -> Data:
    """Data as users also hand it, in the form advlab reads; anything else as it is.

    ``[x, y]`` (two arrays) and a mapping of arrays (``{"x": x, "y": y}``, ``np.load("f.npz")``: the npz
    source's key pairs, or Hugging Face's ``pixel_values`` / ``labels``) are the tuple ``(x, y)``; a
    list of ``(image, label)`` pairs (``list(zip(x, y))``) is read as a map-style dataset.
    """
    if isinstance(data, Mapping):
        pairs = (*KEY_PAIRS, *((i, lab) for i in IMAGE_KEYS for lab in LABEL_KEYS))
        pair = next((p for p in pairs if p[0] in data and p[1] in data), None)
        if pair is None:
            raise ValueError(f"data: a mapping with keys {', '.join(map(str, data))}; advlab reads its images and "
                             f"labels from {', '.join(f'{a}/{b}' for a, b in KEY_PAIRS)} or Hugging Face's "
                             "pixel_values/labels")
        return data[pair[0]], data[pair[1]]
    if isinstance(data, list) and len(data) == 2 and all(isinstance(a, (torch.Tensor, np.ndarray)) for a in data):
        return data[0], data[1]
    if isinstance(data, list) and not (data and isinstance(data[0], (tuple, list, Mapping))):
        raise TypeError("data: a list is read as (image, label) pairs (list(zip(x, y))) or as [x, y], got a list of "
                        f"{type(data[0]).__name__ if data else 'nothing'}")
    return data


def validate_eps(norm: str, eps: float | Sequence[float] | torch.Tensor | np.ndarray,
                 bounds: tuple[float, float]) -> tuple[float, ...]:
    """The sweep sorted and without repeats; each budget a number ≥ 0 (and, for L∞, within the bounds' range).

    One number (or a 0-d or 1-d tensor or array) is a sweep of its values.
    """
    sweep: object = eps
    if isinstance(sweep, numbers.Real) and not isinstance(sweep, bool):  # one budget: a sweep of one
        sweep = [sweep]
    if isinstance(sweep, (torch.Tensor, np.ndarray)) and sweep.ndim <= 1:
        sweep = sweep.reshape(-1).tolist()
    if isinstance(sweep, (str, bytes)) or not isinstance(sweep, Sequence):
        raise TypeError(f"eps: expected a number or a sequence of numbers, got {type(eps).__name__}")
    out = []
    span = bounds[1] - bounds[0]
    for e in sweep:
        if isinstance(e, (bool, str, bytes)):
            raise TypeError(f"eps: expected numbers, got {e!r} ({type(e).__name__})")
        try:
            e = float(e)
        except (TypeError, ValueError):
            hint = (f"; a ThreatModel's budget is eps={e.eps!r} with norm={e.norm!r}, evaluate's own argument"
                    if isinstance(e, ThreatModel) else "")
            raise TypeError(f"eps: expected numbers, got {e!r} ({type(e).__name__}){hint}") from None
        if math.isnan(e) or e < 0:
            raise ValueError(f"eps: expected numbers >= 0, got {e}")
        if norm == "linf" and e > span:
            hint = f"; a budget in 0–255 units? write it /255, e.g. {e:g}/255" if span == 1 and 2 <= e <= 255 else ""
            raise ValueError(f"eps: {e} is outside the bounds' range for linf (at most {span:g}){hint}")
        out.append(e)
    if not out:
        raise ValueError("eps: expected at least one budget")
    return tuple(sorted(set(out)))


__all__ = ["check_default_data", "model_dataset", "recorded_dataset", "resolve_data", "validate_eps"]
