"""Plot of the patch stage: the layer × head heatmap of mean patching effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..components import effect_column
from . import main_table


def figures(tables: dict[str, pd.DataFrame], summary: dict) -> list[go.Figure]:
    """[heatmap of the mean % change of π(Y) per layer × head, plus an MLP and a RES row when patched].

    Reads the main table's ``kind``, ``layer``, ``head`` and ``effect`` (percent, per prompt) columns and
    the summary's ``mode``, ``direction`` and ``aggregate`` (with ``ratio_of_means``, the
    ``pi_clean``, ``pi_base`` and ``pi_patched`` columns).
    """
    frame = main_table(tables)
    keys = ["kind", "layer", "head"]
    if summary.get("aggregate") == "ratio_of_means":
        # the paper's figure: 100 · (mean π_patched − mean π_base) / mean π_clean (or the clean–corrupted gap when denoising)
        g = frame.groupby(keys, sort=True, dropna=False)
        clean = g["pi_clean"].mean()
        scale = clean if summary.get("direction", "noise") == "noise" else clean - g["pi_base"].mean()
        means = (100.0 * (g["pi_patched"].mean() - g["pi_base"].mean()) / scale).rename("effect").reset_index()
    else:
        means = frame.groupby(keys, sort=True, dropna=False)[effect_column(frame)].mean().rename("effect").reset_index()
    layers = sorted(means["layer"].unique())
    heads = sorted(means.loc[means["kind"] == "head", "head"].unique())
    rows = [f"H{h}" for h in heads]
    kinds = [k for k in ("attn", "mlp", "resid") if (means["kind"] == k).any()]
    rows += [{"attn": "ATTN", "mlp": "MLP", "resid": "RES"}[k] for k in kinds]
    z = np.full((len(rows), len(layers)), np.nan)
    col = {layer: i for i, layer in enumerate(layers)}
    for r in means.itertuples():
        row = heads.index(r.head) if r.kind == "head" else len(heads) + kinds.index(r.kind)
        z[row, col[r.layer]] = r.effect
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(layer) for layer in layers],
            y=rows,
            colorscale="RdBu",
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": "effect %"},
            hovertemplate="layer %{x}, %{y}: %{z:.2f}%<extra></extra>",
        )
    )
    kind = "path patching (heads frozen)" if summary.get("mode") == "path" else "activation patching (total effect)"
    aggregate = summary.get("aggregate", "mean_of_ratios").replace("_", " ")
    fig.update_layout(
        title=f"{kind.capitalize()}, {summary.get('direction', 'noise')}, at the end position: % change of π(Y) ({aggregate})",
        xaxis_title="layer",
        yaxis_title="component",
        yaxis={"autorange": "reversed"},
    )
    return [fig]
