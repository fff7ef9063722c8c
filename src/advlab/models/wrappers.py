"""Input-transformation defenses as model wrappers: a defended model is still a model.

``wrap_defense(model, "bitdepth:3")`` returns ``Defended(model, BitDepth(3))``, an ``nn.Module``
that maps images in [0, 1] to logits, so every attack and the whole evaluation apply unchanged.

Each transform declares what an adaptive attacker needs to know:

* ``differentiable`` — False where the forward pass has no useful gradient (rounding, JPEG,
  the thermometer's step functions). Naively the wrapper's gradient there is zero (the honest
  gradient of a piecewise-constant function); :meth:`Defended.bpda` gives the Backward Pass
  Differentiable Approximation (Athalye, Carlini, Wagner 2018, https://arxiv.org/abs/1802.00420):
  the true transform forward, a differentiable stand-in backward (identity by default).
* ``randomized`` — True where each call draws new randomness (random resizing and padding); an
  adaptive attacker averages gradients over draws (EOT, Athalye et al. 2018,
  https://arxiv.org/abs/1707.07397). Randomness comes from the wrapper's own seeded generator.

Transforms: random resize + pad (Xie et al. 2018, https://arxiv.org/abs/1711.01991), bit-depth
reduction (Xu, Evans, Qi 2018, https://arxiv.org/abs/1704.01155), median and Gaussian smoothing,
JPEG compression (Dziugaite et al. 2016; Guo et al. 2018, https://arxiv.org/abs/1711.00117),
thermometer encoding (Buckman et al. 2018, https://openreview.net/forum?id=S18Su--CW), and
Defense-GAN's projection onto a generator's range (``defensegan``, :mod:`advlab.models.defense_gan`);
the thermometer needs a network trained on the encoding (``advlab train --model lenet --defense thermometer:16``;
``load_model`` re-wraps such a checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import suggest
from advlab._device import draw
from advlab.models.defense_gan import OPTIMIZERS, STEPS, DefenseGAN
from advlab.models.transform import Transform, int_arg
from advlab.physical import jpeg


def _check_spatial(spec: str, shape: tuple[int, ...], reach: int = 0, what: str = "") -> None:
    """Images C×H×W; a transform reaching ``reach`` pixels around each pixel needs H, W > ``reach``."""
    if len(shape) != 3:
        raise ValueError(f"{spec}: expected images C×H×W, got inputs of shape {tuple(shape)}")
    if reach and reach >= min(shape[1:]):
        raise ValueError(f"{spec}: {what} is too large for {shape[1]}×{shape[2]} images")


class RandomResizePad(Transform):
    """Xie et al. 2018: resize to a random r×r (r ∈ [min_size, H]) and zero-pad at a random offset to H×W.

    The image keeps its size (the classifier is unchanged); each call draws new r and offsets.
    """

    randomized = True

    def __init__(self, min_size: int = 22, seed: int = 0) -> None:
        super().__init__()
        self.min_size = int_arg("resize", "min_size", min_size, 1)
        self.generator = torch.Generator().manual_seed(seed)
        self.spec = f"resize:{self.min_size}"

    def check_input(self, shape: tuple[int, ...]) -> None:  # noqa: D102
        _check_spatial(self.spec, shape)
        if self.min_size > min(shape[1:]):
            raise ValueError(f"resize: min_size must be in [1, {min(shape[1:])}], got {self.min_size}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.check_input(tuple(x.shape[1:]))
        h, w = x.shape[-2:]
        r = int(draw(torch.randint, self.min_size, min(h, w) + 1, (1,), generator=self.generator))
        small = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
        top = int(draw(torch.randint, 0, h - r + 1, (1,), generator=self.generator))
        left = int(draw(torch.randint, 0, w - r + 1, (1,), generator=self.generator))
        return F.pad(small, (left, w - r - left, top, h - r - top))


class BitDepth(Transform):
    """Bit-depth reduction: round every pixel to one of 2^bits levels (input discretisation)."""

    differentiable = False

    def __init__(self, bits: int = 3) -> None:
        super().__init__()
        bits = int_arg("bitdepth", "bits", bits, 1, 16)
        self.levels = 2**bits - 1
        self.spec = f"bitdepth:{bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = torch.round(x * self.levels) / self.levels  # gradient of round() is 0
        return out


class MedianSmoothing(Transform):
    """k×k median filter (reflect padding), per channel. Its gradient flows to the median pixels."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = int_arg("median", "k", k, 1)
        if self.k % 2 == 0:
            raise ValueError(f"median: k must be an odd integer >= 1, got {k!r}")
        self.spec = f"median:{self.k}"

    def check_input(self, shape: tuple[int, ...]) -> None:  # noqa: D102
        _check_spatial(self.spec, shape, self.k // 2, f"a {self.k}×{self.k} window")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.check_input(tuple(x.shape[1:]))
        p = self.k // 2
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        patches = padded.unfold(2, self.k, 1).unfold(3, self.k, 1)
        return patches.flatten(-2).median(dim=-1).values


class GaussianSmoothing(Transform):
    """Gaussian blur with standard deviation ``sigma`` pixels (differentiable)."""

    kernel: torch.Tensor

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        ok = isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma)
        if not ok or sigma <= 0:
            raise ValueError(f"gaussian: sigma must be a finite number > 0, got {sigma!r}")
        self.sigma = float(sigma)
        r = max(1, round(3 * self.sigma))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * self.sigma**2))
        self.register_buffer("kernel", g / g.sum())
        self.spec = f"gaussian:{self.sigma:g}"

    def check_input(self, shape: tuple[int, ...]) -> None:  # noqa: D102
        r = len(self.kernel) // 2
        _check_spatial(self.spec, shape, r, f"sigma {self.sigma:g} (a kernel reaching {r} pixels)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.check_input(tuple(x.shape[1:]))
        c = x.shape[1]
        r = len(self.kernel) // 2
        kh = self.kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
        kv = self.kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kh, groups=c)
        return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kv, groups=c)


class JPEG(Transform):
    """JPEG compression at ``quality`` (Pillow encode/decode round trip): not differentiable."""

    differentiable = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = int_arg("jpeg", "quality", quality, 1, 95)
        self.spec = f"jpeg:{self.quality}"

    def check_input(self, shape: tuple[int, ...]) -> None:  # noqa: D102
        _check_spatial(self.spec, shape)
        if shape[0] not in (1, 3):
            raise ValueError(f"jpeg: expected 1 (grey) or 3 (RGB) channels, got {shape[0]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.check_input(tuple(x.shape[1:]))
        return jpeg(x, self.quality) + 0 * x  # attached to x with a zero gradient, as a non-differentiable op's is


class Thermometer(Transform):
    """Thermometer encoding (Buckman et al. 2018): each pixel → ``levels`` bits [x ≥ i/levels].

    Turns C×H×W into (C·levels)×H×W. BPDA uses the soft thermometer clip(levels·x − i, 0, 1).
    """

    differentiable = False

    def __init__(self, levels: int = 16) -> None:
        super().__init__()
        self.levels = int_arg("thermometer", "levels", levels, 2, 1024)
        self.spec = f"thermometer:{self.levels}"

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(self.levels, dtype=x.dtype, device=x.device).view(1, 1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        hard = (x.unsqueeze(2) * self.levels >= self._grid(x)).to(x.dtype)
        return (hard + 0 * x.unsqueeze(2)).flatten(1, 2)

    def approx(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (x.unsqueeze(2) * self.levels - self._grid(x)).clamp(0, 1).flatten(1, 2)


class Defended(nn.Module):
    """A classifier behind an input transformation: ``model(transform(x))``.

    Args:
        model: The classifier (takes the transform's output).
        transform: The preprocessing.

    The wrapper takes the classifier's mode (eval for a loaded model), so wrapping an eval-mode
    classifier gives an eval-mode model.

    Attributes:
        randomized: Whether a forward pass is random (EOT applies).
        differentiable: Whether the forward pass has a useful gradient (BPDA applies if not).
    """

    def __init__(self, model: nn.Module, transform: Transform) -> None:
        super().__init__()
        shape = declared_input_shape(model)
        if shape is not None and not isinstance(transform, Thermometer):
            transform.check_input(shape)
        self.model = model
        self.transform = transform
        self.randomized = transform.randomized
        self.differentiable = transform.differentiable
        self.advlab_meta = dict(getattr(model, "advlab_meta", {}))
        self.defense_spec = transform.spec
        # The wrapper and its transform in the classifier's mode (a new module would be in training); the
        # classifier's own submodules are left as they are (train() would set every one of them).
        self.training = model.training
        transform.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.model(self.transform(x))
        return out

    def bpda(self, x: torch.Tensor) -> torch.Tensor:
        """Forward through the true transform; backward through its differentiable stand-in."""
        soft = self.transform.approx(x)
        hard = self.transform(x)
        out: torch.Tensor = self.model(soft + (hard - soft).detach())
        return out

    def surrogate(self) -> nn.Module:
        """The model behind the transform where it takes raw images (for transfer checks), else self."""
        return self if isinstance(self.transform, Thermometer) else self.model


def declared_input_shape(model: object) -> tuple[int, ...] | None:
    """The C×H×W images a model takes, from its checkpoint's ``in_shape``; ``None`` if it does not say.

    A network behind a thermometer encoding takes images with ``levels`` times fewer channels
    than its own ``in_shape``.
    """
    meta = getattr(model, "advlab_meta", None)
    kwargs = meta.get("arch_kwargs") if isinstance(meta, dict) else None
    shape = kwargs.get("in_shape") if isinstance(kwargs, dict) else None
    if not isinstance(shape, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in shape):
        return None
    out = tuple(shape)
    while isinstance(model, Defended):
        if isinstance(model.transform, Thermometer) and len(out) == 3 and out[0] % model.transform.levels == 0:
            out = (out[0] // model.transform.levels, *out[1:])
        model = model.model
    return out


def _defense_gan(arg: str | None = None) -> Transform:
    """Defense-GAN on the shipped ``wgan-mnist`` generator; ``arg``: L, OPTIMIZER or OPTIMIZER:L (``momentum:200``)."""
    if arg is None:
        return DefenseGAN()
    parts = arg.split(":")
    if len(parts) == 1:
        opt, steps = ("adam", arg) if arg.isdigit() else (arg, str(STEPS))
    else:
        opt, steps = parts[0], ":".join(parts[1:])
    if opt not in OPTIMIZERS or not steps.isdigit():
        raise ValueError(f"defense: defensegan takes L, OPTIMIZER or OPTIMIZER:L (L an integer, OPTIMIZER one of "
                         f"{', '.join(map(repr, OPTIMIZERS))}), got {arg!r}")
    return DefenseGAN(steps=int(steps), optimizer=opt)


TRANSFORMS: dict[str, tuple[Callable[..., Transform], type]] = {
    "resize": (RandomResizePad, int),
    "bitdepth": (BitDepth, int),
    "median": (MedianSmoothing, int),
    "gaussian": (GaussianSmoothing, float),
    "jpeg": (JPEG, int),
    "thermometer": (Thermometer, int),
    "defensegan": (_defense_gan, str),
}


def parse_defense(spec: str) -> Transform:
    """``"bitdepth:3"`` → ``BitDepth(3)``; ``"median"`` → ``MedianSmoothing()`` (the default)."""
    if not isinstance(spec, str):
        raise TypeError(f"defense: expected a string NAME[:VALUE] such as 'bitdepth:3', got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    if name not in TRANSFORMS:
        raise ValueError(
            f"defense: expected one of {', '.join(repr(t) for t in TRANSFORMS)} (optionally NAME:VALUE), "
            f"got {spec!r}{suggest(name, TRANSFORMS)}"
        )
    build, kind = TRANSFORMS[name]
    if not arg:
        return build()
    try:
        value: Any = kind(arg)
    except ValueError:
        raise ValueError(f"defense: {name} takes a {kind.__name__} value, got {arg!r}") from None
    return build(value)


def wrap_defense(model: nn.Module, spec: str) -> Defended:
    """The model behind the input transformation named by ``spec`` (e.g. ``"bitdepth:3"``).

    Raises:
        TypeError: ``model`` is not a torch module (a ``BlackBox`` cannot be wrapped).
        ValueError: An unknown transform or a bad value, or one that cannot take the images the
            model's checkpoint declares (e.g. ``median:99`` for 28×28 images).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"defense: an input transformation wraps a torch model (nn.Module), got "
                        f"{type(model).__name__}")
    transform = parse_defense(spec)
    if isinstance(transform, Thermometer):
        raise ValueError(
            "defense: thermometer needs a network trained on the encoding; train one with "
            "`advlab train --defense thermometer` and load it by name instead"
        )
    wrapped = Defended(model, transform)
    wrapped.training = False  # an eval-mode wrapper; the model's own submodules keep their modes
    transform.eval()
    return wrapped


__all__ = [
    "JPEG", "TRANSFORMS", "BitDepth", "Defended", "GaussianSmoothing", "MedianSmoothing", "RandomResizePad",
    "Thermometer", "Transform", "declared_input_shape", "parse_defense", "wrap_defense",
]
