"""CW-L∞ (Carlini & Wagner §VI) side by side with ART's ``CarliniLInfMethod``: same model, images, settings.

    python benchmarks/peers_cw.py --threads 1              # first 50 MNIST test images, both libraries
    python benchmarks/peers_cw.py --n 10 --quick           # a fast check; writes nothing

``CASES`` is the list benchmarks/peers.py runs (``Case``/runner helpers from there); ``main`` runs
just these, through ``peers.run``, saves benchmarks/results/peers_cw.json and re-renders the
"lecture-cw" section of docs/benchmarks.md (benchmarks/lecture_cw.py draws it, part d).

Matched setting: untargeted (ART's targeted mode counts an example as a success when the prediction is
*not* the target, so it is compared untargeted), 100 Adam iterations per (τ, c) attempt, learning
rate 0.05, c from 10⁻⁵ doubling below 20, τ from 1 shrinking ×0.9 to 1/256, κ = 0. ART restarts
every attempt from the clean image and tries every c at every τ; advlab warm-starts each attempt
from the last point and keeps c across τ (Carlini & Wagner's code). At learning rate 0.01 (ART's
default) and 100 iterations ART found no adversarial example on the first images tried, which is
why the rate is 0.05 here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from _doc import environment, write_section
from peers import INF, Case, _art, advlab_runner, art_runner

RESULTS = Path(__file__).resolve().parent / "results" / "peers_cw.json"
LINF = {"steps": 100, "lr": 0.05, "initial_const": 1e-5, "largest_const": 20.0, "early_stop": False}

CASES: list[Case] = [
    Case(
        "cw-linf", "CW-L∞", "linf", INF,
        "untargeted; 100 Adam iterations per (τ, c) attempt (ART `max_iter=100`, advlab `steps=100`), learning "
        "rate 0.05, c from 1e-5 doubling below 20, τ from 1 ×0.9 to 1/256, κ = 0; advlab without the "
        "stalled-attempt abort (`early_stop=False`), ART with its own (loss < 0.001)",
        {
            "advlab": advlab_runner("cw-linf", "linf", INF, **LINF),
            "art": art_runner(lambda c, b: _art().CarliniLInfMethod(
                c, confidence=0.0, targeted=False, learning_rate=0.05, max_iter=100, decrease_factor=0.9,
                initial_const=1e-5, largest_const=20.0, const_factor=2.0, batch_size=b, verbose=False)),
        },
        # ART runs one image at a time, every c at every τ from the clean image: about 7 s per image here.
        n_cap={"art": 50},
    ),
]


def verdict(res: dict) -> list[str]:
    """advlab faster per image, at a success no lower than ART's and a median L∞ ≤ ART's + 2%."""
    rows = {r["library"]: r for r in res["rows"] if r["case"] == "cw-linf"}
    a, p = rows.get("advlab"), rows.get("art")
    if not a or not p:
        return []
    speed = (p["seconds"] / p["n"]) / (a["seconds"] / a["n"])
    ratio = a["median_linf"] / p["median_linf"] - 1 if p["median_linf"] and not math.isnan(p["median_linf"]) else math.nan
    ok = speed > 1 and a["success"] >= p["success"] and ratio <= 0.02
    same = " (the same images)" if a["n"] == p["n"] else f" (advlab on {a['n']}, ART on {p['n']} images)"
    return [f"**{'PASS' if ok else 'MISS'}** advlab faster at equal success with median L∞ ≤ ART's + 2%: "
            f"{speed:.1f}× ART's speed per image, success {a['success']:.3f} vs {p['success']:.3f}, median L∞ "
            f"{a['median_linf']:.4f} vs {p['median_linf']:.4f} ({100 * ratio:+.1f}%){same}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="images (the first n of the MNIST test set)")
    ap.add_argument("--repeats", type=int, default=1, help="timing repeats; the median is reported")
    ap.add_argument("--model", default="lenet-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="nothing written")
    args = ap.parse_args()
    args.only = None
    res = peers.run(args, CASES)
    res["environment"] = environment()
    res["verdict"] = verdict(res)
    for line in res["verdict"]:
        print(line)
    if args.quick:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(peers._json_safe(res), indent=2) + "\n")
    import lecture_cw

    stored = json.loads(lecture_cw.RESULTS.read_text()) if lecture_cw.RESULTS.exists() else {}
    write_section("lecture-cw", lecture_cw.render(stored, json.loads(RESULTS.read_text())))


if __name__ == "__main__":
    main()
