"""The loop CW-L∞ and CW-L0 share: per-example Adam in tanh space, attempts, c doubled on failure.

Carlini & Wagner's L∞ and L0 attacks (2017, §VI and §VII) repeat a CW-style optimisation under a
changing constraint — a shrinking τ, a shrinking set of pixels — and warm-start each repetition
from the last success. Per example the reference code runs *attempts*: Adam on c·f + penalty for
up to ``steps`` iterations; an attempt that succeeds tightens the constraint and starts the next
attempt from the current point (Adam's moments reset); one that runs out of steps doubles c and
goes on from where it stopped (moments kept); c reaching ``largest_const`` ends the example.

Here every example runs its own attempts at its own pace in one batch: per-example Adam moments,
step counts, constants and attempt counters, so an example never waits for another; examples that
end leave the batch. Iterates are x + mask·(x̃(w) − x̃(w₀)) clipped to the bounds, with
x̃(w) = lo + (hi − lo)(tanh w + 1)/2 and w₀ the clean image in tanh space: at w = w₀ (or where the
mask is off) the perturbation is exactly zero, so L0 counts only what the attack changed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from advlab.attacks.cw_objectives import Objective, cw_objective, meets_kappa
from advlab.threat import per_row

Model = Callable[[torch.Tensor], torch.Tensor]
State = dict[str, torch.Tensor]
_ADAM = (0.9, 0.999, 1e-8)  # β1, β2, ε of Adam, as in Carlini & Wagner's code
_STALL = 0.9999  # early abort: an attempt ends once its objective has not fallen by 0.01% over steps/10


class Ladder(ABC):
    """Per-example attempts of a CW-style attack; subclasses give the penalty and what success changes.

    Subclasses implement :meth:`penalty` (the distance term of the objective, per example),
    :meth:`succeeded` (which iterates end their attempt as a success), :meth:`on_success`
    (tighten the constraint), :meth:`finished` and :meth:`better` (the best iterate so far).
    """

    def __init__(self, model: Model, x: torch.Tensor, labels: torch.Tensor, targeted: bool,
                 bounds: tuple[float, float], objective: Objective, kappa: float) -> None:
        self.model, self.x, self.targeted = model, x, targeted
        self.objective, self.kappa = objective, kappa
        self.lo, self.hi = bounds
        w0 = torch.atanh(((x - self.lo) / (self.hi - self.lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        self.best_x = x.clone()
        self.best = torch.full((len(x),), math.inf, device=x.device)
        with torch.no_grad():
            clean_adv = self.is_adv(model(x), labels)
        self.best[clean_adv] = 0.0
        keep = (~clean_adv).nonzero().flatten()
        self.state: State = {"idx": keep, "x": x[keep], "w0": w0[keep], "x0": self.to_x(w0[keep]), "lab": labels[keep]}

    def to_x(self, w: torch.Tensor) -> torch.Tensor:
        """From tanh space to the bounds."""
        return self.lo + (self.hi - self.lo) * (torch.tanh(w) + 1) / 2

    def is_adv(self, logits: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Prediction = target (targeted) or ≠ the true class."""
        pred = logits.argmax(dim=1)
        return pred == lab if self.targeted else pred != lab

    def iterate(self, s: State, w: torch.Tensor) -> torch.Tensor:
        """The image at ``w``: x + mask·(x̃(w) − x̃(w₀)), clipped to the bounds."""
        delta = self.to_x(w) - s["x0"]
        if "mask" in s:
            delta = delta * s["mask"]
        return (s["x"] + delta).clamp(self.lo, self.hi)

    def run(self, steps: int, lr: float, initial_const: float, largest_const: float, early_stop: bool) -> None:
        """Attempts for every example until it finishes; the best iterates end in ``best_x``."""
        s = self.state
        n = len(s["idx"])
        zeros = torch.zeros(n, device=self.x.device)
        s.update(w=s["w0"].clone(), m=torch.zeros_like(s["w0"]), v=torch.zeros_like(s["w0"]), t=zeros.clone(),
                 it=zeros.clone(), c=zeros + initial_const, prev=zeros + math.inf)
        check_every = max(1, steps // 10)
        while len(s["idx"]):
            obj, grad, success = self.evaluate(s)
            if bool(success.any()):
                self.on_success(s, success)
                self.restart(s, success)
            self.adam(s, grad, ~success, lr)
            over = ~success & (s["it"] >= steps)
            if early_stop:
                due = ~success & (s["it"] % check_every == 0)
                over |= due & (obj > s["prev"] * _STALL)
                s["prev"] = torch.where(due, obj, s["prev"])
            if bool(over.any()):
                s["c"] = torch.where(over, s["c"] * 2, s["c"])
                s["it"] = torch.where(over, 0.0, s["it"])
                s["prev"] = torch.where(over, math.inf, s["prev"])
            done = (s["c"] >= largest_const) | self.finished(s)
            if bool(done.any()):
                s = self.state = {k: v[~done] for k, v in s.items()}

    def evaluate(self, s: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """c·f + penalty at the current iterates, its gradient in tanh space, and which attempts succeeded."""
        w = s["w"].requires_grad_(True)
        with torch.enable_grad():
            xa = self.iterate(s, w)
            logits = self.model(xa)
            f = cw_objective(self.objective, logits, s["lab"], self.targeted, self.kappa)
            pen = self.penalty(s, xa)
            obj = s["c"] * f + pen
            (grad,) = torch.autograd.grad(obj.sum(), w)
        s["w"] = w.detach()
        with torch.no_grad():
            xa = xa.detach()
            adv = self.is_adv(logits, s["lab"]) & meets_kappa(f.detach(), self.objective, self.kappa)
            self.record(s, xa, adv)
            success = self.succeeded(s, xa, adv, pen.detach())
        s["xa"] = xa
        return obj.detach(), grad, success

    def record(self, s: State, xa: torch.Tensor, adv: torch.Tensor) -> None:
        """Keep, per example, the best adversarial iterate so far (:meth:`better` says which is better)."""
        score = self.measure(s, xa)
        better = adv & self.better(score, self.best[s["idx"]])
        if bool(better.any()):
            idx = s["idx"][better]
            self.best[idx] = score[better]
            self.best_x[idx] = xa[better]

    def adam(self, s: State, grad: torch.Tensor, move: torch.Tensor, lr: float) -> None:
        """One Adam step on the rows ``move`` (per-row step counts for the bias corrections)."""
        b1, b2, eps = _ADAM
        mv = per_row(move, grad)
        s["t"] = s["t"] + move.to(s["t"].dtype)
        s["it"] = s["it"] + move.to(s["it"].dtype)
        t = per_row(s["t"].clamp_min(1), grad)
        s["m"] = torch.where(mv, s["m"] * b1 + grad * (1 - b1), s["m"])
        s["v"] = torch.where(mv, s["v"] * b2 + grad * grad * (1 - b2), s["v"])
        step = (s["m"] / (1 - b1**t)) / ((s["v"] / (1 - b2**t)).sqrt() + eps)
        s["w"] = torch.where(mv, s["w"] - lr * step, s["w"])

    def restart(self, s: State, rows_: torch.Tensor) -> None:
        """A new attempt from the current point: Adam's moments and the counters reset."""
        r = per_row(rows_, s["w"])
        s["m"] = torch.where(r, 0.0, s["m"])
        s["v"] = torch.where(r, 0.0, s["v"])
        for key in ("t", "it"):
            s[key] = torch.where(rows_, 0.0, s[key])
        s["prev"] = torch.where(rows_, math.inf, s["prev"])

    # --- what a subclass defines -------------------------------------------------------------

    @abstractmethod
    def penalty(self, s: State, xa: torch.Tensor) -> torch.Tensor:
        """The distance term of the objective, per example (differentiable)."""

    @abstractmethod
    def measure(self, s: State, xa: torch.Tensor) -> torch.Tensor:
        """The norm the attack minimises, per example."""

    def better(self, score: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """Whether a new adversarial iterate replaces the best one (a smaller norm)."""
        return score < best

    @abstractmethod
    def succeeded(self, s: State, xa: torch.Tensor, adv: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
        """Which attempts end as a success at this iterate."""

    @abstractmethod
    def on_success(self, s: State, success: torch.Tensor) -> None:
        """Tighten the constraint of the examples whose attempt succeeded."""

    @abstractmethod
    def finished(self, s: State) -> torch.Tensor:
        """Which examples have nothing left to try."""
