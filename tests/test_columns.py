"""One column name per quantity: every table of every stage, and every record of their summaries, uses
only the names documented (with units) in recallscope.columns.COLUMNS, and docs/columns.md is that table."""

from __future__ import annotations

from pathlib import Path

import pytest

import recallscope as rs
from recallscope.columns import COLUMNS, markdown

ROOT = Path(__file__).resolve().parents[1]


def _records(value, where: str, out: dict[str, set[str]]) -> None:
    """Keys of every dict inside a list of the summary (the per-item records: top_components, heads, …)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _records(inner, f"{where}.{key}", out)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                for key in item:
                    out.setdefault(key, set()).add(where)
                _records(item, where + "[]", out)


@pytest.fixture(scope="module")
def names(every_stage_study) -> dict[str, set[str]]:
    """Column name → where it was written, from a run of every stage of the stage table (the planted
    control, 3 layers; tests/conftest.py) and a sweep's claims."""
    study = every_stage_study
    seen: dict[str, set[str]] = {}
    for stage in study.stages:
        for table, frame in study[stage].tables().items():
            for column in frame.columns:
                seen.setdefault(str(column), set()).add(f"{stage}/{table}")
        _records(study.summary["stages"][stage], stage, seen)
    sweep = rs.run(
        model="planted",
        relation="paper_country_capital",
        shots=[0, 1],
        stages=["patch", "onset", "claims"],
        max_prompts=8,
        progress=False,
    )
    for column in [*sweep.claims().columns, *sweep.shot_claims().columns]:
        seen.setdefault(str(column), set()).add("sweep claims")
    return seen


def test_every_column_and_record_key_is_documented_with_its_unit(names):
    missing = {name: sorted(where) for name, where in names.items() if name not in COLUMNS}
    assert not missing, f"undocumented names (add them to recallscope.columns.COLUMNS): {missing}"
    assert all(unit and meaning for unit, meaning in COLUMNS.values())


def test_every_documented_name_is_written_somewhere(names):
    stale = sorted(set(COLUMNS) - set(names))
    assert not stale, f"documented but written by no stage: {stale}"


def test_one_name_per_quantity_where_two_tables_share_one(names):
    # the patch effect is `effect` in the per-prompt table, the components table, the summary and movers
    assert {"patch/patch", "patch/components", "patch.top_components", "movers/movers"} <= names["effect"]
    assert "effect_pct" not in names and "prompt" not in names and "std" not in names
    # every per-prompt table names the prompt prompt_index
    assert {
        "recall/recall",
        "patch/patch",
        "movers/movers",
        "decompose/heldout",
        "suppress/suppress",
        "knockout/knockout",
    } <= names["prompt_index"]
    # the claims' movers evidence uses the movers stage's own names
    assert {"claims.claims", "movers.heads"} <= names["projection_corr_first"] and {"claims.claims", "movers.heads"} <= names[
        "ov_top5_share_effective"
    ]


def test_the_doc_is_the_table():
    assert (ROOT / "docs" / "columns.md").read_text(encoding="utf-8") == markdown(), (
        "rerun scripts/columns_table.py > docs/columns.md"
    )
