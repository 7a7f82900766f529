"""Plot of the onset stage: layer by layer at the end position, the mover heads' cumulative write along the
subject's unembedding (logits of π(X)) and the answer-domain share of the logit lens's top tokens, with
the mean onset layers. A sweep's overview draws the same two panels with one line per shot count
(:func:`profiles`, from :mod:`recallscope.figures.shots`)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import main_table
from .causal_trace import add_band_line

PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0c8599")
PANELS = ("mover heads' cumulative write along W_U[X] (logits of π(X))", "answer-domain share of the lens's top tokens")


def _band(layers: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per layer: the mean over prompts (``column``) and the middle half of the prompts (``ci_low``/``ci_high``:
    the 25th and 75th percentiles, the spread of prompts rather than an interval of the mean)."""
    g = layers.groupby("layer")[column]
    return pd.DataFrame({column: g.mean(), "ci_low": g.quantile(0.25), "ci_high": g.quantile(0.75)}).reset_index()


def profiles(cells: list[tuple[str, pd.DataFrame, pd.DataFrame]], title: str, min_share: float | None = None) -> go.Figure:
    """Two panels against the layer: the mean cumulative write (left) and the mean lens domain share
    (right), one line per cell with the middle half of its prompts shaded, and a dotted vertical line at
    the cell's mean move onset (left) and mean domain onset (right; only over prompts whose lens reached
    the domain). ``cells``: (legend label, the stage's ``layers`` table, its main table); ``min_share``:
    the domain threshold, drawn as a horizontal line."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=PANELS, horizontal_spacing=0.12)
    for i, (label, layers, main) in enumerate(cells):
        colour = PALETTE[i % len(PALETTE)]
        name = html.escape(label, quote=False)
        n_layers = int(layers["layer"].max()) + 1 if len(layers) else 0
        for col, column, onset in ((1, "attn_write_x_cumulative", "move_layer"), (2, "lens_domain_share", "domain_layer")):
            add_band_line(fig, _band(layers, column), column, colour, name, showlegend=col == 1, row=1, col=col)
            values = main[onset].to_numpy(float)
            values = values[np.isfinite(values) & (values < n_layers)]
            if len(values):
                fig.add_vline(x=float(values.mean()), line_dash="dot", line_color=colour, row=1, col=col)
    if min_share is not None:
        fig.add_hline(y=float(min_share), line_color="#868e96", line_dash="dash", row=1, col=2)
    n = max((int(layers["layer"].max()) + 1 for _, layers, _ in cells if len(layers)), default=0)
    fig.update_xaxes(title_text="layer", dtick=1 if n <= 12 else 5)
    fig.update_yaxes(title_text="logits", row=1, col=1)
    fig.update_yaxes(title_text="share", range=[0, 1.02], row=1, col=2)
    fig.update_layout(title=title)
    return fig


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[the two layer profiles of this run's prompts].

    Reads the ``layers`` table (``prompt_index``, ``layer``, ``attn_write_x_cumulative`` (logits),
    ``lens_domain_share`` (0–1)), the main table's ``move_layer`` and ``domain_layer``, and the summary's
    ``thresholds`` (``move_fraction``, ``min_domain_share``), ``domain_top_k`` and ``n_prompts``."""
    if "layers" not in tables:
        raise ValueError("the onset figure needs the 'layers' table")
    th = summary.get("thresholds") or {}
    title = (
        f"When the subject reaches the last position and the answer domain appears — {summary.get('n_prompts', '?')} "
        f"prompts (shaded: middle half; dotted: mean onset at {th.get('move_fraction', '?')} of the peak write and at "
        f"≥ {th.get('min_domain_share', '?')} of the top {summary.get('domain_top_k', '?')} tokens)"
    )
    return [profiles([("this run", tables["layers"], main_table(tables))], title, th.get("min_domain_share"))]
