"""Plots of the surgery stage: the null distribution of the damage done by ablating random head
sets, with the mover heads' damage marked — one figure per metric (drop in p(Y), drop in
accuracy) and ablation scope (end position, every position), p(Y) first."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from . import main_table

SCOPE_TITLES = {"end": "at the end position", "all": "at every position"}
NULL_NAMES = {"layer": "random heads, same layers", "norm": "random heads, matched norm"}
COLOURS = {"layer": "#1f77b4", "norm": "#ff7f0e"}
METRICS = (
    ("drop_p", "p_answer", "p(Y)", "mean drop in p(Y) over the prompts (probability)"),
    ("drop_accuracy", "accuracy", "accuracy", "drop in accuracy (share of the prompts)"),
)
N_BINS = 40


def _fmt(x) -> str:
    return "—" if x is None or (isinstance(x, float) and x != x) else f"{x:.3g}"


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[per metric (p(Y), then accuracy) and scope of ``summary["scopes"]``: a histogram of the null
    head sets' mean drops (one per null, overlaid, on the same bins), the movers' drop as a red line].

    Reads the main table's ``scope``, ``set_id``, ``null``, ``drop_p``, ``drop_accuracy`` and the
    summary's ``heads``, ``n_prompts``, ``quantile`` and ``results`` (median, quantile and p-value
    per scope × null × metric, written in the legend).
    """
    sets = main_table(tables)
    results = summary.get("results") or []
    heads = html.escape(", ".join(summary.get("heads") or []))
    q = summary.get("quantile", 0.95)
    figs = []
    for column, metric, short, axis in METRICS:
        for scope in summary.get("scopes") or sorted(set(sets["scope"])):
            here = sets[sets["scope"] == scope]
            movers = here[here["set_id"] == 0]
            if not len(movers):
                continue
            drop = float(movers[column].iloc[0])
            values = here.loc[here["set_id"] != 0, column].to_numpy(float)
            lo, hi = min(0.0, drop, *values), max(drop, *values)
            size = (hi - lo) / N_BINS if hi > lo else 1.0
            bins = {"start": lo - size / 2, "end": hi + size / 2, "size": size}
            fig = go.Figure()
            for null in [n for n in NULL_NAMES if (here["null"] == n).any()]:
                r = next((r for r in results if (r.get("scope"), r.get("null"), r.get("metric")) == (scope, null, metric)), {})
                name = (
                    f"{NULL_NAMES[null]} ({r.get('n_sets', '?')} sets): median {_fmt(r.get('null_median'))}, "
                    f"{q:.0%} {_fmt(r.get('null_quantile'))}, p = {_fmt(r.get('p_value'))}"
                )
                fig.add_trace(
                    go.Histogram(
                        x=here.loc[here["null"] == null, column],
                        xbins=bins,
                        name=name,
                        marker_color=COLOURS[null],
                        opacity=0.6,
                        hovertemplate="drop %{x}<br>%{y} head sets<extra>" + NULL_NAMES[null] + "</extra>",
                    )
                )
            fig.add_vline(x=drop, line_color="#d62728", line_width=2, annotation_text=f"movers {drop:.3g}")
            fig.update_layout(
                barmode="overlay",
                showlegend=True,
                title=(
                    f"Drop in {short} when the mover heads ({heads}) are ablated {SCOPE_TITLES.get(scope, scope)}, "
                    f"against random head sets of their size — {summary.get('n_prompts', '?')} known prompts"
                ),
                xaxis_title=axis,
                yaxis_title="head sets",
            )
            figs.append(fig)
    return figs
