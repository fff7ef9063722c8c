"""``evaluate()``: plan → run → checks → aggregate, through a resumable results store.

Fixed-budget attacks run once per ε, minimal-perturbation attacks once with ε = inf (scored at
every ε from their per-example distance), attacks that ignore the budget once. Every number is
computed by :mod:`advlab.metrics` from the model's own prediction on the returned x_adv, never
from an attack's own success flag (:mod:`advlab.results.aggregate`).

The plan validates every argument — attack parameters bound against their signatures, the ε
list, the images against the bounds, the model against the data — and fingerprints the model and
the data before anything is written; only then is the output directory locked and its store opened.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from advlab._checks import check_bounds, check_choice, check_labels, check_positive_int, plain_number
from advlab._device import OnDevice, place_model, resolve_device
from advlab._grad_mode import autograd_on, normal
from advlab._io import locked_directory
from advlab.attacks import get_attack
from advlab.data import is_spec
from advlab.data.torch_dataset import Data, is_torch_name
from advlab.detect.base import Detector
from advlab.evaluation.certified import parse_methods, preflight_certify
from advlab.evaluation.defaults import ADAPTIVE, DEFAULT_ATTACKS, N_EXAMPLES, attack_params, bind_params, choose_attacks
from advlab.evaluation.dense import DenseEvaluation, model_task, plan_dense
from advlab.evaluation.detection import plan_detector
from advlab.evaluation.distributed import current_world, run_sharded
from advlab.evaluation.inputs import check_default_data, model_dataset, recorded_dataset, resolve_data, validate_eps
from advlab.evaluation.memory import check_batch_memory
from advlab.evaluation.respond import add_cost
from advlab.evaluation.result import Evaluation
from advlab.evaluation.session import attach_detector, finish_run, open_run_store, start_run
from advlab.evaluation.settings import Plan, Settings
from advlab.evaluation.targeting import CHECKS_SKIPPED_TARGETED, TARGETED, targeted_attacks, targeted_data
from advlab.models import check_input_shape, load_model
from advlab.models.blackbox import BlackBox
from advlab.models.sklearn import SKLEARN_MODELS
from advlab.results.plan import DEFAULT_EPS, Job, plan_jobs
from advlab.results.records import data_fingerprint, model_fingerprint
from advlab.results.store import ConfigMismatchError
from advlab.threat import ThreatModel, canonical_norm

CHECK_NORMS = ("linf", "l2")  # the gradient-masking checks run for these threat models
CHECKS_SKIPPED_BLACKBOX = "the model is a BlackBox and the gradient-masking checks need its gradients"

def resolve_model(model: nn.Module | BlackBox | str | os.PathLike[str]) -> tuple[nn.Module | BlackBox, str]:
    """The model to attack and its default name; a BlackBox must give scores (Acc@5 ranks them)."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model), os.fspath(model)
    if isinstance(model, BlackBox):
        if not model.has_scores:
            raise ValueError("model: evaluate needs scores (Acc@5 ranks them), got a labels-only BlackBox")
        return model, str(model.name)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, a BlackBox or a model name/path, got {type(model).__name__}")
    return model, type(model.model if isinstance(model, OnDevice) else model).__name__


def place(net: nn.Module | BlackBox, device: str | torch.device | None, *, owned: bool) -> nn.Module | BlackBox:
    """The model on ``device`` (a caller's model is copied, never moved).

    A model off the CPU is wrapped in :class:`~advlab._device.OnDevice`: the evaluation keeps the
    images on the CPU and each batch is moved to the device to be attacked. A BlackBox runs where its
    predict function runs.
    """
    if isinstance(net, BlackBox):
        if device is not None and resolve_device(device).type != "cpu":
            raise ValueError(f"device: a BlackBox runs where its predict function runs; got device={device!r}")
        return net
    return place_model(net, device, owned=owned)


def check_compatible(net: nn.Module | BlackBox, dataset: str, y: torch.Tensor) -> None:
    """A model that records its training set and classes (``advlab_meta``; a scikit-learn target) must fit the data."""
    if isinstance(net, BlackBox) and net.name in SKLEARN_MODELS:
        meta: Any = {"dataset": SKLEARN_MODELS[net.name].dataset}
    else:
        meta = getattr(net, "advlab_meta", None)
    if not isinstance(meta, dict):
        return
    trained_on = meta.get("dataset")
    named = dataset != "tensors" and not is_spec(dataset) and not is_torch_name(dataset)
    if named and isinstance(trained_on, str) and trained_on != dataset:
        raise ValueError(f"model: expected a model of {dataset}, got one trained on {trained_on}")
    classes = (meta.get("arch_kwargs") or {}).get("num_classes")
    if isinstance(classes, int):
        check_labels("data", y, len(y), classes)


def preflight(net: nn.Module | BlackBox, x: torch.Tensor, y: torch.Tensor, jobs: list[Job],
              bounds: tuple[float, float], target: torch.Tensor | None = None) -> None:
    """Check every job's attack against the model and the data before anything runs (the registry's errors)."""
    for job in jobs:
        threat = ThreatModel(job.norm, math.inf if job.eps is None else job.eps, bounds=bounds,  # type: ignore[arg-type]
                             targeted=target is not None)
        get_attack(job.attack).check_inputs(net, x[:1], y[:1], threat, None if target is None else target[:1])


def check_settings(s: Settings) -> None:
    """The scalar settings' types and ranges, each a one-line error naming the argument."""
    s.norm = canonical_norm(s.norm)
    for name in ("n", "batch_size", "check_n", "seed", "examples_per_job"):  # (np.int64 from a sweep: an int)
        setattr(s, name, plain_number(int, getattr(s, name)))
    check_bounds("bounds", s.bounds)
    if s.targeted is not None:
        check_choice("targeted", s.targeted, TARGETED)
    check_positive_int("batch_size", s.batch_size)
    check_positive_int("check_n", s.check_n)
    for name, low in (("seed", 0), ("examples_per_job", 0)):
        value = getattr(s, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    for name in ("progress", "force", "checks"):
        if not isinstance(getattr(s, name), bool):
            raise TypeError(f"{name}: expected True or False, got {getattr(s, name)!r}")
    if s.ensemble is not None and not isinstance(s.ensemble, bool):
        raise TypeError(f"ensemble: expected True, False or None, got {s.ensemble!r}")
    for name, kinds in (("model_name", str), ("command", str), ("surrogate", str), ("out", (str, os.PathLike)),
                        ("data_dir", (str, os.PathLike))):
        value = getattr(s, name)
        if value is not None and not isinstance(value, kinds):
            raise TypeError(f"{name}: expected a {'path' if name in ('out', 'data_dir') else 'string'} or None, "
                            f"got {type(value).__name__}")


def plan(s: Settings) -> Plan:
    """Validate every setting and plan the jobs: nothing runs and nothing is written.

    The model and the data are read, checked against each other and fingerprinted; every attack
    parameter is bound against its attack's signature, so a misspelt one fails before the store exists.
    """
    check_settings(s)
    bounds = check_bounds("bounds", s.bounds)
    net, default_name = resolve_model(s.model)
    net = place(net, s.device, owned=isinstance(s.model, (str, os.PathLike)))
    defaulted = s.data is None and recorded_dataset(net) is None
    if s.data is None:  # the dataset the model was trained on, as its checkpoint records it (else MNIST)
        s = dataclasses.replace(s, data=model_dataset(net))
    task = model_task(net)
    if task != "classification":
        if s.detector is not None:
            raise ValueError(f"detector: the reject option is for classifiers, got a {task} model")
        return plan_dense(s, cast(nn.Module, net), default_name, task)
    x, y, dataset = resolve_data(s.data, s.data_dir, s.n, bounds, net)
    if defaulted:
        check_default_data(net, x, dataset)
    check_compatible(net, dataset, y)
    check_input_shape(net, x, source=dataset)
    sweep = validate_eps(s.norm, s.eps if s.eps is not None else DEFAULT_EPS[s.norm], bounds)
    attacks = choose_attacks(s.attacks, net, s.norm)
    untargetable: list[str] = []
    target: torch.Tensor | None = None
    if s.targeted is not None:
        attacks, untargetable = targeted_attacks(attacks, s.attacks)
        x, y, target = targeted_data(net, x, y, s.targeted, s.seed)
    blackbox = isinstance(net, BlackBox)
    checks = s.checks and s.norm in CHECK_NORMS and not blackbox and target is None
    jobs = plan_jobs(attacks, s.norm, sweep)
    params = bind_params(s.params, jobs, plan_jobs([ADAPTIVE], s.norm, sweep) if checks else [])
    preflight(net, x, y, jobs, bounds, target)
    if not blackbox and any(get_attack(j.attack).needs_grad for j in jobs):
        check_batch_memory(net, x, s.batch_size)
    methods = parse_methods(s.certify, s.norm)
    preflight_certify(net, x, methods, target is not None)
    config: dict[str, Any] = {
        "model": s.model_name or default_name, "dataset": dataset, "n": len(y), "batch_size": s.batch_size,
        "seed": s.seed, "attacks": attacks, "norm": s.norm, "eps": list(sweep), "bounds": list(bounds),
        "params": params, "checks": checks,
        # the APGD ensemble where the model looks robust (default: with the default attacks only)
        "ensemble": target is None and ((attacks == list(DEFAULT_ATTACKS)) if s.ensemble is None else s.ensemble),
        "surrogate": s.surrogate, "targeted": s.targeted, "untargetable": untargetable,
        # the parameters each attack actually runs with, so a change of advlab's defaults is noticed
        "effective_params": {j.key: attack_params(get_attack(j.attack), j, params) for j in jobs},
        # what was evaluated, by content: other weights behind the same path, or other data, are noticed
        "model_fingerprint": model_fingerprint(net), "data_fingerprint": data_fingerprint(x, y, s.data_dir),
    }
    if methods:  # only then: the configurations (and stores) of evaluations without certificates are unchanged
        config["certify"] = [m.label for m in methods]
    detector = plan_detector(s.detector, net, dataset, s.data_dir, s.norm, sweep, params, s.seed)
    if detector is not None:  # (likewise: a store without a detector keeps its configuration)
        config["detector"] = detector.entry
    skipped = CHECKS_SKIPPED_BLACKBOX if blackbox and s.checks and s.norm in CHECK_NORMS else None
    if target is not None and s.checks and s.norm in CHECK_NORMS and not blackbox:
        skipped = CHECKS_SKIPPED_TARGETED
    return Plan(net, x, y, params, config, jobs, skipped, target, detector)


def run_plan(p: Plan, s: Settings) -> Evaluation | DenseEvaluation:
    """Lock ``s.out``, open (or refuse, or replace) its store, run the jobs and the checks, aggregate the rows.

    The store lives in a temporary directory when ``s.out`` is None. The lock is taken before the
    store is opened, so ``force`` never replaces a store another process is writing. Under
    ``torchrun`` the jobs' batches are shared out over the processes and every rank returns the
    same evaluation (:mod:`advlab.evaluation.distributed`).
    """
    world = current_world("nccl" if p.device.type == "cuda" else "gloo")
    if world.size > 1:
        return run_sharded(p, s, world)
    if s.out is None:
        with tempfile.TemporaryDirectory(prefix="advlab-eval-") as tmp:
            return _run_in(p, s, Path(tmp), keep=False)
    with locked_directory(s.out, arg="out", command=s.command or "advlab.evaluate()") as out:
        return _run_in(p, s, out, keep=True)


def _run_in(p: Plan, s: Settings, directory: Path, keep: bool) -> Evaluation | DenseEvaluation:
    store = open_run_store(p, s, directory)
    try:
        run, jobs = start_run(p, s, store)
        attach_detector(run, p, s, directory)
        t0 = time.perf_counter()
        run.jobs(jobs)
        add_cost(run, "attacks", time.perf_counter() - t0)
        return finish_run(run, s, keep)
    finally:
        store.close()


def execute(s: Settings) -> Evaluation | DenseEvaluation:
    """Plan (validating everything), then run the plan, with inference mode off (:mod:`advlab._grad_mode`)."""
    with autograd_on():
        if isinstance(s.data, tuple):
            s.data = tuple(normal(part) for part in s.data)
        return run_plan(plan(s), s)


SETTINGS = frozenset(f.name for f in dataclasses.fields(Settings))


def evaluate(
    model: nn.Module | BlackBox | str, data: Data = None,
    attacks: str | Sequence[Any] | None = None, eps: float | Sequence[float] | None = None, *, norm: str = "linf",
    n: int | None = None, batch_size: int = 500, seed: int = 0, out: str | Path | None = None,
    params: dict[str, dict[str, Any]] | None = None, bounds: tuple[float, float] = (0.0, 1.0), progress: bool = True,
    force: bool = False, model_name: str | None = None, data_dir: str | None = None, command: str | None = None,
    examples_per_job: int = N_EXAMPLES, checks: bool = True, check_n: int = 200, ensemble: bool | None = None,
    surrogate: str | None = None, targeted: str | None = None, certify: str | Sequence[str] | None = None,
    device: str | torch.device | None = None, detector: str | Detector | None = None) -> Evaluation | DenseEvaluation:
    """Evaluate a model's robustness against attacks over a sweep of budgets.

    Args:
        model: A torch model (logits), a pretrained name / checkpoint path, or a scoring ``BlackBox``.
        data: A dataset name or spec, ``(x, y)`` tensors or arrays, a torch Dataset or DataLoader, or None: the model's.
        attacks: Names, infos or functions (``"fgsm,pgd"``), each run once (default :data:`DEFAULT_ATTACKS`; BlackBox:
            gradient-free).
        eps: The budget sweep for ``norm``, or one budget (default: ``DEFAULT_EPS[norm]``).
        norm: The norm (``"Linf"``, ``np.inf`` too; an attack without it runs at its own first norm and sweep).
        n: Evaluate the first ``n`` examples (default: all).
        batch_size: Examples per batch; the store records each finished batch.
        seed: The evaluation seed; each batch's generator is derived from (seed, attack, ε, batch).
        out: Directory for ``results.sqlite`` (resumable, locked while written); None: a temp dir.
        params: Per-attack parameters overriding :data:`DEFAULT_PARAMS`.
        bounds: Input bounds of the threat model.
        progress: Show a progress bar.
        force: Replace a corrupt store or one of another configuration (not one being written).
        model_name: Name recorded in the rows (default: the name/path given or the class name).
        data_dir: Directory of IDX files for MNIST (default: the offline copy).
        command: The command line, recorded with the results.
        examples_per_job: (x, x_adv) pairs of each attack kept for the figures.
        checks: Run the gradient-masking checks on ``check_n`` correctly classified inputs at the largest ε; one
            that fires adds ``pgd-adaptive`` and the escalation (docs/warnings.md); a BlackBox's: skipped, as recorded.
        check_n: Subset size of the checks.
        ensemble: The APGD ensemble at the largest ε where Acc@1 > 0.05 (default: with the default attacks).
        surrogate: The escalation's transfer surrogate (default: a shipped model of the dataset).
        targeted: ``"random"``, ``"least-likely"`` or ``"all"``: every attack targeted, success =
            classified as the target (:mod:`advlab.evaluation.targeting`); None: untargeted.
        certify: Certificates after the attacks (``"default"``, ``"ibp,crown-ibp"``, a list): a checked row
            per (method, ε) in ``Evaluation.meta["certified"]`` (:mod:`advlab.evaluation.certified`).
        device: Where it computes (``"auto"``, ``"cpu"``, ``"cuda[:N]"``; None: where it is); copied, never moved.
        detector: The reject option (docs/evaluation.md): ``"kdbu"``, ``"NAME:PATH.safetensors"`` or a Detector.

    Returns:
        An :class:`Evaluation`: a row per (attack, ε), a ``worst-case`` row per ε; ``config`` holds
        content fingerprints of the model (weights digest; a BlackBox's name and meta) and the data.

    Raises:
        ValueError, TypeError: A bad argument, parameter, ε, model or data, before anything is written.
        ConfigMismatchError: ``out`` holds finished results of another configuration, model or data.
        OutputLocked: Another process is writing ``out``.
        StoreCorrupt: ``out/results.sqlite`` is corrupt and ``force`` is False.

    Example:
        >>> import advlab
        >>> ev = advlab.evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], n=100, progress=False)
        >>> [(r.attack, r.eps, r.n) for r in ev.rows]
        [('fgsm', 0.1, 100), ('worst-case', 0.1, 100)]
    """
    return execute(Settings(**{k: v for k, v in locals().items() if k in SETTINGS}))


__all__ = ["CHECKS_SKIPPED_BLACKBOX", "ConfigMismatchError", "Evaluation", "Plan", "Settings", "evaluate", "plan",
           "run_plan"]
