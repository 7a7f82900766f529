"""Claims turn measured figures into verdicts; these tests feed known figures and check the
verdicts, the margins and where each verdict flips (the controls' end-to-end verdicts are in
tests/test_claims_controls.py)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recallscope.claims import (
    COLUMNS, FAILED, FAILS, HOLDS, INCONCLUSIVE, MET, NOT_MEASURABLE, SENSITIVITY_COLUMNS, STRADDLES, ClaimsConfig,
    ClaimsResult, Condition, decide, decide_conditions, flips_at, mitigation_claim, mlp_claim, movers_claim, run_claims,
    shot_claim, suppress_claim, with_available,
)

CFG = ClaimsConfig(n_bootstrap=400)
CP_60 = stats.binomtest(60, 60).proportion_ci(method="exact").low  # Clopper–Pearson low end of 60 of 60: 0.9404
THRESHOLDS = {"min_attention_to_subject": 0.3, "min_projection_corr": 0.5, "max_p_value": 0.01, "min_ov_top5_share": 0.5,
              "ov_input": "context"}


def head_rows(layer, head, att, proj, ov_rank):
    return pd.DataFrame({"layer": layer, "head": head, "attention_to_subject": att, "attention_to_first_subject": att,
                         "projection": proj, "ov_rank_context": ov_rank, "ov_rank_effective": ov_rank, "ov_rank_x": ov_rank})


def movers_inputs(copying_head_effect: float):
    """Two candidates: L5H2 copies (OV rank 0, attention ~0.6, r ~1); L3H0 does not. ``copying_head_effect``
    is L5H2's patching effect; L3H0's is -10, L4H1's -5 (a third, non-copying candidate)."""
    rng = np.random.default_rng(0)
    att = rng.uniform(0.4, 0.8, 60)
    frame = pd.concat([
        head_rows(5, 2, att, 3 * att + rng.normal(0, 0.05, 60), np.zeros(60, dtype=int)),
        head_rows(3, 0, att / 4, rng.normal(0, 1, 60), np.full(60, 900)),
        head_rows(4, 1, att / 4, rng.normal(0, 1, 60), np.full(60, 900)),
    ], ignore_index=True)
    heads = [{"layer": 5, "head": 2, "effect": copying_head_effect, "ov_top5_share": 1.0},
             {"layer": 3, "head": 0, "effect": -10.0, "ov_top5_share": 0.0},
             {"layer": 4, "head": 1, "effect": -5.0, "ov_top5_share": 0.0}]
    return {"heads": heads, "movers": ["L5H2"], "thresholds": THRESHOLDS, "subject_token": "X = the subject's last token"}, frame


def test_movers_claim_is_about_the_heads_patching_singles_out():
    summary, frame = movers_inputs(copying_head_effect=-20.0)
    claim = movers_claim(summary, frame, CFG)
    assert claim.verdict == HOLDS and claim.about == "L5H2" and claim.value == 1.0
    # a count of prompts: its Clopper–Pearson interval, not a zero-width bootstrap of 0/1 values
    assert (claim.ci_low, claim.ci_high) == (pytest.approx(CP_60), 1.0) and claim.row()["prompts_used"] == 60
    assert claim.threshold == 0.5 and claim.margin == pytest.approx(CP_60 - 0.5) and claim.evidence["patch_rank"] == 1
    # the copying head is third by patching: with the top 2 only, the claim does not hold although a mover exists
    summary, frame = movers_inputs(copying_head_effect=-1.0)
    top2 = movers_claim(summary, frame, ClaimsConfig(n_bootstrap=400, mover_top_heads=2))
    assert top2.verdict == FAILS and top2.about == "L3H0" and top2.evidence["n_movers"] == 1
    assert movers_claim(summary, frame, ClaimsConfig(n_bootstrap=400, mover_top_heads=3)).verdict == HOLDS


def test_movers_claim_reads_the_lower_end_of_each_interval():
    summary, frame = movers_inputs(copying_head_effect=-20.0)
    claim = movers_claim(summary, frame, CFG)
    rows = {r["condition"].split(",")[0]: r for r in claim.sensitivity()}
    r_row = next(r for k, r in rows.items() if k.startswith("scatter r"))
    assert r_row["setting"] == "movers.min_projection_corr" and 0.9 < r_row["statistic"] < 1.0
    assert r_row["flips_at"] == pytest.approx(r_row["statistic"])  # the verdict holds: every condition can flip it
    att_row = next(r for k, r in rows.items() if k.startswith("mean attention"))
    att = frame[frame["layer"] == 5]["attention_to_subject"]
    assert att_row["statistic"] < att.mean() and att_row["margin"] == pytest.approx(att_row["statistic"] - 0.3)


def suppress_summary(ci_high: float, share_negative: float, mean: float = None, n_known: int = 60):
    mean = ci_high - 0.01 if mean is None else mean
    return {
        "n_known": n_known,
        "suppression_present": {"layer": 2, "final_layer_total_dla": 3.0, "ci_low": 2.5, "ci_high": 3.5},
        "components": [
            {"component": "L2H0", "layer": 2, "mean_dla": mean, "ci_low": mean - 0.02, "ci_high": ci_high,
             "share_negative": share_negative},
            {"component": "MLP2", "layer": 2, "mean_dla": 3.0, "ci_low": 2.9, "ci_high": 3.1, "share_negative": 0.0},
        ],
    }


def test_suppression_is_a_component_below_the_floor_on_most_prompts():
    claim = suppress_claim(suppress_summary(-0.5, 0.9), CFG)
    # a positive layer total does not matter: one component pushes Y down on most prompts
    assert claim.verdict == HOLDS and claim.about == "L2H0" and claim.evidence["layer_total_dla"] == 3.0
    assert claim.threshold == -0.1 and claim.margin == pytest.approx(0.4) and claim.flips_at == pytest.approx(0.5)
    assert claim.decided_by == "mean DLA to Y (logits)" == claim.row()["decided_by"]
    # the random control's size: an interval [-0.041, -0.015] below 0 but wholly above the 0.1-logit floor
    weak = suppress_claim(suppress_summary(-0.015, 1.0, mean=-0.021), CFG)
    assert weak.verdict == FAILS and weak.margin == pytest.approx(-0.085)
    # below a floor of 0.041 the interval would straddle it: the verdict turns inconclusive there
    assert weak.flips_at == pytest.approx(0.041)
    # negative on too few prompts (12 of 60: Clopper–Pearson [0.108, 0.323], wholly below 0.5): that
    # condition decides (its margin, its flip), not the floor
    rare = suppress_claim(suppress_summary(-0.5, 0.2), CFG)
    lo, hi = stats.binomtest(12, 60).proportion_ci(method="exact")
    assert rare.verdict == FAILS and rare.margin == pytest.approx(lo - 0.5) and rare.flips_at == pytest.approx(hi)
    assert rare.threshold == 0.5 and "(threshold and margin: " in rare.detail
    assert rare.decided_by == "share of prompts with DLA < 0"  # not what the value (the DLA interval) measures
    row = rare.row()
    assert (row["decided_value"], row["decided_ci_low"], row["decided_ci_high"]) == (0.2, pytest.approx(lo), pytest.approx(hi))
    flips = {r["setting"]: r["flips_at"] for r in rare.sensitivity()}
    assert flips == {"claims.min_suppression_logits": None, "claims.min_share_negative": pytest.approx(hi)}
    assert [r["state"] for r in rare.sensitivity()] == [MET, FAILED]
    # 12 of 20 negative: [0.361, 0.809] straddles 0.5, so the claim is inconclusive, not "does not hold"
    open_ = suppress_claim(suppress_summary(-0.5, 0.6, n_known=20), CFG)
    lo = stats.binomtest(12, 20).proportion_ci(method="exact").low
    assert open_.verdict == INCONCLUSIVE and open_.decided_by == "share of prompts with DLA < 0"
    # at n' the low end 0.6 − (0.6 − lo)·√(20/n') clears 0.5 (strictly, ">")
    need = open_.prompts_needed
    assert need == int(np.floor(20 * ((0.6 - lo) / 0.1) ** 2)) + 1 == 115
    assert 0.6 - (0.6 - lo) * np.sqrt(20 / need) > 0.5 >= 0.6 - (0.6 - lo) * np.sqrt(20 / (need - 1))
    assert "≈ 115 known prompts would decide it (now 20; towards holds)" in open_.detail


def mitigation_summary(mean, lo, hi):
    return {"mitigation": {"zero": {"known": {"delta_p_answer": {"mean": mean, "ci_low": lo, "ci_high": hi},
                                              "before": {"p_answer": 0.5}, "after": {"p_answer": 0.5 + mean}}}},
            "fold_suppressors": [{"suppressors": ["L2H0"]}]}


def test_mitigation_needs_a_rise_above_the_floor():
    assert mitigation_claim(mitigation_summary(0.05, 0.02, 0.08), CFG).verdict == HOLDS
    tiny = mitigation_claim(mitigation_summary(5.8e-7, 3e-7, 8e-7), CFG)  # the random control's Δp(Y)
    assert tiny.verdict == FAILS and tiny.margin == pytest.approx(3e-7 - 0.01)
    # a floor inside the interval: undecided; above it: does not hold
    assert mitigation_claim(mitigation_summary(0.05, 0.02, 0.08), ClaimsConfig(min_mitigation_delta_p=0.03)).verdict == INCONCLUSIVE
    assert mitigation_claim(mitigation_summary(0.05, 0.02, 0.08), ClaimsConfig(min_mitigation_delta_p=0.08)).verdict == FAILS


def decompose_inputs(gain_noise: float, coefs: dict):
    rng = np.random.default_rng(1)
    base = rng.uniform(1, 2, 80)
    err = base * gain_noise
    heldout = pd.DataFrame({"prompt_index": np.arange(80), "fold": np.arange(80) % 4, "sq_err": err, "sq_err_intercept": base,
                            "sq_err_no_heads": base, "sq_norm": base * 3})
    rows = [{"regressor": name, "layer": 1, "head": h, "coef": c, "ci_low": lo, "ci_high": hi, "departs_stable": st,
             "identifiable": ident} for h, (name, (c, lo, hi, st, ident)) in enumerate(coefs.items())]
    rows.append({"regressor": "resid", "layer": 1, "head": None, "coef": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                 "departs_stable": True, "identifiable": False})
    frame = pd.DataFrame(rows)
    frame["head"] = frame["head"].astype("Int64")
    return {"layer": 1, "cv_r2": 0.9, "cv_r2_uncentred": 0.95, "intercept_only_cv_r2_uncentred": 0.6}, frame, heldout


PLANTED_LIKE = {"L1H0": (2.5, 2.49, 2.51, True, True), "L1H1": (0.5, 0.49, 0.51, True, True),
                "L1H2": (-1.5, -1.51, -1.49, True, True), "L1H3": (0.0, 0.0, 0.0, True, False)}


def test_mlp_claim_counts_amplified_attenuated_and_reversed_heads_apart():
    summary, coefs, heldout = decompose_inputs(0.1, PLANTED_LIKE)
    claim = mlp_claim(summary, coefs, heldout, CFG)
    assert claim.verdict == HOLDS and claim.value == pytest.approx(0.9)
    assert (claim.evidence["n_amplified"], claim.evidence["n_attenuated"], claim.evidence["n_reversed"]) == (1, 1, 1)
    departure = claim.conditions[1]
    assert departure.statistic == pytest.approx(2.49)  # L1H2: its interval ends 2.49 below c = 1; L1H3 is not counted


def test_mlp_claim_needs_held_out_gain_and_a_stable_departure_from_pass_through():
    summary, coefs, heldout = decompose_inputs(0.995, PLANTED_LIKE)  # gain 0.005, as the random control's MLP
    weak = mlp_claim(summary, coefs, heldout, CFG)
    assert weak.verdict == FAILS and weak.value == pytest.approx(0.005) and weak.flips_at is not None
    passthrough = {"L1H0": (1.0, 0.8, 1.2, False, True), "L1H1": (1.3, 1.1, 1.5, False, True)}  # folds on both sides of 1
    summary, coefs, heldout = decompose_inputs(0.1, passthrough)
    claim = mlp_claim(summary, coefs, heldout, CFG)
    # no fold-stable head departs (low end 0), but no interval shows pass-through either (L1H1's reaches 1.5): undecided
    departure = claim.conditions[1]
    assert (departure.low, departure.high, departure.estimate) == (0.0, pytest.approx(0.5), pytest.approx(0.3))
    assert claim.verdict == INCONCLUSIVE and claim.decided_by == departure.name and claim.prompts_needed is None
    # every head's interval within 0.5 of c = 1: pass-through is shown (strict ">": a distance of exactly 0.5 fails)
    within = mlp_claim(summary, coefs, heldout, ClaimsConfig(n_bootstrap=400, min_coef_departure=0.5))
    assert within.verdict == FAILS and within.conditions[1].state() == FAILED


def patch_frame(effects: dict, n_prompts=30, seed=0, layers=8, heads=4, pi=10.0):
    """A patch stage's per-prompt table; π(Y) = ``pi`` logits on every prompt, so an effect of e % moves it e·pi/100."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(layers):
        for head in range(heads):
            base = effects.get((layer, head), 0.0)
            for p in range(n_prompts):
                effect = base + rng.normal(0, 0.5)
                rows.append({"component": f"L{layer}H{head}", "kind": "head", "layer": layer, "head": head,
                             "prompt_index": p, "effect": effect, "pi_clean": pi, "pi_patched": pi * (1 + effect / 100)})
    return pd.DataFrame(rows)


def test_shot_claim_compares_the_top_heads_with_random_head_sets():
    strong = {(4, 0): -20, (4, 1): -15, (5, 2): -12, (6, 3): -10, (3, 1): -9, (2, 2): -8, (7, 0): -7, (1, 1): -6}
    zero, three = patch_frame(strong), patch_frame(strong, seed=1)
    claim = shot_claim("r", (0, zero), (3, three), CFG)
    k = 8  # min(top_heads = 10, 32 heads // 4)
    assert claim.about == f"top-{k} heads" and claim.value == 8 and claim.ci_low == 8
    assert claim.threshold == stats.hypergeom(32, k, k).ppf(0.95) and claim.verdict == HOLDS
    assert abs(claim.evidence["layer_shift"]) < 0.2  # reported, not required
    moved = patch_frame({(l - 3 if l >= 4 else l + 4, h): e for (l, h), e in strong.items()}, seed=2)
    other = shot_claim("r", (0, zero), (3, moved), CFG)
    assert other.verdict == FAILS and other.value <= other.threshold and other.evidence["layer_shift"] != 0
    assert other.conditions[0].state() == FAILED and other.ci_high <= other.threshold  # the whole interval at chance


def test_shot_claim_needs_heads_that_matter():
    """The effect-size floor: the same ranking of heads whose patching moves π(Y) by hundredths of a logit
    (as on the random control, where π(Y) ≈ 0 and % effects are ratios of noise) is no shared mechanism."""
    strong = {(4, 0): -20, (4, 1): -15, (5, 2): -12, (6, 3): -10, (3, 1): -9, (2, 2): -8, (7, 0): -7, (1, 1): -6}
    faint = shot_claim("r", (0, patch_frame(strong, pi=0.02)), (3, patch_frame(strong, seed=1, pi=0.02)), CFG)
    assert faint.value == 8 and faint.conditions[0].state() == MET  # the overlap alone would hold
    floor = faint.conditions[1]
    assert floor.setting == "claims.min_head_effect_logits" and floor.high < 0.1 and floor.state() == FAILED
    assert faint.verdict == FAILS and faint.decided_by == floor.name and faint.threshold == 0.1
    assert faint.row()["decided_value"] == pytest.approx(floor.estimate) and 0.003 < floor.estimate < 0.006  # ≈ 20 % of 0.02


def test_missing_stages_are_not_measurable_and_the_table_is_stable():
    claims = run_claims({}, {}, CFG)
    assert len(claims) == 6 and all(c.verdict == NOT_MEASURABLE for c in claims)
    result = ClaimsResult(tuple(claims), CFG)
    tables = result.tables()
    assert list(tables) == ["claims", "sensitivity"]
    assert tuple(tables["claims"].columns) == COLUMNS and tuple(tables["sensitivity"].columns) == SENSITIVITY_COLUMNS
    assert len(tables["sensitivity"]) == 0


def cond(lo, hi, op=">=", t=0.5, est=None, n=None, name="c", setting_value=None, sign=1.0):
    """A condition on a constructed interval (estimate: its middle unless given; setting = threshold / sign)."""
    est = (lo + hi) / 2 if est is None else est
    value = t / sign if setting_value is None else setting_value
    return Condition.measured(name, "claims.x", value, est, (lo, hi), op, t, n, sign)


def test_verdict_logic_on_constructed_intervals():
    """Every branch of the four-valued decision: an interval wholly on the passing side (met), wholly on
    the failing side (failed), across the threshold (straddles); the boundary under ">=" and ">" (and
    "<=", "<"); counts with their Clopper–Pearson interval; how conditions combine into a verdict."""
    # pass, fail, straddle
    assert cond(0.6, 0.9).state() == MET and cond(0.1, 0.4).state() == FAILED and cond(0.4, 0.7).state() == STRADDLES
    # the boundary: ">=" is met at equality, ">" is not; the failing side of ">" includes the threshold itself
    assert cond(0.5, 0.8, ">=").state() == MET and cond(0.5, 0.8, ">").state() == STRADDLES
    assert cond(0.2, 0.5, ">=").state() == STRADDLES and cond(0.2, 0.5, ">").state() == FAILED
    assert cond(0.5, 0.5, ">=").state() == MET and cond(0.5, 0.5, ">").state() == FAILED
    # "below" conditions read the high end to pass and the low end to fail
    assert cond(-0.5, -0.2, "<", -0.1).state() == MET and cond(-0.3, -0.1, "<", -0.1).state() == STRADDLES
    assert cond(-0.3, -0.1, "<=", -0.1).state() == MET and cond(-0.1, 0.2, "<", -0.1).state() == FAILED
    assert cond(-0.1, 0.2, "<=", -0.1).state() == STRADDLES
    # a figure without sampling error is a point: met or failed, never straddles
    assert Condition.exact("layer", None, None, 3.0, "<", 3.0).state() == FAILED
    assert Condition.exact("layer", None, None, 2.0, "<", 3.0).state() == MET
    # no figure at all (the rule's object is absent): failed
    assert Condition.exact("absent", None, None, None, ">", 0.0).state() == FAILED
    # counts: "negative on more than 60% of prompts", k of n with the Clopper–Pearson interval
    for k, n, state in ((90, 100, MET), (40, 100, FAILED), (12, 16, STRADDLES), (16, 16, MET), (3, 3, STRADDLES)):
        c = Condition.count("share", "claims.min_share", 0.6, k, n, ">", 0.6, 0.95)
        assert (c.low, c.high) == pytest.approx(tuple(stats.binomtest(k, n).proportion_ci(method="exact")))
        assert c.estimate == k / n and c.n == n and c.state() == state, (k, n)
    assert Condition.count("share", None, None, 16, 16, ">", 0.6, 0.95).low == pytest.approx(0.025 ** (1 / 16))
    # combining: any failed → does not hold (the primary decides when it fails, else the first that fails);
    # none failed, some straddles → inconclusive; all met → holds (the primary decides)
    met, fail, fail2, open_ = cond(0.6, 0.9, name="m"), cond(0.1, 0.4, name="f"), cond(0, 0.2, name="g"), cond(0.4, 0.7, name="s")
    assert decide_conditions([met, met]).verdict == HOLDS and decide_conditions([met, met]).deciding is met
    assert decide_conditions([met, open_]).verdict == INCONCLUSIVE and decide_conditions([met, open_]).deciding is open_
    assert decide_conditions([open_, fail, fail2]).verdict == FAILS and decide_conditions([open_, fail, fail2]).deciding is fail
    assert decide_conditions([fail2, fail]).deciding is fail2
    with pytest.raises(ValueError):
        decide_conditions([])


def test_prompts_needed_assumes_the_effect_stays_and_the_interval_narrows_as_one_over_root_n():
    # estimate 0.6 (0.1 above the threshold), low end 0.15 below it, on 16 prompts: 0.6 − 0.15·√(16/n') ≥ 0.5 at n' = 36
    up = cond(0.45, 0.75, ">=", est=0.6, n=16)
    assert up.towards() == MET and up.prompts_needed() == 36
    assert cond(0.45, 0.75, ">", est=0.6, n=16).prompts_needed() == 37  # strict: beyond 36
    # estimate below the threshold: the high end must fall below it (strictly under ">=", the failing side is "<")
    down = cond(0.3, 0.6, ">=", est=0.45, n=16)
    assert down.towards() == FAILED and down.prompts_needed() == 145 and cond(0.3, 0.6, ">", est=0.45, n=16).prompts_needed() == 144
    # undecidable: estimate on the threshold; no sample size; a decided condition
    assert cond(0.4, 0.6, est=0.5, n=16).prompts_needed() is None and cond(0.45, 0.75, est=0.6).prompts_needed() is None
    assert cond(0.6, 0.9, n=16).prompts_needed() is None
    # the row: one heading to fail decides first (one failure settles it), else the slowest of those heading to pass
    slow_up = cond(0.2, 0.8, ">=", est=0.6, n=16, name="slow")  # 16·(0.4/0.1)² = 256
    row = decide("C", "s", None, "m", 0.6, (0.45, 0.75), [up, slow_up], "d", {})
    assert row.verdict == INCONCLUSIVE and row.decided_by == "slow" and row.prompts_needed == 256
    assert row.row()["prompts_used"] == 16
    row = decide("C", "s", None, "m", 0.6, (0.45, 0.75), [up, slow_up, down], "d", {})
    assert row.decided_by == down.name and row.prompts_needed == 145 and "towards does not hold" in row.detail
    figures = row.row()
    assert (figures["decided_value"], figures["decided_ci_low"], figures["decided_ci_high"]) == (0.45, 0.3, 0.6)
    # what the relation can give: said when it is fewer than needed
    short = with_available(row, 100)
    assert short.prompts_available == 100 and "fewer than needed" in short.detail
    assert "fewer than needed" not in with_available(row, 200).detail and with_available(row, None) is row
    # an estimate a hair above its threshold (smollm2-135m's C1 on every prompt: r 0.5001 against 0.5): 194 · (0.0911 /
    # 0.0001)² ≈ 1.61e8 prompts, written with separators
    on_edge = decide("C", "s", None, "m", 0.5001, (0.409, 0.581), [cond(0.409, 0.581, est=0.5001, n=194)], "d", {})
    assert on_edge.prompts_needed == pytest.approx(194 * (0.0911 / 0.0001) ** 2, rel=1e-6)
    assert f"≈ {on_edge.prompts_needed:,} known prompts would decide it" in on_edge.detail and "≈ 161,004,67" in on_edge.detail


def test_flips_at_is_the_nearest_setting_value_that_changes_the_verdict():
    # holds: past the passing end (0.6) the interval straddles → inconclusive
    assert flips_at([cond(0.6, 0.9)], 0) == pytest.approx(0.6)
    # does not hold: past the failing end (0.4) → inconclusive; a second failure pins it (None)
    assert flips_at([cond(0.1, 0.4)], 0) == pytest.approx(0.4)
    assert flips_at([cond(0.1, 0.4), cond(0.1, 0.3)], 0) is None
    # inconclusive: either end changes it; the nearer to the setting's value (0.5) wins
    assert flips_at([cond(0.45, 0.9)], 0) == pytest.approx(0.45) and flips_at([cond(0.1, 0.55)], 0) == pytest.approx(0.55)
    # a "below" condition on a sign −1 setting: threshold −s; holds until s passes −(high end)
    assert flips_at([cond(-0.5, -0.3, "<", -0.1, sign=-1.0)], 0) == pytest.approx(0.3)


@pytest.mark.slow
def test_every_prompt_decides_what_16_could_not_on_smollm2(smollm2, tmp_path):
    """Issue 27's second "Must show", on the real model: ``recallscope run --model smollm2-135m --relation
    country_capital_extended --shots 0 --max-prompts 16`` and ``--max-prompts all`` (the outputs are in the
    issue's notes). At 16 prompts (13 known) every claim whose rule has an interval across its threshold and
    none wholly on the failing side is *inconclusive*, with the known prompts that would decide it: C1 (the
    movers' scatter r, 0.584 [0.224, 0.835] against 0.5) and C5 (Δp(Y), 0.021 [−0.023, 0.069] against 0.01),
    each needing more than the ≈183 known prompts the relation gives. At all 225 prompts (194 known) C5 is
    decided: it holds, its interval [0.050, 0.078] wholly above 0.01. C1 stays inconclusive: its r is 0.500
    [0.409, 0.581], on the threshold itself, so no number of prompts the relation (or any) can give decides it
    (the estimate is ~10⁷ known prompts). The decided claims keep their verdicts (C2, C3 do not hold; C4 holds)."""
    from recallscope import pipeline
    from recallscope.rundir import RunDir

    def run(max_prompts):
        out = tmp_path / str(max_prompts)
        config = pipeline.RunConfig(model="smollm2-135m", relation="country_capital_extended", max_prompts=max_prompts)
        _, summary = pipeline.execute(config, pipeline.default_stages(), out=str(out), model=smollm2, progress=False)
        rows = {r["claim"]: r for r in summary["claims"]}
        sensitivity = RunDir(out).read_table("claims", "sensitivity")
        return summary, rows, sensitivity

    summary, rows, sensitivity = run(16)
    assert (summary["n_prompts"], summary["n_known"]) == (16, 13)
    # generic: a row with a straddling condition and no failed one is inconclusive, with prompts needed beyond those used
    straddling = []
    for claim, states in sensitivity.groupby("claim")["state"]:
        if STRADDLES in set(states) and FAILED not in set(states):
            straddling.append(claim)
            row = rows[claim]
            assert row["verdict"] == INCONCLUSIVE and row["prompts_needed"] > row["prompts_used"] == 13, claim
        else:
            assert rows[claim]["verdict"] in (HOLDS, FAILS) and rows[claim]["prompts_needed"] is None, claim
    by_id = {r["claim"][:12]: r for r in rows.values()}
    c1, c5 = by_id["Mover heads "], by_id["Removing the"]
    assert set(straddling) == {c1["claim"], c5["claim"]}
    assert c1["decided_by"].startswith("scatter r") and (c1["decided_ci_low"], c1["decided_ci_high"]) == pytest.approx(
        (0.224, 0.835), abs=2e-3
    )
    assert (c1["prompts_needed"], c5["prompts_needed"], c1["prompts_available"]) == (238, 222, 183)
    assert "fewer than needed" in c1["detail"] and "fewer than needed" in c5["detail"]
    decided_16 = {claim: r["verdict"] for claim, r in rows.items() if claim not in straddling}

    summary, rows, _ = run(None)
    assert (summary["n_prompts"], summary["n_known"]) == (225, 194)
    assert rows[c5["claim"]]["verdict"] == HOLDS and rows[c5["claim"]]["decided_ci_low"] == pytest.approx(0.0502, abs=1e-3)
    c1 = rows[c1["claim"]]
    assert c1["verdict"] == INCONCLUSIVE and c1["decided_value"] == pytest.approx(0.500, abs=2e-3)
    assert c1["prompts_needed"] > 100 * c1["prompts_available"] and c1["prompts_available"] == 194
    assert {claim: rows[claim]["verdict"] for claim in decided_16} == decided_16


def test_the_table_leads_with_the_statistic_that_decided_the_verdict():
    """Study.claims() showed ``value`` = the primary figure while the CLI and the report show the
    deciding statistic: smollm2-135m's C1 (country_capital_extended, 16 prompts) read value 1
    [0.753, 1] (the OV share) and was decided by the scatter r, 0.584 [0.224, 0.835]. The table now
    leads with claim, verdict and the deciding statistic; the primary figure follows, named by
    ``measure``. Here: a copying head whose scatter is noise — the OV share is 1, r decides."""
    summary, frame = movers_inputs(copying_head_effect=-20.0)
    rng = np.random.default_rng(1)
    five = frame["layer"] == 5
    frame.loc[five, "projection"] = rng.normal(0, 1, int(five.sum()))
    claim = movers_claim(summary, frame, CFG)
    table = ClaimsResult((claim,), CFG).tables()["claims"]
    assert list(table.columns[:9]) == ["claim", "verdict", "decided_by", "decided_value", "decided_ci_low",
                                       "decided_ci_high", "threshold", "margin", "flips_at"]
    assert list(table.columns[9:15]) == ["stage", "about", "measure", "value", "ci_low", "ci_high"]
    row = table.iloc[0]
    r, _ = stats.pearsonr(frame.loc[five, "attention_to_subject"], frame.loc[five, "projection"])
    assert row["value"] == 1.0 and row["decided_by"].startswith("scatter r")
    assert row["decided_value"] == pytest.approx(r) and row["decided_value"] != row["value"]
    assert row["threshold"] == 0.5 and row["verdict"] == FAILS


def test_a_condition_not_met_names_the_interval_end_it_compares_with_the_value_beside_it():
    """C2 on smollm2-135m (country_capital_extended, 16 prompts) read "not met: held-out gain over
    the intercept-only model = -0.003316, needs > 0.05" where the gain is 0.006527 [-0.003316,
    0.01789]: the lower end of the interval was quoted as if it were the value."""
    gain = Condition.measured("held-out gain over the intercept-only model", "claims.min_heldout_gain", 0.05, 0.006527,
                              (-0.003316, 0.017888), ">", 0.05, 13)
    exact = Condition.exact("largest distance of a head coefficient's interval from c = 1", "claims.min_coef_departure",
                            0.0, 0.0, ">", 0.0)
    row = decide("C2", "decompose", "MLP23", "held-out gain", 0.006527, (-0.003316, 0.017888), [gain, exact], "MLP 23", {})
    assert row.detail == ("MLP 23; not met: held-out gain over the intercept-only model: lower end of its interval -0.003316 "
                          "(value 0.006527), needs > 0.05; largest distance of a head coefficient's interval from c = 1 = 0, "
                          "needs > 0")
    # the kind: a "<" rule compares the upper end (C4's mean DLA of a would-be suppressor)
    dla = Condition.measured("mean DLA to Y (logits)", "claims.min_suppression_logits", 0.1, 0.2, (0.05, 0.35), "<", -0.1, 13,
                             -1.0)
    assert decide("C4", "suppress", "L29H0", "mean DLA", 0.2, (0.05, 0.35), [dla], "final layer", {}).detail == (
        "final layer; not met: mean DLA to Y (logits): upper end of its interval 0.35 (value 0.2), needs < -0.1")
