"""recallscope.lens on tiny models of every family (float64): the logit lens of the final
residual is the model's logits; the linearised lens is linear, so the lenses of the writes that
make up the final residual add up to the logits (the DLA identity); π(Y) = logit[Y] − mean logit
and its reading through token_direction; answer_stats and token_rank agree with sorting."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny import CONFIGS, left_pad, random_prompts, tiny_view
from recallscope.lens import answer_stats, logit_lens, recall_metric, token_direction, token_rank, unembed_direction
from recallscope.models.arch import norm_scale

FAMILIES = sorted(name for name in CONFIGS if name != "gemma3_multimodal")


def _end(view):
    ids, mask = left_pad(random_prompts(seed=1))
    t = view.trace(ids, mask, record=("resid_final", "logits", "resid_pre", "attn_out", "mlp_out"))
    return t


@pytest.mark.parametrize("name", FAMILIES)
def test_logit_lens_of_the_final_residual_is_the_logits(name):
    view = tiny_view(name)
    t = _end(view)
    rf = t.resid_final[:, 0]
    lensed = logit_lens(view, rf, reference=rf, include_bias=True)
    assert (lensed - t.logits[:, 0]).abs().max().item() <= 1e-10
    assert (logit_lens(view, rf, mode="normalised") - t.logits[:, 0]).abs().max().item() <= 1e-10
    with pytest.raises(ValueError, match="reference"):
        logit_lens(view, rf)


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa", "gemma3_text", "gpt_neox_parallel"])
def test_lenses_of_the_writes_add_up_to_the_logits(name):
    """r_final = embedding + Σ_l (attn_l + mlp_l): their linearised lenses (at r_final) plus the
    biases' part equal the logits (before a final softcap)."""
    view = tiny_view(name)
    t = _end(view)
    rf = t.resid_final[:, 0]
    writes = [t.resid_pre[:, 0, 0]] + [t.attn_out[:, 0, l] for l in range(view.cfg.n_layers)] + [
        t.mlp_out[:, 0, l] for l in range(view.cfg.n_layers)]
    total = sum(logit_lens(view, w, reference=rf) for w in writes)
    bias = logit_lens(view, torch.zeros_like(rf), reference=rf, include_bias=True)
    assert (total + bias - t.logits[:, 0]).abs().max().item() <= 1e-9


@pytest.mark.parametrize("name", ["gpt2", "gemma3_text"])
def test_recall_metric_identities(name):
    view = tiny_view(name)
    t = _end(view)
    logits = t.logits[:, 0]
    y = torch.tensor([5, 17, 42])
    pi = recall_metric(logits, y)
    assert torch.allclose(pi, logits[torch.arange(3), y] - logits.mean(-1), atol=0, rtol=0)
    # π is invariant to a constant added to every logit (softmax shift)
    assert (recall_metric(logits + 3.0, y) - pi).abs().max().item() <= 1e-12
    # read from the residual: π = ⟨N_f(r) without its weight, u_Y⟩ + the biases' share
    rf = t.resid_final[:, 0]
    scale = logit_lens(view, rf, reference=rf) - logit_lens(view, torch.zeros_like(rf), reference=rf)
    pi_dir = recall_metric(scale, y)
    x = rf
    if view.cfg.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    x = x * norm_scale(rf, view.cfg.norm, view.cfg.norm_eps)  # N_f(r) without its weight: u_Y carries it
    assert (pi_dir - (x * token_direction(view, y)).sum(-1)).abs().max().item() <= 1e-9
    # the centred unembedding: its columns sum to zero over the vocabulary
    u = unembed_direction(view, torch.arange(view.cfg.d_vocab))
    assert u.sum(0).abs().max().item() <= 1e-9


def test_answer_stats_and_rank_agree_with_sorting():
    logits = torch.tensor([[0.1, 2.0, -1.0, 2.0, 0.5], [3.0, 1.0, 0.0, -2.0, 1.5]], dtype=torch.float64)
    y = torch.tensor([4, 0])
    stats = answer_stats(logits, y)
    assert stats["rank_answer"].tolist() == [2, 0]  # ties above count once each: 2.0, 2.0 > 0.5
    assert stats["top1_id"].tolist() == [1, 0]
    p = torch.softmax(logits.float(), -1)
    assert torch.allclose(stats["p_answer"], p[torch.arange(2), y])
    assert torch.allclose(stats["p_top1"], p.max(-1).values)
    assert token_rank(logits, torch.tensor([2, 3])).tolist() == [4, 4]
