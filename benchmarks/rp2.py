"""RP2 on the stop sign vs the single-view PGD baseline, in the lab test (issue 18).

The lab: :func:`advlab.physical.lab_grid` (widths 40/32/24/16 px × angles 0/15/30/45° × lights
0.6/1.0/1.4, 3 held-out draws per cell) × 10 held-out backgrounds = 30 views per cell. Targeted
success stop → speed-80 per cell, over the views whose clean stop sign the model reads as stop.

Rows measured (``--parts``):

* ``rp2``: ``advlab physical --attack rp2`` with its defaults — RP2's sticker in a mask found by
  ``find_mask`` (≤ 9.5 % of the sign), EOT over ``TransformDistribution.signs(48)`` and 512
  training backgrounds — and next to it the single-view PGD baseline repainting the same mask
  (L∞ ε = 1 there), crafted on one frontal view (width 40, background 0, neutral light).
* ``face``: single-view PGD on the whole sign face at L∞ ε = 16/255.
* ``bars``: RP2 with the fixed two-bar mask (9.38 % of the sign), the paper's "abstract art" look.
* ``share20``, ``share30``: RP2 with a found mask of at most 20 % / 30 % of the sign (beyond the
  issue's 10 %: where the success bar is reached).

Writes the section ``rp2`` of docs/benchmarks.md, the section ``rp2-lab`` of docs/physical.md (the
per-cell tables of the rp2 and share20 parts), the figures docs/figures/rp2-*.png (the signs and a
view per cell at light 1.0, for the rp2 and share20 parts) and benchmarks/results/rp2.json.

    PYTHONPATH=src python benchmarks/rp2.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import DOC, environment, write_section

from advlab.data.sign_art import SIGN_CLASSES, all_signs
from advlab.lab import LabSetup, run_lab
from advlab.lab.backgrounds import lab_backgrounds
from advlab.models import load_model
from advlab.report.physical import lab_rows, pct, signs_figure, summary_rows, views_figure
from advlab.report.settings import md_table

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
PHYSICAL_DOC = ROOT / "docs" / "physical.md"
RESULTS = Path(__file__).resolve().parent / "results" / "rp2.json"
PARTS = {"rp2": ("rp2", {}), "face": ("pgd", {"pgd": {"region": "sign"}}), "bars": ("rp2", {"rp2": {"mask": "bars"}}),
         "share20": ("rp2", {"rp2": {"mask_share": 0.2}}), "share30": ("rp2", {"rp2": {"mask_share": 0.3}})}
FIGURE_PARTS = {"rp2": "rp2", "share20": "rp2-share20"}  # parts whose signs and views are drawn (file prefix)
TABLE_PARTS = {"rp2", "share20"}  # parts whose per-cell lab tables are printed
LABELS = {"rp2": "rp2 (found mask)", "face": "pgd, whole face", "bars": "rp2 (two bars)",
          "share20": "rp2 (found mask, 20 % of the sign)", "share30": "rp2 (found mask, 30 % of the sign)"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="signnet-signs")
    p.add_argument("--parts", default=",".join(PARTS), help=f"what to measure, among {', '.join(PARTS)}")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--backgrounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-doc", action="store_true", help="print, do not write the docs")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.model)
    setup = LabSetup(model, SIGN_CLASSES, all_signs(), "stop", "speed-80", lab_backgrounds("train", 512),
                     lab_backgrounds("test", args.backgrounds), draws=args.draws, seed=args.seed)
    out: dict[str, Any] = {"parts": {}, "seconds": {}}
    for part in args.parts.split(","):
        attack, options = PARTS[part]
        start = time.perf_counter()
        outcome = run_lab(setup, attack, options)
        out["seconds"][part] = time.perf_counter() - start
        out["parts"][part] = outcome.summary
        print(f"{part}: " + "; ".join(f"{a['name']} {pct(a['average'])}" for a in outcome.summary["attacks"])
              + f" ({out['seconds'][part]:.0f} s)", flush=True)
        if part in FIGURE_PARTS:
            draw_figures(outcome.summary, outcome.examples, outcome.signs, FIGURE_PARTS[part])
    return out


def draw_figures(s: dict[str, Any], examples: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 signs: dict[str, torch.Tensor], prefix: str) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{prefix}-signs.png").write_bytes(signs_figure(signs))
    middle = len(s["grid"]["lights"]) // 2
    for name, (images, pred) in examples.items():
        if name != "clean" or prefix == "rp2":
            (FIGURES / f"{prefix}-views-{name}.png").write_bytes(views_figure(s, images, pred, middle))


def summary_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for part, s in results["parts"].items():
        for row, a in zip(summary_rows(s), s["attacks"], strict=True):
            label = LABELS[part] if a is s["attacks"][0] else f"{a['name']} next to {LABELS[part]}"
            rows.append([label, *row[1:]])
    head = ["sign", "region (share of the sign)", "budget", "grid average", "all views pooled", "cells counted",
            "crafting s"]
    return md_table(head, rows)


def body(results: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    first = next(iter(results["parts"].values()))
    lines = [f"## RP2 on the stop sign: the lab test ({environment()})", "",
             f"Command: `PYTHONPATH=src python benchmarks/rp2.py --threads {args.threads} --parts {args.parts}` "
             f"(model `{args.model}`, {seconds / 60:.1f} min in all). The lab: widths {first['grid']['widths']} px × "
             f"angles {first['grid']['angles']}° × lights {first['grid']['lights']}, {first['views_per_cell']} views "
             f"per cell ({first['draws']} held-out draws × {first['backgrounds']['held_out']} held-out backgrounds); "
             f"targeted success stop → speed-80 over the views whose clean stop sign is read as stop "
             f"(clean: {pct(first['clean']['average'])} of all views). Same as "
             "`advlab physical --attack rp2 --model signnet-signs --threads 1` (rp2 row and its PGD baseline).", "",
             *summary_table(results), ""]
    for part, s in results["parts"].items():
        if part not in TABLE_PARTS:
            continue
        for a in s["attacks"]:
            label = LABELS[part] if a is s["attacks"][0] else f"{a['name']} next to {LABELS[part]}"
            head, rows = lab_rows(s, a)
            lines += [f"**{label}**: targeted success per cell, hits/counted (rows: width × angle, columns: light)",
                      "", *md_table(head, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = measure(args)
    seconds = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": " ".join(sys.argv), "seconds": seconds, **results}, indent=1))
    text = body(results, args, seconds)
    if args.no_doc:
        print(text)
        return
    write_section("rp2", text, DOC)
    write_section("rp2-lab", text.replace("## RP2 on the stop sign: the lab test", "### Measured"), PHYSICAL_DOC,
                  "# Physical-world attacks\n")
    print(f"wrote the rp2 sections of {DOC} and {PHYSICAL_DOC} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
