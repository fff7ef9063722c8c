"""Robust variants of spectral signatures and activation clustering: robust whitening, a data-adaptive cut.

The papers' rules (:mod:`advlab.poison.detect`) miss on runs they were not tuned on (docs/poisoning.md):
the top singular direction of a class is the poisons' shift only when that shift outweighs the class's
own spread, and a fixed removal share cannot flag few clean images when the poisons' share is near it.
The variants here change three things and keep the rest of each method:

1. **Robust whitening** (the first step of SPECTRE, Hayase et al. 2021). Per class: centre the
   features, keep the top ``whiten_dims`` principal components, estimate the mean and covariance of
   the class's bulk robustly and whiten with them. The estimate is the minimum-covariance-determinant
   idea (Rousseeuw & Van Driessen 1999, concentration steps): start from every example, keep the
   ``1 − trim`` share closest in Mahalanobis distance, re-estimate from those, repeat until the kept
   set no longer changes. ``trim`` is an assumed upper bound on the poisons' share of a class (default
   0.15 = 1.5 × ε with ε = 0.1, the bound Tran et al.'s rule assumes), never the true rate; the
   covariance is shrunk by 5 % of its mean eigenvalue so that it stays invertible. In whitened
   coordinates the clean bulk spreads equally in every direction, so a group of poisons sharing a
   shift becomes the direction of largest spread even where the clean class spreads more in raw
   coordinates.
2. **The split.** ``spectral-robust``: Tran et al.'s score — the projection on the top singular
   vector — computed in whitened space (second moment about the robust mean), and split in two by
   exact one-dimensional 2-means. ``activation-clustering-robust``: Chen et al.'s 2-means, on the top
   ``dims`` principal components of the whitened class instead of ICA components of the raw one.
3. **A data-adaptive cut** instead of a fixed share: the smaller group of the split is flagged when
   it holds at most ``max_share`` of the examples still in play (Chen et al.'s relative size) *and*
   an empty-ish valley separates it from the rest along the split direction: :func:`valley`, the
   count of examples near the point halfway between the two groups' means over the smaller of the
   counts near each group's median, is at most ``max_valley``. A group of poisons sharing a trigger
   sits apart from the class, with few examples in between; a 2-means split of a unimodal class
   (its tail cut off) has no valley. (The first version of this rule used Fisher's separation
   ≥ 4 instead, :func:`separation`; it missed one held-out run whose poisons were spread out
   along the direction, and stays available as ``min_separation`` — docs/poisoning.md tells the
   history.)

And **peeling** (Tran et al. look at more than one singular vector): the smaller group is set aside,
flagged or not, and the three steps repeat on the rest, ``rounds`` times in all, so that a natural
sub-population stronger than the poisons (MNIST's class 1 holds a tight 2 % group) does not hide them.

Everything is a deterministic function of the features (k-means seeded); the experiment reads the
120-unit layer of lenet for these variants (``depth=2``, see :data:`DEFAULT_DEPTH`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch

from advlab._checks import NonNegFloat, PositiveInt, Range, check_param
from advlab.poison.base import Share
from advlab.poison.detect import Detection, check_features

PAPER_SPECTRE = ("Hayase, Kong, Somani, Oh 2021, SPECTRE: Defending Against Backdoor Attacks Using Robust "
                 "Statistics, https://arxiv.org/abs/2104.11315")
PAPER_MCD = ("Rousseeuw, Van Driessen 1999, A Fast Algorithm for the Minimum Covariance Determinant "
             "Estimator, https://doi.org/10.1080/00401706.1999.10485670")
# trim below 1/2: the concentration steps keep a majority of the class.
Trim = Annotated[float, Range(0.0, 0.49)]
SHRINK = 0.05  # covariance shrinkage toward its mean eigenvalue (keeps whitening finite on dead units)
MIN_CLASS = 10  # classes (or what is left of them after peeling) smaller than this are left alone
DEFAULT_DEPTH = 2  # the features these variants read by default (lenet: the 120-unit layer)
Split = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def robust_whiten(r: torch.Tensor, dims: int, trim: float, steps: int = 20) -> torch.Tensor:
    """The rows of ``r`` (n×D) in the top ``dims`` principal components, whitened by a trimmed robust estimate.

    Returns n×k coordinates (k = min(dims, n − 1, D)) whose kept bulk has mean 0 and (shrunk) identity
    covariance.
    """
    c = r.double() - r.double().mean(0)
    k = max(1, min(dims, len(r) - 1, r.shape[1]))
    z = c @ torch.linalg.svd(c, full_matrices=False).Vh[:k].T
    h = len(z) - round(trim * len(z))
    keep = torch.arange(len(z))
    eye = torch.eye(k, dtype=z.dtype)
    w: torch.Tensor = z
    for _ in range(steps):
        mu = z[keep].mean(0)
        d = z[keep] - mu
        cov = d.T @ d / max(len(d) - 1, 1)
        cov = cov + (SHRINK * cov.diagonal().mean() + 1e-12) * eye
        w = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), (z - mu).T, upper=False).T
        new = (w * w).sum(1).argsort(stable=True)[:h].sort().values
        if torch.equal(new, keep):
            break
        keep = new
    return w


def two_means_1d(s: torch.Tensor) -> torch.Tensor:
    """Exact 2-means of the values ``s``: a bool mask of the smaller group (ties: the upper one).

    Sorting makes the optimum a split point; every split's within-group sum of squares comes from
    prefix sums, and the first minimum wins.
    """
    order = torch.sort(s, stable=True).indices
    v = s[order] - s.mean()
    n = len(v)
    i = torch.arange(1, n, dtype=v.dtype)
    c1, c2 = torch.cumsum(v, 0)[:-1], torch.cumsum(v * v, 0)[:-1]
    sse = (c2 - c1**2 / i) + ((v * v).sum() - c2 - (v.sum() - c1) ** 2 / (n - i))
    cut = int(torch.argmin(sse)) + 1
    group = torch.zeros(n, dtype=torch.bool)
    group[order[cut:] if n - cut <= cut else order[:cut]] = True
    return group


def separation(s: torch.Tensor, group: torch.Tensor) -> float:
    """Fisher's separation of a split along one direction: |mean₁ − mean₂| / √(var₁ + var₂) (0 if degenerate)."""
    a, b = s[group], s[~group]
    if len(a) < 2 or len(b) < 2:
        return 0.0
    spread = float((a.var() + b.var()).sqrt())
    return float((a.mean() - b.mean()).abs()) / spread if spread > 0 else float("inf")


def valley(s: torch.Tensor, group: torch.Tensor, width: float = 0.1) -> float:
    """How empty the gap between a split's two groups is along one direction (0: empty, ≥ 1: no gap).

    The number of values within ``width`` × (distance between the two groups' means) of the point
    halfway between those means, over the smaller of the same counts around each group's median —
    the depth of the density's valley between two modes (inf where the split is degenerate).
    """
    a, b = s[group], s[~group]
    if len(a) < 2 or len(b) < 2:
        return float("inf")
    ma, mb = float(a.mean()), float(b.mean())
    h = width * abs(ma - mb)
    if h <= 0:
        return float("inf")

    def count(c: float) -> float:
        return float(((s - c).abs() < h).sum())

    peak = min(count(float(a.median())), count(float(b.median())))
    return count((ma + mb) / 2) / peak if peak > 0 else float("inf")


def _spectral_split(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = w @ torch.linalg.svd(w, full_matrices=False).Vh[0]
    return two_means_1d(s), s


def _kmeans_split(dims: int, seed: int) -> Split:
    from sklearn.cluster import KMeans

    def split(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wc = w - w.mean(0)
        z = wc @ torch.linalg.svd(wc, full_matrices=False).Vh[: min(dims, w.shape[1])].T
        assign = torch.from_numpy(KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(z.numpy()))
        group = assign == int(torch.bincount(assign, minlength=2).argmin())
        if not group.any() or group.all():
            return torch.zeros(len(w), dtype=torch.bool), z[:, 0]
        line = z[group].mean(0) - z[~group].mean(0)
        return group, z @ (line / line.norm())

    return split


def _oriented_z(s: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Robust z-scores of ``s`` (median, 1.4826·MAD), signed so the group's side is positive."""
    med = s.median()
    mad = 1.4826 * float((s - med).abs().median())
    z = (s - med) / (mad if mad > 0 else 1.0)
    return -z if group.any() and float(z[group].mean()) < 0 else z


def _peel(f: torch.Tensor, split: Split, *, whiten_dims: int, trim: float, rounds: int, max_share: float,
          max_valley: float, min_separation: float) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, float]]]:
    """One class: ``rounds`` rounds of whiten → split → judge → set aside; (flagged, scores, per-round record)."""
    n = len(f)
    flagged = torch.zeros(n, dtype=torch.bool)
    scores = torch.full((n,), float("-inf"), dtype=torch.float64)
    alive = torch.arange(n)
    record: list[dict[str, float]] = []
    for _ in range(rounds):
        if len(alive) < MIN_CLASS:
            break
        group, s = split(robust_whiten(f[alive], whiten_dims, trim))
        scores[alive] = torch.maximum(scores[alive], _oriented_z(s, group))
        share, sep, dip = float(group.double().mean()), separation(s, group), valley(s, group)
        hit = bool(group.any()) and share <= max_share and dip <= max_valley and sep >= min_separation
        record.append({"share": share, "separation": sep, "valley": dip, "flagged": float(hit),
                       "size": float(group.sum())})
        if not group.any():
            break
        if hit:
            flagged[alive[group]] = True
        alive = alive[~group]
    scores[torch.isinf(scores)] = 0.0
    return flagged, scores, record


def _per_class(feats: torch.Tensor, y: torch.Tensor, split: Split, method: str, **kw: float) -> Detection:
    f = feats.detach().double().cpu()
    labels = y.cpu()
    flagged = torch.zeros(len(f), dtype=torch.bool)
    scores = torch.zeros(len(f), dtype=torch.float64)
    details: dict[int, list[dict[str, float]]] = {}
    for c in torch.unique(labels).tolist():
        rows = (labels == c).nonzero().flatten()
        if len(rows) < MIN_CLASS:
            continue
        flagged[rows], scores[rows], details[int(c)] = _peel(f[rows], split, **kw)  # type: ignore[arg-type]
    return Detection(flagged.to(feats.device), scores.to(feats.device), method, details)


def _check_robust(whiten_dims: int, trim: float, rounds: int, max_share: float, max_valley: float,
                  min_separation: float) -> None:
    check_param("whiten_dims", PositiveInt, whiten_dims)
    check_param("trim", Trim, trim)
    check_param("rounds", PositiveInt, rounds)
    check_param("max_share", Share, max_share)
    check_param("max_valley", NonNegFloat, max_valley)
    check_param("min_separation", NonNegFloat, min_separation)


def robust_spectral(feats: torch.Tensor, y: torch.Tensor, *, whiten_dims: int = 20, trim: float = 0.15,
                    rounds: int = 3, max_share: float = 0.35, max_valley: float = 0.5,
                    min_separation: float = 0.0) -> Detection:
    """Spectral signatures on robustly whitened features, with a data-adaptive cut (``spectral-robust``).

    Per class and round: whiten (:func:`robust_whiten`), project on the top singular vector, split the
    projections by exact 2-means and flag the smaller group if it holds ≤ ``max_share`` of the examples
    in play, its :func:`valley` is ≤ ``max_valley`` and its :func:`separation` ≥ ``min_separation``;
    set the group aside and repeat.
    Scores: the largest robust z-score of an example's projection over the rounds it took part in.

    Args:
        feats: Features N×D of the training set under the trained (possibly poisoned) model.
        y: The training labels (as given, poisoned ones included).
        whiten_dims: Principal components kept before whitening.
        trim: Share of each class the robust estimate leaves out (an assumed bound on the poisons' share).
        rounds: Splits per class (each sets its smaller group aside).
        max_share: A group holding more than this share of the examples in play is never flagged.
        max_valley: Largest valley between a flagged group and the rest (0.5: the density halfway is at
            most half the sparser group's).
        min_separation: Least Fisher separation of a flagged group from the rest (0: not used).
    """
    feats, y = check_features(feats, y)
    _check_robust(whiten_dims, trim, rounds, max_share, max_valley, min_separation)
    return _per_class(feats, y, _spectral_split, "spectral-robust", whiten_dims=whiten_dims, trim=trim,
                      rounds=rounds, max_share=max_share, max_valley=max_valley, min_separation=min_separation)


def robust_activation_clustering(feats: torch.Tensor, y: torch.Tensor, *, dims: int = 10, whiten_dims: int = 20,
                                 trim: float = 0.15, rounds: int = 3, max_share: float = 0.35,
                                 max_valley: float = 0.5, min_separation: float = 0.0, seed: int = 0) -> Detection:
    """Activation clustering on robustly whitened features (``activation-clustering-robust``).

    Per class and round: whiten (:func:`robust_whiten`), keep the top ``dims`` principal components
    of the whitened class, split them by 2-means (10 restarts, seeded) and flag the smaller cluster if
    it holds ≤ ``max_share`` of the examples in play and, along the line between the two cluster
    means, its :func:`valley` is ≤ ``max_valley`` and its :func:`separation` ≥ ``min_separation``; set
    the cluster aside and repeat.

    Args:
        feats: Features N×D of the training set.
        y: The training labels (as given).
        dims: Whitened components clustered (Chen et al. cluster 10 ICA components).
        whiten_dims: Principal components kept before whitening.
        trim: Share of each class the robust estimate leaves out (an assumed bound on the poisons' share).
        rounds: Splits per class (each sets its smaller cluster aside).
        max_share: A cluster holding more than this share of the examples in play is never flagged.
        max_valley: Largest valley between a flagged cluster and the rest.
        min_separation: Least Fisher separation of a flagged cluster from the rest (0: not used).
        seed: Seed of k-means.
    """
    feats, y = check_features(feats, y)
    check_param("dims", PositiveInt, dims)
    _check_robust(whiten_dims, trim, rounds, max_share, max_valley, min_separation)
    check_param("seed", int, seed)
    return _per_class(feats, y, _kmeans_split(dims, seed), "activation-clustering-robust", whiten_dims=whiten_dims,
                      trim=trim, rounds=rounds, max_share=max_share, max_valley=max_valley,
                      min_separation=min_separation)


__all__ = ["DEFAULT_DEPTH", "PAPER_MCD", "PAPER_SPECTRE", "robust_activation_clustering", "robust_spectral",
           "robust_whiten", "separation", "two_means_1d", "valley"]
