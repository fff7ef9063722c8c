"""The reject option of ``evaluate(detector=...)``: which detector, fitted on what, and where it is kept (issue 16).

``detector`` is a spec ``NAME[:key=value...]`` (fitted here), ``NAME:PATH.safetensors`` or a
``.safetensors`` path (a detector saved by :func:`~advlab.detect.save_detector`, loaded onto the
evaluated model: a file fitted to another classifier is refused), or a fitted :class:`Detector`.

Fitting uses the **training split only** of the evaluated dataset (by name, through
:func:`~advlab.data.load_dataset`, as evaluate reads the test split). From a permutation of the
split drawn with the evaluation's seed, the first ``min(FIT_N, N − held)`` images are the fit set
and the next ``held = min(HELDOUT_N, N // 3)`` the held-out set (disjoint). The detector is fitted
on the fit set's clean images, their copies under the ``noise`` attack and their adversarial copies
under the fit attack — PGD (the evaluation's PGD parameters) at the evaluation's norm and largest
ε, or L∞ at its largest default ε where PGD has no such norm — and its threshold is calibrated at
:data:`FPR` on the held-out clean images. The fitted detector is saved as
``OUT/detector.safetensors`` with the store recording what it was fitted on (the image indices
included); a resumed run of the same configuration loads it, never refits it.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advlab._device import module_device
from advlab.attacks import get_attack
from advlab.data import dataset_info, is_spec, load_dataset
from advlab.data.torch_dataset import is_torch_name
from advlab.detect.base import DETECTORS, Detector, load_detector, make_detector, save_detector
from advlab.evaluation.defaults import attack_params
from advlab.metrics import predict_logits
from advlab.models.checkpoint import tensor_digest
from advlab.results.plan import DEFAULT_EPS, Job, batch_seed, json_params
from advlab.results.records import data_fingerprint
from advlab.results.store import Store
from advlab.threat import ThreatModel

if TYPE_CHECKING:
    from advlab.evaluation.run import Run

FIT_N = 2000  # clean training images the detector is fitted on (with their noisy and adversarial copies)
HELDOUT_N = 1000  # disjoint clean training images its threshold is calibrated on
FPR = 0.05  # the share of held-out clean images the threshold rejects
DETECTOR_FILE = "detector.safetensors"
FIT_ATTACK, NOISE = "pgd", "noise"


@dataclass
class DetectorPlan:
    """A validated detector before the run: its configuration entry and what fitting it needs."""

    entry: dict[str, Any]  # the evaluation configuration's "detector" (compared on resume, like every setting)
    loaded: Detector | None = None  # a file's or a caller's detector (None: fitted in the run)
    x_fit: torch.Tensor | None = None
    y_fit: torch.Tensor | None = None
    x_held: torch.Tensor | None = None
    fit_idx: list[int] | None = None
    held_idx: list[int] | None = None
    fit_job: Job | None = None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_spec(spec: str) -> tuple[str | None, Path | None]:
    """(``NAME`` or None, the file or None) of ``NAME:PATH.safetensors``, ``PATH.safetensors`` or ``NAME[:k=v]``."""
    if not spec.endswith(".safetensors"):
        return spec.split(":")[0], None
    name, sep, rest = spec.partition(":")
    if sep and name in DETECTORS:
        return name, Path(rest)
    return None, Path(spec)


def _loaded(spec: str | Detector, net: nn.Module) -> tuple[Detector, dict[str, Any]] | None:
    """A detector given ready (a file or an object) with its entry; None for a spec to fit."""
    if isinstance(spec, Detector):
        try:
            fitted_to = tensor_digest(spec.model)
        except RuntimeError as e:
            raise ValueError(f"detector: {e}") from None
        if fitted_to != tensor_digest(net):
            raise ValueError(f"detector: this {spec.name} detector was fitted to a different classifier")
        spec.bind(net)
        return spec, {"object": spec.name, "config": spec.config(), "digest": tensor_digest(spec)}
    name, path = split_spec(spec)
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"detector: {path} does not exist")
    det = load_detector(path, net)
    if name is not None and det.name != name:
        raise ValueError(f"detector: {path} holds a {det.name} detector, not {name}")
    return det, {"file": os.fspath(path), "name": det.name, "digest": _file_digest(path)}


def fit_job(norm: str, sweep: tuple[float, ...], params: dict[str, dict[str, Any]]) -> Job:
    """The fit attack's job: PGD at the evaluation's norm and largest ε (else L∞ at its largest default ε)."""
    info = get_attack(FIT_ATTACK)
    if norm in info.norms and math.isfinite(max(sweep)) and max(sweep) > 0:
        return Job(FIT_ATTACK, norm, float(max(sweep)), tuple(sweep), label="detector-fit")
    return Job(FIT_ATTACK, "linf", max(DEFAULT_EPS["linf"]), DEFAULT_EPS["linf"], label="detector-fit")


def fit_split(n_train: int, seed: int) -> tuple[list[int], list[int]]:
    """The fit and held-out indices into a training split of ``n_train`` images (disjoint, seeded)."""
    held = min(HELDOUT_N, n_train // 3)
    fit = min(FIT_N, n_train - held)
    if fit < 2 or held < 2:
        raise ValueError(f"detector: the training split has {n_train} images; fitting needs at least 6")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[:fit].tolist()), sorted(perm[fit:fit + held].tolist())


def _train_split(dataset: str, data_dir: str | os.PathLike[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset == "tensors" or is_spec(dataset) or is_torch_name(dataset):
        raise ValueError("detector: fitting needs the training split of a dataset evaluated by name (e.g. "
                         f"'mnist'); {dataset!r} has none — give a fitted detector file instead")
    dataset_info(dataset)
    return load_dataset(dataset, "train", root=data_dir)


def plan_detector(spec: str | Detector | None, net: Any, dataset: str, data_dir: str | os.PathLike[str] | None,
                  norm: str, sweep: tuple[float, ...], params: dict[str, dict[str, Any]], seed: int
                  ) -> DetectorPlan | None:
    """Validate the detector setting and read what fitting it needs: nothing is fitted or written here."""
    if spec is None:
        return None
    if not isinstance(spec, (str, Detector)):
        raise TypeError(f"detector: expected a spec string or a fitted Detector, got {type(spec).__name__}")
    if not isinstance(net, nn.Module):
        raise ValueError("detector: the reject option needs a torch model (detectors read its gradients and "
                         f"features), got a {type(net).__name__}")
    ready = _loaded(spec, net)
    if ready is not None:
        det, entry = ready
        if not torch.isnan(det.threshold):
            return DetectorPlan(entry, det)
    else:
        det, entry = None, {"spec": spec}
        make_detector(str(spec))  # the name and options, checked before anything runs
    x_train, y_train = _train_split(dataset, data_dir)
    fit_idx, held_idx = fit_split(len(y_train), seed)
    job = fit_job(norm, sweep, params)
    fit_params = json_params(attack_params(get_attack(FIT_ATTACK), job, params))
    sel = torch.tensor(fit_idx + held_idx)
    entry.update({"split": "train", "fit_n": len(fit_idx), "heldout_n": len(held_idx), "fpr": FPR,
                  "fit_attack": {**job.as_dict(), "params": fit_params}, "noise": NOISE,
                  "train_digest": data_fingerprint(x_train[sel], y_train[sel], None)["digest"]})
    return DetectorPlan(entry, det, x_train[fit_idx], y_train[fit_idx], x_train[held_idx], fit_idx, held_idx, job)


def _attack_all(run: Run, job: Job, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``name`` at the fit job's threat model over ``x`` in the run's batches (seeded per batch)."""
    info = get_attack(name)
    params = attack_params(info, job, run.params) if name == job.attack else {}
    threat = ThreatModel(job.norm, job.eps if job.eps is not None else math.inf, bounds=run.bounds)  # type: ignore[arg-type]
    dev = module_device(run.net)
    out = []
    for b, i in enumerate(range(0, len(y), run.batch_size)):
        gen = torch.Generator().manual_seed(batch_seed(run.config["seed"], f"detector-fit|{name}", b))
        xb, yb = x[i:i + run.batch_size].to(dev), y[i:i + run.batch_size].to(dev)
        out.append(info(run.net, xb, yb, threat, generator=gen, **params).x_adv.detach().cpu())
    return torch.cat(out)


def fit_detector(run: Run, dp: DetectorPlan) -> tuple[Detector, dict[str, Any]]:
    """Fit the planned detector on the fit set (clean, noisy, adversarial) and calibrate it on the held-out set."""
    assert dp.x_fit is not None
    assert dp.y_fit is not None
    assert dp.x_held is not None
    assert dp.fit_job is not None
    t0 = time.perf_counter()
    if dp.loaded is None:
        x_adv = _attack_all(run, dp.fit_job, FIT_ATTACK, dp.x_fit, dp.y_fit)
        x_noisy = _attack_all(run, dp.fit_job, NOISE, dp.x_fit, dp.y_fit)
        gen = torch.Generator().manual_seed(batch_seed(run.config["seed"], "detector-fit", 0))
        det = make_detector(str(dp.entry["spec"])).fit(run.net, dp.x_fit, x_adv, x_noisy, generator=gen)
        with torch.no_grad():
            pred = predict_logits(run.net, x_adv, run.batch_size, module_device(run.net)).argmax(1)
        fooled = float((pred != dp.y_fit).double().mean())
    else:
        det, fooled = dp.loaded, None
    threshold = det.calibrate(dp.x_held, FPR)
    held_rejected = float(det.reject(dp.x_held).double().mean())
    return det, {"fit_idx": dp.fit_idx, "heldout_idx": dp.held_idx, "threshold": threshold,
                 "heldout_rejected": held_rejected, "fit_attack_fooled": fooled,
                 "seconds": round(time.perf_counter() - t0, 3)}


def check_fitted_file(store: Store, dp: DetectorPlan | None, config: dict[str, Any], directory: Path,
                      force: bool) -> None:
    """Refuse to resume a run whose fitted detector file has gone (``force``: start the run afresh).

    A detector is never refitted silently: the results stored so far were scored by the one that is gone.
    """
    meta = store.get_meta("detector")
    if dp is None or dp.fit_idx is None or meta is None or meta.get("entry") != dp.entry:
        return
    path = directory / DETECTOR_FILE
    if path.is_file():
        return
    if not force:
        raise FileNotFoundError(f"out: {path}, the detector this run fitted, is missing; restore it, or use "
                                "--force to start the run afresh and fit it again")
    warnings.warn(f"{path} is missing: the run starts afresh and fits the detector again", stacklevel=2)
    store.reset()
    store.set_config(config)


def ready_detector(run: Run, dp: DetectorPlan, directory: Path) -> Detector:
    """The run's detector: given, loaded from ``directory`` (a resumed run), or fitted and saved there."""
    store = run.store
    meta = store.get_meta("detector")
    if dp.loaded is not None and dp.fit_idx is None:  # ready as given: a file's or a caller's threshold
        if meta is None:
            store.set_meta("detector", {"entry": dp.entry, "threshold": float(dp.loaded.threshold)})
        return dp.loaded
    path = directory / DETECTOR_FILE
    if meta is not None and meta.get("entry") == dp.entry and path.is_file():
        return load_detector(path, run.net)
    det, record = fit_detector(run, dp)
    save_detector(det, path)
    store.set_meta("detector", {"entry": dp.entry, **record})
    return det


def detector_bytes(directory: Path, det: Detector) -> bytes:
    """The run's detector as a file's bytes, for the other ranks of a ``torchrun`` group (no shared file system)."""
    path = directory / DETECTOR_FILE
    if not path.is_file():  # a detector given as an object or a file elsewhere: written for the ranks
        with tempfile.TemporaryDirectory() as tmp:
            save_detector(det, Path(tmp) / DETECTOR_FILE)
            return (Path(tmp) / DETECTOR_FILE).read_bytes()
    return path.read_bytes()


def detector_from_bytes(data: bytes, model: nn.Module) -> Detector:
    """:func:`detector_bytes`'s detector, loaded onto this rank's model."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / DETECTOR_FILE).write_bytes(data)
        return load_detector(Path(tmp) / DETECTOR_FILE, model)


__all__ = ["DETECTOR_FILE", "FIT_N", "FPR", "HELDOUT_N", "DetectorPlan", "check_fitted_file", "detector_bytes",
           "detector_from_bytes", "fit_detector", "fit_job", "fit_split", "plan_detector", "ready_detector",
           "split_spec"]
