"""Defense-GAN: classify the projection of the input onto a generator's range.

Samangouei, Kabkab, Chellappa 2018, "Defense-GAN: Protecting Classifiers Against Adversarial
Attacks Using Generative Models", https://arxiv.org/abs/1805.06605. For an input x, R random
starting points z₀ ~ N(0, I) each take L steps of gradient descent on ‖G(z) − x‖²₂; the restart
with the smallest final error gives z*, and the classifier sees G(z*) instead of x.

Here the descent is Adam (lr 0.1, elementwise, so the rows of a batch stay independent), batched
over inputs × restarts in one tensor. ``wrap_defense(model, "defensegan")`` uses the shipped
generator ``wgan-mnist`` (:mod:`advlab.models.gan`) with L = :data:`STEPS`, R = :data:`RESTARTS`
(Samangouei et al.'s MNIST setting, L = 200, R = 10); ``"defensegan:L"`` changes L.

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

import torch
from torch import nn

from advlab.models.gan import Generator, load_generator
from advlab.models.transform import Transform, int_arg

PAPER = ("Samangouei, Kabkab, Chellappa 2018, Defense-GAN: Protecting Classifiers Against Adversarial Attacks "
         "Using Generative Models, https://arxiv.org/abs/1805.06605")
STEPS = 200  # L: gradient steps per restart (Samangouei et al.'s MNIST setting)
RESTARTS = 10  # R: random restarts (Samangouei et al.'s MNIST setting)
LR = 0.1  # Adam's step on z
CHUNK = 256  # inputs projected at once (CHUNK × R rows in one tensor)


def project(generator: nn.Module, x: torch.Tensor, *, steps: int = STEPS, restarts: int = RESTARTS,
            lr: float = LR, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best of R descents on ‖G(z) − x‖², for every input at once.

    Args:
        generator: z (N×latent_dim) → images like ``x``; its parameters are not changed.
        x: Images N×C×H×W.
        steps: L, Adam steps per restart.
        restarts: R, random starting points per input.
        lr: Adam's learning rate on z.
        rng: Where z₀ ~ N(0, I) is drawn from (a CPU generator; None: the global stream).

    Returns:
        ``(G(z*), z*, error)``: the projections (detached), the best latent codes and the squared
        L2 error ‖G(z*) − x‖² per input.
    """
    d = int(getattr(generator, "latent_dim", 0))
    n = len(x)
    z0 = torch.randn(restarts, n, d, generator=rng).to(x.device)
    target = x.detach().unsqueeze(0).expand(restarts, *x.shape).reshape(restarts * n, *x.shape[1:])
    z = z0.reshape(restarts * n, d).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            err = (generator(z) - target).flatten(1).pow(2).sum(1)
            opt.zero_grad(set_to_none=True)
            err.sum().backward()
            opt.step()
    with torch.no_grad():
        out = generator(z)
        err = (out - target).flatten(1).pow(2).sum(1).view(restarts, n)
        best = err.argmin(0)
        rows = best * n + torch.arange(n, device=x.device)
        return out[rows], z.detach()[rows], err[best, torch.arange(n, device=x.device)]


class DefenseGAN(Transform):
    """Project onto the generator's range (L steps × R restarts) before classifying.

    Args:
        generator: A :class:`~advlab.models.gan.Generator` (or any module with ``latent_dim``
            mapping z to images), or a generator name or path for :func:`load_generator`.
        steps: L, gradient steps per restart.
        restarts: R, random restarts per input.
        lr: Adam's learning rate on z.
        seed: Seeds the transform's own generator of starting points.
    """

    differentiable = False
    randomized = True

    def __init__(self, generator: nn.Module | str | os.PathLike[str] = "wgan-mnist", steps: int = STEPS,
                 restarts: int = RESTARTS, lr: float = LR, seed: int = 0) -> None:
        super().__init__()
        g = load_generator(generator) if isinstance(generator, (str, os.PathLike)) else generator
        if not isinstance(g, nn.Module) or not isinstance(getattr(g, "latent_dim", None), int):
            raise TypeError(f"defensegan: expected a generator module with an integer latent_dim, got "
                            f"{type(g).__name__}")
        self.steps = int_arg("defensegan", "steps", steps, 1)
        self.restarts = int_arg("defensegan", "restarts", restarts, 1)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"defensegan: lr must be a finite number > 0, got {lr!r}")
        self.lr = float(lr)
        g.eval()
        g.requires_grad_(False)
        self.generator = g
        self.latent_dim = int(getattr(g, "latent_dim", 0))
        self.rng = torch.Generator().manual_seed(seed)
        self.spec = f"defensegan:{self.steps}"

    def check_input(self, shape: tuple[int, ...]) -> None:  # noqa: D102
        want = tuple(getattr(self.generator, "out_shape", ()) or ())
        if want and tuple(shape) != want:
            got, exp = "×".join(map(str, shape)), "×".join(map(str, want))
            raise ValueError(f"defensegan: the generator makes {exp} images, got inputs of shape {got}")

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(G(z*), z*, ‖G(z*) − x‖²)`` per input, in chunks of :data:`CHUNK` inputs (new starting points)."""
        self.check_input(tuple(x.shape[1:]))
        parts = [project(self.generator, x[i:i + CHUNK], steps=self.steps, restarts=self.restarts, lr=self.lr,
                         rng=self.rng) for i in range(0, len(x), CHUNK)]
        if not parts:
            return x.detach().clone(), x.new_zeros(0, self.latent_dim), x.new_zeros(0)
        out, z, err = (torch.cat(p) for p in zip(*parts, strict=True))
        return out, z, err

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.project(x)[0]
        return out + 0 * x  # attached to x with a zero gradient: the inner optimisation is not differentiated


__all__ = ["CHUNK", "LR", "PAPER", "RESTARTS", "STEPS", "DefenseGAN", "Generator", "project"]
