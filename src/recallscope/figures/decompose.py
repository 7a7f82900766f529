"""Plots of the decompose stage: the coefficients, the per-layer R² sweep, the SGD loss."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go


COLOURS = {"amplified": "crimson", "attenuated": "steelblue", "reversed": "darkorange"}
GREY = "#adb5bd"


def sgd_loss(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The SGD loss trace, the ``sgd_trace`` table (columns ``step`` and ``loss``; empty when the
    solver was lstsq or the table is not given)."""
    trace = tables.get("sgd_trace")
    return trace if trace is not None else pd.DataFrame({"step": [], "loss": []})


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[coefficients with ±1 std over the CV folds, coloured by verdict (grey, hatched, when the
    held-out R² is ≤ 0: the fit explains nothing held out); the sweep's R² per
    layer (when swept); the SGD loss against the exact loss (solver sgd)].

    Reads the summary's ``coefficients``, ``layer``, ``solver``, ``r2``, ``cv_r2``, ``folds``,
    ``sweep`` and ``sgd``, and the SGD loss trace from the tables (:func:`sgd_loss`).
    """
    figs = []
    coefs = summary.get("coefficients", [])
    if coefs:
        cv_r2 = summary.get("cv_r2")
        # A fit that predicts held-out prompts no better than their mean explains nothing: its
        # coefficients are drawn grey, so a large bar does not read as a finding.
        explains = isinstance(cv_r2, (int, float)) and cv_r2 > 0
        fig = go.Figure()
        for verdict in ("amplified", "attenuated", "reversed"):
            group = [c for c in coefs if c["verdict"] == verdict]
            if not group:
                continue
            name = verdict if explains else f"{verdict} (fit explains nothing held out)"
            fig.add_trace(
                go.Bar(
                    x=[html.escape(c["regressor"]) for c in group],
                    y=[c["coef"] for c in group],
                    error_y={"type": "data", "array": [c["cv_std"] for c in group]},
                    marker_color=COLOURS[verdict] if explains else GREY,
                    marker_pattern_shape="" if explains else "/",
                    name=name,
                    hovertext=[f"{verdict}; CV {c['cv_mean']:.3f} ± {c['cv_std']:.3f}" for c in group],
                )
            )
        fig.add_hline(y=1.0, line_dash="dot")
        fig.add_hline(y=0.0)
        quality = (
            f"R² {summary['r2']:.3f}, held-out R² {cv_r2:.3f}" if isinstance(cv_r2, (int, float)) else f"R² {summary['r2']:.3f}"
        )
        fig.update_layout(
            title=(
                f"MLP {summary['layer']} ≈ Σ c·a + c_r·r + b ({summary['solver']}): coefficients, ±1 std over "
                f"{summary.get('folds', 4)} folds — {quality}"
                + ("" if explains else " ≤ 0: the fit explains nothing held out, so no coefficient is a finding (grey)")
            ),
            xaxis={"title": "regressor", "categoryorder": "array", "categoryarray": [html.escape(c["regressor"]) for c in coefs]},
            yaxis_title="coefficient c (1: passed through)",
            barmode="overlay",
        )
        figs.append(fig)
    sweep = summary.get("sweep")
    if sweep:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[s["layer"] for s in sweep], y=[s["r2"] for s in sweep], name="R² (in sample)"))
        fig.add_trace(go.Scatter(x=[s["layer"] for s in sweep], y=[s["cv_r2"] for s in sweep], name="CV R² (held out)"))
        fig.update_layout(
            title="How linear each MLP is in its heads: R² per layer (lstsq)", xaxis_title="MLP layer", yaxis_title="R²"
        )
        figs.append(fig)
    loss = sgd_loss(tables)
    if len(loss) and summary.get("sgd"):
        fig = go.Figure(
            go.Scatter(
                x=loss["step"],
                y=loss["loss"],
                name="SGD loss (standardised units)" if summary["sgd"].get("standardise") else "SGD loss",
            )
        )
        fig.update_layout(
            title=f"SGD ({'converged' if summary['sgd']['converged'] else 'NOT converged'}), "
            f"final loss {summary['sgd']['loss']:.4g} vs exact {summary['sgd']['lstsq_loss']:.4g}",
            xaxis_title="step",
            yaxis_title="loss",
            yaxis_type="log",
        )
        figs.append(fig)
    return figs
