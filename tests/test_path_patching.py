"""Path patching (``patch`` mode ``path``): the exact end-position MLP-chain engine equals the
naive frozen-heads loop (a full forward per sender with every head's clean output re-imposed, as
the authors' ``path_patching`` freezes q/k/v) on a tiny model of every family and on
smollm2-135m; what frozen heads leave (only the end position, only through MLPs) holds."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from helpers.tiny import PAD, VOCAB, left_pad, random_prompts, tiny_model
from recallscope import patch as P
from recallscope import path_patching as PP
from recallscope.models.adapters import extract
from recallscope.models.view import ModelView
from recallscope.tasks import PromptSet, build_prompts, load_relation, make_batch
from recallscope.tasks.prompts import swapped_subject_prompts

FAMILIES = ["gpt2", "opt", "gpt_neox_parallel", "gpt_neox_sequential", "llama_gqa", "gemma3_text", "gemma3_text_softcap_bias"]


def tiny_setup(name: str, n_corrupt: int = 3):
    """A float64 tiny model, a left-padded batch, its clean record and a corrupted-mean record."""
    cfg, weights = extract(tiny_model(name))
    view = ModelView(cfg, weights.to(dtype=torch.float64))
    ids, mask = left_pad(random_prompts(seed=1), PAD)
    B, S = ids.shape
    answers = torch.tensor([5, 17, 42])
    gen = torch.Generator().manual_seed(7)
    corrupt = ids[:, None].repeat(1, n_corrupt, 1)
    corrupt[:, :, S - 4 : S - 2] = torch.randint(3, VOCAB - 3, (B, n_corrupt, 2), generator=gen)
    base = P.record_run(view, ids, mask, answers, prefix=True)
    sender = P.corrupted_mean(view, base, corrupt, torch.full((B, n_corrupt), 1.0 / n_corrupt))
    return view, base, sender


@pytest.mark.parametrize("name", FAMILIES)
def test_path_engine_equals_frozen_heads_loop_on_tiny_models(name):
    view, base, sender = tiny_setup(name)
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    exact = P.recall_pi(view, PP.path_final_resid(view, base.record, sender, comps), base.answer_ids)
    naive = PP.frozen_heads_pi(view, base.input_ids, base.attention_mask, base.answer_ids, sender, comps)
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)
    assert (exact - naive).abs().max().item() <= 1e-6 * pi_clean.abs().max().item()
    assert (exact - pi_clean).abs().max().item() > 1e-2  # the patches move π (the check is not vacuous)
    # a dataset mean (one vector, leading dimension 1) broadcasts over the batch the same way
    mean = P.RunRecord(*(getattr(sender, f.name).mean(0, keepdim=True) for f in dataclasses.fields(P.RunRecord)))
    exact = P.recall_pi(view, PP.path_final_resid(view, base.record, mean, comps), base.answer_ids)
    naive = PP.frozen_heads_pi(view, base.input_ids, base.attention_mask, base.answer_ids, mean, comps)
    assert (exact - naive).abs().max().item() <= 1e-6 * pi_clean.abs().max().item()


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox_parallel", "gemma3_text_softcap_bias"])
def test_whole_attention_output_sender(name):
    """ATTN{l} (a layer's whole attention output) as a sender: the engine equals the loop."""
    view, base, sender = tiny_setup(name)
    comps = [types.SimpleNamespace(kind="attn", layer=layer, head=None) for layer in range(view.cfg.n_layers)]
    exact = P.recall_pi(view, PP.path_final_resid(view, base.record, sender, comps), base.answer_ids)
    naive = PP.frozen_heads_pi(view, base.input_ids, base.attention_mask, base.answer_ids, sender, comps)
    assert (exact - naive).abs().max().item() <= 1e-10
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)
    assert (exact - pi_clean).abs().max().item() > 1e-2  # the patches move π


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox_parallel", "gemma3_text"])
def test_own_value_changes_nothing_and_last_layer_heads_are_direct(name):
    view, base, sender = tiny_setup(name)
    rec = base.record
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    same = PP.path_final_resid(view, rec, rec, comps)
    assert (same - rec.resid_final[:, None]).abs().max().item() <= 1e-10
    # a head of the last layer: in a sequential model its change passes through the last MLP,
    # in a parallel-residual one it is direct (the last MLP reads r[L-1], untouched by it)
    L = view.cfg.n_layers
    head = P.Component("head", L - 1, 0)
    out = PP.path_final_resid(view, rec, sender, [head])[:, 0]
    # head_out is the head's write at the output projection; the post-attention norm (Gemma) of
    # the sum is recomputed, elsewhere it is the identity
    raw = view.attn_raw(L - 1, heads=rec.head_out[:, L - 1])
    change = view.post_attn(L - 1, raw + sender.head_out[:, L - 1, 0] - rec.head_out[:, L - 1, 0]) - view.post_attn(L - 1, raw)
    direct = rec.resid_final + change
    if view.cfg.parallel_residual:
        assert (out - direct).abs().max().item() <= 1e-10
    else:
        mid = rec.resid_mid[:, L - 1] + change
        assert (out - (mid + view.mlp(L - 1, mid))).abs().max().item() <= 1e-10
        assert (out - direct).abs().max().item() > 1e-6


def test_frozen_heads_differ_from_total_effect():
    """Path and total effects coincide for the last layer's MLP (nothing runs after it) and differ
    for an early head (later heads recompute in the total effect)."""
    view, base, sender = tiny_setup("llama_gqa")
    comps = [P.Component("mlp", view.cfg.n_layers - 1), P.Component("head", 0, 1)]
    path = P.recall_pi(view, PP.path_final_resid(view, base.record, sender, comps), base.answer_ids)
    total = P.exact_pi(view, base, sender, comps)
    assert (path[:, 0] - total[:, 0]).abs().max().item() <= 1e-10
    assert (path[:, 1] - total[:, 1]).abs().max().item() > 1e-4


def test_flop_counts_arithmetic():
    view, _, _ = tiny_setup("llama_gqa")
    comps = P.select_components(view.cfg, ["heads", "mlp"], None)
    f = PP.flop_counts(view, 10, comps)
    assert f["flop_ratio"] == pytest.approx(f["naive_macs"] / f["path_macs"])
    cfg = view.cfg
    mlp = cfg.d_model * view.layer(0).W_in.shape[-1] * 3
    L, H = cfg.n_layers, cfg.n_heads
    assert f["path_macs"] == pytest.approx(sum((L - l) * H * mlp + (L - l - 1) * mlp for l in range(L)))


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 3])
def test_path_engine_equals_frozen_heads_loop_on_smollm2_subset(smollm2, shots):
    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    ps = build_prompts(load_relation("paper_country_capital"), smollm2.tokenizer, shots=shots, max_prompts=3)
    pad = smollm2.tokenizer.pad_token_id or 0
    batch = make_batch(list(ps.prompts), pad)
    base = P.record_run(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), prefix=False)
    corrupted = swapped_subject_prompts(ps, smollm2.tokenizer)
    cb = make_batch(corrupted, pad)
    mean = P.record_run(view, cb.input_ids, cb.attention_mask, cb.answer_ids(), prefix=False)
    mean = P.RunRecord(*(getattr(mean, f.name).mean(0, keepdim=True) for f in dataclasses.fields(P.RunRecord)))
    comps = P.select_components(smollm2.cfg, ["heads", "mlp"], [0, 14, 28, 29])[::3]
    exact = P.recall_pi(view, PP.path_final_resid(view, base, mean, comps), batch.answer_ids())
    naive = PP.frozen_heads_pi(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), mean, comps)
    assert (exact - naive).abs().max().item() <= 1e-6
    assert (exact - P.recall_pi(view, base.resid_final[:, None], batch.answer_ids())).abs().max().item() > 1e-2


def test_aggregates_ratio_of_means_mean_of_ratios_and_bootstrap():
    """The components table's aggregates from a hand-made result: the paper's ratio of means,
    the mean of per-prompt ratios, quantiles, and bootstrap intervals around both."""
    rng = np.random.default_rng(0)
    n, comps = 40, (P.Component("head", 0, 0), P.Component("mlp", 0))
    pi_clean = rng.uniform(1.0, 20.0, n)
    pi_patched = pi_clean[:, None] * np.stack([rng.uniform(0.5, 0.9, n), rng.uniform(0.95, 1.2, n)], axis=1)
    effects = 100 * (pi_patched - pi_clean[:, None]) / pi_clean[:, None]
    result = P.PatchResult(
        prompts=PromptSet(load_relation("paper_country_capital"), 0, 0, ()),
        components=comps,
        effects=effects,
        pi_clean=pi_clean,
        pi_base=pi_clean,
        config=P.PatchConfig(aggregate="ratio_of_means", n_bootstrap=500),
        pi_patched=pi_patched,
    )
    table = result.tables()["components"]
    rom = 100 * (pi_patched.mean(0) - pi_clean.mean()) / pi_clean.mean()
    assert np.allclose(table["effect_ratio_of_means"], rom) and np.allclose(table["effect"], rom)
    assert np.allclose(table["effect_mean_of_ratios"], effects.mean(0))
    assert not np.allclose(rom, effects.mean(0))  # the two aggregates differ when π varies across prompts
    assert np.allclose(table["effect_median"], np.median(effects, axis=0))
    assert ((table.ratio_of_means_ci_low < rom) & (rom < table.ratio_of_means_ci_high)).all()
    m = effects.mean(0)
    assert ((table.mean_of_ratios_ci_low < m) & (m < table.mean_of_ratios_ci_high)).all()
    summary = result.to_dict()
    assert summary["aggregate"] == "ratio_of_means" and summary["top_components"][0]["component"] == "L0H0"
    assert summary["top_components"][0]["effect"] == pytest.approx(rom[0])
    # the heatmap shows the headline aggregate, rebuilt from the long table alone
    fig = result.plot()
    assert np.nanmax(np.abs(np.array(fig.data[0].z, dtype=float))) == pytest.approx(np.abs(rom).max())


@pytest.mark.slow
@pytest.mark.parametrize("sender_mean", ["dataset", "dataset_by_position"])
def test_path_stage_exact_equals_naive_on_smollm2(smollm2, sender_mean):
    """The stage in path mode (dataset-mean senders — recallscope's own-end mean and the authors' —
    every prompt) gives the same table with the exact and the naive engine (float64)."""
    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    model64 = dataclasses.replace(smollm2, view=view)
    ps = build_prompts(load_relation("paper_country_capital"), smollm2.tokenizer, shots=1, max_prompts=4, demonstrations="plain")
    config = P.PatchConfig(
        mode="path", sender_mean=sender_mean, prompts="all", aggregate="ratio_of_means", layers=(0, 23, 29), batch_size=4
    )
    exact = P.patch(model64, ps, config, progress=False)
    naive = P.patch(model64, ps, dataclasses.replace(config, engine="naive"), progress=False)
    assert np.abs(exact.effects - naive.effects).max() <= 1e-8
    assert exact.attribution_effects is None and "not run" in exact.to_dict()["attribution"]
    assert len(exact.prompts) == 4 and exact.n_corruptions[0] == 4
