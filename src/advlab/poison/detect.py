"""Data-level poison detectors on a trained model's penultimate features, per (given) class.

- Spectral signatures (Tran, Li, Madry 2018): in each class, centre the feature vectors, take the
  top right singular vector v, score each example by ``((r − mean)·v)²`` and flag the highest
  ``removal`` share of the class. Tran et al. set that share to 1.5ε for an assumed upper bound
  ε on the poisons' share of a class; it is a parameter fixed before looking, never the true rate.
- Activation clustering (Chen et al. 2018): in each class, reduce the features to ``dims``
  independent components (ICA, as the paper), split them with 2-means, and flag the smaller
  cluster when its share of the class is at most ``max_share`` (the paper's relative-size test).

Both return a :class:`Detection`; :func:`detection_rates` scores it against the true poisons
(TPR over poisons, FPR over the inspected class's clean examples and over all clean examples).
:func:`remove_flagged` gives the cleaned training set to retrain on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from advlab._checks import array_tensor, check_labels, check_param
from advlab.poison.base import Share, poison_count

PAPER_SPECTRAL = "Tran, Li, Madry 2018, Spectral Signatures in Backdoor Attacks, https://arxiv.org/abs/1811.00636"
PAPER_AC = ("Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava 2018, Detecting Backdoor "
            "Attacks on Deep Neural Networks by Activation Clustering, https://arxiv.org/abs/1811.03728")


@dataclass
class Detection:
    """Which training examples a detector flags (bool, N) and its per-example score (higher = more suspect).

    ``details`` (the robust variants, :mod:`advlab.poison.robust`): per class, each round's split —
    the smaller group's share and size, its separation, and whether it was flagged.
    """

    flagged: torch.Tensor
    scores: torch.Tensor
    method: str
    details: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # per class: each round's split


def check_features(feats: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The features (N×D, tensor or NumPy array) and their labels (read as check_labels reads them), or one line."""
    if isinstance(feats, np.ndarray):
        feats = array_tensor("features", feats, "N×D feature vectors")
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"features: expected a torch.Tensor of N×D feature vectors, got {type(feats).__name__}")
    if feats.dim() != 2:
        raise ValueError(f"features: expected N×D feature vectors, got shape {tuple(feats.shape)}")
    return feats, check_labels("y", y, len(feats)).to(feats.device)


def spectral_signatures(feats: torch.Tensor, y: torch.Tensor, *, removal: float = 0.15) -> Detection:
    """Flag, in every class, the ``round(removal·n_class)`` examples of highest spectral score.

    Args:
        feats: Penultimate features N×D of the training set (under the trained, possibly poisoned, model).
        y: The training labels (as given, poisoned ones included).
        removal: Share of each class removed, fixed in advance (default 0.15 = 1.5 × an assumed
            bound ε = 0.1 on the poisons' share of a class, Tran et al.'s rule).
    """
    feats, y = check_features(feats, y)
    check_param("removal", Share, removal)
    f = feats.double()
    scores = torch.zeros(len(f), dtype=torch.float64, device=f.device)
    flagged = torch.zeros(len(f), dtype=torch.bool, device=f.device)
    for c in torch.unique(y).tolist():
        rows = (y == c).nonzero().flatten()
        r = f[rows] - f[rows].mean(0)
        v = torch.linalg.svd(r, full_matrices=False).Vh[0]
        s = (r @ v) ** 2
        scores[rows] = s
        k = poison_count(removal, len(rows))
        flagged[rows[torch.sort(s, descending=True, stable=True).indices[:k]]] = True
    return Detection(flagged, scores, "spectral")


def _reduce(r: np.ndarray, dims: int, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA, FastICA

    dims = min(dims, r.shape[0] - 1, r.shape[1])
    if method == "pca":
        out: np.ndarray = PCA(n_components=dims, random_state=seed).fit_transform(r)
        return out
    with warnings.catch_warnings():  # FastICA warns when it stops at max_iter; the components still serve
        warnings.simplefilter("ignore")
        out = FastICA(n_components=dims, whiten="unit-variance", random_state=seed, max_iter=400).fit_transform(r)
    return out


def activation_clustering(feats: torch.Tensor, y: torch.Tensor, *, dims: int = 10, max_share: float = 0.35,
                          reduce: Literal["ica", "pca"] = "ica", seed: int = 0) -> Detection:
    """Flag, in every class, the smaller of two k-means clusters if it holds at most ``max_share`` of the class.

    Args:
        feats: Penultimate features N×D of the training set.
        y: The training labels (as given).
        dims: Components kept before clustering (Chen et al.: 10 independent components).
        max_share: A cluster holding more than this share of its class is never flagged (Chen et
            al.'s relative size; fixed in advance, not the poison rate).
        reduce: ``"ica"`` (the paper's) or ``"pca"``.
        seed: Seed of ICA and k-means.
    """
    from sklearn.cluster import KMeans

    feats, y = check_features(feats, y)
    check_param("max_share", Share, max_share)
    check_param("reduce", Literal["ica", "pca"], reduce)
    f = feats.double().cpu().numpy()  # scikit-learn reads NumPy: on the CPU; the result goes back to feats' device
    labels = y.cpu().numpy()
    scores = np.zeros(len(f))
    flagged = np.zeros(len(f), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 4:
            continue
        z = _reduce(f[rows] - f[rows].mean(0), dims, reduce, seed)
        assign = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(z)
        small = int(np.bincount(assign, minlength=2).argmin())
        share = float((assign == small).mean())
        scores[rows] = np.where(assign == small, 1.0 - share, share)  # members of a small cluster score high
        if share <= max_share:
            flagged[rows[assign == small]] = True
    return Detection(torch.from_numpy(flagged).to(feats.device), torch.from_numpy(scores).to(feats.device),
                     "activation-clustering")


def detection_rates(detection: Detection, poison_mask: torch.Tensor, y: torch.Tensor,
                    inspected: int | None) -> dict[str, float]:
    """TPR over the poisons; FPR over the clean examples labelled ``inspected`` and over all clean ones."""
    flagged, clean = detection.flagged, ~poison_mask
    out = {
        "tpr": float(flagged[poison_mask].float().mean()) if poison_mask.any() else float("nan"),
        "fpr_all": float(flagged[clean].float().mean()) if clean.any() else float("nan"),
        "flagged": float(flagged.sum()),
        "removed_share": float(flagged.float().mean()),
    }
    if inspected is not None:
        cls = clean & (y == inspected)
        out["fpr_class"] = float(flagged[cls].float().mean()) if cls.any() else float("nan")
    return out


def remove_flagged(x: torch.Tensor, y: torch.Tensor, detection: Detection) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set without the flagged examples."""
    keep = ~detection.flagged
    return x[keep], y[keep]


__all__ = ["PAPER_AC", "PAPER_SPECTRAL", "Detection", "activation_clustering", "check_features", "detection_rates",
           "remove_flagged", "spectral_signatures"]
