"""``recallscope bench patch`` on a few real prompts: the lines it prints and what they claim."""

from __future__ import annotations

import pytest

from recallscope import benchmarks


@pytest.mark.slow
def test_bench_patch_lines_on_smollm2(smollm2):
    options = benchmarks.BenchOptions(shots=(0,), max_prompts=6, quick=True)
    lines = {line["bench"]: line for line in benchmarks.run("patch", options)}
    assert set(lines) == {"patch_exact_vs_naive", "patch_attribution_vs_exact", "patch_exact_vs_transformerlens"}
    naive = lines["patch_exact_vs_naive"]
    assert naive["n_components"] == 300 and naive["n_prompts"] >= 2
    assert naive["max_abs_diff"] <= 1e-4  # float64 rerun of both engines: the algorithm
    assert naive["max_abs_diff_float32"] <= 1e-3  # the timed float32 runs: rounding
    assert naive["ratio"] > 1.0 and naive["naive_seconds"] > naive["exact_seconds"]
    attribution = lines["patch_attribution_vs_exact"]
    assert attribution["passes"] == 3 and 0 <= attribution["top10_overlap"] <= 10
    tl = lines["patch_exact_vs_transformerlens"]
    # TransformerLens is an optional extra: either it ran side by side or the line says why not
    if tl["ratio"] is None:
        assert tl["skipped"]
    else:
        assert tl["max_abs_diff_pi"] <= 1e-3 and tl["transformerlens_seconds"] > 0
