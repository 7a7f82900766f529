"""Mover heads: a hand-built copying head is found, a random model has none, p-values are exact."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from recallscope.errors import UserError
from recallscope.figures.movers import figures
from recallscope.models.arch import ArchConfig, LayerWeights, Norm, Weights
from recallscope.models.view import ModelView
from recallscope.movers import (
    MoversConfig,
    _head_summary,
    all_heads,
    candidates_for,
    find_movers,
    ov_vector,
)
from recallscope.tasks.prompts import Prompt

# The tiny model: 2 layers, 4 query heads sharing 2 key/value heads (GQA), d = 32, d_head = 16.
D, DH, H, K, L, V = 32, 16, 4, 2, 2, 50
MARKER, QUERY = 0, 1  # residual dimensions: "this is a subject token", "this is the end token"
IDENTITY = slice(16, 32)  # the token's identity lives in the last 16 dimensions
END_TOKEN, PAD = 1, 0
FILLERS = range(2, 20)
SUBJECT_FIRST = range(20, 25)  # first pieces of two-token subjects: weakly marked
SUBJECT_LAST = range(25, 50)  # X tokens: strongly marked
MOVER = (1, 3)  # layer 1, head 3 -> key/value head 1, shared with head 2


def tiny_config() -> ArchConfig:
    return ArchConfig(
        family="llama", n_layers=L, n_heads=H, n_kv_heads=K, d_model=D, d_head=DH, d_mlp=64, d_vocab=V,
        norm="rmsnorm", norm_eps=1e-6, act="silu", gated_mlp=True,
    )


def random_layer(gen: torch.Generator, std: float) -> LayerWeights:
    def r(*shape):
        return torch.randn(*shape, generator=gen) * std

    return LayerWeights(
        ln1=Norm(torch.ones(D)), W_Q=r(H, D, DH), W_K=r(K, D, DH), W_V=r(K, D, DH), W_O=r(H, DH, D),
        b_Q=None, b_K=None, b_V=None, b_O=None, ln2=Norm(torch.ones(D)),
        W_in=r(D, 64), b_in=None, W_out=r(64, D), b_out=None, W_gate=r(D, 64),
        # zero frequencies: rotary embedding is the identity, so attention is purely content-based
        inv_freq=torch.zeros(DH // 2),
    )


def hand_built_model(seed: int = 0) -> ModelView:
    """Head L1H3 attends from the end token to the marked subject token and copies its identity."""
    gen = torch.Generator().manual_seed(seed)
    W_E = torch.zeros(V, D)
    W_E[:, 2:16] = torch.randn(V, 14, generator=gen) * 0.1
    identity = torch.randn(V, 16, generator=gen)
    W_E[:, IDENTITY] = 2.0 * identity / identity.norm(dim=-1, keepdim=True)
    # fillers and the end token carry no identity (they live in dimensions 2..15 instead), so
    # what the head writes is exactly its attention to the subject times the subject's identity
    context = [END_TOKEN, *FILLERS]
    other = torch.randn(len(context), 14, generator=gen)
    W_E[context, 2:16] = 2.0 * other / other.norm(dim=-1, keepdim=True)
    W_E[context, IDENTITY] = 0.0
    W_E[END_TOKEN, QUERY] = 3.0
    W_E[list(SUBJECT_LAST), MARKER] = 2.0
    W_E[list(SUBJECT_FIRST), MARKER] = 0.3
    layers = [random_layer(gen, 0.05) for _ in range(L)]
    layer, head = MOVER
    kv = head // (H // K)
    mover = layers[layer]
    mover.W_Q[head] = 0.0
    mover.W_K[kv] = 0.0
    mover.W_Q[head, QUERY, 0] = 0.8  # the end token's query ...
    mover.W_K[kv, MARKER, 0] = 0.8  # ... matches the subject marker's key
    mover.W_V[kv] = 0.0
    mover.W_V[kv, IDENTITY] = torch.eye(DH)  # value = the token's identity
    mover.W_O[head] = 0.0
    mover.W_O[head, :, IDENTITY] = torch.eye(DH)  # written back to the identity dimensions
    weights = Weights(W_E=W_E, W_pos=None, layers=layers, ln_final=Norm(torch.ones(D)), W_U=W_E.T.clone())
    return ModelView(tiny_config(), weights)


def random_model(seed: int = 1) -> ModelView:
    gen = torch.Generator().manual_seed(seed)
    layers = [random_layer(gen, D**-0.5) for _ in range(L)]
    W_E = torch.randn(V, D, generator=gen)
    weights = Weights(W_E=W_E, W_pos=None, layers=layers, ln_final=Norm(torch.ones(D)), W_U=torch.randn(D, V, generator=gen))
    return ModelView(tiny_config(), weights)


def token_prompts(n: int = 60, seed: int = 0) -> list[Prompt]:
    """Fillers, a one- or two-token subject, fillers, the end token; varied lengths."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        before = [int(t) for t in rng.choice(list(FILLERS), size=rng.integers(1, 25))]
        subject = [int(rng.choice(list(SUBJECT_LAST)))]
        if i % 4 == 0:
            subject = [int(rng.choice(list(SUBJECT_FIRST)))] + subject
        after = [int(t) for t in rng.choice(list(FILLERS), size=rng.integers(0, 4))]
        ids = tuple(before + subject + after + [END_TOKEN])
        span = (len(before), len(before) + len(subject))
        prompts.append(
            Prompt(text="", subject=f"s{subject}", answer="", template="", demos=(), input_ids=ids,
                   subject_span=span, answer_id=2, index=i)
        )
    return prompts


def test_hand_built_mover_is_found_alone():
    view = hand_built_model()
    prompts = token_prompts()
    result = find_movers(view, prompts, all_heads(L, H), MoversConfig(batch_size=16), pad_id=PAD, progress=False)
    assert result.movers == [MOVER]
    mover = next(h for h in result.heads if (h["layer"], h["head"]) == MOVER)
    assert mover["projection_corr"] > 0.9
    assert mover["projection_p_value"] < 1e-10
    assert mover["ov_copy_rank"] == 0.0  # 0 = X is the top token of its own OV copy
    assert mover["ov_top5_share"] == 1.0
    assert mover["attention_to_subject"] > 0.5
    assert mover["top_attended_share"] == 1.0
    # head 2 shares the mover's key/value head but has its own (random) W_O: not a mover
    shared = next(h for h in result.heads if (h["layer"], h["head"]) == (1, 2))
    assert not shared["is_mover"]
    frame = result.to_frame()
    assert len(frame) == len(prompts) * L * H
    rows = frame[frame["component"] == "L1H3"]
    assert (rows["attention_to_last_subject"] <= rows["attention_to_subject"] + 1e-6).all()
    two_token = rows["subject_tokens"] == 2
    assert two_token.sum() == 15
    # two-token subjects: X is the last token; it receives most of the subject's attention
    assert (rows.loc[two_token, "attention_to_last_subject"] > 0.5 * rows.loc[two_token, "attention_to_subject"]).all()


def test_random_model_has_no_mover():
    result = find_movers(random_model(), token_prompts(), all_heads(L, H), MoversConfig(), pad_id=PAD, progress=False)
    assert result.movers == []
    assert result.to_dict()["n_movers"] == 0


def test_padding_does_not_change_the_figures():
    """One batch of mixed lengths (left padding) gives the figures of one prompt per batch."""
    view = hand_built_model()
    prompts = token_prompts(12)
    together = find_movers(view, prompts, [MOVER], MoversConfig(batch_size=64), pad_id=PAD, progress=False)
    alone = find_movers(view, prompts, [MOVER], MoversConfig(batch_size=1), pad_id=PAD, progress=False)
    cols = ["attention_to_subject", "attention_to_last_subject", "projection"]
    np.testing.assert_allclose(together.frame[cols].to_numpy(), alone.frame[cols].to_numpy(), atol=1e-5)


def test_ov_vector_equals_the_head_output_on_a_one_token_prompt():
    """At layer 0 a one-token prompt attends only to itself, so the head writes its OV vector."""
    view = random_model()
    ids = torch.tensor([[7]])
    trace = view.trace(ids, record=["head_out"])
    for head in range(H):
        expected = trace.head_out[0, 0, 0, head]
        torch.testing.assert_close(ov_vector(view, 0, head, torch.tensor([7]))[0], expected, rtol=1e-5, atol=1e-6)


def test_candidate_selection_and_bad_input():
    import pandas as pd

    patch = pd.DataFrame(
        {
            "component": ["L0H0", "L0H1", "L1H0", "MLP0"] * 2,
            "kind": ["head", "head", "head", "mlp"] * 2,
            "layer": [0, 0, 1, 0] * 2,
            "head": [0, 1, 0, -1] * 2,
            "prompt_index": [0] * 4 + [1] * 4,
            "effect": [-5.0, 1.0, 30.0, -90.0, -7.0, 2.0, 10.0, -90.0],
        }
    )
    chosen, effects, _ = candidates_for(MoversConfig(top_k=2), 2, 2, patch)
    assert chosen == [(1, 0), (0, 0)]  # |mean| 20, 6; the MLP is not a head
    assert effects[(0, 0)] == pytest.approx(-6.0)
    assert candidates_for(MoversConfig(layer=1, head=1), 2, 2, None)[0] == [(1, 1)]
    assert candidates_for(MoversConfig(heads="all"), 2, 2, None)[0] == all_heads(2, 2)
    with pytest.raises(UserError, match="out of range"):
        candidates_for(MoversConfig(layer=2), 2, 2, None)
    with pytest.raises(UserError, match="out of range"):
        candidates_for(MoversConfig(layer=0, head=5), 2, 2, None)
    with pytest.raises(UserError, match="needs --layer"):
        candidates_for(MoversConfig(head=0), 2, 2, None)


def test_figures_rebuild_from_table_and_summary():
    result = find_movers(hand_built_model(), token_prompts(), all_heads(L, H), MoversConfig(), pad_id=PAD, progress=False)
    figs = figures(result.tables(), result.to_dict())
    assert len(figs) == 2  # one scatter (one mover) + the example attention
    scatter = figs[0]
    assert "L1H3" in scatter.layout.title.text
    assert len(scatter.data[0].x) == 60
    example = result.to_dict()["example"]
    assert (example["layer"], example["head"]) == MOVER
    assert sum(example["attention"]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_real_model_movers_figures_are_consistent(smollm2):
    from recallscope.lens import token_direction
    from recallscope.movers import movers
    from recallscope.tasks import build_prompts, load_relation

    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, seed=0, max_prompts=12)
    result = movers(smollm2, ps, MoversConfig(layer=23), progress=False)
    f = result.to_frame()
    assert len(f) == 12 * smollm2.cfg.n_heads
    assert ((f["attention_to_subject"] >= 0) & (f["attention_to_subject"] <= 1 + 1e-5)).all()
    # the projection of one row equals a direct recomputation from the trace
    p = ps.prompts[0]
    with torch.no_grad():
        trace = smollm2.view.trace(torch.tensor([p.input_ids]), record=["head_out", "pattern"])
        direction = token_direction(smollm2.view, torch.tensor([p.subject_id]))[0]
    row = f[(f["head"] == 4) & (f["prompt_index"] == 0)].iloc[0]
    assert row["projection"] == pytest.approx(float(trace.head_out[0, 0, 23, 4] @ direction), rel=1e-4, abs=1e-4)
    lo, hi = p.subject_span
    assert row["attention_to_subject"] == pytest.approx(float(trace.pattern[0, 23, 4, 0, lo:hi].sum()), abs=1e-5)
    d = result.to_dict()
    assert d["thresholds"] == MoversConfig().thresholds()
    assert {"layer", "head", "attention_to_subject", "projection_corr", "ov_copy_rank", "is_mover"} <= set(d["heads"][0])


def test_ov_in_context_of_a_layer0_head_is_the_embedding_reading():
    """Layer 0 reads the embedding itself, so its in-context OV rank equals the raw-embedding one,
    prompt by prompt; ov_ranks_of on the embedding is ov_ranks; the hand-built mover copies in context too."""
    from recallscope.movers import ov_ranks, ov_ranks_of

    view = hand_built_model()
    prompts = token_prompts(24)
    result = find_movers(view, prompts, [(0, 0), (0, 1), MOVER], MoversConfig(), pad_id=PAD, progress=False)
    frame = result.to_frame()
    layer0 = frame[frame["layer"] == 0]
    assert (layer0["ov_rank_context"] == layer0["ov_rank_x"]).all()
    assert frame["ov_rank_context"].dtype == "int64" and (frame["ov_rank_effective"] >= 0).all()
    ids = torch.tensor([p.subject_id for p in prompts[:5]])
    emb = view.embed(ids[None], torch.zeros_like(ids)[None])[0]
    assert torch.equal(ov_ranks_of(view, 1, 3, emb, ids), ov_ranks(view, 1, 3, ids))
    heads = {(h["layer"], h["head"]): h for h in result.heads}
    mover_rows = frame[frame["component"] == "L1H3"]
    assert heads[MOVER]["ov_top5_share_context"] == float((mover_rows["ov_rank_context"] < 5).mean()) == 1.0
    assert heads[MOVER]["is_mover"] and heads[MOVER]["ov_input"] == "context"


def test_failed_names_the_condition_that_failed():
    """L23H4 of smollm2-135m on country_capital_extended (0 shots, --max-prompts 16, its 13 known
    prompts; figures from that run's movers table): r 0.584 passes r ≥ 0.5, p 0.036 fails p ≤ 0.01,
    so the head fails on ``p_value`` alone, not on ``correlation``."""
    attention = [0.934510, 0.952441, 0.930834, 0.946014, 0.832813, 0.807802, 0.959224, 0.947095, 0.949950, 0.917872,
                 0.961136, 0.938156, 0.904384]
    projection = [105.2491, 131.4994, 91.74608, 109.1211, 89.97169, 70.08173, 112.0808, 96.40241, 89.71260, 73.25660,
                  100.1914, 129.1884, 100.0040]

    def summary(proj, cfg=MoversConfig()):
        rows = pd.DataFrame({
            "attention_to_subject": attention, "attention_to_first_subject": attention, "attention_to_last_subject": attention,
            "projection": proj, "projection_first": proj, "projection_last": proj,
            "ov_rank_context": 0, "ov_rank_effective": 0, "subject_is_top_attended": True,
        })
        return _head_summary(rows, torch.zeros(13, dtype=torch.long), torch.zeros(13, dtype=torch.long), None, cfg)

    h = summary(projection)
    assert round(h["projection_corr"], 3) == 0.584 and round(h["projection_p_value"], 3) == 0.036
    assert h["failed"] == ["p_value"] and not h["is_mover"]
    # the kind: r below its threshold with a small p fails on correlation alone; a negative r on both
    assert summary(projection, MoversConfig(min_projection_corr=0.6, max_p_value=0.05))["failed"] == ["correlation"]
    assert summary([-p for p in projection])["failed"] == ["correlation", "p_value"]
    assert summary(projection, MoversConfig(max_p_value=0.05))["failed"] == []
