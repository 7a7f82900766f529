"""Issue 16, class A: every config field that changes the forward pass is honoured or refused.

Each accepted variant is checked against transformers (logits ≤ 1e-4 at every real position of
a left-padded batch, prompts longer than any window) with the identities of ``conftest.py``;
each refused one raises a one-line :class:`UserError` naming the field and its value. The
reported cases keep their names (``test_fault_A_*``) and measure what the view gave before the
fix (the same weights with the field ignored) beside what it gives now.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
    SmolLM3Config,
)

from models.test_architectures import PAD, VOCAB, random_prompts, randomise  # noqa: E402  (tests/ is on sys.path)
from recallscope.errors import UserError
from recallscope.models.adapters import ADAPTERS, COMMON_HONOURED, adapter_for, extract
from recallscope.models.view import ModelView, position_ids_from_mask

# 2 layers, 4 heads / 2 KV heads, d = 64: the reported size.
SMALL = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)
THREE = dict(SMALL, num_hidden_layers=3)

ACCEPTED = {
    "mistral_sliding_window_3": lambda: MistralConfig(sliding_window=3, **SMALL),
    "mistral_no_window": lambda: MistralConfig(sliding_window=None, **SMALL),
    "qwen2_sliding_all_layers": lambda: Qwen2Config(use_sliding_window=True, sliding_window=3, max_window_layers=0, **SMALL),
    "qwen2_sliding_from_layer_1": lambda: Qwen2Config(use_sliding_window=True, sliding_window=3, max_window_layers=1, **THREE),
    "qwen2_default": lambda: Qwen2Config(**SMALL),
    "llama_mlp_bias": lambda: LlamaConfig(mlp_bias=True, **SMALL),
    "llama_attention_bias": lambda: LlamaConfig(attention_bias=True, **SMALL),
    "llama_rope_llama3": lambda: LlamaConfig(rope_parameters={
        "rope_type": "llama3", "rope_theta": 10_000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, **SMALL),
    "llama_rope_yarn": lambda: LlamaConfig(rope_parameters={
        "rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0, "original_max_position_embeddings": 16}, **SMALL),
    "llama_rope_linear": lambda: LlamaConfig(rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}, **SMALL),
    "llama_head_dim_32": lambda: LlamaConfig(head_dim=32, **SMALL),
    "smollm3_no_rope_layers": lambda: SmolLM3Config(pad_token_id=PAD, no_rope_layer_interval=2, **SMALL),
    "smollm3_sliding": lambda: SmolLM3Config(pad_token_id=PAD, no_rope_layer_interval=2, use_sliding_window=True, sliding_window=3, **SMALL),
    "gpt2_unscaled_attention": lambda: GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                                  scale_attn_weights=False, n_inner=96, activation_function="relu"),
    "gpt2_reorder_and_upcast": lambda: GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                                  reorder_and_upcast_attn=True),
    "opt_no_bias_no_affine": lambda: OPTConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                               num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64,
                                               pad_token_id=1, enable_bias=False, layer_norm_elementwise_affine=False),
    "gpt_neox_no_attention_bias": lambda: GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=128, rotary_pct=0.5,
                                                        attention_bias=False, max_position_embeddings=64),
}


def build(config, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    randomise(model, seed)
    return model.eval()


@torch.no_grad()
def max_logit_diff(view: ModelView, model, prompts) -> float:
    """max |view − transformers| over every real position of the left-padded batch."""
    from models.conftest import left_pad

    ids, mask = left_pad(prompts, PAD)
    hf = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    ours = view.trace(ids, mask, all_logits=True).full_logits
    real = mask.bool()
    return (ours[real] - hf[real]).abs().max().item()


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_every_accepted_variant_reproduces_transformers(name, identities):
    measure, check = identities
    model = build(ACCEPTED[name]())
    view = ModelView(*extract(model))
    prompts = random_prompts(seed=1)
    assert min(len(p) for p in prompts) > 3  # longer than every window here
    measured = measure(view, model, prompts, pad_id=PAD)
    print(name, measured)
    check(measured)


def test_fault_A_sliding_window_mistral():
    """Mistral sliding_window=3: before, the window was never read (max |Δlogit| ≈ 3.9 in the report)."""
    model = build(MistralConfig(sliding_window=3, **SMALL))
    cfg, weights = extract(model)
    assert cfg.sliding_window == (3, 3)
    prompts = random_prompts(seed=1)
    before = max_logit_diff(ModelView(dataclasses.replace(cfg, sliding_window=()), weights), model, prompts)
    after = max_logit_diff(ModelView(cfg, weights), model, prompts)
    print(f"mistral sliding_window=3: max |logit diff| before {before:.3g}, after {after:.3g}")
    assert before > 0.1 and after <= 1e-4


def test_fault_A_sliding_window_qwen2():
    model = build(Qwen2Config(use_sliding_window=True, sliding_window=3, max_window_layers=0, **SMALL))
    cfg, weights = extract(model)
    assert cfg.sliding_window == (3, 3)
    prompts = random_prompts(seed=1)
    before = max_logit_diff(ModelView(dataclasses.replace(cfg, sliding_window=()), weights), model, prompts)
    after = max_logit_diff(ModelView(cfg, weights), model, prompts)
    print(f"qwen2 sliding_window=3: max |logit diff| before {before:.3g}, after {after:.3g}")
    assert before > 0.1 and after <= 1e-4


def test_fault_A_sliding_window_qwen2_only_layers_from_max_window_layers():
    cfg, _ = extract(build(Qwen2Config(use_sliding_window=True, sliding_window=3, max_window_layers=1, **THREE)))
    assert cfg.sliding_window == (None, 3, 3)
    cfg, _ = extract(build(Qwen2Config(use_sliding_window=False, sliding_window=3, **SMALL)))
    assert cfg.sliding_window == ()  # HF drops the window when use_sliding_window is false


def test_fault_A_mlp_bias_llama():
    """Llama mlp_bias=True: the gate bias was never read (max |Δlogit| ≈ 1.07 in the report)."""
    model = build(LlamaConfig(mlp_bias=True, **SMALL))
    cfg, weights = extract(model)
    assert all(lw.b_gate is not None and lw.b_in is not None and lw.b_out is not None for lw in weights.layers)
    prompts = random_prompts(seed=1)
    without = dataclasses.replace(weights, layers=[dataclasses.replace(lw, b_gate=None) for lw in weights.layers])
    before = max_logit_diff(ModelView(cfg, without), model, prompts)
    after = max_logit_diff(ModelView(cfg, weights), model, prompts)
    print(f"llama mlp_bias=True: max |logit diff| before {before:.3g}, after {after:.3g}")
    assert before > 0.1 and after <= 1e-4


def test_fault_A_smollm3_no_rope_layers():
    """SmolLM3 (a Llama-family model type) skips rope in every 4th layer by default."""
    model = build(SmolLM3Config(pad_token_id=PAD, no_rope_layer_interval=2, **SMALL))
    cfg, weights = extract(model)
    assert weights.layers[1].inv_freq.abs().max().item() == 0.0 and weights.layers[0].inv_freq.abs().max().item() > 0
    assert max_logit_diff(ModelView(cfg, weights), model, random_prompts(seed=1)) <= 1e-4


def _refusal(config) -> str:
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UserError) as info:
        extract(model)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "config, expected",
    [
        # a field no adapter knows, at a non-default value (a newer transformers field, say)
        (lambda: LlamaConfig(**SMALL, attn_temperature_tuning=True), "config field attn_temperature_tuning=True"),
        (lambda: MistralConfig(**SMALL, use_bidirectional_attention=True), "config field use_bidirectional_attention=True"),
        (lambda: GPTNeoXConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64,
                               attention_softmax_in_fp32=False, some_new_switch=2), "config field some_new_switch=2"),
        (lambda: LlamaConfig(rope_parameters={"rope_type": "dynamic", "rope_theta": 10_000.0, "factor": 2.0}, **SMALL),
         "rope_type='dynamic'"),
        (lambda: Qwen2Config(layer_types=["full_attention", "chunked_attention"], **SMALL), "'chunked_attention'"),
        (lambda: GPT2Config(n_embd=64, n_head=4, n_layer=1, add_cross_attention=True), "add_cross_attention"),
    ],
)
def test_fault_A_unknown_or_unimplemented_fields_are_refused(config, expected):
    assert expected in _refusal(config())


def test_fault_A_every_family_lists_its_fields():
    """No adapter honours a field it also calls irrelevant; every family's model types are covered."""
    for adapter in ADAPTERS:
        assert not (adapter.honoured & adapter.irrelevant), adapter.family
        assert not (COMMON_HONOURED & adapter.irrelevant), adapter.family
    assert adapter_for("qwen2").family == adapter_for("mistral").family == "llama"
