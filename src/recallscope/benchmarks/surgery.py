"""Head surgery: the batched null (every head set a variant over the shared prefix) vs the naive
loop (one full forward per head set).

The heads are the ones the movers claim names on the benchmark's own prompts: the patch stage's
three heads with the largest |mean patching effect| (``claims.patching_movers`` picks these among
the movers stage's candidates; the movers stage is not run here). The null sets are the stage's
(``surgery.draw_nulls``, default settings: 200 layer-matched and up to 200 norm-matched sets), so
both engines ablate 1 + the nulls' sets at both scopes (end position, every position).

- naive (``surgery.naive_means`` + ``surgery.naive_batch``): the corrupted means from one full
  forward of every corruption, then per head set and scope one full forward of the batch (every
  position, every layer) with the ``head_out`` edits, and the logits at the end;
- batched (``surgery.prepare_batch`` + ``surgery.batched_batch``): the clean run once (its keys/
  values and residuals), the corruptions from the subject on only, then per scope all head sets
  as variants, each from its first ablated layer, over the positions the ablation can change
  (the end; from the subject on).

Both are timed in turn on each batch of prompts, so a machine whose speed drifts slows both alike;
the norm pass that draws the norm null is the same for both and timed by neither. The naive loop
costs the same full forward for every head set, so it is timed on an evenly spread sample of the
sets (24 with ``--quick``, else 80; the movers' set always) and scaled to all of them, as the trace
benchmark scales ROME's loop; its corrupted runs are timed in full. The line says so.

FLOP arithmetic (units: one layer at one position of one prompt; the unembedding at one position
counted as u = d·V / (a layer's weights) layers): naive Σ_batches B·[(n + 1)·S·L + u + 2·C·(S·L + u)];
batched Σ_batches B·[S·L + u + n·T·L] + Σ_scopes Σ_sets B·(T_scope·(L − entry) + u) with T_end = 1 and
T_all = S − lo. ``flop_ratio`` = naive / batched; ``share_of_flop_ratio`` = ratio / flop_ratio.
Attention over the cached prefix is not counted (S is ~10 positions; the weights dominate).

``max_abs_diff`` (p(Y), probability) compares the two engines in float64 on the first batch's
first two prompts with the movers and the first five sets of each null; the float32 difference
of the timed runs is reported beside it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import torch

from .. import surgery as S
from ..components import top_heads
from ..models.view import ModelView
from ..patch import PatchConfig, _aligned_corruptions, engine_view, patch, with_corruptions
from ..tasks.prompts import batches, make_batch
from ._child import trim_heap
from ._prompts import known_by_shots
from .trace import layer_weights


def default_shots(options) -> tuple[int, ...]:
    return (0,)


def run(options) -> Iterator[dict]:
    for model, shots, known in known_by_shots(options, (4, 8)):
        yield _line(model, options, shots, known)


def _line(model, options, shots: int, known) -> dict:
    config = S.SurgeryConfig(seed=options.seed)
    cfg = model.cfg
    L = cfg.n_layers
    unembed = cfg.d_model * cfg.d_vocab / layer_weights(cfg)
    found_patch = patch(model, known, PatchConfig(attribution=False), progress=False)
    movers = tuple(sorted((c.layer, c.head) for c in top_heads(found_patch.tables()["components"], 3).index))
    view = engine_view(model.view)
    pad = model.tokenizer.pad_token_id
    kept, found, _ = with_corruptions(known, model.tokenizer, config.n_corruptions, config.min_prompts)
    groups = list(batches(kept.prompts, pad, config.batch_size))
    change, output = S.measure_norms(view, S.prepared_batches(view, groups, found, ""))
    nulls = S.draw_nulls(movers, change, output, config)
    sets = [movers] + [s for n in nulls for s in n.sets]
    masks = S.set_masks(sets, L, cfg.n_heads)
    entry = masks.flatten(1).to(torch.int64).argmax(1).numpy() // cfg.n_heads
    # the naive loop's cost per head set does not depend on the set (a full forward each): it is timed on
    # an evenly spread sample of the sets (the movers first) and scaled to all of them
    k = min(len(sets), 24 if options.quick else 80)
    pick = sorted({0, *np.linspace(0, len(sets) - 1, k).round().astype(int).tolist()})
    sampled = [sets[i] for i in pick]
    batched_s = naive_fixed_s = naive_sets_s = 0.0
    naive_flops = batched_flops = 0.0
    diff32 = 0.0
    load_before = round(os.getloadavg()[0], 2)
    for indices, batch in groups:
        ids, weight = _aligned_corruptions(batch, [found[i] for i in indices])
        B, n, Sq = ids.shape
        start = time.perf_counter()
        sb = S.prepare_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
        got = [S.batched_batch(view, sb, masks, scope)[0] for scope in S.SCOPES]
        batched_s += time.perf_counter() - start
        start = time.perf_counter()
        view.trace(batch.input_ids, batch.attention_mask, record=("logits",))  # p(Y) clean
        z_mean = S.naive_means(view, batch.input_ids, batch.attention_mask, ids, weight)
        naive_fixed_s += time.perf_counter() - start
        start = time.perf_counter()
        ref = [
            S.naive_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), z_mean, sampled, s)[0]
            for s in S.SCOPES
        ]
        naive_sets_s += time.perf_counter() - start
        diff32 = max(diff32, max(float((a[:, pick] - b).abs().max()) for a, b in zip(got, ref, strict=True)))
        T_all = Sq - sb.lo
        naive_flops += B * ((n + 1) * Sq * L + unembed + 2 * len(sets) * (Sq * L + unembed))
        batched_flops += B * (Sq * L + unembed + n * T_all * L)
        batched_flops += sum(B * (T * (L - entry).sum() + len(sets) * unembed) for T in (1, T_all))
    load_after = round(os.getloadavg()[0], 2)
    naive_s = naive_fixed_s + naive_sets_s * len(sets) / len(pick)
    ratio = naive_s / batched_s
    flop = naive_flops / batched_flops
    diff = _float64_diff(model, kept, found, sets, nulls)
    trim_heap()
    return {
        "bench": "surgery_batched_vs_naive",
        "model": options.model, "relation": options.relation, "shots": shots,
        "n_prompts": len(kept), "n_corruptions": config.n_corruptions,
        "movers": ", ".join(f"L{l}H{h}" for l, h in movers),
        "n_sets": len(sets),
        "null_sets": ", ".join(f"{n.name}: {len(n.sets)}" for n in nulls),
        "scopes": list(S.SCOPES),
        "batched_seconds": round(batched_s, 2),
        "naive_seconds_scaled": round(naive_s, 2),
        "naive_sampled": (
            f"{2 * len(pick)} forwards of each batch (the movers and {len(pick) - 1} evenly spread sets, both scopes) timed"
            f" ({naive_sets_s:.1f} s), scaled to {2 * len(sets)}; the corrupted runs ({naive_fixed_s:.1f} s) timed in full"
        ),
        "ratio": round(ratio, 2),
        "flop_ratio": round(flop, 2),
        "flop_ratio_arithmetic": (
            f"naive sum B[(n+1) S L + u + 2 C (S L + u)] = {naive_flops:.0f} / batched sum B[S L + u + n T L]"
            f" + sum over scopes and sets B (T (L - entry) + u) = {batched_flops:.0f}; C = {len(sets)} sets,"
            f" u = d V / layer weights = {unembed:.2f} layer-positions"
        ),
        "share_of_flop_ratio": round(ratio / flop, 3),
        "max_abs_diff": diff,
        "max_abs_diff_over": "p(Y), both engines in float64: 2 prompts, the movers and the first 5 sets of each null, both scopes",
        "max_abs_diff_float32": diff32,
        "max_abs_diff_float32_over": "p(Y) on the sampled sets of the timed runs (float32), both scopes",
        "load_before": load_before, "load_after": load_after,
        "timing_note": "both engines timed in turn on each batch of prompts; the norm pass (the same for both) is timed by neither",
        "device": str(view.device), "dtype": str(view.dtype).replace("torch.", ""),
    }  # fmt: skip


def _float64_diff(model, kept, found, sets, nulls, n_prompts: int = 2) -> float:
    trim_heap()
    view64 = ModelView(model.cfg, model.view.weights.to(dtype=torch.float64))
    few = [sets[0]] + [s for n in nulls for s in n.sets[:5]]
    masks = S.set_masks(few, model.cfg.n_layers, model.cfg.n_heads)
    chosen = list(kept.prompts[:n_prompts])
    batch = make_batch(chosen, model.tokenizer.pad_token_id)
    ids, weight = _aligned_corruptions(batch, [found[i] for i in range(n_prompts)])
    sb = S.prepare_batch(view64, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight)
    z_mean = S.naive_means(view64, batch.input_ids, batch.attention_mask, ids, weight)
    worst = 0.0
    for scope in S.SCOPES:
        got = S.batched_batch(view64, sb, masks, scope)[0]
        ref = S.naive_batch(view64, batch.input_ids, batch.attention_mask, batch.answer_ids(), z_mean, few, scope)[0]
        worst = max(worst, float(np.abs((got - ref).numpy()).max()))
    return worst
