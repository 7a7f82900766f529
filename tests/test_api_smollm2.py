"""The Python API on the real embedded model smollm2-135m: a stage function called directly on the
known prompts reproduces the pipeline's table (and on every prompt gives the other figure a user
saw), and a fine-tuned copy held in memory is another model — another hash, other patching
effects — while the base module in memory gives the named model's effects bit for bit.

Run with ``-s`` to see the figures."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

import recallscope as rs

pytestmark = pytest.mark.slow

RELATION = "country_capital_extended"


def test_a_direct_movers_call_on_the_known_prompts_is_the_pipelines_table():
    """The reported case: movers(model, study.prompts, MoversConfig(layer=23, head=4)) said r 0.42 and
    "0 of 1 movers" where the run said L23H4 is one with r 0.578: the pipeline passes the known prompts."""
    study = rs.run(stages=["movers"], max_prompts=40, progress=False, settings={"movers.layer": 23, "movers.head": 4})
    config = rs.movers.MoversConfig(layer=23, head=4)
    direct = rs.movers.movers(study.model, study.known, config, progress=False)
    pd.testing.assert_frame_equal(direct.to_frame(), study["movers"].to_frame())
    assert direct.to_dict() == study["movers"].to_dict()
    every = rs.movers.movers(study.model, study.prompts, config, progress=False)
    r_known, r_every = study["movers"].heads[0]["projection_corr"], every.heads[0]["projection_corr"]
    print(
        f"\nL23H4 r: pipeline {r_known:.4f} on {len(study.known)} known prompts; direct call on all {len(study.prompts)}: {r_every:.4f}"
    )
    assert (len(study.prompts), len(study.known)) == (40, 33)
    assert r_known == pytest.approx(0.5781, abs=1e-4) and r_every == pytest.approx(0.4243, abs=1e-4)
    assert study["movers"].movers == [(23, 4)] and every.movers == []


def _answer_loss(model, prompts) -> torch.Tensor:
    """Mean cross-entropy of each prompt's answer token at its end position."""
    losses = [
        torch.nn.functional.cross_entropy(
            model(input_ids=torch.as_tensor([p.input_ids])).logits[0, -1:], torch.as_tensor([p.answer_id])
        )
        for p in prompts.prompts
    ]
    return torch.stack(losses).mean()


def test_a_fine_tuned_copy_in_memory_is_another_model(smollm2):
    hf, tok = smollm2.hf_model, smollm2.tokenizer
    prompts = rs.build_prompts(rs.Relation.load(RELATION), tok, max_prompts=16, seed=0)
    tuned = copy.deepcopy(hf).requires_grad_(True).train()
    optimiser = torch.optim.SGD(tuned.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):  # five SGD steps on the relation's own prompts
        loss = _answer_loss(tuned, prompts)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(float(loss.detach()))
    tuned.eval()
    run = dict(relation=RELATION, stages=["patch"], max_prompts=16, progress=False)
    base = rs.run(model=hf, tokenizer=tok, **run)
    other = rs.run(model=tuned, tokenizer=tok, **run)
    named = rs.run(model=smollm2, **run)
    effect = {
        name: s["patch"].tables()["components"].set_index("component")["effect"]
        for name, s in [("base", base), ("tuned", other), ("named", named)]
    }
    shift = (effect["tuned"] - effect["base"]).abs()
    print(
        f"\nSGD loss {losses[0]:.3f} -> {losses[-1]:.3f}; hashes base {base.model.model_hash[:28]}…, tuned {other.model.model_hash[:28]}…"
        f"\nmean p(Y) {base.summary['mean_p_answer']:.3f} -> {other.summary['mean_p_answer']:.3f}; known {base.summary['n_known']} -> "
        f"{other.summary['n_known']} of 16\nL23H4 effect {effect['base']['L23H4']:.2f}% -> {effect['tuned']['L23H4']:.2f}%; "
        f"largest change {shift.max():.2f} pp ({shift.idxmax()}); base in memory vs by name: {float((effect['base'] - effect['named']).abs().max())}"
    )
    assert losses[-1] < losses[0]
    assert base.model.model_hash != other.model.model_hash and base.model.model_hash.startswith("weights:sha256:")
    assert shift.max() > 1.0  # percentage points of π
    # the base module read in memory computes what the named model computes, bit for bit
    assert (effect["base"] - effect["named"]).abs().max() == 0.0
