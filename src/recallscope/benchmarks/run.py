"""The default ``recallscope run`` on the embedded model: wall seconds per stage and peak RSS.

The run executes in a child process (a fresh interpreter, as a user would start it) into a
temporary directory; peak RSS is that child's own high-water mark (``_child``). Targets
(issue 17): ≤ 45 s on 2 idle CPU cores, ≤ 2 GB. ``ratio`` is target seconds / measured seconds
(≥ 1 means within target). The default run samples 32 prompts (``pipeline.DEFAULT_MAX_PROMPTS``);
unless ``--quick`` (or ``--max-prompts``) is given the same run on every prompt of the relation
(``--max-prompts all``) is measured after it (``max_prompts``: "default" or "all"), without a target.

Per stage the line gives the wall seconds (``stage_seconds``) and the CPU seconds of every thread
of the process (``stage_cpu_seconds``, from the run's summary): on a shared machine the wall time
stretches with the other processes' load (``load_before``/``load_after``: the 1-minute load
average), the CPU seconds much less, so compare CPU seconds (or wall seconds measured one after
the other at the same load) between versions. ``other_seconds`` is the wall time outside the
stages: interpreter start-up, imports, model load, prompt building, table writes and the report.

**How near its FLOP count the patch stage is** (``patch_*`` fields). The default patch is the
total effect with the exact engine: a component of layer l is patched at the end position and
that position alone is recomputed through layers l+1..L−1 (plus, for a head, layer l's MLP on the
patched r_mid). Its multiply-adds per prompt, counted from the model's shapes::

    layer  = d·(H + 2K)·dh  (q, k, v)  +  H·dh·d  (W_O)  +  (3 if gated else 2)·d·d_mlp  (MLP)
    engine = Σ_l [ (H + 1) · (L − 1 − l) · layer  +  H · mlp ]      (heads and the MLP of each layer l)

(attention over the S cached keys adds 2·H·dh·S per layer: under 1% of ``layer`` for S ≤ 30, left
out). ``patch_engine_gflops`` = 2 · engine · prompts / the engine's seconds; ``gemm_gflops`` is a
float32 matrix product of the engine's shape ([4096, d] × [d, d_mlp]) timed in this process right
after the run, with the child's thread count; their quotient ``patch_share_of_gemm_rate`` says how
near the engine runs to what the machine's matrix products allow.
"""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Iterator

from ._child import common_args, run_cli

TARGET_SECONDS = 45.0
TARGET_RSS_GB = 2.0


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def layer_macs(cfg) -> int:
    """Multiply-adds of one layer at one position (attention over the keys left out), see above."""
    attn = cfg.d_model * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head + cfg.n_heads * cfg.d_head * cfg.d_model
    return attn + mlp_macs(cfg)


def mlp_macs(cfg) -> int:
    return (3 if cfg.gated_mlp else 2) * cfg.d_model * cfg.d_mlp


def exact_engine_macs(cfg) -> int:
    """Multiply-adds per prompt of the exact total-effect engine over every head and MLP (see above)."""
    L, H = cfg.n_layers, cfg.n_heads
    return sum((H + 1) * (L - 1 - layer) * layer_macs(cfg) + H * mlp_macs(cfg) for layer in range(L))


def gemm_gflops(cfg, threads: int, seconds: float = 2.0) -> float:
    """float32 GFLOP/s of [4096, d] × [d, d_mlp] with ``threads`` intra-op threads (median of repeats)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(4096, cfg.d_model)
        b = torch.randn(cfg.d_model, cfg.d_mlp)
        a @ b  # warm-up
        rates = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(rates) < 5:
            start = time.perf_counter()
            a @ b
            rates.append(2 * 4096 * cfg.d_model * cfg.d_mlp / (time.perf_counter() - start) / 1e9)
        return float(sorted(rates)[len(rates) // 2])
    finally:
        torch.set_num_threads(before)


def _child_threads() -> int:
    """The child's torch threads by the CLI's rule: OMP_NUM_THREADS when set, else the usable CPUs."""
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _patch_flops(options, summary: dict) -> dict:
    patch = summary.get("stages", {}).get("patch")
    if not patch or patch.get("mode") != "total" or patch.get("engine") != "exact" or patch.get("components") != ["heads", "mlp"]:
        return {}
    from ..models import load_model

    cfg = load_model(options.model, device=options.device).cfg
    flops = 2.0 * exact_engine_macs(cfg) * patch["n_prompts"]
    achieved = flops / patch["engine_seconds"] / 1e9
    machine = gemm_gflops(cfg, _child_threads())
    return {
        "patch_engine_gflop": round(flops / 1e9, 1),
        "patch_engine_gflops": round(achieved, 1),
        "gemm_gflops": round(machine, 1),
        "patch_share_of_gemm_rate": round(achieved / machine, 2),
        "patch_engine_floor_seconds": round(flops / 1e9 / machine, 1),
        "patch_flop_arithmetic": (
            f"per prompt sum_l [(H+1)(L-1-l) layer + H mlp] with L={cfg.n_layers}, H={cfg.n_heads}, "
            f"layer={layer_macs(cfg) / 1e6:.2f}M MAC, mlp={mlp_macs(cfg) / 1e6:.2f}M MAC = "
            f"{exact_engine_macs(cfg) / 1e9:.2f} GMAC; x {patch['n_prompts']} prompts x 2 = {flops / 1e12:.2f} TFLOP"
        ),
    }


def _attribution_seconds(patch: dict) -> float | None:
    attribution = patch.get("attribution")
    return attribution.get("seconds") if isinstance(attribution, dict) else None


def variants(options) -> list[tuple[str, list[str]]]:
    """The runs measured: the default run (its own prompt sample, or ``--max-prompts``), then, unless
    ``--quick`` or ``--max-prompts`` is given, the same run on every prompt of the relation
    (``--max-prompts all``): where the default sample's time comes from, and what the whole relation costs."""
    runs = [("default", [])]
    if not options.quick and not options.max_prompts:
        runs.append(("all", ["--max-prompts", "all"]))
    return runs


def run(options) -> Iterator[dict]:
    for shots in options.shots:
        for prompts, extra in variants(options):
            yield _measure(options, shots, prompts, extra)


def _measure(options, shots: int, prompts: str, extra: list[str]) -> dict:
    default = prompts == "default"
    load_before = round(os.getloadavg()[0], 2)
    cpu_before = _children_cpu_seconds()
    child = run_cli(["run", *common_args(options, shots), *extra, "--out", "{out}", "--json"])
    cpu_seconds = _children_cpu_seconds() - cpu_before
    load_after = round(os.getloadavg()[0], 2)
    if child.returncode != 0:
        return {"bench": "run_default", "shots": shots, "max_prompts": prompts, "ratio": None, "error": child.error()}
    summary = json.loads(child.stdout)
    stages = summary.get("stages", {})
    wall = {name: data.get("wall_seconds") for name, data in stages.items()}
    cpu = {name: data.get("cpu_seconds") for name, data in stages.items()}
    return {
        "bench": "run_default",
        "model": options.model, "relation": options.relation, "shots": shots,
        "max_prompts": prompts if options.max_prompts is None else str(options.max_prompts),
        "n_prompts": summary.get("n_prompts"), "n_known": summary.get("n_known"),
        "wall_seconds": round(child.seconds, 1), "stage_seconds": wall,
        "other_seconds": round(child.seconds - sum(v for v in wall.values() if v is not None), 1),
        "cpu_seconds": round(cpu_seconds, 1), "stage_cpu_seconds": cpu,
        "patch_engine_seconds": stages.get("patch", {}).get("engine_seconds"),
        "patch_attribution_seconds": _attribution_seconds(stages.get("patch", {})),
        "peak_rss_gb": None if child.peak_rss_gb is None else round(child.peak_rss_gb, 2),
        # the target is the default run's; the every-prompt run is measured beside it, not held to it
        "ratio": round(TARGET_SECONDS / child.seconds, 2) if default else None,
        "target": f"<= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_GB} GB on 2 idle CPU cores" if default else None,
        "target_met": bool(child.seconds <= TARGET_SECONDS and (child.peak_rss_gb or 0.0) <= TARGET_RSS_GB) if default else None,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": _child_threads(), "load_before": load_before, "load_after": load_after,
        **_patch_flops(options, summary),
    }  # fmt: skip
