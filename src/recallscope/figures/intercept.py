"""Plots of the intercept stage: the intercept's top tokens and the redirect test."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from . import token_label


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[logit lens of the intercept b: top tokens, answer-domain tokens in red; the redirect
    test's median rank + 1 of Y and X].

    Reads the summary only: ``layer``, ``top_tokens``, ``answer_domain_share``,
    ``answer_domain_baseline`` and ``redirect``.
    """
    figs = []
    tokens = summary.get("top_tokens", [])
    if tokens:
        base = summary["answer_domain_baseline"]
        fig = go.Figure(
            go.Bar(
                x=[f"{i}:{token_label(t['token'])}" for i, t in enumerate(tokens)],
                y=[t["logit"] for t in tokens],
                marker_color=["crimson" if t["in_domain"] else "steelblue" for t in tokens],
            )
        )
        fig.update_layout(
            title=(
                f"Logit lens of the intercept b of MLP {summary['layer']}: answer-domain share "
                f"{summary['answer_domain_share']:.2f} (random directions: {base['mean']:.3f}, "
                f"{100 * base['level']:.0f}% [{base['low']:.2f}, {base['high']:.2f}])"
            ),
            xaxis_title="top tokens (red: first token of an answer of the relation)",
            yaxis_title="logit (linearised lens)",
        )
        figs.append(fig)
    red = summary.get("redirect")
    if red:
        labels = {"r_mid": "r_mid[l]", "r_mid_plus_b": "r_mid[l] + b", "r_mid_plus_m": "r_mid[l] + m[l]"}
        points = [p for p in labels if p in red]
        fig = go.Figure()
        for tok, key in (("Y (answer)", "median_rank_Y"), ("X (subject)", "median_rank_X")):
            fig.add_trace(go.Bar(name=tok, x=[labels[p] for p in points], y=[1 + red[p][key] for p in points]))
        fig.update_layout(
            barmode="group",
            yaxis_type="log",
            title="Redirect test: median rank + 1 of Y and X in the logit lens "
            + ", ".join(f"{labels[p]}: Y above X in {100 * red[p]['share_Y_above_X']:.0f}%" for p in points),
            yaxis_title="median rank + 1 (log; lower is better)",
        )
        # ticks at 1, 2, 5 × 10^k, written whole: over less than a decade plotly labels every 100 and they crowd
        ranks = [1 + red[p][key] for p in points for key in ("median_rank_Y", "median_rank_X")]
        ticks = _one_two_five(min(ranks), max(ranks))
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:,}" for t in ticks])
        figs.append(fig)
    return figs


def _one_two_five(low: float, high: float) -> list[int]:
    """The numbers 1, 2, 5, 10, 20, 50, … from the last one at or below ``low`` to the first at or above ``high``."""
    ticks = [m * 10**k for k in range(0, 12) for m in (1, 2, 5)]
    first = max([t for t in ticks if t <= low] or [1])
    last = min([t for t in ticks if t >= high] or [ticks[-1]])
    return [t for t in ticks if first <= t <= last]
