"""The transfer matrix as a Markdown table, a heat-map PNG and a self-contained HTML page."""

from __future__ import annotations

import base64
import html

from advlab.report.figures import transfer_heatmap
from advlab.results.records import TransferRecord


def transfer_markdown(record: TransferRecord) -> str:
    """A Markdown table: rows are sources, columns targets; cells are transfer success."""
    head = f"| source \\ target | {' | '.join(f'`{t}`' for t in record.targets)} |"
    sep = "|---|" + "---|" * len(record.targets)
    rows = [head, sep]
    for s, row in zip(record.sources, record.success, strict=True):
        cells = ["—" if v is None else f"{v:.3f}" for v in row]
        rows.append(f"| `{s}` | {' | '.join(cells)} |")
    rows.append(f"| *clean Acc@1* | {' | '.join(f'{a:.3f}' for a in record.clean_acc)} |")
    caption = (
        f"Transfer success of {record.attack} ({record.norm}, ε={record.eps:g}, {record.n} test "
        f"images, seed {record.seed}): fraction of the images a target classifies correctly "
        "whose adversarial version, crafted on the source, it misclassifies. "
        "Diagonal: white-box. — : target-only model (not differentiable)."
    )
    return caption + "\n\n" + "\n".join(rows) + "\n"


def transfer_png(record: TransferRecord) -> bytes:
    """The heat-map of the matrix as PNG bytes."""
    return transfer_heatmap(record)


def _html_rows(record: TransferRecord) -> str:
    body = []
    for s, row in zip(record.sources, record.success, strict=True):
        cells = "".join(
            "<td>—</td>" if v is None
            else f'<td style="background:rgba(220,50,47,{v:.2f})">{v:.3f}</td>'
            for v in row
        )
        body.append(f"<tr><th>{html.escape(s)}</th>{cells}</tr>")
    clean = "".join(f"<td>{a:.3f}</td>" for a in record.clean_acc)
    body.append(f"<tr><th><i>clean Acc@1</i></th>{clean}</tr>")
    return "".join(body)


def transfer_html(record: TransferRecord, png: bytes | None = None) -> str:
    """A small self-contained HTML page: the heat-map (embedded; drawn if ``png`` is None) and the table."""
    png = png if png is not None else transfer_png(record)
    img = base64.b64encode(png).decode("ascii")
    head = "".join(f"<th>{html.escape(t)}</th>" for t in record.targets)
    title = f"advlab transferability: {record.attack} {record.norm} ε={record.eps:g}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:center}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{record.n} test images, seed {record.seed}. Cell: fraction of the images the "
        "target (column) classifies correctly whose adversarial version crafted on the source "
        "(row) it misclassifies. Diagonal: white-box success. —: target-only model "
        "(not differentiable; attacked only through its predict function).</p>"
        f"<img alt='transfer heat-map' src='data:image/png;base64,{img}'>"
        f"<table><tr><th>source \\ target</th>{head}</tr>{_html_rows(record)}</table>"
        "</body></html>\n"
    )


__all__ = ["transfer_html", "transfer_markdown", "transfer_png"]
