"""Patching engines side by side: exact vs the naive loop, vs TransformerLens, attribution vs exact.

Both engines start from the same prepared clean run and corrupted means (``patch.prepare``,
timed once and reported as ``prepare_seconds``); ``ratio`` compares the patched runs
themselves, ``ratio_end_to_end`` adds the shared preparation to both sides. The naive loop
(one full forward per component) is timed on an evenly spread sample of components and
scaled to all of them; the line says so. Peak RSS is the process's high-water mark.
"""

from __future__ import annotations

import resource
import time
from typing import Iterator

import numpy as np
import torch

from .. import patch as P
from ..models import load_model
from ..recall import recall
from ..tasks import build_prompts, load_relation


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run(options) -> Iterator[dict]:
    model = load_model(options.model, device=options.device)
    relation = load_relation(options.relation)
    max_prompts = options.max_prompts or (24 if options.quick else None)
    naive_sample = 6 if options.quick else 20
    for shots in options.shots:
        ps = build_prompts(relation, model.tokenizer, shots=shots, seed=options.seed, max_prompts=max_prompts)
        known = recall(model, ps, progress=False).known_prompts()
        config = P.PatchConfig(attribution=False)
        comps = P.select_components(model.cfg, config.components, None)
        start = time.perf_counter()
        prepared = P.prepare(model, known, config)
        prep_s = time.perf_counter() - start
        start = time.perf_counter()
        exact = P.run_engine(model.view, prepared, comps, "exact", config.mode)
        exact_s = time.perf_counter() - start
        sample = [int(i) for i in np.linspace(0, len(comps) - 1, naive_sample).round()]
        start = time.perf_counter()
        naive = P.run_engine(model.view, prepared, [comps[i] for i in sample], "naive", config.mode)
        naive_sample_s = time.perf_counter() - start
        naive_s = naive_sample_s * len(comps) / len(sample)
        yield {
            "bench": "patch_exact_vs_naive",
            "model": options.model,
            "relation": relation.name,
            "shots": shots,
            "n_prompts": len(prepared.prompts),
            "n_components": len(comps),
            "exact_seconds": round(exact_s, 2),
            "naive_seconds": round(naive_s, 2),
            "naive_timing": f"measured on {len(sample)} of {len(comps)} components (evenly spread), scaled ×{len(comps) / len(sample):.1f}",
            "prepare_seconds": round(prep_s, 2),
            "ratio": round(naive_s / exact_s, 1),
            "ratio_end_to_end": round((naive_s + prep_s) / (exact_s + prep_s), 1),
            "max_abs_diff": float(np.abs(exact[:, sample] - naive).max()),
            "max_abs_diff_over": f"{len(prepared.prompts)} prompts x {len(sample)} sampled components, float32",
            "peak_rss_gb": round(_peak_rss_gb(), 2),
            "device": str(model.device),
        }
        start = time.perf_counter()
        attribution = P.run_engine(model.view, prepared, comps, "attribution", config.mode)
        attr_s = time.perf_counter() - start
        yield {
            "bench": "patch_attribution_vs_exact",
            "model": options.model,
            "relation": relation.name,
            "shots": shots,
            "passes": 3,
            "passes_detail": "clean forward + corrupted forward (shared with exact) + one backward through the end position",
            "attribution_seconds": round(attr_s, 2),
            "exact_seconds": round(exact_s, 2),
            "ratio": round(exact_s / attr_s, 1),
            "spearman": round(P.spearman(exact.mean(0), attribution.mean(0)), 3),
            "top10_overlap": P.top_overlap(exact.mean(0), attribution.mean(0), 10),
        }
        yield _transformerlens_line(model, options, shots, prepared, comps)


def _transformerlens_line(model, options, shots, prepared, comps) -> dict:
    line = {"bench": "patch_exact_vs_transformerlens", "model": options.model, "shots": shots, "ratio": None}
    try:
        import transformer_lens  # noqa: F401
        from transformer_lens import patching
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:
        line["skipped"] = f"transformer-lens is not installed (pip install 'recallscope[bench]'): {exc}"
        return line
    try:
        bridge = TransformerBridge.boot_transformers(
            model.hf.config._name_or_path or "HuggingFaceTB/SmolLM2-135M-Instruct",
            hf_model=model.hf, tokenizer=model.tokenizer, device=str(model.device),
        )
    except Exception as exc:  # noqa: BLE001 - the line must say why, whatever it is
        line["skipped"] = f"TransformerLens cannot wrap {options.model}: {type(exc).__name__}: {_first_line(exc)}"
        return line
    # TransformerLens patches clean activations into a corrupted run (denoising), one forward per
    # (layer, position, head); compare with our exact engine in the same mode on the same batch.
    import pandas as pd

    pb = prepared.batches[0]
    n = min(8, pb.base.size)
    clean_ids = pb.base.input_ids[:n]
    corrupt_ids = clean_ids.clone()
    try:
        answers = pb.base.answer_ids[:n]

        def metric(logits):
            return P.recall_metric(logits[:, -1], answers).mean()

        _, clean_cache = bridge.run_with_cache(clean_ids)
        end = clean_ids.shape[1] - 1
        heads = [c for c in comps if c.kind == "head"][:: max(1, len([c for c in comps if c.kind == "head"]) // 20)]
        index_df = pd.DataFrame({"layer": [c.layer for c in heads], "pos": [end] * len(heads), "head": [c.head for c in heads]})
        start = time.perf_counter()
        patching.get_act_patch_attn_head_out_by_pos(bridge, corrupt_ids, clean_cache, metric, index_df=index_df)
        tl_s = (time.perf_counter() - start) * len(comps) / len(heads)
        start = time.perf_counter()
        sub = P._slice_batch(pb, slice(0, n))
        P.exact_pi(model.view, sub.base, sub.patch, comps)
        ours_s = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001
        line["skipped"] = f"TransformerLens wrapped the model but its patching failed: {type(exc).__name__}: {_first_line(exc)}"
        return line
    line.update({
        "transformerlens_seconds": round(tl_s, 2),
        "exact_seconds": round(ours_s, 2),
        "ratio": round(tl_s / ours_s, 1),
        "n_prompts": n,
        "note": f"TransformerLens get_act_patch_attn_head_out_by_pos at the end position, timed on {len(heads)} heads and scaled to {len(comps)} components",
    })
    return line


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [repr(exc)]
    return lines[0][:300]
