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


# The paper's checkpoints' config.json (the keys and values as published on the hub): the field
# rule must not refuse them (their extra keys are bookkeeping or settings their HF class ignores).
PAPER_CONFIGS = {
    "gpt2-xl": {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
                "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
                "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 1600, "n_head": 25,
                "n_layer": 48, "n_positions": 1024, "output_past": True, "resid_pdrop": 0.1,
                "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
                "summary_type": "cls_index", "summary_use_proj": True,
                "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}}, "vocab_size": 50257,
                "n_special": 0, "predict_special_tokens": True},
    "facebook/opt-1.3b": {"_name_or_path": "facebook/opt-1.3b", "_remove_final_layer_norm": False, "activation_dropout": 0.0,
                          "activation_function": "relu", "architectures": ["OPTForCausalLM"], "attention_dropout": 0.0,
                          "bos_token_id": 2, "do_layer_norm_before": True, "dropout": 0.1, "eos_token_id": 2,
                          "ffn_dim": 8192, "hidden_size": 2048, "init_std": 0.02, "layerdrop": 0.0,
                          "max_position_embeddings": 2048, "model_type": "opt", "num_attention_heads": 32,
                          "num_hidden_layers": 24, "pad_token_id": 1, "prefix": "</s>", "torch_dtype": "float16",
                          "transformers_version": "4.21.0.dev0", "use_cache": True, "vocab_size": 50272,
                          "word_embed_proj_dim": 2048},
    "meta-llama/Llama-2-7b-hf": {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
                                 "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
                                 "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
                                 "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
                                 "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
                                 "tie_word_embeddings": False, "torch_dtype": "float16",
                                 "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000},
    "EleutherAI/pythia-160m": {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "classifier_dropout": 0.1,
                               "eos_token_id": 0, "hidden_act": "gelu", "hidden_size": 768, "initializer_range": 0.02,
                               "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
                               "model_type": "gpt_neox", "num_attention_heads": 12, "num_hidden_layers": 12,
                               "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
                               "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True,
                               "use_parallel_residual": True, "vocab_size": 50304},
}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_published_configs_of_supported_checkpoints_are_accepted(name):
    from transformers import AutoConfig

    from recallscope.models.adapters import arch_config

    data = dict(PAPER_CONFIGS[name])
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    cfg = arch_config(adapter_for(config.model_type), config)  # raises UserError on a refused field
    assert cfg.n_layers == data.get("n_layer", data.get("num_hidden_layers"))
