"""Stage surgery (the mover heads ablated against random head sets): the batched engine (every
head set a variant over the shared prefix, from its first ablated layer) equals the naive loop
(one full forward per head set) in float64 on a tiny model of every family and on smollm2-135m,
at the end position and at every position; an end-position ablation of one head is the patch
stage's mean-ablation of that head; the null sets are what their rules say; the p-value and the
effect size are their formulas; bad settings are one line, exit 2; the claims row (C9) compares the
movers' mean drop with each null's 95th percentile and the floor."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.localise import FAMILIES, tiny, tiny_prompts

from recallscope import patch as P
from recallscope import surgery as S
from recallscope.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, ClaimsConfig
from recallscope.cli import main
from recallscope.components import Component
from recallscope.errors import UserError
from recallscope.figures import surgery as FS
from recallscope.models.view import ModelView
from recallscope.tasks.prompts import make_batch

SETS = [((0, 1),), ((1, 2),), ((0, 0), (1, 3)), ((0, 2), (0, 3), (1, 0)), ((1, 1), (1, 2))]


def corrupted(batch, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n corruptions per row: the subject's tokens replaced by random ones (positions line up), uniform weights."""
    gen = torch.Generator().manual_seed(seed)
    B, Sq = batch.input_ids.shape
    ids = batch.input_ids[:, None].repeat(1, n, 1)
    for row, p in enumerate(batch.prompts):
        lo, hi = p.subject_span
        pad = int(batch.pad[row])
        ids[row, :, pad + lo : pad + hi] = torch.randint(3, 200, (n, hi - lo), generator=gen)
    return ids, torch.full((B, n), 1.0 / n, dtype=torch.float64)


def both_engines(view: ModelView, batch, sets, scope: str):
    ids, weight = corrupted(batch)
    sb = S.prepare_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    got = S.batched_batch(view, sb, S.set_masks(sets, view.cfg.n_layers, view.cfg.n_heads), scope)
    z_mean = S.naive_means(view, batch.input_ids, batch.attention_mask, ids, weight)
    ref = S.naive_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), z_mean, sets, scope)
    return sb, got, ref


@pytest.mark.parametrize("scope", S.SCOPES)
@pytest.mark.parametrize("name", FAMILIES)
def test_batched_engine_equals_one_forward_per_head_set_on_tiny_models(name, scope):
    model = tiny(name)
    batch = make_batch(list(tiny_prompts(model=model).prompts), 0)
    sets = [s for s in SETS if all(layer < model.cfg.n_layers for layer, _ in s)]
    sb, (p, correct), (p_ref, correct_ref) = both_engines(model.view, batch, sets, scope)
    assert p.shape == (3, len(sets)) and p.dtype == torch.float64
    assert (p - p_ref).abs().max().item() <= 1e-12
    assert torch.equal(correct, correct_ref)
    # the ablations matter (this test could fail): p(Y) moves by more than 1% of itself on some set
    assert ((p - sb.p_clean[:, None]).abs() / sb.p_clean[:, None]).max().item() > 0.01


def test_batched_engine_in_chunks_equals_one_chunk():
    """Sets beyond ``max_rows`` run in chunks; the sets' order and values do not depend on it."""
    model = tiny("llama_gqa")
    batch = make_batch(list(tiny_prompts(model=model).prompts), 0)
    ids, weight = corrupted(batch)
    sb = S.prepare_batch(model.view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    masks = S.set_masks(SETS[::-1] + SETS, model.cfg.n_layers, model.cfg.n_heads)  # first layers out of order
    whole = S.batched_final_resid(model.view, sb, masks, "all", max_rows=10_000)
    chunked = S.batched_final_resid(model.view, sb, masks, "all", max_rows=sb.input_ids.shape[0])  # one set per chunk
    assert (whole - chunked).abs().max().item() <= 1e-12
    assert (whole[:, : len(SETS)] - whole[:, len(SETS) :].flip(1)).abs().max().item() <= 1e-12


def test_corrupted_means_reuse_the_clean_prefix_and_equal_the_clean_run_before_the_subject():
    """prepare_batch computes the corrupted runs from the first differing column only; the full
    runs agree there, and before it their mean is the clean run itself (so an every-position
    ablation is the identity there)."""
    model = tiny("gemma3_text")  # post-attention norm and a sliding window
    batch = make_batch(list(tiny_prompts(model=model).prompts), 0)
    ids, weight = corrupted(batch)
    view = model.view
    sb = S.prepare_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    full = S.naive_means(view, batch.input_ids, batch.attention_mask, ids, weight)
    assert (sb.z_mean - full[:, sb.lo :]).abs().max().item() <= 1e-12
    Sq = batch.input_ids.shape[1]
    clean = view.trace(batch.input_ids, batch.attention_mask, positions=torch.arange(Sq).expand(3, Sq), record=["z"]).z
    real = batch.attention_mask.bool()[:, : sb.lo]
    assert sb.lo > 0 and (full[:, : sb.lo] - clean[:, : sb.lo])[real].abs().max().item() <= 1e-12
    assert (full[:, sb.lo :] - clean[:, sb.lo :]).abs().max().item() > 1e-3


def test_an_ablation_with_the_clean_writes_changes_nothing():
    model = tiny("gpt2")
    batch = make_batch(list(tiny_prompts(model=model).prompts), 0)
    ids, weight = corrupted(batch)
    sb = S.prepare_batch(model.view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    Sq = batch.input_ids.shape[1]
    positions = torch.arange(sb.lo, Sq).expand(3, Sq - sb.lo)
    sb.z_mean = model.view.trace(batch.input_ids, batch.attention_mask, positions=positions, record=["z"]).z
    for scope in S.SCOPES:
        p, _ = S.batched_batch(model.view, sb, S.set_masks(SETS, 2, 4), scope)
        assert (p - sb.p_clean[:, None]).abs().max().item() <= 1e-12


@pytest.mark.parametrize("name", ["llama_gqa", "gemma3_text"])
def test_end_position_ablation_of_one_head_is_the_patch_stages_mean_ablation(name):
    """One head, end position: the same intervention as patch's (same corruptions, same mean,
    same edit site), so the same final residual as patch's exact engine."""
    model = tiny(name)
    view = model.view
    batch = make_batch(list(tiny_prompts(model=model).prompts), 0)
    ids, weight = corrupted(batch)
    sb = S.prepare_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    heads = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    ours = S.batched_final_resid(view, sb, S.set_masks([(h,) for h in heads], model.cfg.n_layers, model.cfg.n_heads), "end")
    base = P.record_run(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), prefix=True)
    mean = P.corrupted_mean(view, base, ids, weight)
    theirs = P.exact_final_resid(view, base, mean, [Component("head", layer, h) for layer, h in heads])
    assert (ours - theirs).abs().max().item() <= 1e-12


# ----------------------------------------------------------------------------- the null sets
def test_layer_null_draws_the_movers_count_per_layer_from_the_other_heads():
    movers = ((3, 1), (3, 5), (20, 0))
    null = S.layer_null(movers, 9, 200, np.random.default_rng(0))
    assert null.n_possible == math.comb(7, 2) * 8 == 168 and null.exhaustive and len(set(null.sets)) == 168
    for s in null.sets:
        assert sorted(layer for layer, _ in s) == [3, 3, 20] and not set(s) & set(movers)
    three = S.layer_null(((1, 0), (5, 2), (9, 8)), 9, 200, np.random.default_rng(0))
    assert three.n_possible == 512 and len(set(three.sets)) == 200 and not three.exhaustive
    assert three.sets == S.layer_null(((1, 0), (5, 2), (9, 8)), 9, 200, np.random.default_rng(0)).sets  # seeded
    assert S.layer_null(((0, 0), (0, 1)), 3, 10, np.random.default_rng(0)).n_possible == 0  # one other head: no set


def test_norm_null_takes_one_head_from_each_movers_pool_of_nearest_norms():
    norms = np.array([[1.0, 2.0, 4.0, 8.0], [1.1, 2.2, 4.4, 8.8], [0.0, 100.0, 3.0, 7.0]])
    movers = ((0, 1), (2, 1))
    pools = S.norm_pools(movers, norms, 2)
    # 2.2 and 3.0 nearest 2.0 in log (1.0 and 4.0 are a factor 2 off); 8.8 and 8 nearest 100
    assert pools == [[(1, 1), (2, 2)], [(1, 3), (0, 3)]]
    null = S.norm_null(movers, norms, 2, 4, np.random.default_rng(0), "change")
    assert null.n_possible == 4 and null.exhaustive
    assert {frozenset(s) for s in null.sets} == {frozenset((a, b)) for a in pools[0] for b in pools[1]}
    # movers of equal norm share their pool: C(10, 3) = 120 < 200 sets, so the pools grow to 12 (C(12, 3) = 220)
    flat = np.arange(1.0, 31.0)[:, None] * np.ones((1, 9))
    movers3 = ((10, 0), (10, 1), (10, 2))
    grown = S.norm_null(movers3, flat, 10, 200, np.random.default_rng(0), "change")
    assert grown.pool == 12 and grown.n_possible == math.comb(12, 3) and len(grown.sets) == 200
    assert "grown from 10" in grown.rule
    assert S.norm_null(movers3, flat, 10, 120, np.random.default_rng(0), "change").pool == 10


def test_p_value_and_effect_size_are_their_formulas():
    got = S.null_stats(5.0, np.array([1.0, 2.0, 5.0, 7.0, 3.0]))
    assert got["p_value"] == pytest.approx((1 + 2) / (1 + 5)) and got["min_p_value"] == pytest.approx(1 / 6)
    assert got["null_median"] == 3.0 and got["null_mad"] == 2.0
    assert got["effect_size"] == pytest.approx((5.0 - 3.0) / (1.4826 * 2.0))
    assert got["null_quantile"] == pytest.approx(np.quantile([1, 2, 3, 5, 7], 0.95))
    flat = S.null_stats(1.0, np.zeros(10))
    assert flat["effect_size"] is None and flat["p_value"] == pytest.approx(1 / 11)


# ----------------------------------------------------------------------------- the stage
def test_stage_on_the_planted_control_ablates_the_movers_claims_heads(tmp_path):
    """On ``planted`` the movers claim names L1H0 (the planted mover), L2H0 (the suppressor) and
    a third head of layer 1 (L1H1 or L1H2, whose patching effects are ~1e-4 %); ablating them
    removes the fact, ablating any other three heads does nothing."""
    from recallscope import claims, pipeline

    ctx, summary = pipeline.execute(
        pipeline.RunConfig(model="planted", relation="paper_country_capital", max_prompts=20),
        ["surgery"],
        out=str(tmp_path),
        progress=False,
    )
    entry = summary["stages"]["surgery"]
    named = claims.patching_movers(summary["stages"]["movers"], claims.ClaimsConfig())
    assert entry["heads"] == [f"L{h['layer']}H{h['head']}" for h in named]
    assert entry["heads"][:2] == ["L1H0", "L2H0"] and entry["heads"][2] in ("L1H1", "L1H2")
    assert [(n["null"], n["n_sets"], n["exhaustive"]) for n in entry["nulls"]] == [("layer", 3, True), ("norm", 84, True)]
    results = pd.DataFrame(entry["results"]).set_index(["scope", "null", "metric"])
    for scope in S.SCOPES:
        for null in S.NULLS:
            row = results.loc[(scope, null, "p_answer")]
            assert row["movers_drop"] > 0.5 and abs(row["null_quantile"]) < 1e-3
            assert row["p_value"] == pytest.approx(row["min_p_value"])
            assert results.loc[(scope, null, "accuracy"), "movers_drop"] == 1.0
    tables = ctx.results["surgery"].tables()
    assert list(tables) == ["surgery", "prompts", "nulls", "heads"]
    assert len(tables["prompts"]) == 2 * (1 + 3 + 84) * entry["n_prompts"]
    assert tables["heads"]["in_mover_set"].sum() == 3 and len(tables["heads"]) == 12
    # the figures: per metric and scope, the nulls' histograms on shared bins, the movers' drop marked
    figs = FS.figures(tables, entry)
    assert len(figs) == 4 and ctx.results["surgery"].plot().layout.title.text == figs[0].layout.title.text
    end_p = results.loc[("end", "layer", "p_answer")]
    assert figs[0].layout.shapes[0].x0 == pytest.approx(end_p["movers_drop"])
    assert [t.xbins.size for t in figs[0].data] == [figs[0].data[0].xbins.size] * 2
    assert f"p = {end_p['p_value']:.3g}" in figs[0].data[0].name


def test_max_prompts_ablates_a_seeded_draw_of_the_prompts(tmp_path):
    """surgery.max_prompts (the study's cap: the stage costs ~10 CPU s per prompt): a seeded draw of
    that many of the prompts, each measured exactly as without the cap; the summary counts the rest."""
    from recallscope import pipeline

    def run(folder, **settings):
        ctx, summary = pipeline.execute(
            pipeline.RunConfig(model="planted", relation="paper_country_capital", max_prompts=20),
            ["surgery"],
            out=str(tmp_path / folder),
            overrides={f"surgery.{k}": v for k, v in settings.items()},
            progress=False,
        )
        return summary["stages"]["surgery"], ctx.results["surgery"].tables()["prompts"]

    full, every = run("all", scopes=("end",))
    capped, some = run("capped", scopes=("end",), max_prompts=4)
    again, same = run("again", scopes=("end",), max_prompts=4)
    other, _ = run("other", scopes=("end",), max_prompts=4, seed=1)
    assert full["n_prompts"] > 4 and full["n_sampled_out"] == 0 and full["max_prompts"] is None
    assert capped["n_prompts"] == 4 and capped["n_sampled_out"] == full["n_prompts"] - 4 and capped["max_prompts"] == 4
    pd.testing.assert_frame_equal(some, same)  # the draw is the seed's
    # each drawn prompt's ablations are its rows of the uncapped run (the movers' set: p_clean names the prompt;
    # float32 in batches padded otherwise: equal to 1e-4)
    movers, drawn = every[every["set_id"] == 0], some[some["set_id"] == 0]
    nearest = np.abs(drawn["p_clean"].to_numpy()[:, None] - movers["p_clean"].to_numpy()[None]).argmin(1)
    np.testing.assert_allclose(drawn["p_clean"], movers["p_clean"].to_numpy()[nearest], rtol=0, atol=1e-4)
    np.testing.assert_allclose(drawn["p_ablated"], movers["p_ablated"].to_numpy()[nearest], rtol=0, atol=1e-4)
    assert len(set(nearest)) == 4
    assert other["n_prompts"] == 4


def test_bad_settings_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["surgery", "--model", "planted", "--set", "surgery.nulls=shuffle"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "surgery.nulls" in err and "Traceback" not in err
    with pytest.raises(UserError, match="L9H0 out of range"):
        S.check_heads([(9, 0)], 3, 4)
    with pytest.raises(UserError, match="no mover head"):
        S.check_heads([], 3, 4)


@pytest.mark.slow
@pytest.mark.parametrize("scope", S.SCOPES)
def test_batched_engine_equals_naive_loop_on_smollm2_in_float64(smollm2, scope):
    from recallscope.tasks import build_prompts, load_relation

    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    prompts = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, seed=0, max_prompts=6)
    kept, found, _ = P.with_corruptions(prompts, smollm2.tokenizer, 4, 2)
    chosen = list(kept.prompts[:3])
    batch = make_batch(chosen, smollm2.tokenizer.pad_token_id)
    ids, weight = P._aligned_corruptions(batch, [found[kept.prompts.index(p)] for p in chosen])
    sets = [((20, 1), (25, 4)), ((3, 0),), ((12, 2), (12, 5), (29, 8))]
    sb = S.prepare_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    p, correct = S.batched_batch(view, sb, S.set_masks(sets, 30, 9), scope)
    z_mean = S.naive_means(view, batch.input_ids, batch.attention_mask, ids, weight)
    p_ref, correct_ref = S.naive_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), z_mean, sets, scope)
    assert (p - p_ref).abs().max().item() <= 1e-10
    assert torch.equal(correct, correct_ref)
    assert (p - sb.p_clean[:, None]).abs().max().item() > 1e-4  # some set changes p(Y)


# ----------------------------------------------------------------------------- the claims row
def _table(movers: np.ndarray, null_means: dict[str, np.ndarray], seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A surgery prompts table at the end scope: the movers' per-prompt drops, and per null sets whose
    per-prompt drops scatter around the given means; the summary the row reads."""
    rng = np.random.default_rng(seed)
    n = len(movers)
    rows, set_id = [], 0
    for null, drops in [("movers", [movers])] + [(k, [m + rng.normal(0, 0.01, n) for m in v]) for k, v in null_means.items()]:
        for d in drops:
            rows += [{"scope": "end", "set_id": set_id, "null": null, "prompt_index": i, "drop_p": float(d[i])} for i in range(n)]
            set_id += 1
    summary = {"heads": ["L3H1", "L5H2"], "scopes": ["end"], "quantile": 0.95, "results": []}
    return pd.DataFrame(rows), summary


HEADS = [{"layer": 3, "head": 1}, {"layer": 5, "head": 2}]


def test_necessity_row_compares_the_movers_with_each_nulls_95th_percentile():
    rng = np.random.default_rng(1)
    nulls = {"layer": rng.normal(0.02, 0.01, 200), "norm": rng.normal(0.03, 0.02, 150)}
    table, summary = _table(0.3 + rng.normal(0, 0.05, 40), nulls)
    row = S.necessity_claim(table, summary, HEADS, ClaimsConfig())
    means = table.groupby("set_id")["drop_p"].mean()
    layer_ids = table.loc[table["null"] == "layer", "set_id"].unique()
    assert row.verdict == HOLDS and row.about == "L3H1, L5H2"
    # which "mover heads": patching's (C1's), not the movers stage's test (a new user read them as one)
    assert "whether or not they pass the movers stage's own mover test" in row.detail
    assert row.value == pytest.approx(means[0] - np.quantile(means[layer_ids], 0.95))
    assert row.ci_low < row.value < row.ci_high and row.evidence["drop_p"] == pytest.approx(means[0])
    assert [c.setting for c in row.conditions] == [None, None, "claims.min_surgery_drop_p"]
    # movers no worse than the null's bulk: the excess lies wholly below 0, the row does not hold
    low, summary = _table(np.full(40, 0.02) + rng.normal(0, 0.005, 40), nulls)
    assert S.necessity_claim(low, summary, HEADS, ClaimsConfig()).verdict == FAILS
    # a drop under the floor decides on its own (every null set lower still: the excess is met)
    tiny, summary = _table(np.full(40, 1e-6), {"layer": np.full(20, -0.05), "norm": np.full(20, -0.05)})
    row = S.necessity_claim(tiny, summary, HEADS, ClaimsConfig())
    assert row.verdict == FAILS and row.margin < 0 and row.decided_by == "movers' mean drop in p(Y) (probability)"
    assert [c.state() for c in row.conditions] == ["met", "met", "failed"]
    # movers at the null's 95th percentile, their drops spread over prompts: the excess straddles 0
    close = {"layer": rng.normal(0.02, 0.01, 200), "norm": rng.normal(0.02, 0.01, 200)}
    edge, summary_edge = _table(0.037 + rng.normal(0, 0.05, 40), close)
    row = S.necessity_claim(edge, summary_edge, HEADS, ClaimsConfig())
    assert row.verdict == INCONCLUSIVE and row.ci_low < 0 < row.ci_high and row.prompts_needed > 40
    # an ablation the stage did not make
    assert S.necessity_claim(table, summary, HEADS, ClaimsConfig(surgery_scope="all")).verdict == NOT_MEASURABLE
    # the heads the movers claim names now must be the heads ablated; the stage must have run
    assert S.necessity_claim(table, summary, HEADS[:1], ClaimsConfig()).verdict == NOT_MEASURABLE
    assert S.necessity_claim(None, None, HEADS, ClaimsConfig()).verdict == NOT_MEASURABLE
    # the same resamples for the same seed, others for another
    first, second = (S.necessity_claim(table, summary, HEADS, ClaimsConfig(seed=seed)) for seed in (0, 0))
    assert (first.ci_low, first.ci_high) == (second.ci_low, second.ci_high)
    assert first.ci_low != S.necessity_claim(table, summary, HEADS, ClaimsConfig(seed=1)).ci_low
