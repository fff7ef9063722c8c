"""The black-box model interface: any predict function, queries counted per example.

A :class:`BlackBox` wraps a callable that maps a batch of inputs (a torch tensor or a numpy
array) to scores (logits or probabilities, N×K) or to labels only (N). It never needs or takes
gradients. It counts every input row it sends to the callable (``total_queries``) and, through a
:class:`QuerySession`, every query per example of an attack's batch, refusing any query beyond an
optional per-example budget. A torch ``nn.Module`` (or any callable returning logits) is wrapped
with :func:`as_blackbox`, so every black-box attack runs unchanged on white-box models,
scikit-learn estimators, ONNX Runtime sessions or remote services.

Example:
    >>> import numpy as np, torch
    >>> calls = []
    >>> def predict(batch):  # a numpy predict function that counts its own rows
    ...     calls.append(len(batch))
    ...     return (batch.reshape(len(batch), -1).mean(axis=1) > 0.5).astype(np.int64)
    >>> bb = BlackBox(predict, output="labels", input_format="numpy")
    >>> session = bb.session(3, max_queries=2)
    >>> session.labels(torch.zeros(3, 1, 2, 2)).tolist()
    [0, 0, 0]
    >>> session.labels(torch.ones(2, 1, 2, 2), idx=torch.tensor([0, 2])).tolist()
    [1, 1]
    >>> session.queries.tolist(), bb.total_queries, sum(calls)
    ([2, 1, 2], 5, 5)
    >>> session.remaining.tolist()
    [0, 1, 0]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from advlab._checks import check_choice, check_positive_int
from advlab._deprecation import caller_level

Output = Literal["logits", "probs", "labels"]
OUTPUTS: tuple[str, ...] = ("logits", "probs", "labels")
InputFormat = Literal["torch", "numpy"]


class ModelReturnsProbabilities(UserWarning):
    """The model returns probabilities (a softmax): advlab attacks their logarithm, which has the logits' margins."""


PROBABILITY_ATOL = 1e-3  # |row sum − 1| within this on every row (float32 softmax: ~1e-7·classes)


def row_sums(out: torch.Tensor) -> torch.Tensor | None:
    """Each row's sum (in float64) where every entry of ``out`` is ≥ 0, else None (not a distribution's rows)."""
    o = out.double()
    return o.sum(dim=1) if bool((o >= 0).all()) else None


def is_probabilities(out: torch.Tensor) -> bool:
    """Whether ``out`` (N×K, K ≥ 2) is rows of probabilities: non-negative, each summing to 1 within tolerance.

    The tolerance is :data:`PROBABILITY_ATOL`. Read by the white-box guard on a probe and by a
    :class:`BlackBox` declared ``output="logits"`` on its first scores.
    """
    if out.dim() != 2 or out.shape[1] < 2 or not out.is_floating_point() or len(out) == 0:
        return False
    sums = row_sums(out)
    return sums is not None and bool(((sums - 1).abs() <= PROBABILITY_ATOL).all())


class QueryBudgetExceeded(RuntimeError):
    """An attack asked for a query beyond an example's budget."""


class BlackBox:
    """A model seen only through its outputs; counts queries and never takes gradients.

    Args:
        fn: Callable mapping a batch N×… to scores N×K (``output="logits"`` or ``"probs"``) or to
            labels N (``output="labels"``; an N×K output is reduced by argmax). It may return a
            torch tensor, a numpy array or anything ``numpy.asarray`` accepts.
        output: What ``fn`` returns: ``"logits"``, ``"probs"`` (probabilities) or ``"labels"``.
        input_format: ``"torch"`` to pass a float32 tensor (on the attacked batch's device) or
            ``"numpy"`` to pass a float32 numpy array.
        batch_size: Largest number of rows passed to ``fn`` in one call (``None``: no limit).
        max_queries: Default per-example query budget of sessions (``None``: unlimited).
        name: A display name (default: the callable's name).
        meta: Free-form facts about the model (e.g. its clean accuracy), kept for reports.

    Attributes:
        total_queries: Rows sent to ``fn`` over this object's lifetime.
        calls: Calls made to ``fn``.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        output: Output = "logits",
        input_format: InputFormat = "torch",
        batch_size: int | None = None,
        max_queries: int | None = None,
        name: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable predict function, got {type(fn).__name__}")
        check_choice("output", output, OUTPUTS)
        check_choice("input_format", input_format, ("torch", "numpy"))
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        if max_queries is not None:
            check_positive_int("max_queries", max_queries)
        self.fn = fn
        self.output: Output = output
        self.input_format: InputFormat = input_format
        self.batch_size = batch_size
        self.max_queries = max_queries
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.meta: dict[str, Any] = dict(meta or {})
        self.total_queries = 0
        self.calls = 0
        self._probabilities: bool | None = None  # (output="logits" found to return a softmax's rows; None: not seen)

    @property
    def has_scores(self) -> bool:
        """Whether ``fn`` returns scores (so score-based attacks can use it)."""
        return self.output != "labels"

    def __repr__(self) -> str:
        return f"BlackBox({self.name}, output={self.output!r}, total_queries={self.total_queries})"

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        """One call of ``fn`` on ``x``, converted to a torch tensor on ``x.device``."""
        inp: Any = x.detach()
        if self.input_format == "numpy":
            inp = inp.cpu().numpy().astype(np.float32, copy=False)
        with torch.no_grad():
            out = self.fn(inp)
        self.calls += 1
        self.total_queries += x.shape[0]
        t = out.detach() if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out), device="cpu")
        if t.shape[:1] != x.shape[:1]:
            raise ValueError(
                f"fn: expected an output with {x.shape[0]} rows, got shape {tuple(t.shape)}"
            )
        return t.to(x.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        bs = self.batch_size or max(x.shape[0], 1)
        return torch.cat([self._call(x[i : i + bs]) for i in range(0, x.shape[0], bs)])

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probability-like scores N×K (logits as given; probabilities as their log).

        Margins between these scores equal margins of the logits (log-softmax differs from the
        logits by a per-row constant), so score-based attacks see the same objective either way.
        """
        if not self.has_scores:
            raise ValueError("model: this BlackBox returns labels only; scores are not available")
        s = self._forward(x).float()
        if s.dim() != 2:
            raise ValueError(f"fn: expected scores of shape N×K, got shape {tuple(s.shape)}")
        if self.output == "logits" and self._probabilities is None and len(s):
            # decided once, on the first scores (not on every query of an attack's loop): declared logits,
            # given a softmax's rows, as ART's predict functions return
            self._probabilities = is_probabilities(s)
            if self._probabilities:
                warnings.warn(f"advlab: {self.name} returns probabilities (its rows are non-negative and sum to 1) "
                              "though output='logits'; advlab reads their logarithm, which has the logits' margins "
                              "(give output='probs' to silence this)", ModelReturnsProbabilities,
                              stacklevel=caller_level())
        return s.clamp_min(1e-30).log() if self.output == "probs" or self._probabilities else s

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels (int64, shape N)."""
        out = self._forward(x)
        if out.dim() == 2:
            return out.argmax(dim=1)
        if out.dim() != 1:
            raise ValueError(f"fn: expected labels of shape N, got shape {tuple(out.shape)}")
        return out.long()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (score models) or labels (label-only models); counted, not per example."""
        return self.scores(x) if self.has_scores else self.labels(x)

    def session(self, n: int, max_queries: int | None = None) -> QuerySession:
        """Start counting queries for a batch of ``n`` examples.

        Args:
            n: Batch size of the attack.
            max_queries: Per-example budget; the smaller of this and the BlackBox's own
                ``max_queries`` applies (``None`` for both: unlimited).
        """
        budgets = [b for b in (max_queries, self.max_queries) if b is not None]
        return QuerySession(self, n, min(budgets) if budgets else None)


class QuerySession:
    """Per-example query counter for one attack run on a batch; enforces the budget.

    Every query names the examples it belongs to (``idx``, positions in the attack's batch);
    several rows for the same example (e.g. HopSkipJump's gradient estimate) are passed with a
    repeated index. A query that would exceed an example's budget raises
    :class:`QueryBudgetExceeded` before ``fn`` is called. The counts (``queries``) are host-side
    bookkeeping on the CPU whatever the attacked batch's device; attacks return them on ``x.device``.
    """

    def __init__(self, box: BlackBox, n: int, max_queries: int | None) -> None:
        self.box = box
        self.n = n
        self.max_queries = max_queries
        self.queries = torch.zeros(n, dtype=torch.int64, device="cpu")  # host-side bookkeeping

    @property
    def remaining(self) -> torch.Tensor:
        """Queries left per example (int64; a very large number when unlimited)."""
        cap = self.max_queries if self.max_queries is not None else 2**62
        return (cap - self.queries).clamp_min(0)

    def _charge(self, rows: int, idx: torch.Tensor | None) -> None:
        if idx is None:
            if rows != self.n:
                raise ValueError(f"idx: needed when querying {rows} rows for a batch of {self.n}")
            idx = torch.arange(self.n, device="cpu")
        idx = idx.detach().cpu().long()
        if idx.shape != (rows,):
            raise ValueError(f"idx: expected shape ({rows},), got {tuple(idx.shape)}")
        add = torch.bincount(idx, minlength=self.n)
        if self.max_queries is not None and bool((self.queries + add > self.max_queries).any()):
            raise QueryBudgetExceeded(
                f"query budget of {self.max_queries} per example exceeded"
            )
        self.queries += add

    def scores(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of rows ``x`` belonging to examples ``idx`` (default: the whole batch)."""
        self._charge(x.shape[0], idx)
        return self.box.scores(x)

    def labels(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Labels of rows ``x`` belonging to examples ``idx`` (default: the whole batch)."""
        self._charge(x.shape[0], idx)
        return self.box.labels(x)


def as_blackbox(model: Any, *, output: Output = "logits") -> BlackBox:
    """Return ``model`` if it is a :class:`BlackBox`, else wrap it (torch in, ``output`` out).

    A torch ``nn.Module`` or any callable returning logits becomes a score black box; its
    parameters, mode and ``requires_grad`` are left as they are (it is called under
    ``torch.no_grad``).
    """
    if isinstance(model, BlackBox):
        return model
    if not callable(model):
        raise TypeError(
            f"model: expected a torch model, a callable or a BlackBox, got {type(model).__name__}"
        )
    return BlackBox(model, output=output, input_format="torch")


__all__ = ["OUTPUTS", "PROBABILITY_ATOL", "BlackBox", "ModelReturnsProbabilities", "QueryBudgetExceeded",
           "QuerySession", "as_blackbox", "is_probabilities", "row_sums"]
