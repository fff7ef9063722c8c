"""Defense-GAN: classify the projection of the input onto a generator's range.

Samangouei, Kabkab, Chellappa 2018, "Defense-GAN: Protecting Classifiers Against Adversarial
Attacks Using Generative Models", https://arxiv.org/abs/1805.06605. For an input x, R random
starting points z₀ ~ N(0, I) each take L steps of gradient descent on ‖G(z) − x‖²₂; the restart
with the smallest final error gives z*, and the classifier sees G(z*) instead of x.

Two descents, both batched over inputs × restarts in one tensor with every step per-row (the rows of a
batch stay independent), chosen by ``optimizer``:

* ``"adam"`` (the default): z₀ ~ N(0, I), Adam (lr :data:`LR`) on the sum of squared errors
  ‖G(z) − x‖²₂; the image returned is G(z) after the last step.
* ``"momentum"``: the authors' released code (github.com/kabkabm/defensegan, ``models/gan.py``
  ``reconstruct``, commit 7e3feae), re-written here: z₀ ~ N(0, I/latent_dim) (``stddev =
  sqrt(1/latent_dim)``, l. 375), momentum SGD (momentum 0.7, l. 389-390) with lr :data:`REF_LR` =
  REC_LR = 10 (``experiments/cfgs/gans/mnist.yml``) on the per-image MEAN squared error (l. 411-414:
  ``reduce_mean`` over C, H, W, summed over the batch, so each row's gradient is its own), and the
  restart kept is the one with the smallest error of the image the last step started from (the loop
  returns G(z) and its loss computed before that step's update, l. 416-421, and takes the argmin of
  that loss, l. 440). The code's staircase decay ×0.1 at ceil(0.8·L) steps (l. 380-385) never takes
  effect: its global step is the variable ``rec_iter_const`` (l. 363), which nothing assigns — the
  ``while_loop`` (l. 432-435) only reads it as the start of its own loop tensor ``i`` and increments
  that (``tf.add(i, 1)``, l. 420) — so the rate is 10 throughout, as here. The mapping onto advlab is
  exact: the reference's MNIST pipeline works in [0, 1] (``input_transform`` divides by 255, l.
  684-685; its generator ends in a sigmoid, ``models/dataset_models.py`` l. 69; the config key
  ``INPUR_TRANSFORM_TYPE: 1`` is misspelt and read by nothing, and ``input_transform_type`` is read by
  no code either), as advlab's images and generators do, so its per-pixel MSE is ours and its lr
  applies unchanged: lr 10 on the mean over C·H·W = 784 pixels is lr 10/784 on our sum of squares.
  (Had it worked in [−1, 1], its per-pixel error would be (2G − 1 − (2x − 1))² = 4(G − x)², 4× ours,
  and the equivalent lr on our [0, 1] mean would be 4 × 10.) PyTorch's SGD momentum (no dampening,
  buffer = first gradient) is TensorFlow's MomentumOptimizer step for step. What does not carry over
  is the generator: the reference's is a DCGAN-style network with latent_dim 128; advlab's is its own.

The paper's two classifiers: *Defense-GAN-Orig*, trained on the images (any model wrapped here), and
*Defense-GAN-Rec*, trained on the generator's projections of them (``advlab train --defense
defensegan-rec``; shipped as ``lenet-mnist-defgan-rec``, which ``load_model`` returns behind the projection).

As a transform it declares ``differentiable = False`` — its forward pass runs an inner
optimisation, and the wrapper's autograd gradient is zero (the projection is attached to x with a
zero gradient, as a non-differentiable op's output is) — with BPDA's stand-in the identity
(Athalye, Carlini, Wagner 2018, https://arxiv.org/abs/1802.00420, §5.3: G(z*) ≈ x), and
``randomized = True``: each call draws new starting points from the transform's own seeded
generator.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from advlab._grad_mode import with_autograd
from advlab.models.gan import Generator, load_generator
from advlab.models.transform import Transform, int_arg

PAPER = ("Samangouei, Kabkab, Chellappa 2018, Defense-GAN: Protecting Classifiers Against Adversarial Attacks "
         "Using Generative Models, https://arxiv.org/abs/1805.06605")
STEPS = 200  # L: gradient steps per restart (Samangouei et al.'s MNIST setting)
RESTARTS = 10  # R: random restarts (Samangouei et al.'s MNIST setting)
LR = 0.1  # Adam's step on z
REF_LR = 10.0  # the reference code's REC_LR: momentum SGD's step on the per-image mean squared error
REF_MOMENTUM = 0.7  # the reference code's momentum
OPTIMIZERS = ("adam", "momentum")
CHUNK = 256  # inputs projected at once (CHUNK × R rows in one tensor)


def check_options(optimizer: str, lr: float | None, init_std: float | None) -> tuple[str, float | None, float | None]:
    """``(optimizer, lr, init_std)`` checked (None keeps the optimizer's default), else a one-line ValueError."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"defensegan: optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {optimizer!r}")
    for name, v in (("lr", lr), ("init_std", init_std)):
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if v is not None and not (number and math.isfinite(v) and v > 0):
            raise ValueError(f"defensegan: {name} must be a finite number > 0, got {v!r}")
    return optimizer, None if lr is None else float(lr), None if init_std is None else float(init_std)


def default_lr(optimizer: str) -> float:
    """The step on z when none is given: :data:`LR` for Adam, :data:`REF_LR` for the reference's momentum SGD."""
    return LR if optimizer == "adam" else REF_LR


def _starts(d: int, n: int, restarts: int, optimizer: str, init_std: float | None, rng: torch.Generator | None,
            z0: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """R×N×d starting points: ``z0`` if given, else N(0, init_std²·I) (default std 1 for Adam, 1/√d for momentum)."""
    if z0 is not None:
        if tuple(z0.shape) != (restarts, n, d):
            raise ValueError(f"defensegan: z0 must have shape {restarts}×{n}×{d} (restarts × inputs × latent_dim), "
                             f"got {'×'.join(map(str, z0.shape))}")
        return z0.detach().to(device=device, dtype=torch.float32)
    std = init_std if init_std is not None else (1.0 if optimizer == "adam" else 1.0 / math.sqrt(d))
    return (torch.randn(restarts, n, d, generator=rng) * std).to(device)


@with_autograd
def project(generator: nn.Module, x: torch.Tensor, *, steps: int = STEPS, restarts: int = RESTARTS,
            lr: float | None = None, rng: torch.Generator | None = None, optimizer: str = "adam",
            init_std: float | None = None, z0: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best of R descents on ‖G(z) − x‖², for every input at once (see the module's docstring).

    Args:
        generator: z (N×latent_dim) → images like ``x``; its parameters are not changed.
        x: Images N×C×H×W.
        steps: L, steps per restart.
        restarts: R, random starting points per input.
        lr: The step on z (None: :data:`LR` for Adam on the sum of squares, :data:`REF_LR` for momentum on
            the per-image mean).
        rng: Where z₀ is drawn from (a CPU generator; None: the global stream).
        optimizer: ``"adam"`` or ``"momentum"`` (the authors' released code).
        init_std: z₀'s standard deviation (None: 1 for Adam, 1/√latent_dim for momentum).
        z0: Given starting points R×N×latent_dim instead of drawn ones.

    Returns:
        ``(G(z*), z*, error)``: the projections (detached), the latent codes that made them and the
        squared L2 error ‖G(z*) − x‖² per input.
    """
    optimizer, lr, init_std = check_options(optimizer, lr, init_std)
    d, n = int(getattr(generator, "latent_dim", 0)), len(x)
    start = _starts(d, n, restarts, optimizer, init_std, rng, z0, x.device)
    target = x.detach().unsqueeze(0).expand(restarts, *x.shape).reshape(restarts * n, *x.shape[1:])
    z = start.reshape(restarts * n, d).clone().requires_grad_(True)
    mean = None  # Adam: the sum of squares; momentum: the per-image mean (1 / pixels)
    step_size = default_lr(optimizer) if lr is None else lr
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([z], lr=step_size)
    else:
        opt = torch.optim.SGD([z], lr=step_size, momentum=REF_MOMENTUM)
        mean = 1.0 / max(1, x[0].numel())
    last = None
    with torch.enable_grad():
        for step in range(steps):
            out = generator(z)
            err = (out - target).flatten(1).pow(2).sum(1)
            opt.zero_grad(set_to_none=True)
            (err.sum() if mean is None else err.sum() * mean).backward()
            if mean is not None and step == steps - 1:  # the reference returns the image its last step started from
                last = (out.detach(), z.detach().clone(), err.detach())
            opt.step()
    with torch.no_grad():
        if last is None:
            out = generator(z)
            last = (out, z.detach(), (out - target).flatten(1).pow(2).sum(1))
        out, zs, err = last[0], last[1], last[2].view(restarts, n)
        best = err.argmin(0)
        rows = best * n + torch.arange(n, device=x.device)
        return out[rows], zs[rows], err[best, torch.arange(n, device=x.device)]


class DefenseGAN(Transform):
    """Project onto the generator's range (L steps × R restarts) before classifying.

    Args:
        generator: A :class:`~advlab.models.gan.Generator` (or any module with ``latent_dim``
            mapping z to images), or a generator name or path for :func:`load_generator`.
        steps: L, gradient steps per restart.
        restarts: R, random restarts per input.
        lr: The step on z (None: the optimizer's default, :data:`LR` or :data:`REF_LR`).
        seed: Seeds the transform's own generator of starting points.
        optimizer: ``"adam"`` or ``"momentum"`` (the authors' released code; see the module's docstring).
        init_std: The starting points' standard deviation (None: the optimizer's default).
    """

    differentiable = False
    randomized = True

    def __init__(self, generator: nn.Module | str | os.PathLike[str] = "wgan-mnist", steps: int = STEPS,
                 restarts: int = RESTARTS, lr: float | None = None, seed: int = 0, optimizer: str = "adam",
                 init_std: float | None = None) -> None:
        super().__init__()
        g = load_generator(generator) if isinstance(generator, (str, os.PathLike)) else generator
        if not isinstance(g, nn.Module) or not isinstance(getattr(g, "latent_dim", None), int):
            raise TypeError(f"defensegan: expected a generator module with an integer latent_dim, got "
                            f"{type(g).__name__}")
        self.steps = int_arg("defensegan", "steps", steps, 1)
        self.restarts = int_arg("defensegan", "restarts", restarts, 1)
        self.optimizer, lr, self.init_std = check_options(optimizer, lr, init_std)
        self.lr = lr if lr is not None else default_lr(self.optimizer)
        g.eval()
        g.requires_grad_(False)
        self.generator = g
        self.latent_dim = int(getattr(g, "latent_dim", 0))
        self.rng = torch.Generator().manual_seed(seed)
        self.spec = f"defensegan:{self.steps}" if self.optimizer == "adam" else f"defensegan:momentum:{self.steps}"

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`project` this transform uses (L, R, lr, optimizer, init_std)."""
        return {"steps": self.steps, "restarts": self.restarts, "lr": self.lr, "optimizer": self.optimizer,
                "init_std": self.init_std}

    def check_input(self, shape: tuple[int, ...]) -> None:  # noqa: D102
        want = tuple(getattr(self.generator, "out_shape", ()) or ())
        if want and tuple(shape) != want:
            got, exp = "×".join(map(str, shape)), "×".join(map(str, want))
            raise ValueError(f"defensegan: the generator makes {exp} images, got inputs of shape {got}")

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(G(z*), z*, ‖G(z*) − x‖²)`` per input, in chunks of :data:`CHUNK` inputs (new starting points)."""
        self.check_input(tuple(x.shape[1:]))
        parts = [project(self.generator, x[i:i + CHUNK], rng=self.rng, **self.options())
                 for i in range(0, len(x), CHUNK)]
        if not parts:
            return x.detach().clone(), x.new_zeros(0, self.latent_dim), x.new_zeros(0)
        out, z, err = (torch.cat(p) for p in zip(*parts, strict=True))
        return out, z, err

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.project(x)[0]
        return out + 0 * x  # attached to x with a zero gradient: the inner optimisation is not differentiated


__all__ = ["CHUNK", "LR", "OPTIMIZERS", "PAPER", "REF_LR", "REF_MOMENTUM", "RESTARTS", "STEPS", "DefenseGAN",
           "Generator", "check_options", "default_lr", "project"]
