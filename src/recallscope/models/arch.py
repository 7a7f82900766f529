"""The architecture-neutral description of a decoder-only transformer.

Every supported family (GPT-2, OPT, GPT-NeoX, Llama/Mistral/Qwen2/SmolLM2, Gemma 3) is reduced
to one :class:`ArchConfig` (the switches that differ between families) and one
:class:`Weights` (the same tensors under the same names and shapes for every family). The
forward pass in :mod:`recallscope.models.view` reads only these two, so no stage ever asks
"is this GPT-2 or Llama?".

Shapes (H query heads, K key/value heads, d width, dh head width, f MLP width, V vocabulary):
``W_Q [H, d, dh]``, ``W_K``/``W_V [K, d, dh]``, ``W_O [H, dh, d]``, ``W_in``/``W_gate [d, f]``,
``W_out [f, d]``, ``W_E [V, d]``, ``W_U [d, V]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

NormKind = Literal["layernorm", "rmsnorm", "rmsnorm_plus1"]
ActKind = Literal["silu", "gelu", "gelu_tanh", "relu"]


@dataclass(frozen=True)
class ArchConfig:
    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    norm: NormKind
    norm_eps: float
    act: ActKind
    gated_mlp: bool
    # GPT-NeoX / GPT-J: attention and MLP both read r[l]; the MLP never sees its own layer's heads.
    parallel_residual: bool = False
    positional: Literal["rotary", "learned"] = "rotary"
    rotary_dim: int = 0  # <= d_head; GPT-NeoX rotates only a fraction of each head
    learned_pos_offset: int = 0  # OPT stores positions shifted by 2
    attn_scale: float = 0.0  # multiplies q·k; 0 means d_head ** -0.5
    qk_norm: bool = False  # Gemma 3 normalises each head's q and k
    post_attn_norm: bool = False  # Gemma 3 normalises the attention output before the residual add
    post_mlp_norm: bool = False
    embed_scale: float = 1.0  # Gemma multiplies the embedding by sqrt(d)
    sliding_window: tuple[int | None, ...] = ()  # per layer; None = global attention
    attn_softcap: float | None = None
    final_softcap: float | None = None
    max_positions: int | None = None  # rows of a learned position table; None: no table (rotary)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def scale(self) -> float:
        return self.attn_scale or self.d_head**-0.5

    def mlp_reads_own_heads(self) -> bool:
        """Whether the MLP of layer l reads the heads of layer l (False in parallel-residual models)."""
        return not self.parallel_residual

    def window(self, layer: int) -> int | None:
        return self.sliding_window[layer] if self.sliding_window else None


@dataclass
class Norm:
    weight: Tensor | None
    bias: Tensor | None = None


@dataclass
class LayerWeights:
    ln1: Norm
    W_Q: Tensor
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor
    b_Q: Tensor | None
    b_K: Tensor | None
    b_V: Tensor | None
    b_O: Tensor | None
    ln2: Norm
    W_in: Tensor
    b_in: Tensor | None
    W_out: Tensor
    b_out: Tensor | None
    W_gate: Tensor | None = None
    b_gate: Tensor | None = None  # Llama with mlp_bias=True
    q_norm: Norm | None = None
    k_norm: Norm | None = None
    post_attn_norm: Norm | None = None
    post_mlp_norm: Norm | None = None
    # Rotary inverse frequencies and cos/sin scale of this layer (taken from the HF model so
    # every rope variant — llama3 scaling, Gemma's local/global bases — is reproduced exactly).
    inv_freq: Tensor | None = None
    rope_scaling: float = 1.0


@dataclass
class Weights:
    W_E: Tensor
    W_pos: Tensor | None
    layers: list[LayerWeights]
    ln_final: Norm
    W_U: Tensor
    b_U: Tensor | None = None
    extras: dict = field(default_factory=dict)

    def tensors(self):
        """Every tensor, for moving to a device or dtype."""
        yield from _walk(self)

    def to(self, device=None, dtype=None) -> "Weights":
        """The weights on ``device`` / in ``dtype`` (floating tensors only), converted storage by
        storage: tensors that share a storage (a tied unembedding ``W_U = W_E^T``, views of one
        parameter) still share one after the conversion, with the same strides — converting each
        tensor alone would double a tied embedding's memory (smollm2-135m in float64: +226 MB;
        gemma3-270m: +1.3 GB)."""
        spans = storage_spans(list(self.tensors()))
        converted: dict[int, Tensor] = {}

        def conv(t: Tensor) -> Tensor:
            wanted = dtype if dtype is not None and t.is_floating_point() else t.dtype
            if wanted == t.dtype and (device is None or torch.device(device) == t.device):
                return t
            key = storage_key(t)
            lo, hi = spans[key]
            if key not in converted:
                converted[key] = flat_storage(t)[lo:hi].to(device=device, dtype=wanted)
            return torch.as_strided(converted[key], t.shape, t.stride(), t.storage_offset() - lo)

        return _map(self, conv)

    def detach(self) -> "Weights":
        """The same tensors (shared storage, no copy) cut from autograd.

        A model's parameters require grad; a view built on them would carry that into every
        quantity computed outside ``torch.no_grad`` (and ``.numpy()`` then fails). recallscope
        never trains a model, and the stages that need gradients (attribution patching, the
        SGD solver) take them with respect to activations or their own coefficients, never
        the weights.
        """
        return _map(self, lambda t: t.detach())


def materialize(weights: "Weights") -> "Weights":
    """The same tensors — values, shapes, strides, offsets, ties — in fresh storages that torch
    allocates, one per storage the tensors share, holding only the span they read.

    Why: CPU matrix kernels may round differently with their operands' address alignment (a
    weight inside a memory-mapped safetensors file sits wherever the file puts it; smollm2-135m's
    logits moved by 5e-6 between such a view and a copy). An embedded model reaches recallscope
    either through transformers or through the view cache (:mod:`.viewcache`): the transformers
    route hands its weights through this function, the view cache's read fills fresh storages at
    the same offsets itself, so both compute with identically placed tensors and give the same bits
    (tests/models/test_viewcache.py compares their logits bitwise).
    """
    spans = storage_spans(list(weights.tensors()))
    fresh: dict[int, Tensor] = {}

    def place(t: Tensor) -> Tensor:
        key = storage_key(t)
        lo, hi = spans[key]
        if key not in fresh:
            fresh[key] = torch.empty(hi - lo, dtype=t.dtype, device=t.device).copy_(flat_storage(t)[lo:hi])
        return torch.as_strided(fresh[key], t.shape, t.stride(), t.storage_offset() - lo)

    return _map(weights, place)


def storage_key(t: Tensor) -> int:
    """Which storage ``t`` reads: its data pointer; a tensor over an empty storage (whose pointer
    may be 0 whatever its dtype) is a storage of its own."""
    storage = t.untyped_storage()
    return storage.data_ptr() if storage.nbytes() else -id(t)


def storage_spans(tensors) -> dict[int, tuple[int, int]]:
    """Per storage (:func:`storage_key`) the span [first, last + 1) of elements the given tensors
    read. ValueError when one storage is read as two dtypes."""
    spans: dict[int, tuple[int, int]] = {}
    dtypes: dict[int, torch.dtype] = {}
    for t in tensors:
        ptr = storage_key(t)
        if dtypes.setdefault(ptr, t.dtype) != t.dtype:
            raise ValueError(f"a storage is read as {dtypes[ptr]} and as {t.dtype}")
        lo = t.storage_offset()
        hi = lo + 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True)) if t.numel() else lo
        old = spans.get(ptr)
        spans[ptr] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return spans


def flat_storage(t: Tensor) -> Tensor:
    """The whole storage under ``t`` as a 1-D tensor of ``t``'s dtype (no copy)."""
    n = t.untyped_storage().nbytes() // t.element_size()
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), 0, (n,))


def _walk(obj):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (Weights, LayerWeights, Norm)):
        for value in vars(obj).values():
            yield from _walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk(value)


def _map(obj, fn):
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (Weights, LayerWeights, Norm)):
        return type(obj)(**{k: _map(v, fn) for k, v in vars(obj).items()})
    if isinstance(obj, list):
        return [_map(v, fn) for v in obj]
    return obj


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms, rotary angles and softmax run in float32 as the reference implementations do —
    or in float64 for a float64 model, so that a float64 view is float64 throughout."""
    return torch.promote_types(dtype, torch.float32)


def rms_or_layer_norm(x: Tensor, norm: Norm, kind: NormKind, eps: float) -> Tensor:
    """The model's normalisation, computed in float32 (float64 models: float64) as the reference implementations do."""
    dtype = x.dtype
    x = x.to(compute_dtype(dtype))
    if kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        out = x.to(dtype)
        if norm.weight is not None:
            out = out * norm.weight
        if norm.bias is not None:
            out = out + norm.bias
        return out
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if kind == "rmsnorm_plus1":
        return (x * norm_weight(norm, kind, x.dtype)).to(dtype)
    return norm.weight * x.to(dtype)


def norm_weight(norm: Norm, kind: NormKind, dtype: torch.dtype | None = None) -> Tensor | None:
    """The norm's multiplicative weight as applied: Gemma's ``rmsnorm_plus1`` stores w and
    multiplies by (1 + w) (Hugging Face's ``Gemma3RMSNorm``); the other norms multiply by w.
    ``dtype``: cast w before adding 1 (the reference adds 1 in float32). None when the norm has no weight."""
    w = norm.weight
    if w is None:
        return None
    if dtype is not None:
        w = w.to(dtype)
    return 1.0 + w if kind == "rmsnorm_plus1" else w


def norm_scale(x: Tensor, kind: NormKind, eps: float) -> Tensor:
    """1/σ(x): the data-dependent factor of the norm (the rest is affine), [..., 1]."""
    x = x.to(compute_dtype(x.dtype))
    if kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def activation(x: Tensor, kind: ActKind) -> Tensor:
    if kind == "silu":
        return torch.nn.functional.silu(x)
    if kind == "gelu":
        return torch.nn.functional.gelu(x)
    if kind == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if kind == "relu":
        return torch.relu(x)
    raise ValueError(f"unknown activation {kind!r}")
