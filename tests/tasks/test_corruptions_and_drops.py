"""Issue 16, "also seen": corruptions are filtered by answer, and messages about dropped
samples give the counts per reason and the real cause."""

from __future__ import annotations

import pytest

from recallscope.errors import UserError
from recallscope.tasks import build_prompts, corruptions, load_relation
from recallscope.tasks.prompts import EXCLUDE_SAME_ANSWER, first_token

pytestmark = pytest.mark.slow


def same_answer_share(ps, tok) -> float:
    """Share of the other subjects (not demonstrations) whose answer has the clean answer's
    first token: what the corrupted set held before answers were checked."""
    answer_of = {s.subject: s.object for s in ps.relation.samples}
    same = total = 0
    for p in ps.prompts:
        clean = first_token(tok, p.answer)
        for subject, answer in answer_of.items():
            if subject != p.subject and all(d.subject != subject for d in p.demos):
                total += 1
                same += first_token(tok, answer) == clean
    return same / total


def test_also_seen_corruptions_never_share_the_clean_answer_first_token(smollm2, lre_dir):
    tok = smollm2.tokenizer
    ps = build_prompts(load_relation(str(lre_dir / "person_plays_pro_sport.json")), tok, shots=0, max_prompts=60)
    before = same_answer_share(ps, tok)
    print(f"person_plays_pro_sport: {100 * before:.0f}% of candidate corruptions share the clean answer's first token")
    assert before > 0.1  # the issue measured 23% of the corrupted prompts
    answer_of = {s.subject: s.object for s in ps.relation.samples}
    excluded: dict[str, int] = {}
    n_used = 0
    for p in ps.prompts:
        found = corruptions(p, ps, tok, limit=10, excluded=excluded)
        n_used += len(found)
        assert all(first_token(tok, answer_of[c.subject]) != first_token(tok, p.answer) for c in found)
        assert all(c.answer == p.answer for c in found)  # scored on the clean Y, as before
    assert n_used > 0 and excluded[EXCLUDE_SAME_ANSWER] > 0
    assert set(excluded) == {EXCLUDE_SAME_ANSWER}


def test_also_seen_shots_message_names_the_shared_first_token(smollm2, lre_dir):
    with pytest.raises(UserError) as info:
        build_prompts(load_relation(str(lre_dir / "presidents_birth_year.json")), smollm2.tokenizer, shots=1, answer_metric="first_token")
    message = str(info.value)
    assert message.startswith("--shots 1 needs at least 2 usable samples in relation 'president_birth_year'; it has 0 of 19")
    assert "answer_first_token_shared: 18" in message and "every answer starts with the token ' '" in message
