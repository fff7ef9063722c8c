"""The model and the first n images a command works on: ``--model``, ``--weights``, ``--dataset``, ``--n``.

Shared by ``advlab attack`` and ``advlab certify``: a pretrained name, checkpoint path, factory
(``package.module:factory`` or ``file.py:factory``, with ``--weights``) or ONNX file, and a built-in dataset
or your images (``folder:PATH`` / ``npz:PATH``, of which only the first n are read).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from advlab.data import is_spec, load_dataset, open_images
from advlab.models import check_input_shape, load_model
from advlab.models.wrappers import declared_input_shape
from advlab.threat import canonical_norm

MODEL_HELP = "pretrained name, checkpoint path, package.module:factory (or file.py:factory) or an .onnx file"
WEIGHTS_HELP = "a factory model's .safetensors state dict"
DATASET_HELP = ("default: the checkpoint's dataset, else mnist; or folder:PATH[:size=S] / npz:PATH (only the first "
                "n images are read)")


def add_model_arguments(p: argparse.ArgumentParser, *, model_default: str | None) -> None:
    """``--model``, ``--weights``, ``--dataset`` and ``--data-dir``."""
    if model_default is None:
        p.add_argument("--model", required=True, help=MODEL_HELP)
    else:
        p.add_argument("--model", default=model_default, help=MODEL_HELP)
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None)


def model_dataset(model: object, dataset: str | None) -> str:
    """``dataset`` if given, else the one the model's metadata names, else ``"mnist"`` (as ``advlab evaluate``)."""
    meta = getattr(model, "advlab_meta", None) or getattr(model, "meta", None) or {}
    found = dataset or meta.get("dataset")
    return found if isinstance(found, str) else "mnist"


def model_and_images(args: argparse.Namespace, n: int | None) -> tuple[Any, str, torch.Tensor, torch.Tensor]:
    """The model (on the CPU, a fresh object), the dataset's name and its first ``n`` test images and labels."""
    model = load_model(args.model, weights=args.weights)
    dataset = model_dataset(model, args.dataset)
    if is_spec(dataset) and args.data_dir is None:  # your images: read only the first n
        images, y = open_images(dataset, size=declared_input_shape(model), n=n)
        x = images[:]
    else:
        x, y = load_dataset(dataset, "test", root=args.data_dir)
    check_input_shape(model, x, name=args.model, source=dataset)
    return model, dataset, x[:n], y[:n]


def norm_word(text: str) -> str:
    """``--norm`` as advlab names it, from a peer's spelling (``Linf``, ``L2``, ``inf``); else as given."""
    try:
        return canonical_norm(text)
    except ValueError:
        return text


__all__ = ["MODEL_HELP", "WEIGHTS_HELP", "add_model_arguments", "model_and_images", "model_dataset", "norm_word"]
