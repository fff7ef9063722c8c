"""``evaluate()``: plan → run → checks → aggregate, through a resumable results store.

Fixed-budget attacks run once per ε, minimal-perturbation attacks once with ε = inf (scored at
every ε from their per-example distance), attacks that ignore the budget once. Every number is
computed by :mod:`advlab.metrics` from the model's own prediction on the returned x_adv, never
from an attack's own success flag (:mod:`advlab.results.aggregate`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._checks import check_choice, check_positive_int
from advlab._io import atomic_write_text
from advlab.attacks import get_attack
from advlab.data import load_dataset
from advlab.evaluation.checks import run_checks
from advlab.evaluation.defaults import ADAPTIVE, DEFAULT_ATTACKS, N_EXAMPLES, attack_params, blackbox_attacks
from advlab.evaluation.run import Run
from advlab.models import load_model
from advlab.models.blackbox import BlackBox
from advlab.report.tables import format_table
from advlab.results.aggregate import compute_rows
from advlab.results.plan import DEFAULT_EPS, Job, plan_jobs
from advlab.results.records import CONTRACT_KEYS, Row, environment
from advlab.results.store import Store
from advlab.threat import ThreatModel

NORMS = ("linf", "l2", "l1", "l0")
CHECK_NORMS = ("linf", "l2")  # the gradient-masking checks run for these threat models
CHECKS_SKIPPED_BLACKBOX = "the model is a BlackBox and the gradient-masking checks need its gradients"


class ConfigMismatchError(ValueError):
    """The output directory holds results of a different configuration."""


@dataclass
class Evaluation:
    """The result of :func:`evaluate`: rows, configuration, checks and where the store lives."""

    rows: list[Row]
    config: dict[str, Any]
    store_path: Path | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_skipped: str | None = None  # why the gradient-masking checks did not run (a black box)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as dicts with exactly the contract keys."""
        return [r.as_dict() for r in self.rows]

    def to_markdown(self) -> str:
        """The robustness table as Markdown."""
        return format_table(self.rows, markdown=True)

    def __str__(self) -> str:
        return format_table(self.rows, markdown=False)

    def save(self, directory: str | Path) -> None:
        """Write ``results.json``, ``results.csv`` (contract keys) and ``checks.json`` into ``directory`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        records = self.to_records()
        atomic_write_text(d / "results.json", json.dumps(records, indent=2) + "\n")
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(CONTRACT_KEYS))
        w.writeheader()
        w.writerows(records)
        atomic_write_text(d / "results.csv", buf.getvalue())
        if self.checks:
            atomic_write_text(d / "checks.json", json.dumps(self.checks, indent=2) + "\n")


def resolve_model(model: nn.Module | BlackBox | str) -> tuple[nn.Module | BlackBox, str]:
    """The model to attack and its default name; a BlackBox must give scores (Acc@5 ranks them)."""
    if isinstance(model, str):
        return load_model(model), model
    if isinstance(model, BlackBox):
        if not model.has_scores:
            raise ValueError("model: evaluate needs scores (Acc@5 ranks them), got a labels-only BlackBox")
        return model, str(model.name)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, a BlackBox or a model name/path, got {type(model).__name__}")
    return model, type(model).__name__


def resolve_data(data: str | tuple[torch.Tensor, torch.Tensor], data_dir: str | None,
                 n: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` examples (all if None) of a dataset's test split or of a tuple ``(x, y)``, and a name."""
    if isinstance(data, str):
        x, y = load_dataset(data, "test", root=data_dir)
        name = data
    elif isinstance(data, tuple) and len(data) == 2:
        (x, y), name = data, "tensors"
    else:
        raise TypeError("data: expected a dataset name or a tuple (x, y) of tensors")
    if n is not None:
        check_positive_int("n", n)
        x, y = x[:n], y[:n]
    return x, y, name


def validate_eps(norm: str, eps: Sequence[float], bounds: tuple[float, float]) -> tuple[float, ...]:
    """The sweep sorted and without repeats; each budget ≥ 0 (and, for L∞, within the bounds' range)."""
    out = []
    span = bounds[1] - bounds[0]
    for e in eps:
        e = float(e)
        if math.isnan(e) or e < 0:
            raise ValueError(f"eps: expected numbers >= 0, got {e}")
        if norm == "linf" and e > span:
            raise ValueError(f"eps: {e} is outside the bounds' range for linf (at most {span:g})")
        out.append(e)
    if not out:
        raise ValueError("eps: expected at least one budget")
    return tuple(sorted(set(out)))


def choose_attacks(attacks: Sequence[str] | None, net: nn.Module | BlackBox) -> list[str]:
    """Registry names of the attacks (unknown names fail with suggestions); the defaults depend on the model."""
    if attacks is None:
        attacks = blackbox_attacks() if isinstance(net, BlackBox) else DEFAULT_ATTACKS
    names = [get_attack(a).name for a in attacks]
    if not names:
        raise ValueError("attacks: expected at least one attack name")
    return names


def preflight(net: nn.Module | BlackBox, x: torch.Tensor, y: torch.Tensor, jobs: list[Job],
              bounds: tuple[float, float]) -> None:
    """Check every job's attack against the model and the data before anything runs (the registry's errors)."""
    for job in jobs:
        threat = ThreatModel(job.norm, math.inf if job.eps is None else job.eps, bounds=bounds)  # type: ignore[arg-type]
        get_attack(job.attack).check_inputs(net, x[:1], y[:1], threat, None)


def open_store(out: str | Path | None, config: dict[str, Any],
               force: bool) -> tuple[Store, tempfile.TemporaryDirectory[str] | None]:
    """The store of ``out`` (a temporary directory if None), refused or replaced if it holds another configuration."""
    tmp = tempfile.TemporaryDirectory(prefix="advlab-eval-") if out is None else None
    store_dir = Path(tmp.name if tmp is not None else out)  # type: ignore[arg-type]
    store_dir.mkdir(parents=True, exist_ok=True)
    store = Store(store_dir / "results.sqlite")
    stored = store.get_config()
    if stored is not None and stored != config:
        store.close()
        if not force:
            changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise ConfigMismatchError(
                f"out: {store_dir} holds results of a different configuration (differs in "
                f"{', '.join(changed)}); use another directory or --force to replace them"
            )
        (store_dir / "results.sqlite").unlink()
        store = Store(store_dir / "results.sqlite")
    store.set_config(config)
    return store, tmp


def checks_and_adaptive(run: Run, check_n: int) -> None:
    """The gradient-masking checks (once; stored), then the adaptive attack over the sweep if any fired."""
    config, store = run.config, run.store
    results = store.get_meta("checks")
    if results is None:
        found = run_checks(run.net, run.x, run.y, config["norm"], max(config["eps"]), bounds=run.bounds, n=check_n,
                           seed=config["seed"])
        results = [{**r.as_dict(), "message": r.message} for r in found]
        store.set_meta("checks", results)
    if any(r["fired"] for r in results) and ADAPTIVE not in config["attacks"]:
        store.set_meta("adaptive", [ADAPTIVE])
        run.jobs(plan_jobs([ADAPTIVE], config["norm"], config["eps"]))


@dataclass
class Settings:
    """The arguments of :func:`evaluate` (documented there)."""

    model: nn.Module | BlackBox | str
    data: str | tuple[torch.Tensor, torch.Tensor]
    attacks: Sequence[str] | None
    eps: Sequence[float] | None
    norm: str
    n: int | None
    batch_size: int
    seed: int
    out: str | Path | None
    params: dict[str, dict[str, Any]] | None
    bounds: tuple[float, float]
    progress: bool
    force: bool
    model_name: str | None
    data_dir: str | None
    command: str | None
    examples_per_job: int
    checks: bool
    check_n: int


@dataclass
class Plan:
    """A validated evaluation before it runs: model, data, configuration, jobs, why the checks are skipped."""

    net: nn.Module | BlackBox
    x: torch.Tensor
    y: torch.Tensor
    params: dict[str, dict[str, Any]]
    config: dict[str, Any]
    jobs: list[Job]
    checks_skipped: str | None


def plan(s: Settings) -> Plan:
    """Validate the settings and plan the jobs (nothing runs and nothing is written)."""
    check_choice("norm", s.norm, NORMS)
    check_positive_int("batch_size", s.batch_size)
    net, default_name = resolve_model(s.model)
    x, y, dataset = resolve_data(s.data, s.data_dir, s.n)
    sweep = validate_eps(s.norm, s.eps if s.eps is not None else DEFAULT_EPS[s.norm], s.bounds)
    attacks = choose_attacks(s.attacks, net)
    params = {k: dict(v) for k, v in (s.params or {}).items()}
    for k in params:
        get_attack(k)
    jobs = plan_jobs(attacks, s.norm, sweep)
    preflight(net, x, y, jobs, s.bounds)
    blackbox = isinstance(net, BlackBox)
    config: dict[str, Any] = {
        "model": s.model_name or default_name, "dataset": dataset, "n": len(y), "batch_size": s.batch_size,
        "seed": s.seed, "attacks": attacks, "norm": s.norm, "eps": list(sweep), "bounds": list(s.bounds),
        "params": params, "checks": bool(s.checks) and s.norm in CHECK_NORMS and not blackbox,
        # the parameters each attack actually runs with, so a change of advlab's defaults is noticed
        "effective_params": {j.key: attack_params(get_attack(j.attack), j, params) for j in jobs},
    }
    skipped = CHECKS_SKIPPED_BLACKBOX if blackbox and s.checks and s.norm in CHECK_NORMS else None
    return Plan(net, x, y, params, config, jobs, skipped)


def execute(s: Settings) -> Evaluation:
    """Plan, open (or refuse, or replace) the store, run the jobs and the checks, aggregate the rows."""
    p = plan(s)
    store, tmp = open_store(s.out, p.config, s.force)
    try:
        env = environment()
        store.set_meta("environment", env)
        store.set_meta("command", s.command)
        if p.checks_skipped:
            store.set_meta("checks_skipped", p.checks_skipped)
        run = Run(p.net, p.x, p.y, s.bounds, p.params, p.config, store, s.progress, s.examples_per_job)
        run.jobs(p.jobs)
        if run.config["checks"]:
            checks_and_adaptive(run, s.check_n)
        ev = Evaluation(compute_rows(store, run.config), run.config, None if tmp else store.path, env,
                        store.get_meta("checks") or [], store.get_meta("checks_skipped"))
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()
    return ev


def evaluate(
    model: nn.Module | BlackBox | str, data: str | tuple[torch.Tensor, torch.Tensor] = "mnist",
    attacks: Sequence[str] | None = None, eps: Sequence[float] | None = None, *, norm: str = "linf",
    n: int | None = None, batch_size: int = 500, seed: int = 0, out: str | Path | None = None,
    params: dict[str, dict[str, Any]] | None = None, bounds: tuple[float, float] = (0.0, 1.0), progress: bool = True,
    force: bool = False, model_name: str | None = None, data_dir: str | None = None, command: str | None = None,
    examples_per_job: int = N_EXAMPLES, checks: bool = True, check_n: int = 200,
) -> Evaluation:
    """Evaluate a model's robustness against attacks over a sweep of budgets.

    Args:
        model: A torch model (logits), a pretrained name / checkpoint path, or a
            :class:`~advlab.models.blackbox.BlackBox` that returns scores (white-box attacks then fail).
        data: A dataset name (its test split is used) or a tuple ``(x, y)``.
        attacks: Registered attack names (default :data:`DEFAULT_ATTACKS`; for a BlackBox, every
            attack that needs no gradient: noise, semantic, square, hopskipjump).
        eps: The budget sweep for ``norm`` (default: ``DEFAULT_EPS[norm]``).
        norm: The threat model's norm. An attack that does not support it runs at its own first
            norm with that norm's default sweep (e.g. CW at L2), in rows of its own.
        n: Evaluate the first ``n`` examples (default: all).
        batch_size: Examples per batch; the store records each finished batch.
        seed: The evaluation seed; each batch's generator is derived from (seed, attack, ε, batch).
        out: Directory for ``results.sqlite`` (resumable); None keeps the store in a temp dir.
        params: Per-attack parameters overriding :data:`DEFAULT_PARAMS`.
        bounds: Input bounds of the threat model.
        progress: Show a progress bar.
        force: Overwrite a store that holds a different configuration.
        model_name: Name recorded in the rows (default: the name/path given or the class name).
        data_dir: Directory of IDX files for MNIST (default: the offline copy).
        command: The command line, recorded with the results.
        examples_per_job: How many (x, x_adv) pairs of each attack run the store keeps (from the
            first batch) for the report's figures; pass ``n`` to keep every adversarial example.
        checks: Run the gradient-masking checks (:mod:`advlab.evaluation.checks`) on ``check_n``
            correctly classified inputs at the largest ε; if one fires, also run ``pgd-adaptive``
            (margin loss, BPDA, EOT as the model needs) over the whole sweep and mark the rows.
            A BlackBox has no gradients: its checks are skipped, and recorded as skipped.
        check_n: Subset size of the checks.

    Returns:
        An :class:`Evaluation` with one row per (attack, ε) and a ``worst-case`` row per ε.

    Example:
        >>> import advlab
        >>> ev = advlab.evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], n=100, progress=False)
        >>> [(r.attack, r.eps, r.n) for r in ev.rows]
        [('fgsm', 0.1, 100), ('worst-case', 0.1, 100)]
    """
    return execute(Settings(model, data, attacks, eps, norm, n, batch_size, seed, out, params, bounds, progress,
                            force, model_name, data_dir, command, examples_per_job, checks, check_n))


__all__ = ["CHECKS_SKIPPED_BLACKBOX", "ConfigMismatchError", "Evaluation", "Plan", "Settings", "evaluate"]
