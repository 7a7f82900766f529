"""intercept: answer-domain share and its baseline, and the redirect test's identity at the last layer."""

from __future__ import annotations

import json

import pytest
import torch

from recallscope.figures.intercept import figures
from recallscope.intercept import InterceptConfig, analyse_intercept, domain_share


def test_domain_share_counts_top_k_tokens_in_the_domain():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    share = domain_share(logits, torch.tensor([0, 2]), top_k=2)
    assert share.tolist() == [0.5, 0.0]


@pytest.fixture(scope="module")
def known_prompts(smollm2):
    from recallscope.recall import recall
    from recallscope.tasks import build_prompts, load_relation

    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, seed=0, max_prompts=24)
    return ps, recall(smollm2, ps, progress=False)


@pytest.mark.slow
def test_answer_direction_intercept_beats_random_and_last_layer_redirect_equals_logits(smollm2, known_prompts):
    ps, rec = known_prompts
    view, tok = smollm2.view, smollm2.tokenizer
    # b = u_t / w_f with u_t the centred unembedding of one answer token t: the lens reads
    # (b ⊙ w_f) · W_U = u_tᵀ W_U, largest at t itself for this token (not for every token of this
    # anisotropic unembedding: without centring a few high-norm tokens win), so the top-1 token is
    # in the answer domain and the share is 1, far outside the random baseline.
    from recallscope.lens import final_norm_weight, unembed_direction

    t = ps.answer_ids[-1]
    b = unembed_direction(view, torch.tensor(t)) / final_norm_weight(view)
    cfg = InterceptConfig(top_k=1, n_random=200)
    last = view.cfg.n_layers - 1
    res = analyse_intercept(view, ps.prompts, b, last, ps.answer_ids, cfg, seed=0, pad_id=tok.pad_token_id,
                            decode=lambda t: tok.decode([t]), progress=False)
    s = json.loads(json.dumps(res.to_dict()))
    assert s["answer_domain_share"] == 1.0
    assert s["top_tokens"][0]["token_id"] == t
    assert s["answer_domain_baseline"]["high"] <= 0.1
    assert s["answer_domain_baseline"]["p_value"] == pytest.approx(1 / 201)
    # At the last layer r_mid + m is the final residual: its lens is the model's logits, so the
    # rank of Y there is recall's rank of the answer.
    assert res.frame["rank_Y_r_mid_plus_m"].tolist() == rec.frame["rank_answer"].tolist()
    # Same seed, same baseline.
    again = analyse_intercept(view, ps.prompts, b, last, ps.answer_ids, cfg, seed=0, pad_id=tok.pad_token_id,
                              progress=False)
    assert (again.baseline_share == res.baseline_share).all()
    figs = figures(res.tables(), s)
    assert len(figs) == 2
    assert sum(t["in_domain"] for t in s["top_tokens"]) == round(1 * s["answer_domain_share"])
