"""Render ``report.md`` and a self-contained ``report.html`` (figures as data URIs) from a store."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from advlab.evaluation.runner import Row, compute_rows, eps_label, format_comparison, format_table, plan_jobs
from advlab.results.store import Store


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(a: np.ndarray) -> np.ndarray:
    return a.transpose(1, 2, 0).squeeze(-1) if a.shape[0] in (1, 3) else a


def triplet_figure(examples: list[tuple[int, np.ndarray, np.ndarray]], clean: dict[str, Any],
                   outcome: dict[str, Any], title: str) -> bytes:
    """Original (label, confidence) | perturbation rescaled | adversarial (label, confidence), per row."""
    plt = _plt()
    k = len(examples)
    fig, axes = plt.subplots(k, 3, figsize=(5.4, 1.9 * k), squeeze=False)
    for row, (idx, x, xa) in enumerate(examples):
        d = xa - x
        scale = float(np.abs(d).max()) or 1.0
        y = int(clean["label"][idx])
        panels = [
            (x, f"original: {int(clean['pred'][idx])} ({float(clean['conf'][idx]):.0%}), true {y}"),
            (d / (2 * scale) + 0.5, f"perturbation ×{0.5 / scale:.1f}, L∞ {scale:.3f}"),
            (xa, f"adversarial: {int(outcome['pred'][idx])} ({float(outcome['conf'][idx]):.0%})"),
        ]
        for col, (img, t) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(_image(img), cmap="gray", vmin=0, vmax=1)
            ax.set_title(t, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def accuracy_figure(rows: list[Row]) -> bytes:
    """Acc@1 under attack against ε for every attack, one line per (attack, norm)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r.eps is not None:
            series.setdefault((r.attack, r.norm), []).append((r.eps, r.acc1_adv))
    for (attack, norm), pts in sorted(series.items()):
        pts = sorted(pts)
        clean = rows[0].acc1_clean
        ax.plot([0.0] + [p[0] for p in pts], [clean] + [p[1] for p in pts], marker="o",
                label=f"{attack} ({norm})", linestyle="--" if attack == "worst-case" else "-")
    ax.set_xlabel("ε")
    ax.set_ylabel("Acc@1 under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def norm_histograms(store: Store, config: dict[str, Any]) -> bytes:
    """Histograms of the perturbation norm (the attack's own norm) of successful examples."""
    plt = _plt()
    jobs = [j for j in plan_jobs(config["attacks"], config["norm"], config["eps"])]
    last: dict[str, Any] = {}
    for j in jobs:  # the largest budget of each attack
        last[j.attack] = j
    fig, axes = plt.subplots(1, len(last), figsize=(2.6 * len(last), 2.4), squeeze=False)
    for ax, (attack, job) in zip(axes[0], last.items(), strict=True):
        o = store.outcomes(job.key)
        v = o[job.norm][o["adv"]].numpy()
        v = v[np.isfinite(v)]
        ax.hist(v, bins=30, color="#3b6ea8")
        ax.set_title(f"{attack}: {job.norm} of successful", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def render_report(directory: str | Path) -> tuple[Path, Path]:
    """Render ``report.md`` (with PNGs in ``figures/``) and ``report.html`` from ``DIR/results.sqlite``."""
    d = Path(directory)
    path = d / "results.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"report: {path} does not exist (run `advlab evaluate --out {d}` first)")
    store = Store(path)
    try:
        config = store.get_config()
        if config is None:
            raise ValueError(f"report: {path} holds no evaluation")
        env = store.get_meta("environment") or {}
        command = store.get_meta("command")
        rows = compute_rows(store, config)
        checks = store.get_meta("checks") or []
        adaptive = store.get_meta("adaptive") or []
        clean = store.clean()
        figures: list[tuple[str, str, bytes]] = [
            ("accuracy_vs_eps", "Acc@1 under attack against ε (ε = 0 is the clean accuracy)", accuracy_figure(rows)),
            ("norms", "Perturbation norms of successful examples (largest budget of each attack)",
             norm_histograms(store, config)),
        ]
        seen = set()
        all_jobs = plan_jobs(config["attacks"], config["norm"], config["eps"])
        all_jobs += plan_jobs(adaptive, config["norm"], config["eps"])
        for job in all_jobs[::-1]:
            if job.attack in seen:
                continue
            seen.add(job.attack)
            ex = store.examples(job.key)
            if ex:
                budget = "minimal" if job.eps == math.inf else job.eps
                label = job.attack if job.eps is None else f"{job.attack} at {budget} ({job.norm})"
                figures.append((f"triplet_{job.attack}", f"{label}: original | perturbation | adversarial",
                                triplet_figure(ex[:4], clean, store.outcomes(job.key), label)))
    finally:
        store.close()
    figdir = d / "figures"
    figdir.mkdir(exist_ok=True)
    for name, _, png in figures:
        (figdir / f"{name}.png").write_bytes(png)
    threat = (f"norm {config['norm']}, ε ∈ {{{', '.join(f'{e:g}' for e in config['eps'])}}}, bounds "
              f"{config['bounds']}, untargeted; attack parameters: defaults of advlab evaluate "
              f"(docs/evaluation.md) updated by {json.dumps(config['params'])}")
    md = [
        f"# Robustness report: {config['model']} on {config['dataset']}", "",
        f"- Threat model: {threat}",
        f"- Examples: first {config['n']} of the test split; seed {config['seed']}; batch size {config['batch_size']}",
        f"- Environment: {json.dumps(env)}",
        f"- Command: `{command}`" if command else "- Command: Python API",
        "", "Acc@1/Acc@5 w/ = under attack, w/o = clean. success = share of correctly classified examples the "
        "attack misclassifies. Norm medians are over successful examples. Minimal-perturbation attacks run once "
        "and are scored at every ε. `worst-case` counts an example as broken if any bounded attack broke it.",
        "", format_table(rows, markdown=True), "",
    ]
    base_store = d / "baseline" / "results.sqlite"
    if base_store.exists():
        bs = Store(base_store)
        try:
            bconfig = bs.get_config()
            base_rows = compute_rows(bs, bconfig) if bconfig else []
        finally:
            bs.close()
        if base_rows:
            md += [f"## Next to the baseline {base_rows[0].model}", "",
                   "Each row of the model is followed by the baseline's row with the same attack and ε "
                   "(`--baseline`; the baseline's own report is in `baseline/`).", "",
                   format_comparison(rows, base_rows, markdown=True), ""]
    if checks:
        fired = [c for c in checks if c["fired"]]
        md += ["## Gradient-masking checks", "",
               (f"{len(fired)} of {len(checks)} checks fired; the adaptive attack (pgd-adaptive) was run and the "
                "worst-case rows name the strongest attack." if fired else
                f"None of the {len(checks)} checks fired."),
               "See docs/warnings.md for what each check means and what to do.", "",
               "| code | check | fired | measured |", "|---|---|---|---|"]
        md += [f"| {c['code']} | {c['name']} | {'⚠ yes' if c['fired'] else 'no'} | {c['detail']} |" for c in checks]
        md.append("")
    md += [f"## {cap}\n\n![{name}](figures/{name}.png)\n" for name, cap, _ in figures]
    (d / "report.md").write_text("\n".join(md))
    table_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            r.attack + (f" [{r.strongest}]" if r.strongest else ""), r.dataset, eps_label(r), f"{r.acc1_adv:.3f}",
            f"{r.acc5_adv:.3f}", f"{r.acc1_clean:.3f}",
            f"{r.acc5_clean:.3f}", f"{r.success_rate:.3f}", _f(r.median_l0, 0), _f(r.median_l1, 2),
            _f(r.median_l2), _f(r.median_linf), _f(r.mean_queries, 0), f"{r.seconds:.1f}",
            "; ".join(r.warnings))) + "</tr>"
        for r in rows
    )
    imgs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        for name, cap, png in figures
    )
    check_rows = "".join(
        f"<tr><td>{html.escape(c['code'])}</td><td>{html.escape(c['name'])}</td>"
        f"<td>{'⚠ yes' if c['fired'] else 'no'}</td><td>{html.escape(c['detail'])}</td></tr>" for c in checks
    )
    check_html = (
        "<h2>Gradient-masking checks</h2><table id=\"checks\"><thead><tr><th>code</th><th>check</th><th>fired</th>"
        f"<th>measured</th></tr></thead><tbody>{check_rows}</tbody></table>"
        "<p>See docs/warnings.md. When a check fires, pgd-adaptive (margin loss, BPDA, EOT) runs and the worst-case "
        "rows name the strongest attack.</p>" if checks else ""
    )
    heads = ["Attack", "Dataset", "ε (norm)", "Acc@1 w/", "Acc@5 w/", "Acc@1 w/o", "Acc@5 w/o", "success",
             "med L0", "med L1", "med L2", "med L∞", "queries", "time (s)", "warnings"]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>advlab report: {html.escape(config['model'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:1em}}figcaption{{font-size:12px}}</style>
</head><body>
<h1>Robustness report: {html.escape(config['model'])} on {html.escape(config['dataset'])}</h1>
<p><b>Threat model:</b> {html.escape(threat)}</p>
<p><b>Examples:</b> first {config['n']} of the test split; seed {config['seed']}.
<b>Environment:</b> {html.escape(json.dumps(env))}. <b>Command:</b> <code>{html.escape(str(command))}</code></p>
<table id="results"><thead><tr>{''.join(f'<th>{h}</th>' for h in heads)}</tr></thead>
<tbody>{table_rows}</tbody></table>
<p>Acc@1/Acc@5 w/ = under attack, w/o = clean; success = share of correctly classified examples the attack
misclassifies; norm medians over successful examples; minimal-perturbation attacks are scored at every ε;
worst-case = broken by any bounded attack.</p>
{check_html}
{imgs}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""
    (d / "report.html").write_text(page)
    return d / "report.md", d / "report.html"


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"
