"""Every claim's rule on the two control models (recallscope.models.controls): on ``planted``,
where each mechanism of the paper is built in with known parameters, every claim holds — at 0
and 3 shots, and the few-shot claim across them — and the stages recover the planted numbers;
on ``random`` (same shape, random weights) no claim holds.

The same as ``recallscope run --model planted --relation paper_country_capital --shots 0,3``
and ``recallscope run --model random ... --set recall.known_top_k=49152`` (60 prompts here, to
keep CI short).
"""

from __future__ import annotations

import json

import pytest

from recallscope import cli, pipeline
from recallscope.claims import (
    CLAIM_INTERCEPT,
    CLAIM_MITIGATE,
    CLAIM_MLP,
    CLAIM_MOVERS,
    CLAIM_SHOTS,
    CLAIM_SUPPRESS,
    FAILS,
    HOLDS,
    NOT_MEASURABLE,
)
from recallscope.causal_trace import CLAIM_MLP_PEAK
from recallscope.knockout import CLAIM_READS_SUBJECT
from recallscope.models import controls
from recallscope.rundir import RunDir

PLANTED = controls.PLANTED
RELATION = PLANTED["relation"]
SHOTS = [0, 3]
PER_RUN = [CLAIM_MOVERS, CLAIM_MLP, CLAIM_INTERCEPT, CLAIM_SUPPRESS, CLAIM_MITIGATE, CLAIM_SHOTS]


def _sweep(model: str, out, **settings) -> dict:
    base = pipeline.RunConfig(model=model, max_prompts=60)
    return pipeline.execute_many(
        base, [RELATION], SHOTS, pipeline.default_stages(), out=str(out), overrides=settings, progress=False
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    return out, _sweep("planted", out)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("random")
    # the random model knows no fact: every prompt is kept (known_top_k = V) so that every stage runs
    return out, _sweep("random", out, **{"recall.known_top_k": 49152})


def _verdicts(run: dict) -> dict:
    return {c["claim"]: c["verdict"] for c in run["claims"]}


def test_planted_every_claim_holds_at_every_shot_count(planted):
    _, summary = planted
    for run in summary["runs"]:
        assert run["n_known"] == run["n_prompts"] == 60, run["shots"]
        verdicts = _verdicts(run)
        assert list(verdicts) == PER_RUN
        assert all(verdicts[c] == HOLDS for c in PER_RUN[:-1]), (run["shots"], verdicts)
        assert verdicts[CLAIM_SHOTS] == NOT_MEASURABLE  # needs two shot counts: the sweep's row below
        assert all(c["margin"] > 0 and c["flips_at"] is not None for c in run["claims"][:-1])
    [shots] = summary["claims"]
    assert shots["claim"] == CLAIM_SHOTS and shots["verdict"] == HOLDS and shots["relation"] == RELATION
    assert shots["ci_low"] > shots["threshold"] == shots["null_overlap"]


def test_planted_numbers_are_recovered_and_named(planted):
    out, summary = planted
    for run in summary["runs"]:
        rows = {c["claim"]: c for c in run["claims"]}
        assert rows[CLAIM_MOVERS]["about"] == PLANTED["mover"] and rows[CLAIM_MOVERS]["patch_rank"] == 1
        assert run["stages"]["movers"]["movers"] == [PLANTED["mover"]]
        assert rows[CLAIM_SUPPRESS]["about"] == PLANTED["suppressor"] and rows[CLAIM_MITIGATE]["about"] == PLANTED["suppressor"]
        assert rows[CLAIM_MLP]["about"] == f"MLP{PLANTED['mlp_layer']}"
        assert (rows[CLAIM_MLP]["n_amplified"], rows[CLAIM_MLP]["n_attenuated"], rows[CLAIM_MLP]["n_reversed"]) == (1, 1, 1)
        table = RunDir(out / run["path"]).read_table("decompose").set_index("regressor")
        for head, c in PLANTED["coefficients"].items():
            assert abs(table.loc[head, "coef"] - c) < 1e-3, (run["shots"], head)
            assert table.loc[head, "ci_low"] <= c <= table.loc[head, "ci_high"] or abs(table.loc[head, "ci_low"] - c) < 1e-3
        assert not table.loc["L1H3", "identifiable"]  # writes nothing: not counted as erased


def test_random_no_claim_holds(random_run):
    _, summary = random_run
    for run in summary["runs"]:
        assert run["n_known"] == 60 and run["accuracy"] == 0.0
        verdicts = _verdicts(run)
        assert all(v in (FAILS, NOT_MEASURABLE) for v in verdicts.values()), (run["shots"], verdicts)
        assert all(verdicts[c] == FAILS for c in PER_RUN[:-1])
        rows = {c["claim"]: c for c in run["claims"]}
        # what the floors are for: a final-layer push of hundredths of a logit, a rise of p(Y) of ~1e-6
        assert -0.1 < rows[CLAIM_SUPPRESS]["value"] < 0.1 and rows[CLAIM_SUPPRESS]["margin"] < 0
        assert abs(rows[CLAIM_MITIGATE]["value"]) < 1e-3 and rows[CLAIM_MITIGATE]["margin"] < 0
    assert [c["verdict"] for c in summary["claims"]] == [FAILS]


def test_claims_verb_reevaluates_a_run_and_lists_where_verdicts_flip(planted, capsys):
    out, summary = planted
    cli.main(["claims", str(out), "--sensitivity", "--json"])
    got = json.loads(capsys.readouterr().out)
    assert [r["shots"] for r in got["runs"]] == SHOTS
    first = got["runs"][0]
    assert [c["verdict"] for c in first["claims"]] == [c["verdict"] for c in summary["runs"][0]["claims"]]
    rows = [r for r in first["sensitivity"] if r["claim"] == CLAIM_SUPPRESS]
    floor = next(r for r in rows if r["setting"] == "claims.min_suppression_logits")
    assert floor["holds"] and floor["flips_at"] == pytest.approx(-floor["statistic"])
    # raising the floor past flips_at flips the verdict
    cli.main(["claims", str(out), "--json", "--set", f"claims.min_suppression_logits={floor['flips_at'] + 0.01}"])
    again = json.loads(capsys.readouterr().out)
    assert {c["claim"]: c["verdict"] for c in again["runs"][0]["claims"]}[CLAIM_SUPPRESS] == FAILS
    assert got["shot_claims"][0]["verdict"] == HOLDS


def test_claims_table_names_the_condition_its_margin_belongs_to(planted, capsys, monkeypatch):
    """The terminal table's threshold, margin and flips-at are the deciding condition's: the
    "decided by" column names it for every measured row."""
    out, _ = planted
    cli.main(["claims", str(out), "--json"])
    rows = json.loads(capsys.readouterr().out)["runs"][0]["claims"]
    deciders = {c["decided_by"] for c in rows if c["verdict"] != NOT_MEASURABLE}
    assert None not in deciders and len(deciders) >= 3
    monkeypatch.setenv("COLUMNS", "2000")  # one line per row
    cli.main(["claims", str(out), "--wide"])  # a sweep prints its grid; --wide adds each cell's full table
    table = capsys.readouterr().out
    assert "decided by" in table and all(name in table for name in deciders), deciders


def test_claims_write_refreshes_a_run_with_its_own_settings(planted, tmp_path, capsys):
    """``claims RUN_DIR --write`` rewrites each run's claims tables and summaries and the sweep's parent
    summary from the run's files, with the claims settings in the run's manifest (a run made before
    a change of the claim rules); ``--write`` with ``--set`` is refused."""
    import shutil

    out, summary = planted
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    sub = copy / summary["runs"][0]["path"]
    # a stale table (as an older version's rules would have left it) and a recorded floor above the
    # suppression's interval: the rewrite must use the run's own settings
    stale = RunDir(sub).read_table("claims")
    stale["margin"] = 123.0
    RunDir(sub).write_tables(
        "claims", {"claims": stale, **{k: v for k, v in RunDir(sub).read_tables("claims").items() if k != "claims"}}
    )
    manifest = json.loads((sub / "manifest.json").read_text())
    statistic = next(c for c in summary["runs"][0]["claims"] if c["claim"] == CLAIM_SUPPRESS)["ci_high"]
    manifest["stage_configs"]["claims"]["min_suppression_logits"] = -statistic + 0.01
    (sub / "manifest.json").write_text(json.dumps(manifest))
    cli.main(["claims", str(copy), "--write", "--json"])
    got = json.loads(capsys.readouterr().out)
    table = RunDir(sub).read_table("claims")
    assert 123.0 not in set(table["margin"])
    verdicts = dict(zip(table["claim"], table["verdict"], strict=True))
    assert verdicts[CLAIM_SUPPRESS] == FAILS  # the run's recorded floor, not the default
    assert verdicts == {c["claim"]: c["verdict"] for c in got["runs"][0]["claims"]}
    written = RunDir(sub).summary()
    assert written["claims"] == written["stages"]["claims"]["claims"] and "wall_seconds" in written["stages"]["claims"]
    parent = RunDir(copy).summary()
    assert {c["claim"]: c["verdict"] for c in parent["runs"][0]["claims"]}[CLAIM_SUPPRESS] == FAILS
    assert parent["claims"][0]["verdict"] == HOLDS  # the few-shot claim across shot counts
    with pytest.raises(SystemExit) as exc:
        cli.main(["claims", str(copy), "--write", "--set", "claims.min_suppression_logits=0.2"])
    assert exc.value.code == 2 and "--write keeps the run's claims settings" in capsys.readouterr().err
    # a cell without a patch table: the few-shot claim compares the shot counts the sweep asked for
    # (not measurable, as the sweep itself decides), not the fewest and most that happen to remain
    RunDir(sub).table_path("patch").unlink()
    got = pipeline.claims_of_rundir(str(copy))
    assert [c["verdict"] for c in got["shot_claims"]] == [NOT_MEASURABLE]


@pytest.mark.parametrize(("model", "settings"), [("planted", {}), ("random", {"recall.known_top_k": 49152})])
def test_trace_and_knockout_rows_on_the_controls(model, settings, tmp_path):
    """The other localisations' rows on the controls (windows of 1 layer: the controls have 3).
    ``planted`` moves the subject with L1H0, so blocking the last position's edges to the subject
    in layer 1 removes the fact (knockout holds); it stores no fact in MLP states at the subject,
    so causal tracing's MLP peak is nil (does not hold). ``random``: the trace peak is ~1e-9 of
    probability, under the 0.01 floor (it said *holds* before the floor); knockout is measured at the
    layers of the heads patching singles out (the movers claim's heads) and its dip is under the
    10% floor (does not hold)."""
    _, summary = pipeline.execute(
        pipeline.RunConfig(model=model, relation=RELATION, max_prompts=20),
        [*pipeline.default_stages(), "trace", "knockout"],
        out=str(tmp_path),
        overrides={"trace.window": 1, "knockout.window": 1, **settings},
        progress=False,
    )
    rows = {c["claim"]: c for c in summary["claims"]}
    trace_row, knockout_row = rows[CLAIM_MLP_PEAK], rows[CLAIM_READS_SUBJECT]
    assert trace_row["verdict"] == FAILS and trace_row["value"] < 1e-6 and trace_row["margin"] < 0
    if model == "planted":
        assert knockout_row["verdict"] == HOLDS and knockout_row["value"] < -90
        assert knockout_row["about"] == "layers 1..1"
    else:
        assert knockout_row["verdict"] == FAILS, knockout_row["detail"]
        assert knockout_row["margin"] < 0 and abs(knockout_row["value"]) < 10
