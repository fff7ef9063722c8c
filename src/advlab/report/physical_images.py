"""The report of ``advlab physical --attack patch|uap|print-photo``: tables, example figures, report.md/html.

Rendered from a study's summary alone — ``{"title", "verdict", "tables": [{"title", "head", "rows"}],
"settings"}`` — and its example rows (caption, images K×C×H×W, one title per image). Figures are
matplotlib ``Figure`` objects (never pyplot); files are written atomically by
:func:`advlab.report.settings.write_bundle`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from advlab.report.figures import new_figure, png_bytes
from advlab.report.settings import html_document, html_table, md_table, value_text, write_bundle
from advlab.report.tables import text_table

__all__ = ["example_figure", "image_report", "image_terminal"]

Example = tuple[str, torch.Tensor, Sequence[str]]
COLUMNS = 8


def _tables(s: Mapping[str, Any], command: str) -> list[tuple[str, list[str], list[list[str]]]]:
    out = [(t["title"], list(t["head"]), [list(r) for r in t["rows"]]) for t in s["tables"]]
    settings = [["model", str(s["model"])], ["dataset", str(s["dataset"])], ["seed", str(s["seed"])],
                ["crafting images (training split)", str(s["craft_images"])],
                ["held-out images (test split)", str(s["test_images"])],
                *([k, value_text(v)] for k, v in s["settings"].items()), ["command", command]]
    return [*out, ("Settings", ["setting", "value"], settings)]


def image_terminal(s: Mapping[str, Any]) -> str:
    """The study's tables as terminal text, then its verdict."""
    parts = [text_table(h, r) for t, h, r in _tables(s, "") if t != "Settings"]
    return "\n\n".join([*parts, s["verdict"]])


def example_figure(images: torch.Tensor, titles: Sequence[str]) -> bytes:
    """Images in rows of up to eight, each titled (grey images shown in grey)."""
    n = len(images)
    cols = min(COLUMNS, n)
    rows = -(-n // cols)
    fig = new_figure((1.3 * cols + 0.2, 1.45 * rows + 0.2))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        img = images[k].detach().clamp(0, 1).cpu()
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(titles[k], fontsize=7)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=100)


def image_report(directory: Path, s: Mapping[str, Any], examples: Sequence[Example], command: str) -> list[Path]:
    """Write results.json, report.md, report.html and figures/*.png for one study into ``directory``."""
    figs = [(f"examples-{k}", caption, example_figure(images, titles))
            for k, (caption, images, titles) in enumerate(examples)]
    tables = _tables(s, command)
    md = [f"# {s['title']}", "", f"Command: `{command}`", "", s["verdict"], ""]
    for title, head, rows in tables:
        md += [f"## {title}", "", *md_table(head, rows), ""]
    md += ["## Figures", ""] + [f"![{cap}](figures/{name}.png)\n" for name, cap, _ in figs]
    body = "".join(f"<h2>{html.escape(t)}</h2>{html_table(h, r, t.lower().replace(' ', '-'))}" for t, h, r in tables)
    page = html_document(s["title"], command, html.escape(s["verdict"]), body, figs)
    return write_bundle(directory, figs, {"command": command, **s}, "\n".join(md), page)
