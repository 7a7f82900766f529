"""Plots of the decompose stage: the coefficients, the per-layer R² sweep, the SGD loss."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go


def sgd_loss(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The SGD loss trace, the ``sgd_trace`` table (columns ``step`` and ``loss``; empty when the
    solver was lstsq or the table is not given)."""
    trace = tables.get("sgd_trace")
    return trace if trace is not None else pd.DataFrame({"step": [], "loss": []})


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[coefficients with ±1 std over the CV folds, coloured by verdict; the sweep's R² per
    layer (when swept); the SGD loss against the exact loss (solver sgd)].

    Reads the summary's ``coefficients``, ``layer``, ``solver``, ``r2``, ``cv_r2``, ``folds``,
    ``sweep`` and ``sgd``, and the SGD loss trace from the tables (:func:`sgd_loss`).
    """
    figs = []
    coefs = summary.get("coefficients", [])
    if coefs:
        colour = {"amplified": "crimson", "attenuated": "steelblue", "reversed": "darkorange"}
        fig = go.Figure(
            go.Bar(
                x=[html.escape(c["regressor"]) for c in coefs],
                y=[c["coef"] for c in coefs],
                error_y={"type": "data", "array": [c["cv_std"] for c in coefs]},
                marker_color=[colour[c["verdict"]] for c in coefs],
                hovertext=[f"{c['verdict']}; CV {c['cv_mean']:.3f} ± {c['cv_std']:.3f}" for c in coefs],
            )
        )
        fig.add_hline(y=1.0, line_dash="dot")
        fig.add_hline(y=0.0)
        fig.update_layout(
            title=(
                f"MLP {summary['layer']} ≈ Σ c·a + c_r·r + b ({summary['solver']}): coefficients, ±1 std over "
                f"{summary.get('folds', 4)} folds — R² {summary['r2']:.3f}, CV R² {summary['cv_r2']:.3f}"
            ),
            xaxis_title="regressor",
            yaxis_title="coefficient (red: amplified, blue: attenuated, orange: reversed)",
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
