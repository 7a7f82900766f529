"""Property tests: whatever the subjects (HTML, quotes, odd Unicode, long strings), prompt
building keeps the subject and end positions aligned under padding, and corruption keeps the
token count and changes only the subject."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recallscope.tasks import build_prompts, corruptions, make_batch
from recallscope.tasks.relation import Relation, Sample

pytestmark = pytest.mark.slow

WORDS = st.sampled_from(
    ["France", "Japan", "<script>alert(1)</script>", "\"quoted\"", "</div>", "Zürich", "東京", "O'Brien",
     "\u200fRTL\u200f", "a\u200db", "🙂", "New South Wales", "x" * 300, "Côte d'Ivoire", "&amp;"]
)
SUBJECTS = st.lists(st.builds(lambda a, b: f"{a} {b}".strip(), WORDS, st.sampled_from(["", "City", "Land", "<b>"])),
                    min_size=3, max_size=6, unique=True)
ANSWERS = ["Paris", "Tokyo", "Berlin", "Rome", "Madrid", "Oslo"]
TEMPLATES = st.sampled_from(["The capital of {} is", "{} is located in", "Q: where is {}? A: in", "«{}» →"])


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subjects=SUBJECTS, template=TEMPLATES, shots=st.integers(0, 2), seed=st.integers(0, 10_000))
def test_positions_stay_aligned_under_padding(tok, subjects, template, shots, seed):
    rel = Relation("r", (template,), (template,), tuple(Sample(s, ANSWERS[i]) for i, s in enumerate(subjects)), "test")
    ps = build_prompts(rel, tok, shots=shots, seed=seed)
    assert len(ps) + sum(ps.dropped.values()) >= len(subjects)
    if not len(ps):
        return
    batch = make_batch(list(ps.prompts), tok.pad_token_id)
    mask = batch.subject_mask()
    for row, p in enumerate(ps.prompts):
        lo, hi = p.subject_span
        assert 0 <= lo < hi <= p.n_tokens
        # the subject's characters are covered by its tokens
        assert p.subject.strip() in tok.decode(list(p.input_ids[lo:hi])) or len(p.subject) > 200
        cols = mask[row].nonzero().flatten().tolist()
        assert [batch.input_ids[row, c].item() for c in cols] == list(p.input_ids[lo:hi])
        assert batch.input_ids[row, -1].item() == p.input_ids[-1]
        assert batch.attention_mask[row].sum().item() == p.n_tokens


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subjects=SUBJECTS, template=TEMPLATES, seed=st.integers(0, 10_000))
def test_corruption_keeps_length_and_changes_only_the_subject(tok, subjects, template, seed):
    rel = Relation("r", (template,), (template,), tuple(Sample(s, ANSWERS[i]) for i, s in enumerate(subjects)), "test")
    ps = build_prompts(rel, tok, shots=0, seed=seed)
    for p in ps.prompts:
        lo, hi = p.subject_span
        for c in corruptions(p, ps, tok):
            assert c.n_tokens == p.n_tokens and c.subject_span == p.subject_span
            assert c.input_ids[:lo] == p.input_ids[:lo] and c.input_ids[hi:] == p.input_ids[hi:]
            assert c.subject != p.subject and c.answer == p.answer
