"""Issue 16, class E: special tokens a tokenizer adds at the end never become the end position.

A tokenizer whose post-processor appends ``<|im_end|>`` to every text used to end every
prompt with it: the end position was the EOS token and recall scored what follows it. Tokens
added at the end are removed; tokens added at the start (BOS) are kept, with the subject span
shifted past them.
"""

from __future__ import annotations

import copy

import pytest
from tokenizers.processors import TemplateProcessing

from recallscope.errors import UserError
from recallscope.tasks import build_prompts, load_relation
from recallscope.tasks.prompts import _encode

pytestmark = pytest.mark.slow


def with_post_processor(tokenizer, single: str):
    tok = copy.deepcopy(tokenizer)
    specials = [(t, tok.convert_tokens_to_ids(t)) for t in ("<|im_start|>", "<|im_end|>") if t in single]
    tok._tokenizer.post_processor = TemplateProcessing(single=single, special_tokens=specials)
    return tok


def test_fault_E_appended_eos_is_not_the_end_position(smollm2):
    plain_tok = smollm2.tokenizer
    eos_tok = with_post_processor(plain_tok, "$A <|im_end|>")
    assert eos_tok("The capital of France is").input_ids[-1] == eos_tok.convert_tokens_to_ids("<|im_end|>")
    rel = load_relation("country_capital_extended")
    for shots in (0, 1):
        plain = build_prompts(rel, plain_tok, shots=shots, max_prompts=20)
        appended = build_prompts(rel, eos_tok, shots=shots, max_prompts=20)
        assert [p.input_ids for p in appended.prompts] == [p.input_ids for p in plain.prompts]
        assert [p.subject_span for p in appended.prompts] == [p.subject_span for p in plain.prompts]
        assert [p.answer_id for p in appended.prompts] == [p.answer_id for p in plain.prompts]
        assert {plain_tok.decode([p.input_ids[-1]]) for p in appended.prompts} == {" is"}


def test_fault_E_bos_at_the_start_is_kept(smollm2):
    plain_tok = smollm2.tokenizer
    both = with_post_processor(plain_tok, "<|im_start|> $A <|im_end|>")
    bos = both.convert_tokens_to_ids("<|im_start|>")
    rel = load_relation("country_capital_extended")
    plain = build_prompts(rel, plain_tok, max_prompts=10)
    wrapped = build_prompts(rel, both, max_prompts=10)
    for a, b in zip(plain.prompts, wrapped.prompts, strict=True):
        assert b.input_ids == (bos,) + a.input_ids
        assert b.subject_span == (a.subject_span[0] + 1, a.subject_span[1] + 1)
        assert b.subject_id == a.subject_id and b.answer_id == a.answer_id


def test_fault_E_special_tokens_inside_the_text_are_refused(smollm2):
    class Inserting:
        """A tokenizer that puts a special token between the words: nothing to strip safely."""

        def __init__(self, tok):
            self.tok = tok

        def __call__(self, text, add_special_tokens=True, **kwargs):
            enc = dict(self.tok(text, add_special_tokens=False, **kwargs))
            if add_special_tokens:
                enc["input_ids"] = enc["input_ids"][:1] + [2] + enc["input_ids"][1:]
                if "offset_mapping" in enc:
                    enc["offset_mapping"] = enc["offset_mapping"][:1] + [(0, 0)] + enc["offset_mapping"][1:]
            return enc

        def convert_ids_to_tokens(self, ids):
            return self.tok.convert_ids_to_tokens(ids)

    with pytest.raises(UserError, match=r"adds special tokens \['<\|im_end\|>'\] inside the prompt"):
        _encode(Inserting(smollm2.tokenizer), "The capital of France is")
