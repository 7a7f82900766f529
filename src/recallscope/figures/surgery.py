"""Plots of the surgery stage: the null distribution of the damage done by ablating random head
sets, with the mover heads' damage marked — one figure per ablation scope (end position, every
position), the drop in p(Y) on the left and the drop in accuracy on the right."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import main_table

SCOPE_TITLES = {"end": "at the end position", "all": "at every position"}
NULL_NAMES = {"layer": "random heads, same layers", "norm": "random heads, matched norm"}
COLOURS = {"layer": "#1f77b4", "norm": "#ff7f0e"}
METRICS = (
    ("drop_p", "p_answer", "drop in p(Y) (probability)"),
    ("drop_accuracy", "accuracy", "drop in accuracy (share of prompts)"),
)


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[one figure per scope of ``summary["scopes"]``: histograms of the null head sets' mean drops
    (one per null, overlaid), the movers' drop as a vertical line].

    Reads the main table's ``scope``, ``set_id``, ``null``, ``drop_p``, ``drop_accuracy`` and the
    summary's ``heads``, ``n_prompts``, ``quantile`` and ``results`` (p-value, median and quantile
    per scope × null × metric).
    """
    sets = main_table(tables)
    results = summary.get("results") or []
    heads = html.escape(", ".join(summary.get("heads") or []))
    q = summary.get("quantile", 0.95)
    figs = []
    for scope in summary.get("scopes") or sorted(set(sets["scope"])):
        here = sets[sets["scope"] == scope]
        movers = here[here["set_id"] == 0]
        if not len(movers):
            continue
        fig = make_subplots(rows=1, cols=2, subplot_titles=[m[2] for m in METRICS], horizontal_spacing=0.12)
        notes = []
        for col, (column, metric, _) in enumerate(METRICS, start=1):
            for null in [n for n in NULL_NAMES if (here["null"] == n).any()]:
                values = here.loc[here["null"] == null, column]
                fig.add_trace(
                    go.Histogram(
                        x=values,
                        name=NULL_NAMES[null],
                        marker_color=COLOURS[null],
                        opacity=0.6,
                        nbinsx=30,
                        legendgroup=null,
                        showlegend=col == 1,
                        hovertemplate="drop %{x}<br>%{y} head sets<extra>" + NULL_NAMES[null] + "</extra>",
                    ),
                    row=1,
                    col=col,
                )
                r = next(
                    (r for r in results if r.get("scope") == scope and r.get("null") == null and r.get("metric") == metric), None
                )
                if r and r.get("p_value") is not None and col == 1:
                    notes.append(
                        f"{null}: median {r['null_median']:.3g}, {q:.0%} {r['null_quantile']:.3g}, p = {r['p_value']:.3g}"
                        f" (n = {r['n_sets']})"
                    )
            drop = float(movers[column].iloc[0])
            fig.add_vline(
                x=drop,
                line_color="#d62728",
                line_width=2,
                row=1,
                col=col,
                annotation_text=f"movers {drop:.3g}",
                annotation_position="top",
            )
        fig.update_layout(
            barmode="overlay",
            title=(
                f"Ablating the mover heads ({heads}) {SCOPE_TITLES.get(scope, scope)} vs random head sets — "
                f"{summary.get('n_prompts', '?')} known prompts<br><sup>{html.escape('; '.join(notes))}</sup>"
            ),
            legend_title="null",
        )
        fig.update_yaxes(title_text="head sets", row=1, col=1)
        figs.append(fig)
    return figs
