"""Tiny random models of every supported family, built from transformers configs (no download).

Weights are drawn at a scale where every component matters (the HF init's 0.02 would leave the
logits near-uniform), and every norm weight and bias is randomised, so a misplaced norm, bias or
position fails a test that compares against Hugging Face. The one builder the tests share.
"""

from __future__ import annotations

import math

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    SiglipVisionConfig,
)

from recallscope.models.adapters import extract
from recallscope.models.view import ModelView

VOCAB = 211
PAD = 0
# Lengths chosen so that left padding shifts every row differently and Gemma's window (4) bites.
PROMPT_LENGTHS = (9, 6, 11)


def _gemma3_text(**overrides) -> Gemma3TextConfig:
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        query_pre_attn_scalar=24,  # deliberately not head_dim: the scale must come from the config
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
        },
        max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
    )
    kwargs.update(overrides)
    return Gemma3TextConfig(**kwargs)


CONFIGS = {
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    ),
    "opt": lambda: OPTConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=64, pad_token_id=1, dropout=0.0,
    ),
    "gpt_neox_parallel": lambda: GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=64,
    ),
    "gpt_neox_sequential": lambda: GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        rotary_pct=0.5, use_parallel_residual=False, max_position_embeddings=64,
    ),
    "llama_gqa": lambda: LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    ),
    "gemma3_text": lambda: _gemma3_text(),
    "gemma3_text_softcap_bias": lambda: _gemma3_text(
        attn_logit_softcapping=3.0, final_logit_softcapping=5.0, attention_bias=True,
    ),
    "gemma3_multimodal": lambda: Gemma3Config(
        text_config=_gemma3_text().to_dict(),
        vision_config=SiglipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14,
        ).to_dict(),
        mm_tokens_per_image=4, image_token_id=VOCAB - 1, boi_token_index=VOCAB - 2, eoi_token_index=VOCAB - 3,
    ),
}


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> None:
    """Matrices ~ N(0, 1/fan_in), embeddings ~ N(0, 1), every vector (norm weights, biases) perturbed."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen)
        if param.dim() == 1:
            param.add_(0.2 * noise)  # LayerNorm 1 → 1 ± 0.2; Gemma's (1 + w) zeros → ± 0.2; biases 0 → ± 0.2
        elif "embed" in name or name.endswith(("wte.weight", "wpe.weight")):
            param.copy_(noise)
        else:
            param.copy_(noise / math.sqrt(param.shape[-1]))


def tiny_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[name](), attn_implementation="eager")
    randomise(model, seed)
    return model.eval()


def random_prompts(seed: int, high: int = VOCAB - 3) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, high, (n,), generator=gen).tolist() for n in PROMPT_LENGTHS]




def left_pad(prompts: list[list[int]], pad_id: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask [B, S] of token lists."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def tiny_view(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> ModelView:
    """The neutral view of ``tiny_model(name)`` (float64 by default: comparisons then measure the
    algorithm, not rounding)."""
    cfg, weights = extract(tiny_model(name, seed))
    return ModelView(cfg, weights.to(dtype=dtype))
