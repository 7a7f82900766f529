"""Claims turn measured figures into verdicts; these tests feed known figures and check the verdicts."""

import numpy as np
import pandas as pd

from recallscope.claims import (
    FAILS, HOLDS, NOT_MEASURABLE, ClaimsConfig, mitigation_claim, movers_claim, run_claims, shot_claim, suppress_claim,
)

CFG = ClaimsConfig(n_bootstrap=400)


def movers_inputs(is_mover: bool, r_signal: float):
    rng = np.random.default_rng(0)
    att = rng.uniform(0, 1, 60)
    proj = r_signal * att + rng.normal(0, 0.1, 60)
    frame = pd.DataFrame({"layer": 5, "head": 2, "attention_to_subject": att, "projection": proj})
    r = float(np.corrcoef(att, proj)[0, 1])
    summary = {"heads": [{"layer": 5, "head": 2, "projection_corr": r, "is_mover": is_mover, "attention_to_subject": 0.5,
                          "ov_copy_rank": 0}], "movers": ["L5H2"] if is_mover else [], "thresholds": {}}
    return summary, frame, r


def test_movers_claim_reports_the_correlation_with_a_bootstrap_interval():
    summary, frame, r = movers_inputs(True, 1.0)
    claim = movers_claim(summary, frame, CFG)
    assert claim.verdict == HOLDS and abs(claim.value - r) < 1e-12
    assert claim.ci_low < r < claim.ci_high and claim.ci_high - claim.ci_low < 0.2
    summary, frame, _ = movers_inputs(False, 1.0)
    assert movers_claim(summary, frame, CFG).verdict == FAILS


def test_suppression_verdict_follows_the_interval():
    def summ(lo, hi):
        return {"suppression_present": {"final_layer_total_dla": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "layer": 29},
                "components": []}
    assert suppress_claim(summ(-2.0, -0.5), CFG).verdict == HOLDS
    assert suppress_claim(summ(-0.5, 0.3), CFG).verdict == FAILS
    assert suppress_claim(None, CFG).verdict == NOT_MEASURABLE


def test_mitigation_needs_a_positive_held_out_gain():
    up = {"mitigation": {"zero": {"known": {"delta_p_answer": {"mean": 0.08, "ci_low": 0.05, "ci_high": 0.12}}}}}
    flat = {"mitigation": {"zero": {"known": {"delta_p_answer": {"mean": 0.01, "ci_low": -0.02, "ci_high": 0.04}}}}}
    assert mitigation_claim(up, CFG).verdict == HOLDS and mitigation_claim(up, CFG).value == 0.08
    assert mitigation_claim(flat, CFG).verdict == FAILS


def test_missing_stages_are_not_measurable():
    claims = run_claims({}, {}, CFG)
    assert len(claims) == 6 and all(c.verdict == NOT_MEASURABLE for c in claims)


def patch_frame(layer_of_effect: dict, n_prompts=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(6):
        for head in range(3):
            base = layer_of_effect.get((layer, head), 0.0)
            for p in range(n_prompts):
                rows.append({"component": f"L{layer}H{head}", "kind": "head", "layer": layer, "head": head,
                             "prompt_index": p, "effect_pct": base + rng.normal(0, 0.5)})
    return pd.DataFrame(rows)


def test_shot_claim_detects_heads_moving_earlier():
    zero = patch_frame({(4, 0): -20, (4, 1): -10, (5, 2): -8})
    three_earlier = patch_frame({(2, 0): -20, (2, 1): -10, (4, 0): -8}, seed=1)
    claim = shot_claim("r", (0, zero), (3, three_earlier), ClaimsConfig(n_bootstrap=400, top_heads=3, min_head_overlap=1))
    assert claim.value < -1 and claim.ci_high < 0 and claim.verdict == HOLDS
    same = shot_claim("r", (0, zero), (3, patch_frame({(4, 0): -20, (4, 1): -10, (5, 2): -8}, seed=2)),
                      ClaimsConfig(n_bootstrap=400, top_heads=3, min_head_overlap=1))
    assert same.ci_low < 0 < same.ci_high and same.verdict == FAILS
