"""Same command, same seed: the same tables, bit for bit, in two processes (on CPU).

The two runs get different PYTHONHASHSEEDs, so anything that depends on the iteration order of
a set of strings (or on ``hash()``) would show up here. A different seed draws other
demonstrations, and the manifest says which seed made the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recallscope.pipeline import default_stages
from recallscope.rundir import without_timings

pytestmark = pytest.mark.slow

# The stages a plain `recallscope run` runs: every one of them must be reproducible.
STAGES = default_stages()


def run(out: Path, seed: int, hash_seed: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recallscope",
            "run",
            "--max-prompts",
            "12",
            "--shots",
            "3",
            "--seed",
            str(seed),
            "--json",
            "--no-report",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_bitwise_equal(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    for column in a.columns:
        if pd.api.types.is_float_dtype(a[column]):
            assert a[column].to_numpy().tobytes() == b[column].to_numpy().tobytes(), (name, column)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("determinism")
    return {
        "a": (root / "a", run(root / "a", seed=0, hash_seed="1")),
        "b": (root / "b", run(root / "b", seed=0, hash_seed="2")),
        "other_seed": (root / "c", run(root / "c", seed=1, hash_seed="1")),
    }


def test_same_seed_same_tables_bit_for_bit(runs):
    (dir_a, summary_a), (dir_b, summary_b) = runs["a"], runs["b"]
    assert sorted(p.stem for p in dir_a.glob("*.parquet")) == sorted(STAGES)
    tables = sorted(str(p.relative_to(dir_a)) for p in dir_a.rglob("*.parquet"))
    assert sorted(str(p.relative_to(dir_b)) for p in dir_b.rglob("*.parquet")) == tables
    assert {"decompose/folds.parquet", "decompose/intercept.parquet", "suppress/eval.parquet"} <= set(tables)
    for name in tables:
        a, b = pd.read_parquet(dir_a / name), pd.read_parquet(dir_b / name)
        assert not [c for c in a.columns if "seconds" in c], name  # timings live in the summary only
        assert_bitwise_equal(a, b, name)
    for stage in STAGES:
        assert len(pd.read_parquet(dir_a / f"{stage}.parquet")) > 0, stage
    assert without_timings(summary_a) == without_timings(summary_b)
    manifest_a = json.loads((dir_a / "manifest.json").read_text())
    manifest_b = json.loads((dir_b / "manifest.json").read_text())
    assert manifest_a["identity"] == manifest_b["identity"] and manifest_a["stage_configs"] == manifest_b["stage_configs"]


def test_another_seed_draws_other_demonstrations_and_says_so(runs):
    (dir_a, summary_a), (dir_c, summary_c) = runs["a"], runs["other_seed"]
    text_a = pd.read_parquet(dir_a / "recall.parquet")["text"]
    text_c = pd.read_parquet(dir_c / "recall.parquet")["text"]
    assert len(text_a) == len(text_c) == 12
    assert (text_a != text_c).sum() >= 6  # 3-shot prompts: most demonstrations change
    manifest_a = json.loads((dir_a / "manifest.json").read_text())
    manifest_c = json.loads((dir_c / "manifest.json").read_text())
    assert (manifest_a["run"]["seed"], manifest_c["run"]["seed"]) == (0, 1)
    # Every stage's random choices follow --seed: each derived seed is in the manifest, and the
    # stages whose config holds a seed (suppress folds and bootstraps, claims' bootstraps) use it.
    from recallscope.pipeline import stage_seed

    for manifest, seed in ((manifest_a, 0), (manifest_c, 1)):
        assert manifest["seeds"]["prompts"] == seed
        for stage in STAGES:
            assert manifest["seeds"][stage] == stage_seed(seed, stage)
        assert manifest["stage_configs"]["suppress"]["seed"] == manifest["seeds"]["suppress"]
        assert manifest["stage_configs"]["claims"]["seed"] == manifest["seeds"]["claims"]
    assert len({manifest_a["seeds"][s] for s in STAGES} | {manifest_c["seeds"][s] for s in STAGES}) == 2 * len(STAGES)
    folds_a = pd.read_parquet(dir_a / "suppress" / "eval.parquet")
    folds_c = pd.read_parquet(dir_c / "suppress" / "eval.parquet")
    assert len(folds_a) and len(folds_c)
    assert (manifest_a["identity"]["seed"], manifest_c["identity"]["seed"]) == (0, 1)
    assert (summary_a["seed"], summary_c["seed"]) == (0, 1)
