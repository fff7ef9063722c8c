"""Reports rendered from a results store alone: Markdown, self-contained HTML, figures."""

from advlab.report.render import render_report

__all__ = ["render_report"]
