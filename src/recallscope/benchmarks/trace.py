"""Causal tracing: the exact batched engine vs the naive loop as ROME runs it.

ROME's ``trace_important_states`` / ``trace_important_window`` run one batched forward of the
clean prompt and its n noised copies for every (kind, position, layer) restoration. The exact
engine records the clean run and the n noised runs once per group of same-length prompts, then
runs every restoration entering at (position p, layer s) only over positions [p:] from layer s,
over the noised runs' cached keys/values of [:p] (``ModelView.forward_from``). What reusing can
save is bounded by the FLOP ratio T·L / mean((T − p)(L − s)) (per restoration, a naive forward
computes T positions × L layers; the exact one (T − p) × (L − s)); the line writes that
arithmetic (``flop_ratio``) and the share of it reached (``share_of_flop_ratio``).

Besides the suffix, the engine shares across restorations: the clean run (ROME reruns it as row
0 of every forward), the n noised runs' common prefix (keys/values of [:p] and the residual at
the entry layer, computed once), and the batch (every restoration entering at one (p, s), of
every prompt of the group, is one forward). The naive loop is timed on an evenly spread sample
of restorations per prompt and scaled to all of them (its cost per restoration does not depend
on p or l); the line says so. ``max_abs_diff`` (p(Y), probability units) compares the two on the
sampled restorations with both engines in float64, so it measures the algorithm.

On a GPU the exact engine's batches (rows = prompts × n × restorations at one (p, s)) would run
as a few large kernels where the naive loop launches L·T·3 small forwards of n + 1 rows per
prompt; the FLOP saving stays the same, while the naive loop's per-forward overhead grows in
relative terms, so the measured ratio should move towards or past the FLOP ratio.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from .. import causal_trace as CT
from ..models import load_model
from ..models.view import ModelView
from ..recall import recall
from ..tasks import build_prompts, load_relation


def run(options) -> Iterator[dict]:
    model = load_model(options.model, device=options.device)
    relation = load_relation(options.relation)
    # every restoration of n = 10 noised runs: minutes per prompt on a CPU, so few prompts by default
    max_prompts = options.max_prompts or (4 if options.quick else 8)
    per_prompt_sample = 12 if options.quick else 30
    for shots in options.shots:
        ps = build_prompts(relation, model.tokenizer, shots=shots, seed=options.seed, max_prompts=max_prompts)
        known = recall(model, ps, progress=False).known_prompts()
        yield _line(model, options, shots, known, per_prompt_sample)


def _line(model, options, shots, known, per_prompt_sample: int) -> dict:
    config = CT.TraceConfig(seed=options.seed)
    view, L, d = model.view, model.cfg.n_layers, model.cfg.d_model
    kinds = CT.KINDS
    sigma = config.noise_scale * CT.subject_embedding_std(view, known)
    noise = {p.index: torch.from_numpy(CT.noise_draws(p, config.n_samples, d, config.seed) * sigma) for p in known.prompts}
    groups = list(CT._length_groups(known.prompts, config.batch_size))
    # exact engine, every restoration of every prompt
    start = time.perf_counter()
    exact = {}
    for group in groups:
        got = CT.exact_group(view, group, [noise[p.index].to(view.dtype) for p in group], kinds, config.window)
        for b, p in enumerate(group):
            exact[p.index] = {k: got["p_restored"][k][b] for k in kinds}
    exact_s = time.perf_counter() - start
    # naive loop on a spread sample of restorations per prompt, scaled to all of them
    naive_s, n_sampled, n_total, samples = 0.0, 0, 0, {}
    naive_cost = exact_cost = 0.0
    diff32 = 0.0
    for p in known.prompts:
        restores = CT.restorations(kinds, p.n_tokens, L, config.window)
        n_total += len(restores)
        naive_cost += len(restores) * p.n_tokens * L
        exact_cost += sum((p.n_tokens - q) * max(L - s, 1) for _, q, _, s in restores)
        pick = {(k, q, layer) for k, q, layer, _ in (restores[int(i)] for i in
                np.linspace(0, len(restores) - 1, per_prompt_sample).round())}
        samples[p.index] = pick
        start = time.perf_counter()
        ref = CT.naive_prompt(view, p, noise[p.index].to(view.dtype), kinds, config.window, only=pick)
        naive_s += time.perf_counter() - start
        n_sampled += len(pick) + 1  # + the unrestored corrupted run
        for kind in kinds:
            ok = ~np.isnan(ref["p_restored"][kind])
            diff32 = max(diff32, float(np.abs(exact[p.index][kind][ok] - ref["p_restored"][kind][ok]).max(initial=0.0)))
    naive_scaled = naive_s / n_sampled * (n_total + len(known))
    flop = naive_cost / exact_cost
    ratio = naive_scaled / exact_s
    # float64: the algorithm, not float32 rounding (skipped with --quick: a float64 exact run of a
    # prompt takes minutes on two shared cores; tests/test_causal_trace.py holds it to 1e-5)
    diff = None if options.quick else _float64_diff(model, known, config, sigma, samples)
    return {
        "bench": "trace_exact_vs_naive",
        "model": options.model, "relation": options.relation, "shots": shots,
        "n_prompts": len(known), "n_samples": config.n_samples, "window": config.window, "kinds": list(kinds),
        "n_restorations": n_total,
        "exact_seconds": round(exact_s, 2),
        "naive_seconds_scaled": round(naive_scaled, 2),
        "naive_sampled": f"{n_sampled} naive forwards timed ({naive_s:.1f} s), scaled to {n_total + len(known)}",
        "ratio": round(ratio, 2),
        "flop_ratio": round(flop, 2),
        "flop_ratio_arithmetic": (f"sum over restorations of T*L / sum of (T - p)*(L - s) = {naive_cost:.0f} / {exact_cost:.0f}"
                                  " (s = entry layer: l + 1 for a hidden state, the window's first layer for MLP/attention;"
                                  " L - s counted as 1 when s = L)"),
        "share_of_flop_ratio": round(ratio / flop, 3),
        "max_abs_diff": diff,
        "max_abs_diff_over": ("p(Y) on the sampled restorations of one prompt (2 noise samples), both engines in float64"
                              if diff is not None else "not measured (--quick)"),
        "max_abs_diff_float32": diff32,
        "max_abs_diff_float32_over": "p(Y) on every sampled restoration of the timed runs (float32)",
        "target_met": bool(ratio >= 3 and ratio >= 0.8 * flop and (diff is None or diff <= 1e-5)),
        "timing_note": "2 shared CPU cores, contended by other processes: timings are indicative",
        "device": str(view.device), "dtype": str(view.dtype).replace("torch.", ""),
    }


def _float64_diff(model, known, config, sigma: float, samples: dict, n_prompts: int = 1, n_samples: int = 2) -> float:
    view64 = ModelView(model.cfg, model.view.weights.to(dtype=torch.float64))
    d = model.cfg.d_model
    prompts = list(known.prompts[:n_prompts])
    worst = 0.0
    for p in prompts:
        noise = torch.from_numpy(CT.noise_draws(p, n_samples, d, config.seed) * sigma)
        got = CT.exact_group(view64, [p], [noise], CT.KINDS, config.window)
        ref = CT.naive_prompt(view64, p, noise, CT.KINDS, config.window, only=samples[p.index])
        for kind in CT.KINDS:
            table = ref["p_restored"][kind]
            ok = ~np.isnan(table)
            worst = max(worst, float(np.abs(got["p_restored"][kind][0][ok] - table[ok]).max(initial=0.0)))
    return worst
