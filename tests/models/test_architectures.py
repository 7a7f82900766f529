"""Every supported family, as a tiny random model built from a config (no download), must give
Hugging Face's logits through the neutral view and satisfy the view's identities (a)–(e) — see
``conftest.py``. Weights are drawn at a scale where every component matters (the HF init's
0.02 would leave the logits near-uniform), and every norm weight and bias is randomised, so a
misplaced norm, bias or position fails the test.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, OPTConfig

from helpers.tiny import CONFIGS, PAD, random_prompts, tiny_model

from recallscope.errors import UserError
from recallscope.models.adapters import adapter_for, extract
from recallscope.models.view import ModelView

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_view_reproduces_hf_and_identities_hold(name, identities):
    measure, check = identities
    model = tiny_model(name)
    view = ModelView(*extract(model))
    measured = measure(view, model, random_prompts(seed=1), pad_id=PAD)
    print(name, measured)
    check(measured)
    # the test can fail: logits are far from uniform, so a wrong component would show
    ids = torch.tensor([random_prompts(seed=1)[0]])
    assert view.trace(ids).logits.std().item() > 0.1


def test_the_adapters_read_each_familys_switches():
    cfg, _ = extract(tiny_model("gpt_neox_parallel"))
    assert cfg.parallel_residual and not cfg.mlp_reads_own_heads() and cfg.rotary_dim == 4
    cfg, _ = extract(tiny_model("gpt_neox_sequential"))
    assert not cfg.parallel_residual and cfg.rotary_dim == 8
    cfg, _ = extract(tiny_model("opt"))
    assert cfg.positional == "learned" and cfg.learned_pos_offset == 2 and cfg.act == "relu"
    cfg, _ = extract(tiny_model("gpt2"))
    assert cfg.positional == "learned" and cfg.act == "gelu_tanh" and cfg.d_mlp == 256
    cfg, weights = extract(tiny_model("gemma3_text"))
    assert cfg.sliding_window == (4, None, 4)
    assert cfg.scale == pytest.approx(24**-0.5) and cfg.embed_scale == pytest.approx(8.0)
    assert cfg.n_kv_heads == 2 and cfg.qk_norm and cfg.post_attn_norm and cfg.post_mlp_norm
    # local and global layers rotate with their own frequencies (global: base 1e6, linear factor 2)
    local, global_ = weights.layers[0].inv_freq, weights.layers[1].inv_freq
    assert torch.equal(weights.layers[2].inv_freq, local) and not torch.allclose(local, global_)
    assert global_[1].item() == pytest.approx(0.5 * 1e6 ** (-2 / 16))


def test_gemma_norms_are_mapped_to_their_roles():
    model = tiny_model("gemma3_text")
    _, weights = extract(model)
    block = model.model.layers[0]
    lw = weights.layers[0]
    assert lw.ln1.weight.data_ptr() == block.input_layernorm.weight.data_ptr()  # the same storage, detached
    assert lw.post_attn_norm.weight.data_ptr() == block.post_attention_layernorm.weight.data_ptr()  # the same storage, detached
    assert lw.ln2.weight.data_ptr() == block.pre_feedforward_layernorm.weight.data_ptr()  # the same storage, detached
    assert lw.post_mlp_norm.weight.data_ptr() == block.post_feedforward_layernorm.weight.data_ptr()  # the same storage, detached


def test_sliding_window_changes_the_answer():
    """Guard against a vacuous Gemma test: with the window removed, the logits differ."""
    import dataclasses

    model = tiny_model("gemma3_text")
    cfg, weights = extract(model)
    ids = torch.tensor([random_prompts(seed=1)[2]])
    windowed = ModelView(cfg, weights).trace(ids).logits
    unwindowed = ModelView(dataclasses.replace(cfg, sliding_window=()), weights).trace(ids).logits
    assert (windowed - unwindowed).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    "config, match",
    [
        (lambda: OPTConfig(hidden_size=64, num_attention_heads=4, ffn_dim=128, num_hidden_layers=1,
                           word_embed_proj_dim=64, do_layer_norm_before=False), "do_layer_norm_before"),
        (lambda: OPTConfig(hidden_size=64, num_attention_heads=4, ffn_dim=128, num_hidden_layers=1,
                           word_embed_proj_dim=32), "project_in"),
        (lambda: GPT2Config(n_embd=64, n_head=4, n_layer=1, scale_attn_by_inverse_layer_idx=True),
         "scale_attn_by_inverse_layer_idx"),
    ],
)
def test_unsupported_variants_are_refused_clearly(config, match):
    model = AutoModelForCausalLM.from_config(config())
    with pytest.raises(UserError, match=match):
        extract(model)


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(UserError, match="gpt_neox.*"):
        adapter_for("mamba")
