"""Stage **movers**: which attention heads move the subject to the end position?

Lv et al. (2024) find "mover" heads: at the end position ("The capital of France is") they
attend to the subject ("France") and write the subject's identity into the residual stream, so
that later MLPs can apply the relation to it. Three pieces of evidence, computed here for the
heads with the largest patching effects (or for every head):

1. **Where it looks.** The attention probability from the end position to the subject tokens,
   summed over the subject span and to the last subject token alone, and the share of prompts
   in which the most attended position is a subject token.
2. **What it writes** — the paper's scatter. Across prompts, Pearson r between that attention
   and the projection of the head's output a[l,h] (at the end position) on the unembedding of
   X, the subject's last token:

       projection = a[l,h] · (w_f ⊙ (W_U[:, X] − mean_v W_U[:, v]))

   i.e. the unembedding with the final norm's weight w_f folded in and centred over the
   vocabulary — the ``W_U`` of TransformerLens with its default ``fold_ln`` and
   ``center_unembed``, which is what the paper's code multiplies by. It is the head's direct
   contribution to π(X) = logit[X] − mean logit, up to the final norm's per-prompt 1/σ (left
   out, so that the figure is a plain dot product as in the paper). If a head copies what it
   reads, the more it looks at X, the more X it writes: r is high.
3. **How it copies** — the OV circuit. A vector is carried through the head's OV circuit
   alone: normalised by the layer's input norm (ln1) as if it were the whole residual, times
   W_V of the head's key/value head (grouped-query attention: kv head = h // (H / K)), times
   the head's slice W_O[h], through the post-attention norm where the architecture has one
   (applied to this one vector), and read by the logit lens normalised by its own scale
   (:func:`recallscope.lens.logit_lens` with the vector as its own reference, no biases:
   biases write the same vector for every token, so they carry no token identity). The rank
   of X in these logits (0 = top-1, the convention of :func:`recallscope.lens.token_rank`) is
   low for a copying head. Three vectors are read, one column each:

   - ``context`` (the default for the mover test): the residual stream r[l] entering the
     head's own layer at X's position in the prompt — what the head actually reads there
     when it attends to X. A deep head does not read the raw embedding: 20 layers have
     written at the subject position by then. Per prompt; summarised over prompts.
   - ``effective``: the residual after the first block (r[1]) at X's position — the
     "effective embedding" of the IOI analysis (Wang et al. 2022, the name-mover copy
     scores), which adds what layer 0 writes (in many models MLP 0 acts as an extended
     embedding). Per prompt.
   - ``embedding``: X's token embedding alone (the usual "full OV circuit" simplification),
     summarised over the distinct X's of the prompts (each token counted once).

   Each is summarised as the median rank and the share with rank < 5 (top-5).

A head is a **mover** when all of: mean attention to the subject ≥ ``min_attention_to_subject``,
r ≥ ``min_projection_corr`` with p ≤ ``max_p_value``, and the OV top-5 share of X (read from
``ov_input``, default ``context``) ≥ ``min_ov_top5_share``. The paper states no numeric
thresholds; the defaults below are recallscope's, printed in the summary, and configurable.

Per head the summary also gives the scatter's r at both ends of a multi-token subject:
``projection_corr_first`` (attention to the subject's first token against a·u of that token: the
paper's scatter, ``scatter_attention_and_contribution`` in the authors' fact_utils.py reads the
nation's first token) and ``projection_corr_last`` (attention to the last subject token against
a·u of X = the last token); ``projection_corr`` is the one ``subject_token`` selects, with the
attention summed over the subject span for ``last``.

Multi-token subjects: attention is summed over every subject token; X, the token whose
unembedding is projected on and whose OV copy is ranked, is the subject's *last* token
(:attr:`~recallscope.tasks.prompts.Prompt.subject_id`). The OV rank of every distinct subject
token (each ranked as a copy of itself) is reported beside it.

The Pearson p-value is two-sided, from Student's t with n − 2 degrees of freedom, through the
regularised incomplete beta function (computed here; no SciPy dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from .components import head_label, top_heads
from .constraints import NON_NEGATIVE, POSITIVE, PROBABILITY, Interval, Options
from .display import ResultView
from .errors import UserError
from .figures import movers as movers_figures
from .lens import logit_lens, token_direction, token_rank
from .models.view import ModelView
from .progress import track
from .stats import pearson
from .tasks.collect import collect
from .tasks.prompts import Prompt

OV_TOP_K = 5  # "top-5 share": the share of X's whose OV rank is below this


@dataclass(frozen=True)
class MoversConfig:
    top_k: int = 10  # candidate heads: the top_k heads by |mean patching effect|
    heads: Literal["top", "all"] = "top"  # "all": every head of the model is a candidate
    layer: int | None = None  # inspect this layer's heads only (with ``head``: one head)
    head: int | None = None
    # Mover thresholds (the paper gives none; these are ours, printed with the results).
    min_attention_to_subject: float = 0.3  # mean attention from end to the subject span
    min_projection_corr: float = 0.5  # Pearson r(attention, a·W_U[X]) across prompts
    max_p_value: float = 0.01  # two-sided p-value of that r
    min_ov_top5_share: float = 0.5  # share with OV rank < 5 (≈ median rank < 5), of the ``ov_input`` reading
    # which vector the OV test carries through the head: "context" (r[l] at X's position in the
    # prompt: what the head reads), "effective" (r[1] there: IOI's effective embedding) or
    # "embedding" (X's token embedding alone)
    ov_input: Literal["context", "effective", "embedding"] = "context"
    batch_size: int = 32
    # X, the subject token projected on and ranked: "last" (recallscope: the token that has read
    # the whole subject), or "first" (the paper's scatter: scatter_attention_and_contribution in
    # the authors' fact_utils.py reads word_idx["N"], the nation's first token); with "first" the
    # scatter's attention is to that token, not summed over the subject span.
    subject_token: Literal["last", "first"] = "last"

    constraints: ClassVar[dict] = {
        "top_k": POSITIVE,
        "layer": NON_NEGATIVE,
        "head": NON_NEGATIVE,
        "min_attention_to_subject": PROBABILITY,
        "min_projection_corr": Interval(-1, 1),
        "max_p_value": PROBABILITY,
        "min_ov_top5_share": PROBABILITY,
        "batch_size": POSITIVE,
        "subject_token": Options("last", "first"),
        "ov_input": Options("context", "effective", "embedding"),
    }

    def thresholds(self) -> dict:
        return {
            "min_attention_to_subject": self.min_attention_to_subject,
            "min_projection_corr": self.min_projection_corr,
            "max_p_value": self.max_p_value,
            "min_ov_top5_share": self.min_ov_top5_share,
            "ov_input": self.ov_input,
        }


# ----------------------------------------------------------------------------- OV circuit
def ov_vector(view: ModelView, layer: int, head: int, token_ids: Tensor) -> Tensor:
    """What head (layer, head) writes, [n, d], when it attends fully to one token's embedding.

    embedding → ln1 of the layer (the token's vector as the whole residual) → W_V of the head's
    key/value head (no bias) → W_O[h] → post-attention norm applied to this vector, if any.
    """
    cfg = view.cfg
    ids = token_ids.to(view.device)
    x = view.embed(ids[None], torch.zeros_like(ids)[None])[0]
    if cfg.positional == "learned":  # the OV circuit reads the token's identity, not its position
        x = x - view.weights.W_pos[cfg.learned_pos_offset]
    return ov_write(view, layer, head, x)


def ov_write(view: ModelView, layer: int, head: int, resid: Tensor) -> Tensor:
    """What head (layer, head) writes, [..., d], when it attends fully to one position whose
    residual (entering its layer) is ``resid`` [..., d]: ln1 → W_V of the head's key/value head
    (no bias) → W_O[h] → post-attention norm applied to this vector, if any. Computed on the
    layer's device (a model split over devices) and returned on ``resid``'s."""
    cfg = view.cfg
    lw = view.layer(layer)
    x = view.norm(resid.to(device=lw.W_V.device, dtype=lw.W_V.dtype), lw.ln1)
    out = (x @ lw.W_V[head // cfg.group_size]) @ lw.W_O[head]
    if cfg.post_attn_norm:
        out = view.norm(out, lw.post_attn_norm)
    return out.to(resid.device)


def write_ranks(view: ModelView, writes: Tensor, token_ids: Tensor) -> Tensor:
    """Rank (0 = top-1) of ``token_ids`` [...] in the logits of OV-circuit writes [..., d]: the
    logit lens at each write's own scale, no biases. The writes of many heads and prompts go
    through the unembedding together, a chunk of rows at a time (at most 2^25 logits, 128 MB in
    float32, per product): W_U is read once per chunk, not once per head (it is the largest
    matrix of the model, and a product with a few rows is bound by reading it)."""
    d = writes.shape[-1]
    flat, ids = writes.reshape(-1, d), token_ids.reshape(-1)
    rows = max(1, 2**25 // view.weights.W_U.shape[-1])
    ranks = torch.empty(flat.shape[0], dtype=torch.long)
    for start in range(0, flat.shape[0], rows):
        chunk = flat[start : start + rows]
        logits = logit_lens(view, chunk, reference=chunk, mode="linearised", include_bias=False).float()
        ranks[start : start + rows] = token_rank(logits, ids[start : start + rows].to(logits.device)).cpu()
    return ranks.reshape(token_ids.shape)


def ov_ranks_of(view: ModelView, layer: int, head: int, resid: Tensor, token_ids: Tensor) -> Tensor:
    """Rank (0 = top-1) of ``token_ids`` [n] in the OV-circuit logits of ``resid`` [n, d] (the
    residual read at the token's position), the logit lens at the write's own scale, no biases."""
    return write_ranks(view, ov_write(view, layer, head, resid), token_ids)


def ov_ranks(view: ModelView, layer: int, head: int, token_ids: Tensor) -> Tensor:
    """Rank (0 = top-1) of each token in its own OV-circuit logits, [n]."""
    return write_ranks(view, ov_vector(view, layer, head, token_ids), token_ids)


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class MoversResult(ResultView):
    stage = "movers"

    frame: pd.DataFrame = field(repr=False)  # one row per (head, prompt)
    heads: tuple[dict, ...]  # one dict per candidate head, in candidate order
    config: MoversConfig
    selection: str  # how the candidates were chosen
    example: dict | None = None  # attention pattern of one head on one prompt, for the plot
    n_layers: int = 0  # the model's shape: head_grid() / to_array() cover every head, NaN off the candidates
    n_heads: int = 0

    @property
    def movers(self) -> list[tuple[int, int]]:
        return [(h["layer"], h["head"]) for h in self.heads if h["is_mover"]]

    def tables(self) -> dict[str, pd.DataFrame]:
        """The stage's tables by name (one: the main table, ``to_frame()``)."""
        return {"movers": self.to_frame()}

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict:
        names = [head_label(h["layer"], h["head"]) for h in self.heads if h["is_mover"]]
        n_prompts = int(self.frame["prompt_index"].nunique()) if len(self.frame) else 0
        return {
            "movers": names,
            "n_movers": len(names),
            "verdict": (
                f"{len(names)} of {len(self.heads)} candidate heads are movers"
                + (f": {', '.join(names)}" if names else " — no head meets every threshold")
            ),
            "thresholds": self.config.thresholds(),
            "candidates": self.selection,
            "n_candidates": len(self.heads),
            "n_prompts": n_prompts,
            # A subject at token 0 shares its position with the attention sink of models that
            # prepend no BOS token, which inflates its attention: read those figures with care.
            "subject_at_first_token_share": (
                float((self.frame.groupby("prompt_index")["subject_start"].first() == 0).mean()) if len(self.frame) else 0.0
            ),
            "subject_token": (
                "X = the subject's first token (the paper's scatter); attention to that token"
                if self.config.subject_token == "first"
                else "X = the subject's last token; attention is summed over all subject tokens"
            ),
            "projection": "a[l,h] · (w_f ⊙ (W_U[:,X] − mean W_U)), the folded, centred unembedding",
            "ov_rank": "rank of X in its own OV-circuit logits, 0 = top-1: ov_copy_rank reads X's embedding (median over "
            "distinct X), ov_copy_rank_context r[l] at X's position (median over prompts), "
            "ov_copy_rank_effective r[1] there; the mover test reads ov_input",
            "heads": [dict(h) for h in self.heads],
            "example": self.example,
        }

    def plot(self) -> go.Figure:
        """The first head's attention against projection scatter (the first of :func:`recallscope.figures.movers.figures`)."""
        return movers_figures.figures(self.tables(), self.to_dict())[0]


def _x_id(prompt, config: MoversConfig) -> int:
    """X of a prompt: its subject's first or last token (``config.subject_token``)."""
    return prompt.input_ids[prompt.subject_span[0]] if config.subject_token == "first" else prompt.subject_id


def _head_summary(rows: pd.DataFrame, ov_x: Tensor, ov_all: Tensor, effect: float | None, cfg: MoversConfig) -> dict:
    attention = rows["attention_to_first_subject" if cfg.subject_token == "first" else "attention_to_subject"]
    r, p = pearson(attention.to_numpy(), rows["projection"].to_numpy())
    r_first, _ = pearson(rows["attention_to_first_subject"].to_numpy(), rows["projection_first"].to_numpy())
    r_last, _ = pearson(rows["attention_to_last_subject"].to_numpy(), rows["projection_last"].to_numpy())
    att = float(attention.mean())
    top5 = float((ov_x < OV_TOP_K).float().mean())
    top5_context = float((rows["ov_rank_context"] < OV_TOP_K).mean())
    top5_effective = float((rows["ov_rank_effective"] < OV_TOP_K).mean())
    ov_share = {"context": top5_context, "effective": top5_effective, "embedding": top5}[cfg.ov_input]
    # one check per condition, so that ``failed`` names the one that failed: a head whose r passes
    # and whose p-value does not fails on ``p_value``, never on ``correlation``
    checks = {
        "attention": att >= cfg.min_attention_to_subject,
        "correlation": bool(math.isfinite(r) and r >= cfg.min_projection_corr),
        "p_value": bool(math.isfinite(p) and p <= cfg.max_p_value),
        "ov_copy": ov_share >= cfg.min_ov_top5_share,
    }
    return {
        "attention_to_first_subject": float(rows["attention_to_first_subject"].mean()),
        "projection_corr_first": r_first,
        "projection_corr_last": r_last,
        "ov_copy_rank_context": float(rows["ov_rank_context"].median()),
        "ov_top5_share_context": top5_context,
        "ov_copy_rank_effective": float(rows["ov_rank_effective"].median()),
        "ov_top5_share_effective": top5_effective,
        "ov_input": cfg.ov_input,
        "attention_to_subject": att,
        "attention_to_last_subject": float(rows["attention_to_last_subject"].mean()),
        "top_attended_share": float(rows["subject_is_top_attended"].mean()),
        "projection_mean": float(rows["projection"].mean()),
        "projection_corr": r,
        "projection_p_value": p,
        "ov_copy_rank": float(ov_x.float().median()),  # torch's median: the lower middle value
        "ov_top5_share": top5,
        "ov_n_tokens": int(len(ov_x)),
        "ov_copy_rank_subject_tokens": float(ov_all.float().median()),
        "ov_top5_share_subject_tokens": float((ov_all < OV_TOP_K).float().mean()),
        "effect": effect,
        "failed": [name for name, ok in checks.items() if not ok],
        "is_mover": all(checks.values()),
    }


@torch.no_grad()
def find_movers(
    view: ModelView,
    prompts: Sequence[Prompt],
    candidates: Sequence[tuple[int, int]],
    config: MoversConfig = MoversConfig(),
    pad_id: int = 0,
    effects: Mapping[tuple[int, int], float] | None = None,
    decode: Callable[[int], str] | None = None,
    selection: str = "given",
    progress: bool = True,
) -> MoversResult:
    """Attention, projection and OV-copying figures and the mover verdict for ``candidates``.

    Needs no tokenizer: ``prompts`` carry their tokens and subject spans; ``decode`` (token id →
    text) only labels the table and the example plot. ``effects`` maps (layer, head) to its
    mean patching effect, reported beside each head.
    """
    cfg = view.cfg
    prompts = list(prompts)
    if not prompts:
        raise UserError("movers: no prompt to analyse")
    candidates = [(int(l), int(h)) for l, h in candidates]
    for l, h in candidates:
        if not (0 <= l < cfg.n_layers and 0 <= h < cfg.n_heads):
            raise UserError(f"head {head_label(l, h)} out of range: the model has {cfg.n_layers} layers × {cfg.n_heads} heads")
    if not candidates:
        raise UserError("movers: no candidate head")
    layers = torch.tensor([l for l, _ in candidates], device=view.device)
    heads = torch.tensor([h for _, h in candidates], device=view.device)
    C = len(candidates)
    example_rows: dict[int, tuple[Tensor, int]] = {}  # prompt -> (attention [C, n_tokens], pad)

    effective_layer = min(1, cfg.n_layers - 1)  # r[1]: the residual after the first block

    def measure(indices, batch) -> dict:
        S = batch.input_ids.shape[1]
        x_pos = (
            batch.subject_last()
            if config.subject_token == "last"
            else torch.tensor([p.subject_span[0] + int(batch.pad[r]) for r, p in enumerate(batch.prompts)])
        )
        positions = torch.stack([torch.full_like(x_pos, S - 1), x_pos], 1)  # [B, 2]: the end, X's position
        trace = view.trace(
            batch.input_ids, batch.attention_mask, positions=positions, record=["pattern", "head_out", "resid_pre"]
        )
        # pattern [B, L, H, 2, S] -> the candidates' attention from the end: [B, C, S]
        pattern = trace.pattern[:, layers, heads, 0].float()
        mask = batch.subject_mask().to(pattern.device)
        last = batch.subject_last().to(pattern.device)
        a_sub = (pattern * mask[:, None]).sum(-1)
        a_last = pattern.gather(2, last[:, None, None].expand(-1, C, 1))[..., 0]
        first = torch.tensor([p.subject_span[0] + int(batch.pad[r]) for r, p in enumerate(batch.prompts)], device=pattern.device)
        a_first = pattern.gather(2, first[:, None, None].expand(-1, C, 1))[..., 0]
        top = pattern.argmax(-1)
        top_sub = mask.gather(1, top)
        # head_out [B, 1, L, H, d] -> [B, C, d]; projected on each prompt's X direction
        out = trace.head_out[:, 0, layers, heads].float()
        x_batch = torch.tensor([_x_id(p, config) for p in batch.prompts])
        first_ids = torch.tensor([p.input_ids[p.subject_span[0]] for p in batch.prompts])
        last_ids = torch.tensor([p.subject_id for p in batch.prompts])
        project = lambda ids: torch.einsum("bcd,bd->bc", out, token_direction(view, ids).float())  # noqa: E731
        proj, proj_first, proj_last = project(x_batch), project(first_ids), project(last_ids)
        # OV copying of what each candidate reads at X's position: r[l] of its own layer, and r[1]
        resid_x = trace.resid_pre[:, 1]  # [B, L, d]
        # [2, B, C, d]: every candidate's write of its own layer's residual, then of r[1]
        writes = torch.stack(
            [torch.stack([ov_write(view, l, h, resid_x[:, l]), ov_write(view, l, h, resid_x[:, effective_layer])])
             for l, h in candidates],
            2,
        )  # fmt: skip
        rank_context, rank_effective = write_ranks(view, writes, x_batch[None, :, None].expand(2, -1, C))
        for row, i in enumerate(indices):
            n = prompts[i].n_tokens
            example_rows[i] = (pattern[row, :, -n:].cpu(), n)
        return {
            "att_subject": a_sub.cpu(),
            "att_last": a_last.cpu(),
            "att_first": a_first.cpu(),
            "top_is_subject": top_sub.cpu(),
            "projection": proj.cpu(),
            "projection_first": proj_first.cpu(),
            "projection_last": proj_last.cpu(),
            "rank_context": rank_context,
            "rank_effective": rank_effective,
        }

    got = collect(prompts, pad_id, config.batch_size, measure, "movers", progress)
    att_subject, att_last, att_first = got["att_subject"].T, got["att_last"].T, got["att_first"].T  # [C, N]
    top_is_subject, projection = got["top_is_subject"].T, got["projection"].T
    projection_first, projection_last = got["projection_first"].T, got["projection_last"].T
    rank_context, rank_effective = got["rank_context"].T, got["rank_effective"].T  # [C, N]

    x_ids = torch.tensor([_x_id(p, config) for p in prompts])
    distinct_x = torch.unique(x_ids)
    distinct_subject = torch.unique(torch.tensor([t for p in prompts for t in p.input_ids[slice(*p.subject_span)]]))

    rows = []
    summaries = []
    embedded = torch.stack([ov_vector(view, l, h, distinct_subject) for l, h in candidates])  # [C, n, d]
    distinct_ranks = write_ranks(view, embedded, distinct_subject[None].expand(C, -1))  # [C, n]
    for c, (l, h) in enumerate(track(candidates, "movers: heads", total=C, enabled=progress, unit="heads")):
        ranks_all = distinct_ranks[c]
        rank_of = dict(zip(distinct_subject.tolist(), ranks_all.tolist(), strict=True))
        ov_x = torch.tensor([rank_of[int(t)] for t in distinct_x])
        effect = None if effects is None or (l, h) not in effects else float(effects[(l, h)])
        head_rows = pd.DataFrame(
            {
                "component": head_label(l, h),
                "layer": l,
                "head": h,
                "prompt_index": [p.index for p in prompts],
                "subject": [p.subject for p in prompts],
                "x_id": x_ids.numpy(),
                "x_token": [decode(int(t)) if decode else str(int(t)) for t in x_ids],
                "subject_tokens": [p.subject_n_tokens for p in prompts],
                "subject_start": [p.subject_span[0] for p in prompts],
                "attention_to_subject": att_subject[c].numpy(),
                "attention_to_last_subject": att_last[c].numpy(),
                "attention_to_first_subject": att_first[c].numpy(),
                "subject_is_top_attended": top_is_subject[c].numpy(),
                "projection": projection[c].numpy(),
                "projection_first": projection_first[c].numpy(),
                "projection_last": projection_last[c].numpy(),
                "ov_rank_x": [rank_of[int(t)] for t in x_ids],
                "ov_rank_context": rank_context[c].numpy().astype("int64"),
                "ov_rank_effective": rank_effective[c].numpy().astype("int64"),
            }
        )
        summary = {"layer": l, "head": h, **_head_summary(head_rows, ov_x, ranks_all, effect, config)}
        for key in ("projection_corr", "projection_p_value", "is_mover", "effect"):
            head_rows[key] = summary[key]
        rows.append(head_rows)
        summaries.append(summary)
    frame = pd.concat(rows, ignore_index=True)

    example = _example(summaries, frame, prompts, example_rows, candidates, decode)
    return MoversResult(
        frame=frame,
        heads=tuple(summaries),
        config=config,
        selection=selection,
        example=example,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
    )


def _example(summaries, frame, prompts, example_rows, candidates, decode) -> dict:
    """The attention of the strongest mover (else the candidate with the highest r) on the
    prompt where its attention to the subject is the median one — a typical prompt, not the best."""
    movers = [s for s in summaries if s["is_mover"]]
    pool = movers or summaries
    best = max(pool, key=lambda s: s["projection_corr"] if math.isfinite(s["projection_corr"]) else -2.0)
    c = candidates.index((best["layer"], best["head"]))
    rows = frame[(frame["layer"] == best["layer"]) & (frame["head"] == best["head"])].reset_index(drop=True)
    order = rows["attention_to_subject"].sort_values(kind="stable").index
    pick = int(order[len(order) // 2])
    prompt = prompts[pick]
    attention, n = example_rows[pick]
    return {
        "layer": best["layer"],
        "head": best["head"],
        "is_mover": best["is_mover"],
        "prompt_index": prompt.index,
        "text": prompt.text,
        "tokens": [decode(t) if decode else str(t) for t in prompt.input_ids],
        "subject_span": list(prompt.subject_span),
        "attention": [round(float(a), 6) for a in attention[c, -n:]],
    }


def all_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    return [(l, h) for l in range(n_layers) for h in range(n_heads)]


def top_heads_from_patch(patch: pd.DataFrame, top_k: int) -> tuple[list[tuple[int, int]], dict]:
    """The top_k heads by |patching effect| and every head's effect (%), from the patch stage's
    ``components`` table (the aggregate the run's ``patch.aggregate`` selected: ratio of means
    under the ``paper`` preset) or its per-prompt table (mean of ratios); see :func:`components.top_heads`."""
    ranked = top_heads(patch)
    if ranked.empty:
        raise UserError("movers: the patch table has no head rows (patch with --components heads)")
    effects = {(c.layer, c.head): float(v) for c, v in sorted(ranked.items(), key=lambda item: (item[0].layer, item[0].head))}
    return [(c.layer, c.head) for c in ranked.index[:top_k]], effects


def check_config(config: MoversConfig, n_layers: int, n_heads: int) -> None:
    """Layer, head and choices in range for the model (UserError otherwise)."""
    if config.head is not None and config.layer is None:
        raise UserError("--head needs --layer (the head's layer)")
    if config.layer is not None and not 0 <= config.layer < n_layers:
        raise UserError(f"--layer {config.layer} out of range: the model has layers 0..{n_layers - 1}")
    if config.head is not None and not 0 <= config.head < n_heads:
        raise UserError(f"--head {config.head} out of range: the model has heads 0..{n_heads - 1}")
    if config.heads not in ("top", "all"):
        raise UserError(f"movers.heads must be 'top' or 'all', got {config.heads!r}")
    if config.subject_token not in ("last", "first"):
        raise UserError(f"movers.subject_token must be 'last' or 'first', got {config.subject_token!r}")
    if config.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {config.top_k}")


def candidates_for(config: MoversConfig, n_layers: int, n_heads: int, patch: pd.DataFrame | None):
    """(candidates, effects, selection) for a config; the patch table is read only for heads="top"."""
    check_config(config, n_layers, n_heads)
    effects = None
    if patch is not None and (patch["kind"] == "head").any():
        _, effects = top_heads_from_patch(patch, 1)
    if config.layer is not None:
        heads = [config.head] if config.head is not None else list(range(n_heads))
        return (
            [(config.layer, h) for h in heads],
            effects,
            f"layer {config.layer}" + (f", head {config.head}" if config.head is not None else ", every head"),
        )
    if config.heads == "all":
        return all_heads(n_layers, n_heads), effects, "all heads"
    if patch is None:
        raise UserError("movers with heads='top' needs the patch stage's table")
    chosen, effects = top_heads_from_patch(patch, config.top_k)
    return chosen, effects, f"top {len(chosen)} heads by |patching effect| ({top_heads(patch).name.replace('_', ' ')})"


def movers(
    model, prompts, config: MoversConfig = MoversConfig(), patch: pd.DataFrame | None = None, progress: bool = True
) -> MoversResult:
    """The movers stage on a loaded :class:`~recallscope.models.Model` and a prompt set.

    ``prompts``: the prompts the stage uses, as given. The pipeline passes the prompts the model
    knows (``recall(model, prompts).known``, ``study.known``); ``movers(model, study.known, config)``
    reproduces the run's table, while all of ``study.prompts`` (unknown ones included) measures
    another set of prompts and gives other figures (tests/test_api_smollm2.py).
    ``patch``: the patch stage's ``components`` table, to choose the candidate heads when
    ``config.heads`` is "top" and no layer is given."""
    cfg = model.cfg
    candidates, effects, selection = candidates_for(config, cfg.n_layers, cfg.n_heads, patch)
    tok = model.tokenizer
    return find_movers(
        model.view,
        list(prompts.prompts),
        candidates,
        config,
        pad_id=tok.pad_token_id,
        effects=effects,
        decode=lambda t: tok.decode([t]),
        selection=selection,
        progress=progress,
    )
