"""Tiny float64 models and prompts with a subject span, shared by the trace and knockout tests."""

from __future__ import annotations

import dataclasses

import torch

from helpers.tiny import VOCAB, tiny_model
from recallscope.models import Model
from recallscope.models.adapters import extract
from recallscope.models.view import ModelView
from recallscope.tasks.prompts import Prompt, PromptSet
from recallscope.tasks.relation import Relation, Sample

FAMILIES = ["gpt2", "opt", "gpt_neox_parallel", "gpt_neox_sequential", "llama_gqa", "gemma3_text", "gemma3_text_softcap_bias"]


def tiny(name: str) -> Model:
    """A tiny random model in float64 (comparisons measure the algorithm, not rounding)."""
    cfg, weights = extract(tiny_model(name))
    weights = weights.to(dtype=torch.float64)
    # Random tiny models are often saturated (p(top-1) = 1 - 1e-14, so no restoration can
    # move it); a smaller unembedding keeps p(Y) in the range where the engines can differ.
    weights = dataclasses.replace(weights, W_U=weights.W_U * 0.1)
    view = ModelView(cfg, weights)
    return Model(name=name, hf=None, tokenizer=None, cfg=cfg, view=view, model_hash="", source="test")


def tiny_prompts(lengths=(7, 7, 6), spans=((1, 3), (2, 5), (0, 1)), seed: int = 1, model: Model | None = None) -> PromptSet:
    """Random-token prompts with a subject span each; Y = the model's top-1 token (as ROME scores)."""
    gen = torch.Generator().manual_seed(seed)
    relation = Relation("tiny", ("{} is",), ("{} is",), (Sample("s", "o"),), "test")
    prompts = []
    for i, (n, span) in enumerate(zip(lengths, spans, strict=True)):
        ids = tuple(torch.randint(3, VOCAB - 3, (n,), generator=gen).tolist())
        prompts.append(Prompt(text=f"prompt {i}", subject=f"s{i}", answer="o", template="{} is", demos=(), input_ids=ids,
                              subject_span=span, answer_id=top1(model, ids) if model is not None else 3, index=i))
    return PromptSet(relation, 0, 0, tuple(prompts))


def top1(model: Model, ids) -> int:
    return int(model.view.trace(torch.tensor([ids]), record=["logits"]).logits[0, 0].argmax())
