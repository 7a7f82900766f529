"""The incremental forward: ``ModelView.forward_from`` over a cached prefix reproduces a full
``trace`` at every (p, start), with and without edits, on a tiny model of every family; the
``attn_bias`` edit site equals attention masked by hand."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny import CONFIGS, left_pad, random_prompts, tiny_view
from recallscope.models.view import causal_mask_bias, position_ids_from_mask

FAMILIES = sorted(name for name in CONFIGS if name != "gemma3_multimodal")  # multimodal: same text model as gemma3_text
PER_POSITION = ("resid_pre", "resid_mid", "attn_out", "head_out", "mlp_out", "z")
RECORD = PER_POSITION + ("pattern", "resid_final", "logits")


def _setup(name):
    view = tiny_view(name)
    ids, mask = left_pad(random_prompts(seed=1))
    return view, ids, mask


def _edits(view, offset: int, B: int, S: int, p: int):
    """Edits at positions ≥ p of every site: ``offset`` = p for forward_from (its tensors start at p), 0 for trace."""
    gen = torch.Generator().manual_seed(3)
    d, L = view.cfg.d_model, view.cfg.n_layers
    shift = torch.randn(d, generator=gen, dtype=torch.float64)

    def add_at_end(x):  # the last position
        x = x.clone()
        x[..., -1, :] = x[..., -1, :] + shift
        return x

    def scale_head(x):  # head 1 at every position ≥ p, halved
        x = x.clone()
        x[..., p - offset:, 1, :] = 0.5 * x[..., p - offset:, 1, :]
        return x

    def block_first_keys(x):  # queries at positions ≥ p may not read keys 0..2 (attention knockout)
        x = x.clone()
        x[..., p - offset:, :3] = torch.finfo(x.dtype).min
        return x

    edits = {("attn_bias", layer): block_first_keys for layer in range(L)}
    edits[("mlp_out", L - 1)] = add_at_end
    edits[("head_out", 0)] = scale_head
    edits[("resid_mid", 0)] = add_at_end
    return edits


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("edited", [False, True])
def test_forward_from_a_cached_prefix_equals_the_full_trace(name, edited):
    view, ids, mask = _setup(name)
    B, S = ids.shape
    L = view.cfg.n_layers
    every = torch.arange(S).expand(B, S)
    plain = view.trace(ids, mask, positions=every, record=RECORD, return_kv=True)
    worst = 0.0
    for p in (0, 1, 5, S - 1):
        edits = _edits(view, 0, B, S, p) if edited else None
        full = view.trace(ids, mask, positions=every, record=RECORD, edits=edits) if edited else plain
        past = [(k[:, :, :p], v[:, :, :p]) for k, v in plain.kv]  # the unedited prefix: edits start at p
        for start in range(L):
            part = view.forward_from(
                full.resid_pre[:, p:, start], start, mask, past, positions=every[:, p:], record=RECORD,
                edits=_edits(view, p, B, S, p) if edited else None,
            )
            for name_ in PER_POSITION:
                want = getattr(full, name_)[:, p:, start:]
                worst = max(worst, (getattr(part, name_) - want).abs().max().item())
            worst = max(worst, (part.pattern - full.pattern[:, start:, :, p:]).abs().max().item())
            worst = max(worst, (part.logits - full.logits[:, p:]).abs().max().item())
            worst = max(worst, (part.resid_final - full.resid_final[:, p:]).abs().max().item())
    assert worst <= 1e-10, worst
    if edited:  # the edits matter (the test could fail)
        assert (full.logits - plain.logits).abs().max().item() > 1e-2


@pytest.mark.parametrize("name", ["llama_gqa", "gemma3_text_softcap_bias", "gpt_neox_parallel"])
def test_variants_share_the_prefix_and_stop_early(name):
    """C variants per row over one cached prefix, run one layer at a time (as the exact patch
    engine does), equal the full trace; keys/values returned for the computed positions equal trace's."""
    view, ids, mask = _setup(name)
    B, S = ids.shape
    L = view.cfg.n_layers
    every = torch.arange(S).expand(B, S)
    full = view.trace(ids, mask, positions=every, record=("resid_pre", "resid_final", "logits"), return_kv=True)
    p = S - 2
    past = [(k[:, :, :p], v[:, :, :p]) for k, v in full.kv]
    state = full.resid_pre[:, None, p:, 0].expand(B, 3, S - p, -1)
    for layer in range(L):
        out = view.forward_from(state, layer, mask, past, stop=layer + 1, positions=every[:, p:], return_kv=True)
        k, v = out.kv[layer]
        assert k.shape == (B, 3, view.cfg.n_kv_heads, S - p, view.cfg.d_head)
        assert (k - full.kv[layer][0][:, None, :, p:]).abs().max().item() <= 1e-10
        assert (v - full.kv[layer][1][:, None, :, p:]).abs().max().item() <= 1e-10
        state = out.resid_final
    assert (state - full.resid_final[:, None, p:]).abs().max().item() <= 1e-10
    with pytest.raises(ValueError, match="logits"):
        view.forward_from(state, 0, mask, past, stop=1, record=("logits",))
    with pytest.raises(ValueError, match="cache holds"):
        view.forward_from(state[:, :, 1:], 0, mask, past)


@pytest.mark.parametrize("name", ["llama_gqa", "gemma3_text_softcap_bias", "gpt2"])
def test_attn_bias_edit_equals_attention_masked_by_hand(name):
    """Block the end position's attention to keys 1..3 in layer 0: the view's z equals softmax
    over scores computed here from q, k, v with those edges removed (GQA repeat, softcap, window)."""
    view, ids, mask = _setup(name)
    cfg = view.cfg
    B, S = ids.shape
    blocked = [S - 5, S - 4, S - 3]

    def knock_out(bias):
        bias = bias.clone()
        bias[:, :, -1, blocked] = torch.finfo(bias.dtype).min
        return bias

    t = view.trace(ids, mask, record=("z", "resid_pre", "logits"), edits={("attn_bias", 0): knock_out})
    resid = view.embed(ids, position_ids_from_mask(mask))
    q, k, v = view.qkv(0, view.norm(resid, view.layer(0).ln1), position_ids_from_mask(mask))
    g = cfg.n_heads // cfg.n_kv_heads
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scores = (q[:, :, -1:] @ k.transpose(-1, -2)) * cfg.scale  # [B, H, 1, S]
    if cfg.attn_softcap:
        scores = cfg.attn_softcap * torch.tanh(scores / cfg.attn_softcap)
    allowed = mask.bool().clone()
    window = cfg.window(0)
    if window is not None:
        allowed &= torch.arange(S) > S - 1 - window
    allowed[:, blocked] = False
    allowed[:, -1] = True
    scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
    z = (torch.softmax(scores, -1) @ v)[:, :, 0]  # [B, H, dh]
    assert (t.z[:, 0, 0] - z).abs().max().item() <= 1e-12
    unedited = view.trace(ids, mask, record=("z",))
    assert (unedited.z[:, 0, 0] - z).abs().max().item() > 1e-3  # the knockout changes z
    # the default mask is causal_mask_bias: forward_from's per-layer mask is its last rows
    assert torch.equal(causal_mask_bias(mask, n_queries=2, window=window, dtype=view.dtype),
                       causal_mask_bias(mask, window=window, dtype=view.dtype)[:, :, -2:])
