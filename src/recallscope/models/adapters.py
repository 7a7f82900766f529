"""Per-architecture adapters: where each tensor of the neutral :class:`Weights` lives.

Adding a model family is one :class:`Adapter` entry: module paths for the embedding, norms,
attention projections, MLP and unembedding, the layout of the projections, and a function that
reads the switches of :class:`ArchConfig` from the Hugging Face config. Nothing outside this
file knows which family a model belongs to.

Layouts of the attention projections:
- ``"separate"``: q/k/v/o are ``nn.Linear`` (weight ``[out, in]``) — Llama, Mistral, Qwen2, OPT, Gemma 3.
- ``"gpt2_conv1d"``: one ``Conv1D`` ``c_attn`` (weight ``[in, 3·d]``), then ``c_proj`` — GPT-2.
- ``"neox_fused"``: one ``Linear`` ``query_key_value`` whose output is ``[H, 3, dh]`` interleaved — GPT-NeoX/Pythia.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from ..errors import UserError
from .arch import ArchConfig, LayerWeights, Norm, Weights


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]
    layers: str
    embed: str
    final_norm: str
    unembed: str
    ln1: str
    ln2: str
    attn_layout: Literal["separate", "gpt2_conv1d", "neox_fused"]
    # separate layout: q, k, v, o; fused layouts: the fused projection and the output projection
    attn: dict[str, str]
    mlp: dict[str, str]  # keys: in, out and optionally gate
    mlp_layout: Literal["linear", "conv1d"] = "linear"
    pos_embed: str | None = None
    rotary: str | None = None  # module holding inv_freq (one shared rotary embedding)
    extra_norms: dict[str, str] = field(default_factory=dict)  # q_norm, k_norm, post_attn_norm, post_mlp_norm
    config: Callable[[object], dict] = lambda hf: {}


def _get(module: nn.Module, path: str):
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _llama_config(hf) -> dict:
    return dict(
        norm="rmsnorm",
        norm_eps=hf.rms_norm_eps,
        act=_act_name(getattr(hf, "hidden_act", "silu")),
        gated_mlp=True,
        positional="rotary",
    )


def _act_name(name: str) -> str:
    return {
        "silu": "silu",
        "swish": "silu",
        "gelu": "gelu",
        "gelu_new": "gelu_tanh",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu_fast": "gelu_tanh",
        "relu": "relu",
    }[name]


LLAMA = Adapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "smollm3"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    attn_layout="separate",
    attn={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"},
    mlp={"in": "mlp.up_proj", "gate": "mlp.gate_proj", "out": "mlp.down_proj"},
    rotary="model.rotary_emb",
    config=_llama_config,
)

ADAPTERS: list[Adapter] = [LLAMA]


def adapter_for(model_type: str) -> Adapter:
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    known = sorted(t for a in ADAPTERS for t in a.model_types)
    raise UserError(f"architecture {model_type!r} is not supported; supported: {', '.join(known)}")


def _norm(module: nn.Module | None) -> Norm:
    if module is None:
        return Norm(None)
    return Norm(getattr(module, "weight", None), getattr(module, "bias", None))


def _bias(module) -> Tensor | None:
    return getattr(module, "bias", None)


def _linear_t(module) -> Tensor:
    """[in, out] from an nn.Linear ([out, in]) or a GPT-2 Conv1D (already [in, out])."""
    return module.weight.T if isinstance(module, nn.Linear) else module.weight


def _split_heads_in(w_in_out: Tensor, n: int, dh: int) -> Tensor:
    """[d, n·dh] -> [n, d, dh]."""
    return w_in_out.reshape(w_in_out.shape[0], n, dh).permute(1, 0, 2)


def _split_bias(b: Tensor | None, n: int, dh: int) -> Tensor | None:
    return None if b is None else b.reshape(n, dh)


def _attention_weights(adapter: Adapter, block: nn.Module, cfg: ArchConfig) -> dict:
    H, K, dh, d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model
    if adapter.attn_layout == "separate":
        q, k, v, o = (_get(block, adapter.attn[name]) for name in ("q", "k", "v", "o"))
        W_q, W_k, W_v = _linear_t(q), _linear_t(k), _linear_t(v)
        b_q, b_k, b_v = _bias(q), _bias(k), _bias(v)
    elif adapter.attn_layout == "gpt2_conv1d":
        qkv, o = _get(block, adapter.attn["qkv"]), _get(block, adapter.attn["o"])
        W_q, W_k, W_v = _linear_t(qkv).split(d, dim=1)
        b_q, b_k, b_v = qkv.bias.split(d) if qkv.bias is not None else (None, None, None)
    elif adapter.attn_layout == "neox_fused":
        qkv, o = _get(block, adapter.attn["qkv"]), _get(block, adapter.attn["o"])
        w = _linear_t(qkv).reshape(d, H, 3, dh)
        W_q, W_k, W_v = (w[:, :, i].reshape(d, H * dh) for i in range(3))
        if qkv.bias is not None:
            b = qkv.bias.reshape(H, 3, dh)
            b_q, b_k, b_v = (b[:, i].reshape(H * dh) for i in range(3))
        else:
            b_q = b_k = b_v = None
    else:  # pragma: no cover - the Literal type lists every layout
        raise ValueError(adapter.attn_layout)
    W_O = _linear_t(o).reshape(H, dh, d)
    return dict(
        W_Q=_split_heads_in(W_q, H, dh),
        W_K=_split_heads_in(W_k, K, dh),
        W_V=_split_heads_in(W_v, K, dh),
        W_O=W_O,
        b_Q=_split_bias(b_q, H, dh),
        b_K=_split_bias(b_k, K, dh),
        b_V=_split_bias(b_v, K, dh),
        b_O=_bias(o),
    )


def _mlp_weights(adapter: Adapter, block: nn.Module) -> dict:
    mods = {name: _get(block, path) for name, path in adapter.mlp.items()}
    return dict(
        W_in=_linear_t(mods["in"]),
        b_in=_bias(mods["in"]),
        W_out=_linear_t(mods["out"]),
        b_out=_bias(mods["out"]),
        W_gate=_linear_t(mods["gate"]) if "gate" in mods else None,
    )


def arch_config(adapter: Adapter, hf_config) -> ArchConfig:
    text = getattr(hf_config, "text_config", None) or hf_config
    H = text.num_attention_heads
    d = text.hidden_size
    dh = getattr(text, "head_dim", None) or d // H
    base = dict(
        family=adapter.family,
        n_layers=text.num_hidden_layers,
        n_heads=H,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or H,
        d_model=d,
        d_head=dh,
        d_mlp=getattr(text, "intermediate_size", None) or getattr(text, "ffn_dim", None) or 4 * d,
        d_vocab=text.vocab_size,
    )
    base.update(adapter.config(text))
    return ArchConfig(**base)


@torch.no_grad()
def extract(hf_model: nn.Module, adapter: Adapter | None = None) -> tuple[ArchConfig, Weights]:
    """Read a Hugging Face causal LM into the neutral (config, weights) pair.

    The tensors are views of the model's own parameters where the layout allows (no copy).
    """
    adapter = adapter or adapter_for(hf_model.config.model_type)
    cfg = arch_config(adapter, hf_model.config)
    rotary = _get(hf_model, adapter.rotary) if adapter.rotary else None
    layers = []
    for index, block in enumerate(_get(hf_model, adapter.layers)):
        extra = {
            name: _norm(_get(block, path)) for name, path in adapter.extra_norms.items()
        }
        inv_freq = rope_scaling = None
        if rotary is not None:
            inv_freq = rotary.inv_freq
            rope_scaling = float(getattr(rotary, "attention_scaling", 1.0))
        layers.append(
            LayerWeights(
                ln1=_norm(_get(block, adapter.ln1)),
                ln2=_norm(_get(block, adapter.ln2)),
                inv_freq=inv_freq,
                rope_scaling=rope_scaling if rope_scaling is not None else 1.0,
                **_attention_weights(adapter, block, cfg),
                **_mlp_weights(adapter, block),
                **extra,
            )
        )
    unembed = _get(hf_model, adapter.unembed)
    weights = Weights(
        W_E=_get(hf_model, adapter.embed).weight,
        W_pos=_get(hf_model, adapter.pos_embed).weight if adapter.pos_embed else None,
        layers=layers,
        ln_final=_norm(_get(hf_model, adapter.final_norm)),
        W_U=unembed.weight.T,
        b_U=_bias(unembed),
    )
    return cfg, weights
