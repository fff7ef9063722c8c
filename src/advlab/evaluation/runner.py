"""The evaluation runner: (model × attacks × ε) → rows, through a resumable results store.

Fixed-budget attacks run once per ε. Minimal-perturbation attacks (``minimal=True``) run once
with ε = inf and are scored at every ε of the sweep from their per-example distance. Attacks that
ignore the budget (``bounded=False``, e.g. the negative image) run once and give one row. A final
``worst-case`` row per ε counts an example as broken if any bounded attack broke it at that ε.
Every number is computed by :mod:`advlab.evaluation.metrics` from the model's own prediction on
the returned x_adv, never from an attack's own success flag.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab._checks import check_choice, check_positive_int
from advlab._version import __version__
from advlab.attacks import AttackInfo, get_attack, list_attacks
from advlab.evaluation.checks import run_checks
from advlab.evaluation.metrics import (
    mean_or_none,
    median_or_none,
    outcome_at_eps,
    perturbation_norms,
    topk_correct,
)
from advlab.results.store import Store
from advlab.threat import ThreatModel

DEFAULT_ATTACKS = ("noise", "semantic", "fgsm", "bim", "pgd", "deepfool", "cw")
DEFAULT_EPS: dict[str, tuple[float, ...]] = {
    "linf": (0.1, 0.2, 0.3),
    "l2": (1.0, 1.5, 2.0),
    "l1": (5.0, 10.0, 15.0),
    "l0": (5.0, 10.0, 20.0),
}
LINF_STEP = 0.01  # BIM/PGD step for L∞ (the classic 40 × 0.01 schedule); other norms: 2.5·ε/steps
# Budgets advlab evaluate uses by default (documented in docs/evaluation.md); user params override.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "bim": {"steps": 40, "early_stop": True},
    "pgd": {"steps": 40, "early_stop": True},
    "deepfool": {"steps": 50, "overshoot": 0.02},
    "cw": {"steps": 100, "binary_search_steps": 5, "lr": 0.1},
    "square": {"max_queries": 1000},
    "hopskipjump": {"max_queries": 1000},
    "apgd-ensemble": {"max_queries": 1000},
}
# ... and per (attack, norm): the classic 40 × 0.01 L∞ schedule of BIM/PGD (other norms: 2.5·ε/steps)
DEFAULT_NORM_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("bim", "linf"): {"step_size": LINF_STEP},
    ("pgd", "linf"): {"step_size": LINF_STEP},
}
# what evaluate adds when a gradient-masking check fires: the attack registered as adaptive
ADAPTIVE = next(name for name in list_attacks() if get_attack(name).adaptive)
CONTRACT_KEYS = (
    "attack", "dataset", "model", "norm", "eps", "n", "acc1_adv", "acc5_adv", "acc1_clean", "acc5_clean",
    "success_rate", "median_l0", "median_l1", "median_l2", "median_linf", "mean_queries", "seconds", "seed",
)
N_EXAMPLES = 6  # examples per job kept in the store for the report's figures


@dataclass
class Row:
    """One row of the robustness table (the JSON keys are a public contract)."""

    attack: str
    dataset: str
    model: str
    norm: str
    eps: float | None
    n: int
    acc1_adv: float
    acc5_adv: float
    acc1_clean: float
    acc5_clean: float
    success_rate: float
    median_l0: float | None
    median_l1: float | None
    median_l2: float | None
    median_linf: float | None
    mean_queries: float | None
    seconds: float
    seed: int
    warnings: list[str] = field(default_factory=list)
    strongest: str | None = None  # worst-case rows: the attack with the lowest Acc@1 at this ε

    def as_dict(self) -> dict[str, Any]:
        """The contract keys only."""
        d = asdict(self)
        return {k: d[k] for k in CONTRACT_KEYS}


@dataclass(frozen=True)
class Job:
    """One attack run over all batches, at a norm and a budget.

    The budget is inf for minimal-perturbation attacks and None for attacks that ignore it.
    """

    attack: str
    norm: str
    eps: float | None
    sweep: tuple[float, ...]

    @property
    def key(self) -> str:
        """Stable identifier in the store."""
        return f"{self.attack}|{self.norm}|{self.eps!r}"


def plan_jobs(attacks: Sequence[str], norm: str, eps: Sequence[float]) -> list[Job]:
    """The jobs of a sweep.

    An attack that does not support ``norm`` runs at its first norm with that norm's default sweep.
    """
    jobs = []
    for name in attacks:
        info = get_attack(name)
        a_norm = norm if norm in info.norms else info.norms[0]
        sweep = tuple(eps) if a_norm == norm else DEFAULT_EPS[a_norm]
        if info.minimal:
            jobs.append(Job(info.name, a_norm, math.inf, sweep))
        elif not info.bounded:
            jobs.append(Job(info.name, a_norm, None, sweep))
        else:
            jobs.extend(Job(info.name, a_norm, float(e), sweep) for e in sweep)
    return jobs


def attack_params(info: AttackInfo, job: Job, user: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parameters an attack runs with in the evaluation."""
    return {**DEFAULT_PARAMS.get(info.name, {}), **DEFAULT_NORM_PARAMS.get((info.name, job.norm), {}),
            **user.get(info.name, {})}


def batch_seed(seed: int, job_key: str, batch: int) -> int:
    """A seed derived from (seed, job, batch): a resumed batch draws what it drew the first time."""
    digest = hashlib.sha256(f"{seed}|{job_key}|{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ConfigMismatchError(ValueError):
    """The output directory holds results of a different configuration."""


@dataclass
class Evaluation:
    """The result of :func:`evaluate`: rows, configuration and where the store lives."""

    rows: list[Row]
    config: dict[str, Any]
    store_path: Path | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as dicts with exactly the contract keys."""
        return [r.as_dict() for r in self.rows]

    def to_markdown(self) -> str:
        """The robustness table as Markdown."""
        return format_table(self.rows, markdown=True)

    def __str__(self) -> str:
        return format_table(self.rows, markdown=False)

    def save(self, directory: str | Path) -> None:
        """Write ``results.json`` and ``results.csv`` (contract keys) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        records = self.to_records()
        (d / "results.json").write_text(json.dumps(records, indent=2) + "\n")
        with (d / "results.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(CONTRACT_KEYS))
            w.writeheader()
            w.writerows(records)
        if self.checks:
            (d / "checks.json").write_text(json.dumps(self.checks, indent=2) + "\n")


def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def eps_label(row: Row) -> str:
    """The threat model of a row as text, e.g. ``0.3 (linf)``."""
    return f"— ({row.norm}, unbounded)" if row.eps is None else f"{row.eps:g} ({row.norm})"


def format_table(rows: Sequence[Row], markdown: bool, show_model: bool = False) -> str:
    """The robustness table as text or Markdown.

    Columns: Attack | Dataset | ε (norm) | Acc@1 w/ | Acc@5 w/ | Acc@1 w/o | Acc@5 w/o | success |
    median L0/L1/L2/L∞ | queries | time.
    """
    head = ["Model"] * show_model + [
        "Attack", "Dataset", "ε (norm)", "Acc@1 w/", "Acc@5 w/", "Acc@1 w/o", "Acc@5 w/o", "success", "med L0",
        "med L1", "med L2", "med L∞", "queries", "time (s)"]
    body = []
    for r in rows:
        name = r.attack + (f" [{r.strongest}]" if r.strongest else "") + (" ⚠" if r.warnings else "")
        body.append([r.model] * show_model + [
                     name, r.dataset, eps_label(r), _fmt(r.acc1_adv), _fmt(r.acc5_adv), _fmt(r.acc1_clean),
                     _fmt(r.acc5_clean), _fmt(r.success_rate), _fmt(r.median_l0, 0), _fmt(r.median_l1, 2),
                     _fmt(r.median_l2), _fmt(r.median_linf), _fmt(r.mean_queries, 0), _fmt(r.seconds, 1)])
    flagged: dict[str, list[str]] = {}
    for r in rows:
        for w in r.warnings:
            flagged.setdefault(w, []).append(f"{r.attack} at {eps_label(r)}")
    notes = [f"⚠ {w} — affects {', '.join(where)}" for w, where in flagged.items()]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines + notes)


def format_comparison(rows: Sequence[Row], baseline: Sequence[Row], markdown: bool = False) -> str:
    """The table with each of ``baseline``'s rows right after the model's row of the same (attack, norm, ε)."""
    key = lambda r: (r.attack, r.norm, r.eps)  # noqa: E731
    base = {key(r): r for r in baseline}
    merged: list[Row] = []
    for r in rows:
        merged.append(r)
        if key(r) in base:
            merged.append(base.pop(key(r)))
    merged += list(base.values())
    return format_table(merged, markdown, show_model=True)


def _resolve_model(model: nn.Module | str) -> tuple[nn.Module, str]:
    if isinstance(model, str):
        from advlab.models import load_model

        return load_model(model), model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module or a model name/path, got {type(model).__name__}")
    return model, type(model).__name__


def _resolve_data(
    data: str | tuple[torch.Tensor, torch.Tensor], data_dir: str | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    if isinstance(data, str):
        from advlab.data import load_dataset

        x, y = load_dataset(data, "test", root=data_dir)
        return x, y, data
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError("data: expected a dataset name or a tuple (x, y) of tensors")
    x, y = data
    return x, y, "tensors"


def _validate_eps(norm: str, eps: Sequence[float], bounds: tuple[float, float]) -> tuple[float, ...]:
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


def environment() -> dict[str, Any]:
    """Versions and machine, saved with every result."""
    return {
        "advlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "threads": torch.get_num_threads(),
    }


def evaluate(
    model: nn.Module | str,
    data: str | tuple[torch.Tensor, torch.Tensor] = "mnist",
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    eps: Sequence[float] | None = None,
    *,
    norm: str = "linf",
    n: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    out: str | Path | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    progress: bool = True,
    force: bool = False,
    model_name: str | None = None,
    data_dir: str | None = None,
    command: str | None = None,
    examples_per_job: int = N_EXAMPLES,
    checks: bool = True,
    check_n: int = 200,
) -> Evaluation:
    """Evaluate a model's robustness against attacks over a sweep of budgets.

    Args:
        model: A torch model (logits) or a pretrained name / checkpoint path.
        data: A dataset name (its test split is used) or a tuple ``(x, y)``.
        attacks: Registered attack names.
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
        check_n: Subset size of the checks.

    Returns:
        An :class:`Evaluation` with one row per (attack, ε) and a ``worst-case`` row per ε.

    Example:
        >>> import advlab
        >>> ev = advlab.evaluate("lenet-mnist", "mnist", ["fgsm"], [0.1], n=100, progress=False)
        >>> [(r.attack, r.eps, r.n) for r in ev.rows]
        [('fgsm', 0.1, 100), ('worst-case', 0.1, 100)]
    """
    check_choice("norm", norm, ("linf", "l2", "l1", "l0"))
    check_positive_int("batch_size", batch_size)
    net, default_name = _resolve_model(model)
    x, y, dataset = _resolve_data(data, data_dir)
    if n is not None:
        check_positive_int("n", n)
        x, y = x[:n], y[:n]
    sweep = _validate_eps(norm, eps if eps is not None else DEFAULT_EPS[norm], bounds)
    attacks = [get_attack(a).name for a in attacks]  # unknown names fail here, with suggestions
    if not attacks:
        raise ValueError("attacks: expected at least one attack name")
    params = {k: dict(v) for k, v in (params or {}).items()}
    for k in params:
        get_attack(k)
    jobs = plan_jobs(attacks, norm, sweep)
    config: dict[str, Any] = {
        "model": model_name or default_name, "dataset": dataset, "n": len(y), "batch_size": batch_size,
        "seed": seed, "attacks": attacks, "norm": norm, "eps": list(sweep), "bounds": list(bounds),
        "params": params, "checks": bool(checks) and norm in ("linf", "l2"),
        # the parameters each attack actually runs with, so a change of advlab's defaults is noticed
        "effective_params": {j.key: attack_params(get_attack(j.attack), j, params) for j in jobs},
    }
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="advlab-eval-")
        store_dir = Path(tmp.name)
    else:
        store_dir = Path(out)
        store_dir.mkdir(parents=True, exist_ok=True)
    store = Store(store_dir / "results.sqlite")
    try:
        stored = store.get_config()
        if stored is not None and stored != config:
            if not force:
                changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
                raise ConfigMismatchError(
                    f"out: {store_dir} holds results of a different configuration (differs in "
                    f"{', '.join(changed)}); use another directory or --force to replace them"
                )
            store.close()
            (store_dir / "results.sqlite").unlink()
            store = Store(store_dir / "results.sqlite")
        store.set_config(config)
        env = environment()
        store.set_meta("environment", env)
        store.set_meta("command", command)
        _run(net, x, y, bounds, jobs, params, config, store, progress, examples_per_job)
        if config["checks"]:
            _run_checks(net, x, y, bounds, sweep, params, config, store, progress, examples_per_job, check_n)
        rows = compute_rows(store, config)
        check_results = store.get_meta("checks") or []
    finally:
        store.close()
    ev = Evaluation(rows, config, None if tmp else store_dir / "results.sqlite", env, check_results)
    if tmp is not None:
        tmp.cleanup()
    return ev


def _run_checks(net: nn.Module, x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float],
                sweep: tuple[float, ...], params: dict[str, dict[str, Any]], config: dict[str, Any], store: Store,
                progress: bool, keep: int, check_n: int) -> None:
    """The gradient-masking checks (once; stored), then the adaptive attack if any fired."""
    results = store.get_meta("checks")
    if results is None:
        found = run_checks(net, x, y, config["norm"], max(sweep), bounds=bounds, n=check_n, seed=config["seed"])
        results = [{**r.as_dict(), "message": r.message} for r in found]
        store.set_meta("checks", results)
    fired = [r for r in results if r["fired"]]
    if fired and ADAPTIVE not in config["attacks"]:
        store.set_meta("adaptive", [ADAPTIVE])
        _run(net, x, y, bounds, plan_jobs([ADAPTIVE], config["norm"], sweep), params, config, store, progress, keep)


def _run(net: nn.Module, x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float], jobs: list[Job],
         params: dict[str, dict[str, Any]], config: dict[str, Any], store: Store, progress: bool,
         keep: int) -> None:
    n, bs = len(y), config["batch_size"]
    nb = math.ceil(n / bs)
    if not store.has_clean(n):
        with torch.no_grad():
            logits = torch.cat([net(x[i : i + bs]) for i in range(0, n, bs)])
        prob = logits.softmax(dim=1)
        store.put_clean(y, topk_correct(logits, y, 1), topk_correct(logits, y, 5), logits.argmax(1),
                        prob.amax(dim=1))
    todo = [(job, b) for job in jobs for b in sorted(set(range(nb)) - store.done_batches(job.key))]
    bar = tqdm(total=len(jobs) * nb, initial=len(jobs) * nb - len(todo), desc="evaluate", unit="batch",
               disable=not progress, dynamic_ncols=True)
    for job, b in todo:
        info = get_attack(job.attack)
        bar.set_postfix_str(f"{job.attack} {'' if job.eps is None else job.eps}")
        threat = ThreatModel(job.norm, math.inf if job.eps is None else job.eps, bounds=bounds)  # type: ignore[arg-type]
        sl = slice(b * bs, min(n, (b + 1) * bs))
        xb, yb = x[sl], y[sl]
        gen = torch.Generator().manual_seed(batch_seed(config["seed"], job.key, b))
        t0 = time.perf_counter()
        res = info(net, xb, yb, threat, generator=gen, **attack_params(info, job, params))
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            logits = net(res.x_adv)
        pred = logits.argmax(dim=1)
        norms = perturbation_norms(xb, res.x_adv)
        queries = res.queries.tolist() if res.queries is not None else [None] * len(yb)
        outcome = {
            "adv": (pred != yb).int().tolist(), "top1": topk_correct(logits, yb, 1).int().tolist(),
            "top5": topk_correct(logits, yb, 5).int().tolist(), "pred": pred.tolist(),
            "conf": logits.softmax(dim=1).amax(dim=1).tolist(),
            **{k: v.tolist() for k, v in norms.items()}, "queries": queries,
        }
        examples = [(i, x[i].numpy(), res.x_adv[i - sl.start].detach().numpy())
                    for i in range(sl.start, min(sl.stop, keep))]
        store.put_batch(job.key, b, seconds, list(range(sl.start, sl.stop)), outcome, examples)
        bar.update(1)
    bar.close()


def compute_rows(store: Store, config: dict[str, Any]) -> list[Row]:
    """The table's rows, computed from the store alone."""
    clean = store.clean()
    n = len(clean["label"])
    acc1_clean = float(clean["top1"].double().mean())
    acc5_clean = float(clean["top5"].double().mean())
    n_correct = int(clean["top1"].sum())
    jobs = plan_jobs(config["attacks"], config["norm"], config["eps"])
    jobs += plan_jobs(store.get_meta("adaptive") or [], config["norm"], config["eps"])
    fired = [c["message"] for c in (store.get_meta("checks") or []) if c["fired"]]
    rows: list[Row] = []
    worst: dict[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = {}

    def make(attack: str, norm: str, eps: float | None, broken: torch.Tensor, top1: torch.Tensor,
             top5: torch.Tensor, o: dict[str, torch.Tensor] | None, seconds: float) -> Row:
        med = {k: median_or_none(o[k][broken]) if o is not None else None for k in ("l0", "l1", "l2", "linf")}
        q = o["queries"][~torch.isnan(o["queries"])] if o is not None else torch.empty(0)
        return Row(attack, config["dataset"], config["model"], norm, eps, n, float(top1.double().mean()),
                   float(top5.double().mean()), acc1_clean, acc5_clean,
                   int(broken.sum()) / n_correct if n_correct else 0.0, med["l0"], med["l1"], med["l2"],
                   med["linf"], mean_or_none(q), seconds, config["seed"])

    for job in jobs:
        o = store.outcomes(job.key)
        if len(o["idx"]) != n:
            raise RuntimeError(f"store: job {job.key} has {len(o['idx'])} of {n} outcomes; re-run to finish it")
        seconds = store.seconds(job.key)
        dist = o[job.norm]
        budgets: list[float | None] = list(job.sweep) if job.eps == math.inf else [job.eps]
        for e in budgets:
            scored_eps = e if job.eps == math.inf else None
            broken, top1, top5 = outcome_at_eps(o["adv"], dist, scored_eps, o["top1"], o["top5"],
                                                clean["top1"], clean["top5"])
            row = make(job.attack, job.norm, e, broken, top1, top5, o, seconds)
            if fired and get_attack(job.attack).maskable and e == max(config["eps"]) and job.norm == config["norm"]:
                row.warnings = list(fired)
            rows.append(row)
            if e is not None and job.norm == config["norm"]:
                prev = worst.get(e)
                if prev is None:
                    worst[e] = (broken, top1, top5, seconds)
                else:
                    worst[e] = (prev[0] | broken, prev[1] & top1, prev[2] & top5, prev[3] + seconds)
    for e in sorted(worst):
        broken, top1, top5, seconds = worst[e]
        row = make("worst-case", config["norm"], e, broken, top1, top5, None, seconds)
        at_e = [r for r in rows if r.eps == e and r.norm == config["norm"]]
        if at_e:
            row.strongest = min(at_e, key=lambda r: r.acc1_adv).attack
        rows.append(row)
    return rows
