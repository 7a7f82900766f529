"""Plots of the trace stage (causal tracing, ROME): heatmaps of the mean indirect effect over
ROME's six position groups × layers, one per kind (hidden state, MLP window, attention window),
and ROME's line plot of the same means with their bootstrap intervals."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

GROUPS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)
TITLES = {
    "resid": "residual stream r[l] (one state: ROME's h_(l-1))",
    "mlp": "MLP outputs (window of {w} layers, centred on l)",
    "attn": "attention outputs (window of {w} layers, centred on l)",
}
SHORT = {"resid": "residual r[l]", "mlp": "MLP (window {w})", "attn": "attention (window {w})"}  # fit a third of a column
SCALES = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}  # ROME's colour maps
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#d62728")


def add_band_line(
    fig: go.Figure,
    rows: pd.DataFrame,
    y: str,
    colour: str,
    name: str,
    showlegend: bool = True,
    mode: str = "lines",
    row: int | None = None,
    col: int | None = None,
) -> None:
    """Add one curve with its interval to ``fig``: a shaded band from ``ci_low`` to ``ci_high``
    and the line ``rows[y]``, both against ``rows["layer"]`` (rows sorted by layer), sharing one
    legend entry ``name``. The line plots of the trace and knockout stages draw their curves so."""
    x = rows["layer"].tolist()
    where = {"row": row, "col": col} if row is not None else {}
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1],
            y=rows["ci_high"].tolist() + rows["ci_low"].tolist()[::-1],
            fill="toself",
            fillcolor=colour,
            opacity=0.2,
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        ),
        **where,
    )
    fig.add_trace(
        go.Scatter(x=x, y=rows[y], mode=mode, name=name, line={"color": colour}, legendgroup=name, showlegend=showlegend),
        **where,
    )


def _grouped(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    if "grouped" in tables:
        return tables["grouped"]
    raise ValueError("the trace figures need the 'grouped' table")


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[heatmap per kind present (resid, mlp, attn), line plot of every group with intervals].

    Reads the ``grouped`` table (``kind``, ``group``, ``layer``, ``mean_indirect_effect``,
    ``ci_low``, ``ci_high``, ``n_prompts``; IE in probability units) and the summary's
    ``window``, ``n_prompts``, ``mean_p_corrupted``.
    """
    grouped = _grouped(tables)
    window = summary.get("window", 10)
    n = summary.get("n_prompts", "?")
    kinds = [k for k in ("resid", "mlp", "attn") if (grouped["kind"] == k).any()]
    top = float(grouped["mean_indirect_effect"].max()) if len(grouped) else 1.0
    out = []
    for kind in kinds:
        g = grouped[grouped["kind"] == kind]
        layers = sorted(g["layer"].unique())
        z = np.full((len(GROUPS), len(layers)), np.nan)
        for r in g.itertuples():
            z[GROUPS.index(r.group), layers.index(r.layer)] = r.mean_indirect_effect
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=[str(layer) for layer in layers],
                y=list(GROUPS),
                colorscale=SCALES[kind],
                zmin=0,
                zmax=max(top, 1e-9),
                colorbar={"title": "mean IE"},
                hovertemplate="layer %{x}, %{y}: IE %{z:.4f}<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"Causal tracing: mean indirect effect on p(Y) of restoring the {TITLES[kind].format(w=window)} — {n} prompts",
            xaxis_title="l: the residual r[l] entering layer l" if kind == "resid" else "centre of the window of restored layers",
            yaxis_title="position",
            yaxis={"autorange": "reversed"},
        )
        out.append(fig)
    lines = make_subplots(
        rows=1,
        cols=len(kinds),
        shared_yaxes=True,
        subplot_titles=[html.escape(SHORT[k].format(w=window)) for k in kinds],  # short: side by side
    )
    names = _legend_names(grouped)
    for col, kind in enumerate(kinds, start=1):
        g = grouped[grouped["kind"] == kind]
        for i, group in enumerate(GROUPS):
            rows = g[g["group"] == group].sort_values("layer")
            if not len(rows):
                continue
            add_band_line(lines, rows, "mean_indirect_effect", COLOURS[i], names[group], showlegend=col == 1, row=1, col=col)
        lines.update_xaxes(title_text="layer", row=1, col=col)
    lines.update_yaxes(title_text="mean indirect effect on p(Y)", row=1, col=1)
    lines.update_layout(title=f"Causal tracing: mean indirect effect per position group, 95% bootstrap intervals — {n} prompts")
    lines.update_annotations(font_size=12)  # the subplot titles
    out.append(lines)
    return out


def _legend_names(grouped: pd.DataFrame) -> dict[str, str]:
    """Each group's legend name; a group whose curve is another's everywhere (a one-token subject: its
    first and last token; the token after the subject when it is the last token) says so, since the
    earlier group's line is drawn over it."""
    names = {}
    curves = {}
    for group in GROUPS:
        rows = grouped[grouped["group"] == group].sort_values(["kind", "layer"])
        curve = tuple(rows["mean_indirect_effect"].round(12))
        same = next((g for g, c in curves.items() if c == curve and len(curve)), None)
        names[group] = f"{group} (= {same})" if same else group
        curves[group] = curve
    return names
