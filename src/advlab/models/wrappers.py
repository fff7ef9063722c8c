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
JPEG compression (Dziugaite et al. 2016; Guo et al. 2018, https://arxiv.org/abs/1711.00117) and
thermometer encoding (Buckman et al. 2018, https://openreview.net/forum?id=S18Su--CW), which
needs a network trained on the encoding (``advlab train --model lenet --defense thermometer:16``;
``load_model`` re-wraps such a checkpoint).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab._checks import suggest


class Transform(nn.Module):
    """An input transformation. Subclasses set ``differentiable`` / ``randomized`` and ``spec``."""

    differentiable = True
    randomized = False
    spec = "identity"

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable stand-in used by BPDA on the backward pass (default: identity)."""
        return x


class RandomResizePad(Transform):
    """Xie et al. 2018: resize to a random r×r (r ∈ [min_size, H]) and zero-pad at a random offset to H×W.

    The image keeps its size (the classifier is unchanged); each call draws new r and offsets.
    """

    randomized = True

    def __init__(self, min_size: int = 22, seed: int = 0) -> None:
        super().__init__()
        self.min_size = int(min_size)
        self.generator = torch.Generator().manual_seed(seed)
        self.spec = f"resize:{self.min_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h, w = x.shape[-2:]
        if not 1 <= self.min_size <= min(h, w):
            raise ValueError(f"resize: min_size must be in [1, {min(h, w)}], got {self.min_size}")
        r = int(torch.randint(self.min_size, min(h, w) + 1, (1,), generator=self.generator))
        small = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
        top = int(torch.randint(0, h - r + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, w - r + 1, (1,), generator=self.generator))
        return F.pad(small, (left, w - r - left, top, h - r - top))


class BitDepth(Transform):
    """Bit-depth reduction: round every pixel to one of 2^bits levels (input discretisation)."""

    differentiable = False

    def __init__(self, bits: int = 3) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 16:
            raise ValueError(f"bitdepth: bits must be in [1, 16], got {bits}")
        self.levels = 2 ** int(bits) - 1
        self.spec = f"bitdepth:{int(bits)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = torch.round(x * self.levels) / self.levels  # gradient of round() is 0
        return out


class MedianSmoothing(Transform):
    """k×k median filter (reflect padding), per channel. Its gradient flows to the median pixels."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        if int(k) < 1 or int(k) % 2 == 0:
            raise ValueError(f"median: k must be an odd integer >= 1, got {k}")
        self.k = int(k)
        self.spec = f"median:{self.k}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        p = self.k // 2
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        patches = padded.unfold(2, self.k, 1).unfold(3, self.k, 1)
        return patches.flatten(-2).median(dim=-1).values


class GaussianSmoothing(Transform):
    """Gaussian blur with standard deviation ``sigma`` pixels (differentiable)."""

    kernel: torch.Tensor

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        if float(sigma) <= 0:
            raise ValueError(f"gaussian: sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        r = max(1, round(3 * self.sigma))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        g = torch.exp(-(t**2) / (2 * self.sigma**2))
        self.register_buffer("kernel", g / g.sum())
        self.spec = f"gaussian:{self.sigma:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
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
        if not 1 <= int(quality) <= 95:
            raise ValueError(f"jpeg: quality must be in [1, 95], got {quality}")
        self.quality = int(quality)
        self.spec = f"jpeg:{self.quality}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        from PIL import Image

        arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        out = np.empty_like(arr)
        for i in range(arr.shape[0]):
            img = arr[i, 0] if arr.shape[1] == 1 else arr[i].transpose(1, 2, 0)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=self.quality)
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            out[i] = dec[None] if arr.shape[1] == 1 else dec.transpose(2, 0, 1)
        y = torch.from_numpy(out).to(x.device, x.dtype) / 255
        return y + 0 * x  # attached to x with a zero gradient, as a non-differentiable op's is


class Thermometer(Transform):
    """Thermometer encoding (Buckman et al. 2018): each pixel → ``levels`` bits [x ≥ i/levels].

    Turns C×H×W into (C·levels)×H×W. BPDA uses the soft thermometer clip(levels·x − i, 0, 1).
    """

    differentiable = False

    def __init__(self, levels: int = 16) -> None:
        super().__init__()
        if int(levels) < 2:
            raise ValueError(f"thermometer: levels must be >= 2, got {levels}")
        self.levels = int(levels)
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

    Attributes:
        randomized: Whether a forward pass is random (EOT applies).
        differentiable: Whether the forward pass has a useful gradient (BPDA applies if not).
    """

    def __init__(self, model: nn.Module, transform: Transform) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.randomized = transform.randomized
        self.differentiable = transform.differentiable
        self.advlab_meta = dict(getattr(model, "advlab_meta", {}))
        self.defense_spec = transform.spec

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


TRANSFORMS: dict[str, tuple[Callable[..., Transform], type]] = {
    "resize": (RandomResizePad, int),
    "bitdepth": (BitDepth, int),
    "median": (MedianSmoothing, int),
    "gaussian": (GaussianSmoothing, float),
    "jpeg": (JPEG, int),
    "thermometer": (Thermometer, int),
}


def parse_defense(spec: str) -> Transform:
    """``"bitdepth:3"`` → ``BitDepth(3)``; ``"median"`` → ``MedianSmoothing()`` (the default)."""
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
    """The model behind the input transformation named by ``spec`` (e.g. ``"bitdepth:3"``)."""
    transform = parse_defense(spec)
    if isinstance(transform, Thermometer):
        raise ValueError(
            "defense: thermometer needs a network trained on the encoding; train one with "
            "`advlab train --defense thermometer` and load it by name instead"
        )
    wrapped = Defended(model, transform)
    wrapped.eval()
    return wrapped


__all__ = [
    "JPEG", "TRANSFORMS", "BitDepth", "Defended", "GaussianSmoothing", "MedianSmoothing", "RandomResizePad",
    "Thermometer", "Transform", "parse_defense", "wrap_defense",
]
