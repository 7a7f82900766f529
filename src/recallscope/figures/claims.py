"""Plot of the claims stage: each measurable claim's figure with its interval, coloured by verdict."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from . import main_table

# By the verdict strings of recallscope.claims (HOLDS, FAILS, NOT_MEASURABLE); any other is dark grey.
VERDICT_COLOURS = {"holds": "#2e7d32", "does not hold": "#c62828", "not measurable here": "#9e9e9e"}


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[one marker per claim with a measured value, with its interval as error bars; the margins (:func:`margins`)].

    Reads the main table's ``claim``, ``value``, ``ci_low``, ``ci_high``, ``verdict`` and ``measure``
    (and ``margin``, ``rule`` for the second figure).
    """
    rows = main_table(tables).dropna(subset=["value"])
    fig = go.Figure()
    for _, r in rows.iterrows():
        err_plus = (r["ci_high"] - r["value"]) if pd.notna(r["ci_high"]) else None
        err_minus = (r["value"] - r["ci_low"]) if pd.notna(r["ci_low"]) else None
        fig.add_trace(
            go.Scatter(
                x=[r["value"]],
                y=[html.escape(str(r["claim"]), quote=False)],
                mode="markers",
                marker=dict(size=12, color=VERDICT_COLOURS.get(r["verdict"], "#555")),
                error_x=dict(type="data", symmetric=False, array=[err_plus or 0], arrayminus=[err_minus or 0]),
                name=html.escape(str(r["verdict"]), quote=False),
                showlegend=False,
                hovertext=html.escape(str(r.get("measure", "")), quote=False),
            )
        )
    fig.update_layout(
        title="The paper's claims on this run (figure and 95% interval; colour = verdict)",
        xaxis_title="measured figure (see each row's measure)",
        height=120 + 60 * max(1, len(rows)),
        margin=dict(l=20, r=20, t=60, b=40),
    )
    fig.update_yaxes(automargin=True)
    return [fig, margins(rows)]


def margins(rows: pd.DataFrame) -> go.Figure:
    """One bar per claim with a margin: the signed distance from its interval's relevant end to the
    primary threshold (> 0: the rule is met with that room), in that claim's own units (hover: the rule).

    Reads ``claim``, ``margin``, ``verdict`` and ``rule`` (absent columns: an empty figure)."""
    fig = go.Figure()
    if "margin" in rows:
        shown = rows.dropna(subset=["margin"])
        fig.add_trace(
            go.Bar(
                x=list(shown["margin"]),
                y=[html.escape(str(c), quote=False) for c in shown["claim"]],
                orientation="h",
                marker=dict(color=[VERDICT_COLOURS.get(v, "#555") for v in shown["verdict"]]),
                hovertext=[html.escape(str(r), quote=False) for r in shown.get("rule", [""] * len(shown))],
                showlegend=False,
            )
        )
    fig.update_layout(
        title="How far each verdict is from flipping: margin of the primary condition (each row in its own units)",
        xaxis_title="margin (> 0: holds with that room; < 0: misses by that much)",
        height=120 + 60 * max(1, len(rows)),
        margin=dict(l=20, r=20, t=60, b=40),
    )
    fig.update_yaxes(automargin=True)
    return fig
