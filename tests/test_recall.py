import numpy as np
import pytest
import torch

from recallscope.errors import UserError
from recallscope.recall import RecallConfig, recall
from recallscope.tasks import build_prompts, load_relation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper_zero_shot(smollm2):
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0)
    return recall(smollm2, ps, progress=False)


def test_recall_scores_match_the_hf_model(smollm2, paper_zero_shot):
    frame = paper_zero_shot.to_frame()
    tok = smollm2.tokenizer
    for i in (0, 37, 224):
        row = frame.iloc[i]
        ids = tok(row["text"], return_tensors="pt").input_ids
        with torch.no_grad():
            logits = smollm2.hf_model(ids).logits[0, -1]
        probs = logits.softmax(-1)
        y = int(row["answer_id"])
        assert abs(probs[y].item() - row["p_answer"]) < 1e-5
        assert abs((logits[y] - logits.mean()).item() - row["pi_answer"]) < 1e-3
        assert int((logits > logits[y]).sum()) == row["rank_answer"]
        assert int(logits.argmax()) == row["top1_id"]


def test_paper_prompts_accuracy_and_known_filter(paper_zero_shot):
    s = paper_zero_shot.to_dict()
    assert s["n_prompts"] == 225
    # SmolLM2-135M knows most capitals zero-shot (0.862 measured), not all of them.
    assert 0.75 <= s["accuracy"] <= 0.95
    assert s["n_known"] == round(s["accuracy"] * 225)
    assert s["dropped"]["unknown_to_model"] == 225 - s["n_known"]
    known = paper_zero_shot.known_prompts()
    assert len(known) == s["n_known"]
    frame = paper_zero_shot.to_frame()
    assert np.all(frame.loc[frame["known"], "top1_id"] == frame.loc[frame["known"], "answer_id"])


def test_france_is_paris(paper_zero_shot):
    row = paper_zero_shot.to_frame().iloc[0]
    assert row["text"] == "The capital of France is" and row["top1_token"] == " Paris"
    assert 0.70 <= row["p_answer"] <= 0.85  # 0.7725 measured


def test_top_k_known_rule(smollm2):
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, max_prompts=40)
    strict = recall(smollm2, ps, RecallConfig(known_top_k=1), progress=False).to_dict()
    loose = recall(smollm2, ps, RecallConfig(known_top_k=5), progress=False).to_dict()
    assert loose["n_known"] >= strict["n_known"]
    assert loose["accuracy"] == strict["accuracy"]


def test_no_prompt_left_gives_counts(smollm2, lre_dir):
    ps = build_prompts(load_relation(str(lre_dir / "presidents_birth_year.json")), smollm2.tokenizer, answer_metric="first_token")
    with pytest.raises(UserError) as err:
        recall(smollm2, ps, progress=False)
    assert "answer_first_token_shared" in str(err.value)
