"""The plots of each stage, drawn from what a run directory holds: its tables and its summary.

One module per stage, ``figures/<stage>.py``, each with one function::

    figures(tables: dict[str, pandas.DataFrame], summary: dict) -> list[plotly.graph_objects.Figure]

``tables`` is the stage's tables by name, the main table (the stage's ``<stage>.parquet``,
the result's ``to_frame()``) first; ``summary`` is the stage's entry of ``summary.json`` (the
result's ``to_dict()``). A result's ``plot()`` is the first of these figures, and the HTML
report draws all of them, so a figure looks the same in a notebook and in ``report.html``.

These modules import pandas, numpy and plotly only (never torch, never a stage module): the
report re-renders a run directory without the model stack. Strings that come from data
(subjects, tokens, component labels) are HTML-escaped before they reach plotly, which reads
text as a small HTML dialect.
"""

from __future__ import annotations

import html
import importlib
import re
from typing import Callable

import pandas as pd

FiguresFunction = Callable[[dict, dict], list]

HEIGHT = 360  # px: a figure's height unless it sets its own (the claims' panels grow with the claims)
CHAR_PX = 7.0  # px per character of 12 px text, to wrap titles before plotly cuts them
NARROWEST = 520  # px: the narrowest plot area a figure gets (a 900 px window, one figure per row)


def main_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The stage's main table: the first of ``tables`` (its name is the run layer's business).

    Raises ``ValueError`` when ``tables`` is empty.
    """
    for frame in tables.values():
        return frame
    raise ValueError("no table given: figures need at least the stage's main table")


def for_stage(stage: str) -> FiguresFunction | None:
    """``figures`` of ``recallscope.figures.<stage>``, or ``None`` when the stage has no module here.

    Found by the module naming convention (the folder layout is the pipeline), so a new stage
    adds its figures by adding its module, with no list to edit.
    """
    if not stage.isidentifier():
        return None
    try:
        module = importlib.import_module(f"{__name__}.{stage}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{stage}":
            raise  # the module exists but one of its own imports is missing: a real error
        return None
    make = getattr(module, "figures", None)
    return make if callable(make) else None


def wrap(text: str, width: int) -> str:
    """``text`` with plotly line breaks (``<br>``) between words so that no line is longer than
    ``width`` characters (a longer word stays whole). Plotly never wraps a title or an annotation
    itself: one that does not fit is cut at the figure's edge."""
    if not text or len(text) <= width:
        return text
    lines: list[str] = []
    line = ""
    for word in re.split(r"(?<=\s)", text.replace("<br>", " ")):
        if line and len(line) + len(word.rstrip()) > width:
            lines.append(line.rstrip())
            line = word.lstrip()
        else:
            line += word
    lines.append(line.rstrip())
    return "<br>".join(lines)


TOKEN_CHARS = 16  # characters of a token label (its repr, whitespace runs shortened) on a plot's axis


def token_label(token: str, limit: int = TOKEN_CHARS) -> str:
    """A token as an axis label: its ``repr`` (a newline shows as ``\\n``), a run of three or more
    spaces as ``␣×N``, cut to ``limit`` characters with "…", HTML-escaped. Plotly does not wrap or
    cut tick labels: a token of a newline and 54 spaces ran 340 px past its 360 px figure."""
    text = re.sub(r" {3,}", lambda m: f"␣×{len(m.group())}", repr(token))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text)


def _span(domain) -> float:
    try:
        return max(0.1, float(domain[1]) - float(domain[0]))
    except (TypeError, IndexError, ValueError):
        return 1.0


def finish(fig, height: int | None = None):
    """Lay ``fig`` out to read at any width from ``NARROWEST`` px up: every axis makes room for its
    labels and title (automargin), axis titles and subplot titles are wrapped to the room they have,
    the legend sits below the plot (beside it, it takes half a narrow figure), and the figure keeps
    its own height when it set one (else ``HEIGHT``). Returns ``fig`` (changed in place)."""
    layout = fig.layout
    h = height or layout.height or HEIGHT
    plot_h, plot_w = h - 110, NARROWEST - 80
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)

    def wrap_title(axis, room: float) -> None:
        if axis.title is not None and axis.title.text:
            axis.title.text = wrap(axis.title.text, max(12, int(room * _span(axis.domain) / CHAR_PX)))

    fig.for_each_xaxis(lambda axis: wrap_title(axis, plot_w))
    fig.for_each_yaxis(lambda axis: wrap_title(axis, plot_h))
    titles = [a for a in layout.annotations if a.xref == "paper" and a.yref == "paper" and a.text and a.showarrow is False]
    columns = max(1, len({round(float(a.x), 3) for a in titles})) if titles else 1
    for a in titles:
        a.text = wrap(a.text, max(10, int(plot_w / columns / CHAR_PX)))
    has_legend = layout.showlegend is not False and sum(1 for t in fig.data if t.showlegend is not False and t.name) > 1
    if has_legend:
        fig.update_layout(
            legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left"}
        )
    top = 30 + (18 if titles else 0)
    fig.update_layout(height=h, margin={"l": 10, "r": 10, "t": top, "b": 10}, autosize=True)
    return fig


__all__ = ["CHAR_PX", "FiguresFunction", "HEIGHT", "NARROWEST", "finish", "for_stage", "main_table", "wrap"]
