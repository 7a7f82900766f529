"""Plots of the recall stage: p(Y) for known against unknown prompts, and mean p(Y) per subject."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from . import main_table


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[histogram of p(Y) by known/unknown, bars of mean p(Y) for the 40 lowest subjects].

    Reads the main table's ``subject``, ``p_answer`` (probability, 0–1) and ``known`` columns and
    the summary's ``relation`` and ``shots``. Subjects are data: HTML-escaped and shortened to
    30 characters so a 5,000-character subject cannot swamp the axis.
    """
    frame = main_table(tables)
    where = f"{summary.get('relation', '')}, {summary.get('shots', 0)}-shot"
    hist = go.Figure()
    for known, name, colour in ((True, "known", "#2b8a3e"), (False, "unknown", "#c92a2a")):
        rows = frame[frame["known"] == known]
        hist.add_trace(
            go.Histogram(
                x=rows["p_answer"],
                name=f"{name} ({len(rows)})",
                marker_color=colour,
                opacity=0.7,
                xbins={"start": 0, "end": 1, "size": 0.025},
            )
        )
    hist.update_layout(
        barmode="overlay",
        title=f"p(Y) at the end position — {html.escape(where, quote=False)}",
        xaxis_title="p(Y)",
        yaxis_title="prompts",
    )
    per_subject = frame.groupby("subject", sort=False)["p_answer"].mean().sort_values()
    shown = per_subject.iloc[:40]
    labels, seen = [], set()
    for subject in shown.index:
        label = html.escape(subject if len(subject) <= 30 else subject[:29] + "…", quote=False)
        while label in seen:  # two long subjects may shorten to the same label
            label += "\u2009"
        seen.add(label)
        labels.append(label)
    bars = go.Figure(
        go.Bar(x=labels, y=shown.to_numpy(), marker_color="#1c7ed6", hovertemplate="%{x}<br>mean p(Y) %{y:.3f}<extra></extra>")
    )
    lowest = f", the {len(shown)} lowest of {len(per_subject)}" if len(shown) < len(per_subject) else ""
    bars.update_layout(title=f"Mean p(Y) per subject{lowest}", yaxis_title="mean p(Y)", yaxis_range=[0, 1])
    return [hist, bars]
