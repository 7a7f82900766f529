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
C_SHOTS = "Few-shot prompts employ the same heads as zero-shot"  # the study labels claims by their ids: C1, C4, C6
RELATIONS = ["paper_country_capital", "lre/country_language"]
SHOTS = [0, 3]


FLIPS = {("m1", "recallscope", "paper_country_capital", 3, "C1"): 0.45}  # flips_at where the deciding setting alone decides


def claim_row(claim, value, lo, hi, verdict, margin, rule, flips_at=None, needed=None):
    # the claims stage's columns (recallscope.claims.COLUMNS; evidence columns beside them are not shown in the study)
    return {
        "claim": claim,
        "stage": "s",
        "about": "L23H4",
        "measure": f"measure of {claim[:10]}",
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "decided_by": "primary",
        "decided_value": value,
        "decided_ci_low": lo,
        "decided_ci_high": hi,
        # the deciding condition is the primary one here; test_the_grid_shows_the_deciding_statistic has another
        "threshold": 0.5,
        "margin": margin,
        "flips_at": flips_at,
        "verdict": verdict,
        "prompts_used": 12,
        "prompts_needed": needed,
        "prompts_available": 100,
        "rule": rule,
        "detail": "d",
        "projection_corr_first": 0.123,
    }


# per (model, preset, relation slug, shots): the two per-cell claims (value, low, high, verdict, margin[, prompts
# needed]); figures chosen so 3 significant digits are exact
FIGURES = {
    ("m1", "recallscope", "paper_country_capital", 0): [
        (0.812, 0.75, 0.87, "holds", 0.25),
        (-1.25, -2.5, -0.125, "holds", 0.125),
    ],
    ("m1", "recallscope", "paper_country_capital", 3): [
        (0.431, 0.25, 0.55, "inconclusive", -0.05, 140),
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
        (0.125, -0.5, 0.875, "inconclusive", -0.5, 300),
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
        # recall's table: 32 prompts of 4 subjects (× 8 templates), the first n_known known
        known = 1 if figures is None else 10 + k
        recall = pd.DataFrame({"subject": [f"s{i % 4}" for i in range(32)], "known": [i < known for i in range(32)]})
        cell.write_tables("recall", {"recall": recall})
        summary["stages"]["recall"] = {"n_known": known}
        if figures is None:
            summary["n_known"] = 1
            summary["not_measurable"] = {"claims": {"reason": "no known prompt left for relation 'country_language'"}}
        else:
            rows = [
                claim_row(C_MOVERS, *figures[0][:5], RULES[C_MOVERS], FLIPS.get((model, preset, rel, k, "C1")), *figures[0][5:]),
                claim_row(C_SUPPRESS, *figures[1][:5], RULES[C_SUPPRESS], None, *figures[1][5:]),
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


def render(study_dir: Path, tmp_path: Path, baseline: str = "", relations=RELATIONS) -> tuple[str, str]:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{study.BEGIN}\nold hand-typed figure 0.89\n{study.END}\n\nafter\n")
    argv = [
        "--render-only",
        "--models",
        "m1",
        "--relations",
        ",".join(relations),
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
        "--baseline",
        baseline,
    ]
    assert study.parse(argv).render_only and study.main(argv) == 0
    return (tmp_path / "study.md").read_text(), readme.read_text()


def test_every_figure_of_the_claims_tables_reaches_the_page(study_dir, tmp_path):
    doc, _ = render(study_dir, tmp_path)
    for (model, preset, rel, k), figures in FIGURES.items():
        if figures is None:
            continue
        for (value, lo, hi, verdict, margin, *needed), claim in zip(figures, (C_MOVERS, C_SUPPRESS), strict=True):
            label = "C1" if claim == C_MOVERS else "C4"
            # the detail table has one line per cell and claim with value, interval, the deciding figure,
            # threshold, margin, flips at, verdict, prompts needed and available
            line = next(
                l
                for l in doc.splitlines()
                if l.startswith(f"| {rel} | {k} | {label} |") and f"{study.num(value)} | [{study.num(lo)}, {study.num(hi)}]" in l
            )
            flips = FLIPS.get((model, preset, rel, k, label))
            interval = f"[{study.num(lo)}, {study.num(hi)}]"
            assert (
                f"| L23H4 | {study.num(value)} | {interval} | primary = {study.num(value)} {interval} | 0.5 | "
                f"{'—' if margin is None else study.num(margin)} | {study.num(flips)} | {verdict} | "
                f"{needed[0] if needed else '—'} | 100 | {RULES[claim]} | d |" in line
            )
    for rows in SHOT_FIGURES.values():
        for rel, value, lo, hi, verdict, margin in rows:
            assert (
                f"| {rel} | 0→3 | C6 | L23H4 | {value} | [{lo}, {hi}] | primary = {value} [{lo}, {hi}] | 0.5 | {margin} | — | {verdict} |"
                in doc
            )
    # the literal figures, as printed
    assert "| 0.812 | [0.75, 0.87] | primary = 0.812 [0.75, 0.87] | 0.5 | 0.25 | — | holds | — | 100 |" in doc
    assert "| 0.431 | [0.25, 0.55] | primary = 0.431 [0.25, 0.55] | 0.5 | -0.05 | 0.45 | inconclusive | 140 | 100 |" in doc
    assert "0.123" not in doc  # evidence columns stay in the run directory
    # the cell that lacks the claims stage says why, and counts as not measurable
    assert "no known prompt left for relation 'country_language'" in doc
    # sample sizes and provenance
    assert "`--max-prompts 32`" in doc and "1 to 13 per cell" in doc
    assert "| 10/32 |" in doc and "| 13/32 |" in doc and "| 1/32 |" in doc
    assert "`recallscope run --model m1 --preset paper`" in doc and "abc123" in doc and "2026-11-30T09:00:00+00:00" in doc
    # the run time of the study: 2 × 600 s
    assert "2 sweep attempt(s) took 20 min of wall time in all (m1 20 min), between 2026-11-30T09:00:00+00:00" in doc
    assert "python scripts/study.py --models m1" in doc and "--max-prompts 32" in doc
    # the paper preset's country_language sweep has no combined summary: said so
    assert "m1 · paper: not run to the end for country_language" in doc
    assert "`--set patch.attribution=false`" in doc


def test_the_summary_counts_and_sentences_follow_the_verdicts(study_dir, tmp_path):
    doc, _ = render(study_dir, tmp_path)
    # C1 (movers), recallscope: holds at (pcc, 0) and (language, 3); inconclusive at (pcc, 3) (140 prompts needed);
    #   (language, 0) has no claims table
    # C1, paper: holds at (language, 3); fails at (pcc, 0), (pcc, 3); not measurable at (language, 0)
    # C4, recallscope: holds (pcc, 0); fails (pcc, 3), (language, 3); missing (language, 0)
    # C4, paper: holds (pcc, 0), (language, 3); fails (pcc, 3); inconclusive (language, 0) (300 prompts needed)
    # C6 (shots): recallscope holds 1, fails 1; paper holds 1 of 1, 1 not run
    table = [l for l in doc.split("## Summary")[1].split("| claim | model")[0].splitlines() if l.startswith("| C")]
    assert table == [
        "| C1 | 2 · 0 · 1 · 1 (≈ 140) | 1 · 2 · 0 · 1 |",
        "| C4 | 1 · 2 · 0 · 1 | 2 · 1 · 1 · 0 (≈ 300) |",
        "| C6 | 1 · 1 · 0 · 0 | 1 · 0 · 0 · 0, 1 not run |",
    ]
    # the long table: per claim and model · preset, with the median prompts needed and their range
    # (each inconclusive cell needs more known prompts, 140 and 300, than its relation gives: 100)
    assert "| C1 | m1 · recallscope | 2 | 0 | 1 | 1 | 0 | 140 (140–140); 1 more than the relation can give |" in doc
    assert "| C4 | m1 · paper | 2 | 1 | 1 | 0 | 0 | 300 (300–300); 1 more than the relation can give |" in doc
    assert "| C6 | m1 · paper | 1 | 0 | 0 | 0 | 1 | — |" in doc
    assert (
        "**m1, recallscope preset**, of 3 measured cells: holds in 2 (paper_country_capital at 0 shots; "
        "country_language at 3 shots); inconclusive in 1 (paper_country_capital at 3 shots) — median ≈ 140 known "
        "prompts would decide the inconclusive ones (1 of them more than their relation can give); not measurable in "
        "1 cell (country_language at 0 shots)."
    ) in doc
    assert (
        "**m1, paper preset**, of 3 measured cells: holds in 1 (country_language at 3 shots); does not hold in 2 "
        "(paper_country_capital at 0 and 3 shots); not measurable in 1 cell (country_language at 0 shots)."
    ) in doc
    assert (
        "**m1, recallscope preset**, of 2 measured relations: holds in 1 (paper_country_capital); does not hold in 1 "
        "(country_language)."
    ) in doc
    assert "**m1, paper preset**, of 1 measured relation: holds in 1 (paper_country_capital); 1 relation not run yet." in doc
    # the nearest flip is only named where the deciding setting alone changes the verdict (flips_at set)
    assert doc.count("nearest to flipping") == 1
    assert (
        "The verdict nearest to flipping: paper_country_capital at 3 shots (inconclusive, margin -0.05; "
        "it changes with the deciding threshold's setting at 0.45)."
    ) in doc
    # presets compared cell by cell, inconclusive included ((language, 0) is not compared: no claims table under recallscope)
    assert (
        "of the 6 verdicts measured under both presets, 3 differ: C1 on paper_country_capital at 0 shots (recallscope: "
        "holds, paper: does not hold); C1 on paper_country_capital at 3 shots (recallscope: inconclusive, paper: does "
        "not hold); C4 on country_language at 3 shots (recallscope: does not hold, paper: holds)."
    ) in doc
    assert "8 of 8 cells have run." in doc
    # the per-cell grid: verdict mark, value and interval, and for an inconclusive cell the prompts needed
    assert "| paper_country_capital | 0 | 10/32 | 4 | ✓ 0.812 [0.75, 0.87] | ✓ -1.25 [-2.5, -0.125] |" in doc
    assert "| paper_country_capital | 3 | 13/32 | 4 | ? 0.431 [0.25, 0.55] ≈140 > 100 | ✗ 2.5 [1.75, 3.25] |" in doc
    assert "| country_language | 0 | 1/32 | 1 | n/m | n/m |" in doc
    # the subjects among the known prompts, beside them: the intervals resample prompts, not subjects (said once)
    assert doc.count("(the grids' `subjects` column)") == 1
    assert "`subjects`: the distinct subjects among the known prompts" in doc  # the grids' legend
    assert "exit 3: the sweep finished but some stage was not measurable in some cell" in doc
    assert "| country_language | 0 | 10/32 | 4 | n/m | ? 0.125 [-0.5, 0.875] ≈300 > 100 |" in doc


def test_the_readme_block_is_replaced_and_the_rest_kept(study_dir, tmp_path):
    _, readme = render(study_dir, tmp_path)
    assert readme.startswith("# title\n\nbefore\n\n" + study.BEGIN)
    assert readme.endswith(study.END + "\n\nafter\n")
    assert "0.89" not in readme  # the hand-typed block is gone
    assert "| C1 | 2 · 0 · 1 · 1 (≈ 140) | 1 · 2 · 0 · 1 |" in readme
    assert "[docs/study.md](docs/study.md)" in readme
    assert "The study's 2 sweep attempt(s) took 20 min of wall time in all" in readme
    # C1 over both presets: 3 hold, 2 do not, 1 inconclusive of 6 measured cells
    assert (
        "- C1, of 6 measured cells: holds in 3, does not hold in 2, inconclusive in 1 (m1 3 · 2 · 1); median ≈ 140 "
        "known prompts would decide the inconclusive ones (1 of them more than their relation can give)."
    ) in readme
    assert "- C6, of 3 measured relations: holds in 2, does not hold in 1, inconclusive in 0 (m1 2 · 1 · 0)." in readme
    assert readme.count(study.BEGIN) == 1 and readme.count(study.END) == 1
    # rendering twice gives the same block (idempotent), apart from nothing
    _, again = render(study_dir, tmp_path)
    assert again.split(study.BEGIN)[1] == readme.split(study.BEGIN)[1]


def baseline_row(preset, relation, shots, label, verdict, model="m1", **figures):
    claim = {"C1": C_MOVERS, "C4": C_SUPPRESS, "C6": C_SHOTS}[label]
    return {
        "model": model,
        "preset": preset,
        "relation": relation,
        "shots": shots,
        "claim": claim,
        "label": label,
        "value": figures.get("value", 0.5),
        "ci_low": 0.25,
        "ci_high": 0.75,
        "threshold": 0.5,
        "margin": figures.get("margin", -0.02),
        "flips_at": None,
        "verdict": verdict,
        "n_known": 9,
        "n_prompts": 24,
    }


def test_what_changed_against_the_earlier_study(study_dir, tmp_path):
    """Item 5 of issue 27: the renderer compares every cell and claim with the earlier study's verdicts."""
    baseline = {
        "source": {"file": "docs/study.md", "commit": "0123456789abcdef0123456789abcdef01234567", "note": "n"},
        "max_prompts": 24,
        "claims": {"C1": C_MOVERS, "C4": C_SUPPRESS, "C6": C_SHOTS},
        "rows": [
            baseline_row("recallscope", "paper_country_capital", 3, "C1", "does not hold", value=0.431, margin=-0.049),
            baseline_row("paper", "paper_country_capital", 0, "C1", "holds"),  # now does not hold: a flip
            baseline_row("recallscope", "country_language", 3, "C4", "holds"),  # now does not hold
            baseline_row("paper", "country_language", 0, "C4", "not measurable here"),  # now inconclusive
            baseline_row("recallscope", "paper_country_capital", 0, "C1", "holds"),  # unchanged
            baseline_row("recallscope", "paper_country_capital", "0→3", "C6", "holds"),  # unchanged (few-shot row)
            baseline_row("paper", "country_language", "0→3", "C6", "holds"),  # its sweep did not finish: missing
            baseline_row("paper", "city_in_country", 0, "C1", "holds"),  # a relation not rendered: not compared
            baseline_row("recallscope", "paper_country_capital", 1, "C1", "holds"),  # a shot count not rendered
            baseline_row("paper", "paper_country_capital", 0, "C1", "holds", model="m2"),  # another model: not compared
        ],
    }
    path = tmp_path / "study-24.json"
    path.write_text(json.dumps(baseline))
    doc, readme = render(study_dir, tmp_path, str(path))
    summary = (
        "Against the 24-prompt study (docs/study-24.json, from docs/study.md at 0123456789ab): of 6 verdicts compared, "
        "2 are unchanged, 1 turned inconclusive, 2 flipped between holds and does not hold (0 to holds, 2 to does "
        "not hold), 1 changed otherwise; 1 verdict of it not in this study's run directories."
    )
    assert summary in doc and summary in readme
    section = doc.split("## What changed against the 24-prompt study")[1].split("## Which claims")[0]
    assert "### Turned inconclusive (1)" in section and "### Flipped between holds and does not hold (2)" in section
    assert (
        "- C1 · m1 · recallscope · paper_country_capital · 3 shots: does not hold (0.431 [0.25, 0.75], margin -0.049, "
        "9 known) → inconclusive (0.431 [0.25, 0.55]; decided by primary = 0.431 [0.25, 0.55]; ≈ 140 known prompts "
        "would decide it — more than the relation can give (≈ 100); 12 used)"
    ) in section
    assert "- C4 · m1 · paper · country_language · 0 shots: not measurable here" in section
    assert "Not in this study's run directories yet (1 verdict): m1 · paper: country_language at 0→3." in section
    assert "city_in_country" not in section and "· 1 shot" not in section
    assert "m2" not in section


def test_the_baseline_is_extracted_from_a_rendered_study(study_dir, tmp_path):
    """``--extract-baseline`` reads a docs/study.md this script rendered back into per-cell verdicts: every
    figure of the synthetic study comes back as printed."""
    doc, _ = render(study_dir, tmp_path)
    data = study.extract_baseline(doc, "c0ffee")
    assert data["source"]["commit"] == "c0ffee" and data["claims"] == {"C1": C_MOVERS, "C4": C_SUPPRESS, "C6": C_SHOTS}
    rows = {(r["preset"], r["relation"], r["shots"], r["label"]): r for r in data["rows"]}
    for (model, preset, rel, k), figures in FIGURES.items():
        for label, fig in zip(("C1", "C4"), figures or (), strict=False):
            row = rows[(preset, rel, k, label)]
            assert (row["value"], row["ci_low"], row["ci_high"], row["verdict"], row["margin"]) == (
                fig[0],
                fig[1],
                fig[2],
                fig[3],
                fig[4],
            ), (preset, rel, k, label)
            assert row["n_known"] == 10 + k and row["n_prompts"] == 32
    assert rows[("recallscope", "paper_country_capital", 3, "C1")]["flips_at"] == 0.45
    assert rows[("paper", "paper_country_capital", "0→3", "C6")]["verdict"] == "holds"
    assert ("recallscope", "country_language", 0, "C1") not in rows  # no claims table there: not measurable


def test_the_committed_24_prompt_study():
    """docs/study-24.json: the 24-prompt study's verdicts, extracted from docs/study.md at the commit it names;
    its counts are the ones that study's README block printed (C1 held in 3 of 69 measured cells, C2 in none of
    55, C4 in all 69)."""
    data = study.load_baseline(study.BASELINE)
    assert len(data["source"]["commit"]) == 40 and data["max_prompts"] == 24
    assert {(r["model"], r["preset"]) for r in data["rows"]} == {(m, p) for m in study.MODELS for p in study.PRESETS}
    for label, held, measured in (("C1", 3, 69), ("C2", 0, 55), ("C4", 69, 69), ("C5", 31, 69)):
        rows = [r for r in data["rows"] if r["label"] == label]
        assert sum(r["verdict"] == "holds" for r in rows) == held
        assert sum(r["verdict"] in ("holds", "does not hold") for r in rows) == measured


def test_every_row_of_the_24_prompt_study_has_a_cell_to_be_compared_with():
    """The 24-prompt study's combined summaries named the few-shot claim of person_plays_pro_sport by the name
    inside its LRE file ("plays pro sport"); the renderer maps that name to the relation's folder, so that the
    full study compares every one of its rows (none left "not in this study" by a name)."""
    aliases = study.relation_aliases(study.RELATIONS)
    assert aliases["plays_pro_sport"] == "person_plays_pro_sport"
    folders = {study.slug(r) for r in study.RELATIONS} | set(aliases)
    baseline = {r["relation"] for r in study.load_baseline(study.BASELINE)["rows"]}
    # every row of the 24-prompt study has a cell; relations added since (the year relations) have no row there
    assert baseline <= folders and "person_plays_pro_sport" in baseline | set(aliases.values())
    assert {"presidents_birth_year", "presidents_election_year"} <= folders - baseline


def test_a_few_shot_row_named_by_its_relation_file_is_compared(study_dir, tmp_path):
    """A relation file whose "name" differs from its file's stem: the baseline's few-shot row under that name is
    compared with the sweep's row under the folder (not counted as missing)."""
    relation = tmp_path / "country_language.json"
    relation.write_text(json.dumps({"name": "official language of"}))
    baseline = {
        "source": {"file": "docs/study.md", "commit": "0" * 40, "note": "n"},
        "max_prompts": 24,
        "claims": {"C6": C_SHOTS},
        "rows": [baseline_row("recallscope", "official_language_of", "0→3", "C6", "holds")],  # now does not hold
    }
    path = tmp_path / "study-24.json"
    path.write_text(json.dumps(baseline))
    doc, _ = render(study_dir, tmp_path, str(path), relations=[RELATIONS[0], str(relation)])
    assert "of 1 verdicts compared, 0 are unchanged, 0 turned inconclusive, 1 flipped" in doc
    assert "- C6 · m1 · recallscope · official_language_of · 0→3: holds" in doc and "not in this study" not in doc


def test_the_run_time_counts_the_rendered_sweeps_and_says_which_attempts_failed(study_dir, tmp_path):
    record = json.loads((study_dir / "study.json").read_text())
    extra = dict(record["attempts"][0], wall_s=1800.0, start="2026-11-30T10:00:00+00:00", end="2026-11-30T10:30:00+00:00")
    record["attempts"] += [
        {**extra, "relation": "city_in_country"},  # a relation this rendering leaves out: not counted
        {**extra, "model": "m2"},  # a model it leaves out
        {**extra, "returncode": 2, "wall_s": 60.0},  # counted, and said to have failed
    ]
    (study_dir / "study.json").write_text(json.dumps(record))
    doc, _ = render(study_dir, tmp_path)
    assert (
        "3 sweep attempt(s) took 21 min of wall time in all (m1 21 min; 1 attempt(s) failed, 1 min of it), between "
        "2026-11-30T09:00:00+00:00 and 2026-11-30T10:30:00+00:00 (UTC)"
    ) in doc
    assert "city_in_country" not in doc and "| m2 |" not in doc


def test_prompt_counts_are_whole_numbers():
    """Prompts needed print whole, with separators (3 significant digits gave "1.94e+03")."""
    assert (study.prompts(1944), study.prompts(982.5), study.prompts(83653711), study.prompts(None)) == (
        "1,944",
        "982",
        "83,653,711",
        "—",
    )
    row = {"verdict": "inconclusive", "prompts_needed": 1944, "prompts_available": 183}
    assert study.needed_text(row, short=True) == "≈1,944 > 183"
    assert study.needed_text(row) == "≈ 1,944 known prompts would decide it — more than the relation can give (≈ 183)"
    assert study.needed_text({**row, "prompts_available": 1944}, short=True) == "≈1,944"


def test_claims_are_labelled_by_their_ids_whatever_the_runs_hold(study_dir, tmp_path):
    """The study's C-numbers are the claims' ids (recallscope.verdicts.IDS), as the report and the terminal give
    them: the rows across shot counts about what demonstrations change are C10 and C11 though they come fourth
    and fifth here (positions numbered them C7 and C8 before, while the text called them C10 and C11)."""
    from recallscope.onset import CLAIM_DOMAIN_EARLIER, CLAIM_MOVE_EARLIER

    path = study_dir / "m1" / "recallscope" / "paper_country_capital"
    combined = RunDir(path).summary()
    combined["claims"] += [{**combined["claims"][0], "claim": c} for c in (CLAIM_MOVE_EARLIER, CLAIM_DOMAIN_EARLIER)]
    RunDir(path).write_summary(combined)
    doc, _ = render(study_dir, tmp_path)
    assert [line.split("**")[1] for line in doc.splitlines() if line.startswith("- **C")] == ["C1", "C4", "C6", "C10", "C11"]
    assert f"- **C10** — {CLAIM_MOVE_EARLIER}" in doc and "| C10 | 1 · 0 · 0 · 0 | 0 · 0 · 0 · 0, 1 not run |" in doc
    assert "C7" not in doc and "C8" not in doc


def test_the_default_is_every_prompt():
    assert study.parse([]).max_prompts == "all" == study.MAX_PROMPTS
    assert study.parse(["--max-prompts", "16"]).max_prompts == 16
    with pytest.raises(SystemExit):
        study.parse(["--max-prompts", "0"])


def test_the_grid_shows_the_deciding_statistic(study_dir, tmp_path):
    """Issue 28's case: C1's primary figure is 1 [1, 1] but the scatter r decides; the grid shows what decided,
    the detail table both, labelled."""
    cell = RunDir(study_dir / "m1" / "recallscope" / "paper_country_capital" / "paper_country_capital" / "0shot")
    table = cell.read_table("claims")
    table.loc[0, ["value", "ci_low", "ci_high", "verdict"]] = [1.0, 1.0, 1.0, "does not hold"]
    table.loc[0, ["decided_by", "decided_value", "decided_ci_low", "decided_ci_high"]] = ["scatter r", 0.25, 0.125, 0.375]
    cell.write_tables("claims", {"claims": table})
    doc, _ = render(study_dir, tmp_path)
    assert "| paper_country_capital | 0 | 10/32 | 4 | ✗ 0.25 [0.125, 0.375] | ✓ -1.25 [-2.5, -0.125] |" in doc
    assert "| L23H4 | 1 | [1, 1] | scatter r = 0.25 [0.125, 0.375] | 0.5 |" in doc


def test_missing_markers_are_an_error(study_dir, tmp_path):
    with pytest.raises(SystemExit, match="markers"):
        study.replace_block("no markers here", "block")


def test_the_sweep_command_is_one_run_per_model_and_preset():
    cmd = study.sweep_command(
        "gemma3-270m",
        "paper",
        RELATIONS[1:],
        [0, 1, 3],
        "all",
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
        "all",
        "--no-report",
        "--out",
        "runs/study/gemma3-270m/paper/country_language",
        "--json",
        "--set",
        "suppress.modes=zero",
    ]
    assert study.slug("lre/country_language") == study.slug("data/country_language.json") == "country_language"


def test_numerical_facts_are_set_beside_categorical_ones(study_dir, tmp_path):
    """The paper's open question (do its mechanisms hold for numerical facts?): the numerical relations'
    counts beside the categorical ones', per claim and model · preset, with how the years were scored."""
    rule = "π(answer) = Σ_t π(y_t) of the answer's tokens after the relation's shared prefix, teacher-forced"
    for preset, figures in (("recallscope", (0.2, 0.1, 0.3, "does not hold", -0.2)), ("paper", None)):
        for k in SHOTS:
            cell = RunDir(study_dir / "m1" / preset / "presidents_birth_year" / "presidents_birth_year" / f"{k}shot")
            cell.create()
            summary = {"model": "m1", "n_prompts": 19, "n_known": 4 + k, "stages": {"recall": {"answer_metric_rule": rule}}}
            if figures is None:
                summary["not_measurable"] = {"claims": {"reason": "too few known prompts"}}
            else:  # C1 fails at 0 shots and is inconclusive at 3; C4 holds at both
                c1 = figures if k == 0 else (0.45, 0.3, 0.6, "inconclusive", -0.05, 60)
                rows = [
                    claim_row(C_MOVERS, *c1[:5], RULES[C_MOVERS], None, *c1[5:]),
                    claim_row(C_SUPPRESS, -1.0, -1.5, -0.5, "holds", 0.5, RULES[C_SUPPRESS]),
                ]
                cell.write_tables("claims", {"claims": pd.DataFrame(rows)})
                summary["stages"]["claims"] = {"claims": rows}
            cell.write_summary(summary)
        # the combined summary names the relation as its file does (president_birth_year), not by its folder
        combined = {"model": "m1", "runs": [{"path": "x"}]}
        if figures is not None:
            combined["claims"] = [{**claim_row(C_SHOTS, 0.9, 0.8, 0.95, "holds", 0.3, "r"), "relation": "president_birth_year"}]
        RunDir(study_dir / "m1" / preset / "presidents_birth_year").write_summary(combined)
    doc, _ = render(study_dir, tmp_path, relations=[*RELATIONS, "lre/presidents_birth_year"])
    section = doc.split("## Numerical facts against categorical ones")[1].split("\n## ")[0]
    assert "numerical relations are presidents_birth_year" in section and rule in section
    assert "Known prompts per cell: numerical 4–7, categorical 1–13." in section
    rows = [line for line in section.splitlines() if line.startswith("| C")]
    assert rows == [
        "| C1 | m1 · recallscope | 0 · 1 · 1 · 0 (≈ 60) | 2 · 0 · 1 · 1 (≈ 140) |",
        "| C1 | m1 · paper | 0 · 0 · 0 · 2 | 1 · 2 · 0 · 1 |",
        "| C4 | m1 · recallscope | 2 · 0 · 0 · 0 | 1 · 2 · 0 · 1 |",
        "| C4 | m1 · paper | 0 · 0 · 0 · 2 | 2 · 1 · 1 · 0 (≈ 300) |",
        "| C6 | m1 · recallscope | 1 · 0 · 0 · 0 | 1 · 1 · 0 · 0 |",
        "| C6 | m1 · paper | — | 1 · 0 · 0 · 0, 1 not run |",
    ]
    assert (
        "In all claims: on the numerical relations, of 5 measured verdicts 3 hold, 1 do not hold and 1 are "
        "inconclusive; 4 are not measurable; on the categorical relations, of 16 measured verdicts 8 hold, 6 do not "
        "hold and 2 are inconclusive; 3 are not measurable and 1 not run yet."
    ) in section
    # without a numerical relation (or without a categorical one) there is no such section
    doc, _ = render(study_dir, tmp_path)
    assert "## Numerical facts" not in doc
    _, readme = render(study_dir, tmp_path, relations=[*RELATIONS, "lre/presidents_birth_year"])
    assert "Numerical facts (years) against categorical ones — in all claims: on the numerical relations, of 5" in readme


def test_the_study_runs_the_default_stages_and_surgery_with_every_setting_explained():
    """The study's stages are the run's defaults plus surgery (C9), in pipeline order, and each setting it
    passes to every sweep says why in docs/study.md; each one is a setting the stages accept."""
    from recallscope import pipeline
    from recallscope.cli import _parse_set

    stages = study.STAGES.split(",")
    assert [s for s in pipeline.STAGES if s in stages] == stages
    assert set(stages) == {*pipeline.default_stages(), "surgery"}
    assert set(study.SETTING_WHY) == set(study.STUDY_SETTINGS)
    configs = pipeline.make_configs(_parse_set(list(study.STUDY_SETTINGS)))
    assert configs["surgery"].max_prompts == study.SURGERY_PROMPTS and configs["surgery"].scopes == ("end",)
    args = study.parse(["--render-only"])
    assert args.stages == study.STAGES and study.study_command(args) == "python scripts/study.py --max-prompts all"
    text = study.sample_sizes([], args)
    assert f"Stages: `{study.STAGES}`" in text and "`--set surgery.max_prompts=32` (C9 on a seeded draw of at most 32" in text


def c9_measured_once(study_dir: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """C9 (surgery's claim) holds in one cell (recallscope, paper_country_capital, 0 shots) and is absent from
    the others' claims tables; the rendered doc and its summary row for C9."""
    cell = RunDir(study_dir / "m1" / "recallscope" / "paper_country_capital" / "paper_country_capital" / "0shot")
    c9 = "Ablating the mover heads hurts recall more than ablating matched random heads"
    row = pd.DataFrame([claim_row(c9, 0.1, 0.05, 0.2, "holds", 0.05, "r")])
    cell.write_tables("claims", {"claims": pd.concat([cell.read_table("claims"), row])})
    doc, _ = render(study_dir, tmp_path)
    summary = doc.split("## Summary")[1].split("| claim | model")[0].splitlines()
    return doc, [line for line in summary if line.startswith("| C9")]


def test_a_claim_whose_stage_has_not_run_in_a_cell_is_not_run_there(study_dir, tmp_path):
    """A stage the study added later (surgery: C9) shows as not run in the cells measured before it,
    not as missing or not measurable."""
    doc, table = c9_measured_once(study_dir, tmp_path)
    assert table == ["| C9 | 1 · 0 · 0 · 1, 2 not run | 0 · 0 · 0 · 0, 4 not run |"]  # (language, 0): no claims table
    assert "| paper_country_capital | 3 | 13/32 | 4 | ? 0.431 [0.25, 0.55] ≈140 > 100 | ✗ 2.5 [1.75, 3.25] | not run |" in doc


def test_a_claim_whose_stage_was_not_measurable_in_a_cell_is_not_measurable_there(study_dir, tmp_path):
    """gemma3-270m · paper · country_capital_city at 3 shots knows no prompt: surgery was not measurable
    there, and C9 (absent from its claims table) counts as n/m, not as not run."""
    cell = RunDir(study_dir / "m1" / "paper" / "paper_country_capital" / "paper_country_capital" / "0shot")
    summary = cell.summary()
    cell.write_summary({**summary, "not_measurable": {"surgery": {"reason": "needs movers, which is not measurable here"}}})
    doc, table = c9_measured_once(study_dir, tmp_path)
    assert table == ["| C9 | 1 · 0 · 0 · 1, 2 not run | 0 · 0 · 0 · 1, 3 not run |"]
    assert "| paper_country_capital | 0 | 10/32 | 4 | ✗ 0.333 [0.125, 0.5] | ✓ -1.5 [-2.75, -0.5] | n/m |" in doc
