"""Plot of the claims stage: one small panel per measured claim, in that claim's own units — the
statistic that decided its verdict, with its 95% interval, against its threshold."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import verdicts
from . import main_table

# By verdict kind (recallscope.verdicts.kind): the report's badge colours.
VERDICT_COLOURS = {"holds": "#2b8a3e", "fails": "#c92a2a", "inconclusive": "#e67700", "na": "#868e96", "other": "#862e9c"}
PANEL_PX = 92  # px per claim: its title, its panel, its tick labels
GAP_PX = 48  # px between two panels
TITLE_CHARS = 56  # a panel title fits the narrowest figure (recallscope.figures.NARROWEST) on one line


def _title(v: verdicts.ClaimView) -> str:
    """ "C1 does not hold: scatter r (attention vs a·W_U[X]) ≥ 0.5", the condition's name cut to fit."""
    head, tail = f"{v.id} {v.verdict}: ", f" {v.deciding.against()}"
    label = v.deciding.label or v.measure or ""
    room = max(8, TITLE_CHARS - len(head) - len(tail))
    return head + (label if len(label) <= room else label[: room - 1] + "…") + tail


def records(frame: pd.DataFrame | None) -> list[dict]:
    return [] if frame is None else frame.to_dict("records")


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[one panel per measured claim: the deciding statistic (:class:`recallscope.verdicts.Deciding`)
    as a marker with its 95% interval where the table gives it (else the interval end the rule
    compares, marked as such), the threshold as a dashed line, coloured by verdict].

    Each panel has its own x axis: a share, logits and a probability never share one. Reads the
    main table's rows and the ``sensitivity`` table (the conditions: which statistic decided, its
    comparison); claims that were not measured have no panel (none measured: one empty figure that says so).
    """
    shown = [v for v in verdicts.views(records(main_table(tables)), records(tables.get("sensitivity"))) if v.kind != "na"]
    shown = [v for v in shown if v.deciding.value is not None or v.deciding.compared is not None]
    if not shown:
        empty = go.Figure()
        empty.add_annotation(text="no claim was measured on this run", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        empty.update_layout(title="The claims on this run", height=120)
        empty.update_xaxes(visible=False)
        empty.update_yaxes(visible=False)
        return [empty]
    titles = [html.escape(_title(v), quote=False) for v in shown]
    height = 50 + PANEL_PX * len(shown)
    spacing = GAP_PX / max(1, height - 50)  # the gap between panels, for the next panel's title, in px
    fig = make_subplots(rows=len(shown), cols=1, subplot_titles=titles, vertical_spacing=min(spacing, 0.9 / len(shown)))
    for row, v in enumerate(shown, start=1):
        d = v.deciding
        colour = VERDICT_COLOURS[v.kind]
        if d.value is not None:
            x, label = d.value, f"{d.value:.4g}"
            err = {}
            if d.low is not None and d.high is not None:
                err = {
                    "error_x": {
                        "type": "data",
                        "symmetric": False,
                        "array": [d.high - d.value],
                        "arrayminus": [d.value - d.low],
                        "color": colour,
                        "thickness": 2,
                    }
                }
                label += f" [{d.low:.4g}, {d.high:.4g}]"
        else:  # only the compared end is known: a marker at it, labelled
            end = verdicts.split_end(d.name)[1]
            x, label, err = d.compared, f"{f'interval {end}' if end else 'compared'} {d.compared:.4g}", {}
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[0],
                mode="markers" if d.value is not None else "markers+text",
                marker={"size": 11, "color": colour, "symbol": "diamond" if d.value is None else "circle"},
                text=[html.escape(label, quote=False)],
                textposition="middle right",
                textfont={"color": colour},
                showlegend=False,
                hovertext=[html.escape(f"{label} {d.against()}", quote=False)],
                hoverinfo="text",
                **err,
            ),
            row=row,
            col=1,
        )
        points = [p for p in (x, d.low, d.high, d.threshold) if p is not None]
        if d.value is None:  # the label goes on the side with room: towards the threshold's side of the axis
            fig.data[-1].textposition = "middle right" if x <= (min(points) + max(points)) / 2 else "middle left"
        if d.threshold is not None:
            fig.add_vline(x=d.threshold, line_dash="dash", line_color="#495057", row=row, col=1)
        lo, hi = min(points), max(points)
        pad = (hi - lo) * 0.15 or max(abs(hi) * 0.15, 0.05)
        fig.update_xaxes(range=[lo - pad, hi + pad], row=row, col=1)
        fig.update_yaxes(visible=False, range=[-1, 1], row=row, col=1)
    fig.update_layout(
        title="The claims on this run: the statistic that decided each verdict, 95% interval, threshold dashed",
        height=height,
        showlegend=False,
    )
    fig.update_annotations(font_size=12, xanchor="left", x=0)
    return [fig]
