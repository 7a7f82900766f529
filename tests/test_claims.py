"""Claims turn measured figures into verdicts; these tests feed known figures and check the
verdicts, the margins and where each verdict flips (the controls' end-to-end verdicts are in
tests/test_claims_controls.py)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recallscope.claims import (
    COLUMNS, FAILS, HOLDS, NOT_MEASURABLE, SENSITIVITY_COLUMNS, ClaimsConfig, ClaimsResult, mitigation_claim, mlp_claim,
    movers_claim, run_claims, shot_claim, suppress_claim,
)

CFG = ClaimsConfig(n_bootstrap=400)
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
    assert claim.threshold == 0.5 and claim.margin == pytest.approx(0.5) and claim.evidence["patch_rank"] == 1
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


def suppress_summary(ci_high: float, share_negative: float, mean: float = None):
    mean = ci_high - 0.01 if mean is None else mean
    return {
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
    assert claim.decided_by == "mean DLA to Y (logits), interval high" == claim.row()["decided_by"]
    # the random control's size: an interval below 0 but above the 0.1-logit floor
    weak = suppress_claim(suppress_summary(-0.015, 1.0, mean=-0.021), CFG)
    assert weak.verdict == FAILS and weak.margin == pytest.approx(-0.085) and weak.flips_at == pytest.approx(0.015)
    # negative on too few prompts: that condition decides (its margin, its flip), not the floor
    rare = suppress_claim(suppress_summary(-0.5, 0.4), CFG)
    assert rare.verdict == FAILS and rare.margin == pytest.approx(0.4 - 0.5) and rare.flips_at == pytest.approx(0.4)
    assert rare.threshold == 0.5 and "(threshold and margin: " in rare.detail
    assert rare.decided_by == "share of prompts with DLA < 0"  # not what the value (the DLA interval) measures
    flips = {r["setting"]: r["flips_at"] for r in rare.sensitivity()}
    assert flips == {"claims.min_suppression_logits": None, "claims.min_share_negative": pytest.approx(0.4)}


def mitigation_summary(mean, lo, hi):
    return {"mitigation": {"zero": {"known": {"delta_p_answer": {"mean": mean, "ci_low": lo, "ci_high": hi},
                                              "before": {"p_answer": 0.5}, "after": {"p_answer": 0.5 + mean}}}},
            "fold_suppressors": [{"suppressors": ["L2H0"]}]}


def test_mitigation_needs_a_rise_above_the_floor():
    assert mitigation_claim(mitigation_summary(0.05, 0.02, 0.08), CFG).verdict == HOLDS
    tiny = mitigation_claim(mitigation_summary(5.8e-7, 3e-7, 8e-7), CFG)  # the random control's Δp(Y)
    assert tiny.verdict == FAILS and tiny.margin == pytest.approx(3e-7 - 0.01)
    assert mitigation_claim(mitigation_summary(0.05, 0.02, 0.08), ClaimsConfig(min_mitigation_delta_p=0.03)).verdict == FAILS


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
    assert claim.verdict == FAILS and claim.conditions[1].statistic is None and claim.flips_at is None


def patch_frame(effects: dict, n_prompts=30, seed=0, layers=8, heads=4):
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(layers):
        for head in range(heads):
            base = effects.get((layer, head), 0.0)
            for p in range(n_prompts):
                rows.append({"component": f"L{layer}H{head}", "kind": "head", "layer": layer, "head": head,
                             "prompt_index": p, "effect": base + rng.normal(0, 0.5)})
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


def test_missing_stages_are_not_measurable_and_the_table_is_stable():
    claims = run_claims({}, {}, CFG)
    assert len(claims) == 6 and all(c.verdict == NOT_MEASURABLE for c in claims)
    result = ClaimsResult(tuple(claims), CFG)
    tables = result.tables()
    assert list(tables) == ["claims", "sensitivity"]
    assert tuple(tables["claims"].columns) == COLUMNS and tuple(tables["sensitivity"].columns) == SENSITIVITY_COLUMNS
    assert len(tables["sensitivity"]) == 0
