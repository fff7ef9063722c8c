"""Render ``report.md`` and a self-contained ``report.html`` (figures as data URIs) from a store alone."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.report.figures import accuracy_figure, norm_histograms, triplet_figure
from advlab.report.tables import HEAD, cells, format_comparison, format_table
from advlab.results.aggregate import compute_rows, stored_jobs
from advlab.results.plan import plan_jobs
from advlab.results.records import Row
from advlab.results.store import Store

LEGEND_MD = (
    "Acc@1/Acc@5 w/ = under attack, w/o = clean. success = share of correctly classified examples the "
    "attack misclassifies. Norm medians are over successful examples. Minimal-perturbation attacks run once "
    "and are scored at every ε. `worst-case` counts an example as broken if any bounded attack broke it."
)
CHECKS_DOC = "See docs/warnings.md for what each check means and what to do."


@dataclass
class Report:
    """Everything a report shows, read from a store: the configuration, rows, checks and figures."""

    config: dict[str, Any]
    rows: list[Row]
    environment: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_skipped: str | None = None  # why the gradient-masking checks did not run (a black box)
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)  # (file stem, caption, PNG)
    baseline: list[Row] = field(default_factory=list)


def figures(store: Store, config: dict[str, Any], rows: list[Row]) -> list[tuple[str, str, bytes]]:
    """(file stem, caption, PNG): accuracy curves, norm histograms, one triplet figure per attack."""
    last = {job.attack: job for job in plan_jobs(config["attacks"], config["norm"], config["eps"])}
    out = [
        ("accuracy_vs_eps", "Acc@1 under attack against ε (ε = 0 is the clean accuracy)", accuracy_figure(rows)),
        ("norms", "Perturbation norms of successful examples (largest budget of each attack)",
         norm_histograms([(job, store.outcomes(job.key)) for job in last.values()])),
    ]
    clean = store.clean()
    seen = set()
    for job in stored_jobs(store, config)[::-1]:  # the largest budget of each attack
        if job.attack in seen:
            continue
        seen.add(job.attack)
        ex = store.examples(job.key)
        if ex:
            budget = "minimal" if job.eps == math.inf else job.eps
            label = job.attack if job.eps is None else f"{job.attack} at {budget} ({job.norm})"
            out.append((f"triplet_{job.attack}", f"{label}: original | perturbation | adversarial",
                        triplet_figure(ex[:4], clean, store.outcomes(job.key), label)))
    return out


def read_rows(path: Path) -> list[Row]:
    """The rows of the evaluation stored at ``path`` (none if it holds no evaluation)."""
    store = Store(path)
    try:
        config = store.get_config()
        return compute_rows(store, config) if config else []
    finally:
        store.close()


def read_report(directory: Path) -> Report:
    """Read the store of ``directory`` (and of its ``baseline/``, if any) and draw the figures."""
    path = directory / "results.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"report: {path} does not exist (run `advlab evaluate --out {directory}` first)")
    store = Store(path)
    try:
        config = store.get_config()
        if config is None:
            raise ValueError(f"report: {path} holds no evaluation")
        rows = compute_rows(store, config)
        report = Report(config, rows, store.get_meta("environment") or {}, store.get_meta("command"),
                        store.get_meta("checks") or [], store.get_meta("checks_skipped"),
                        figures(store, config, rows))
    finally:
        store.close()
    base = directory / "baseline" / "results.sqlite"
    if base.exists():
        report.baseline = read_rows(base)
    return report


def threat_text(config: dict[str, Any]) -> str:
    """The threat model and attack parameters in one sentence."""
    return (f"norm {config['norm']}, ε ∈ {{{', '.join(f'{e:g}' for e in config['eps'])}}}, bounds "
            f"{config['bounds']}, untargeted; attack parameters: defaults of advlab evaluate "
            f"(docs/evaluation.md) updated by {json.dumps(config['params'])}")


def _fired_text(checks: list[dict[str, Any]]) -> str:
    fired = [c for c in checks if c["fired"]]
    if not fired:
        return f"None of the {len(checks)} checks fired."
    return (f"{len(fired)} of {len(checks)} checks fired; the adaptive attack (pgd-adaptive) was run and the "
            "worst-case rows name the strongest attack.")


def checks_markdown(report: Report) -> list[str]:
    """The gradient-masking section: a table of the checks, or why they were skipped."""
    if report.checks_skipped:
        return ["## Gradient-masking checks", "", f"Skipped: {report.checks_skipped}.", ""]
    if not report.checks:
        return []
    md = ["## Gradient-masking checks", "", _fired_text(report.checks), CHECKS_DOC, "",
          "| code | check | fired | measured |", "|---|---|---|---|"]
    md += [f"| {c['code']} | {c['name']} | {'⚠ yes' if c['fired'] else 'no'} | {c['detail']} |"
           for c in report.checks]
    return [*md, ""]


def baseline_markdown(report: Report) -> list[str]:
    """The table again with the baseline's rows interleaved (empty without a baseline)."""
    if not report.baseline:
        return []
    return [f"## Next to the baseline {report.baseline[0].model}", "",
            "Each row of the model is followed by the baseline's row with the same attack and ε "
            "(`--baseline`; the baseline's own report is in `baseline/`).", "",
            format_comparison(report.rows, report.baseline, markdown=True), ""]


def markdown(report: Report) -> str:
    """``report.md``: settings, the table, the baseline, the checks and the figures (in ``figures/``)."""
    c = report.config
    md = [
        f"# Robustness report: {c['model']} on {c['dataset']}", "",
        f"- Threat model: {threat_text(c)}",
        f"- Examples: first {c['n']} of the test split; seed {c['seed']}; batch size {c['batch_size']}",
        f"- Environment: {json.dumps(report.environment)}",
        f"- Command: `{report.command}`" if report.command else "- Command: Python API",
        "", LEGEND_MD, "", format_table(report.rows, markdown=True), "",
    ]
    md += baseline_markdown(report) + checks_markdown(report)
    md += [f"## {cap}\n\n![{name}](figures/{name}.png)\n" for name, cap, _ in report.figures]
    return "\n".join(md)


def checks_html(report: Report) -> str:
    """The gradient-masking section of the page (empty if the checks neither ran nor were skipped)."""
    if report.checks_skipped:
        return f"<h2>Gradient-masking checks</h2><p>Skipped: {html.escape(report.checks_skipped)}.</p>"
    if not report.checks:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(c['code'])}</td><td>{html.escape(c['name'])}</td>"
        f"<td>{'⚠ yes' if c['fired'] else 'no'}</td><td>{html.escape(c['detail'])}</td></tr>" for c in report.checks
    )
    return (
        "<h2>Gradient-masking checks</h2><table id=\"checks\"><thead><tr><th>code</th><th>check</th><th>fired</th>"
        f"<th>measured</th></tr></thead><tbody>{rows}</tbody></table>"
        "<p>See docs/warnings.md. When a check fires, pgd-adaptive (margin loss, BPDA, EOT) runs and the worst-case "
        "rows name the strongest attack.</p>"
    )


def results_html(rows: list[Row]) -> str:
    """The results table of the page (id ``results``), warnings in the last column."""
    heads = "".join(f"<th>{h}</th>" for h in [*HEAD, "warnings"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in [*cells(r), "; ".join(r.warnings)]) + "</tr>"
        for r in rows
    )
    return f'<table id="results"><thead><tr>{heads}</tr></thead>\n<tbody>{body}</tbody></table>'


def figures_html(report: Report) -> str:
    """Every figure embedded as a data URI, with its caption."""
    return "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        for name, cap, png in report.figures
    )


def html_page(report: Report) -> str:
    """``report.html``: self-contained (figures embedded); the page counts its loaded images on load."""
    c, env, command = report.config, json.dumps(report.environment), str(report.command)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>advlab report: {html.escape(c['model'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:1em}}figcaption{{font-size:12px}}</style>
</head><body>
<h1>Robustness report: {html.escape(c['model'])} on {html.escape(c['dataset'])}</h1>
<p><b>Threat model:</b> {html.escape(threat_text(c))}</p>
<p><b>Examples:</b> first {c['n']} of the test split; seed {c['seed']}.
<b>Environment:</b> {html.escape(env)}. <b>Command:</b> <code>{html.escape(command)}</code></p>
{results_html(report.rows)}
<p>Acc@1/Acc@5 w/ = under attack, w/o = clean; success = share of correctly classified examples the attack
misclassifies; norm medians over successful examples; minimal-perturbation attacks are scored at every ε;
worst-case = broken by any bounded attack.</p>
{checks_html(report)}
{figures_html(report)}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""


def render_report(directory: str | Path) -> tuple[Path, Path]:
    """Render ``report.md`` (with PNGs in ``figures/``) and ``report.html`` from ``DIR/results.sqlite``."""
    d = Path(directory)
    report = read_report(d)
    figdir = d / "figures"
    figdir.mkdir(exist_ok=True)
    for name, _, png in report.figures:
        atomic_write_bytes(figdir / f"{name}.png", png)
    atomic_write_text(d / "report.md", markdown(report))
    atomic_write_text(d / "report.html", html_page(report))
    return d / "report.md", d / "report.html"


__all__ = ["Report", "html_page", "markdown", "read_report", "render_report"]
