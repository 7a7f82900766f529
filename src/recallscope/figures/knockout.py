"""Plot of the knockout stage (attention knockout, Geva et al. 2023): the mean relative change
of p(Y) when the last position's attention edges to a set of positions are blocked in a window
of layers, against the window's centre, one line per blocked set, with bootstrap intervals."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .causal_trace import add_band_line

NAMES = {"subject": "subject positions", "non_subject": "non-subject positions", "last": "the last position itself"}
COLOURS = {"subject": "#2ca02c", "non_subject": "#1f77b4", "last": "#d62728"}


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[line plot of mean relative change (%) of p(Y) per window centre, one line per blocked set].

    Reads the ``windows`` table (``block``, ``layer``, ``mean_relative_change_pct``,
    ``ci_low``, ``ci_high``) and the summary's ``window``, ``n_prompts`` and ``mover_layers``
    (the layers of the heads patching singles out as movers, drawn as labelled vertical lines when present).
    """
    if "windows" not in tables:
        raise ValueError("the knockout figure needs the 'windows' table")
    w = tables["windows"]
    fig = go.Figure()
    for block in [b for b in NAMES if (w["block"] == b).any()]:
        rows = w[w["block"] == block].sort_values("layer")
        add_band_line(fig, rows, "mean_relative_change_pct", COLOURS[block], NAMES[block], mode="lines+markers")
    for i, layer in enumerate(summary.get("mover_layers") or []):  # labels alternate sides: neighbours do not overlap
        side = "top left" if i % 2 == 0 else "top right"
        fig.add_vline(x=layer, line_dash="dot", line_color="#868e96", annotation_text=f"mover L{layer}", annotation_position=side)
    fig.add_hline(y=0, line_color="#adb5bd")
    fig.update_layout(
        title=(
            f"Attention knockout: last position → blocked positions, window of {summary.get('window', '?')} layers "
            f"— {summary.get('n_prompts', '?')} prompts, 95% bootstrap intervals"
        ),
        xaxis_title="centre of the window of blocked layers",
        yaxis_title="mean change of p(Y), %",
        legend_title="edges blocked to",
    )
    return [fig]
