"""The run directory's named tables: where they go, how they are read back, when a stage counts as finished."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from recallscope.errors import UserError

from recallscope.rundir import RunDir, atomic_write_parquet, atomic_write_text, dumps, without_timings


def test_atomic_write_leaves_no_temp_file(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    atomic_write_parquet(tmp_path / "t.parquet", pd.DataFrame({"x": [1, 2]}))
    assert sorted(os.listdir(tmp_path)) == ["a.json", "t.parquet"]
    assert pd.read_parquet(tmp_path / "t.parquet")["x"].tolist() == [1, 2]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    atomic_write_parquet(target, pd.DataFrame({"x": [1]}))

    class Boom(pd.DataFrame):
        def to_parquet(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_parquet(target, Boom({"x": [2]}))
    assert pd.read_parquet(target)["x"].tolist() == [1]
    assert sorted(os.listdir(tmp_path)) == ["t.parquet"]


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        RunDir(f)


def test_different_configuration_is_refused_without_force(tmp_path):
    rd = RunDir(tmp_path)
    rd.write_manifest({"identity": {"model": "a", "shots": 0}})
    rd.check_same_config({"model": "a", "shots": 0}, force=False)
    with pytest.raises(UserError, match="shots: 0 -> 3"):
        rd.check_same_config({"model": "a", "shots": 3}, force=False)
    rd.check_same_config({"model": "a", "shots": 3}, force=True)


def test_json_has_no_nan():
    text = dumps({"a": float("nan"), "b": [float("inf"), 1.5]})
    assert json.loads(text) == {"a": None, "b": [None, 1.5]}


def test_written_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "s.json", "{}")
        atomic_write_parquet(tmp_path / "t.parquet", pd.DataFrame({"x": [1]}))
    finally:
        os.umask(old)
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "t.parquet").stat().st_mode & 0o777 == 0o644


def tables(n: int = 3) -> dict[str, pd.DataFrame]:
    return {
        "decompose": pd.DataFrame({"regressor": [f"L1H{i}" for i in range(n)], "coef": [0.5 * i for i in range(n)]}),
        "folds": pd.DataFrame({"fold": list(range(4)), "r2": [0.9, 0.8, 0.85, 0.7]}),
        "intercept": pd.DataFrame({"layer": [1] * 5, "dim": list(range(5)), "value": [0.1, -0.2, 0.3, 0.0, 1.5]}),
    }


def finish(run: RunDir, stage: str) -> None:
    run.write_summary({"stages": {stage: {"wall_seconds": 1.0}}})


def test_the_main_table_is_stage_parquet_the_others_stage_slash_name(tmp_path):
    run = RunDir(tmp_path)
    run.write_tables("decompose", tables())
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == [
        "decompose.parquet",
        "decompose/folds.parquet",
        "decompose/intercept.parquet",
    ]
    pd.testing.assert_frame_equal(run.read_table("decompose"), tables()["decompose"])
    pd.testing.assert_frame_equal(run.read_table("decompose", "decompose"), tables()["decompose"])
    pd.testing.assert_frame_equal(run.read_table("decompose", "folds"), tables()["folds"])
    back = run.read_tables("decompose")
    assert list(back) == ["decompose", "folds", "intercept"]
    assert back["intercept"]["value"].tolist() == [0.1, -0.2, 0.3, 0.0, 1.5]


def test_a_stage_is_finished_only_with_every_table_complete_and_its_summary_entry(tmp_path):
    run = RunDir(tmp_path)
    run.write_tables("decompose", tables())
    assert not run.has_stage("decompose")  # no summary entry yet
    finish(run, "decompose")
    assert run.has_stage("decompose") and run.has_table("decompose", "folds")
    # a truncated secondary table (an interrupted write of another tool) un-finishes the stage
    folds = tmp_path / "decompose" / "folds.parquet"
    folds.write_bytes(folds.read_bytes()[:20])
    assert not run.has_stage("decompose") and not run.has_table("decompose", "folds")


def test_rewriting_a_stage_removes_its_tables_that_are_gone(tmp_path):
    run = RunDir(tmp_path)
    run.write_tables("decompose", tables())
    fewer = {k: v for k, v in tables().items() if k != "intercept"}
    run.write_tables("decompose", fewer)
    assert not (tmp_path / "decompose" / "intercept.parquet").exists()
    assert list(run.read_tables("decompose")) == ["decompose", "folds"]


def test_no_table_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no table"):
        RunDir(tmp_path).write_tables("x", {})


def test_timings_live_in_the_summary_and_are_dropped_for_comparison():
    a = {"stages": {"patch": {"effect": 1.0, "wall_seconds": 3.2, "engine_seconds": 2.0}}, "runs": [{"wall_seconds": 1}]}
    b = json.loads(json.dumps(a))
    b["stages"]["patch"]["wall_seconds"] = 9.9
    assert a != b and without_timings(a) == without_timings(b) == {"stages": {"patch": {"effect": 1.0}}, "runs": [{}]}
