"""``recallscope bench patch`` on a few real prompts: the lines it prints and what they claim."""

from __future__ import annotations

import pytest

from recallscope import benchmarks


@pytest.mark.slow
def test_bench_patch_lines_on_smollm2(smollm2):
    options = benchmarks.BenchOptions(shots=(0,), max_prompts=6, quick=True)
    lines = {line["bench"]: line for line in benchmarks.measure("patch", options)}
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


@pytest.mark.slow
def test_bench_trace_line_on_smollm2(smollm2):
    """The trace bench on four paper-task prompts (the first two sampled are not known to smollm2-135m; three of four are): the float64 equality, the FLOP arithmetic it writes, the no-op count."""
    options = benchmarks.BenchOptions(shots=(0,), max_prompts=4, quick=True)
    (line,) = list(benchmarks.measure("trace", options))
    assert line["bench"] == "trace_exact_vs_naive" and line["relation"] == "paper_country_capital"
    assert line["max_abs_diff"] <= 1e-5 and line["max_abs_diff_float32"] <= 1e-4
    naive, exact = (float(x) for x in line["flop_ratio_arithmetic"].split(" = ")[1].split(" (")[0].split(" / "))
    assert line["flop_ratio"] == pytest.approx(naive / exact, abs=0.006)
    assert line["n_restorations"] % (3 * 30) == 0  # 3 kinds × T positions × 30 layers per prompt
    assert 0 < line["n_noop_restorations"] < line["n_restorations"]
    assert line["flop_ratio_engine"] > line["flop_ratio"] and line["ratio"] > 1.0
    assert line["share_of_flop_ratio"] == pytest.approx(
        line["ratio"] / line["flop_ratio"], rel=0.005
    )  # the line rounds each figure


@pytest.mark.slow
def test_bench_surgery_line_on_smollm2(smollm2):
    """The surgery bench on three prompts: the float64 equality of the batched null with the naive
    loop, the sets it ablates (the movers and both nulls), the FLOP arithmetic it writes."""
    options = benchmarks.BenchOptions(shots=(0,), max_prompts=3, quick=True)
    (line,) = list(benchmarks.measure("surgery", options))
    assert line["bench"] == "surgery_batched_vs_naive" and line["relation"] == "country_capital_extended"
    assert line["max_abs_diff"] <= 1e-10 and line["max_abs_diff_float32"] <= 1e-4
    layer, norm = (int(part.split(": ")[1]) for part in line["null_sets"].split(", "))
    assert line["n_sets"] == 1 + layer + norm and norm == 200 and layer >= 168
    naive, batched = (float(x.split(" = ")[-1]) for x in line["flop_ratio_arithmetic"].split(";")[0].split(" / "))
    assert line["flop_ratio"] == pytest.approx(naive / batched, abs=0.006) and line["flop_ratio"] > 5
    assert line["ratio"] > 1.0 and line["share_of_flop_ratio"] == pytest.approx(line["ratio"] / line["flop_ratio"], rel=0.005)
