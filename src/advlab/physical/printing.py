"""Printing an image and photographing it, simulated: does an adversarial example survive?

Kurakin, Goodfellow, Bengio 2017, "Adversarial examples in the physical world",
https://arxiv.org/abs/1607.02533: adversarial images were printed, photographed with a phone,
cropped and rectified from markers on the page, and classified again. :func:`print_photo` is that
pipeline in simulation, per image and deterministic under a generator:

1. **print** — the printer's gamut: black ink is not 0 nor paper 1 (``ink``, ``paper`` levels),
   dot gain darkens mid-tones (a gamma), and each ink channel has its own gain error;
2. **photograph** — the rectified sheet is still slightly off: a small perspective (yaw, pitch),
   rotation, scale and shift (the edges repeat, as the crop is from a larger photo), uneven light
   across the sheet (a linear shading), the exposure (light, contrast) and white balance (per
   channel), the lens and the down-sampling to the model's size (Gaussian blur), sensor noise;
3. **JPEG** — the phone stores the photo as a JPEG (Pillow, quality drawn per image): not
   differentiable, a test pipeline.

``severity`` scales every deviation from the neutral setting (0: the image itself, exactly;
1: the ranges of :class:`PrintPhoto`). :func:`print_photo_table` runs Kurakin's experiment:
FGSM and BIM at several ε, clean and adversarial images through the same print and photo, and
the *destruction rate* — among images whose clean version is classified correctly before and
after the pipeline and whose adversarial version fooled the model before it, the share the model
classifies correctly after it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from advlab._checks import check_images, check_nonneg, check_positive_int
from advlab._device import draw
from advlab.metrics import predict_logits
from advlab.physical.camera import warp
from advlab.physical.conditions import Conditions
from advlab.physical.photometry import photometric
from advlab.threat import ThreatModel

__all__ = ["PAPER_KURAKIN", "PhotoRun", "PrintPhoto", "destruction", "jpeg", "kurakin_bim", "print_photo",
           "print_photo_runs", "print_photo_table", "summarise"]

PAPER_KURAKIN = ("Kurakin, Goodfellow, Bengio 2017, Adversarial examples in the physical world, "
                 "https://arxiv.org/abs/1607.02533")
Range = tuple[float, float]


@dataclass(frozen=True)
class PrintPhoto:
    """The print-and-photo ranges at severity 1 (each drawn uniformly per image; neutral in brackets).

    ``ink`` (0) and ``paper`` (1) are the printed black and white levels; ``gamma`` (1) the dot
    gain; ``ink_gain`` (1) the per-channel print colour error; ``yaw``, ``pitch``, ``roll`` (0)
    degrees; ``scale`` (1); ``shift`` (0) pixels; ``shading`` (0) the light's change across the
    sheet, as a share; ``light``, ``contrast``, ``white`` (1: white balance per channel);
    ``blur`` (0) pixels; ``noise`` (0) std; ``quality`` JPEG quality (none at severity 0).
    """

    ink: Range = (0.03, 0.10)
    paper: Range = (0.88, 0.97)
    gamma: Range = (1.0, 1.25)
    ink_gain: Range = (0.93, 1.07)
    yaw: Range = (-4.0, 4.0)
    pitch: Range = (-4.0, 4.0)
    roll: Range = (-2.0, 2.0)
    scale: Range = (0.97, 1.03)
    shift: Range = (-0.7, 0.7)
    shading: Range = (-0.1, 0.1)
    light: Range = (0.9, 1.15)
    contrast: Range = (0.9, 1.05)
    white: Range = (0.95, 1.05)
    blur: Range = (0.3, 0.8)
    noise: Range = (0.005, 0.02)
    quality: tuple[int, int] = (70, 95)

    def neutral(self, name: str) -> float:
        """The value of ``name`` that changes nothing."""
        return 0.0 if name in {"ink", "yaw", "pitch", "roll", "shift", "shading", "blur", "noise"} else 1.0


def _uniform(rng: Range, neutral: float, severity: float, shape: tuple[int, ...],
             generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform in the range scaled towards ``neutral`` by ``severity`` (0: exactly neutral)."""
    low, high = (neutral + severity * (v - neutral) for v in rng)
    return low + (high - low) * draw(torch.rand, shape, generator=generator, device=device)


def _draws(n: int, c: int, severity: float, spec: PrintPhoto, generator: torch.Generator | None,
           device: torch.device) -> dict[str, torch.Tensor]:
    """Every per-image quantity of the pipeline, drawn in a fixed order."""
    out = {}
    for f in fields(spec):
        if f.name == "quality":
            continue
        per_channel = f.name in {"ink_gain", "white"}
        two = f.name in {"shift", "shading"}
        shape = (n, c) if per_channel else (n, 2) if two else (n,)
        out[f.name] = _uniform(getattr(spec, f.name), spec.neutral(f.name), severity, shape, generator, device)
    q_low, q_high = spec.quality
    out["quality"] = draw(torch.randint, q_low, q_high + 1, (n,), generator=generator)
    return out


def _printed(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The printer: dot gain, gamut compression between ink and paper, per-channel ink error."""
    gamma = p["gamma"][:, None, None, None]
    toned = torch.where(gamma == 1, x, x.clamp(min=0).pow(gamma))
    ink, paper = p["ink"][:, None, None, None], p["paper"][:, None, None, None]
    return (ink + (paper - ink) * toned) * p["ink_gain"][:, :, None, None]


def _shading(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """Light falling off linearly across the sheet: × (1 + sx·(x − ½) + sy·(y − ½)), in image fractions."""
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h - 0.5
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w - 0.5
    s = slope.to(x.dtype)
    field = 1 + s[:, 0, None, None] * xs[None, None, :] + s[:, 1, None, None] * ys[None, :, None]
    return x * field[:, None]


def jpeg(x: torch.Tensor, quality: int | torch.Tensor) -> torch.Tensor:
    """Each image through a Pillow JPEG round trip at ``quality`` (one int, or one per image), as 8-bit levels.

    Grey (1 channel) and RGB (3 channels) images only; a new tensor on ``x``'s device, detached from it.
    The one JPEG codec of advlab: the printed photo, the signs data, and the ``jpeg`` defenses use it.
    """
    from PIL import Image

    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg: expected N×C×H×W images with 1 (grey) or 3 (RGB) channels, got {tuple(x.shape)}")
    qualities = [int(quality)] * len(x) if isinstance(quality, int) else [int(q) for q in quality]
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):  # Pillow codes one image at a time
        img = arr[i, 0] if arr.shape[1] == 1 else arr[i].transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=qualities[i])
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = dec[None] if arr.shape[1] == 1 else dec.transpose(2, 0, 1)
    return torch.from_numpy(out).to(x.device, x.dtype) / 255


def print_photo(x: torch.Tensor, *, generator: torch.Generator | None = None, severity: float = 1.0,
                spec: PrintPhoto | None = None) -> torch.Tensor:
    """``x`` (N×C×H×W in [0, 1], C = 1 or 3) printed, photographed, rectified and stored as JPEG.

    Deterministic under ``generator`` (the same generator state gives the same print and photo,
    so a clean image and its adversarial version can go through the same one). ``severity`` 0
    returns ``x`` exactly. See the module docstring for the steps and :class:`PrintPhoto` for
    the ranges.
    """
    check_images("x", x, (0.0, 1.0))
    severity = check_nonneg("severity", severity)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x: expected N×C×H×W images with 1 or 3 channels, got shape {tuple(x.shape)}")
    if severity == 0:
        return x.clone()
    n, c, h, w = x.shape
    p = _draws(n, c, severity, spec or PrintPhoto(), generator, x.device)
    centre = torch.tensor([w / 2, h / 2], device=x.device) + p["shift"]
    cond = Conditions(width=w * p["scale"], yaw=p["yaw"], pitch=p["pitch"], roll=p["roll"], centre=centre,
                      light=p["light"], contrast=p["contrast"], colour=p["white"], blur=p["blur"], noise=p["noise"])
    sheet = warp(_printed(x, p), cond, (h, w), padding="border", prefilter=False)
    photo = photometric(_shading(sheet, p["shading"]), cond, generator=generator)
    return jpeg(photo, p["quality"])


def kurakin_bim(eps: float) -> dict[str, Any]:
    """Kurakin et al.'s BIM setting for ε in [0, 1] pixels: step 1/255, min(255ε + 4, 1.25·255ε) steps."""
    e = 255 * eps
    return {"steps": max(1, round(min(e + 4, 1.25 * e))), "step_size": 1 / 255}


def destruction(clean_ok: torch.Tensor, adv_ok: torch.Tensor, clean_photo_ok: torch.Tensor,
                adv_photo_ok: torch.Tensor) -> tuple[int, int]:
    """Kurakin's destruction rate's counts (destroyed, base); photo tensors may be draws × N.

    base: clean right before and after the pipeline, adversarial wrong before; destroyed: of
    those, adversarial right after.
    """
    base = clean_ok & ~adv_ok & clean_photo_ok
    return int((base & adv_photo_ok).sum()), int(base.sum())


Attack = Callable[..., Any]


def _judge(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
           batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: classified correctly, and the margin max_{i≠y} z_i − z_y (positive: misclassified)."""
    with torch.no_grad():
        z = predict_logits(model, x, batch_size)
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return z.argmax(1) == y, other - true


def _photos(x: torch.Tensor, seed: int, draws: int, severity: float, spec: PrintPhoto | None) -> list[torch.Tensor]:
    """``draws`` photos of ``x``; photo k of any batch of the same shape uses the same print and camera."""
    return [print_photo(x, generator=torch.Generator().manual_seed(seed + k), severity=severity, spec=spec)
            for k in range(draws)]


@dataclass(frozen=True)
class PhotoRun:
    """One (attack, ε) of the experiment, per image (N) and photo (draws × N).

    ``ok``/``margin``: the (adversarial) images classified correctly, and their margin
    max_{i≠y} z_i − z_y, before the pipeline; ``photo_ok``: correctly after it, per photo. The
    clean images' own run has attack "clean" and ε 0. ``x_adv`` is kept for figures.
    """

    attack: str
    eps: float
    ok: torch.Tensor
    margin: torch.Tensor
    photo_ok: torch.Tensor
    x_adv: torch.Tensor


def summarise(clean: PhotoRun, run: PhotoRun) -> dict[str, Any]:
    """A table row: accuracies before and after, and Kurakin's destruction rate of ``run`` against ``clean``."""
    base = clean.ok & ~run.ok & clean.photo_ok  # draws × N
    destroyed, counted = destruction(clean.ok, run.ok, clean.photo_ok, run.photo_ok)
    in_base = run.margin.expand_as(base)[base]
    return {
        "attack": run.attack, "eps": run.eps, "n": len(run.ok), "draws": len(run.photo_ok),
        "clean_acc": float(clean.ok.float().mean()), "clean_photo_acc": float(clean.photo_ok.float().mean()),
        "adv_acc": float(run.ok.float().mean()), "adv_photo_acc": float(run.photo_ok.float().mean()),
        "base": counted, "destroyed": destroyed,
        "destruction_rate": destroyed / counted if counted else float("nan"),
        "survival_rate": (counted - destroyed) / counted if counted else float("nan"),
        "margin_median": float(in_base.median()) if counted else float("nan"),
    }


def _run(model: Callable[[torch.Tensor], torch.Tensor], name: str, eps: float, x_adv: torch.Tensor, y: torch.Tensor,
         photo: Callable[[torch.Tensor], list[torch.Tensor]], batch_size: int) -> PhotoRun:
    ok, margin = _judge(model, x_adv, y, batch_size)
    photo_ok = torch.stack([_judge(model, p, y, batch_size)[0] for p in photo(x_adv)])
    return PhotoRun(name, eps, ok, margin, photo_ok, x_adv)


def print_photo_runs(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     eps_list: Sequence[float], attacks: Mapping[str, Attack], *, severity: float = 1.0,
                     draws: int = 1, seed: int = 0, batch_size: int = 500,
                     spec: PrintPhoto | None = None) -> list[PhotoRun]:
    """The experiment's per-image outcomes: the clean run first, then one per (attack, ε).

    Arguments as for :func:`print_photo_table`, which aggregates these runs.
    """
    check_images("x", x, (0.0, 1.0))
    check_positive_int("draws", draws)
    check_positive_int("batch_size", batch_size)
    if len(y) != len(x):
        raise ValueError(f"y: expected {len(x)} labels, one per image, got {len(y)}")

    def photo(images: torch.Tensor) -> list[torch.Tensor]:
        return _photos(images, seed, draws, severity, spec)

    runs = [_run(model, "clean", 0.0, x, y, photo, batch_size)]
    for name, attack in attacks.items():
        for eps in eps_list:
            threat = ThreatModel("linf", float(eps))
            x_adv = attack(model, x, y, threat, generator=torch.Generator().manual_seed(seed)).x_adv
            runs.append(_run(model, name, float(eps), x_adv, y, photo, batch_size))
    return runs


def print_photo_table(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      eps_list: Sequence[float], attacks: Mapping[str, Attack], *, severity: float = 1.0,
                      draws: int = 1, seed: int = 0, batch_size: int = 500,
                      spec: PrintPhoto | None = None) -> list[dict[str, Any]]:
    """Kurakin et al.'s print-and-photo experiment: one row per (attack, ε), L∞.

    Args:
        model: The classifier (not changed).
        x: The images (N×C×H×W in [0, 1], C = 1 or 3); Kurakin used images the model classifies
            correctly.
        y: Their labels.
        eps_list: The L∞ budgets.
        attacks: Name → attack with advlab's call contract, ``fn(model, x, y, threat, *,
            generator) -> AttackResult``, e.g. ``{"fgsm": fgsm, "bim": partial(bim, steps=…)}``
            (see :func:`kurakin_bim` for the paper's BIM setting).
        severity: Of the pipeline (:func:`print_photo`).
        draws: Photos per image; photo k of a clean image and of its adversarial versions share
            the print and camera draws (as images printed on one page and photographed together).
        seed: Seeds the attacks and the photos.
        batch_size: Images per forward pass when classifying.
        spec: The pipeline's ranges (default :class:`PrintPhoto`).

    Returns rows with ``attack``, ``eps``, ``n``, ``draws``, ``clean_acc``, ``clean_photo_acc``,
    ``adv_acc``, ``adv_photo_acc`` (accuracy before and after the pipeline), ``base`` (pairs
    counted: clean right before and after, adversarial wrong before; summed over draws),
    ``destroyed`` (of those, adversarial right after), ``destruction_rate`` = destroyed / base
    and ``survival_rate`` = 1 − destruction_rate (NaN where base is 0), ``margin_median`` (the
    median logit margin max_{i≠y} z_i − z_y of the counted adversarial examples before the
    pipeline: how deep into a wrong class they were). The first row is the clean images
    (``attack`` "clean", ε 0).
    """
    runs = print_photo_runs(model, x, y, eps_list, attacks, severity=severity, draws=draws, seed=seed,
                            batch_size=batch_size, spec=spec)
    return [summarise(runs[0], run) for run in runs]
