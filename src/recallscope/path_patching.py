"""Path patching as the paper's released code measures it (``patch`` with ``mode="path"``).

The reference is trestad/Factual-Recall-Mechanism, ``easy_transformer/fact_utils.py``:
``plot_path_patching`` calls ``path_patching`` once per sender (every head's output
``blocks.{l}.attn.hook_result`` and every MLP output ``blocks.{l}.hook_mlp_out``) and scores the
result with ``logit_diff``. In that code, for one sender:

- the sender's output at the end position is replaced by its mean over the corrupted dataset
  (``torch.mean(sender_cache[hook_name], dim=0)``, the corrupted dataset being the clean one with
  the nation swapped for another);
- every attention head's queries, keys and values (``hook_q``, ``hook_k``, ``hook_v`` of every
  layer, at every position) are frozen to their values in the clean run; the MLPs are left free
  (``freeze_mlps=False``, the default ``plot_path_patching`` passes);
- the receiver is the residual stream at the end position after the last layer the caller
  names; the metric (``metric='iw'``) is π(Y) = logit[Y] − mean logit at the end position;
- the figure is ``100 · (mean π_patched − mean π_clean) / mean π_clean`` over the dataset
  (``handle_all_and_std`` averages before ``plot_path_patching`` divides): a ratio of means,
  on every prompt of the dataset.

**What frozen heads leave.** A head whose queries, keys and values are frozen to the clean run
writes exactly its clean output at every position (its pattern and values are the clean ones).
Earlier positions never see the end position, so the only residual that changes is the end
position's, and it changes only through the sender's own write and the MLPs *at the end
position* that read it, from the sender's layer upward (no head can carry the change: every
head's output is frozen). So this module needs no attention at all: for each sender it reruns
the end-position MLP chain with every layer's attention output held at its clean value,

    r_mid[j] = r[j] + attn_clean[j],   r[j+1] = r_mid[j] + MLP_j(r_mid[j])

entering at the sender's layer — ``(L − l)`` MLPs at one position instead of the authors' full
forward (``T`` positions × ``L`` layers × attention and MLP) per sender. All senders of a batch
run as one batch, layer by layer, a sender joining at its layer.

- A head ``L{l}H{h}``: r_mid[l] + (sender value − clean value), then MLP l and up.
- ``MLP{l}``: r[l+1] = r_mid[l] + sender value, then MLP l+1 and up.
- ``ATTN{l}`` (the whole attention output of layer l): as a head, with the change of the sum.
- ``RES{l}`` (recallscope's extra): r[l] replaced, then layer l with its attention frozen.
- **Parallel residual** (GPT-NeoX/Pythia, GPT-J): the MLP of layer l reads r[l], not r_mid[l],
  so a head of layer l reaches its first MLP at layer l+1 (r[l+1] = r[l+1]_clean + change),
  and every MLP j reads r[j] (frozen heads add their clean attention output beside it).
- **Post-attention norm** (Gemma 3; the authors' code has no such model): frozen heads mean
  every head's write at the output projection is frozen, so every layer's attention output is
  frozen at its clean value — except the sender's layer, where the sender's write (its value at
  the projection, ``RunRecord.head_out``) replaces the clean one and the norm of the sum is
  recomputed: the change is norm(raw + δ) − norm(raw), the intervention on the sender's z.

**The sender mean.** The authors' value (``sender_mean="dataset_by_position"``, the paper
preset's) is theirs exactly: the corrupted texts with the answer appended, right-padded with the
end-of-text token and run without an attention mask, averaged over the batch at each *absolute*
position, read at each clean prompt's end index (``patch.dataset_mean_by_position``). With
prompts of different lengths the value patched in mixes end positions with other tokens (and
padding) of longer and shorter prompts; recallscope's own-end mean (``sender_mean="dataset"``,
``patch.dataset_mean``) reads every corrupted prompt at its own end instead, and equals the
authors' where every prompt has the same length. Either is one batched forward of the corrupted
dataset, computed once for every sender (the authors' code reruns it for each sender).
The corrupted dataset has one swapped-subject prompt per prompt
(``tasks.prompts.swapped_subject_prompts``); ``corruption_draw="any_subject"`` is the authors'
draw (the clean or a demonstration's nation allowed).

**Which layers.** ``plot_path_patching`` with ``layout='max'`` loops the senders over layers
``0 .. min(receiver layer, n_layers) − 1``: with the receiver in the last layer
(``blocks.{L−1}.hook_resid_post``, the final residual) its figure has no row for the last
layer's heads and MLP. Every sender's effect is computed alone, so leaving a layer out changes
no other row; recallscope patches and plots every layer's senders, the last one included (the
paper preset's manifest says so), and reads the final residual.

:func:`frozen_heads_pi` is the reference the tests compare with: what the authors' code runs, a
full forward per sender (``ModelView.trace``) with every head's output re-imposed at its clean
value at every position and layer — the result of freezing its queries, keys and values — and
the sender's value at the end position.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import Tensor

from .lens import answer_metric, recall_metric
from .models.view import ModelView


class EndRecord(Protocol):
    """End-position activations [B, L, ...]: what the path engine reads (``patch.RunRecord``)."""

    resid_pre: Tensor  # [B, L, d]
    resid_mid: Tensor  # [B, L, d]
    mlp_out: Tensor  # [B, L, d]
    head_out: Tensor  # [B, L, H, d]


class Sender(Protocol):
    kind: str  # "head" | "attn" | "mlp" | "resid"
    layer: int
    head: int


# --------------------------------------------------------------------------- the exact engine
@torch.no_grad()
def path_final_resid(view: ModelView, clean: EndRecord, sender: EndRecord, senders: Sequence[Sender]) -> Tensor:
    """The final end-position residual with every head frozen and one sender patched, [B, C, d].

    ``clean`` is the clean run's end-position record, ``sender`` the values patched in (the
    same layout; a leading dimension of 1 broadcasts a dataset mean over the batch). One
    variant per sender; each reruns only the end-position MLPs from its layer up, with every
    layer's attention output at its clean value (see the module docstring).
    """
    cfg = view.cfg
    B = clean.resid_pre.shape[0]
    d = cfg.d_model
    attn = clean.resid_mid - clean.resid_pre  # [B, L, d] the frozen attention output at the end
    join_pre: dict[int, list[tuple[int, Tensor]]] = {}  # enters layer j's residual r[j]
    join_mid: dict[int, list[tuple[int, Tensor]]] = {}  # enters r_mid[j], before MLP j (sequential heads)

    def value(x: Tensor) -> Tensor:
        return x.expand(B, *x.shape[1:]) if x.shape[0] == 1 else x

    heads_by_layer: dict[int, list[int]] = {}
    for i, s in enumerate(senders):
        if s.kind == "head":
            heads_by_layer.setdefault(s.layer, []).append(i)
    head_change: dict[int, Tensor] = {}  # sender index -> the change of the layer's attention output, [B, d]
    for layer, idx in heads_by_layer.items():
        # ``head_out`` is each head's write at the output projection (before a post-attention
        # norm): the frozen heads' writes and the sender's are summed with b_O and the norm of the
        # sum recomputed — the intervention on the sender's z (elsewhere the norm is the identity).
        hs = [senders[i].head for i in idx]
        raw = view.attn_raw(layer, heads=clean.head_out[:, layer])  # [B, d] the clean projection output
        raw = raw[:, None] + value(sender.head_out[:, layer, hs]) - clean.head_out[:, layer, hs]  # [B, h, d]
        changes = view.post_attn(layer, raw) - attn[:, layer, None]
        head_change.update({i: changes[:, j] for j, i in enumerate(idx)})
    for i, s in enumerate(senders):
        layer = s.layer
        if s.kind == "resid":
            join_pre.setdefault(layer, []).append((i, value(sender.resid_pre[:, layer])))
        elif s.kind == "mlp":
            join_pre.setdefault(layer + 1, []).append((i, clean.resid_mid[:, layer] + value(sender.mlp_out[:, layer])))
        elif s.kind in ("head", "attn"):
            if s.kind == "head":
                change = head_change[i]
            else:  # the whole attention output of the layer
                change = value(sender.resid_mid[:, layer] - sender.resid_pre[:, layer]) - attn[:, layer]
            if cfg.parallel_residual:  # MLP l reads r[l]: the head reaches MLP l+1 first
                r_next = clean.resid_mid[:, layer] + clean.mlp_out[:, layer] + change
                join_pre.setdefault(layer + 1, []).append((i, r_next))
            else:
                join_mid.setdefault(layer, []).append((i, clean.resid_mid[:, layer] + change))
        else:
            raise ValueError(f"unknown sender kind {s.kind!r}")
    order: list[int] = []
    state = clean.resid_pre.new_zeros(B, 0, d)

    def join(state: Tensor, entries: list[tuple[int, Tensor]]) -> Tensor:
        order.extend(i for i, _ in entries)
        return torch.cat([state, torch.stack([x for _, x in entries], dim=1)], dim=1)

    for layer in range(cfg.n_layers):
        if layer in join_pre:
            state = join(state, join_pre[layer])
        resid = state
        state = state + attn[:, layer, None]
        if layer in join_mid:
            state = join(state, join_mid[layer])
        if state.shape[1]:
            state = state + view.mlp(layer, resid if cfg.parallel_residual else state)
    if cfg.n_layers in join_pre:
        state = join(state, join_pre[cfg.n_layers])
    out = torch.empty_like(state)
    out[:, order] = state
    return out


# --------------------------------------------------------------------------- the reference
@torch.no_grad()
def frozen_heads_pi(
    view: ModelView,
    input_ids: Tensor,
    attention_mask: Tensor,
    answer_ids: Tensor,
    sender: EndRecord,
    senders: Sequence[Sender],
    targets: Tensor | None = None,
) -> Tensor:
    """π(Y) with every head frozen and one sender patched, one full forward per sender, [B, C].

    The authors' ``path_patching`` as ``ModelView.trace`` edits: the clean run's head writes
    (every layer, every position) are re-imposed on the ``head_out`` site of every layer (what
    frozen queries, keys and values give), the sender's value is written at the end position
    (the last column of the left-padded batch), and the MLPs run freely. Used as the reference of :func:`path_final_resid`.

    ``targets`` [B, A] (recallscope's whole-answer metric, A > 1): the rows end with the first
    A − 1 scored tokens, the end is column S − A, every position's heads are frozen (the answer
    positions' too) and π(answer) = Σ_t π(y_t) is read at the last A columns.
    """
    cfg = view.cfg
    B, S = input_ids.shape
    A = 1 if targets is None else targets.shape[1]
    end = S - A
    positions = torch.arange(S, device=view.device).expand(B, S)
    clean = view.trace(input_ids, attention_mask, positions=positions, record=["z", "attn_out"])
    attn_clean = clean.attn_out  # [B, S, L, d]
    answer_ids = answer_ids.to(view.device)

    def frozen(edits: dict, layer: int, head: int | None = None, end_value: Tensor | None = None) -> None:
        # the ``head_out`` site is each head's write at the output projection; the model sums them
        # with b_O and applies the post-attention norm (if any) to the sum
        heads = view.head_writes(layer, clean.z[:, :, layer])  # [B, S, H, d]
        if head is not None:
            heads = heads.clone()
            heads[:, end, head] = end_value
        edits[("head_out", layer)] = lambda _x: heads

    def at_end(end_value: Tensor):
        def edit(x: Tensor) -> Tensor:
            x = x.clone()
            x[:, end] = end_value
            return x

        return edit

    def value(x: Tensor) -> Tensor:
        return x.expand(B, *x.shape[1:]) if x.shape[0] == 1 else x

    out = []
    for s in senders:
        edits: dict = {}
        for layer in range(cfg.n_layers):
            frozen(edits, layer)
        if s.kind == "head":
            frozen(edits, s.layer, s.head, value(sender.head_out[:, s.layer, s.head]))
        elif s.kind == "mlp":
            edits[("mlp_out", s.layer)] = at_end(value(sender.mlp_out[:, s.layer]))
        elif s.kind == "attn":
            attn = attn_clean[:, :, s.layer].clone()
            attn[:, end] = value(sender.resid_mid[:, s.layer] - sender.resid_pre[:, s.layer])
            edits[("attn_out", s.layer)] = lambda _x, attn=attn: attn
        else:
            edits[("resid_pre", s.layer)] = at_end(value(sender.resid_pre[:, s.layer]))
        if A == 1:
            t = view.trace(input_ids, attention_mask, edits=edits)
            out.append(recall_metric(t.logits[:, 0], answer_ids))
        else:
            t = view.trace(input_ids, attention_mask, positions=positions[:, end:], edits=edits)
            out.append(answer_metric(t.logits, targets.to(view.device)))
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------- cost
def flop_counts(view: ModelView, n_tokens: float, senders: Sequence[Sender]) -> dict:
    """Multiply-accumulates per prompt: the naive frozen-heads loop vs the path engine.

    Naive: per sender a full forward, ``T`` positions × ``L`` layers × (attention + MLP)
    (attention = the q/k/v/o projections plus scores and mixing over ``T`` keys at each
    position). Path: per sender the MLPs of layers ``l .. L−1`` at one position (``L − l − 1``
    for an MLP sender). The ratio is the ceiling of the speed-up; on average it is about
    ``2T · (1 + attention/MLP)``.
    """
    cfg = view.cfg
    d, dh, H, K = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads
    lw = view.layer(0)
    d_mlp = lw.W_in.shape[-1]
    mlp = d * d_mlp * (3 if cfg.gated_mlp else 2)
    attn_proj = d * dh * (2 * H + 2 * K)
    attn_mix = 2 * H * dh * n_tokens / 2  # scores and mixing over (on average) half the keys
    naive = len(senders) * n_tokens * cfg.n_layers * (attn_proj + attn_mix + mlp)
    path = 0.0
    for s in senders:
        first = (
            s.layer
            if s.kind in ("head", "attn", "resid") and not (s.kind in ("head", "attn") and cfg.parallel_residual)
            else s.layer + 1
        )
        path += max(0, cfg.n_layers - first) * mlp
    return {
        "naive_macs": float(naive),
        "path_macs": float(path),
        "flop_ratio": float(naive / path) if path else float("inf"),
        "attention_over_mlp": float((attn_proj + attn_mix) / mlp),
    }
