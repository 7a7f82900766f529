import numpy as np
import pandas as pd
import pytest
import torch

from recallscope.errors import UserError
from recallscope.figures.suppress import figures
from recallscope.suppress import (
    Component,
    SuppressConfig,
    assign_folds,
    attribution_identity,
    calibration_metrics,
    choose_suppressors,
    expected_calibration_error,
    make_edits,
    resolve_layers,
    suppress,
    validate,
)


def test_choose_suppressors_needs_negative_mean_and_most_prompts():
    dla = np.array([
        [-1.0, -5.0, 1.0, -0.1],
        [-1.0, 1.0, 1.0, -0.1],
        [-1.0, 1.0, -9.0, 0.5],
    ])
    # col 0: always negative; col 1: mean −1 but negative on 1/3; col 2: mean −2.33, 1/3 negative;
    # col 3: mean +0.1 although 2/3 negative.
    assert choose_suppressors(dla, 0.5).tolist() == [True, False, False, False]
    assert choose_suppressors(dla, 0.2).tolist() == [True, True, True, False]
    assert choose_suppressors(dla[:0], 0.5).tolist() == [False] * 4


def test_ece_and_brier_by_hand():
    conf = np.array([0.9, 0.9, 0.2, 0.2])
    correct = np.array([1.0, 0.0, 0.0, 0.0])
    # bin (0.8, 0.9]: accuracy 0.5 vs confidence 0.9; bin (0.1, 0.2]: 0 vs 0.2; each half the prompts.
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    assert expected_calibration_error(conf, correct, 1) == pytest.approx(abs(0.25 - 0.55))
    rows = pd.DataFrame({"p_top1": conf, "correct": correct.astype(bool), "p_answer": [0.9, 0.1, 0.1, 0.0],
                         "pi_answer": [1.0, 2.0, 3.0, 4.0], "p_before_top1": conf})
    m = calibration_metrics(rows, 10)
    assert m["brier"] == pytest.approx((0.01 + 0.81 + 0.04 + 0.04) / 4)
    assert m["accuracy"] == 0.25 and m["pi_answer"] == 2.5 and m["n"] == 4


def test_folds_keep_subjects_together_and_are_seeded():
    subjects = ["a", "b", "c", "d", "e"] * 4
    folds = assign_folds(subjects, 2, True, seed=0)
    for s in set(subjects):
        assert len({f for f, t in zip(folds, subjects, strict=True) if t == s}) == 1
    assert set(folds) == {0, 1}
    assert (assign_folds(subjects, 2, True, seed=0) == folds).all()
    by_prompt = assign_folds(subjects, 3, False, seed=1)
    assert sorted(np.bincount(by_prompt).tolist()) == [6, 7, 7]


def test_edits_touch_only_the_chosen_components_at_the_end():
    comps = [Component("head", 2, 0), Component("head", 2, 1), Component("mlp", 2)]
    chosen = np.array([False, True, True])
    heads = torch.randn(2, 4, 3, 5)  # [B, S, H, d]
    mlp = torch.randn(2, 4, 5)
    cfg = SuppressConfig(scale_factor=0.25)
    zero = make_edits(comps, chosen, "zero", cfg, None, "cpu")
    assert set(zero) == {("head_out", 2), ("mlp_out", 2)}
    h = zero[("head_out", 2)](heads)
    assert torch.equal(h[:, -1, 1], torch.zeros(2, 5))
    assert torch.equal(h[:, :-1], heads[:, :-1]) and torch.equal(h[:, :, [0, 2]], heads[:, :, [0, 2]])
    assert torch.equal(zero[("mlp_out", 2)](mlp)[:, -1], torch.zeros(2, 5))
    scaled = make_edits(comps, chosen, "scale", cfg, None, "cpu")[("head_out", 2)](heads)
    assert torch.allclose(scaled[:, -1, 1], 0.25 * heads[:, -1, 1])
    means = np.arange(15, dtype=np.float32).reshape(3, 5)
    meaned = make_edits(comps, chosen, "mean", cfg, means, "cpu")[("mlp_out", 2)](mlp)
    assert torch.equal(meaned[:, -1], torch.tensor(means[2]).expand(2, 5))
    every = make_edits(comps, chosen, "zero", SuppressConfig(positions="all", modes=("zero",)), None, "cpu")
    assert every[("head_out", 2)](heads)[:, :, 1].abs().sum() == 0


def test_bad_settings_are_user_errors():
    for bad in (SuppressConfig(folds=1), SuppressConfig(modes=("drop",)), SuppressConfig(positions="all"),
                SuppressConfig(threshold_share=1.0), SuppressConfig(modes=())):
        with pytest.raises(UserError):
            validate(bad)
    assert resolve_layers(SuppressConfig(), 30) == [29]
    assert resolve_layers(SuppressConfig(last_layers=3), 30) == [27, 28, 29]
    assert resolve_layers(SuppressConfig(layers=(-1, 5)), 30) == [5, 29]
    with pytest.raises(UserError):
        resolve_layers(SuppressConfig(last_layers=31), 30)
    with pytest.raises(UserError):
        resolve_layers(SuppressConfig(layers=(30,)), 30)


def test_stage_is_registered_and_configurable():
    from recallscope.pipeline import available_stages, make_configs

    assert "suppress" in available_stages()
    cfg = make_configs({"layers": [28, 29], "suppress.scale_factor": 0.0})["suppress"]
    assert list(cfg.layers) == [28, 29] and cfg.scale_factor == 0.0


# ----------------------------------------------------------------------------- real model
def _prompts(model, n, shots=0):
    from recallscope.recall import recall
    from recallscope.tasks import build_prompts, load_relation

    ps = build_prompts(load_relation("country_capital_extended"), model.tokenizer, shots=shots, seed=0, max_prompts=n)
    rec = recall(model, ps, progress=False)
    return rec.known_prompts(), rec.unknown_prompts()


@pytest.mark.slow
def test_dla_of_every_write_sums_to_pi(smollm2):
    from recallscope.tasks import build_prompts, load_relation

    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=1, seed=0, max_prompts=5)
    total, pi = attribution_identity(smollm2, list(ps.prompts))
    assert np.abs(pi).min() > 1.0
    np.testing.assert_allclose(total, pi, atol=1e-3)


@pytest.mark.slow
def test_suppress_on_real_model_identities(smollm2):
    known, unknown = _prompts(smollm2, 12)
    cfg = SuppressConfig(modes=("zero", "scale"), scale_factor=0.0, n_bootstrap=200)
    res = suppress(smollm2, known, unknown, cfg, progress=False)
    d = res.to_dict()
    assert len(d["components"]) == smollm2.cfg.n_heads + 1
    assert d["n_known"] + d["n_unknown"] == 12
    assert {"component", "layer", "head", "mean_dla", "ci_low", "ci_high", "share_negative", "is_suppressor"} <= set(d["components"][0])
    for c in d["components"]:
        assert c["ci_low"] <= c["mean_dla"] <= c["ci_high"]
        assert c["is_suppressor"] == (c["mean_dla"] < 0 and c["share_negative"] > 0.5)
    tables = res.tables()
    assert list(tables) == ["suppress", "eval"] and "table" not in tables["suppress"] and "table" not in tables["eval"]
    frame = tables["suppress"]
    ev = tables["eval"]
    # Every prompt is held out exactly once per mode.
    assert (ev.groupby("mode").size() == 12).all()
    # Scaling by 0 is zero-ablation: the same numbers.
    z = ev[ev["mode"] == "zero"].sort_values(["population", "prompt_index"])
    s = ev[ev["mode"] == "scale"].sort_values(["population", "prompt_index"])
    np.testing.assert_allclose(z["p_answer"].to_numpy(), s["p_answer"].to_numpy(), atol=1e-6)
    # The final layer's DLA table is the per-prompt values the summary averages.
    dla = frame
    l29h0 = next(c for c in d["components"] if c["component"] == "L29H0")
    assert dla[dla["component"] == "L29H0"]["dla"].mean() == pytest.approx(l29h0["mean_dla"])
    assert len(figures(res.tables(), d)) == 2

    # Rescaling by 1 changes nothing: after equals before on every held-out prompt.
    same = suppress(smollm2, known, unknown, SuppressConfig(modes=("scale",), scale_factor=1.0, n_bootstrap=200), progress=False)
    for pop in ("known", "unknown"):
        m = same.to_dict()["mitigation"]["scale"][pop]
        assert m["after"]["p_answer"] == pytest.approx(m["before"]["p_answer"], abs=1e-5)
        assert m["after"]["accuracy"] == m["before"]["accuracy"]
