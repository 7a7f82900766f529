"""recallscope.components: one label format, parse ∘ label = identity, table columns, and the
heads of a patch table ranked once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recallscope.components import Component, component_columns, head_effects, head_label, heads, top_heads


def test_labels_and_parse_round_trip():
    comps = [Component("head", 23, 4), Component("mlp", 23), Component("attn", 0), Component("resid", 7)]
    assert [c.label for c in comps] == ["L23H4", "MLP23", "ATTN0", "RES7"]
    assert [c.name for c in comps] == [c.label for c in comps]
    assert [Component.parse(c.label) for c in comps] == comps
    assert head_label(23, 4) == "L23H4" and str(comps[0]) == "L23H4"
    assert [c.entry_layer for c in comps] == [24, 24, 1, 7]
    assert heads([1, 2], 2) == [Component("head", 1, 0), Component("head", 1, 1), Component("head", 2, 0), Component("head", 2, 1)]
    for bad in ("L23 MLP", "L23", "MLP", "H4", "l23h4"):
        with pytest.raises(ValueError, match="not a component label"):
            Component.parse(bad)
    with pytest.raises(ValueError):
        Component("head", 3)
    with pytest.raises(ValueError):
        Component("mlp", 3, 1)
    with pytest.raises(ValueError):
        Component("neuron", 3)


def test_table_columns():
    frame = pd.DataFrame(component_columns([Component("head", 2, 1), Component("mlp", 2)]))
    assert frame["component"].tolist() == ["L2H1", "MLP2"]
    assert str(frame["head"].dtype) == "Int64" and frame["head"].isna().tolist() == [False, True]
    assert frame["layer"].dtype == np.int64


def test_top_heads_from_a_patch_table():
    comps = [Component("head", 0, 0), Component("head", 0, 1), Component("head", 1, 0), Component("mlp", 1)]
    effects = np.array([[-1.0, 3.0, -3.0, -50.0], [-1.0, 1.0, -1.0, -50.0]])  # prompts × components
    rows = [{**{k: v[i] for k, v in component_columns(comps).items()}, "prompt_index": p, "effect": effects[p, i]}
            for p in range(2) for i in range(4)]
    table = pd.DataFrame(rows).astype({"head": "Int64"})
    ranked = top_heads(table)
    # |mean|: L0H1 2.0 and L1H0 2.0 tie (kept in layer, head order), then L0H0; the MLP is no head
    assert list(ranked.index) == [Component("head", 0, 1), Component("head", 1, 0), Component("head", 0, 0)]
    assert ranked.tolist() == [2.0, -2.0, -1.0]
    assert list(top_heads(table, 1).index) == [Component("head", 0, 1)]
    matrix = head_effects(table)
    assert matrix.shape == (2, 3) and matrix.loc[0, "L1H0"] == -3.0
    assert top_heads(table[table["kind"] == "mlp"]).empty
    # a per-prompt table written before the column was named ``effect`` (a reused stage) reads the same
    legacy = table.rename(columns={"effect": "effect_pct"})
    assert top_heads(legacy).tolist() == ranked.tolist() and head_effects(legacy).equals(matrix)
