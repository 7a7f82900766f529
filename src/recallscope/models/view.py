"""One exact view of a transformer's internals.

:class:`ModelView` runs the forward pass of any supported architecture from its
:class:`~recallscope.models.arch.Weights`, in pieces a stage can call one by one (embed, the
attention of one layer, one MLP, the unembedding), and :meth:`ModelView.trace` runs the whole
model while recording, at chosen positions, everything the paper's methods read:

- ``head_out`` a[l,h] = z[l,h] · W_O[h], the write of each head into the residual stream
  (``[B, P, L, H, d]``); Σ_h a[l,h] + b_O equals ``attn_out`` exactly. Where an architecture
  normalises the attention output before adding it (Gemma 3), each head is multiplied by the
  norm's factor computed from the *real* sum, so the split stays exact.
- ``attn_out`` and ``mlp_out`` (``[B, P, L, d]``): what attention and the MLP add to the residual.
- ``resid_pre`` r[l], ``resid_mid`` r_mid[l] (after attention), ``resid_final`` (after the last
  layer, before the final norm), ``logits``.
- ``pattern``: attention probabilities from the recorded positions to every key
  (``[B, L, H, P, S]``).

Every tensor the model adds to the residual passes through :meth:`ModelView.trace` sites that
can be *edited* (the naive patching loop uses this), so there are no hooks and no global state.

Batches are left-padded: the last position of every row is the prompt's end, and position ids
come from the attention mask, so padding never shifts a position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor

from .arch import ArchConfig, LayerWeights, Weights, activation, compute_dtype, norm_scale, rms_or_layer_norm

SITES = ("resid_pre", "head_out", "attn_out", "resid_mid", "mlp_out")
RECORDABLE = SITES + ("pattern", "resid_final", "logits", "z")

Edit = Callable[[Tensor], Tensor]


@dataclass
class Trace:
    """Activations recorded at ``positions`` ([B, P] indices into the padded sequence)."""

    positions: Tensor
    resid_pre: Tensor | None = None
    resid_mid: Tensor | None = None
    attn_out: Tensor | None = None
    head_out: Tensor | None = None
    mlp_out: Tensor | None = None
    z: Tensor | None = None
    pattern: Tensor | None = None
    resid_final: Tensor | None = None
    logits: Tensor | None = None
    full_logits: Tensor | None = field(default=None, repr=False)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def causal_mask_bias(
    attention_mask: Tensor, n_queries: int | None = None, window: int | None = None, dtype=torch.float32
) -> Tensor:
    """Additive mask [B, 1, Sq, Sk] for left-padded rows; queries are the last Sq positions.

    A padding query would see no key at all (its softmax would be NaN), so every query may
    always see itself; real queries never see padding.
    """
    B, S = attention_mask.shape
    Sq = n_queries or S
    q_idx = torch.arange(S - Sq, S, device=attention_mask.device)[:, None]
    k_idx = torch.arange(S, device=attention_mask.device)[None, :]
    allowed = (k_idx <= q_idx)[None] & attention_mask[:, None, :].bool()
    if window is not None:
        allowed &= (q_idx - k_idx < window)[None]
    allowed |= (k_idx == q_idx)[None]
    bias = torch.zeros(B, 1, Sq, S, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ModelView:
    """The forward pass of one model, from its :class:`Weights`, in callable pieces."""

    def __init__(self, cfg: ArchConfig, weights: Weights):
        self.cfg = cfg
        self.weights = weights
        self._qkv_weight: dict[int, Tensor] = {}  # per layer: W_Q | W_K | W_V side by side, [d, (H + 2K) dh]

    @property
    def device(self) -> torch.device:
        return self.weights.W_E.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.W_E.dtype

    def layer(self, index: int) -> LayerWeights:
        return self.weights.layers[index]

    # ----------------------------------------------------------------- pieces
    def norm(self, x: Tensor, norm) -> Tensor:
        return rms_or_layer_norm(x, norm, self.cfg.norm, self.cfg.norm_eps)

    def embed(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        w = self.weights
        x = w.W_E[input_ids]
        if self.cfg.embed_scale != 1.0:
            # As Gemma's HF code: a float32 scalar cast to the weights' dtype (in bfloat16,
            # sqrt(640) rounds to 25.25, and the model was trained with that).
            x = x * torch.tensor(self.cfg.embed_scale, dtype=torch.float32).to(x.dtype)
        if self.cfg.positional == "learned":
            x = x + w.W_pos[position_ids + self.cfg.learned_pos_offset]
        return x

    def rotary(self, layer: int, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        lw = self.layer(layer)
        angle = compute_dtype(self.dtype)
        freqs = position_ids[..., None].to(angle) * lw.inv_freq.to(device=position_ids.device, dtype=angle)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * lw.rope_scaling).to(self.dtype)
        sin = (emb.sin() * lw.rope_scaling).to(self.dtype)
        return cos[:, None], sin[:, None]  # [B, 1, S, rot]

    def qkv(self, layer: int, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries [B, H, S, dh], keys and values [B, K, S, dh] from the normalised input x."""
        lw = self.layer(layer)
        cfg = self.cfg
        if layer not in self._qkv_weight:  # one matrix product for q, k and v (same sums, one GEMM)
            self._qkv_weight[layer] = torch.cat([w.permute(1, 0, 2).reshape(cfg.d_model, -1) for w in (lw.W_Q, lw.W_K, lw.W_V)], dim=1)
        *lead, S, _ = x.shape
        qkv = (x @ self._qkv_weight[layer]).reshape(*lead, S, cfg.n_heads + 2 * cfg.n_kv_heads, cfg.d_head).transpose(-2, -3)
        q, k, v = qkv.split([cfg.n_heads, cfg.n_kv_heads, cfg.n_kv_heads], dim=-3)
        if lw.b_Q is not None:
            q = q + lw.b_Q[None, :, None]
            k = k + lw.b_K[None, :, None]
            v = v + lw.b_V[None, :, None]
        if self.cfg.qk_norm:
            q = self.norm(q, lw.q_norm)
            k = self.norm(k, lw.k_norm)
        if self.cfg.positional == "rotary":
            cos, sin = self.rotary(layer, position_ids)
            rot = self.cfg.rotary_dim or self.cfg.d_head
            q = torch.cat([q[..., :rot] * cos + rotate_half(q[..., :rot]) * sin, q[..., rot:]], dim=-1)
            k = torch.cat([k[..., :rot] * cos + rotate_half(k[..., :rot]) * sin, k[..., rot:]], dim=-1)
        return q, k, v

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, mask_bias: Tensor) -> tuple[Tensor, Tensor]:
        """z [B, Sq, H, dh] and the attention pattern [B, H, Sq, Sk]."""
        g = self.cfg.group_size
        if g > 1:
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.cfg.scale
        if self.cfg.attn_softcap:
            scores = torch.tanh(scores / self.cfg.attn_softcap) * self.cfg.attn_softcap
        scores = scores + mask_bias
        pattern = torch.softmax(scores, dim=-1, dtype=compute_dtype(q.dtype)).to(q.dtype)
        z = torch.matmul(pattern, v).transpose(1, 2)
        return z, pattern

    def head_outputs(self, layer: int, z: Tensor, attn_raw: Tensor | None = None) -> Tensor:
        """a[l,h] [..., H, d] from z [..., H, dh]; scaled by the post-attention norm if any."""
        lw = self.layer(layer)
        heads = torch.einsum("...he,hed->...hd", z, lw.W_O)
        if self.cfg.post_attn_norm:
            if attn_raw is None:
                attn_raw = self._attn_raw(layer, z)
            heads = heads * self._post_norm_factor(attn_raw, lw.post_attn_norm)[..., None, :]
        return heads

    def _attn_raw(self, layer: int, z: Tensor) -> Tensor:
        lw = self.layer(layer)
        out = torch.einsum("...he,hed->...d", z, lw.W_O)
        return out + lw.b_O if lw.b_O is not None else out

    def _post_norm_factor(self, raw: Tensor, norm) -> Tensor:
        """The per-position factor f with norm(raw) = f ⊙ raw (RMS norms have no shift)."""
        scale = norm_scale(raw, self.cfg.norm, self.cfg.norm_eps)
        weight = norm.weight.to(scale.dtype)
        if self.cfg.norm == "rmsnorm_plus1":
            weight = 1.0 + weight
        return (scale * weight).to(raw.dtype)

    def attn_output(self, layer: int, z: Tensor) -> Tensor:
        """What attention adds to the residual stream, [..., d]."""
        raw = self._attn_raw(layer, z)
        if self.cfg.post_attn_norm:
            return self.norm(raw, self.layer(layer).post_attn_norm)
        return raw

    def head_bias(self, layer: int, attn_raw: Tensor | None = None) -> Tensor | None:
        """The part of the attention output that belongs to no head (b_O, scaled like the heads)."""
        lw = self.layer(layer)
        if lw.b_O is None:
            return None
        if self.cfg.post_attn_norm:
            return lw.b_O * self._post_norm_factor(attn_raw, lw.post_attn_norm)
        return lw.b_O

    def mlp(self, layer: int, resid: Tensor) -> Tensor:
        """The MLP's write into the residual stream, given the residual it reads."""
        lw = self.layer(layer)
        x = self.norm(resid, lw.ln2)
        pre = x @ lw.W_in
        if lw.b_in is not None:
            pre = pre + lw.b_in
        if self.cfg.gated_mlp:
            gate = x @ lw.W_gate if lw.b_gate is None else x @ lw.W_gate + lw.b_gate
            hidden = activation(gate, self.cfg.act) * pre
        else:
            hidden = activation(pre, self.cfg.act)
        out = hidden @ lw.W_out
        if lw.b_out is not None:
            out = out + lw.b_out
        if self.cfg.post_mlp_norm:
            out = self.norm(out, lw.post_mlp_norm)
        return out

    def final_norm(self, resid: Tensor) -> Tensor:
        return self.norm(resid, self.weights.ln_final)

    def unembed(self, x_normed: Tensor) -> Tensor:
        logits = x_normed @ self.weights.W_U
        if self.weights.b_U is not None:
            logits = logits + self.weights.b_U
        if self.cfg.final_softcap:
            logits = torch.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits

    def logits_from_resid(self, resid: Tensor) -> Tensor:
        return self.unembed(self.final_norm(resid))

    # ----------------------------------------------------------------- whole model
    @torch.no_grad()
    def trace(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
        record: Iterable[str] = ("logits",),
        edits: dict[tuple[str, int], Edit] | None = None,
        all_logits: bool = False,
    ) -> Trace:
        """Run the model on a left-padded batch and record ``record`` at ``positions``.

        ``positions`` defaults to the end (last) position of every row. ``edits`` maps
        ``(site, layer)`` to a function applied to that site's full tensor (all positions;
        ``head_out`` is [B, S, H, d]) before the model uses it.
        """
        record = set(record)
        unknown = record - set(RECORDABLE)
        if unknown:
            raise ValueError(f"cannot record {sorted(unknown)}; choose from {RECORDABLE}")
        edits = edits or {}
        cfg = self.cfg
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        B, S = input_ids.shape
        if positions is None:
            positions = torch.full((B, 1), S - 1, device=self.device)
        positions = positions.to(self.device)
        P = positions.shape[1]
        take = positions[:, :, None]

        def at(x: Tensor) -> Tensor:  # [B, S, ...] -> [B, P, ...]
            idx = take.reshape(B, P, *([1] * (x.dim() - 2))).expand(B, P, *x.shape[2:])
            return x.gather(1, idx)

        def edit(site: str, layer: int, x: Tensor) -> Tensor:
            fn = edits.get((site, layer))
            return fn(x) if fn is not None else x

        position_ids = position_ids_from_mask(attention_mask)
        masks: dict[int | None, Tensor] = {}
        stash: dict[str, list[Tensor]] = {name: [] for name in record}

        resid = self.embed(input_ids, position_ids)
        for layer in range(cfg.n_layers):
            lw = self.layer(layer)
            resid = edit("resid_pre", layer, resid)
            if "resid_pre" in record:
                stash["resid_pre"].append(at(resid))
            window = cfg.window(layer)
            if window not in masks:
                masks[window] = causal_mask_bias(attention_mask, window=window, dtype=self.dtype)
            q, k, v = self.qkv(layer, self.norm(resid, lw.ln1), position_ids)
            z, pattern = self.attend(layer, q, k, v, masks[window])
            if "z" in record:
                stash["z"].append(at(z))
            if "pattern" in record:
                idx = positions[:, None, :, None].expand(B, cfg.n_heads, P, S)
                stash["pattern"].append(pattern.gather(2, idx))
            attn_raw = self._attn_raw(layer, z)
            if ("head_out", layer) in edits:
                heads = edit("head_out", layer, self.head_outputs(layer, z, attn_raw))
                attn = heads.sum(-2)
                bias = self.head_bias(layer, attn_raw)
                if bias is not None:
                    attn = attn + bias
            else:
                attn = self.norm(attn_raw, lw.post_attn_norm) if cfg.post_attn_norm else attn_raw
            attn = edit("attn_out", layer, attn)
            if "head_out" in record:
                stash["head_out"].append(self.head_outputs(layer, at(z), at(attn_raw)))
            if "attn_out" in record:
                stash["attn_out"].append(at(attn))
            resid_mid = edit("resid_mid", layer, resid + attn)
            if "resid_mid" in record:
                stash["resid_mid"].append(at(resid_mid))
            mlp = edit("mlp_out", layer, self.mlp(layer, resid if cfg.parallel_residual else resid_mid))
            if "mlp_out" in record:
                stash["mlp_out"].append(at(mlp))
            resid = resid_mid + mlp

        trace = Trace(positions=positions)
        for name in ("resid_pre", "resid_mid", "attn_out", "mlp_out", "head_out", "z"):
            if name in record:
                setattr(trace, name, torch.stack(stash[name], dim=2))
        if "pattern" in record:
            trace.pattern = torch.stack(stash["pattern"], dim=1)
        if "resid_final" in record:
            trace.resid_final = at(resid)
        if all_logits:
            trace.full_logits = self.logits_from_resid(resid)
        if "logits" in record:
            trace.logits = self.logits_from_resid(at(resid))
        return trace
