"""The view identities (a)–(e) of ``conftest.py`` on the real embedded model, and one fact it knows."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

PROMPTS = (
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "Rome is the capital of",
    "The official language of Brazil is",
)


@pytest.fixture(scope="module")
def model(smollm2):
    """The session's smollm2-135m (loaded once, from the safetensors cache)."""
    return smollm2


def test_identities_hold_on_smollm2(model, identities):
    measure, check = identities
    prompts = [model.tokenizer(text).input_ids for text in PROMPTS]
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    measured = measure(model.view, model.hf_model, prompts, pad_id=model.tokenizer.pad_token_id)
    print(measured)
    check(measured)


def test_smollm2_knows_the_capital_of_france(model):
    ids = model.tokenizer("The capital of France is", return_tensors="pt").input_ids
    probs = model.view.trace(ids).logits[0, -1].softmax(-1)
    top = int(probs.argmax())
    assert model.tokenizer.decode([top]) == " Paris"
    assert 0.70 <= probs[top].item() <= 0.85
