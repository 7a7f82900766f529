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
The ``head_out`` edit site is each head's write at the output projection, before a
post-attention norm, whose factor is then recomputed from the edited sum: editing a head is the
intervention on its z. The ``attn_bias`` site is a layer's additive attention mask (attention
knockout). :meth:`ModelView.forward_from` is the incremental forward: positions [p:] from a
layer upward over cached keys/values of [:p] (``trace(..., return_kv=True)``), with the same
edits; :meth:`ModelView.attend` is the one attention implementation both use.

Batches are left-padded: the last position of every row is the prompt's end, and position ids
come from the attention mask, so padding never shifts a position.

Devices: a model split over devices (``load_model(..., device_map="auto")``) keeps each layer's
weights where they were placed. Each layer computes on its own weights' device (the residual
stream, the mask and the cached keys/values hop there); everything the view hands out — recorded
quantities, the tensors an edit function receives, ``kv`` — is on :attr:`ModelView.device` (the
embedding's device), so callers see one device whatever the split. On one device every hop is a
no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from ..errors import NonFiniteError
from .arch import ArchConfig, LayerWeights, Weights, activation, compute_dtype, norm_scale, norm_weight, rms_or_layer_norm

SITES = ("resid_pre", "head_out", "attn_out", "resid_mid", "mlp_out")
# Full-vocabulary logits a caller holds at once (rows × V): 1024 rows of smollm2-135m's 49,152-token
# vocabulary (~200 MB in float32, as much again for a softmax); a larger vocabulary gets fewer rows
# (gemma3-270m's 262,144: 192), so that memory does not grow with V.
LOGIT_ELEMENTS = 1024 * 49152
EDIT_SITES = SITES + ("attn_bias",)
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
    kv: list | None = field(default=None, repr=False)  # per layer (keys, values), with return_kv


def _check_finite(x: Tensor, what: str, n_rows: int) -> None:
    """NonFiniteError naming ``what`` when ``x`` [B, ...] holds a NaN or an infinity: one reduction
    per forward pass, at the recorded positions (a NaN anywhere before them reaches them)."""
    if bool(torch.isfinite(x).all()):
        return
    bad = int((~torch.isfinite(x.detach())).reshape(x.shape[0], -1).any(-1).sum())
    raise NonFiniteError(
        f"the model computed non-finite {what} (NaN or inf) for {bad} of {n_rows} prompts of a batch; "
        "nothing derived from them can be trusted"
    )


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
        """The embedding's device: where every tensor the view hands out lives."""
        return self.weights.W_E.device

    def layer_device(self, index: int) -> torch.device:
        """The device of layer ``index``'s weights (where that layer computes)."""
        return self.layer(index).W_Q.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.W_E.dtype

    def layer(self, index: int) -> LayerWeights:
        return self.weights.layers[index]

    # ----------------------------------------------------------------- pieces
    def norm(self, x: Tensor, norm) -> Tensor:
        """The model's norm ``norm`` of x, computed on the norm's device, returned on x's."""
        on = norm.weight.device if norm.weight is not None else x.device
        return rms_or_layer_norm(x.to(on), norm, self.cfg.norm, self.cfg.norm_eps).to(x.device)

    def embed(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        w = self.weights
        x = w.W_E[input_ids]
        if self.cfg.embed_scale != 1.0:
            # As Gemma's HF code: a float32 scalar cast to the weights' dtype (in bfloat16,
            # sqrt(640) rounds to 25.25, and the model was trained with that).
            x = x * torch.tensor(self.cfg.embed_scale, dtype=torch.float32).to(x.dtype)
        if self.cfg.positional == "learned":
            x = x + w.W_pos[(position_ids + self.cfg.learned_pos_offset).to(w.W_pos.device)].to(x.device)
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

    def attend(
        self, layer: int, q: Tensor, k: Tensor, v: Tensor, mask_bias: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The attention of one layer (the one implementation in the package): z and the pattern.

        Without variants: ``q`` [B, H, T, dh], ``k``/``v`` [B, K, T, dh] → z [B, T, H, dh] and
        pattern [B, H, T, P+T]. With C variants of each row (the patch engines): ``q``
        [B, C, H, T, dh], ``k``/``v`` [B, C, K, T, dh] → z [B, C, T, H, dh], pattern
        [B, C, H, T, P+T]. ``past`` = (keys, values) [B, K, P, dh] of P earlier positions, shared
        by every variant of a row (they sit before the queries, so no variant changes them); the
        T queries attend over those and, under the mask, over the T keys given.
        ``mask_bias`` [B, 1|H, T, P+T] is added to the (softcapped) scores before the softmax.
        Grouped-query attention (K < H): query head h reads key/value head h // (H/K), as in
        Hugging Face's ``repeat_kv``. The softmax runs in :func:`~.arch.compute_dtype`.
        """
        cfg = self.cfg
        g = cfg.group_size
        if past is None and q.dim() == 4:  # a whole sequence (trace): keys repeated per query head
            if g > 1:
                k = k.repeat_interleave(g, dim=1)
                v = v.repeat_interleave(g, dim=1)
            scores = torch.matmul(q, k.transpose(-1, -2)) * cfg.scale
            if cfg.attn_softcap:
                scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
            scores = scores + mask_bias
            pattern = torch.softmax(scores, dim=-1, dtype=compute_dtype(q.dtype)).to(q.dtype)
            z = torch.matmul(pattern, v).transpose(1, 2)
            return z, pattern
        # Variants over a shared cached prefix: the query heads of a key/value group stay in one
        # axis, so neither the prefix nor its group is copied per variant or per query head.
        single = q.dim() == 4
        if single:
            q, k, v = q[:, None], k[:, None], v[:, None]
        B, C, H, T, dh = q.shape
        K = cfg.n_kv_heads
        q = q.reshape(B, C, K, g, T, dh)
        if T == 1:  # one query (the end position): its own key is one dot product
            own = (q * k[:, :, :, None]).sum(-1, keepdim=True)
        else:
            own = torch.einsum("bckgte,bckse->bckgts", q, k)
        if past is not None:
            k_pre, v_pre = past
            P = k_pre.shape[2]
            scores = torch.cat([torch.einsum("bckgte,bkse->bckgts", q, k_pre), own], dim=-1) * cfg.scale
        else:
            P = 0
            scores = own * cfg.scale
        if cfg.attn_softcap:
            scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
        if mask_bias.shape[1] == 1:
            bias = mask_bias[:, None, :, None]  # [B, 1, 1, 1, T, S]
        else:
            bias = mask_bias.reshape(B, 1, K, g, T, -1)
        scores = scores + bias
        pattern = torch.softmax(scores, dim=-1, dtype=compute_dtype(q.dtype)).to(q.dtype)
        if T == 1:
            z = pattern[..., P:] * v[:, :, :, None]
        else:
            z = torch.einsum("bckgts,bckse->bckgte", pattern[..., P:], v)
        if past is not None:
            z = torch.einsum("bckgts,bkse->bckgte", pattern[..., :P], v_pre) + z
        z = z.reshape(B, C, H, T, dh).transpose(2, 3)
        pattern = pattern.reshape(B, C, H, T, P + T)
        if single:
            return z[:, 0], pattern[:, 0]
        return z, pattern

    def head_writes(self, layer: int, z: Tensor) -> Tensor:
        """Each head's write at the output projection, z[h] · W_O[h]: [..., H, dh] → [..., H, d].

        This is the ``head_out`` edit site of :meth:`trace`/:meth:`forward_from`: what the
        heads add up to (with b_O) *before* a post-attention norm (Gemma 3), so that replacing a
        head here and recomputing the norm of the sum is the intervention "replace the head's z at
        the output projection's input". Without a post-attention norm it equals
        :meth:`head_outputs`. Computed on the layer's device, returned on z's (as every piece below).
        """
        W_O = self.layer(layer).W_O
        return torch.einsum("...he,hed->...hd", z.to(W_O.device), W_O).to(z.device)

    def head_outputs(self, layer: int, z: Tensor, attn_raw: Tensor | None = None) -> Tensor:
        """a[l,h] [..., H, d] from z [..., H, dh]: each head's share of what attention adds to the
        residual stream (the recorded ``head_out``, read by direct logit attribution).

        With a post-attention norm (Gemma 3) every head is multiplied by the norm's factor of the
        *real* sum ``attn_raw`` (computed from z when not given), so that Σ_h a[l,h] + b_O-share
        equals ``attn_out`` exactly: the split is linear at this run's scale, which is the clean
        scale when the run is the clean one.
        """
        lw = self.layer(layer)
        heads = self.head_writes(layer, z)
        if self.cfg.post_attn_norm:
            if attn_raw is None:
                attn_raw = self.attn_raw(layer, z)
            heads = heads * self._post_norm_factor(attn_raw, lw.post_attn_norm)[..., None, :]
        return heads

    def attn_raw(self, layer: int, z: Tensor | None = None, heads: Tensor | None = None) -> Tensor:
        """Σ_h z[h] · W_O[h] + b_O, [..., d]: the output projection, before any post-attention norm —
        from z [..., H, dh], or from the heads' writes ``heads`` [..., H, d] (:meth:`head_writes`)."""
        lw = self.layer(layer)
        out = torch.einsum("...he,hed->...d", z.to(lw.W_O.device), lw.W_O).to(z.device) if heads is None else heads.sum(-2)
        return out + lw.b_O.to(out.device) if lw.b_O is not None else out

    def _post_norm_factor(self, raw: Tensor, norm) -> Tensor:
        """The per-position factor f with norm(raw) = f ⊙ raw (RMS norms have no shift)."""
        scale = norm_scale(raw, self.cfg.norm, self.cfg.norm_eps)
        return (scale * norm_weight(norm, self.cfg.norm, scale.dtype).to(scale.device)).to(raw.dtype)

    def post_attn(self, layer: int, raw: Tensor) -> Tensor:
        """What attention adds to the residual stream given the projection's output ``raw`` [..., d]
        (the post-attention norm applied where the architecture has one)."""
        if self.cfg.post_attn_norm:
            return self.norm(raw, self.layer(layer).post_attn_norm)
        return raw

    def attn_output(self, layer: int, z: Tensor) -> Tensor:
        """What attention adds to the residual stream, [..., d]."""
        return self.post_attn(layer, self.attn_raw(layer, z))

    def head_bias(self, layer: int, attn_raw: Tensor | None = None) -> Tensor | None:
        """The part of the attention output that belongs to no head (b_O, scaled like the heads)."""
        lw = self.layer(layer)
        if lw.b_O is None:
            return None
        if self.cfg.post_attn_norm:
            return lw.b_O.to(attn_raw.device) * self._post_norm_factor(attn_raw, lw.post_attn_norm)
        return lw.b_O

    def mlp(self, layer: int, resid: Tensor) -> Tensor:
        """The MLP's write into the residual stream, given the residual it reads (computed on the layer's device, returned on resid's)."""
        lw = self.layer(layer)
        if resid.device != lw.W_in.device:
            return self.mlp(layer, resid.to(lw.W_in.device)).to(resid.device)
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
        """The final norm, on its weights' device (where the model is split, the last layer's)."""
        w = self.weights.ln_final.weight
        return self.norm(resid if w is None else resid.to(w.device), self.weights.ln_final)

    def unembed(self, x_normed: Tensor) -> Tensor:
        """Logits on the unembedding's device."""
        logits = x_normed.to(self.weights.W_U.device) @ self.weights.W_U
        if self.weights.b_U is not None:
            logits = logits + self.weights.b_U
        if self.cfg.final_softcap:
            logits = torch.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits

    def logits_from_resid(self, resid: Tensor) -> Tensor:
        """Logits of a residual stream, on the residual's device."""
        return self.unembed(self.final_norm(resid)).to(resid.device)

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
        return_kv: bool = False,
    ) -> Trace:
        """Run the model on a left-padded batch and record ``record`` at ``positions``.

        ``input_ids``/``attention_mask`` [B, S]; ``positions`` [B, P] indices into the padded
        sequence, default the end (last) position of every row. ``edits`` maps ``(site, layer)``
        to a function applied to that site's full tensor before the model uses it: ``resid_pre``,
        ``attn_out``, ``resid_mid``, ``mlp_out`` [B, S, d]; ``head_out`` [B, S, H, d] — the
        heads' writes z·W_O *before* a post-attention norm (:meth:`head_writes`; the norm of the
        edited sum is recomputed, so the edit is the intervention on z itself); ``attn_bias``
        [B, 1, S, S] the additive attention mask of the layer (0 = allowed, dtype-min = blocked;
        may return [B, H, S, S]; shared between layers, so return a new tensor, never edit in
        place). A recorded ``head_out`` under a ``head_out`` edit is the edited heads, scaled by
        the norm factor of the edited sum. With ``return_kv`` the trace carries ``kv``: per layer the keys and values
        [B, K, S, dh] (after rotary), the cache :meth:`forward_from` reads.
        Raises ValueError for an unknown recorded quantity or edit site.
        """
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        B, S = input_ids.shape
        position_ids = position_ids_from_mask(attention_mask)
        resid = self.embed(input_ids, position_ids)
        return self._run(resid, attention_mask, position_ids, 0, self.cfg.n_layers, None, positions, record, edits,
                         all_logits, return_kv)

    def forward_from(
        self,
        resid: Tensor,
        start: int,
        attention_mask: Tensor,
        past: Sequence[tuple[Tensor, Tensor] | None] | None,
        stop: int | None = None,
        positions: Tensor | None = None,
        record: Iterable[str] = ("resid_final",),
        edits: dict[tuple[str, int], Edit] | None = None,
        return_kv: bool = False,
    ) -> Trace:
        """Run positions [p:] of a batch from layer ``start`` up to ``stop`` over cached keys/values of [:p].

        The incremental forward every engine builds on (patching's exact engine, causal tracing,
        attention knockout): nothing at a position ≥ p changes anything at an earlier position
        (attention is causal), so the earlier positions' keys and values can come from a cache
        (a :meth:`trace` with ``return_kv``, of this run or of another one).

        - ``resid`` [B, T, d], or [B, C, T, d] for C variants of each row: the residual stream
          entering layer ``start`` at the last T positions of the padded sequence.
        - ``attention_mask`` [B, S] the whole rows' mask (left padding), S = p + T; position ids
          come from it, so a variant sits where its row's position T-th-from-last sits.
        - ``past[layer]`` = (keys, values) [B, K, p, dh] of positions [:p] at each computed layer
          (a list indexed by layer; entries outside [start, stop) are not read; ``trace(...,
          return_kv=True).kv`` sliced to [:p] fits). Shared by every variant of a row. ``None``
          (or p = 0): no earlier position.
        - ``stop`` the layer after the last one run (default: all layers; then ``logits`` can be
          recorded). ``positions`` [B, R] indices into the padded sequence, all ≥ p (default: the
          end, S - 1).
        - ``edits`` as in :meth:`trace`, on the computed positions only: a site's tensor is
          [B, (C,) T, ...], ``attn_bias`` is [B, 1, T, S] (may return [B, H, T, S]).
        - ``record`` as in :meth:`trace`; every recorded tensor gains the variant axis after B
          when ``resid`` has one, and its layer axis covers layers start..stop-1 only
          (``resid_pre`` [B, (C,) R, stop-start, d], ``pattern`` [B, (C,) stop-start, H, R, S]).
          ``resid_final`` is the residual after layer stop-1 (before the final norm).
        - ``return_kv``: ``kv[layer]`` = the keys/values [B, (C,) K, T, dh] of the computed
          positions (None outside [start, stop)).

        Returns a :class:`Trace`. Gradients flow (no ``no_grad`` here: attribution patching
        differentiates through it). Raises ValueError on inconsistent shapes, a layer range
        outside the model, positions before p, ``logits`` with stop < n_layers, or an unknown
        site. With the whole cache of the same run it reproduces :meth:`trace` at positions ≥ p
        (tested to 1e-10 in float64 on every family).
        """
        cfg = self.cfg
        stop = cfg.n_layers if stop is None else stop
        if not 0 <= start <= stop <= cfg.n_layers:
            raise ValueError(f"forward_from: layers {start}..{stop} outside the model's 0..{cfg.n_layers}")
        attention_mask = attention_mask.to(self.device)
        B, S = attention_mask.shape
        T = resid.shape[-2]
        if resid.shape[0] != B or resid.dim() not in (3, 4) or T > S:
            raise ValueError(f"forward_from: resid {tuple(resid.shape)} does not fit the mask {tuple(attention_mask.shape)}")
        p = S - T
        if start < stop:
            cached = past[start] if past is not None else None
            have = 0 if cached is None else cached[0].shape[2]
            if have != p:
                raise ValueError(f"forward_from: the cache holds {have} positions, the rows {S} of which {T} are computed")
        if positions is not None and bool((positions.to(self.device) < p).any()):
            raise ValueError(f"forward_from: a recorded position is before the first computed one ({p})")
        position_ids = position_ids_from_mask(attention_mask)[:, p:]
        return self._run(resid.to(self.device), attention_mask, position_ids, start, stop, past, positions, record, edits,
                         False, return_kv)

    def _run(
        self, resid, attention_mask, position_ids, start, stop, past, positions, record, edits, all_logits, return_kv
    ) -> Trace:
        """Layers [start, stop) over the last T positions of the rows (T = resid's position axis)."""
        record = set(record)
        unknown = record - set(RECORDABLE)
        if unknown:
            raise ValueError(f"cannot record {sorted(unknown)}; choose from {RECORDABLE}")
        edits = edits or {}
        bad = {site for site, _ in edits} - set(EDIT_SITES)
        if bad:
            raise ValueError(f"cannot edit {sorted(bad)}; choose from {EDIT_SITES}")
        cfg = self.cfg
        if "logits" in record and stop < cfg.n_layers:
            raise ValueError(f"logits need every layer; this run stops before layer {stop}")
        B, S = attention_mask.shape
        variants = resid.dim() == 4
        C = resid.shape[1] if variants else 1
        T = resid.shape[-2]
        p = S - T
        lead = (B, C) if variants else (B,)
        if positions is None:
            positions = torch.full((B, 1), S - 1, device=self.device)
        positions = positions.to(self.device)
        R = positions.shape[1]
        rel = positions - p  # indices into the computed positions
        tdim = len(lead)
        home = self.device  # where recorded tensors, edit inputs and kv go (see the module docstring)

        def at(x: Tensor) -> Tensor:  # [*lead, T, ...] -> [*lead, R, ...]
            idx = rel.reshape(B, *([1] * (tdim - 1)), R, *([1] * (x.dim() - tdim - 1)))
            return x.gather(tdim, idx.expand(*lead, R, *x.shape[tdim + 1:]))

        def edit(site: str, layer: int, x: Tensor) -> Tensor:
            fn = edits.get((site, layer))
            return fn(x.to(home)).to(x.device) if fn is not None else x

        def keep(name: str, x: Tensor) -> None:
            stash[name].append(x.to(home))

        flat_positions = position_ids.repeat_interleave(C, dim=0) if variants else position_ids
        masks: dict[int | None, Tensor] = {}
        stash: dict[str, list[Tensor]] = {name: [] for name in record}
        kv: list[tuple[Tensor, Tensor] | None] = [None] * cfg.n_layers
        for layer in range(start, stop):
            lw = self.layer(layer)
            if resid.device != lw.W_Q.device:  # a model split over devices: this layer computes where its weights are
                dev = lw.W_Q.device
                resid, attention_mask, flat_positions, rel = (t.to(dev) for t in (resid, attention_mask, flat_positions, rel))
                masks = {}
            resid = edit("resid_pre", layer, resid)
            if "resid_pre" in record:
                keep("resid_pre", at(resid))
            window = cfg.window(layer)
            if window not in masks:
                masks[window] = causal_mask_bias(attention_mask, n_queries=T, window=window, dtype=self.dtype)
            x = self.norm(resid, lw.ln1)
            q, k, v = self.qkv(layer, x.reshape(B * C, T, -1) if variants else x, flat_positions)
            if variants:
                q, k, v = (t.reshape(B, C, *t.shape[1:]) for t in (q, k, v))
            if return_kv:
                kv[layer] = (k.to(home), v.to(home))
            cached = past[layer] if past is not None and p > 0 else None
            if cached is not None and cached[0].device != k.device:
                cached = (cached[0].to(k.device), cached[1].to(k.device))
            z, pattern = self.attend(layer, q, k, v, edit("attn_bias", layer, masks[window]), cached)
            if "z" in record:
                keep("z", at(z))
            if "pattern" in record:
                idx = rel.reshape(B, *([1] * tdim), R, 1).expand(*lead, cfg.n_heads, R, S)
                keep("pattern", pattern.gather(tdim + 1, idx))
            attn_raw = self.attn_raw(layer, z)
            if ("head_out", layer) in edits:  # the heads' writes at the projection; the norm of their sum recomputed
                heads = edit("head_out", layer, self.head_writes(layer, z))
                attn_raw = self.attn_raw(layer, heads=heads)
                if "head_out" in record:
                    keep("head_out", self._scaled(layer, at(heads), at(attn_raw)))
            elif "head_out" in record:
                keep("head_out", self.head_outputs(layer, at(z), at(attn_raw)))
            attn = edit("attn_out", layer, self.post_attn(layer, attn_raw))
            if "attn_out" in record:
                keep("attn_out", at(attn))
            resid_mid = edit("resid_mid", layer, resid + attn)
            if "resid_mid" in record:
                keep("resid_mid", at(resid_mid))
            mlp = edit("mlp_out", layer, self.mlp(layer, resid if cfg.parallel_residual else resid_mid))
            if "mlp_out" in record:
                keep("mlp_out", at(mlp))
            resid = resid_mid + mlp
        resid, rel = resid.to(home), rel.to(home)
        _check_finite(at(resid), f"activations: the residual stream after layer {stop - 1}", lead[0])

        trace = Trace(positions=positions)
        for name in ("resid_pre", "resid_mid", "attn_out", "mlp_out", "head_out", "z"):
            if name in record:
                setattr(trace, name, torch.stack(stash[name], dim=tdim + 1))
        if "pattern" in record:
            trace.pattern = torch.stack(stash["pattern"], dim=tdim)
        if "resid_final" in record:
            trace.resid_final = at(resid)
        if all_logits:
            trace.full_logits = self.logits_from_resid(resid)
        if "logits" in record:
            trace.logits = self.logits_from_resid(at(resid))
            _check_finite(trace.logits, "logits", lead[0])
        if return_kv:
            trace.kv = kv
        return trace

    def _scaled(self, layer: int, heads: Tensor, attn_raw: Tensor) -> Tensor:
        """Head writes [..., H, d] scaled by the post-attention norm's factor of ``attn_raw`` (if any)."""
        if self.cfg.post_attn_norm:
            return heads * self._post_norm_factor(attn_raw, self.layer(layer).post_attn_norm)[..., None, :]
        return heads
