"""The clean / poisoned / cleaned comparison behind ``advlab poison`` and benchmarks/poisoning.py.

One run trains a clean model and a poisoned model with the same recipe (:func:`advlab.train.fit`,
same seed), and with a defense a third model on the training set without the flagged examples.
It measures what the report shows: clean Acc@1 of each model, the backdoor's attack success rate
(ASR), STRIP's AUC on triggered vs clean test inputs, the detector's TPR/FPR, the cost of the
poisoning transform against the training run. Models an attack needs (the concentrated flip's
margins, the clean-label PGD, the feature-collision features) are the clean model of the run: the
attacker's surrogate trained on clean data with the victim's recipe.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advlab._checks import suggest
from advlab._device import module_device
from advlab.data import dataset_info, load_dataset
from advlab.models import create_model
from advlab.models.factory import is_factory_spec, seeded_factory
from advlab.models.features import penultimate_features
from advlab.poison.backdoor import badnets, clean_label
from advlab.poison.base import PoisonedData
from advlab.poison.collision import collision_success, feature_collision, fine_tune_head
from advlab.poison.detect import activation_clustering, detection_rates, remove_flagged, spectral_signatures
from advlab.poison.label_flip import concentrated_flip, pair_flip, uniform_flip
from advlab.poison.robust import DEFAULT_DEPTH, robust_activation_clustering, robust_spectral
from advlab.poison.strip import far_at_frr, roc_auc, strip_entropy
from advlab.poison.triggers import apply_trigger, attack_success_rate
from advlab.train import TrainConfig, TrainResult, fit

ATTACKS: dict[str, Callable[..., PoisonedData]] = {
    "badnets": badnets, "clean-label": clean_label, "flip-uniform": uniform_flip, "flip-pair": pair_flip,
    "flip-concentrated": concentrated_flip, "feature-collision": feature_collision,
}
DEFENSES: dict[str, Callable[..., Any]] = {
    "spectral": spectral_signatures, "activation-clustering": activation_clustering,
    "spectral-robust": robust_spectral, "activation-clustering-robust": robust_activation_clustering,
}
# The features each detector reads by default (-o depth=K overrides): the papers' penultimate layer, and
# the layer before it for the robust variants (advlab.poison.robust).
DEPTH = {"spectral-robust": DEFAULT_DEPTH, "activation-clustering-robust": DEFAULT_DEPTH}
# Arguments the experiment supplies itself (never options); and options the experiment reads itself.
_SUPPLIED = {"x", "y", "generator", "model", "num_classes", "target_x", "feats"}
_OWN = {"target_index"}
# A detector reads the input of the depth-th nn.Linear from the end (-o depth=K; 1 = penultimate, the papers').
STRIP_N = 1000  # test inputs of each kind STRIP scores; the pool is the last STRIP_N test images


@dataclass
class Setup:
    """The training recipe shared by the clean, poisoned and cleaned models."""

    arch: str = "lenet"
    dataset: str = "mnist"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    device: str | torch.device | None = None  # where the models train and run (None: the CPU); data stay put
    train: tuple[torch.Tensor, torch.Tensor] = field(default=(torch.empty(0), torch.empty(0)), repr=False)
    test: tuple[torch.Tensor, torch.Tensor] = field(default=(torch.empty(0), torch.empty(0)), repr=False)

    def load(self) -> Setup:
        """Load the dataset's train and test splits (once)."""
        if not len(self.train[0]):
            self.train, self.test = load_dataset(self.dataset, "train"), load_dataset(self.dataset, "test")
        return self

    def config(self) -> TrainConfig:
        """The training loop's settings."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)

    def describe(self) -> dict[str, Any]:
        """The recipe as plain values (no tensors; not the device, which does not change the recipe)."""
        return {k: v for k, v in asdict(self).items() if k not in ("train", "test", "device")}


def train_on(setup: Setup, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> TrainResult:
    """A fresh model of the recipe's architecture trained on ``(x, y)`` and scored on the test split."""
    if is_factory_spec(setup.arch):  # your network: its own initialisation, drawn under the recipe's seed
        return fit(seeded_factory(setup.arch, setup.seed), (x, y), setup.test, setup.config(), progress=progress,
                   device=setup.device, init_seed=False)
    info = dataset_info(setup.dataset)
    model = create_model(setup.arch, in_shape=info.shape, num_classes=info.num_classes)
    return fit(model, (x, y), setup.test, setup.config(), progress=progress, device=setup.device)


def split_options(attack: str, defense: str | None, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route ``-o`` options to the attack or the defense by their parameter names.

    An option neither takes fails with one line naming the closest names.
    """
    if attack not in ATTACKS:
        raise ValueError(f"--attack: unknown poisoning attack {attack!r}; known: {', '.join(ATTACKS)}"
                         f"{suggest(attack, ATTACKS)}")
    if defense is not None and defense not in DEFENSES:
        raise ValueError(f"--defense: expected one of {', '.join(DEFENSES)}, got {defense!r}"
                         f"{suggest(defense, DEFENSES)}")
    names_a = [n for n in inspect.signature(ATTACKS[attack]).parameters if n not in _SUPPLIED]
    names_a += sorted(_OWN) if attack == "feature-collision" else []
    names_d = [n for n in inspect.signature(DEFENSES[defense]).parameters if n not in _SUPPLIED] if defense else []
    names_d += ["depth"] if defense else []
    a_kw, d_kw = {}, {}
    for key, value in options.items():
        if key in names_a:
            a_kw[key] = value
        elif key in names_d:
            d_kw[key] = value
        else:
            raise ValueError(f"-o/--option: {attack}{' and ' + defense if defense else ''} take no option {key!r}"
                             f"{suggest(key, names_a + names_d)}; options: {', '.join(names_a + names_d)}")
    params = inspect.signature(ATTACKS[attack]).parameters
    needed = [n for n in names_a if n in params and params[n].default is inspect.Parameter.empty and n not in a_kw]
    if needed:
        examples = {"fraction": "0.01", "target": "7", "base_class": "3"}
        wanted = [f"-o {n}={examples.get(n, '…')}" for n in needed]
        raise ValueError(f"-o/--option: {attack} needs {', '.join(wanted)}")
    return a_kw, d_kw


def collision_target(setup: Setup, options: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The feature-collision options with ``target_x`` filled from test image ``target_index``.

    The default target is the first test image whose class is not ``base_class``.
    """
    kw = dict(options)
    xt, yt = setup.test
    if "base_class" not in kw:
        raise ValueError("-o/--option: feature-collision needs -o base_class=CLASS (the class the target should get)")
    index = kw.pop("target_index", None)
    if index is None:
        index = int((yt != kw["base_class"]).nonzero()[0])
    if not isinstance(index, int) or not 0 <= index < len(yt):
        raise ValueError(f"target_index: expected a test image index in [0, {len(yt)}), got {index!r}")
    kw["target_x"] = xt[index]
    return kw, index


def make_poison(setup: Setup, attack: str, options: dict[str, Any], surrogate: nn.Module | None,
                seed: int) -> tuple[PoisonedData, float]:
    """Poison the training set; returns the poisoned set and the transform's wall time (s)."""
    fn = ATTACKS[attack]
    kw = dict(options)
    if "model" in inspect.signature(fn).parameters:
        kw["model"] = surrogate
    start = time.perf_counter()
    p = fn(*setup.train, generator=torch.Generator().manual_seed(seed), **kw)
    return p, time.perf_counter() - start


def backdoor_metrics(model: nn.Module, p: PoisonedData, setup: Setup, seed: int = 0) -> dict[str, float]:
    """ASR of the trigger and STRIP's separation of triggered from clean test inputs."""
    xt, yt = setup.test
    out = {"asr": attack_success_rate(model, xt, yt, p.trigger, p.target)}
    probe, pool = xt[:STRIP_N], xt[-STRIP_N:]
    others = probe[yt[:STRIP_N] != p.target] if p.target is not None else probe
    gen = torch.Generator().manual_seed(seed)
    clean = strip_entropy(model, probe, pool, generator=gen)
    triggered = strip_entropy(model, apply_trigger(others, p.trigger), pool, generator=gen)
    out["strip_auc"] = roc_auc(-triggered, -clean)  # low entropy = suspect
    out["strip_miss_at_1pct"] = far_at_frr(-triggered, -clean, 0.01)
    return out


def defend(setup: Setup, name: str, options: dict[str, Any], model: nn.Module, p: PoisonedData,
           progress: bool = False) -> dict[str, Any]:
    """Flag suspected poisons with the poisoned model's features, retrain without them, measure."""
    kw = dict(options)
    depth = kw.pop("depth", DEPTH.get(name, 1))
    start = time.perf_counter()
    det = DEFENSES[name](penultimate_features(model, p.x, depth=depth), p.y, **kw)
    detect_seconds = time.perf_counter() - start
    inspected = p.target if p.target is not None else None
    out: dict[str, Any] = {"name": name, "options": options, **detection_rates(det, p.mask, p.y, inspected),
                           "depth": depth, "detect_seconds": detect_seconds}
    result = train_on(setup, *remove_flagged(p.x, p.y, det), progress=progress)
    out.update(acc1=result.acc1, seconds=result.seconds)
    if p.trigger is not None:
        out["asr"] = attack_success_rate(result.model, *setup.test, p.trigger, p.target)
    return out


@dataclass
class Outcome:
    """What :func:`run_experiment` measured (``summary``: plain values) and example images for the report.

    ``examples`` is K×2×C×H×W: each poisoned training example before and after the attack.
    """

    summary: dict[str, Any]
    examples: torch.Tensor
    labels: torch.Tensor  # K×2: each example's label before and after


def _examples(setup: Setup, p: PoisonedData, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    idx = p.poisoned_idx[:k]
    return torch.stack([setup.train[0][idx], p.x[idx]], 1), torch.stack([setup.train[1][idx], p.y[idx]], 1)


def _model_summary(result: TrainResult) -> dict[str, Any]:
    return {"acc1": result.acc1, "seconds": result.seconds}


def sweep_point(setup: Setup, attack: str, options: dict[str, Any], surrogate: nn.Module | None) -> dict[str, Any]:
    """Poison at one fraction, train, and measure clean Acc@1 (and ASR for a backdoor)."""
    p, _ = make_poison(setup, attack, options, surrogate, setup.seed)
    result = train_on(setup, p.x, p.y)
    out: dict[str, Any] = {"fraction": options["fraction"], "poisons": len(p.poisoned_idx), "acc1": result.acc1}
    if p.trigger is not None:
        out["asr"] = attack_success_rate(result.model, *setup.test, p.trigger, p.target)
    return out


def run_collision(setup: Setup, options: dict[str, Any], clean: TrainResult) -> Outcome:
    """Feature collision: fine-tune the clean model's head on the clean and on the poisoned set, compare."""
    kw, index = collision_target(setup, options)
    p, seconds = make_poison(setup, "feature-collision", kw, clean.model, setup.seed)
    config = setup.config()
    victims = {"clean": fine_tune_head(clean.model, *setup.train, config),
               "poisoned": fine_tune_head(clean.model, p.x, p.y, config)}
    summary: dict[str, Any] = {"attack": "feature-collision", "params": p.params, "poisons": len(p.poisoned_idx),
                               "n_train": len(p.y), "poison_seconds": seconds, "target_index": index}
    dev = module_device(clean.model)
    for name, victim in victims.items():
        acc = float((victim(setup.test[0].to(dev)).argmax(1).cpu() == setup.test[1].cpu()).float().mean())
        pred = int(victim(p.extra["target_x"].to(dev)).argmax(1))
        summary[name] = {"acc1": acc, "target_pred": pred, "success": collision_success(victim, p)}
    summary["target_class"] = int(setup.test[1][index])
    return Outcome(summary, *_examples(setup, p))


def run_experiment(setup: Setup, attack: str, options: dict[str, Any], *, defense: str | None = None,
                   defense_options: dict[str, Any] | None = None, sweep: tuple[float, ...] = (),
                   clean: TrainResult | None = None, progress: bool = False) -> Outcome:
    """Train clean and poisoned (and, with a defense, cleaned) models with one recipe and measure them.

    Args:
        setup: The recipe and data.
        attack: A name from :data:`ATTACKS`.
        options: The attack's keyword options (``fraction`` and the attack's own).
        defense: A name from :data:`DEFENSES`, or None.
        defense_options: The defense's keyword options.
        sweep: Poison fractions at which to repeat the attack (ASR / accuracy against fraction).
        clean: A clean model already trained with this recipe (trained here when None).
        progress: Show training progress bars.
    """
    setup.load()
    clean = clean if clean is not None else train_on(setup, *setup.train, progress)
    if attack == "feature-collision":
        return run_collision(setup, options, clean)
    p, seconds = make_poison(setup, attack, options, clean.model, setup.seed)
    poisoned = train_on(setup, p.x, p.y, progress)
    summary: dict[str, Any] = {
        "attack": attack, "params": p.params, "poisons": len(p.poisoned_idx), "n_train": len(p.y),
        "poison_seconds": seconds, "poison_share_of_training": seconds / poisoned.seconds,
        "clean": _model_summary(clean), "poisoned": _model_summary(poisoned), "setup": setup.describe(),
    }
    if p.trigger is not None:
        summary["clean"]["asr"] = attack_success_rate(clean.model, *setup.test, p.trigger, p.target)
        summary["poisoned"].update(backdoor_metrics(poisoned.model, p, setup, setup.seed))
    if defense is not None:
        summary["defense"] = defend(setup, defense, defense_options or {}, poisoned.model, p, progress)
    if sweep:
        main = {"fraction": options["fraction"], "poisons": summary["poisons"], "acc1": poisoned.acc1}
        main.update({"asr": summary["poisoned"]["asr"]} if p.trigger is not None else {})
        summary["sweep"] = [main if f == options["fraction"] else
                            sweep_point(setup, attack, {**options, "fraction": f}, clean.model) for f in sweep]
    return Outcome(summary, *_examples(setup, p))


__all__ = ["ATTACKS", "DEFENSES", "DEPTH", "Outcome", "Setup", "backdoor_metrics", "collision_target", "defend",
           "make_poison", "run_collision", "run_experiment", "split_options", "sweep_point", "train_on"]
