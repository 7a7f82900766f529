"""scripts/study.py renders docs/study.md and the README block from run directories alone.

Synthetic sweeps (the files a sweep writes: each cell's summary.json and claims.parquet, the
combined summary.json with the few-shot claim, the study's study.json record) stand in for real
runs, so the test needs no model and checks that every figure of the tables reaches the page.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from recallscope.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study_script", ROOT / "scripts" / "study.py")
study = importlib.util.module_from_spec(spec)
sys.modules["study_script"] = study  # dataclasses look their module up
spec.loader.exec_module(study)

C_MOVERS = "Mover heads move the topic (subject) to the last position"
C_SUPPRESS = "The final layer suppresses the correct answer"
C_SHOTS = "Few-shot prompts engage the same heads"
RELATIONS = ["paper_country_capital", "../shared/data/lre/country_language.json"]
SHOTS = [0, 3]


FLIPS = {("m1", "recallscope", "paper_country_capital", 3, "C1"): 0.45}  # flips_at where the primary condition alone decides


def claim_row(claim, value, lo, hi, verdict, margin, rule, flips_at=None):
    # the claims stage's columns (recallscope.claims.COLUMNS; evidence columns beside them are not shown in the study)
    return {
        "claim": claim,
        "stage": "s",
        "about": "L23H4",
        "measure": f"measure of {claim[:10]}",
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "threshold": 0.5,
        "margin": margin,
        "flips_at": flips_at,
        "verdict": verdict,
        "rule": rule,
        "detail": "d",
        "projection_corr_first": 0.123,
    }


# per (model, preset, relation slug, shots): the two per-cell claims; figures chosen so 3 significant digits are exact
FIGURES = {
    ("m1", "recallscope", "paper_country_capital", 0): [
        (0.812, 0.75, 0.87, "holds", 0.25),
        (-1.25, -2.5, -0.125, "holds", 0.125),
    ],
    ("m1", "recallscope", "paper_country_capital", 3): [
        (0.431, 0.25, 0.55, "does not hold", -0.05),
        (2.5, 1.75, 3.25, "does not hold", -1.75),
    ],
    ("m1", "recallscope", "country_language", 0): None,  # the claims stage did not run: too few known prompts
    ("m1", "recallscope", "country_language", 3): [(0.625, 0.5, 0.7, "holds", 0.1), (0.375, -0.25, 1.5, "does not hold", -0.25)],
    ("m1", "paper", "paper_country_capital", 0): [
        (0.333, 0.125, 0.5, "does not hold", -0.375),
        (-1.5, -2.75, -0.5, "holds", 0.5),
    ],
    ("m1", "paper", "paper_country_capital", 3): [
        (0.444, 0.25, 0.6, "does not hold", -0.2),
        (3.5, 2.25, 4.75, "does not hold", -2.25),
    ],
    ("m1", "paper", "country_language", 0): [
        (0.555, 0.375, 0.75, "not measurable here", None),
        (0.125, -0.5, 0.875, "does not hold", -0.5),
    ],
    ("m1", "paper", "country_language", 3): [(0.666, 0.5, 0.8, "holds", 0.3), (-0.875, -1.25, -0.625, "holds", 0.625)],
}
SHOT_FIGURES = {
    ("m1", "recallscope"): [
        ("paper_country_capital", 0.9, 0.8, 0.95, "holds", 0.3),
        ("country_language", 0.2, 0.1, 0.3, "does not hold", -0.2),
    ],
    ("m1", "paper"): [("paper_country_capital", 0.7, 0.6, 0.8, "holds", 0.1)],
}
RULES = {C_MOVERS: "a head passes every mover threshold", C_SUPPRESS: "interval below 0 on most prompts"}


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    out = tmp_path / "study"
    for (model, preset, rel, k), figures in FIGURES.items():
        cell = RunDir(out / model / preset / rel / rel / f"{k}shot")
        cell.create()
        summary = {"model": model, "relation": rel, "shots": k, "n_prompts": 32, "n_known": 10 + k, "stages": {}}
        if figures is None:
            summary["n_known"] = 1
            summary["not_measurable"] = {"claims": {"reason": "no known prompt left for relation 'country_language'"}}
        else:
            rows = [
                claim_row(C_MOVERS, *figures[0], RULES[C_MOVERS], FLIPS.get((model, preset, rel, k, "C1"))),
                claim_row(C_SUPPRESS, *figures[1], RULES[C_SUPPRESS]),
            ]
            cell.write_tables("claims", {"claims": pd.DataFrame(rows)})
            summary["stages"]["claims"] = {"claims": rows}
        cell.write_summary(summary)
    for (model, preset), rows in SHOT_FIGURES.items():
        for r in rows:  # one sweep per relation over the shot counts; its combined summary holds the few-shot claim
            combined = {
                "model": model,
                "runs": [{"path": "x"}],
                "claims": [{**claim_row(C_SHOTS, *r[1:], "top heads overlap above chance"), "relation": r[0]}],
            }
            RunDir(out / model / preset / r[0]).write_summary(combined)
    (out / "study.json").write_text(
        json.dumps(
            {
                "attempts": [
                    {
                        "model": "m1",
                        "preset": p,
                        "relation": "paper_country_capital",
                        "command": f"recallscope run --model m1 --preset {p}",
                        "commit": "abc123",
                        "dirty": False,
                        "start": "2026-11-30T09:00:00+00:00",
                        "end": "2026-11-30T09:10:00+00:00",
                        "wall_s": 600.0,
                        "load_before": 3.5,
                        "load_after": 4.25,
                        "returncode": 0,
                    }
                    for p in ("recallscope", "paper")
                ]
            }
        )
    )
    return out


def render(study_dir: Path, tmp_path: Path) -> tuple[str, str]:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{study.BEGIN}\nold hand-typed figure 0.89\n{study.END}\n\nafter\n")
    args = study.parse(
        [
            "--render-only",
            "--models",
            "m1",
            "--relations",
            ",".join(RELATIONS),
            "--shots",
            "0,3",
            "--max-prompts",
            "32",
            "--out",
            str(study_dir),
            "--doc",
            str(tmp_path / "study.md"),
            "--readme",
            str(readme),
        ]
    )
    assert (
        study.main(
            [
                "--render-only",
                "--models",
                "m1",
                "--relations",
                ",".join(RELATIONS),
                "--shots",
                "0,3",
                "--max-prompts",
                "32",
                "--out",
                str(study_dir),
                "--doc",
                str(tmp_path / "study.md"),
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    assert args.render_only
    return (tmp_path / "study.md").read_text(), readme.read_text()


def test_every_figure_of_the_claims_tables_reaches_the_page(study_dir, tmp_path):
    doc, _ = render(study_dir, tmp_path)
    for (model, preset, rel, k), figures in FIGURES.items():
        if figures is None:
            continue
        for (value, lo, hi, verdict, margin), claim in zip(figures, (C_MOVERS, C_SUPPRESS), strict=True):
            label = "C1" if claim == C_MOVERS else "C2"
            # the detail table has one line per cell and claim with value, interval, verdict and margin
            line = next(
                l
                for l in doc.splitlines()
                if l.startswith(f"| {rel} | {k} | {label} |") and f"{study.num(value)} | [{study.num(lo)}, {study.num(hi)}]" in l
            )
            flips = FLIPS.get((model, preset, rel, k, label))
            assert (
                f"| L23H4 | {study.num(value)} | [{study.num(lo)}, {study.num(hi)}] | 0.5 | "
                f"{'—' if margin is None else study.num(margin)} | {study.num(flips)} | {verdict} | {RULES[claim]} | d |" in line
            )
    for rows in SHOT_FIGURES.values():
        for rel, value, lo, hi, verdict, margin in rows:
            assert f"| {rel} | 0→3 | C3 | L23H4 | {value} | [{lo}, {hi}] | 0.5 | {margin} | — | {verdict} |" in doc
    # the literal figures, as printed
    assert "| 0.812 | [0.75, 0.87] | 0.5 | 0.25 | — | holds |" in doc
    assert "| -1.25 | [-2.5, -0.125] | 0.5 | 0.125 | — | holds |" in doc
    assert "0.123" not in doc  # evidence columns stay in the run directory
    # the cell that lacks the claims stage says why, and counts as not measurable
    assert "no known prompt left for relation 'country_language'" in doc
    # sample sizes and provenance
    assert "`--max-prompts 32`" in doc and "1 to 13 per cell" in doc
    assert "| 10/32 |" in doc and "| 13/32 |" in doc and "| 1/32 |" in doc
    assert "`recallscope run --model m1 --preset paper`" in doc and "abc123" in doc and "2026-11-30T09:00:00+00:00" in doc
    assert "20 min of wall time" in doc  # 2 × 600 s
    assert "python scripts/study.py --models m1" in doc and "--max-prompts 32" in doc
    # the paper preset's country_language sweep has no combined summary: said so
    assert "m1 · paper: not run to the end for country_language" in doc
    assert "`--set patch.attribution=false`" in doc


def test_the_summary_counts_and_sentences_follow_the_verdicts(study_dir, tmp_path):
    doc, _ = render(study_dir, tmp_path)
    # C1 (movers), recallscope: holds at (pcc, 0) and (language, 3); fails at (pcc, 3); (language, 0) has no claims table
    # C1, paper: holds at (language, 3); fails at (pcc, 0), (pcc, 3); not measurable at (language, 0)
    # C2, recallscope: holds (pcc, 0); fails (pcc, 3), (language, 3); missing (language, 0)
    # C2, paper: holds (pcc, 0), (language, 3); fails (pcc, 3), (language, 0)
    # C3 (shots): recallscope 1 of 2 relations; paper 1 of 1
    table = [l for l in doc.split("## Summary")[1].splitlines() if l.startswith("| C")]
    assert table == [
        "| C1 | 2/3 (1 n/m) | 1/3 (1 n/m) |",
        "| C2 | 1/3 (1 n/m) | 2/4 |",
        "| C3 | 1/2 | 1/1 (1 not run) |",
    ]
    assert (
        "**m1, recallscope preset**: holds in 2 of 3 measured cells (paper_country_capital at 0 shots; "
        "country_language at 3 shots); not measurable in 1 cell (country_language at 0 shots)."
    ) in doc
    assert "**m1, paper preset**: holds in 1 of 3 measured cells (country_language at 3 shots)" in doc
    assert "**m1, recallscope preset**: holds in 1 of 2 measured relations (paper_country_capital)." in doc
    assert "**m1, paper preset**: holds in the one measured relation; 1 relation not run yet." in doc
    # nearest flip: the smallest |margin| among measured verdicts
    # the nearest flip is only named where the primary condition alone decides (flips_at set)
    assert doc.count("nearest to flipping") == 1
    assert (
        "The verdict nearest to flipping: paper_country_capital at 3 shots (does not hold, margin -0.05; "
        "it flips with the threshold's setting at 0.45)."
    ) in doc
    # presets compared cell by cell ((language, 0) is not compared: no claims table under recallscope)
    assert (
        "of the 6 verdicts measured under both presets, 2 differ: C1 on paper_country_capital at 0 shots (recallscope: "
        "holds, paper: does not hold); C2 on country_language at 3 shots (recallscope: does not hold, paper: holds)."
    ) in doc
    assert "8 of 8 cells have run." in doc
    # the per-cell grid: verdict mark, value and interval
    assert "| paper_country_capital | 0 | 10/32 | ✓ 0.812 [0.75, 0.87] | ✓ -1.25 [-2.5, -0.125] |" in doc
    assert "| country_language | 0 | 1/32 | n/m | n/m |" in doc
    assert "| country_language | 0 | 10/32 | n/m | ✗ 0.125 [-0.5, 0.875] |" in doc


def test_the_readme_block_is_replaced_and_the_rest_kept(study_dir, tmp_path):
    _, readme = render(study_dir, tmp_path)
    assert readme.startswith("# title\n\nbefore\n\n" + study.BEGIN)
    assert readme.endswith(study.END + "\n\nafter\n")
    assert "0.89" not in readme  # the hand-typed block is gone
    assert "| C1 | 2/3 (1 n/m) | 1/3 (1 n/m) |" in readme
    assert "[docs/study.md](docs/study.md)" in readme
    # C1 over both presets: holds in 2 + 1 of 3 + 3 measured cells
    assert "- C1 holds in 3 of 6 measured cells (m1 3/6)." in readme
    assert "- C3 holds in 2 of 3 measured relations (m1 2/3)." in readme
    assert readme.count(study.BEGIN) == 1 and readme.count(study.END) == 1
    # rendering twice gives the same block (idempotent), apart from nothing
    _, again = render(study_dir, tmp_path)
    assert again.split(study.BEGIN)[1] == readme.split(study.BEGIN)[1]


def test_missing_markers_are_an_error(study_dir, tmp_path):
    with pytest.raises(SystemExit, match="markers"):
        study.replace_block("no markers here", "block")


def test_the_sweep_command_is_one_run_per_model_and_preset():
    cmd = study.sweep_command(
        "gemma3-270m",
        "paper",
        RELATIONS[1:],
        [0, 1, 3],
        24,
        Path("runs/study/gemma3-270m/paper/country_language"),
        None,
        None,
        ["suppress.modes=zero"],
    )
    assert cmd == [
        "recallscope",
        "run",
        "--model",
        "gemma3-270m",
        "--preset",
        "paper",
        "--relation",
        RELATIONS[1],
        "--shots",
        "0,1,3",
        "--max-prompts",
        "24",
        "--no-report",
        "--out",
        "runs/study/gemma3-270m/paper/country_language",
        "--json",
        "--set",
        "suppress.modes=zero",
    ]
    assert study.slug("../shared/data/lre/country_language.json") == "country_language"
