"""Every claim's rule on the two control models (recallscope.models.controls), under both presets
(recallscope's definitions and the paper's): on ``planted``, where each mechanism of the paper is
built in with known parameters, every claim holds — at 0 and 3 shots, and the few-shot claim across
them — and the stages recover the planted numbers (but the rows about what demonstrations change, C10 and
C11: no demonstration mechanism is planted, tests/test_onset.py); on ``random`` (same shape, random weights) every
measurable claim *does not hold*: its evidence lies wholly on the failing side of a threshold (an
effect-size floor or a null), not merely inconclusive (module docstring of recallscope.claims,
"Controls").

The same as ``recallscope run --model planted --relation paper_country_capital --shots 0,3
[--preset paper]`` and ``recallscope run --model random ... --set recall.known_top_k=49152`` (60
prompts here, to keep CI short).
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
    FAILED,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MET,
    NOT_MEASURABLE,
    ClaimsConfig,
    shot_claim,
)
from recallscope.causal_trace import CLAIM_MLP_PEAK
from recallscope.knockout import CLAIM_READS_SUBJECT
from recallscope.surgery import CLAIM_NECESSARY
from recallscope.models import controls
from recallscope.onset import CLAIM_DOMAIN_EARLIER, CLAIM_MOVE_EARLIER
from recallscope.rundir import RunDir

PLANTED = controls.PLANTED
RELATION = PLANTED["relation"]
SHOTS = [0, 3]
PER_RUN = [CLAIM_MOVERS, CLAIM_MLP, CLAIM_INTERCEPT, CLAIM_SUPPRESS, CLAIM_MITIGATE, CLAIM_SHOTS]
PRESETS = ["recallscope", "paper"]


def _sweep(model: str, out, preset: str, **settings) -> dict:
    base = pipeline.RunConfig(model=model, max_prompts=60, preset=preset)
    return pipeline.execute_many(
        base, [RELATION], SHOTS, pipeline.default_stages(), out=str(out), overrides=settings, progress=False
    )


@pytest.fixture(scope="module", params=PRESETS)
def planted(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"planted-{request.param}")
    return out, _sweep("planted", out, request.param)


@pytest.fixture(scope="module", params=PRESETS)
def random_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"random-{request.param}")
    # the random model knows no fact: every prompt is kept (known_top_k = V) so that every stage runs
    return out, _sweep("random", out, request.param, **{"recall.known_top_k": 49152})


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
        # 60 of the relation's 225 prompts, every one known: the relation can give 225
        assert all(c["prompts_needed"] is None and c["prompts_available"] == 225 for c in run["claims"][:-1])
    shots = summary["claims"][0]  # then C10 and C11 (the onset stage's rows: tests/test_onset.py)
    assert shots["claim"] == CLAIM_SHOTS and shots["verdict"] == HOLDS and shots["relation"] == RELATION
    assert shots["ci_low"] > shots["null_overlap"]


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


# Per claim on the random model: the condition whose interval lies wholly on the failing side, and why
# that is evidence of absence (claims module docstring, "Controls"): an effect-size floor or a null.
RANDOM_DECIDED_BY = {
    CLAIM_MOVERS: "OV top-5 share of X",  # a share with a Clopper–Pearson interval vs movers.min_ov_top5_share
    CLAIM_MLP: "held-out gain over the intercept-only model",  # floor claims.min_heldout_gain
    CLAIM_SUPPRESS: "mean DLA to Y (logits)",  # floor claims.min_suppression_logits
    CLAIM_MITIGATE: "Δp(Y) on held-out known prompts",  # floor claims.min_mitigation_delta_p
}


def test_random_every_measurable_claim_does_not_hold(random_run):
    """Not merely "not holds": every measurable claim is *does not hold*, each decided by a condition
    whose whole interval lies on the failing side of its floor or null (none is inconclusive)."""
    _, summary = random_run
    for run in summary["runs"]:
        assert run["n_known"] == 60 and run["accuracy"] == 0.0
        verdicts = _verdicts(run)
        assert all(v in (FAILS, NOT_MEASURABLE) for v in verdicts.values()), (run["shots"], verdicts)
        assert all(verdicts[c] == FAILS for c in PER_RUN[:-1])
        rows = {c["claim"]: c for c in run["claims"]}
        for claim, decider in RANDOM_DECIDED_BY.items():
            assert rows[claim]["decided_by"].startswith(decider), (claim, rows[claim]["decided_by"])
        # C3: b redirects on about half the prompts (chance: the 0.5 threshold), so the answer-domain share of b's
        # top tokens against the random-direction null decides
        assert rows[CLAIM_INTERCEPT]["answer_domain_share"] <= rows[CLAIM_INTERCEPT]["answer_domain_random_high"]
        # what the floors are for: a final-layer push of hundredths of a logit, a rise of p(Y) of ~1e-6,
        # each with its whole interval on the failing side
        assert -0.1 < rows[CLAIM_SUPPRESS]["decided_ci_low"] <= rows[CLAIM_SUPPRESS]["decided_ci_high"] < 0
        assert rows[CLAIM_MITIGATE]["decided_ci_high"] < 1e-3 and rows[CLAIM_MITIGATE]["margin"] < 0
        assert rows[CLAIM_MLP]["decided_ci_high"] <= 0.05
    assert [c["verdict"] for c in summary["claims"]] == [FAILS] * 3  # C6, C10, C11


def test_random_few_shot_claim_fails_on_its_floor(random_run):
    """The few-shot claim on the random control: random heads keep similar sizes across shot counts (the
    top-3 overlap can straddle chance), but no head moves π(Y) by a tenth of a logit: the floor fails,
    under both presets, whatever the overlap says."""
    out, summary = random_run
    tables = {run["shots"]: RunDir(out / run["path"]).read_table("patch") for run in summary["runs"]}
    claim = shot_claim(RELATION, (0, tables[0]), (3, tables[3]), ClaimsConfig(seed=summary["runs"][0]["seed"]))
    overlap, floor = claim.conditions
    assert floor.setting == "claims.min_head_effect_logits" and floor.state() == FAILED and floor.high < 0.1
    assert claim.verdict == FAILS == summary["claims"][0]["verdict"]


def test_random_sensitivity_has_a_failed_condition_per_claim(random_run, capsys):
    out, _ = random_run
    cli.main(["claims", str(out), "--sensitivity", "--json"])
    got = json.loads(capsys.readouterr().out)
    for run in got["runs"]:
        states = {}
        for r in run["sensitivity"]:
            states.setdefault(r["claim"], []).append(r["state"])
        assert set(states) == set(PER_RUN[:-1]) and all(FAILED in s for s in states.values()), states


def test_claims_verb_reevaluates_a_run_and_lists_where_verdicts_flip(planted, capsys):
    out, summary = planted
    cli.main(["claims", str(out), "--sensitivity", "--json"])
    got = json.loads(capsys.readouterr().out)
    assert [r["shots"] for r in got["runs"]] == SHOTS
    first = got["runs"][0]
    assert [c["verdict"] for c in first["claims"]] == [c["verdict"] for c in summary["runs"][0]["claims"]]
    rows = [r for r in first["sensitivity"] if r["claim"] == CLAIM_SUPPRESS]
    floor = next(r for r in rows if r["setting"] == "claims.min_suppression_logits")
    assert floor["state"] == MET and floor["flips_at"] == pytest.approx(-floor["statistic"]) == pytest.approx(floor["met_at"])
    # raising the floor past flips_at puts it inside the interval (inconclusive), past failed_at beyond it (does not hold)
    for value, verdict in ((floor["flips_at"] + 0.01, INCONCLUSIVE), (floor["failed_at"] + 0.01, FAILS)):
        cli.main(["claims", str(out), "--json", "--set", f"claims.min_suppression_logits={value}"])
        again = json.loads(capsys.readouterr().out)
        assert {c["claim"]: c["verdict"] for c in again["runs"][0]["claims"]}[CLAIM_SUPPRESS] == verdict
    assert got["shot_claims"][0]["verdict"] == HOLDS


def test_every_setting_sensitivity_names_is_taken_by_claims_set(planted, capsys):
    """Issue 28's report: ``--sensitivity`` named ``movers.min_ov_top5_share``, which ``claims --set`` refused.
    Every setting it names is accepted and re-evaluates the rules from the files (the movers stage is
    not re-run: its summary on disk is unchanged)."""
    out, summary = planted
    cli.main(["claims", str(out), "--sensitivity", "--json"])
    rows = json.loads(capsys.readouterr().out)["runs"][0]["sensitivity"]
    named = {r["setting"] for r in rows if r["setting"] is not None}
    assert "movers.min_ov_top5_share" in named and len(named) >= 8
    for setting in named:
        value = next(r for r in rows if r["setting"] == setting)["setting_value"]
        cli.main(["claims", str(out), "--json", "--set", f"{setting}={value}"])
        assert json.loads(capsys.readouterr().out)["runs"][0]["claims"], setting
    # the reported setting: 60 of 60 prompts rank X top-5, Clopper–Pearson [0.940, 1]
    ov = next(r for r in rows if r["setting"] == "movers.min_ov_top5_share")
    for value, verdict in ((0.9, HOLDS), (0.97, INCONCLUSIVE)):
        cli.main(["claims", str(out), "--json", "--sensitivity", "--set", f"movers.min_ov_top5_share={value}"])
        again = json.loads(capsys.readouterr().out)["runs"][0]
        movers_row = next(c for c in again["claims"] if c["claim"] == CLAIM_MOVERS)
        assert movers_row["verdict"] == verdict and f"movers.min_ov_top5_share = {value:g}" in movers_row["rule"]
        assert next(r for r in again["sensitivity"] if r["setting"] == "movers.min_ov_top5_share")["threshold"] == value
    assert ov["ci_low"] == pytest.approx(0.9403705, abs=1e-6)
    recorded = RunDir(out / summary["runs"][0]["path"]).summary()["stages"]["movers"]["thresholds"]
    assert recorded["min_ov_top5_share"] == 0.5  # nothing written
    with pytest.raises(SystemExit) as exc:
        cli.main(["claims", str(out), "--set", "movers.top_k=3"])
    assert exc.value.code == 2 and "thresholds of other stages its rules read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # checked as --set is: a share above 1 is refused
        cli.main(["claims", str(out), "--set", "movers.min_ov_top5_share=2"])
    assert exc.value.code == 2


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
    # a stale table (as an older version's rules would have left it) and a recorded floor beyond the whole
    # suppression interval: the rewrite must use the run's own settings
    stale = RunDir(sub).read_table("claims")
    stale["margin"] = 123.0
    RunDir(sub).write_tables(
        "claims", {"claims": stale, **{k: v for k, v in RunDir(sub).read_tables("claims").items() if k != "claims"}}
    )
    manifest = json.loads((sub / "manifest.json").read_text())
    far_end = next(c for c in summary["runs"][0]["claims"] if c["claim"] == CLAIM_SUPPRESS)["ci_low"]
    manifest["stage_configs"]["claims"]["min_suppression_logits"] = -far_end + 0.01
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
    # C6 not measurable; C10 and C11 read the onset tables, not the patch table (planted: a zero shift, failed)
    assert [c["verdict"] for c in got["shot_claims"]] == [NOT_MEASURABLE, FAILS, FAILS]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("model", "settings"), [("planted", {}), ("random", {"recall.known_top_k": 49152})])
def test_trace_and_knockout_rows_on_the_controls(model, settings, preset, tmp_path):
    """The other localisations' rows on the controls (windows of 1 layer: the controls have 3), both presets.
    ``planted`` moves the subject with L1H0, so blocking the last position's edges to the subject
    in layer 1 removes the fact (knockout holds); it stores no fact in MLP states at the subject,
    so causal tracing's MLP peak is nil (does not hold: ROME's mechanism is not one the control plants).
    ``random``: the trace peak is ~1e-9 of probability, its whole interval under the 0.01 floor (it said
    *holds* before the floor); knockout is measured at the layers of the heads patching singles out
    (the movers claim's heads) and its dip's whole interval is above the −10% floor (does not hold)."""
    _, summary = pipeline.execute(
        pipeline.RunConfig(model=model, relation=RELATION, max_prompts=20, preset=preset),
        [*pipeline.default_stages(), "trace", "knockout"],
        out=str(tmp_path),
        overrides={"trace.window": 1, "knockout.window": 1, **settings},
        progress=False,
    )
    rows = {c["claim"]: c for c in summary["claims"]}
    trace_row, knockout_row = rows[CLAIM_MLP_PEAK], rows[CLAIM_READS_SUBJECT]
    assert trace_row["verdict"] == FAILS and trace_row["value"] < 1e-6 and trace_row["margin"] < 0
    assert trace_row["decided_ci_high"] < 0.01 and trace_row["prompts_used"] == 20
    if model == "planted":
        assert knockout_row["verdict"] == HOLDS and knockout_row["value"] < -90
        assert knockout_row["about"] == "layers 1..1"
    else:
        assert knockout_row["verdict"] == FAILS, knockout_row["detail"]
        assert knockout_row["margin"] < 0 and abs(knockout_row["value"]) < 10
        assert knockout_row["decided_by"] == "lowest mean change of p(Y) (%)" and knockout_row["decided_ci_low"] > -10


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("model", "settings"), [("planted", {}), ("random", {"recall.known_top_k": 49152})])
def test_surgery_row_on_the_controls(model, settings, preset, tmp_path):
    """The surgery row (ablating the movers claim's heads against random head sets of their size), both
    presets (the movers claim's heads come from total-effect patching, or path patching under ``paper``).
    ``planted``: its heads hold the planted mover L1H0, so ablating them at the end position removes the
    fact (p(Y) drops by ~0.8) while no other set of three heads moves p(Y) by 1e-3: holds, every null set
    below the movers (p at its smallest, 1 / (1 + n), with both nulls exhaustive: 3 layer-matched sets,
    84 norm-matched). ``random``: p(Y) ≈ 1/V, so the movers' drop is < 1e-6 of probability, its whole
    interval under the 0.01 floor: does not hold, decided by the floor (not merely inconclusive; the
    excess over the null can be "met" there at the 1e-7 scale: the heads patching picks are the ones
    that move p(Y) most, by nothing)."""
    _, summary = pipeline.execute(
        pipeline.RunConfig(model=model, relation=RELATION, max_prompts=20, preset=preset),
        ["recall", "patch", "movers", "surgery", "claims"],
        out=str(tmp_path),
        overrides=settings,
        progress=False,
    )
    row = {c["claim"]: c for c in summary["claims"]}[CLAIM_NECESSARY]
    entry = summary["stages"]["surgery"]
    end = {r["null"]: r for r in entry["results"] if r["scope"] == "end" and r["metric"] == "p_answer"}
    assert row["about"] == ", ".join(entry["heads"]) and row["prompts_used"] == entry["n_prompts"] == 20
    assert [(n["null"], n["n_sets"], n["exhaustive"]) for n in entry["nulls"]] == [("layer", 3, True), ("norm", 84, True)]
    assert row["drop_p"] == pytest.approx(end["layer"]["movers_drop"])
    assert (row["p_value_layer"], row["p_value_norm"]) == (end["layer"]["p_value"], end["norm"]["p_value"])
    if model == "planted":
        assert PLANTED["mover"] in entry["heads"]
        assert row["verdict"] == HOLDS and row["margin"] > 0.5 and row["drop_p"] > 0.5
        assert row["decided_by"] == "movers' mean drop in p(Y) minus the layer null's 95th percentile"
        assert all(r["null_quantile"] < 1e-3 and r["p_value"] == r["min_p_value"] for r in end.values())
    else:
        assert row["verdict"] == FAILS and row["decided_by"] == "movers' mean drop in p(Y) (probability)"
        assert row["margin"] < 0 and abs(row["drop_p"]) < 1e-6 and row["decided_ci_high"] < 1e-6


# Claims whose mechanism the planted control does not build (claim statement -> why): they must *not hold*
# there (decided, not inconclusive) instead of holding. Every other claim the run measures must hold.
NOT_PLANTED: dict[str, str] = {
    CLAIM_MOVE_EARLIER: "no demonstration mechanism is planted: the movers act in layer 1 at every shot count",
    CLAIM_DOMAIN_EARLIER: "no demonstration mechanism is planted: the domain appears after layer 1 at every shot count",
}


def _cli_run(capsys, tmp_path, model: str, preset: str, *extra: str) -> dict:
    """``recallscope run --model MODEL --preset PRESET --shots 0,3 [extra]`` as a user types it (the preset's
    relation and prompt count: recallscope's country_capital_extended, 32 prompts; the paper's
    paper_country_capital, all 225), its summary read from ``--json``."""
    args = ["run", "--model", model, "--preset", preset, "--shots", "0,3", "--out", str(tmp_path), "--no-report", "--json"]
    cli.main([*args, *extra])
    return json.loads(capsys.readouterr().out)


def _rows(summary: dict) -> list[dict]:
    """Every claims row of a sweep: each cell's, then the rows across shot counts (whatever rows the run has)."""
    return [{**c, "cell": run["shots"]} for run in summary["runs"] for c in run["claims"]] + [
        {**c, "cell": "across"} for c in summary["claims"]
    ]


@pytest.mark.slow  # four whole runs of the default stages (the paper preset: 225 prompts at two shot counts)
@pytest.mark.parametrize("preset", PRESETS)
def test_the_run_command_on_planted_every_claim_holds(preset, tmp_path, capsys):
    """Issue 27's first "Must show", the command itself, generic over the rows the run has: every claim the
    run measures holds (or, for a claim listed in NOT_PLANTED, does not hold), none is inconclusive, and a
    row not measurable in a cell (it compares shot counts) is measured across them."""
    summary = _cli_run(capsys, tmp_path, "planted", preset)
    assert [r["shots"] for r in summary["runs"]] == SHOTS
    rows = _rows(summary)
    measured = [r for r in rows if r["verdict"] != NOT_MEASURABLE]
    assert len({r["claim"] for r in measured}) >= 6
    for r in measured:
        expected = FAILS if r["claim"] in NOT_PLANTED else HOLDS
        assert r["verdict"] == expected, (r["cell"], r["claim"], r["verdict"], r["detail"])
        assert r["prompts_needed"] is None and r["margin"] is not None
        assert r["margin"] >= 0 if expected == HOLDS else r["margin"] <= 0
    assert {r["claim"] for r in rows if r["verdict"] == NOT_MEASURABLE} <= {r["claim"] for r in summary["claims"]}


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_the_run_command_on_random_every_measurable_claim_does_not_hold(preset, tmp_path, capsys):
    """Issue 27's first "Must show" on the random control, generic over the rows the run has: every measurable
    claim *does not hold* — its deciding condition's interval wholly on the failing side of a floor or a null
    (claims module docstring, "Controls"), margin ≤ 0 — and none is inconclusive."""
    summary = _cli_run(capsys, tmp_path, "random", preset, "--set", "recall.known_top_k=49152")
    rows = _rows(summary)
    measured = [r for r in rows if r["verdict"] != NOT_MEASURABLE]
    assert len({r["claim"] for r in measured}) >= 6
    for r in measured:
        assert r["verdict"] == FAILS, (r["cell"], r["claim"], r["verdict"], r["detail"])
        assert r["decided_by"] and r["margin"] is not None and r["margin"] <= 0 and r["prompts_needed"] is None
    assert {r["claim"] for r in rows if r["verdict"] == NOT_MEASURABLE} <= {r["claim"] for r in summary["claims"]}
