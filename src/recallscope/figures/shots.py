"""The comparison across shot counts: accuracy and mean p(Y) against k, one line per relation, and,
where the onset stage ran, what demonstrations change layer by layer (claims C10 and C11): per
relation the onset stage's two profiles with one line per shot count.

Not a stage of its own: the report draws it on the overview of a run directory that holds
several sub-runs (one per relation × shot count).
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import main_table
from .onset import profiles

PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0c8599", "#5c940d", "#f08c00")


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[accuracy (0–1) and mean p(Y) (0–1) against the shot count, one line per relation; then, per
    relation whose cells ran the onset stage, its layer profiles with one line per shot count].

    ``tables``: one table with a row per sub-run and the columns ``relation``, ``shots`` (int),
    ``accuracy`` and ``mean_p_answer``; rows without an integer shot count or an accuracy are
    left out. No figure for fewer than two sub-runs or when no row remains. Optional: ``onset`` and
    ``onset_layers``, the cells' onset tables (main and ``layers``) with ``relation`` and ``shots``
    columns added, and ``summary["min_domain_share"]`` (the domain threshold line).
    """
    frame = main_table(tables)
    return _accuracy(frame) + _onsets(tables, summary)


def _onsets(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    main, layers = tables.get("onset"), tables.get("onset_layers")
    if main is None or layers is None or not len(main):
        return []
    out = []
    for relation, rows in sorted(main.groupby(main["relation"].astype(str)), key=lambda g: g[0]):
        shots = sorted(int(k) for k in rows["shots"].unique())
        if len(shots) < 2:
            continue
        cells = []
        for k in shots:
            m = rows[rows["shots"] == k]
            lay = layers[(layers["relation"].astype(str) == relation) & (layers["shots"] == k)]
            cells.append((f"{k} shot{'s' if k != 1 else ''}: p(Y) {m['p_answer'].mean():.2f}, {len(m)} prompts", lay, m))
        out.append(
            profiles(
                cells,
                f"What demonstrations change — {html.escape(relation, quote=False)}: the mover heads' write along W_U[X] and "
                "the answer domain in the logit lens at the end, by layer (shaded: middle half of the prompts; dotted: "
                "mean onset)",
                summary.get("min_domain_share"),
            )
        )
    return out


def _accuracy(frame: pd.DataFrame) -> list[go.Figure]:
    ok = frame[
        frame["shots"].map(pd.api.types.is_integer)
        & frame["accuracy"].map(lambda a: pd.api.types.is_number(a) and not pd.api.types.is_bool(a))
    ]
    if len(frame) < 2 or ok.empty:
        return []
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "mean p(Y)"))
    for i, (relation, rows) in enumerate(sorted(ok.groupby(ok["relation"].astype(str)), key=lambda g: g[0])):
        rows = rows.sort_values("shots", kind="stable")
        name = html.escape(relation)
        colour = PALETTE[i % len(PALETTE)]
        for col, key in ((1, "accuracy"), (2, "mean_p_answer")):
            fig.add_trace(
                go.Scatter(
                    x=list(rows["shots"]),
                    y=list(rows[key]),
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": colour},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="shots", dtick=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title="Zero-shot against few-shot: accuracy and mean p(Y) by relation")
    return [fig]
