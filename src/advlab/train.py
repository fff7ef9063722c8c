"""One training loop. Training defenses plug in as a :class:`TrainingDefense` (see advlab.defenses).

Training is deterministic under a seed on one machine: model initialisation and shuffling draw
from a seeded RNG inside ``torch.random.fork_rng`` (the caller's global RNG state, CPU and CUDA,
is restored afterwards), and the data order comes from an explicit ``torch.Generator``.
:func:`train_half` trains on one of the two fixed halves of a training set.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advlab._checks import check_positive_int
from advlab._device import draw, module_device, resolve_device
from advlab._version import __version__
from advlab.data import dataset_info, half_indices, load_dataset
from advlab.metrics import clean_accuracy
from advlab.models import create_model
from advlab.models.checkpoint import is_initial


@dataclass
class TrainingDefense:
    """Base class: plain cross-entropy, no data change, no weight hook.

    Subclasses override :meth:`step` (the loss of one batch), :meth:`prepare_data` (the training
    set) and :meth:`after_step` (the weights after each optimiser step).
    """

    name: str = "none"

    def step(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator, progress: float,
        index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss to minimise on one batch and the logits of the clean batch (for training accuracy).

        ``progress`` is the fraction of training done (0 at the first step, → 1 at the last);
        ``index`` holds the batch's row numbers in the (prepared) training set.
        """
        logits = model(xb)
        return F.cross_entropy(logits, yb), logits

    def correct(self, out: torch.Tensor, yb: torch.Tensor) -> float:
        """The batch's training-accuracy count: correct top-1 predictions (dense tasks: per-image fractions)."""
        return float((out.argmax(1) == yb).sum())

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
        """The test metrics written into checkpoint metadata: ``acc1`` and ``acc5`` for classifiers."""
        acc1, acc5 = clean_accuracy(model, x, y, device=device)
        return {"acc1": acc1, "acc5": acc5}

    def prepare_data(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set this defense trains on (default: unchanged)."""
        return x, y

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (default: nothing)."""

    def options(self) -> dict[str, Any]:
        """The defense's settings, for checkpoint metadata."""
        return {k: v for k, v in self.__dict__.items() if k != "name" and not k.startswith("_")}


@dataclass
class TrainConfig:
    """Hyper-parameters of the training loop."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "cosine"  # "cosine" or "constant"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a training run produced."""

    model: nn.Module
    acc1: float
    acc5: float
    seconds: float
    history: list[dict[str, float]]
    metrics: dict[str, float] = field(default_factory=dict)  # the task's test metrics (acc1/acc5 for classifiers)


def _optimiser(
    model: nn.Module, config: TrainConfig, total: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Adam over ``model``'s parameters and, for ``schedule="cosine"``, a one-cycle schedule of ``total`` steps."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if config.schedule == "cosine":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=total, pct_start=0.15, anneal_strategy="cos"
        )
    return opt, sched


@dataclass
class _Loop:
    """What a training run carries from one optimiser step to the next."""

    model: nn.Module
    defense: TrainingDefense
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    gen: torch.Generator  # the data order and the defense's own draws
    bar: Any  # the progress bar
    batch_size: int
    total: int  # optimiser steps in the whole run
    device: torch.device  # where the model trains: each batch is moved there
    it: int = 0  # optimiser steps done

    def step(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[float, float]:
        """One optimiser step on a batch; returns the batch's summed loss and its correct count."""
        loss, logits = self.defense.step(self.model, xb, yb, self.gen, self.it / self.total, idx)
        self.opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.opt.step()
        self.defense.after_step(self.model)
        self.it += 1
        if self.sched is not None:
            self.sched.step()
        return float(loss.detach()) * len(idx), self.defense.correct(logits.detach(), yb)

    def epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, float]:
        """One pass over ``(x, y)`` in a fresh random order; returns the epoch's mean loss and accuracy."""
        order = draw(torch.randperm, len(x), generator=self.gen, device=x.device)
        run_loss = run_correct = seen = 0.0
        for i in range(math.ceil(len(x) / self.batch_size)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            loss, correct = self.step(x[idx].to(self.device), y[idx].to(self.device), idx)
            run_loss += loss
            run_correct += correct
            seen += len(idx)
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{run_loss / seen:.4f}", acc=f"{run_correct / seen:.4f}")
        return {"epoch": epoch + 1, "loss": run_loss / seen, "acc": run_correct / seen}


def _reset_parameters(model: nn.Module) -> None:
    """Re-draw every layer's parameters from its default initialiser (from the global RNG)."""
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def _train(model: nn.Module, defense: TrainingDefense, config: TrainConfig, data: tuple[torch.Tensor, torch.Tensor],
           total: int, dev: torch.device, progress: bool) -> list[dict[str, float]]:
    """The epochs of :func:`fit` (inside its forked, seeded RNG); returns the per-epoch history."""
    model.requires_grad_(True)
    model.train()
    opt, sched = _optimiser(model, config, total)
    bar = tqdm(total=total, disable=not progress, desc="train", unit="batch", dynamic_ncols=True)
    loop = _Loop(model, defense, opt, sched, torch.Generator().manual_seed(config.seed), bar,
                 config.batch_size, total, dev)
    history = [loop.epoch(*data, epoch) for epoch in range(config.epochs)]
    bar.close()
    return history


def fit(
    model: nn.Module,
    train_data: tuple[torch.Tensor, torch.Tensor],
    test_data: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    *,
    defense: TrainingDefense | None = None,
    progress: bool = True,
    init_seed: bool | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam and the given step function.

    Every RNG ``torch.manual_seed`` seeds (the CPU's and every CUDA device's) is forked, so the
    caller's random state is the same after training as before. The parameters are initialised
    where the model is, then the model is moved to ``device`` (in place: training changes the
    model anyway); the data stay where they are and each batch is moved to ``device``, so the
    data order and the defenses' draws (on the seeded CPU generator) are the same on every device.

    Args:
        model: The network (its parameters are trained in place).
        train_data: ``(x, y)`` training tensors.
        test_data: ``(x, y)`` evaluated at the end (``defense.evaluate``: Acc@1 and Acc@5 for
            classifiers, the task's metric for dense tasks), or ``None``.
        config: Epochs, batch size, learning rate, seed, schedule.
        defense: What one batch contributes to the loss, the training set, and a hook after each
            optimiser step (see :mod:`advlab.defenses`); ``None`` is plain cross-entropy.
        progress: Show a progress bar with loss and accuracy.
        init_seed: Whether the seeded RNG also re-initialises the model's parameters. ``None``
            (the default): only a network as :func:`~advlab.models.create_model` built it, untouched
            since (so advlab's own training is the same whatever the caller's RNG); your own module, or
            one whose weights were loaded or trained, keeps its weights (fine-tuning, adversarial
            fine-tuning). ``True`` re-draws any model's parameters under the seed.
        device: Where to train (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, see
            :func:`advlab._device.resolve_device`); ``None``: where the model is.

    Returns:
        The trained model (eval mode, frozen) with its test accuracy, wall time and per-epoch history.
    """
    check_positive_int("epochs", config.epochs)
    check_positive_int("batch_size", config.batch_size)
    defense = defense if defense is not None else TrainingDefense()
    dev = module_device(model) if device is None else resolve_device(device)
    x, y = defense.prepare_data(*train_data, torch.Generator().manual_seed(config.seed + 7919))
    total = config.epochs * math.ceil(len(x) / config.batch_size)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(config.seed)
        if init_seed or (init_seed is None and is_initial(model)):
            _reset_parameters(model)
        history = _train(model.to(dev), defense, config, (x, y), total, dev, progress)
    model.eval()
    model.requires_grad_(False)
    metrics = defense.evaluate(model, *test_data, device=dev) if test_data is not None else {}
    acc1, acc5 = metrics.get("acc1", float("nan")), metrics.get("acc5", float("nan"))
    return TrainResult(model, acc1, acc5, time.perf_counter() - start, history, metrics)


def train_half(
    half: str,
    *,
    arch: str = "lenet",
    dataset: str = "mnist",
    config: TrainConfig | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``arch`` on training half ``half`` of ``dataset`` (see :func:`advlab.data.half_indices`).

    Args:
        half: ``"a"`` or ``"b"``: the two halves are disjoint.
        arch: An architecture name (see :func:`advlab.models.list_models`).
        dataset: The dataset whose training split is halved.
        config: The training settings (default: :class:`TrainConfig`'s).
        progress: Show a progress bar.
        device: Where to train (see :func:`fit`; ``None``: the CPU, where the model is built).

    Returns:
        The trained model; its test accuracy is measured on the full test split.
    """
    info = dataset_info(dataset)
    x, y = load_dataset(dataset, "train")
    idx = half_indices(len(x), half)
    test = load_dataset(dataset, "test")
    model = create_model(arch, in_shape=info.shape, num_classes=info.num_classes)
    return fit(model, (x[idx], y[idx]), test, config or TrainConfig(), progress=progress, device=device)


def command_line() -> str:
    """The command that launched this process, for checkpoint metadata."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("advlab", "__main__.py")):
        argv[0] = "advlab"
    return shlex.join(argv)


def checkpoint_meta(
    architecture: str,
    arch_kwargs: dict[str, Any],
    dataset: str,
    result: TrainResult,
    config: TrainConfig,
    command: str,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata block written with a trained checkpoint (its test metrics: ``acc1``/``acc5`` or the task's)."""
    metrics = result.metrics or {"acc1": result.acc1, "acc5": result.acc5}
    return {
        "architecture": architecture,
        "arch_kwargs": arch_kwargs,
        "dataset": dataset,
        "bounds": [0.0, 1.0],
        **{k: round(v, 6) for k, v in metrics.items()},
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "train_seconds": round(result.seconds, 1),
        "command": command,
        "advlab_version": __version__,
        "torch_version": torch.__version__,
        **extra,
    }
