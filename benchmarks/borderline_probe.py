"""Which attack breaks a borderline example, and how often: the evidence behind ``borderline`` (issue 14).

    python benchmarks/borderline_probe.py stages --model /work/robust/cnn-pgd20-warmup.safetensors --index 325
    python benchmarks/borderline_probe.py seeds --model /work/robust/cnn-pgd20-warmup.safetensors --index 325 --seeds 12
    python benchmarks/borderline_probe.py ensemble --model /work/robust/cnn-pgd20-warmup.safetensors --index 325

``stages`` replays benchmarks/peers.py's 100-step AutoAttack (torchattacks APGD-CE, APGD-T, FAB-T,
Square, seed 0) stage by stage on the first ``--n`` MNIST test images, each stage on the examples
the earlier ones left robust, and says which stage broke example ``--index``. ``seeds`` attacks
that example alone with Square over ``--seeds`` seeds: advlab's at ``p_init`` 0.05 (its default),
0.3 and 0.8 and with 20 000 queries, and torchattacks' (5 000 queries, its ``p_init`` 0.8), and
counts the seeds that broke it. ``ensemble`` runs ``apgd-ensemble`` as ``advlab evaluate`` adds it
(2 restarts, APGD-DLR) with ``borderline`` 0 and 0.25 under the same seed on the first ``--n``
images: robust accuracy, time, and whether ``--index`` broke. L∞ ε = 0.3 throughout; prints only (the figures are quoted in the
robust-aa notes of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import SEED, _ta, _ta_autoattack_100

import advlab
from advlab.attacks.autopgd import apgd_ensemble
from advlab.attacks.random_search import square
from advlab.threat import ThreatModel

EPS = 0.3


def _broken(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv.detach().float()).argmax(1) != y


def stages(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, index: int) -> None:
    """Replay AutoAttack-100 stage by stage; say which stage broke ``index``."""
    torch.manual_seed(SEED)
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for attack in _ta_autoattack_100(model).attacks:
        todo = robust.nonzero().squeeze(1)
        broke = _broken(model, attack(x[todo], y[todo]), y[todo])
        robust[todo[broke]] = False
        here = bool(broke[todo == index].any()) if bool((todo == index).any()) else False
        state = "broken by this stage" if here else ("robust" if bool(robust[index]) else "broken earlier")
        print(f"{type(attack).__name__}: {int(robust.sum())} robust; #{index} {state}", flush=True)


def seeds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_seeds: int) -> None:
    """Square on one example over ``n_seeds`` seeds, advlab's settings and torchattacks'."""
    threat = ThreatModel("linf", EPS)
    variants = {f"advlab p_init {p}": {"p_init": p} for p in (0.05, 0.3, 0.8)}
    variants["advlab p_init 0.05, 20 000 queries"] = {"max_queries": 20000}
    totals = dict.fromkeys([*variants, "torchattacks"], 0)
    for s in range(n_seeds):
        for name, kw in variants.items():
            kw = {"max_queries": 5000, **kw}
            res = square(model, x, y, threat, generator=torch.Generator().manual_seed(s), **kw)
            totals[name] += int(res.success.item())
        torch.manual_seed(s)
        x_adv = _ta().Square(model, norm="Linf", eps=EPS, n_queries=5000, n_restarts=1, seed=s)(x, y)
        totals["torchattacks"] += int(_broken(model, x_adv, y).item())
    for name, k in totals.items():
        print(f"{name}: broke it in {k} of {n_seeds} seeds")


def ensemble(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, index: int) -> None:
    """The ensemble with and without ``borderline``, same seed: the same first stages, then more Square or not."""
    threat = ThreatModel("linf", EPS)
    for share in (0.0, 0.25):
        t0 = time.perf_counter()
        res = apgd_ensemble(model, x, y, threat, generator=torch.Generator().manual_seed(SEED), restarts=2, dlr=True,
                            borderline=share)
        seconds = time.perf_counter() - t0
        robust = ~_broken(model, res.x_adv, y)
        print(f"borderline {share}: Acc@1 {float(robust.float().mean()):.4f}, #{index} "
              f"{'robust' if bool(robust[index]) else 'broken'}, {seconds:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["stages", "seeds", "ensemble"])
    ap.add_argument("--model", required=True, help="a checkpoint path or a shipped name")
    ap.add_argument("--index", type=int, required=True, help="the example (row of the MNIST test set)")
    ap.add_argument("--n", type=int, default=500, help="stages: the first n test images")
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = advlab.load_model(args.model).eval()
    x, y = advlab.load_dataset("mnist", "test")
    if args.what == "stages":
        stages(model, x[: args.n], y[: args.n], args.index)
    elif args.what == "ensemble":
        ensemble(model, x[: args.n], y[: args.n], args.index)
    else:
        seeds(model, x[args.index: args.index + 1], y[args.index: args.index + 1], args.seeds)


if __name__ == "__main__":
    main()
