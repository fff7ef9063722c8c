"""ONNX models as black boxes: ``load_onnx("model.onnx")`` runs them with onnxruntime (an optional extra).

Install with ``pip install 'advlab[onnx]'``. The model must map float32 images N×C×H×W in
pixel space ([0, 1]; normalisation inside the graph) to logits N×K. A graph exported with a fixed
batch size (``torch.onnx.export`` without ``dynamic_axes``) is fed batches of exactly that size,
the last one filled up with copies of its last image. A graph that takes its images channels-last
(N×H×W×C, as Keras and TensorFlow exports do) or greyscale without a channel axis (N×H×W) is fed
advlab's N×C×H×W images transposed or squeezed to that layout (``box.meta["layout"]``). A graph ending
in a softmax returns probabilities, which the black box's scores read as their logarithm, with a
``ModelReturnsProbabilities`` warning: the log has the logits' margins, where the probabilities
saturate (Square on lenet-mnist behind a softmax breaks as many images as on its logits; read as
they are, fewer).
advlab sees it only through its predictions — a :class:`~advlab.models.blackbox.BlackBox` — so
score- and decision-based attacks (``square``, ``hopskipjump``, …) run on it; gradient attacks
do not. :func:`export_onnx` writes a torch model in that form.

Determinism: the session runs on the CPU provider, ops sequentially, with ``intra_op`` threads
(default: torch's thread count at load time) and one inter-op thread, so the same input gives
the same output on every call.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab._checks import error_text
from advlab.models.blackbox import BlackBox

ONNX_EXTRA = "onnxruntime is not installed: pip install 'advlab[onnx]' (or pip install onnxruntime)"
OPTIMIZATION = ("all", "basic", "none")


def _session(path: Path, threads: int, optimization: str) -> Any:
    """A deterministic CPU InferenceSession for ``path``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(ONNX_EXTRA) from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own error types (InvalidGraph, Fail, ...), in one line
        raise ValueError(f"model: {path} is not a model onnxruntime can run ({error_text(e)})") from None


def load_onnx(path: str | os.PathLike[str], *, threads: int | None = None, optimization: str = "all",
              batch_size: int | None = None) -> BlackBox:
    """An ONNX model as a :class:`~advlab.models.blackbox.BlackBox` returning logits.

    Args:
        path: The ``.onnx`` file (one float32 input N×C×H×W, logits out; a fixed N is fed batches of N).
        threads: onnxruntime's intra-op threads (default: ``torch.get_num_threads()``).
        optimization: onnxruntime's graph optimisation level: ``"all"`` (default), ``"basic"``
            or ``"none"`` (fused kernels may round differently from torch; see docs/benchmarks.md).
        batch_size: Largest batch passed to the session in one call (None: no limit).

    Returns:
        A black box over the session; ``box.meta`` names the file, its input name and shape.

    Raises:
        ImportError: onnxruntime is not installed (the ``onnx`` extra).
        FileNotFoundError: No such file.
        ValueError: A file onnxruntime cannot load, or a graph without exactly one input (and, when
            called, images of a shape the graph does not take).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model: ONNX file {p} does not exist")
    if optimization not in OPTIMIZATION:
        raise ValueError(f"optimization: expected one of {', '.join(OPTIMIZATION)}, got {optimization!r}")
    n_threads = torch.get_num_threads() if threads is None else threads
    sess = _session(p, n_threads, optimization)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"model: {p} has {len(inputs)} inputs; advlab feeds one (the images)")
    name, shape = inputs[0].name, inputs[0].shape
    shown = [d if isinstance(d, int) else str(d) for d in shape]  # (a dynamic axis is named, e.g. 'n')
    fixed = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(sess.run(None, {name: x})[0])
        except Exception as e:  # onnxruntime's own error types, in one line
            raise ValueError(f"model: {p.name} fails on images of shape {tuple(x.shape)}; its input is {name} of "
                             f"shape {shown} ({error_text(e, 240)})") from None

    layout = _layout(shape)

    def predict(x: np.ndarray) -> np.ndarray:
        if layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        elif layout == "NHW" and x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        x = np.ascontiguousarray(x, dtype=np.float32)
        return run(x) if fixed is None else _in_fixed_batches(run, x, fixed)

    predict.__name__ = p.name
    meta = {"onnx": str(p), "input": name, "input_shape": shown, "layout": layout,
            "threads": n_threads, "optimization": optimization}
    return BlackBox(predict, output="logits", input_format="numpy", batch_size=batch_size, name=p.name, meta=meta)


def _layout(shape: list[Any]) -> str:
    """How the graph takes images: ``"NCHW"`` (advlab's own), ``"NHWC"`` or ``"NHW"``.

    NHWC: Keras and TensorFlow exports, channels last (1 or 3 of them after two spatial sides). NHW: greyscale
    without a channel axis.
    """
    spatial = [d for d in shape[1:3] if isinstance(d, int)]
    if len(shape) == 4 and shape[3] in (1, 3) and spatial and min(spatial) > 4 and shape[1] not in (1, 3):
        return "NHWC"
    if len(shape) == 3 and all(isinstance(d, int) and d > 4 for d in shape[1:]):
        return "NHW"
    return "NCHW"


def _in_fixed_batches(run: Any, x: np.ndarray, size: int) -> np.ndarray:
    """``run`` on ``x`` in batches of exactly ``size`` (a graph exported with a fixed batch axis).

    The last batch is filled up with copies of its last image, whose outputs are dropped.
    """
    outs = []
    for i in range(0, max(len(x), 1), size):
        part = x[i : i + size] if len(x) else np.zeros((1, *x.shape[1:]), dtype=x.dtype)
        k = min(len(part), len(x))
        if len(part) < size:
            part = np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
        outs.append(run(part)[:k])
    return np.concatenate(outs)


def export_onnx(model: nn.Module, path: str | os.PathLike[str], in_shape: tuple[int, ...], *,
                opset: int | None = None) -> Path:
    """Write a torch model as ONNX with a dynamic batch axis (torch's TorchScript-based exporter, ``dynamo=False``).

    The TorchScript-based exporter needs only the ``onnx`` package (the dynamo exporter would also
    need ``onnxscript``); torch warns that it is deprecated, and that warning is silenced here.

    Args:
        model: The network (its mode and parameters are not changed; it is traced in eval mode).
        path: The ``.onnx`` file to write.
        in_shape: One image's shape C×H×W.
        opset: The ONNX opset (default: the exporter's).

    Returns:
        The path written.
    """
    out = Path(path)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(model, (torch.zeros(2, *in_shape),), str(out), dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                              opset_version=opset)
    finally:
        for m, training in modes:
            m.training = training
    return out


__all__ = ["ONNX_EXTRA", "export_onnx", "load_onnx"]
