"""``recallscope bench run``: the patch engine's FLOP arithmetic, checked against a FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers.tiny import PAD, left_pad, random_prompts, tiny_model
from recallscope import patch as P
from recallscope.benchmarks.run import exact_engine_macs, layer_macs, mlp_macs
from recallscope.models.adapters import extract
from recallscope.models.view import ModelView


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])  # a plain and a gated MLP
def test_exact_engine_flops_are_the_arithmetic(name):
    """The bench line's count (heads and MLPs, attention over the keys left out) against torch's
    FLOP counter on the engine itself: the counted matrix products exceed it only by that attention."""
    cfg, weights = extract(tiny_model(name))
    view = ModelView(cfg, weights.to(dtype=torch.float64))
    ids, mask = left_pad(random_prompts(seed=1), PAD)
    B, S = ids.shape
    base = P.record_run(view, ids, mask, torch.tensor([5, 17, 42]), prefix=True)
    comps = P.select_components(cfg, ["heads", "mlp"], None)
    with FlopCounterMode(display=False) as counter:
        P.exact_pi(view, base, base.record, comps)
    counted = counter.get_total_flops()
    expected = 2 * exact_engine_macs(cfg) * B
    # attention of one end-position query over S keys: 2·H·dh·S multiply-adds per layer run
    layer_runs = sum((cfg.n_heads + 1) * (cfg.n_layers - 1 - layer) for layer in range(cfg.n_layers)) * B
    attention = 2 * 2 * cfg.n_heads * cfg.d_head * S * layer_runs
    assert expected <= counted <= expected + attention + 2 * cfg.d_model * len(comps) * B, (counted, expected, attention)
    assert layer_macs(cfg) > mlp_macs(cfg) > 0
