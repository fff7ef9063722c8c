"""docs/certified.md from benchmarks/results/certified.json (one section per model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _doc import write_section

DOC = Path(__file__).resolve().parent.parent / "docs" / "certified.md"
HEADER = """# Certified robustness: measured

A verified accuracy is a *proven lower bound* on the accuracy under every L∞ perturbation of size
ε (clipped to [0, 1]); the accuracy under attack is an *upper bound*. The true robust accuracy lies
between them. Methods (`advlab certify --method`, `advlab.certify.verified`):

* `ibp` — interval bound propagation (Gowal et al. 2018, https://arxiv.org/abs/1810.12715), the
  margin specification folded into the last linear layer;
* `crown-ibp` — IBP intermediate bounds, one CROWN backward pass for the margins (Zhang et al.
  2020, https://arxiv.org/abs/1906.06316);
* `crown` — CROWN (Zhang et al. 2018, https://arxiv.org/abs/1811.00866): the inputs of every ReLU
  (only the neurons IBP leaves unstable) and max-pool bounded by CROWN too, intersected with IBP.
  Max-pooling is relaxed soundly: lower line y ≥ x_i* (i* the input with the largest lower bound);
  upper line y = x_i* when i* dominates (l_i* ≥ u_j for all j ≠ i*), else the constant max_j u_j.
* `any` — the union of the above (each is sound, so an example one of them certifies is certified).

Certified training (`advlab train --defense ibp` / `crown-ibp`, `advlab.certify.training`): the loss
is κ·CE(clean) + (1 − κ)·CE(ẑ), ẑ_j = −(lower bound of z_y − z_j) the worst-case logits. The first
`warmup` fraction of the optimiser steps is clean training (ε = 0, κ = 1); over the next `ramp`
fraction ε rises linearly (or by a smoothstep, `schedule="smooth"`) from 0 to `eps` and κ from 1 to
`kappa_end` (Gowal et al.: 0.5; CROWN-IBP: 0, with β from 1 to 0); then both stay.

Every section below is written by `benchmarks/certified.py`; rerun the command it names.
"""


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def _verify(model: str, rec: dict[str, Any]) -> list[str]:
    train = rec.get("train") or {}
    lines = [f"`{rec['command']}` · {rec['environment']}", ""]
    if train.get("command"):
        lines += [f"Trained by `{train['command']}` in {train['train_seconds']} s wall time "
                  f"(shared 2-core machine); test Acc@1 {train['acc1']}.", ""]
    lines += [f"Clean accuracy on the first {rec['n']} test images: **{rec['clean']:.4f}**.", "",
              "| method | ε | images | verified accuracy | mean worst-margin bound | time (s) |",
              "|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        secs = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
        name = "**any**" if r["method"] == "any" else f"`{r['method']}`"
        margin = "—" if r.get("mean_margin") is None else f"{r['mean_margin']:.3g}"
        lines.append(f"| {name} | {r['eps']:g} | {r['n']} | {_pct(r['verified'])} | {margin} | {secs} |")
    lines += ["", "The mean worst-margin bound is the mean over images of min_j (lower bound of z_y − z_j): "
              "larger is tighter (CROWN's rows cover fewer images when --crown-n is smaller)."]
    return lines


def _soundness(rec: dict[str, Any]) -> list[str]:
    lines = ["", f"Soundness and attacked accuracy — `{rec['command']}` · {rec['environment']}", "",
             "| ε | images | verified (IBP ∪ CROWN-IBP) | PGD (steps × restarts) | APGD ensemble | "
             "certified but broken (PGD / ensemble) | attack time (s) |", "|---|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        lines.append(f"| {r['eps']:g} | {rec['n']} | {r['certified']:.4f} | {r['pgd']:.4f} ({r.get('pgd_steps', 100)} × {r.get('pgd_restarts', 10)}) | {r['ensemble']:.4f} | "
                     f"{r['broken_certified_pgd']} / {r['broken_certified_ensemble']} | "
                     f"{r['pgd_seconds']} / {r['ensemble_seconds']} |")
    lines += ["", "The script fails when any certified example is broken; every row above has 0 / 0."]
    return lines


def render(data: dict[str, Any]) -> None:
    """Write one section per model that has results."""
    for model, recs in sorted(data.items()):
        body = [f"## `{model}`", ""]
        if "verify" in recs:
            body += _verify(model, recs["verify"])
        if "soundness" in recs:
            body += _soundness(recs["soundness"])
        write_section(f"certified-{model}", "\n".join(body), DOC, HEADER)
