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

import importlib
from typing import Callable

import pandas as pd

FiguresFunction = Callable[[dict, dict], list]


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


__all__ = ["FiguresFunction", "for_stage", "main_table"]
