"""How much of the default CW's work an exact shortcut could skip: iterations run, and rows with no model gradient.

    python benchmarks/cw_rows.py [--n 500] [--threads 1]

Runs the evaluation's CW (f6, 5 binary-search rounds × 100 Adam steps, lr 0.1, early abort on) on the
first n MNIST test images (one batch, as the default evaluation's batch of 500) and counts, per Adam
iteration, the examples whose objective f sits at its floor (f = 0: adversarial with κ = 0), where the
model's part of the gradient is exactly zero. Skipping their backward pass is the one exact saving
left in CW's loop (the early abort couples the batch, so no row can leave it). Prints the counts; the
figures are quoted in docs/benchmarks.md (default-speed, hand-written part).
"""

from __future__ import annotations

import argparse
import time

import torch

import advlab
from advlab.attacks import carlini_wagner, get_attack
from advlab.attacks.cw_objectives import cw_objective
from advlab.evaluation.defaults import DEFAULT_PARAMS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = advlab.load_dataset("mnist", "test")
    x, y = x[: args.n], y[: args.n]
    model = advlab.load_model("lenet-mnist")
    counts = {"iterations": 0, "rows": 0, "at_floor": 0}
    inner = carlini_wagner._Search._objective_grad

    def counted(self, w, const, found):  # type: ignore[no-untyped-def]
        obj, grad = inner(self, w, const, found)
        with torch.no_grad():
            f = cw_objective(self.objective, self.model(self._from_tanh(torch.tanh(w))), self.labels,
                             self.target is not None, self.kappa)
        counts["iterations"] += 1
        counts["rows"] += len(f)
        counts["at_floor"] += int((f == 0).sum())
        return obj, grad

    carlini_wagner._Search._objective_grad = counted  # type: ignore[method-assign]
    params = DEFAULT_PARAMS["cw"]
    t0 = time.perf_counter()
    get_attack("cw")(model, x, y, advlab.ThreatModel("l2", float("inf")), **params)
    seconds = time.perf_counter() - t0
    share = counts["at_floor"] / counts["rows"]
    print(f"cw {params} on {args.n} images, {args.threads} thread(s): {counts['iterations']} Adam iterations "
          f"(of {params['binary_search_steps'] * params['steps']} at most), {share:.1%} of row-iterations at f's "
          f"floor (no model gradient); {seconds:.1f} s with the counting pass")


if __name__ == "__main__":
    main()
