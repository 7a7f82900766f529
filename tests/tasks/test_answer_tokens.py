"""Which tokens of an answer are scored (recall.answer_metric): the auto rule, the shared prefix
appended to the prompt, the teacher-forced targets, corruptions and batches under the whole-answer
metric; first-token relations are built exactly as before."""

from __future__ import annotations

import pytest
import torch

from recallscope.errors import UserError
from recallscope.tasks import build_prompts, corruptions, load_relation
from recallscope.tasks.prompts import (
    EXCLUDE_SAME_ANSWER_TOKENS,
    answer_appended_ids,
    batches,
    shared_prefix,
)
from recallscope.tasks.relation import Relation, Sample


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


def test_birth_years_are_scored_whole_after_the_shared_prefix(tok, lre_dir):
    ps = build_prompts(load_relation(str(lre_dir / "presidents_birth_year.json")), tok)
    assert ps.metric == "answer" and "fewer than 2" in ps.metric_reason
    assert ps.answer_prefix_text == " 1" and tok.convert_ids_to_tokens(list(ps.answer_prefix)) == ["Ġ", "1"]
    assert len(ps) == 18 and not ps.dropped.get("answer_first_token_shared")  # nothing dropped (one sample is a duplicate)
    for p in ps.prompts:
        assert p.input_ids[-2:] == ps.answer_prefix and p.text.endswith(" was born in 1")
        assert tok.decode(list(p.answer_prefix + p.targets)) == " " + p.answer  # prefix + scored tokens = the answer
        assert p.n_targets == 3 and p.answer_id == p.targets[0]
        # the targets are the tokens of prompt + answer tokenised as one text
        assert list(p.input_ids) + list(p.targets) == tok(p.text[: -len(" 1")] + " " + p.answer)["input_ids"]
        assert answer_appended_ids(tok, p) == list(p.input_ids) + list(p.targets)
    assert sorted(tok.decode([t]) for t in ps.answer_ids) == ["7", "8", "9"]  # the first scored digits


def test_first_token_relations_are_built_as_before(tok):
    rel = load_relation("country_capital_extended")
    auto = build_prompts(rel, tok, shots=1, seed=0)
    first = build_prompts(rel, tok, shots=1, seed=0, answer_metric="first_token")
    assert auto.metric == "first_token" and auto.prompts == first.prompts and auto.answer_ids == first.answer_ids
    assert all(p.target_ids == () and p.targets == (p.answer_id,) for p in auto.prompts)


def test_the_whole_answer_metric_can_be_chosen_for_any_relation(tok):
    rel = load_relation("country_capital_extended")
    first = build_prompts(rel, tok, answer_metric="first_token")
    whole = build_prompts(rel, tok, answer_metric="answer")
    assert whole.metric == "answer" and whole.answer_prefix == () and whole.metric_reason == "set: recall.answer_metric=answer"
    assert [p.answer_id for p in whole.prompts] == [p.answer_id for p in first.prompts]
    assert [p.input_ids for p in whole.prompts] == [p.input_ids for p in first.prompts]
    assert all(p.targets == (p.answer_id,) for p in whole.prompts)  # every capital is one token here: the answer is Y
    for p in whole.prompts:
        assert tok.decode(list(p.targets)) == " " + p.answer
    with pytest.raises(UserError, match="answer_metric must be one of"):
        build_prompts(rel, tok, answer_metric="digits")


def test_a_corruption_must_have_other_answer_tokens(tok, lre_dir):
    ps = build_prompts(load_relation(str(lre_dir / "presidents_birth_year.json")), tok)
    jackson = next(p for p in ps.prompts if p.subject == "Andrew Jackson")  # 1767, as John Quincy Adams
    excluded: dict = {}
    found = corruptions(jackson, ps, tok, excluded=excluded)
    assert excluded[EXCLUDE_SAME_ANSWER_TOKENS] == 1 and "John Quincy Adams" not in {c.subject for c in found}
    assert found and all(c.answer_prefix == ps.answer_prefix and c.targets == jackson.targets for c in found)
    for c in found:  # positions line up: only the subject's tokens differ
        lo, hi = jackson.subject_span
        assert c.input_ids[:lo] == jackson.input_ids[:lo] and c.input_ids[hi:] == jackson.input_ids[hi:]


def test_batches_hold_one_number_of_scored_tokens_and_append_them(tok):
    rel = Relation("mixed", ("{} lives in",), (), tuple(Sample(s, o) for s, o in
                   [("Ann", "Paris"), ("Bob", "New York City"), ("Cy", "Rome"), ("Di", "Buenos Aires")]), "test")
    ps = build_prompts(rel, tok, answer_metric="answer")
    counts = {p.n_targets for p in ps.prompts}
    assert len(counts) > 1
    seen = []
    for indices, batch in batches(ps.prompts, tok.pad_token_id, batch_size=8):
        A = batch.n_targets
        ids, mask = batch.with_targets()
        assert ids.shape[1] == batch.input_ids.shape[1] + A - 1 and bool(mask[:, batch.input_ids.shape[1] :].all())
        for row, i in enumerate(indices):
            p = ps.prompts[i]
            assert ids[row, batch.input_ids.shape[1] - 1 :].tolist() == [p.input_ids[-1], *p.targets[:-1]]
            assert torch.equal(batch.target_ids()[row], torch.tensor(p.targets))
        seen += indices
    assert sorted(seen) == list(range(len(ps)))


def test_shared_prefix_leaves_one_token_to_score():
    assert shared_prefix([(1, 2, 3), (1, 2, 4)]) == (1, 2)
    assert shared_prefix([(1, 2), (1, 2, 4)]) == (1,)  # the shorter answer keeps its last token
    assert shared_prefix([(5,), (5, 6)]) == ()
    assert shared_prefix([]) == ()
