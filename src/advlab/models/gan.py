"""A small WGAN-GP for MNIST: the generator Defense-GAN projects onto.

Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville 2017, "Improved Training of Wasserstein GANs",
https://arxiv.org/abs/1704.00028: the critic D maximises ``E[D(x)] − E[D(G(z))]`` with the gradient
penalty ``λ·E[(‖∇D(x̂)‖₂ − 1)²]`` on random interpolates x̂ of real and generated images; the
generator minimises ``−E[D(G(z))]``. Their MNIST settings: λ = 10, n_critic = 5, Adam
(lr 1e-4, β = (0.5, 0.9)), batch 64.

Two architectures (``GanConfig.arch``), both small because Defense-GAN runs L·R generator passes
(forward and backward) per image it classifies. ``"mlp"``: multi-layer perceptrons (z ∈ R^64 → 512
→ 512 → 784, sigmoid to [0, 1]; about 0.7 M multiply-adds per image). ``"conv"``: DCGAN-style, after
Samangouei et al.'s MNIST generator (z → linear → 2c×7×7 → transposed convolutions → 28×28 sigmoid;
with c = 16 about 0.65 M multiply-adds) and a convolutional critic without normalisation layers.
Training is deterministic under a seed (initialisation inside a forked, seeded RNG; batches and z
from explicit generators).

A trained generator is a safetensors file with advlab metadata (architecture ``wgan-generator``,
its arguments, the seed, the command, the wall time), shipped in ``weights/generators/`` —
outside the classifier list of ``list_pretrained`` — and loaded with :func:`load_generator`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab._version import __version__
from advlab.models.checkpoint import CheckpointError, check_state, load_state, read_metadata, save_checkpoint

PAPER = ("Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville 2017, Improved Training of Wasserstein GANs, "
         "https://arxiv.org/abs/1704.00028")
GENERATORS_DIR = Path(__file__).resolve().parent.parent / "weights" / "generators"
ARCHITECTURE = "wgan-generator"
ARCHS = ("mlp", "conv")


class Generator(nn.Module):
    """z ∈ R^latent_dim → image in [0, 1]^out_shape: Linear-BN-ReLU ×2, Linear, sigmoid.

    Args:
        latent_dim: The size of z.
        hidden: The width of both hidden layers.
        out_shape: The image shape C×H×W.
    """

    def __init__(self, latent_dim: int = 64, hidden: int = 512, out_shape: tuple[int, ...] = (1, 28, 28),
                 bn: bool = True) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.bn = bool(bn)
        self.out_shape = tuple(int(s) for s in out_shape)
        n_out = 1
        for s in self.out_shape:
            n_out *= s
        def norm() -> list[nn.Module]:
            return [nn.BatchNorm1d(hidden)] if self.bn else []

        self.net = nn.Sequential(
            nn.Linear(self.latent_dim, hidden), *norm(), nn.ReLU(),
            nn.Linear(hidden, hidden), *norm(), nn.ReLU(),
            nn.Linear(hidden, n_out), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(z).view(len(z), *self.out_shape)
        return out


class Critic(nn.Module):
    """Image → a real score (no normalisation layers: the gradient penalty is per example)."""

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), hidden: int = 512) -> None:
        super().__init__()
        n_in = 1
        for s in in_shape:
            n_in *= int(s)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2), nn.Linear(hidden // 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(x).squeeze(1)
        return out


class ConvGenerator(nn.Module):
    """DCGAN-style z → image (after Samangouei et al.'s MNIST generator, narrower).

    Linear to 2c×(H/4)×(W/4), BN-ReLU, ConvTranspose(4, stride 2) to c×(H/2)×(W/2), BN-ReLU,
    ConvTranspose(4, stride 2) to C×H×W, sigmoid.

    Args:
        latent_dim: The size of z.
        channels: c, the width of the last hidden feature map (the first has 2c).
        out_shape: The image shape C×H×W (H and W multiples of 4).
    """

    def __init__(self, latent_dim: int = 128, channels: int = 32, out_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.channels = int(channels)
        self.out_shape = tuple(int(s) for s in out_shape)
        c_out, h, w = self.out_shape
        if h % 4 or w % 4:
            raise ValueError(f"conv generator: image height and width must be multiples of 4, got {h}×{w}")
        c = self.channels
        self.seed_shape = (2 * c, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(self.latent_dim, 2 * c * (h // 4) * (w // 4)),
                                nn.BatchNorm1d(2 * c * (h // 4) * (w // 4)), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(self.fc(z).view(len(z), *self.seed_shape))
        return out


class ConvCritic(nn.Module):
    """Image → a real score: Conv(4, stride 2) c, LeakyReLU, Conv(4, stride 2) 2c, LeakyReLU, Linear.

    No normalisation layers: WGAN-GP's penalty is per example.
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), channels: int = 32) -> None:
        super().__init__()
        c_in, h, w = (int(s) for s in in_shape)
        c = int(channels)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * c * (h // 4) * (w // 4), 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out: torch.Tensor = self.net(x).squeeze(1)
        return out


@dataclass
class GanConfig:
    """WGAN-GP hyper-parameters (defaults: Gulrajani et al.'s MNIST settings; ``iterations`` = generator steps)."""

    iterations: int = 6000
    batch_size: int = 64
    lr: float = 1e-4
    n_critic: int = 5
    gp_weight: float = 10.0
    latent_dim: int = 64
    hidden: int = 512
    seed: int = 0
    arch: str = "mlp"
    channels: int = 32
    bn: bool = True  # the MLP generator's batch norm (Samangouei et al.'s config: USE_BN False)


@dataclass
class GanResult:
    """A trained generator, its wall time and the critic's Wasserstein estimate every 100 steps."""

    generator: Generator | ConvGenerator
    seconds: float
    history: list[dict[str, float]]


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``E[(‖∇D(x̂)‖₂ − 1)²]`` at x̂ = t·real + (1 − t)·fake, t ~ U[0, 1] per example."""
    t = torch.rand(len(real), *([1] * (real.dim() - 1)), generator=gen)
    mix = (t * real + (1 - t) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    out: torch.Tensor = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return out


def _critic_step(g: nn.Module, d: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, cfg: GanConfig,
                 gen: torch.Generator) -> float:
    """One critic update on a random real batch; returns the Wasserstein estimate E[D(real)] − E[D(fake)]."""
    real = x[torch.randint(0, len(x), (cfg.batch_size,), generator=gen)]
    with torch.no_grad():
        fake = g(torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen))
    wdist = d(real).mean() - d(fake).mean()
    loss = -wdist + cfg.gp_weight * gradient_penalty(d, real, fake, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(wdist.detach())


def _generator_step(g: nn.Module, d: nn.Module, opt: torch.optim.Optimizer, cfg: GanConfig,
                    gen: torch.Generator) -> None:
    """One generator update: minimise −E[D(G(z))] (the critic's parameters get no step)."""
    loss = -d(g(torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen))).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_wgan_gp(x: torch.Tensor, config: GanConfig | None = None, *, progress: bool = False) -> GanResult:
    """Train a generator on images ``x`` (N×C×H×W in [0, 1]) with WGAN-GP, deterministically under ``config.seed``.

    The caller's global RNG state is restored afterwards (``torch.random.fork_rng``).

    Returns:
        The generator (eval mode, frozen), the wall time and the critic's Wasserstein estimates.
    """
    cfg = config or GanConfig()
    for name in ("iterations", "batch_size", "n_critic", "latent_dim", "hidden", "channels"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch: expected one of {', '.join(ARCHS)}, got {cfg.arch!r}")
    if x.dim() != 4 or not torch.is_floating_point(x):
        raise ValueError(f"images: expected a float N×C×H×W tensor, got shape {tuple(x.shape)}")
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        g, d = _networks(cfg, tuple(x.shape[1:]))
        history = _train_loop(g, d, x, cfg, progress)
    g.eval()
    g.requires_grad_(False)
    return GanResult(g, time.perf_counter() - start, history)


def _networks(cfg: GanConfig, shape: tuple[int, ...]) -> tuple[Generator | ConvGenerator, nn.Module]:
    """A fresh generator and critic of ``cfg.arch`` for images of ``shape`` (C×H×W)."""
    if cfg.arch == "conv":
        return ConvGenerator(cfg.latent_dim, cfg.channels, shape), ConvCritic(shape, cfg.channels)
    return Generator(cfg.latent_dim, cfg.hidden, shape, bn=cfg.bn), Critic(shape, cfg.hidden)


def _arch_kwargs(g: Generator | ConvGenerator, config: GanConfig) -> dict[str, Any]:
    """The checkpoint's ``arch_kwargs``: enough to rebuild the generator (``arch`` absent = MLP)."""
    if isinstance(g, ConvGenerator):
        return {"arch": "conv", "latent_dim": g.latent_dim, "channels": g.channels, "out_shape": list(g.out_shape)}
    kw: dict[str, Any] = {"latent_dim": g.latent_dim, "hidden": config.hidden, "out_shape": list(g.out_shape)}
    if not g.bn:
        kw["bn"] = False  # absent = with batch norm, as every checkpoint before the option
    return kw


def _build(kw: dict[str, Any]) -> Generator | ConvGenerator:
    """The generator an ``arch_kwargs`` record describes."""
    shape = tuple(int(s) for s in kw["out_shape"])
    if kw.get("arch", "mlp") == "conv":
        return ConvGenerator(int(kw["latent_dim"]), int(kw["channels"]), shape)
    if kw.get("arch", "mlp") != "mlp":
        raise ValueError(f"unknown arch {kw['arch']!r}")
    return Generator(int(kw["latent_dim"]), int(kw["hidden"]), shape, bn=bool(kw.get("bn", True)))


def _train_loop(g: nn.Module, d: nn.Module, x: torch.Tensor, cfg: GanConfig, progress: bool) -> list[dict[str, float]]:
    """The alternating updates: ``n_critic`` critic steps, then one generator step, ``iterations`` times."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    history: list[dict[str, float]] = []
    bar = tqdm(total=cfg.iterations, disable=not progress, desc="wgan-gp", unit="it", dynamic_ncols=True)
    window: list[float] = []
    for it in range(cfg.iterations):
        d.requires_grad_(True)
        window += [_critic_step(g, d, opt_d, x, cfg, gen) for _ in range(cfg.n_critic)]
        d.requires_grad_(False)
        _generator_step(g, d, opt_g, cfg, gen)
        bar.update(1)
        if (it + 1) % 100 == 0 or it + 1 == cfg.iterations:
            history.append({"iteration": it + 1, "wdist": sum(window) / len(window)})
            bar.set_postfix(wdist=f"{history[-1]['wdist']:.3f}")
            window = []
    bar.close()
    return history


def save_generator(result: GanResult, path: str | os.PathLike[str], config: GanConfig, dataset: str,
                   command: str, **extra: Any) -> None:
    """Write the generator as an advlab safetensors checkpoint (architecture ``wgan-generator``)."""
    g = result.generator
    meta = {
        "architecture": ARCHITECTURE,
        "arch_kwargs": _arch_kwargs(g, config),
        "dataset": dataset, "bounds": [0.0, 1.0], "gan": asdict(config),
        "train_seconds": round(result.seconds, 1), "final_wdist": round(result.history[-1]["wdist"], 5),
        "seed": config.seed, "command": command, "advlab_version": __version__, "torch_version": torch.__version__,
        **extra,
    }
    save_checkpoint(g, path, meta)


def load_generator(name_or_path: str | os.PathLike[str] = "wgan-mnist") -> Generator | ConvGenerator:
    """A shipped generator by name (``"wgan-mnist"``) or a generator checkpoint path, eval mode, frozen.

    Raises:
        ValueError: Unknown name, or a checkpoint that is not a ``wgan-generator`` (e.g. a classifier).
        FileNotFoundError: A path that does not exist.
    """
    shipped = GENERATORS_DIR / f"{name_or_path}.safetensors"
    path = shipped if shipped.exists() else Path(name_or_path)
    if not path.exists():
        known = sorted(p.name.removesuffix(".safetensors") for p in GENERATORS_DIR.glob("*.safetensors"))
        if any(ch in str(name_or_path) for ch in "/\\") or str(name_or_path).endswith(".safetensors"):
            raise FileNotFoundError(f"generator: checkpoint file {name_or_path} does not exist")
        raise ValueError(f"generator: unknown generator {str(name_or_path)!r}; shipped: {', '.join(known) or 'none'}")
    meta = read_metadata(path)
    if meta["architecture"] != ARCHITECTURE:
        raise CheckpointError(f"generator: {path} holds a {meta['architecture']!r}, not a {ARCHITECTURE}")
    kw = meta["arch_kwargs"]
    try:
        g = _build(kw)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"generator: {path} has unusable arch_kwargs ({e})") from None
    check_state(path, g)
    load_state(path, g)
    g.eval()
    g.requires_grad_(False)
    g.advlab_meta = meta  # type: ignore[assignment]
    return g


__all__ = ["ARCHITECTURE", "ARCHS", "GENERATORS_DIR", "PAPER", "ConvCritic", "ConvGenerator", "Critic",
           "GanConfig", "GanResult", "Generator", "gradient_penalty", "load_generator", "save_generator",
           "train_wgan_gp"]
