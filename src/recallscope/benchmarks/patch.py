"""Patching engines side by side: exact vs the naive loop, vs TransformerLens, attribution vs exact.

Both engines start from the same prepared clean run and corrupted means (``patch.prepare_batches``,
timed once and reported as ``prepare_seconds``) and are timed batch by batch in turn, so that
a machine whose speed drifts (shared cores) slows both alike; ``ratio`` compares the patched runs
themselves, ``ratio_end_to_end`` adds the shared preparation to both sides. The naive loop
(one full forward per component) is timed on an evenly spread sample of components and
scaled to all of them; the line says so. Peak RSS is that of the patch stage run by itself
(``recallscope patch`` in a child process), not of the benchmark's process, which also holds a
float64 copy of the model and TransformerLens.

``max_abs_diff`` (exact vs naive, in effect percentage points) is measured on the same prompts
and sampled components with both engines rerun in float64, so it measures the algorithm; the
float32 figure of the timed runs is reported beside it (``max_abs_diff_float32``) together with
the float32 noise floor: the naive loop against itself when only its batch size changes.

Memory: every check streams the prepared batches (one batch of cached keys/values held at a
time, as the stage does) and keeps only per-prompt effects; holding every prepared batch, in
float32 and again in float64, took this benchmark to 15.7 GB at 0 and 3 shots. The float64
checks hold a float64 copy of the model (8 bytes a parameter, next to the float32 model): the
process's largest moment. Around them the freed float32 batches and then the freed float64 copy
are given back to the system (``_child.trim_heap``): glibc would otherwise keep them, and the
process would stay ~2 GB above what it holds into the next benchmark (measured: 2335 MiB resident
after this benchmark on smollm2-135m with ``--quick``, 503 MiB after a trim).

TransformerLens wraps the model's Hugging Face module (``TransformerBridge``): for an embedded
model, which keeps none, it is built for that line and dropped after it (a second copy of the
weights while it runs). TransformerLens patches a clean activation into a corrupted run
(denoising), one forward per component, on prompts of one token length at a time (its helpers
take no attention mask). It is compared with recallscope's exact engine in the same mode on the
same prompts: timings, and the largest difference of the patched π.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import numpy as np
import torch

from .. import patch as P
from ..lens import recall_metric
from ..models import load_model
from ..models.view import ModelView
from ..path_patching import flop_counts
from ..presets import PAPER
from ..recall import recall
from ..stats import spearman
from ..tasks import build_prompts, load_relation
from ._child import common_args, run_cli, trim_heap

FLOAT64_BATCH = 4  # prompts per batch of the float64 checks (memory, not speed: they are not timed); each
# prepared batch of 8 took ~550 MiB more in float64 on smollm2-135m (the corrupted runs), next to the float64 copy


def _stage_memory(options, shots: int) -> dict:
    """The patch stage as a user runs it (``recallscope patch``, a child process): seconds, peak RSS."""
    child = run_cli(["patch", *common_args(options, shots), "--out", "{out}", "--json"])
    if child.returncode != 0:
        return {"stage_error": child.error()}
    return {
        "peak_rss_gb": None if child.peak_rss_gb is None else round(child.peak_rss_gb, 2),
        "peak_rss_over": f"recallscope patch --shots {shots} in a child process (model load, recall, every batch, attribution); target <= 3 GB",
        "stage_wall_seconds": round(child.seconds, 1),
    }


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def default_relation(options) -> str:
    """Total mode: country_capital_extended (the figures already in BENCHMARKS.md); path: paper_country_capital (the paper's nations and capitals)."""
    return "paper_country_capital" if options.mode == "path" else "country_capital_extended"


def run(options) -> Iterator[dict]:
    if options.mode == "path":
        yield from run_path(options)
        return
    model = load_model(options.model, device=options.device)
    relation = load_relation(options.relation)
    max_prompts = options.max_prompts or (24 if options.quick else None)
    naive_sample = 6 if options.quick else 20
    for shots in options.shots:
        ps = build_prompts(relation, model.tokenizer, shots=shots, seed=options.seed, max_prompts=max_prompts)
        known = recall(model, ps, progress=False).known_prompts()
        config = P.PatchConfig(attribution=False)
        comps = P.select_components(model.cfg, config.components, None)
        sample = [int(i) for i in np.linspace(0, len(comps) - 1, naive_sample).round()]
        yield from _exact_vs_naive_lines(model, options, shots, known, config, comps, sample)
        yield _without_new_module(model, lambda: _transformerlens_line(model, options, shots, known, comps, sample))


def _without_new_module(model, make_line):
    """``make_line()``, then the Hugging Face module it made the model build (TransformerLens wraps
    one; an embedded float32 model keeps none, :class:`Model`) is dropped and its memory given back:
    kept, it sat beside the float64 model of the next shot count's checks (3244 MiB at 3 shots,
    2549 without it)."""
    had_module = model.hf is not None
    try:
        return make_line()
    finally:
        if not had_module and model.hf_loader is not None:
            model.hf = None
            trim_heap()


def _streamed(model, prompts, config, view=None) -> tuple[object, Iterator[tuple[object, float]], float]:
    """(kept prompts, the prepared batches one at a time with the seconds each took to prepare,
    the seconds of the shared set-up). Only the batch in use is held (its cached keys/values):
    the benchmark's memory stays that of one batch, as the stage's does."""
    start = time.perf_counter()
    kept, batches, _, _ = P.prepare_batches(model, prompts, config, view=view)
    setup_s = time.perf_counter() - start

    def each():
        it = iter(batches)
        while True:
            start = time.perf_counter()
            pb = next(it, None)
            if pb is None:
                return
            yield pb, time.perf_counter() - start

    return kept, each(), setup_s


def _exact_vs_naive_lines(model, options, shots, known, config, comps, sample) -> tuple[dict, dict]:
    view = P.engine_view(model.view)
    picked = [comps[i] for i in sample]
    kept, batches, prep_s = _streamed(model, known, config, view)
    n = len(kept)
    exact = np.zeros((n, len(comps)))
    naive = np.zeros((n, len(picked)))
    attribution = np.zeros((n, len(comps)))
    exact_s = naive_sample_s = attr_s = floor32 = 0.0
    # batch by batch, the engines in turn: all see the machine in the same state
    for i, (pb, s) in enumerate(batches):
        prep_s += s
        pi, s = _timed(lambda: P.batch_pi(view, pb, comps, "exact"))
        exact[pb.indices] = pb.effect_pct(pi, config.direction).double().cpu().numpy()
        exact_s += s
        pi, s = _timed(lambda: P.batch_pi(view, pb, picked, "naive"))
        naive[pb.indices] = pb.effect_pct(pi, config.direction).double().cpu().numpy()
        naive_sample_s += s
        pi, s = _timed(lambda: P.batch_pi(view, pb, comps, "attribution"))
        attribution[pb.indices] = pb.effect_pct(pi, config.direction).double().cpu().numpy()
        attr_s += s
        if i < 2:  # the float32 noise floor on the first two batches (not timed)
            floor32 = max(floor32, _naive_batch_floor(view, pb, picked, config.direction))
    naive_s = naive_sample_s * len(comps) / len(sample)
    diff64 = _float64_diff(model, known, config, picked)
    trim_heap()  # the float64 copy, freed, goes back (a child started now is charged this process's resident set)
    line = {
        "bench": "patch_exact_vs_naive",
        "model": options.model,
        "relation": known.relation.name,
        "shots": shots,
        "n_prompts": n,
        "n_components": len(comps),
        "exact_seconds": round(exact_s, 2),
        "naive_seconds": round(naive_s, 2),
        "naive_timing": f"measured on {len(sample)} of {len(comps)} components (evenly spread), scaled x{len(comps) / len(sample):.1f}",
        "prepare_seconds": round(prep_s, 2),
        "ratio": round(naive_s / exact_s, 1),
        "ratio_end_to_end": round((naive_s + prep_s) / (exact_s + prep_s), 1),
        "max_abs_diff": diff64,
        "max_abs_diff_over": f"{n} prompts x {len(sample)} sampled components, both engines rerun in float64 (effect, percentage points)",
        "max_abs_diff_float32": float(np.abs(exact[:, sample] - naive).max()),
        "float32_noise_floor": floor32,
        "float32_note": "the timed float32 runs; float32_noise_floor is the naive loop against itself on the first batches run in halves (only the batch shape differs)",
        **_stage_memory(dataclasses.replace(options, max_prompts=options.max_prompts or (24 if options.quick else None)), shots),
        "device": str(model.device),
        "dtype": str(view.dtype).replace("torch.", ""),
    }
    return line, {
        "bench": "patch_attribution_vs_exact",
        "model": options.model,
        "relation": known.relation.name,
        "shots": shots,
        "passes": 3,
        "passes_detail": "clean forward + corrupted forward (shared with exact) + one backward through the end position",
        "attribution_seconds": round(attr_s, 2),
        "exact_seconds": round(exact_s, 2),
        "ratio": round(exact_s / attr_s, 1),
        "spearman": round(spearman(exact.mean(0), attribution.mean(0)), 3),
        "top10_overlap": P.top_overlap(exact.mean(0), attribution.mean(0), 10),
    }


def _float64_diff(model, known, config, components) -> float:
    """max |exact − naive| (effect %) with both engines in float64 on the same prompts, batch by batch."""
    trim_heap()  # the float32 runs' freed batches go back first: the float64 copy is the largest thing held
    view = ModelView(model.cfg, model.view.weights.to(dtype=torch.float64))
    # small batches: float64 activations of every component's patched run take twice float32's room
    config = dataclasses.replace(config, batch_size=min(config.batch_size, FLOAT64_BATCH))
    _, batches, _ = _streamed(dataclasses.replace(model, view=view), known, config, view)
    worst = 0.0
    for pb, _ in batches:
        exact = pb.effect_pct(P.batch_pi(view, pb, components, "exact"), config.direction)
        naive = pb.effect_pct(P.batch_pi(view, pb, components, "naive"), config.direction)
        worst = max(worst, float((exact - naive).abs().max()))
    return worst


def _naive_batch_floor(view, pb, components, direction) -> float:
    """The naive loop against itself on one batch, whole and in halves (float32 rounding only)."""
    whole = P.naive_pi(view, pb.base, pb.patch, components)
    half = max(1, pb.base.size // 2)
    parts = [P._slice_batch(pb, sl) for sl in (slice(0, half), slice(half, None)) if len(pb.indices[sl])]
    split = torch.cat([P.naive_pi(view, b.base, b.patch, components) for b in parts])
    diff = pb.effect_pct(whole, direction) - pb.effect_pct(split, direction)
    return float(diff.abs().max())


def _transformerlens_line(model, options, shots, known, comps, sample) -> dict:
    line = {
        "bench": "patch_exact_vs_transformerlens",
        "model": options.model,
        "relation": known.relation.name,
        "shots": shots,
        "ratio": None,
    }
    try:
        from transformer_lens import patching
    except ImportError as exc:
        line["skipped"] = f"transformer-lens is not installed (pip install 'recallscope[bench]'): {exc}"
        return line
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:  # an older transformer-lens: no bridge to wrap a transformers model with
        line["skipped"] = f"this transformer-lens has no model_bridge.TransformerBridge (needs 3.0 or later): {exc}"
        return line
    try:
        bridge = TransformerBridge.boot_transformers(
            getattr(model.hf_model.config, "_name_or_path", "") or model.name,
            hf_model=model.hf_model,
            tokenizer=model.tokenizer,
            device=str(model.device),
        )
    except Exception as exc:  # noqa: BLE001 - the line must say why, whatever it is
        line["skipped"] = f"TransformerLens cannot wrap {options.model}: {type(exc).__name__}: {_first_line(exc)}"
        return line
    view = P.engine_view(model.view)
    config = P.PatchConfig(direction="denoise", attribution=False)
    prepared_kept, batches, prep_s = _streamed(model, known, config, view)
    ours = np.zeros((len(prepared_kept), len(comps)))
    exact_s = 0.0
    for pb, s in batches:
        prep_s += s
        pi, s = _timed(lambda: P.batch_pi(view, pb, comps, "exact"))
        ours[pb.indices] = pi.double().cpu().numpy()
        exact_s += s
    picked = [comps[i] for i in sample]
    kept, found, _ = P.with_corruptions(known, model.tokenizer, config.n_corruptions, config.min_prompts)
    theirs = np.full((len(kept), len(picked)), np.nan)
    tl_s = cache_s = 0.0
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(kept.prompts):
        groups.setdefault(p.n_tokens, []).append(i)
    try:
        for n_tokens, rows in groups.items():
            clean = torch.tensor([kept.prompts[i].input_ids for i in rows], device=model.device)
            corrupt = torch.tensor([found[i][0].input_ids for i in rows], device=model.device)
            answers = torch.tensor([kept.prompts[i].answer_id for i in rows], device=model.device)
            (_, cache), s = _timed(
                lambda: bridge.run_with_cache(
                    clean, names_filter=lambda name: name.endswith("attn.hook_z") or name.endswith("hook_mlp_out")
                )
            )
            cache_s += s
            values, s = _timed(lambda: _tl_patch(patching, bridge, corrupt, cache, answers, picked, n_tokens - 1))
            tl_s += s
            theirs[rows] = values
    except Exception as exc:  # noqa: BLE001
        line["skipped"] = f"TransformerLens wrapped the model but its patching failed: {type(exc).__name__}: {_first_line(exc)}"
        return line
    tl_all = tl_s * len(comps) / len(picked)
    line.update(
        {
            "n_prompts": len(kept),
            "n_components": len(comps),
            "mode": "denoise (clean activation patched into the first same-length corruption)",
            "transformerlens_seconds": round(tl_all, 2),
            "transformerlens_timing": f"get_act_patch_attn_head_out_by_pos / get_act_patch_mlp_out at the end position, {len(groups)} token-length groups, measured on {len(picked)} of {len(comps)} components, scaled x{len(comps) / len(picked):.1f}",
            "transformerlens_cache_seconds": round(cache_s, 2),
            "exact_seconds": round(exact_s, 2),
            "prepare_seconds": round(prep_s, 2),
            "ratio": round(tl_all / exact_s, 1),
            "ratio_end_to_end": round((tl_all + cache_s) / (exact_s + prep_s), 1),
            "max_abs_diff_pi": float(np.abs(ours[:, sample] - theirs).max()),
            "max_abs_diff_over": f"patched pi(Y) of {len(kept)} prompts x {len(picked)} sampled components, float32",
            "transformerlens": _version(),
        }
    )
    return line


def _tl_patch(patching, bridge, corrupt, cache, answers, components, end: int) -> np.ndarray:
    """TransformerLens's patched π for each component, [B, C]."""
    import pandas as pd

    def metric(logits):
        return recall_metric(logits[:, -1], answers)

    heads = [(i, c) for i, c in enumerate(components) if c.kind == "head"]
    mlps = [(i, c) for i, c in enumerate(components) if c.kind == "mlp"]
    out = np.full((len(answers), len(components)), np.nan)
    for picked, fn, columns in (
        (heads, patching.get_act_patch_attn_head_out_by_pos, lambda c: {"layer": c.layer, "pos": end, "head": c.head}),
        (mlps, patching.get_act_patch_mlp_out, lambda c: {"layer": c.layer, "pos": end}),
    ):
        if not picked:
            continue
        index = pd.DataFrame([columns(c) for _, c in picked])
        with torch.no_grad():
            result = fn(bridge, corrupt, cache, metric, index_axis_names=None, index_df=index, reduce="none")
        out[:, [i for i, _ in picked]] = result.values.reshape(len(picked), -1).T.cpu().numpy()
    return out


def _version() -> str:
    from importlib.metadata import version

    return f"transformer-lens {version('transformer-lens')}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [repr(exc)]
    return lines[0][:300]


# --------------------------------------------------------------------------- path mode
SENDER_MEAN_WORDS = {
    "dataset_by_position": "the authors' dataset mean (corrupted texts with the answer, right-padded with end-of-text, "
    "no mask, averaged at each absolute position, read at each clean prompt's end index)",
    "dataset": "recallscope's own-end dataset mean (each corrupted prompt read at its own end)",
    "per_prompt": "the mean over same-length corruptions of each prompt",
}
# the paper preset's patch settings (frozen heads, the authors' dataset mean and corruption draw, ratio of means, every prompt)
PATH_CONFIG = P.PatchConfig(
    **{key.split(".", 1)[1]: value for key, value in PAPER.stage_settings().items() if key.startswith("patch.")},
    attribution=False,
)


def run_path(options) -> Iterator[dict]:
    """The exact path engine vs the naive frozen-heads loop (the authors' ``path_patching``: a full
    forward per sender with every head frozen), on every prompt with the paper preset's
    definitions (dataset-mean senders, all prompts, demonstrations in the plain template)."""
    model = load_model(options.model, device=options.device)
    relation = load_relation(options.relation)
    max_prompts = options.max_prompts or (24 if options.quick else None)
    naive_sample = 4 if options.quick else 10
    for shots in options.shots:
        ps = build_prompts(
            relation, model.tokenizer, shots=shots, seed=options.seed, max_prompts=max_prompts, demonstrations="plain"
        )
        yield _path_line(model, options, shots, ps, naive_sample)


def _path_line(model, options, shots, ps, naive_sample: int) -> dict:
    view = P.engine_view(model.view)
    config = PATH_CONFIG
    comps = P.select_components(model.cfg, config.components, None)
    sample = [int(i) for i in np.linspace(0, len(comps) - 1, naive_sample).round()]
    picked = [comps[i] for i in sample]
    kept, batches, prep_s = _streamed(model, ps, config, view)
    # the same prompts with recallscope's own-end mean, so that the engine's ratio with either mean
    # comes from one run (the naive loop's cost does not depend on the values patched in)
    own_end = dataclasses.replace(config, sender_mean="dataset")
    _, own_batches, own_prep_s = _streamed(model, ps, own_end, view)
    mean_s, own_end_s = _mean_seconds(model, ps, config, view)
    n = len(kept)
    exact_pi_all = np.zeros((n, len(comps)))
    exact = np.zeros((n, len(comps)))
    naive = np.zeros((n, len(picked)))
    pi_clean = np.zeros(n)
    exact_s = naive_sample_s = own_exact_s = 0.0
    tokens = 0
    # the engines in turn, batch by batch (the two means' exact runs alternating which goes first)
    for i, ((pb, s), (ob, os_)) in enumerate(zip(batches, own_batches, strict=True)):
        prep_s += s
        own_prep_s += os_
        if i % 2:
            own_exact_s += _timed(lambda: P.batch_pi(view, ob, comps, "exact", "path"))[1]
        pi, s = _timed(lambda: P.batch_pi(view, pb, comps, "exact", "path"))
        if not i % 2:
            own_exact_s += _timed(lambda: P.batch_pi(view, ob, comps, "exact", "path"))[1]
        exact_pi_all[pb.indices] = pi.double().cpu().numpy()
        exact[pb.indices] = pb.effect_pct(pi, config.direction).double().cpu().numpy()
        exact_s += s
        pi, s = _timed(lambda: P.batch_pi(view, pb, picked, "naive", "path"))
        naive[pb.indices] = pb.effect_pct(pi, config.direction).double().cpu().numpy()
        naive_sample_s += s
        pi_clean[pb.indices] = pb.pi_clean.double().cpu().numpy()
        tokens += pb.base.input_ids.numel()
    naive_s = naive_sample_s * len(comps) / len(sample)
    T = tokens / n  # positions the naive loop computes per prompt (padding included)
    flops = flop_counts(view, T, comps)
    ratio = naive_s / exact_s
    check_prompts = 8 if options.quick else 16
    diff64, n_checked = _path_float64_diff(model, ps, config, picked, check_prompts)
    trim_heap()  # the float64 copy, freed, goes back (a child started now is charged this process's resident set)
    ratio_of_means = 100 * (exact_pi_all.mean(0) - pi_clean.mean()) / pi_clean.mean()
    top = np.argsort(-np.abs(ratio_of_means))[:3]
    return {
        "bench": "patch_path_exact_vs_naive",
        "model": options.model,
        "relation": ps.relation.name,
        "shots": shots,
        "definitions": "paper preset: heads frozen (q/k/v of every head = clean), MLPs free; sender = "
        + SENDER_MEAN_WORDS[config.sender_mean]
        + f" (corruption draw {config.corruption_draw}); all prompts; demonstrations 'The capital of X is Y.'",
        "sender_mean": config.sender_mean,
        "sender_mean_seconds": round(mean_s, 2),
        "sender_mean_note": "the dataset mean is computed once for every sender (its corrupted prompts drawn and run as one "
        "batched forward) and is part of prepare_seconds; sender_mean_seconds and own_end_mean_seconds (recallscope's "
        "own-end mean) are each the faster of two runs taken in turn in this process; ratio_own_end_mean and "
        "ratio_end_to_end_own_end_mean: the same prompts prepared with the own-end mean in the same run, its exact engine "
        "timed batch by batch beside the preset's, against the same naive timing",
        "own_end_mean_seconds": round(own_end_s, 2),
        "n_prompts": n,
        "n_components": len(comps),
        "exact_seconds": round(exact_s, 2),
        "naive_seconds": round(naive_s, 2),
        "naive_timing": f"measured on {len(sample)} of {len(comps)} components (evenly spread; every naive forward costs the same), scaled x{len(comps) / len(sample):.1f}",
        "prepare_seconds": round(prep_s, 2),
        "ratio": round(ratio, 1),
        "ratio_end_to_end": round((naive_s + prep_s) / (exact_s + prep_s), 1),
        "ratio_own_end_mean": round(naive_s / own_exact_s, 1),
        "ratio_end_to_end_own_end_mean": round((naive_s + own_prep_s) / (own_exact_s + own_prep_s), 1),
        "flop_ratio": round(flops["flop_ratio"], 1),
        "flop_ratio_arithmetic": (
            f"naive: T={T:.1f} positions x L={model.cfg.n_layers} layers x (attention {flops['attention_over_mlp']:.2f} + MLP 1) "
            f"per component = {flops['naive_macs'] / 1e9:.1f} GMAC/prompt; path: (L - l) MLPs at one position per component "
            f"= {flops['path_macs'] / 1e9:.2f} GMAC/prompt; ratio {flops['flop_ratio']:.1f} "
            f"(~2T(1 + attention/MLP) = {2 * T * (1 + flops['attention_over_mlp']):.1f})"
        ),
        "share_of_flop_ratio": round(ratio / flops["flop_ratio"], 2),
        "targets": {"share_of_flop_ratio": 0.8, "ratio": 20 if shots == 0 else 60},
        "max_abs_diff": diff64,
        "max_abs_diff_over": f"{n_checked} prompts x {len(sample)} sampled components, both engines rerun in float64 (effect, percentage points)",
        "max_abs_diff_float32": float(np.abs(exact[:, sample] - naive).max()),
        "top3_ratio_of_means": {comps[i].name: round(float(ratio_of_means[i]), 2) for i in top},
        "device": str(model.device),
        "dtype": str(view.dtype).replace("torch.", ""),
    }


def _mean_seconds(model, ps, config, view) -> tuple[float, float]:
    """Seconds of the preset's dataset mean and of recallscope's own-end mean on the same prompts, each
    the faster of two runs taken in turn (the first forward of a process pays one-time costs)."""
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    own_end = dataclasses.replace(config, sender_mean="dataset")
    times: dict[str, list[float]] = {"preset": [], "own_end": []}
    for _ in range(2):
        for name, c in (("preset", config), ("own_end", own_end)):
            times[name].append(_timed(lambda c=c: P.dataset_sender_mean(view, model.tokenizer, ps, c, pad_id))[1])
    return min(times["preset"]), min(times["own_end"])


def _path_float64_diff(model, ps, config, components, n_prompts: int) -> tuple[float, int]:
    """max |exact − naive| (effect %) of the path engines in float64 on the first ``n_prompts`` prompts."""
    trim_heap()  # the float32 runs' freed batches go back first: the float64 copy is the largest thing held
    view = ModelView(model.cfg, model.view.weights.to(dtype=torch.float64))
    subset = ps.subset([i < n_prompts for i in range(len(ps))])
    config = dataclasses.replace(config, batch_size=min(config.batch_size, FLOAT64_BATCH))
    _, batches, _ = _streamed(dataclasses.replace(model, view=view), subset, config, view)
    worst = 0.0
    for pb, _ in batches:
        exact = pb.effect_pct(P.batch_pi(view, pb, components, "exact", "path"), config.direction)
        naive = pb.effect_pct(P.batch_pi(view, pb, components, "naive", "path"), config.direction)
        worst = max(worst, float((exact - naive).abs().max()))
    return worst, len(subset)
