import json
import os

import pandas as pd
import pytest

from recallscope.errors import UserError
from recallscope.rundir import RunDir, atomic_write_parquet, atomic_write_text, dumps


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
