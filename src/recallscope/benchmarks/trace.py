"""Causal tracing: the exact batched engine vs the naive loop as ROME runs it.

The naive loop (``causal_trace.naive_prompt``) is ROME's ``trace_important_states`` /
``trace_important_window``: for every (kind, position, layer) restoration, one batched forward
of the clean prompt and its n noised copies (n + 1 rows, every position, every layer), p(Y)
from the last position. (ROME's Hugging Face forward also computes the logits of every
position; the naive loop here computes them at the last position only, so it is, if anything,
faster than ROME's.) It is timed on an evenly spread sample of the restorations that the exact
engine computes and scaled to every restoration (its cost per restoration does not depend on
which one); the line says so. The exact engine (``causal_trace.exact_group``) runs every
restoration of every prompt. The two are timed in turn, one group of same-length prompts at a
time, so that a machine whose speed drifts (shared cores) slows both alike.

FLOP arithmetic written in the line (units: one layer at one position of one run; the
unembedding at one position counted as ``unembed_layers`` = d·V / (a layer's weights) layers):

- ``flop_ratio``: the issue's bound of reusing what a restoration cannot change. A restoration
  at position p entering at layer s (s = l + 1 for the hidden state h_l, i.e. the residual r[s];
  the window's first layer for MLP/attention windows, which is below the window's centre l, so
  using the centre would overstate the saving) changes only positions ≥ p at layers ≥ s, so
  Σ T·L / Σ (T − p)·(L − s) over every restoration (L − s counted as 1 when s = L).
- ``flop_ratio_engine``: what the two engines actually compute, in the same units plus the
  unembedding: naive Σ (n + 1)(T·L + u); exact: the clean runs B·(T·L + u) and the noised runs
  n·((T − start)·L + u) once per prompt, then n·((T − p)(L − s) + u) per restoration it runs.
  It is larger than ``flop_ratio`` because the exact engine also reuses exact identities the
  bound does not count: a restoration before the first subject token is a no-op (the noised
  runs equal the clean run there; ``n_noop_restorations`` of them are not run, p_restored =
  p_corrupted), the last layer's output restored before the last position is read by nothing,
  the clean run is computed once instead of as row 0 of every forward, and the noised runs'
  common prefix (positions before the subject) is the clean run's. On the paper task's 0-shot
  prompts ("As any atlas will show, the capital of China is") the subject is the second-to-last
  token, so most restorations are no-ops; ``ratio_computed`` and ``flop_ratio_computed`` give
  the same comparison over the restorations the engine runs only.
- ``share_of_flop_ratio`` = ratio / flop_ratio (the issue's target: ≥ 0.8 and ratio ≥ 3);
  ``share_of_flop_ratio_engine`` = ratio / flop_ratio_engine (how close the engine gets to its
  own arithmetic).

``max_abs_diff`` (p(Y), probability units) compares the two engines on the sampled restorations
of one prompt (2 noise samples) with both in float64, so it measures the algorithm; the float32
difference of the timed runs is reported beside it.

On a GPU the exact engine's batches (rows = noised runs × restorations × positions, up to
``causal_trace.MAX_ROWS`` per layer call, which a GPU would raise) become a few large kernels
per layer, whereas the naive loop launches 3·T·L forwards of n + 1 rows per prompt, each too
small to fill the device: the naive loop's launch overhead would weigh more, so the measured
ratio should move towards ``flop_ratio_engine``; the FLOP arithmetic itself does not change.
Not measured here (no GPU in this session).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import torch

from .. import causal_trace as CT
from ..models.view import ModelView
from ._child import trim_heap
from ._prompts import known_by_shots


def default_relation(options) -> str:
    return "paper_country_capital"  # the paper's task (issue 15: "on the paper task")


def default_shots(options) -> tuple[int, ...]:
    # 0-shot: the setting. With demonstrations (--shots 3) the subject still sits two tokens
    # before the end of a ~4x longer prompt, so nearly every restoration is a no-op and the naive
    # loop's forwards take ~4x longer: the ratio says more about the prompt than about the engine.
    return (0,)


def run(options) -> Iterator[dict]:
    per_prompt_sample = 12 if options.quick else 24
    for model, shots, known in known_by_shots(options, (4, 8)):
        yield _line(model, options, shots, known, per_prompt_sample)


def layer_weights(cfg) -> int:
    """Weights one position meets in one layer (attention projections and MLP): FLOPs / 2."""
    attn = cfg.d_model * cfg.d_head * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    return attn + cfg.d_model * cfg.d_mlp * (3 if cfg.gated_mlp else 2)


def _line(model, options, shots, known, per_prompt_sample: int) -> dict:
    config = CT.TraceConfig(seed=options.seed)
    view, L, d = model.view, model.cfg.n_layers, model.cfg.d_model
    n = config.n_samples
    unembed = model.cfg.d_model * model.cfg.d_vocab / layer_weights(model.cfg)
    kinds = CT.KINDS
    sigma, _ = CT.noise_level(view, model.tokenizer, known, config)
    noise = {p.index: torch.from_numpy(CT.noise_draws(p, n, d, config.seed) * sigma).to(view.dtype) for p in known.prompts}
    groups = list(CT._length_groups(known.prompts, config.batch_size))
    exact_s = naive_s = 0.0
    n_total = n_computed = n_sampled = 0
    bound_naive = bound_exact = 0.0  # the arithmetic
    naive_flops = exact_flops = 0.0  # what each engine computes
    computed_naive = computed_exact = 0.0  # over the computed restorations only
    diff32, samples = 0.0, {}
    load_before = round(os.getloadavg()[0], 2)
    for group in groups:
        start = time.perf_counter()
        got = CT.exact_group(view, group, [noise[p.index] for p in group], kinds, config.window)
        exact_s += time.perf_counter() - start
        first = min(p.subject_span[0] for p in group)
        for b, p in enumerate(group):
            T = p.n_tokens
            restores = CT.restorations(kinds, T, L, config.window)
            run = [r for r in restores if r[1] >= p.subject_span[0] and r[3] < L]  # the rest are no-ops
            n_total += len(restores)
            n_computed += len(run)
            bound_naive += len(restores) * T * L
            bound_exact += sum((T - q) * max(L - s, 1) for _, q, _, s in restores)
            naive_flops += len(restores) * (n + 1) * (T * L + unembed)
            exact_flops += (T * L + unembed) + n * ((T - first) * L + unembed)
            per = [n * ((T - q) * (L - s) + unembed) for _, q, _, s in run]
            exact_flops += sum(per)
            computed_naive += len(run) * (n + 1) * (T * L + unembed)
            computed_exact += sum(per)
            pick = {run[int(i)][:3] for i in np.linspace(0, len(run) - 1, per_prompt_sample).round()}
            samples[p.index] = pick
            start = time.perf_counter()
            ref = CT.naive_prompt(view, p, noise[p.index], kinds, config.window, only=pick)
            naive_s += time.perf_counter() - start
            n_sampled += len(pick) + 1  # + the unrestored corrupted run
            for kind in kinds:
                ok = ~np.isnan(ref["p_restored"][kind])
                diff32 = max(diff32, float(np.abs(got["p_restored"][kind][b][ok] - ref["p_restored"][kind][ok]).max(initial=0.0)))
    load_after = round(os.getloadavg()[0], 2)
    per_forward = naive_s / n_sampled
    naive_scaled = per_forward * (n_total + len(known))
    ratio = naive_scaled / exact_s
    flop = bound_naive / bound_exact
    flop_engine = naive_flops / exact_flops
    # the same comparison over the restorations the exact engine runs (its one-time runs included)
    one_time = exact_flops - computed_exact
    ratio_computed = per_forward * n_computed / exact_s
    flop_computed = computed_naive / (computed_exact + one_time)
    diff = _float64_diff(model, known, config, sigma, samples)
    trim_heap()  # the float64 copy, freed, goes back (a child started now is charged this process's resident set)
    return {
        "bench": "trace_exact_vs_naive",
        "model": options.model, "relation": options.relation, "shots": shots,
        "n_prompts": len(known), "n_samples": n, "window": config.window, "kinds": list(kinds),
        "n_restorations": n_total,
        "n_noop_restorations": n_total - n_computed,
        "noop_rule": "before the prompt's first subject token, or the last layer's output before the last position: p_restored = p_corrupted, not run",
        "exact_seconds": round(exact_s, 2),
        "naive_seconds_scaled": round(naive_scaled, 2),
        "naive_sampled": f"{n_sampled} naive forwards of {n + 1} rows timed ({naive_s:.1f} s), scaled to {n_total + len(known)}",
        "ratio": round(ratio, 2),
        "flop_ratio": round(flop, 2),
        "flop_ratio_arithmetic": (
            f"sum over restorations of T*L / sum of (T - p)*(L - s) = {bound_naive:.0f} / {bound_exact:.0f}"
            " (s = entry layer: l + 1 for the hidden state h_l, the window's first layer for MLP/attention;"
            " L - s counted as 1 when s = L)"
        ),
        "share_of_flop_ratio": round(ratio / flop, 3),
        "flop_ratio_engine": round(flop_engine, 2),
        "flop_ratio_engine_arithmetic": (
            f"naive sum (n+1)(T*L + u) = {naive_flops:.0f} / exact: clean + noised runs once, n((T - p)(L - s) + u)"
            f" per restoration run = {exact_flops:.0f}; u = d*V / layer weights = {unembed:.2f} layer-positions"
        ),
        "share_of_flop_ratio_engine": round(ratio / flop_engine, 3),
        "ratio_computed": round(ratio_computed, 2),
        "flop_ratio_computed": round(flop_computed, 2),
        "computed_note": f"over the {n_computed} restorations the exact engine runs (its one-time clean and noised runs included)",
        "max_abs_diff": diff,
        "max_abs_diff_over": "p(Y) on the sampled restorations of one prompt (2 noise samples), both engines in float64",
        "max_abs_diff_float32": diff32,
        "max_abs_diff_float32_over": "p(Y) on every sampled restoration of the timed runs (float32)",
        "target_met": bool(ratio >= 3 and ratio >= 0.8 * flop and diff <= 1e-5),
        "load_before": load_before, "load_after": load_after,
        "timing_note": "the 1-minute load average before and after the timed engines; both engines are timed in turn per group, so a load slows both alike",
        "device": str(view.device), "dtype": str(view.dtype).replace("torch.", ""),
    }


def _float64_diff(model, known, config, sigma: float, samples: dict, n_prompts: int = 1, n_samples: int = 2) -> float:
    trim_heap()  # the timed runs' freed activations go back first: the float64 copy is the largest thing held
    view64 = ModelView(model.cfg, model.view.weights.to(dtype=torch.float64))
    d = model.cfg.d_model
    worst = 0.0
    for p in list(known.prompts[:n_prompts]):
        noise = torch.from_numpy(CT.noise_draws(p, n_samples, d, config.seed) * sigma)
        got = CT.exact_group(view64, [p], [noise], CT.KINDS, config.window)
        ref = CT.naive_prompt(view64, p, noise, CT.KINDS, config.window, only=samples[p.index])
        for kind in CT.KINDS:
            table = ref["p_restored"][kind]
            ok = ~np.isnan(table)
            worst = max(worst, float(np.abs(got["p_restored"][kind][0][ok] - table[ok]).max(initial=0.0)))
    return worst
