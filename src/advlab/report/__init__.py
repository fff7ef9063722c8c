"""Every table and figure: terminal/Markdown tables, ``report.md``/``report.html``, the transfer page.

Reports are rendered from the results (the store, the records) alone, never from the code that
runs attacks.
"""

from advlab.report.render import render_report
from advlab.report.tables import eps_label, format_comparison, format_table
from advlab.report.transfer import transfer_html, transfer_markdown, transfer_png

__all__ = ["eps_label", "format_comparison", "format_table", "render_report", "transfer_html", "transfer_markdown",
           "transfer_png"]
