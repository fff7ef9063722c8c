"""Transfer attacks: a substitute model trained from label queries, and the transferability matrix.

* :func:`train_substitute` — Papernot, McDaniel, Goodfellow, Jha, Celik and Swami, "Practical
  black-box attacks against machine learning", AsiaCCS 2017, https://arxiv.org/abs/1602.02697:
  label a small seed set by querying the target, train a substitute, grow the set by
  Jacobian-based dataset augmentation (x + λ·sign(∇ₓ F_{O(x)}(x))), and repeat. Every label
  query to the target is counted.
* :func:`substitute_attack` — attack the substitute white-box (FGSM, PGD, … by registry name)
  and apply the examples to the target.
* :func:`transfer_matrix` — adversarial examples crafted on each differentiable source model,
  evaluated on every target model (torch models or any :class:`~advlab.blackbox.BlackBox`, e.g.
  a scikit-learn model seen only through its predict function).
* :func:`train_half` — one architecture trained on one of two disjoint halves of the MNIST
  training split, for transferability across training sets.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advlab._checks import check_choice, check_nonneg, check_positive_int
from advlab.attacks import get_attack
from advlab.attacks.losses import loss_grad
from advlab.blackbox import BlackBox, as_blackbox
from advlab.data import dataset_info, load_dataset
from advlab.models import create_model
from advlab.threat import ThreatModel
from advlab.train import TrainConfig, TrainingDefense, TrainResult, fit

Model = Callable[[torch.Tensor], torch.Tensor]

HALVES = ("a", "b")
HALF_SPLIT_SEED = 1234  # the fixed permutation that splits MNIST train into halves a and b


def half_indices(n: int, half: str) -> torch.Tensor:
    """Indices of training half ``"a"`` or ``"b"``: disjoint, together all ``n`` examples."""
    check_choice("half", half, HALVES)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HALF_SPLIT_SEED))
    return order[: n // 2] if half == "a" else order[n // 2 :]


def train_half(
    half: str,
    *,
    arch: str = "lenet",
    dataset: str = "mnist",
    config: TrainConfig | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``arch`` on training half ``half`` of ``dataset`` (the halves are disjoint).

    The test accuracy is measured on the full test split.
    """
    info = dataset_info(dataset)
    x, y = load_dataset(dataset, "train")
    idx = half_indices(len(x), half)
    test = load_dataset(dataset, "test")
    model = create_model(arch, in_shape=info.shape, num_classes=info.num_classes)
    return fit(model, (x[idx], y[idx]), test, config or TrainConfig(), progress=progress)


# ----------------------------------------------------------------------------------------------
# Substitute training (Papernot et al. 2017)


@dataclass
class SubstituteResult:
    """A trained substitute and what it cost.

    Attributes:
        model: The substitute (frozen, eval mode).
        queries: Label queries made to the target (one per training point).
        train_size: Final size of the substitute's training set.
        history: Per round: ``round``, ``size`` (training points), ``queries`` (cumulative) and
            ``agreement`` (substitute vs target labels on ``eval_x``, if given).
        x_train: The final training set (seed points and their augmentations).
        y_train: The target's labels for ``x_train``.
    """

    model: nn.Module
    queries: int
    train_size: int
    history: list[dict[str, float]] = field(default_factory=list)
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None


def seed_set(x: torch.Tensor, y: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` examples of each class (a balanced seed set)."""
    check_positive_int("per_class", per_class)
    picks = [(y == c).nonzero().squeeze(1)[:per_class] for c in torch.unique(y).tolist()]
    return torch.cat(picks).sort().values


def jacobian_augment(
    substitute: Model, x: torch.Tensor, labels: torch.Tensor, lam: float,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """New points x + λ·sign(∇ₓ F_label(x)) (clipped to ``bounds``): Jacobian augmentation.

    F is the substitute's softmax output; its gradient has the sign of ∇ₓ log F_label(x), the
    gradient of the log-softmax, which is what is computed.
    """

    def log_prob_of(logits: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        return logits.log_softmax(dim=1).gather(1, lab[:, None]).squeeze(1)

    _, grad, _ = loss_grad(substitute, x, labels, log_prob_of)
    return (x + lam * grad.sign()).clamp(*bounds)


def train_substitute(
    target: Any,
    seed_x: torch.Tensor,
    *,
    arch: str = "lenet",
    rounds: int = 6,
    lam: float = 0.1,
    tau: int = 3,
    config: TrainConfig | None = None,
    eval_x: torch.Tensor | None = None,
    num_classes: int = 10,
    bounds: tuple[float, float] = (0.0, 1.0),
    max_queries: int | None = None,
    min_steps: int = 500,
    defense: TrainingDefense | None = None,
) -> SubstituteResult:
    """Train a substitute of a labels-only target by Jacobian-based dataset augmentation.

    Papernot et al. 2017, https://arxiv.org/abs/1602.02697. Black-box: only the target's labels
    are used. Round 0 labels the seed set; each of ``rounds`` further rounds doubles the set
    with x + λ_ρ·sign(∇ₓ F_{O(x)}(x)) and labels only the new points, so the target answers
    ``len(seed_x) · 2**rounds`` label queries in all. The step's sign flips every ``tau``
    rounds (λ_ρ = λ·(−1)^⌊ρ/τ⌋), as in the paper, so the set does not drift off the data.

    Args:
        target: The target: a :class:`~advlab.blackbox.BlackBox` (labels suffice) or a torch
            model (only its argmax is used).
        seed_x: The attacker's initial unlabelled inputs.
        arch: Substitute architecture (advlab model registry).
        rounds: Augmentation rounds ρ.
        lam: Augmentation step λ.
        tau: Rounds between sign flips of λ.
        config: Training of the substitute at every round (from scratch, seeded).
        min_steps: Train each round for at least this many gradient steps (more epochs on
            the small early sets, which ``config.epochs`` alone would leave under-trained).
        eval_x: Held-out inputs on which the substitute's agreement with the target is
            reported per round (these evaluation queries are not counted as the attacker's).
        num_classes: Number of classes of the target.
        bounds: Input bounds.
        max_queries: Refuse to start if the schedule needs more label queries than this.
        defense: A training defense for the substitute (None: plain cross-entropy). Light
            adversarial training (e.g. PGD at ε = 0.1) costs no queries and makes the
            substitute's adversarial directions transfer far better (measured on lenet-mnist:
            see docs/benchmarks.md, "Black-box"; Springer, Mitchell, Kenyon, "A little robustness
            goes a long way", NeurIPS 2021, report the same effect for slightly robust surrogates).

    Returns:
        The substitute, the label queries spent and the per-round history.
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds: expected an integer >= 0, got {rounds!r}")
    check_nonneg("lam", lam)
    check_positive_int("tau", tau)
    box = as_blackbox(target)
    needed = len(seed_x) * 2**rounds
    if max_queries is not None and needed > max_queries:
        raise ValueError(
            f"max_queries: {len(seed_x)} seed points and {rounds} rounds need {needed} label "
            f"queries, more than {max_queries}"
        )
    config = config or TrainConfig(epochs=10, batch_size=32, lr=2e-3)
    shape = tuple(seed_x.shape[1:])
    spent = 0  # the attacker's label queries (evaluation queries on eval_x are not counted)

    def label(batch: torch.Tensor) -> torch.Tensor:
        nonlocal spent
        before = box.total_queries
        out = box.labels(batch)
        spent += box.total_queries - before
        return out

    xs = seed_x.detach().clone()
    ys = label(xs)
    eval_labels = _labels(box, eval_x) if eval_x is not None else None
    history: list[dict[str, float]] = []
    model: nn.Module = create_model(arch, in_shape=shape, num_classes=num_classes)
    for rho in range(rounds + 1):
        model = create_model(arch, in_shape=shape, num_classes=num_classes)
        steps_per_epoch = math.ceil(len(xs) / config.batch_size)
        epochs = max(config.epochs, math.ceil(min_steps / steps_per_epoch))
        cfg = TrainConfig(**{**asdict(config), "seed": config.seed + rho, "epochs": epochs})
        fit(model, (xs, ys), None, cfg, progress=False, defense=defense)
        row: dict[str, float] = {
            "round": rho, "size": len(xs), "queries": spent,
        }
        if eval_x is not None and eval_labels is not None:
            with torch.no_grad():
                pred = torch.cat([model(eval_x[i : i + 1000]).argmax(1)
                                  for i in range(0, len(eval_x), 1000)])
            row["agreement"] = float((pred == eval_labels).float().mean())
        history.append(row)
        if rho == rounds:
            break
        step = lam * (-1) ** (rho // tau)
        new_x = torch.cat([jacobian_augment(model, xs[i : i + 1000], ys[i : i + 1000], step, bounds)
                           for i in range(0, len(xs), 1000)])
        new_y = label(new_x)
        xs, ys = torch.cat([xs, new_x]), torch.cat([ys, new_y])
    return SubstituteResult(model, spent, len(xs), history, xs, ys)


@dataclass
class TransferOutcome:
    """The substitute attack's result on the target.

    Attributes:
        x_adv: Examples crafted on the substitute.
        target_acc_clean: Target Acc@1 on the clean inputs.
        target_acc_adv: Target Acc@1 on ``x_adv``.
        success: Fraction of inputs the target classifies correctly whose adversarial version
            it misclassifies (transfer success).
        agreement: Substitute vs target labels on the clean inputs.
    """

    x_adv: torch.Tensor
    target_acc_clean: float
    target_acc_adv: float
    success: float
    agreement: float


def _labels(model: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels of a torch model or a BlackBox, in batches, without gradients."""
    chunks = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    if isinstance(model, BlackBox):
        return torch.cat([model.labels(c) for c in chunks])
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in chunks])


def _craft(
    source: Model, x: torch.Tensor, y: torch.Tensor, attack: str, threat: ThreatModel,
    seed: int, batch_size: int, params: dict[str, Any],
) -> torch.Tensor:
    info = get_attack(attack)
    gen = torch.Generator().manual_seed(seed)
    out = [info(source, x[i : i + batch_size], y[i : i + batch_size], threat,
                generator=gen, **params).x_adv for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def substitute_attack(
    substitute: Model,
    target: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    attack: str = "pgd",
    seed: int = 0,
    batch_size: int = 500,
    **params: Any,
) -> TransferOutcome:
    """Craft adversarial examples on ``substitute`` (white-box) and measure them on ``target``."""
    x_adv = _craft(substitute, x, y, attack, threat, seed, batch_size, params)
    clean = _labels(target, x)
    adv = _labels(target, x_adv)
    sub = _labels(substitute, x)
    correct = clean == y
    return TransferOutcome(
        x_adv,
        float(correct.float().mean()),
        float((adv == y).float().mean()),
        float((adv[correct] != y[correct]).float().mean()) if bool(correct.any()) else math.nan,
        float((sub == clean).float().mean()),
    )


# ----------------------------------------------------------------------------------------------
# The transferability matrix


@dataclass
class TransferMatrix:
    """Transfer success of adversarial examples from each source (rows) to each target (columns).

    ``success[i][j]`` is the fraction of the inputs that target j classifies correctly whose
    adversarial version crafted on source i it misclassifies; ``None`` where source i cannot
    craft (a non-differentiable model is a target only). The diagonal is the white-box success.
    """

    sources: list[str]
    targets: list[str]
    success: list[list[float | None]]
    adv_acc: list[list[float | None]]
    clean_acc: list[float]
    attack: str
    norm: str
    eps: float
    n: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The matrix and its settings as JSON."""
        return json.dumps(asdict(self), indent=2)

    def to_markdown(self) -> str:
        """A Markdown table: rows are sources, columns targets; cells are transfer success."""
        head = f"| source \\ target | {' | '.join(f'`{t}`' for t in self.targets)} |"
        sep = "|---|" + "---|" * len(self.targets)
        rows = [head, sep]
        for s, row in zip(self.sources, self.success, strict=True):
            cells = ["—" if v is None else f"{v:.3f}" for v in row]
            rows.append(f"| `{s}` | {' | '.join(cells)} |")
        rows.append(f"| *clean Acc@1* | {' | '.join(f'{a:.3f}' for a in self.clean_acc)} |")
        caption = (
            f"Transfer success of {self.attack} ({self.norm}, ε={self.eps:g}, {self.n} test "
            f"images, seed {self.seed}): fraction of the images a target classifies correctly "
            "whose adversarial version, crafted on the source, it misclassifies. "
            "Diagonal: white-box. — : target-only model (not differentiable)."
        )
        return caption + "\n\n" + "\n".join(rows) + "\n"

    def heatmap_png(self) -> bytes:
        """A heat-map of the matrix as PNG bytes (matplotlib, Agg backend)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        import numpy as np

        data = np.array([[np.nan if v is None else v for v in row] for row in self.success])
        fig, ax = plt.subplots(figsize=(1.3 * len(self.targets) + 2.5, 0.7 * len(self.sources) + 2))
        im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(self.targets)), self.targets, rotation=30, ha="right")
        ax.set_yticks(range(len(self.sources)), self.sources)
        ax.set_xlabel("target model")
        ax.set_ylabel("source model (crafted on)")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                        color="white" if np.isnan(v) or v < 0.6 else "black", fontsize=9)
        ax.set_title(f"Transfer success: {self.attack} {self.norm} ε={self.eps:g}, n={self.n}")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        return buf.getvalue()

    def to_html(self, png: bytes | None = None) -> str:
        """A small self-contained HTML page: the heat-map (embedded) and the table."""
        png = png if png is not None else self.heatmap_png()
        img = base64.b64encode(png).decode("ascii")
        head = "".join(f"<th>{html.escape(t)}</th>" for t in self.targets)
        body = []
        for s, row in zip(self.sources, self.success, strict=True):
            cells = "".join(
                "<td>—</td>" if v is None
                else f'<td style="background:rgba(220,50,47,{v:.2f})">{v:.3f}</td>'
                for v in row
            )
            body.append(f"<tr><th>{html.escape(s)}</th>{cells}</tr>")
        clean = "".join(f"<td>{a:.3f}</td>" for a in self.clean_acc)
        body.append(f"<tr><th><i>clean Acc@1</i></th>{clean}</tr>")
        title = f"advlab transferability: {self.attack} {self.norm} ε={self.eps:g}"
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;"
            "text-align:center}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f"<p>{self.n} test images, seed {self.seed}. Cell: fraction of the images the "
            "target (column) classifies correctly whose adversarial version crafted on the source "
            "(row) it misclassifies. Diagonal: white-box success. —: target-only model "
            "(not differentiable; attacked only through its predict function).</p>"
            f"<img alt='transfer heat-map' src='data:image/png;base64,{img}'>"
            f"<table><tr><th>source \\ target</th>{head}</tr>{''.join(body)}</table>"
            "</body></html>\n"
        )


def transfer_matrix(
    models: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    attack: str = "pgd",
    seed: int = 0,
    batch_size: int = 500,
    sources: Sequence[str] | None = None,
    **params: Any,
) -> TransferMatrix:
    """Craft on every differentiable model, evaluate on every model.

    Args:
        models: Name → torch model (source and target) or :class:`~advlab.blackbox.BlackBox`
            (target only).
        x: Clean inputs.
        y: True labels.
        threat: Threat model of the crafting attack.
        attack: Registry name of a white-box attack (``"pgd"``, ``"fgsm"``, …).
        seed: Seed of the attack's generator (the same for every source).
        batch_size: Examples per attack call.
        sources: Names that craft (default: every model that is not a BlackBox).
        **params: Extra attack parameters.

    Returns:
        The :class:`TransferMatrix`.
    """
    if not models:
        raise ValueError("models: expected at least one model")
    names = list(models)
    if sources is None:
        sources = [n for n in names if not isinstance(models[n], BlackBox)]
    for s in sources:
        if s not in models:
            raise ValueError(f"sources: {s!r} is not among the models")
    clean = {t: _labels(models[t], x) == y for t in names}
    success: list[list[float | None]] = []
    adv_acc: list[list[float | None]] = []
    for s in names:
        if s not in sources or isinstance(models[s], BlackBox):
            success.append([None] * len(names))
            adv_acc.append([None] * len(names))
            continue
        x_adv = _craft(models[s], x, y, attack, threat, seed, batch_size, params)
        row_s: list[float | None] = []
        row_a: list[float | None] = []
        for t in names:
            ok = _labels(models[t], x_adv) == y
            c = clean[t]
            row_s.append(float((~ok[c]).float().mean()) if bool(c.any()) else math.nan)
            row_a.append(float(ok.float().mean()))
        success.append(row_s)
        adv_acc.append(row_a)
    return TransferMatrix(
        names, names, success, adv_acc, [float(clean[t].float().mean()) for t in names],
        attack, threat.norm, threat.eps, len(x), seed, dict(params),
    )


def load_any(name: str) -> Any:
    """A model by name: a scikit-learn target (``sklearn-*``, a BlackBox) or an advlab model."""
    from advlab.models import load_model
    from advlab.sklearn_models import is_sklearn_model, load_sklearn_model

    if is_sklearn_model(name):
        return load_sklearn_model(name)
    return load_model(name)


__all__ = [
    "HALVES", "SubstituteResult", "TransferMatrix", "TransferOutcome", "half_indices",
    "jacobian_augment", "load_any", "seed_set", "substitute_attack", "train_half",
    "train_substitute", "transfer_matrix",
]
