import dataclasses

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


# ----------------------------------------------------------------------------- the cached mitigation
def _naive_evals(model, known, unknown, config):
    """The mitigation as the stage computed it before the cache: one full forward per held-out prompt
    and variant (``evaluate``), the suppressors and mean writes chosen as the stage chooses them."""
    from recallscope.suppress import candidate_components, evaluate, measure_clean

    layers = resolve_layers(config, model.cfg.n_layers)
    comps = candidate_components(model.cfg.n_layers, model.cfg.n_heads, layers)
    prompts = list(known.prompts) + list(unknown.prompts)
    is_known = np.array([True] * len(known) + [False] * len(unknown))
    clean = measure_clean(model, prompts, comps, sorted(set(layers) | {model.cfg.n_layers - 1}), config.batch_size, False)
    fold = assign_folds([p.subject for p in prompts], config.folds, config.group_by_subject, config.seed)
    rows = []
    for f in range(config.folds):
        held = np.flatnonzero(fold == f)
        chosen = choose_suppressors(clean.dla[(fold != f) & is_known], config.threshold_share)
        for mode in config.modes:
            mean_writes = clean.writes[fold != f].mean(0) if mode == "mean" else None
            edits = make_edits(comps, chosen, mode, config, mean_writes, model.device)
            if not edits or not len(held):
                continue
            after = evaluate(model, [prompts[i] for i in held], edits, clean.stats["top1_id"][held], config.batch_size)
            for j, i in enumerate(held):
                rows.append({"mode": mode, "population": "known" if is_known[i] else "unknown",
                             "prompt_index": i if is_known[i] else i - len(known),
                             **{k: float(after[k][j]) for k in ("p_answer", "pi_answer", "p_top1", "p_before_top1", "top1_id")}})
    return pd.DataFrame(rows)


def _max_delta(res, naive) -> float:
    ev = res.tables()["eval"]
    ev = ev[ev["mode"] != "before"]
    merged = naive.merge(ev, on=["mode", "population", "prompt_index"], suffixes=("_naive", ""))
    assert len(merged) == len(naive) > 0
    assert (merged["top1_id_naive"] == merged["top1_id"]).all()
    return max(float(np.abs(merged[f"{k}_naive"] - merged[k]).max()) for k in ("p_answer", "pi_answer", "p_top1", "p_before_top1"))


def _tiny_suppress_prompts(model, n: int = 8):
    """n random-token prompts of different lengths (left padding differs per row), 4 subjects."""
    from recallscope.tasks.prompts import Prompt, PromptSet
    from recallscope.tasks.relation import Relation, Sample

    gen = torch.Generator().manual_seed(3)
    relation = Relation("tiny", ("{} is",), ("{} is",), (Sample("s", "o"),), "test")
    prompts = []
    for i in range(n):
        ids = tuple(torch.randint(3, 200, (5 + (3 * i) % 7,), generator=gen).tolist())
        logits = model.view.trace(torch.tensor([ids]), record=["logits"]).logits[0, 0]
        answer = int(logits.argmax()) if i % 3 else int(logits.argsort()[-2])  # top-1 ("known") or runner-up
        prompts.append(Prompt(text=f"p{i}", subject=f"s{i % 4}", answer="o", template="{} is", demos=(), input_ids=ids,
                              subject_span=(0, 1), answer_id=answer, index=i))
    known = PromptSet(relation, 0, 0, tuple(p for i, p in enumerate(prompts) if i % 3))
    unknown = PromptSet(relation, 0, 0, tuple(p for i, p in enumerate(prompts) if not i % 3))
    return known.subset([True] * len(known)), unknown.subset([True] * len(unknown))


@pytest.mark.parametrize("family", ["gpt2", "opt", "gpt_neox_parallel", "gpt_neox_sequential", "llama_gqa", "gemma3_text",
                                    "gemma3_text_softcap_bias", "gemma3_multimodal"])
def test_cached_mitigation_equals_full_forwards_on_every_family(family):
    """Rerunning the edited layers from the cache gives the full forwards' numbers (float64)."""
    import types

    from helpers.localise import tiny

    model = tiny(family)
    model = dataclasses.replace(model, tokenizer=types.SimpleNamespace(pad_token_id=0))
    known, unknown = _tiny_suppress_prompts(model)
    worst = 0.0
    for config in (
        SuppressConfig(last_layers=2, threshold_share=0.0, n_bootstrap=20, batch_size=3),
        SuppressConfig(last_layers=1, threshold_share=0.0, n_bootstrap=20, positions="all", modes=("zero", "scale")),
        SuppressConfig(layers=(0,), threshold_share=0.0, n_bootstrap=20, folds=3, batch_size=4),
    ):
        res = suppress(model, known, unknown, config, progress=False)
        naive = _naive_evals(model, known, unknown, config)
        ev = res.tables()["eval"]
        before = ev[ev["mode"] == "before"].set_index(["population", "prompt_index"])["pi_answer"]
        after = naive.set_index(["population", "prompt_index"])["pi_answer"]
        assert (after - before.reindex(after.index)).abs().max() > 1e-2  # the edits change the model
        worst = max(worst, _max_delta(res, naive))
    print(f"{family}: max |delta| cached vs full forwards = {worst:.3g}")
    assert worst < 1e-10, worst


@pytest.mark.slow
def test_cached_mitigation_equals_full_forwards_on_smollm2(smollm2):
    """The same on the real model in float64, on a subset (24 prompts, the final two layers)."""
    from recallscope.models import Model
    from recallscope.models.view import ModelView

    model64 = Model(name=smollm2.name, hf=None, tokenizer=smollm2.tokenizer, cfg=smollm2.cfg,
                    view=ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64)), model_hash="", source="test")
    known, unknown = _prompts(model64, 24)
    config = SuppressConfig(last_layers=2, n_bootstrap=50)
    res = suppress(model64, known, unknown, config, progress=False)
    delta = _max_delta(res, _naive_evals(model64, known, unknown, config))
    logits = _replay_vs_full(model64, list(known.prompts)[:6] + list(unknown.prompts)[:3], [28, 29], "end")
    print(f"smollm2-135m float64: max |delta| cached vs full forwards: eval table {delta:.3g}, logits {logits:.3g}")
    assert delta < 1e-6 and logits < 1e-6


def _replay_vs_full(model, prompts, layers, positions) -> float:
    """max |Δ logits| between the cache replay and ``view.trace`` with the same edits (every other
    head and MLP of ``layers`` zeroed, then scaled by 0.3), on a subset of each batch's rows."""
    from recallscope.suppress import candidate_components, measure_clean

    cfg = model.cfg
    comps = candidate_components(cfg.n_layers, cfg.n_heads, layers)
    clean = measure_clean(model, prompts, comps, layers, 3, False, replay_from=layers[0], positions=positions)
    chosen = np.arange(len(comps)) % 2 == 0
    config = SuppressConfig(positions=positions, scale_factor=0.3, modes=("zero", "scale"))
    pad = model.tokenizer.pad_token_id
    worst = 0.0
    for mode in config.modes:
        edits = make_edits(comps, chosen, mode, config, None, model.device)
        for rb in clean.replay.batches:
            sub = rb.rows(np.arange(len(rb.indices)) != 0) if len(rb.indices) > 1 else rb  # a subset of rows, as per fold
            replayed = model.view.forward_from(sub.resid, layers[0], sub.attention_mask, sub.past, record=["logits"], edits=edits)
            S = sub.attention_mask.shape[1]
            ids = torch.stack([torch.nn.functional.pad(torch.tensor(prompts[i].input_ids), (S - prompts[i].n_tokens, 0), value=pad)
                               for i in sub.indices])
            full = model.view.trace(ids, sub.attention_mask, record=["logits"], edits=edits)
            clean_full = model.view.trace(ids, sub.attention_mask, record=["logits"])
            assert (full.logits - clean_full.logits).abs().max() > 1e-3  # the edits change the logits
            worst = max(worst, float((replayed.logits - full.logits).abs().max()))
    return worst


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox_parallel", "llama_gqa", "gemma3_text_softcap_bias"])
@pytest.mark.parametrize("positions", ["end", "all"])
def test_replayed_logits_equal_the_full_forward(family, positions):
    """The logits themselves (float64, before any statistic): cache replay vs ``view.trace`` with the edits."""
    import types

    from helpers.localise import tiny

    model = dataclasses.replace(tiny(family), tokenizer=types.SimpleNamespace(pad_token_id=0))
    known, unknown = _tiny_suppress_prompts(model)
    worst = _replay_vs_full(model, list(known.prompts) + list(unknown.prompts), [model.cfg.n_layers - 2, model.cfg.n_layers - 1],
                            positions)
    print(f"{family} positions={positions}: max |delta logits| = {worst:.3g}")
    assert worst < 1e-10
