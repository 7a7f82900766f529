"""scripts/benchmarks_md.py: BENCHMARKS.md is the rendering of docs/bench/*.jsonl, figures from the lines only."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "benchmarks_md.py"


@pytest.fixture(scope="module")
def md():
    spec = importlib.util.spec_from_file_location("benchmarks_md", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


HEADER = {
    "record": "sample",
    "command": "recallscope bench contention --quick --json",
    "commit": "0123456789ab",
    "dirty": False,
    "date": "2026-11-30T08:00:00+00:00",
    "cpus": 2,
    "load_before": 3.25,
}
FOOTER = {"record_end": "sample", "returncode": 0, "wall_s": 412.7, "peak_rss_mb": 1876.25, "load_after": 4.5}
LINES = [
    {
        "bench": "contention_competitor",
        "policy": "before",
        "max_prompts": 16,
        "alone_seconds": [21.5, 22.5],
        "with_competitor_seconds": 61.6,
        "ratio": 2.8,
        "target": "<= 1.6",
        "target_met": False,
        "load_1m_at_start": 3.25,
        "peak_rss_gb": 1.23,
    },
    {
        "bench": "contention_pair",
        "policy": "after",
        "sequential_seconds": 44.0,
        "together_seconds": 47.3,
        "together_each_seconds": [46.9, 47.3],
        "ratio": 1.075,
        "target": "<= 1.1",
        "target_met": True,
        "load_1m_at_start": 3.5,
        "peak_rss_gb": 1.21,
        "command": "recallscope patch --max-prompts 16 --json",
    },
    {
        "bench": "patch_path_exact_vs_naive",
        "shots": 3,
        "n_prompts": 48,
        "exact_seconds": 17.25,
        "naive_seconds": 1824.5,
        "ratio": 105.8,
        "flop_ratio": 83.5,
        "share_of_flop_ratio": 1.27,
        "max_abs_diff": 2.6e-13,
        "flop_ratio_arithmetic": "naive: T=32.0 positions x L=30 layers ... ratio 83.5",
    },
    {"bench": "something_new", "ratio": 7.125, "speed": 0.000123},
]


def write_record(folder: Path, header=HEADER, lines=LINES, footer=FOOTER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{header['record']}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in (header, *lines, footer)))
    return path


def test_renders_a_sample_record(md, tmp_path):
    write_record(tmp_path)
    text = md.render(tmp_path)
    # the record: command, commit, date, load before → after, wall, peak RSS, exit code
    row = "| sample | `recallscope bench contention --quick --json` | 0123456789ab | 2026-11-30T08:00:00+00:00 | 2 | 3.25 → 4.5 | 412.7 | 1,876 | 0 |"
    assert row in text
    # every figure from the lines, in its section's table
    assert "| sample | before | 16 | 21.5, 22.5 | 61.6 | 2.8 | <= 1.6 | no | 3.25 | 1.23 |" in text
    assert "| sample | after | 44 | 47.3 | 46.9, 47.3 | 1.075 | <= 1.1 | yes | 3.5 | 1.21 |" in text
    assert "| sample | 3 | 48 | — | 17.25 | 1,824 | 105.8 | 83.5 | 1.27 | — | — | — | — | — | 2.6e-13 | — | — |" in text
    # the arithmetic written on the line is shown with it
    assert "`flop_ratio_arithmetic`: naive: T=32.0 positions x L=30 layers ... ratio 83.5" in text
    # a kind the template has no prose for still appears, with its scalar fields
    assert "## something_new" in text and "| record | ratio | speed |" in text and "| sample | 7.125 | 1.2e-04 |" in text
    # and every raw line
    for line in LINES:
        assert json.dumps(line) in text
    # sections without lines are left out
    assert "## decompose" not in text and "## trace" not in text
    # the page opens with the ratios: each engine-vs-baseline line, before the provenance
    ratios = text.index("| engine | baseline | shots | ratio |")
    assert ratios < text.index("## Provenance") < text.index("## Records")
    assert "| patch path exact | naive | 3 | 105.8× | — | 2.6e-13 | sample | 3.25 → 4.5 |" in text
    assert "| something new |" not in text  # not an engine against a baseline


def test_a_figure_changes_with_its_line(md, tmp_path):
    write_record(tmp_path)
    before = md.render(tmp_path)
    changed = [dict(LINES[0], with_competitor_seconds=33.3), *LINES[1:]]
    write_record(tmp_path, lines=changed)
    after = md.render(tmp_path)
    assert "61.6" in before and "61.6" not in after and "| 33.3 |" in after


def test_peak_memory_table_judges_each_benchmark_against_3_gb(md, tmp_path):
    lines = [
        {"bench": "patch_exact_vs_naive", "shots": 0, "bench_process_peak_rss_mb": 2630.0, "peak_rss_gb": 1.5},
        {"bench": "trace_exact_vs_naive", "shots": 0, "bench_process_peak_rss_mb": 2900.0},
        {"bench": "run_default", "shots": 0, "bench_process_peak_rss_mb": 400.0, "peak_rss_gb": 2.875},
        # an older record: no process mark
        {"bench": "contention_pair", "policy": "after", "stage": "patch", "peak_rss_gb": 1.25},
    ]
    rows = md.memory_rows([md.Record("r", HEADER, lines, FOOTER, "docs/bench/r.jsonl")])
    assert [(r["peak_mb"], r["within"]) for r in rows] == [(2630.0, True), (2900.0, False), (2944.0, False), (1280.0, None)]
    assert round(md.MEMORY_TARGET_MB, 1) == 2861.0
    write_record(tmp_path, lines=lines)
    text = md.render(tmp_path)
    assert "| sample | trace_exact_vs_naive | 0 | — | 2,900 | — | 2,900 | no |" in text
    assert "| sample | contention_pair | — | after, patch | — | 1,280 | 1,280 | — |" in text


def test_a_file_without_a_header_is_refused(md, tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"bench": "x", "ratio": 1}) + "\n")
    with pytest.raises(ValueError, match="record header"):
        md.render(tmp_path)


def test_formatting(md):
    assert [
        md.fmt(x) for x in (None, True, 3, 12345, 0.0, 1.2345e-13, 2.5, 123.456, 98765.4, "a|b", [1.5, 2], {"L1H2": 0.5})
    ] == ["—", "yes", "3", "12,345", "0", "1.2e-13", "2.5", "123.5", "98,765", "a\\|b", "1.5, 2", "L1H2 0.5"]


def test_benchmarks_md_in_the_repo_is_the_generated_one():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
