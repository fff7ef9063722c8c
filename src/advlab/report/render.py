"""Render ``report.md`` and a self-contained ``report.html`` (figures as data URIs) from a store alone."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.report.certified import certified_figure, certified_html, certified_markdown
from advlab.report.dense import render_dense
from advlab.report.detection import adaptive_html, adaptive_markdown, detector_html, detector_markdown, roc_figures
from advlab.report.figures import accuracy_figure, norm_histograms, triplet_figure
from advlab.report.responses import responses_html, responses_markdown
from advlab.report.settings import (
    PAGE_CSS,
    PARAM_HEAD,
    code_spans_html,
    embedded_figures,
    environment_rows,
    html_table,
    md_table,
    param_rows,
    params_note,
    setting_rows,
)
from advlab.report.tables import format_comparison, format_table, results_html
from advlab.results.aggregate import compute_rows, stored_jobs
from advlab.results.plan import Job
from advlab.results.records import Row, table_notes
from advlab.results.store import Store

if TYPE_CHECKING:
    import torch

LEGEND_MD = (
    "Acc@1/Acc@5 w/ = under attack, w/o = clean. success = share of correctly classified examples the "
    "attack misclassifies. Norm medians are over successful examples. Minimal-perturbation attacks run once "
    "and are scored at every ε. `worst-case` counts an example as broken if any bounded attack broke it, "
    "the gradient-masking checks' own attacks on their subset included; its bracket names the strongest row "
    "and any check attack that broke more."
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
    jobs: list[Job] = field(default_factory=list)  # every job of the store, the adaptive one included
    meta: dict[str, Any] = field(default_factory=dict)  # escalation, ensemble, costs, skipped (the store's meta)


RESPONSE_META = ("escalation", "ensemble", "costs", "skipped", "certified", "detector", "adaptive", "adaptive_why",
                 "model_notes")


def successful_outcomes(store: Store, config: dict[str, Any]) -> list[tuple[Job, dict[str, torch.Tensor]]]:
    """Each attack's last job (its largest budget) with ``adv`` marking the examples the table counts as successes.

    A success is a correctly classified example the attack misclassifies, as in the table's success
    rate and norm medians; an example the model already got wrong is no success (its norm is 0).
    """
    top1 = store.clean()["top1"]
    last = {job.name: job for job in stored_jobs(store, config)}
    out = []
    for job in last.values():
        o = store.outcomes(job.key)
        out.append((job, {**o, "adv": o["adv"] & top1}))
    return out


def figures(store: Store, config: dict[str, Any], rows: list[Row]) -> list[tuple[str, str, bytes]]:
    """(file stem, caption, PNG): accuracy curves, norm histograms, one triplet figure per attack."""
    out = [
        ("accuracy_vs_eps", "Acc@1 under attack against ε, one panel per norm (ε = 0 is the clean accuracy)",
         accuracy_figure(rows, config["norm"])),
        ("norms", "Perturbation norms of successful examples (correctly classified ones the attack misclassifies) "
                  "at each attack's largest budget; minimal attacks: every success",
         norm_histograms(successful_outcomes(store, config))),
    ]
    certified = store.get_meta("certified")
    if certified:
        out.append(("certified_vs_attacked", "Certified (proven, ≥) and attacked (≤) Acc@1 against ε; the shaded "
                    "gap is what the evaluation leaves open", certified_figure(certified)))
    out += roc_figures(store, config)
    clean = store.clean()
    seen = set()
    for job in stored_jobs(store, config)[::-1]:  # the largest budget of each attack
        if job.name in seen:
            continue
        seen.add(job.name)
        ex = store.examples(job.key)
        if ex:
            budget = "minimal" if job.eps == math.inf else job.eps
            label = job.name if job.eps is None else f"{job.name} at {budget} ({job.norm})"
            out.append((f"triplet_{job.name}", f"{label}: original | perturbation | adversarial",
                        triplet_figure(ex[:4], clean, store.outcomes(job.key), label)))
    return out


def dense_config(directory: Path) -> tuple[Store, dict[str, Any]] | None:
    """The open store and configuration of a segmentation or detection evaluation in ``directory`` (else None)."""
    path = directory / "results.sqlite"
    if not path.exists():
        return None
    store = Store(path)
    config = store.get_config()
    if config is not None and config.get("task"):
        return store, config
    store.close()
    return None


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
        # the parameters of the adaptive attack a check added, recorded when it ran
        config["effective_params"] = {**config.get("effective_params", {}), **(store.get_meta("adaptive_params") or {}),
                                      **(store.get_meta("added_params") or {})}
        rows = compute_rows(store, config)
        notes = table_notes(store.clean(), store.get_meta("classes"))
        report = Report(config, rows, store.get_meta("environment") or {}, store.get_meta("command"),
                        store.get_meta("checks") or [], store.get_meta("checks_skipped"),
                        figures(store, config, rows), jobs=stored_jobs(store, config),
                        meta={**{k: store.get_meta(k) for k in RESPONSE_META}, "notes": notes})
    finally:
        store.close()
    base = directory / "baseline" / "results.sqlite"
    if base.exists():
        report.baseline = read_rows(base)
    return report


def _fired_text(checks: list[dict[str, Any]]) -> str:
    fired = [c for c in checks if c["fired"]]
    if not fired:
        return f"None of the {len(checks)} checks fired."
    return (f"{len(fired)} of {len(checks)} checks fired; the adaptive attack (pgd-adaptive, where the model has "
            "gradients) and the escalation ran (below), and the worst-case rows name the strongest attack.")


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


def settings_markdown(report: Report) -> list[str]:
    """The attack parameters and the environment as Markdown tables."""
    return ["## Attack parameters", "", *md_table(PARAM_HEAD, param_rows(report.config, report.jobs)), "",
            params_note(report.environment), "",
            "## Environment", "", *md_table(["", "version / value"], environment_rows(report.environment)), ""]


def markdown(report: Report) -> str:
    """``report.md``: settings, the table, the baseline, the checks, parameters, environment and figures."""
    c = report.config
    md = [
        f"# Robustness report: {c['model']} on {c['dataset']}", "",
        *md_table(["setting", "value"], setting_rows(c, report.command)),
        "", "## Results", "", LEGEND_MD, "", format_table(report.rows, markdown=True), "",
        *[line for note in report.meta.get("notes") or [] for line in (f"**⚠ {note}**", "")],
        *detector_markdown(report.meta.get("detector")), *adaptive_markdown(report.rows),
        *certified_markdown(report.meta.get("certified")),
    ]
    md += baseline_markdown(report) + checks_markdown(report) + responses_markdown(report.meta, report.rows)
    md += settings_markdown(report)
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
        "<h2>Gradient-masking checks</h2><div class=\"wide\"><table id=\"checks\"><thead><tr><th>code</th>"
        f"<th>check</th><th>fired</th><th>measured</th></tr></thead><tbody>{rows}</tbody></table></div>"
        "<p>See docs/warnings.md. When a check fires, pgd-adaptive (margin loss, BPDA, EOT) and the escalation "
        "(transfer, automatic BPDA/EOT, Square 5 000) run, and the worst-case rows name the strongest attack.</p>"
    )


def figures_html(report: Report) -> str:
    """Every figure of the report embedded as a data URI, with its caption."""
    return embedded_figures(report.figures)




def html_page(report: Report) -> str:
    """``report.html``: self-contained (figures embedded), fits a 1 280-px window; counts its loaded images on load."""
    c = report.config
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>advlab report: {html.escape(c['model'])}</title>
<style>{PAGE_CSS}</style>
</head><body>
<h1>Robustness report: {html.escape(c['model'])} on {html.escape(c['dataset'])}</h1>
{html_table(["setting", "value"], setting_rows(c, report.command), "settings")}
<h2>Results</h2>
{results_html(report.rows)}
{"".join(f'<p class="warn"><b>⚠ {html.escape(note)}</b></p>' for note in report.meta.get("notes") or [])}
<p>Acc@1/Acc@5 w/ = under attack, w/o = clean; success = share of correctly classified examples the attack
misclassifies; norm medians over successful examples; minimal-perturbation attacks are scored at every ε;
worst-case = broken by any bounded attack.</p>
{detector_html(report.meta.get("detector"))}
{adaptive_html(report.rows)}
{certified_html(report.meta.get("certified"))}
{checks_html(report)}
{responses_html(report.meta, report.rows)}
<h2>Attack parameters</h2>
{html_table(PARAM_HEAD, param_rows(c, report.jobs), "params")}
<p>{code_spans_html(params_note(report.environment))}</p>
<h2>Environment</h2>
{html_table(["", "version / value"], environment_rows(report.environment), "environment")}
<h2>Figures</h2>
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
    dense = dense_config(d)
    if dense is not None:
        store, config = dense
        try:
            return render_dense(d, store, config)
        finally:
            store.close()
    report = read_report(d)
    figdir = d / "figures"
    figdir.mkdir(exist_ok=True)
    for name, _, png in report.figures:
        atomic_write_bytes(figdir / f"{name}.png", png)
    atomic_write_text(d / "report.md", markdown(report))
    atomic_write_text(d / "report.html", html_page(report))
    return d / "report.md", d / "report.html"


__all__ = ["Report", "embedded_figures", "html_page", "markdown", "read_report", "render_report", "successful_outcomes"]
