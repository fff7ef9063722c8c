"""The report's settings as readable tables: the run, the parameters each attack ran with, the environment.

Everything is read from the stored configuration (``effective_params`` holds, per job key, the
parameters the attack actually ran with) and the stored environment; nothing is shown as a raw
dict or JSON. Keys the report does not know (added by a later advlab) still appear, by name.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advlab._io import atomic_write_bytes, atomic_write_text
from advlab.data.torch_dataset import PREFIX, is_torch_name
from advlab.results.plan import Job

NORM_LABEL = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
PARAM_HEAD = ["attack", "norm", "ε", "parameters it ran with", "set by you"]
# configuration keys the settings table shows in its own words (or in the parameters table)
SHOWN_KEYS = ("model", "dataset", "n", "norm", "eps", "bounds", "seed", "batch_size", "checks", "attacks", "params",
              "effective_params", "detector")
ENV_LABEL = {"advlab": "advlab", "torch": "torch", "python": "Python", "machine": "machine",
             "threads": "torch threads"}


def norm_label(norm: str) -> str:
    """A norm's name as printed (``linf`` → ``L∞``); an unknown name as given."""
    return NORM_LABEL.get(norm, norm)


def value_text(v: Any) -> str:
    """A parameter's or setting's value as plain text: numbers with ``:g``, lists comma-separated, dicts as k = v."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:g}"
    if isinstance(v, Mapping):
        return "; ".join(f"{k} = {value_text(x)}" for k, x in v.items()) or "—"
    if isinstance(v, Sequence) and not isinstance(v, str):
        return ", ".join(value_text(x) for x in v) or "—"
    return str(v)


def params_text(params: Mapping[str, Any]) -> str:
    """``steps = 40, step_size = 0.01``; ``—`` for none."""
    return ", ".join(f"{k} = {value_text(v)}" for k, v in params.items()) or "—"


def _budget_text(jobs: Sequence[Job]) -> str:
    """The budgets of a group of jobs of one attack: a list of ε, 'minimal' or 'none' (unbounded)."""
    first = jobs[0]
    if first.eps is None:
        return "none (ignores ε)"
    if first.eps == math.inf:
        return f"minimal (scored at {value_text(list(first.sweep))})"
    return value_text([j.eps for j in jobs])


def param_rows(config: Mapping[str, Any], jobs: Sequence[Job]) -> list[list[str]]:
    """One row per attack and norm whose jobs ran with the same parameters: attack, norm, ε, parameters, overrides.

    A job missing from ``effective_params`` (the adaptive attack a check added, or a store written
    before advlab recorded them) says so instead of guessing.
    """
    effective = config.get("effective_params") or {}
    user = config.get("params") or {}
    groups: list[tuple[str, str, str, list[Job]]] = []
    for job in jobs:
        ran = effective.get(job.key)
        text = ("not recorded (the attack's defaults and your overrides)" if ran is None
                else params_text(ran) if ran else "the attack's defaults")
        if groups and groups[-1][:3] == (job.name, job.norm, text):
            groups[-1][3].append(job)
        else:
            groups.append((job.name, job.norm, text, [job]))
    rows = [[attack, norm_label(norm), _budget_text(group), text, params_text(user.get(attack, {}))]
            for attack, norm, text, group in groups]
    ran_attacks = {job.attack for job in jobs} | {job.name for job in jobs}
    rows += [[attack, "—", "—", "did not run", params_text(p)]
             for attack, p in user.items() if attack not in ran_attacks]
    return rows


def params_note(environment: Mapping[str, Any]) -> str:
    """What the parameters table leaves out: every other parameter is the attack's default."""
    version = environment.get("advlab")
    where = f" in advlab {version}" if version else ""
    return (f"Every parameter not listed ran at the attack's default{where} (`advlab attacks` and the attack's "
            "docstring list them); the last column holds the overrides given in the `params` table of "
            "`--config` or with `params=`.")


def threat_text(config: Mapping[str, Any]) -> str:
    """The threat model in words, e.g. ``L∞, ε ∈ {0.1, 0.3}, inputs in [0, 1], untargeted``."""
    lo, hi = config["bounds"]
    return (f"{norm_label(config['norm'])}, ε ∈ {{{value_text(list(config['eps']))}}}, inputs in "
            f"[{value_text(float(lo))}, {value_text(float(hi))}], untargeted")


def _data_text(dataset: str) -> str:
    """What the evaluated examples are the first of."""
    if dataset == "tensors":
        return "the tensors given to advlab.evaluate"
    if is_torch_name(dataset):
        return f"the {dataset.removeprefix(PREFIX)} given to advlab.evaluate"
    return f"the {dataset} test split"


def setting_rows(config: Mapping[str, Any], command: str | None) -> list[list[str]]:
    """The run's settings as (setting, value) rows; configuration keys the report does not know appear by name."""
    checks = config.get("checks")
    rows = [
        ["model", str(config["model"])],
        ["data", f"the first {config['n']} examples of "
                 + _data_text(str(config["dataset"]))],
        ["threat model", threat_text(config)],
        ["attacks", value_text(list(config["attacks"]))],
        ["seed", str(config["seed"])],
        ["batch size", str(config["batch_size"])],
    ]
    if checks is not None:
        rows.append(["gradient-masking checks", "on" if checks else "off"])
    if config.get("detector"):
        rows.append(["detector (reject option)", detector_setting(config["detector"])])
    rows += [[k, value_text(v)] for k, v in config.items() if k not in SHOWN_KEYS]
    rows.append(["command", command or "Python API (advlab.evaluate)"])
    return rows


def detector_setting(entry: Mapping[str, Any]) -> str:
    """The detector setting in words: the spec fitted on the training split, or the file or object given."""
    given = entry.get("file") or (f"a {entry['object']} detector given as an object" if entry.get("object") else None)
    what = f"{entry.get('name', '')} from {given}".strip() if entry.get("file") else given or str(entry.get("spec"))
    if entry.get("fit_n") is None:
        return f"{what} (its own threshold)"
    fit = entry.get("fit_attack") or {}
    fitted = "calibrated" if given else (f"fitted on {entry['fit_n']} training images (+ {entry.get('noise')} and "
                                         f"{fit.get('attack')} {fit.get('norm')} ε = {fit.get('eps')} copies),")
    return f"{what}, {fitted} threshold at {entry['fpr']:.0%} FPR on {entry['heldout_n']} held-out ones"


def environment_rows(environment: Mapping[str, Any]) -> list[list[str]]:
    """The environment as (what, value) rows: versions, machine, threads, then any other recorded key."""
    known = [[ENV_LABEL[k], value_text(environment[k])] for k in ENV_LABEL if k in environment]
    return known + [[k, value_text(v)] for k, v in environment.items() if k not in ENV_LABEL]


def code_spans_html(text: str) -> str:
    """Markdown-like text as HTML: escaped, with `code` spans as ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (``|`` in a cell escaped), as lines."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(head), "|" + "---|" * len(head), *(line(r) for r in rows)]


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    """An HTML table in a container that scrolls sideways rather than widening the page."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="wide"><table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


# The page fits a 1 280-px window: body at most 1 200 px, tables scroll inside their own container,
# the warnings column wraps, figures scale down (their PNGs are drawn at most about 950 px wide).
PAGE_CSS = """*{box-sizing:border-box}
body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
p,code{overflow-wrap:anywhere}p code{white-space:nowrap}
.wide{max-width:100%;overflow-x:auto;margin:.5em 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child{text-align:left}#results td,#results th,#checks td{white-space:nowrap}
#results td:last-child{white-space:normal;text-align:left;min-width:12em}
#settings td,#settings th,#params td,#params th,#environment td,#environment th{text-align:left;
overflow-wrap:anywhere}
figure{display:inline-block;max-width:100%;margin:1em 0;vertical-align:top}
img{max-width:100%;height:auto}figcaption{font-size:12px}"""


def embedded_figures(figures: Sequence[tuple[str, str, bytes]]) -> str:
    """(name, caption, PNG) figures as ``<figure>`` elements with the PNG embedded as a data URI."""
    return "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        for name, cap, png in figures
    )


def html_document(title: str, command: str, intro: str, body: str, figures: Sequence[tuple[str, str, bytes]]) -> str:
    """A self-contained report page: title, the command, an ``intro`` paragraph (HTML), ``body``, the figures."""
    lead = f"<p>{intro}</p>" if intro else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>advlab {html.escape(title)}'
            f"</title><style>{PAGE_CSS}</style></head><body><h1>{html.escape(title)}</h1><p><code>"
            f"{html.escape(command)}</code></p>{lead}{body}<h2>Figures</h2>{embedded_figures(figures)}</body></html>\n")


def write_bundle(directory: Path, figures: Sequence[tuple[str, str, bytes]], results: Mapping[str, Any],
                 markdown: str, page: str) -> list[Path]:
    """Write ``figures/*.png``, ``results.json``, ``report.md`` and ``report.html`` into ``directory`` atomically.

    Returns the paths of the report, the page and the results, in that order.
    """
    (directory / "figures").mkdir(parents=True, exist_ok=True)
    for name, _, png in figures:
        atomic_write_bytes(directory / "figures" / f"{name}.png", png)
    atomic_write_text(directory / "results.json", json.dumps(dict(results), indent=1, default=str))
    atomic_write_text(directory / "report.md", markdown)
    atomic_write_text(directory / "report.html", page)
    return [directory / n for n in ("report.md", "report.html", "results.json")]


__all__ = [
    "NORM_LABEL",
    "PAGE_CSS",
    "PARAM_HEAD",
    "code_spans_html",
    "detector_setting",
    "embedded_figures",
    "environment_rows",
    "html_document",
    "html_table",
    "md_table",
    "norm_label",
    "param_rows",
    "params_note",
    "params_text",
    "setting_rows",
    "threat_text",
    "value_text",
    "write_bundle",
]
