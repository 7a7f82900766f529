"""Per-architecture adapters: where each tensor of the neutral :class:`Weights` lives.

Adding a model family is one :class:`Adapter` entry: module paths for the embedding, norms,
attention projections, MLP and unembedding, the layout of the projections, and a function that
reads the switches of :class:`ArchConfig` from the Hugging Face config. Nothing outside this
file knows which family a model belongs to.

Layouts of the attention projections:
- ``"separate"``: q/k/v/o are ``nn.Linear`` (weight ``[out, in]``) — Llama, Mistral, Qwen2, OPT, Gemma 3.
- ``"gpt2_conv1d"``: one ``Conv1D`` ``c_attn`` (weight ``[in, 3·d]``), then ``c_proj`` — GPT-2.
- ``"neox_fused"``: one ``Linear`` ``query_key_value`` whose output is ``[H, 3, dh]`` interleaved — GPT-NeoX/Pythia.

Rotary frequencies are never recomputed from the config: they are read from the model's own
rotary module (``rotary``), per layer where a family rotates layers differently (Gemma 3's
local and global layers use different bases), so every rope variant is reproduced exactly.
A config function refuses, with a :class:`UserError`, the variants of a family that the neutral
forward pass does not describe (e.g. OPT-350m's post-norm layers), instead of computing
something silently different.

Every field of a model's config is accounted for at load (:func:`check_config_fields`): it is
honoured (the adapter's ``honoured`` list and :data:`COMMON_HONOURED`: read into
:class:`ArchConfig`, or reproduced because the weights or the rotary module carry it), known not
to change an eval-mode forward pass (``irrelevant``, :data:`COMMON_IRRELEVANT`), or at the value
a fresh config of its class has — the value the parity tests run. Any other value, including a
field a newer transformers adds, is refused in one line naming the field and the value. A new
field whose *default* changes the forward pass is what the parity tests against transformers
(tests/models/test_adapters.py, tests/models/test_config_fields.py) are there to catch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    rotary: str | None = None  # the model's rotary-embedding module
    # (rotary module, HF text config, layer index) -> (inv_freq, cos/sin scale) of that layer
    layer_rotary: Callable[[nn.Module, object, int], tuple[Tensor, float]] | None = None
    extra_norms: dict[str, str] = field(default_factory=dict)  # q_norm, k_norm, post_attn_norm, post_mlp_norm
    config: Callable[[object], dict] = lambda hf: {}
    # The config fields this family's forward pass depends on and that ``config`` (or the
    # weights and rotary module read by ``extract``) reproduces, and the fields known not to
    # change an eval-mode forward pass. Any other field with a non-default value is refused
    # (see :func:`check_config_fields`).
    honoured: frozenset[str] = frozenset()
    irrelevant: frozenset[str] = frozenset()


def _get(module: nn.Module, path: str):
    module = _original(module)
    for part in path.split("."):
        module = _original(getattr(module, part))
    return module


def _original(module):
    """The Hugging Face submodule itself. A TransformerLens ``TransformerBridge`` (>= 3) replaces the
    submodules of the module it wraps, in place, by its own components, each holding the original
    as ``_original_component`` (and some exposing weights in TransformerLens's layout): read the original."""
    inner = getattr(module, "_original_component", None) if isinstance(module, nn.Module) else None
    return inner if isinstance(inner, nn.Module) else module


def _layer_windows(hf, family: str) -> tuple[int | None, ...]:
    """Per-layer sliding windows from ``layer_types`` (Qwen2, SmolLM3, Gemma 3): HF builds the
    sliding mask from ``config.sliding_window`` for the layers typed ``sliding_attention``."""
    layer_types = getattr(hf, "layer_types", None)
    if not layer_types:
        return ()
    other = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
    if other:
        raise _refuse(family, f"layer_types with {other[0]!r} layers", "use a model whose layers are full or sliding attention")
    if "sliding_attention" in layer_types and not getattr(hf, "sliding_window", None):
        raise _refuse(family, f"sliding_attention layers with sliding_window={getattr(hf, 'sliding_window', None)!r}",
                      "give sliding_window a positive size")
    return tuple(hf.sliding_window if t == "sliding_attention" else None for t in layer_types)


def _llama_config(hf) -> dict:
    if hf.model_type == "mistral":
        # MistralModel masks every layer with config.sliding_window (None: full attention);
        # it never reads layer_types.
        window = getattr(hf, "sliding_window", None)
        windows = (window,) * hf.num_hidden_layers if window else ()
    elif hf.model_type in ("qwen2", "smollm3"):
        windows = _layer_windows(hf, hf.model_type)
    else:  # LlamaModel applies no window whatever the config says
        windows = ()
    return dict(
        norm="rmsnorm",
        norm_eps=hf.rms_norm_eps,
        act=_act_name(getattr(hf, "hidden_act", "silu")),
        gated_mlp=True,
        positional="rotary",
        sliding_window=windows if any(w is not None for w in windows) else (),
    )


def _llama_layer_rotary(rotary: nn.Module, hf, layer: int) -> tuple[Tensor, float]:
    """SmolLM3's ``no_rope_layers[l] == 0`` layers skip the rotation: zero frequencies (cos 1,
    sin 0, scale 1) leave q and k exactly unchanged."""
    inv_freq, scaling = rotary.inv_freq, float(getattr(rotary, "attention_scaling", 1.0))
    no_rope = getattr(hf, "no_rope_layers", None)
    if hf.model_type == "smollm3" and no_rope is not None and not no_rope[layer]:
        return torch.zeros_like(inv_freq), 1.0
    return inv_freq, scaling


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
    layer_rotary=_llama_layer_rotary,
    config=_llama_config,
    honoured=frozenset({
        "attention_bias", "mlp_bias",  # the biases are read from the weights, whatever the flags say
        "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",  # -> per-layer windows
        "no_rope_layers", "no_rope_layer_interval",  # SmolLM3 -> zero rotary frequencies
    }),
    irrelevant=frozenset({"pretraining_tp"}),  # transformers 5's Llama no longer reads it
)


def _refuse(family: str, reason: str, fix: str) -> UserError:
    return UserError(f"{family}: {reason} is not supported by recallscope's exact model view; {fix}")


def _gpt2_config(hf) -> dict:
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise _refuse("gpt2", "scale_attn_by_inverse_layer_idx=True (a per-layer attention scale)",
                      "use a GPT-2 checkpoint with the standard 1/sqrt(d_head) scale")
    if getattr(hf, "add_cross_attention", False):
        raise _refuse("gpt2", "add_cross_attention=True (an encoder-decoder GPT-2)", "use a decoder-only GPT-2")
    return dict(
        norm="layernorm",
        norm_eps=hf.layer_norm_epsilon,
        act=_act_name(hf.activation_function),
        gated_mlp=False,
        positional="learned",
        max_positions=hf.n_positions,
        d_mlp=hf.n_inner or 4 * hf.hidden_size,
        # scale_attn_weights=False leaves q·k unscaled (attn_scale 0 would mean the default)
        attn_scale=0.0 if getattr(hf, "scale_attn_weights", True) else 1.0,
    )


def _opt_config(hf) -> dict:
    if not hf.do_layer_norm_before:
        raise _refuse("opt", "do_layer_norm_before=False (post-norm layers, as in OPT-350m)",
                      "use another OPT size (125m, 1.3b, ...)")
    if hf.word_embed_proj_dim != hf.hidden_size:
        raise _refuse("opt", f"word_embed_proj_dim={hf.word_embed_proj_dim} != hidden_size={hf.hidden_size} "
                      "(project_in/project_out around the layers)", "use an OPT size without the projections")
    if getattr(hf, "_remove_final_layer_norm", False):
        raise _refuse("opt", "_remove_final_layer_norm=True (no final norm)", "use a standard OPT checkpoint")
    return dict(
        norm="layernorm",
        norm_eps=1e-5,  # OPT's LayerNorms are built without eps, i.e. with torch's default
        act=_act_name(hf.activation_function),
        gated_mlp=False,
        positional="learned",
        # OPTLearnedPositionalEmbedding looks position p up at row p + 2 (a fairseq legacy)
        learned_pos_offset=2,
        max_positions=hf.max_position_embeddings,
        d_mlp=hf.ffn_dim,
    )


def _neox_config(hf) -> dict:
    d_head = hf.hidden_size // hf.num_attention_heads
    rope = getattr(hf, "rope_parameters", None) or {}
    rotary_pct = rope.get("partial_rotary_factor", getattr(hf, "rotary_pct", 1.0))
    return dict(
        norm="layernorm",
        norm_eps=hf.layer_norm_eps,
        act=_act_name(hf.hidden_act),
        gated_mlp=False,
        positional="rotary",
        rotary_dim=int(d_head * rotary_pct),
        parallel_residual=bool(hf.use_parallel_residual),
    )


def _gemma3_config(hf) -> dict:
    if getattr(hf, "use_bidirectional_attention", False):
        raise _refuse("gemma3", "use_bidirectional_attention=True (an embedding model)", "use a causal Gemma 3 LM")
    return dict(
        norm="rmsnorm_plus1",
        norm_eps=hf.rms_norm_eps,
        act=_act_name(hf.hidden_activation),
        gated_mlp=True,
        positional="rotary",
        attn_scale=hf.query_pre_attn_scalar**-0.5,
        qk_norm=True,
        post_attn_norm=True,
        post_mlp_norm=True,
        embed_scale=hf.hidden_size**0.5,
        sliding_window=_layer_windows(hf, "gemma3"),
        # HF's Gemma3Attention stores attn_logit_softcapping but never passes it to the attention
        # (Gemma 3 replaced it by q/k norms; its checkpoints set it to null): mirror HF, not the config.
        attn_softcap=None,
        final_softcap=hf.final_logit_softcapping,
    )


def _gemma3_layer_rotary(rotary: nn.Module, hf, layer: int) -> tuple[Tensor, float]:
    """Gemma 3 keeps one inv_freq per layer type (local layers: base 10k; global: 1M, maybe scaled)."""
    layer_type = hf.layer_types[layer]
    return getattr(rotary, f"{layer_type}_inv_freq"), float(getattr(rotary, f"{layer_type}_attention_scaling"))


GPT2 = Adapter(
    family="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    ln1="ln_1",
    ln2="ln_2",
    attn_layout="gpt2_conv1d",
    attn={"qkv": "attn.c_attn", "o": "attn.c_proj"},
    mlp={"in": "mlp.c_fc", "out": "mlp.c_proj"},
    mlp_layout="conv1d",
    config=_gpt2_config,
    honoured=frozenset({
        "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function", "layer_norm_epsilon", "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx", "add_cross_attention",  # refused when set
        # upcasts q·k to float32 before the softmax: the view's softmax runs in float32 anyway
        "reorder_and_upcast_attn",
    }),
    irrelevant=frozenset({
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "n_ctx",
        # the OpenAI-GPT double-heads settings gpt2-medium/large/xl still carry; GPT2LMHeadModel ignores them
        "n_special", "predict_special_tokens",
        # the sequence-classification head's settings; a causal LM has no such head
        "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    }),
)

OPT = Adapter(
    family="opt",
    model_types=("opt",),
    layers="model.decoder.layers",
    embed="model.decoder.embed_tokens",
    pos_embed="model.decoder.embed_positions",
    final_norm="model.decoder.final_layer_norm",
    unembed="lm_head",
    ln1="self_attn_layer_norm",
    ln2="final_layer_norm",  # OPT's name for the norm before the MLP of each layer
    attn_layout="separate",
    attn={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj"},
    mlp={"in": "fc1", "out": "fc2"},
    config=_opt_config,
    honoured=frozenset({
        "ffn_dim", "activation_function", "do_layer_norm_before", "word_embed_proj_dim", "_remove_final_layer_norm",
        "enable_bias", "layer_norm_elementwise_affine",  # read from the weights (absent bias / norm weight)
    }),
    irrelevant=frozenset({"dropout", "layerdrop", "init_std", "prefix", "activation_dropout"}),
)

GPT_NEOX = Adapter(
    family="gpt_neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head",  # checkpoints call it embed_out; transformers 5 renames it on load
    ln1="input_layernorm",
    ln2="post_attention_layernorm",  # read by the MLP; in parallel-residual layers it normalises r[l]
    attn_layout="neox_fused",
    attn={"qkv": "attention.query_key_value", "o": "attention.dense"},
    mlp={"in": "mlp.dense_h_to_4h", "out": "mlp.dense_4h_to_h"},
    rotary="gpt_neox.rotary_emb",
    config=_neox_config,
    honoured=frozenset({
        "hidden_act", "layer_norm_eps", "use_parallel_residual", "rotary_pct", "rotary_emb_base",
        "attention_bias",  # read from the weights
    }),
    irrelevant=frozenset({"hidden_dropout", "classifier_dropout"}),
)

# Gemma 3 names its four norms per layer differently from Llama: ``post_attention_layernorm``
# normalises the attention output *before* the residual add (our post_attn_norm), and the MLP
# reads ``pre_feedforward_layernorm`` (our ln2).
GEMMA3 = Adapter(
    family="gemma3",
    model_types=("gemma3_text",),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="pre_feedforward_layernorm",
    attn_layout="separate",
    attn={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"},
    mlp={"in": "mlp.up_proj", "gate": "mlp.gate_proj", "out": "mlp.down_proj"},
    rotary="model.rotary_emb",
    layer_rotary=_gemma3_layer_rotary,
    extra_norms={
        "q_norm": "self_attn.q_norm",
        "k_norm": "self_attn.k_norm",
        "post_attn_norm": "post_attention_layernorm",
        "post_mlp_norm": "post_feedforward_layernorm",
    },
    config=_gemma3_config,
    honoured=frozenset({
        "hidden_activation", "query_pre_attn_scalar", "sliding_window", "layer_types", "_sliding_window_pattern",
        "sliding_window_pattern", "final_logit_softcapping", "attn_logit_softcapping", "use_bidirectional_attention",
        "rope_local_base_freq", "attention_bias",
    }),
)

# The multimodal wrapper (Gemma3ForConditionalGeneration): the same text model one level down;
# only text inputs are modelled (the vision tower is never run).
GEMMA3_MULTIMODAL = replace(
    GEMMA3,
    model_types=("gemma3",),
    layers="model.language_model.layers",
    embed="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
    rotary="model.language_model.rotary_emb",
)

ADAPTERS: list[Adapter] = [LLAMA, GPT2, OPT, GPT_NEOX, GEMMA3, GEMMA3_MULTIMODAL]


# Fields every family reads the same way: the shapes (``arch_config``), the rotary module's
# settings (its inv_freq and attention_scaling are read, so every static rope variant is exact),
# and tied embeddings (the tied matrix is read through the unembedding module).
COMMON_HONOURED = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "tie_word_embeddings",
    "rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
    # the position table's size: the view looks positions up in the same table
    "max_position_embeddings",
})
# Fields that do not change an eval-mode forward pass: dropout (off in eval), initialisation,
# the KV cache, token ids, bookkeeping, and the outputs asked for.
COMMON_IRRELEVANT = frozenset({
    "attention_dropout", "initializer_range", "use_cache", "dtype", "torch_dtype", "architectures",
    "transformers_version", "_name_or_path", "_model_name_or_path", "id2label", "label2id", "problem_type",
    "return_dict", "output_attentions", "output_hidden_states", "chunk_size_feed_forward",
    "task_specific_params", "_attn_implementation_autoset", "model_type", "num_labels", "_num_labels", "output_past",
    "finetuning_task", "tokenizer_class", "is_decoder", "use_bfloat16", "torchscript", "tf_legacy_loss",
    # generation settings older checkpoints keep in config.json: they pick tokens, not logits
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "diversity_penalty",
    "output_scores", "return_dict_in_generate", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
})
# Rope types whose frequencies depend on the sequence length (recomputed inside the forward
# pass), so the rotary module's stored inv_freq is not what every prompt uses.
DYNAMIC_ROPE = ("dynamic", "longrope")


def _is_irrelevant(name: str) -> bool:
    return name in COMMON_IRRELEVANT or name.endswith("_token_id") or name.endswith("_token_ids")


_ABSENT = object()


def _class_defaults(config_class) -> dict:
    try:
        return config_class().to_dict()
    except Exception:  # a config class that cannot be built without arguments: no defaults known
        return {}


def _rope_types(rope) -> list[str]:
    if not isinstance(rope, dict):
        return []
    if "rope_type" in rope or "type" in rope:
        return [str(rope.get("rope_type", rope.get("type")))]
    return [t for value in rope.values() for t in _rope_types(value)]  # per layer type (Gemma 3)


def check_config_fields(adapter: Adapter, hf_config) -> None:
    """Refuse a config that sets a field the exact view does not reproduce.

    Every field of the (text) config is either honoured by the adapter (``adapter.honoured``,
    ``COMMON_HONOURED``), known not to change an eval-mode forward pass (``adapter.irrelevant``,
    ``COMMON_IRRELEVANT``, token ids), or at the value a fresh config of the same class has
    (the value the parity tests check). Anything else — including a field a newer
    transformers adds — raises a :class:`UserError` naming the field and its value, so the
    view is never silently different from the model.

    Raises:
        UserError: one line, ``<family>: config field <name>=<value> ...``.
    """
    values = hf_config.to_dict()
    defaults = _class_defaults(type(hf_config))
    known = adapter.honoured | adapter.irrelevant | COMMON_HONOURED
    for name, value in sorted(values.items()):
        if name in known or _is_irrelevant(name):
            continue
        default = defaults.get(name, _ABSENT)
        if value == default or (default is _ABSENT and value in (None, False, [], {})):
            continue
        raise UserError(
            f"{adapter.family}: config field {name}={value!r} may change the forward pass and recallscope's exact "
            f"model view does not implement it; use a model without it (or with its default, "
            f"{'unset' if default is _ABSENT else repr(default)})"
        )
    for source in ("rope_parameters", "rope_scaling"):
        for rope_type in _rope_types(values.get(source)):
            if rope_type in DYNAMIC_ROPE:
                raise _refuse(adapter.family, f"config field {source} with rope_type={rope_type!r} (frequencies that depend "
                              "on the sequence length)", "use a model with a static rope type (default, linear, llama3, yarn)")
    quantization = values.get("quantization_config")
    if quantization is not None and (quantization or {}).get("quant_method") != "gguf":
        raise _refuse(adapter.family, f"config field quantization_config={quantization!r} (quantised weights)",
                      "load the model unquantised (--dtype float32 or bfloat16)")


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
        b_gate=_bias(mods["gate"]) if "gate" in mods else None,
    )


def arch_config(adapter: Adapter, hf_config) -> ArchConfig:
    text = getattr(hf_config, "text_config", None) or hf_config
    check_config_fields(adapter, text)
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

    The tensors are views of the model's own parameters where the layout allows (no copy),
    detached from autograd (see :meth:`Weights.detach`).
    """
    adapter = adapter or adapter_for(hf_model.config.model_type)
    cfg = arch_config(adapter, hf_model.config)
    text_config = getattr(hf_model.config, "text_config", None) or hf_model.config
    rotary = _get(hf_model, adapter.rotary) if adapter.rotary else None
    layers = []
    for index, block in enumerate(_get(hf_model, adapter.layers)):
        extra = {
            name: _norm(_get(block, path)) for name, path in adapter.extra_norms.items()
        }
        inv_freq, rope_scaling = None, 1.0
        if rotary is not None:
            inv_freq, rope_scaling = (
                adapter.layer_rotary(rotary, text_config, index)
                if adapter.layer_rotary
                else (rotary.inv_freq, getattr(rotary, "attention_scaling", 1.0))
            )
        layers.append(
            LayerWeights(
                ln1=_norm(_get(block, adapter.ln1)),
                ln2=_norm(_get(block, adapter.ln2)),
                inv_freq=inv_freq,
                rope_scaling=float(rope_scaling),
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
    return cfg, weights.detach()
