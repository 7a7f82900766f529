"""The HTML report of a run directory (``report.html``): self-contained, offline, escaped.

Rendered from the run directory's files alone (manifest, summary, tables) with Jinja2 templates
(``templates/``); importing it loads neither torch nor a stage module.
"""

from .html import REPORT, render_report, write_report

__all__ = ["REPORT", "render_report", "write_report"]
