"""Plots of the movers stage: attention against projection per head, and one attention pattern."""

from __future__ import annotations

import html
import math

import pandas as pd
import plotly.graph_objects as go

from ..components import head_label
from . import main_table


# a failed condition of the mover test (movers.py's ``failed`` names) as the reader checks it
_CONDITIONS = {
    "attention": ("attention", "<", "min_attention_to_subject"),
    "correlation": ("r", "<", "min_projection_corr"),
    "p_value": ("p", ">", "max_p_value"),
    "ov_copy": ("OV top-5 share", "<", "min_ov_top5_share"),
}


def _failed(name: str, thresholds: dict) -> str:
    """``p > 0.01`` for ``p_value`` (the threshold read from the summary's ``thresholds``)."""
    if name not in _CONDITIONS:
        return name
    label, op, key = _CONDITIONS[name]
    t = thresholds.get(key)
    return f"{label} {op} {t:g}" if isinstance(t, (int, float)) else label


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[one scatter per mover head (or, when there is none, for the three candidates with the
    largest |patching effect|, the heads claim C1 reads, else the three with the highest r, titled as
    not movers), the example head's attention from the end position].

    Each scatter puts, per prompt, the head's attention from the end to the subject tokens
    (probability) against its projection a[l,h] · W_U[X] (logits); the paper's scatter. Reads the
    main table's ``layer``, ``head``, ``subject``, ``attention_to_subject`` and ``projection`` and
    the summary's ``heads`` and ``example``.
    """
    frame = main_table(tables)
    figs = []
    heads = summary.get("heads", [])
    shown = [h for h in heads if h["is_mover"]]
    if not shown:
        ok = [h for h in heads if h["projection_corr"] is not None and math.isfinite(h["projection_corr"])]
        effect = [h for h in ok if isinstance(h.get("effect"), (int, float)) and math.isfinite(h["effect"])]
        # the heads claim C1 reads (the candidates patching singles out, its default mover_top_heads = 3),
        # so the section shows the scatter the claim decides on; without patching effects, the highest r
        shown = (
            sorted(effect, key=lambda h: -abs(h["effect"]))[:3] if effect else sorted(ok, key=lambda h: -h["projection_corr"])[:3]
        )
    for h in shown:
        rows = frame[(frame["layer"] == h["layer"]) & (frame["head"] == h["head"])]
        # the stage's mover test compares point estimates with the thresholds; the claims stage (C1)
        # compares interval ends, so the title says which test this is
        label = (
            "passes the mover test on point estimates"
            if h["is_mover"]
            else "fails the mover test on " + ", ".join(_failed(name, summary.get("thresholds") or {}) for name in h["failed"])
        )
        fig = go.Figure(
            go.Scatter(
                x=rows["attention_to_subject"],
                y=rows["projection"],
                mode="markers",
                text=[html.escape(str(s)) for s in rows["subject"]],
                hovertemplate="%{text}<br>attn %{x:.3f}<br>proj %{y:.3f}",
            )
        )
        fig.update_layout(
            title=f"{head_label(h['layer'], h['head'])} — {label}: r = {h['projection_corr']:.3f}, p = {h['projection_p_value']:.2g}",
            xaxis_title="attention from end to the subject tokens",
            yaxis_title="a[l,h] · W_U[X] (folded, centred)",
        )
        figs.append(fig)
    ex = summary.get("example")
    if ex:
        lo, hi = ex["subject_span"]
        labels = [f"{i}:{html.escape(t)}" for i, t in enumerate(ex["tokens"])]
        colors = ["crimson" if lo <= i < hi else "steelblue" for i in range(len(labels))]
        fig = go.Figure(go.Bar(x=labels, y=ex["attention"], marker_color=colors))
        state = "passes the point-estimate mover test" if ex["is_mover"] else "best candidate, fails the mover test"
        fig.update_layout(
            title=f"Attention of {head_label(ex['layer'], ex['head'])} ({state}) from the end position, prompt {ex['prompt_index']} (subject in red)",
            xaxis_title="key position",
            xaxis_tickangle=-45,  # level labels ran together ("1: travel2: guide") in a half-width figure
            yaxis_title="attention probability",
        )
        figs.append(fig)
    return figs
