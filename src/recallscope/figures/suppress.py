"""Plots of the suppress stage: direct logit attribution per component and per layer, and the
mitigation's effect on held-out prompts; the figure of a suppress sweep."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[mean DLA to Y per component with its interval, suppressors in red, the share of prompts on
    which each is negative under its label; each attributed
    layer's total DLA (when more than one layer); p(Y) and accuracy before and after each
    mitigation on held-out known and unknown prompts].

    DLA is in logits of π(Y). Reads the summary only: ``components``, ``suppression_present``,
    ``layer_totals`` and ``mitigation``.
    """
    figs = []
    comps = summary.get("components", [])
    if comps:
        fig = go.Figure(
            go.Bar(
                # the share of prompts on which it is negative under the label: written on the bars, it sat
                # under the error bars and off the small ones
                x=[f"{html.escape(c['component'])}<br>{c['share_negative']:.0%} neg." for c in comps],
                y=[c["mean_dla"] for c in comps],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[c["ci_high"] - c["mean_dla"] for c in comps],
                    arrayminus=[c["mean_dla"] - c["ci_low"] for c in comps],
                ),
                marker_color=["crimson" if c["is_suppressor"] else "steelblue" for c in comps],
                hovertext=[f"mean DLA {c['mean_dla']:.3f}, negative on {c['share_negative']:.0%} of prompts" for c in comps],
            )
        )
        sp = summary.get("suppression_present", {})
        fig.update_layout(
            title=f"Direct logit attribution to Y (minus vocabulary mean) — suppressors in red; final layer total "
            f"{sp.get('final_layer_total_dla', float('nan')):.3f} [{sp.get('ci_low', float('nan')):.3f}, {sp.get('ci_high', float('nan')):.3f}]",
            xaxis_title="component (end position); share of prompts where its DLA is negative",
            yaxis_title="DLA to π(Y), logits",
        )
        figs.append(fig)
    totals = summary.get("layer_totals", [])
    if len(totals) > 1:
        fig = go.Figure(
            go.Bar(
                x=[f"L{t['layer']}" for t in totals],
                y=[t["mean_dla"] for t in totals],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[t["ci_high"] - t["mean_dla"] for t in totals],
                    arrayminus=[t["mean_dla"] - t["ci_low"] for t in totals],
                ),
            )
        )
        fig.update_layout(title="Total DLA to Y per layer (heads + bias + MLP)", yaxis_title="DLA to π(Y)")
        figs.append(fig)
    mit = summary.get("mitigation", {})
    if mit:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("mean p(Y)", "accuracy"))
        for pop, color in (("known", "seagreen"), ("unknown", "darkorange")):
            for col, key in ((1, "p_answer"), (2, "accuracy")):
                xs = ["before"] + [html.escape(m) for m in mit]
                first = next(iter(mit.values()))[pop]["before"]
                ys = [first.get(key)] + [mit[m][pop]["after"].get(key) for m in mit]
                fig.add_trace(go.Bar(x=xs, y=ys, name=pop, marker_color=color, showlegend=col == 1), row=1, col=col)
        fig.update_layout(title="Held-out prompts before and after removing the suppressors (cross-validated)", barmode="group")
        figs.append(fig)
    return figs


def sweep_figure(frame: pd.DataFrame) -> go.Figure:
    """Final-layer DLA (with interval) per relation × shots, and the held-out change of accuracy on
    known prompts per mode — one figure, one column per model. ``frame``: the table of
    ``recallscope.suppress.sweep`` (one row per model × relation × shots × mitigation mode)."""
    ok = frame[frame.get("mode").notna()] if "mode" in frame else frame.iloc[0:0]
    models = list(dict.fromkeys(ok["model"])) if len(ok) else []
    fig = make_subplots(
        rows=2,
        cols=max(1, len(models)),
        shared_yaxes="rows",
        subplot_titles=[html.escape(m) for m in models] or ["(no rows)"],
        row_titles=["final-layer DLA to Y", "Δ accuracy, known (held out)"],
    )
    colors = {0: "steelblue", 1: "darkorange", 3: "seagreen"}
    for j, m in enumerate(models, start=1):
        sub = ok[ok["model"] == m]
        first = sub.drop_duplicates(["relation", "shots"])
        for k in sorted(first["shots"].unique()):
            s = first[first["shots"] == k]
            fig.add_trace(
                go.Bar(
                    x=[html.escape(r) for r in s["relation"]],
                    y=s["final_dla"],
                    name=f"{k}-shot",
                    marker_color=colors.get(int(k)),
                    legendgroup=f"k{k}",
                    showlegend=j == 1,
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=s["final_dla_ci_high"] - s["final_dla"],
                        arrayminus=s["final_dla"] - s["final_dla_ci_low"],
                    ),
                ),
                row=1,
                col=j,
            )
        for mode in list(dict.fromkeys(sub["mode"])):
            s = sub[sub["mode"] == mode]
            fig.add_trace(
                go.Box(
                    x=[html.escape(mode)] * len(s),
                    y=s["known_accuracy_after"] - s["known_accuracy_before"],
                    name=mode,
                    showlegend=False,
                    boxpoints="all",
                ),
                row=2,
                col=j,
            )
    fig.update_layout(title="Anti-overconfidence across relations, shots and models", barmode="group")
    return fig
