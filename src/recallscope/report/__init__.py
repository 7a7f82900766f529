"""The HTML report of a run directory (``report.html``): self-contained, offline, escaped."""

from .html import REPORT, render_report, write_report

__all__ = ["REPORT", "render_report", "write_report"]
