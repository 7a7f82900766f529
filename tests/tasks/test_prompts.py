"""Prompt building, corruption and padding on the real SmolLM2 tokenizer."""

import pytest
import torch

from recallscope.errors import UserError
from recallscope.tasks import batches, build_prompts, corruptions, load_relation, make_batch
from recallscope.tasks.prompts import DROP_SHARED_FIRST_TOKEN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


def test_paper_prompts_zero_and_three_shot(tok):
    rel = load_relation("country_capital_extended")
    zero = build_prompts(rel, tok, shots=0)
    three = build_prompts(rel, tok, shots=3, seed=0)
    assert len(zero) == len(three) == 225
    p = zero.prompts[0]
    assert p.text == "The capital of France is"
    assert tok.decode([p.answer_id]) == " Paris"
    assert tok.decode(list(p.input_ids[slice(*p.subject_span)])) == " France"
    q = three.prompts[0]
    assert q.text.endswith("The capital of France is") and q.text.count(".") == 3
    assert len(q.demos) == 3 and all(d.subject != "France" for d in q.demos)
    assert q.text.startswith(f"The capital of {q.demos[0].subject} is {q.demos[0].object}.")


def test_demonstrations_follow_the_seed(tok):
    rel = load_relation("country_capital_extended")
    a = build_prompts(rel, tok, shots=3, seed=0)
    b = build_prompts(rel, tok, shots=3, seed=0)
    c = build_prompts(rel, tok, shots=3, seed=1)
    assert [p.text for p in a.prompts] == [p.text for p in b.prompts]
    assert sum(x.text != y.text for x, y in zip(a.prompts, c.prompts, strict=True)) > 100


def test_multi_token_subjects_and_answers(tok, lre_dir):
    rel = load_relation(str(lre_dir / "country_capital_city.json"))
    ps = build_prompts(rel, tok)
    us = next(p for p in ps.prompts if p.subject == "United States")
    assert us.subject_n_tokens == 2
    assert tok.decode(list(us.input_ids[slice(*us.subject_span)])).strip() == "United States"
    assert tok.decode([us.subject_id]) == " States"
    assert tok.decode([us.answer_id]) == " Washington"


def test_drop_counts_are_reported(tok, lre_dir):
    ps = build_prompts(load_relation(str(lre_dir / "person_father.json")), tok)
    assert ps.dropped[DROP_SHARED_FIRST_TOKEN] > 0
    first = {}
    for p in ps.prompts:
        first.setdefault(p.answer_id, set()).add(p.answer)
    assert all(len(v) == 1 for v in first.values())


def test_too_many_shots_is_refused(tok, lre_dir):
    with pytest.raises(UserError, match="needs at least"):
        build_prompts(load_relation(str(lre_dir / "presidents_birth_year.json")), tok, shots=3, answer_metric="first_token")


def test_corruptions_change_only_the_subject(tok):
    ps = build_prompts(load_relation("country_capital_extended"), tok, shots=1, seed=0)
    p = ps.prompts[5]
    corrupted = corruptions(p, ps, tok)
    assert corrupted
    lo, hi = p.subject_span
    for c in corrupted:
        assert c.n_tokens == p.n_tokens and c.subject_span == p.subject_span
        assert c.input_ids[:lo] == p.input_ids[:lo] and c.input_ids[hi:] == p.input_ids[hi:]
        assert c.input_ids[lo:hi] != p.input_ids[lo:hi]


def test_left_padding_keeps_end_and_subject_aligned(smollm2, tok, lre_dir):
    ps = build_prompts(load_relation(str(lre_dir / "country_capital_city.json")), tok, shots=1, seed=0)
    chosen = sorted(ps.prompts, key=lambda p: p.n_tokens)
    mixed = [chosen[0], chosen[len(chosen) // 2], chosen[-1]]
    assert len({p.n_tokens for p in mixed}) == 3
    batch = make_batch(mixed, tok.pad_token_id)
    trace = smollm2.view.trace(batch.input_ids, batch.attention_mask, record=["logits"])
    sub_mask = batch.subject_mask()
    for row, p in enumerate(mixed):
        alone = smollm2.view.trace(torch.tensor([p.input_ids]), record=["logits"])
        assert torch.allclose(trace.logits[row, 0], alone.logits[0, 0], atol=1e-4)
        cols = sub_mask[row].nonzero().flatten().tolist()
        assert [batch.input_ids[row, c].item() for c in cols] == list(p.input_ids[slice(*p.subject_span)])
        assert batch.input_ids[row, batch.subject_last()[row]].item() == p.subject_id
        assert batch.input_ids[row, -1].item() == p.input_ids[-1]


def test_batches_cover_every_prompt_once(tok):
    ps = build_prompts(load_relation("country_capital_extended"), tok, shots=1)
    seen = []
    for indices, batch in batches(ps.prompts, tok.pad_token_id, batch_size=50):
        assert batch.input_ids.shape[0] == len(indices) <= 50
        seen += indices
    assert sorted(seen) == list(range(len(ps)))


@pytest.mark.parametrize("shots", [0, 1])
def test_swapped_subject_draws_recallscopes_and_the_authors(tok, shots):
    """other_subject never swaps in the clean subject nor a demonstration's; any_subject (the authors'
    gen_flipped_prompts: a uniform draw over every nation) does, about one prompt in 15 for the clean one."""
    from recallscope.tasks.prompts import answer_appended_ids, swapped_subject_prompts

    ps = build_prompts(load_relation("paper_country_capital"), tok, shots=shots, seed=0, demonstrations="plain")
    ours = swapped_subject_prompts(ps, tok)
    theirs = swapped_subject_prompts(ps, tok, draw="any_subject")
    assert len(ours) == len(theirs) == len(ps) == 225
    for draws in (ours, theirs):
        assert all(c.answer == p.answer and c.demos == p.demos and c.template == p.template
                   for c, p in zip(draws, ps.prompts, strict=True))
    assert all(c.subject != p.subject and c.subject not in {d.subject for d in p.demos} for c, p in zip(ours, ps.prompts, strict=True))
    same = sum(c.subject == p.subject for c, p in zip(theirs, ps.prompts, strict=True))
    assert 5 <= same <= 30  # 15 expected (1 in 15)
    if shots:
        assert any(c.subject in {d.subject for d in p.demos} for c, p in zip(theirs, ps.prompts, strict=True))
    assert swapped_subject_prompts(ps, tok, draw="any_subject") == theirs  # seeded
    with pytest.raises(ValueError, match="draw must be one of"):
        swapped_subject_prompts(ps, tok, draw="nearby")
    # the authors' texts carry the answer: " Paris" after the prompt's own tokens
    p = ps.prompts[0]
    ids = answer_appended_ids(tok, p)
    assert tuple(ids[: p.n_tokens]) == p.input_ids and ids[p.n_tokens] == p.answer_id
