"""The logit lens and the recall metric — the one place both are computed.

recall metric π(Y) = logit[Y] − mean over the vocabulary of the logits (what the paper's code
scores); p(Y) and rank(Y) beside it. For answers of several tokens, the whole-answer metric
π(answer) = Σ_t π(y_t) of the teacher-forced answer tokens (:func:`answer_metric`).

logit lens of a vector v: the final norm N_f applied with the scale of a *reference* residual
(the real end-position residual: "linearised", so the lens is linear in v and the lenses of
the components of a residual add up to the lens of the residual), then · W_U. With
``include_bias`` (the norm's shift and the unembedding bias, which belong to the whole
residual, not to any one component), the lens of the real final residual reproduces the
model's logits. ``mode="normalised"`` instead normalises v by its own scale.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .models.arch import norm_scale, norm_weight
from .models.view import ModelView

LensMode = Literal["linearised", "normalised"]


def final_norm_weight(view: ModelView) -> Tensor | None:
    """The final norm's weight as applied (1 + w for Gemma; see :func:`~.models.arch.norm_weight`)."""
    return norm_weight(view.weights.ln_final, view.cfg.norm)


def logit_lens(
    view: ModelView,
    v: Tensor,
    reference: Tensor | None = None,
    mode: LensMode = "linearised",
    include_bias: bool = False,
) -> Tensor:
    """Logits [..., V] that the unembedding reads from v [..., d].

    ``reference`` [..., d] (broadcastable) is the residual whose norm scale is used in
    "linearised" mode; it is required there.
    """
    if mode == "normalised":
        return view.logits_from_resid(v)
    if reference is None:
        raise ValueError("the linearised logit lens needs the reference residual")
    cfg = view.cfg
    x = v
    if cfg.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    x = x * norm_scale(reference, cfg.norm, cfg.norm_eps).to(x.dtype)
    weight = final_norm_weight(view)
    if weight is not None:
        x = x * weight
    if include_bias and view.weights.ln_final.bias is not None:
        x = x + view.weights.ln_final.bias
    logits = x @ view.weights.W_U
    if include_bias and view.weights.b_U is not None:
        logits = logits + view.weights.b_U
    if include_bias and cfg.final_softcap:
        logits = torch.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return logits


def unembed_direction(view: ModelView, token_ids: Tensor, centred: bool = True) -> Tensor:
    """Rows of W_U for tokens, [..., d]; centred = minus the mean row, so that v · dir = π."""
    W_U = view.weights.W_U
    cols = W_U[:, token_ids].movedim(0, -1)
    if centred:
        cols = cols - W_U.mean(dim=1)
    return cols


def token_direction(view: ModelView, token_ids: Tensor) -> Tensor:
    """u_t = w_f ⊙ (W_U[:, t] − mean column of W_U), [..., d]: the centred unembedding of each
    token with the final norm's weight folded in (TransformerLens's folded, centred W_U; the
    paper's code multiplies a head's output by it). The one place these directions are built:
    movers projects head outputs on u_X, intercept compares b and m with u_Y, u_X."""
    u = unembed_direction(view, token_ids.to(view.device), centred=True)
    w = final_norm_weight(view)
    return u * w if w is not None else u


def token_attribution(view: ModelView, v: Tensor, reference: Tensor, token_ids: Tensor) -> Tensor:
    """The direct contribution [...] of writes v [..., d] to π(t) = logit[t] − mean logit of each
    row's token t (``token_ids`` [...]), read by the linearised logit lens at the scale of
    ``reference`` [..., d] (broadcastable; the real final residual): ``recall_metric(logit_lens(view,
    v, reference), token_ids)`` without the V-wide logits, since the lens is linear and π is a
    linear functional of it: (v, centred for a LayerNorm) · 1/σ(reference) · u_t with u_t =
    :func:`token_direction` (logits). Biases are left out (they belong to the whole residual)."""
    cfg = view.cfg
    x = v
    if cfg.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    x = x * norm_scale(reference, cfg.norm, cfg.norm_eps).to(x.dtype)
    u = token_direction(view, token_ids).to(x.dtype)
    return (x * u).sum(-1)


def recall_metric(logits: Tensor, answer_ids: Tensor) -> Tensor:
    """π(Y) = logit[Y] − mean logit, [...]."""
    return logits.gather(-1, answer_ids[..., None]).squeeze(-1) - logits.mean(-1)


def answer_metric(logits: Tensor, target_ids: Tensor) -> Tensor:
    """π(answer) = Σ_t π(y_t), [...] from the logits [..., A, V] at the A positions that predict
    the answer's scored tokens ``target_ids`` [..., A] (teacher forcing: position t holds the
    prompt and y_1..y_t; :mod:`recallscope.tasks.prompts`, "which tokens of the answer are
    scored"). With A = 1 it is π(Y)."""
    return recall_metric(logits, target_ids).sum(-1)


def answer_stats(logits: Tensor, answer_ids: Tensor) -> dict[str, Tensor]:
    """p, rank (0 = top-1), π of the answer and the top-1 token, for each row of logits.

    ``logits`` [B, V] with ``answer_ids`` [B] (Y, the first-token metric), or [B, A, V] with
    [B, A] (the whole-answer metric: each scored token's logits at the position before it). Over
    the A tokens: ``p_answer`` = Π_t p(y_t) (the probability of generating the scored tokens),
    ``rank_answer`` = max_t rank(y_t) (0: greedy decoding reproduces them), ``pi_answer`` =
    Σ_t π(y_t); ``top1_id``/``p_top1`` are the end position's (the first scored token's). With
    A = 1 each is the one-token value.
    """
    logits = logits.float()
    if logits.dim() == 2:
        logits, answer_ids = logits[:, None], answer_ids[:, None]
    probs = torch.softmax(logits, -1)
    return {
        "p_answer": probs.gather(-1, answer_ids[..., None]).squeeze(-1).prod(-1),
        "rank_answer": token_rank(logits, answer_ids).max(-1).values,
        "pi_answer": answer_metric(logits, answer_ids),
        "top1_id": logits[:, 0].argmax(-1),
        "p_top1": probs[:, 0].max(-1).values,
    }


def token_rank(logits: Tensor, token_ids: Tensor) -> Tensor:
    """Rank (0 = top) of each row's token in logits [..., V]: how many other tokens are not known to
    score at most as high. NaN-safe: every comparison with NaN is false, so counting ``logits >
    target`` gave rank 0 ("top-1", "known") to a token whose logit is NaN, or beside NaN logits;
    here a NaN logit counts as ahead of the token, and a token whose own logit is NaN ranks last
    (V - 1). Ties count as not ahead, as before."""
    target = logits.gather(-1, token_ids[..., None])
    ahead = (~(logits <= target)).sum(-1)  # NaN on either side: not <=, so counted
    return ahead - torch.isnan(target).squeeze(-1).long()  # not the token itself
