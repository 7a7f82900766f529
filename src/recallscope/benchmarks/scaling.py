"""How cost grows: patch (total and path), trace and the whole run against prompts, prompt length and model size.

Opt-in (``recallscope bench scaling --json``; not part of ``recallscope bench`` nor ``--quick``):
tens of minutes on two CPU cores. Every measurement is one command in a fresh child process, as a
user runs it (``recallscope patch``, ``recallscope patch --mode path``, ``recallscope trace``,
``recallscope run --no-report``): wall seconds (start-up, model load and recall included) and
the child's own peak RSS (VmHWM, ``_child``). One axis moves at a time from a base point (the
smallest prompt count of the axis that is ≥ 50, else the largest; 0 shots; the first model):

- ``prompts``: 25, 50, 100, 200 sampled prompts (``--max-prompts``; the stages work on the
  prompts the model knows among them). trace restores every (kind, position, layer) of every
  prompt over 10 noised runs — about a hundred times patch's work per prompt — so its axis is
  2, 4, 8, 16 prompts (its base 4).
- ``shots``: 0, 1, 3, 5 demonstrations; the fitted x is the mean number of tokens per prompt.
- ``model``: smollm2-135m, gemma3-270m (where installed: an opt-in model, never a dependency);
  the fitted x is the number of parameters. Two models of different shape (30 layers × 9 heads
  vs 18 × 4, vocabularies of 49k and 262k) make a crude size axis; the line says so.

Each axis's ``scaling_fit`` line is the least-squares slope of log(seconds) (and log(peak RSS))
against log(x) (``numpy.polyfit``); the fixed start-up cost is inside the seconds, so at these
small sizes the exponent understates the growth of the stage's own work. ``--max-prompts`` caps
the prompt axis (and the base), ``--shots`` replaces the shot axis, ``--models`` the model
axis, ``--stages`` picks among patch_total, patch_path, trace, run.

``scaling_prediction`` lines are predictions, not measurements: GPT-2 XL and Llama-2-7B on one GPU
from the model-size exponent and this machine's measured float32 matmul rate against a GPU's
spec-sheet float32 rate, utilisation assumed equal; each line writes the arithmetic out. Two
small models of different shape often give no usable exponent (the larger one may patch fewer
components and know fewer prompts), so the patch engine is also predicted from its FLOP count
(``basis: "flop count"``): the exact total-effect engine's multiply-adds per known prompt for the
target's published shape (``run.exact_engine_macs``) × 100 prompts, at the share of the matmul rate
the engine reached here on the largest patch_total point of the first model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Iterator

import numpy as np

from ..errors import UserError
from ._child import common_args, run_cli
from .run import exact_engine_macs

PROMPTS = (25, 50, 100, 200)
TRACE_PROMPTS = (2, 4, 8, 16)
SHOTS = (0, 1, 3, 5)
MODELS = ("smollm2-135m", "gemma3-270m")
WHAT = ("patch_total", "patch_path", "trace", "run")

# the models predicted: parameters, layers, heads and the shapes the patch engine's FLOP count needs
# (published configurations: GPT-2 XL's config.json, Llama-2-7B's params.json)
PREDICTED = {
    "gpt2-xl": {"n_params": 1.558e9, "layers": 48, "heads": 25,
                "shape": {"n_layers": 48, "n_heads": 25, "n_kv_heads": 25, "d_model": 1600, "d_head": 64,
                          "d_mlp": 6400, "gated_mlp": False}},
    "llama-2-7b": {"n_params": 6.738e9, "layers": 32, "heads": 32,
                   "shape": {"n_layers": 32, "n_heads": 32, "n_kv_heads": 32, "d_model": 4096, "d_head": 128,
                             "d_mlp": 11008, "gated_mlp": True}},
}
PREDICTED_PROMPTS = 100  # the FLOP-count predictions are for this many known prompts (the default run's sample)
# float32 (non-tensor-core) peak of one NVIDIA A100 (spec sheet), the GPU assumed for the prediction
GPU_FP32_GFLOPS = 19500.0
GPU_NAME = "one NVIDIA A100 (19.5 TFLOP/s float32, spec sheet)"

ARGS = {
    "patch_total": ["patch"],
    "patch_path": ["patch", "--mode", "path"],
    "trace": ["trace"],
    "run": ["run", "--no-report"],
}


def default_relation(options) -> str:
    return "country_capital_extended"


def default_shots(options) -> tuple[int, ...]:
    return SHOTS


def _base(values: tuple[int, ...], floor: int) -> int:
    above = [v for v in values if v >= floor]
    return above[0] if above else values[-1]


def _points(what: str, options) -> list[tuple[str, int, int, str]]:
    """(axis, n prompts, shots, model) of every measurement of ``what``."""
    values = TRACE_PROMPTS if what == "trace" else PROMPTS
    if options.max_prompts:
        values = tuple(v for v in values if v <= options.max_prompts) or (options.max_prompts,)
    base_n = _base(values, 4 if what == "trace" else 50)
    shots = options.shots or SHOTS
    models = options.models or MODELS
    points = [("prompts", n, shots[0], models[0]) for n in values]
    points += [("shots", base_n, k, models[0]) for k in shots]
    points += [("model", base_n, shots[0], m) for m in models]
    return points


_FACTS = """
import json, sys
from recallscope.models import load_model
from recallscope.tasks import build_prompts, load_relation

name, relation, seed, points = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
model = load_model(name)
cfg = model.cfg
hf = model.hf_model  # transformers' module, built now if the load read the view cache
tokens = {}
for shots, n in points:
    ps = build_prompts(load_relation(relation), model.tokenizer, shots=shots, seed=seed, max_prompts=n)
    tokens[f"{shots},{n}"] = sum(p.n_tokens for p in ps.prompts) / len(ps.prompts)
print(json.dumps({
    "n_params": sum(int(t.numel()) for t in hf.parameters()),
    "layers": cfg.n_layers, "heads": cfg.n_heads,
    "shape": {k: getattr(cfg, k) for k in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp", "gated_mlp")},
    "tokens": tokens,
}))
"""


def _model_facts(name: str, relation: str, seed: int, points: list[tuple[int, int]], cache: dict) -> dict:
    """Parameters, shape and mean prompt tokens at each (shots, n) of ``points``, read by a child
    process that loads the model (so the benchmark process never holds a model: its own peak RSS
    stays below its children's). RuntimeError with the child's last line when it fails."""
    if name not in cache:
        proc = subprocess.run([sys.executable, "-c", _FACTS, name, relation, str(seed), json.dumps(points)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
        cache[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return cache[name]


def _cpu_matmul_gflops() -> float:
    """This machine's float32 matmul rate (GFLOP/s, best of 3 of a 1024³ product, torch's threads)."""
    import torch

    a = torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best / 1e9


def run(options) -> Iterator[dict]:
    whats = options.stages or WHAT
    unknown = [w for w in whats if w not in WHAT]
    if unknown:
        raise UserError(f"--stages for scaling must be among {', '.join(WHAT)}, got {', '.join(unknown)}")
    cache: dict = {}
    points: dict[str, list[tuple[int, int]]] = {}  # model -> every (shots, prompts) measured on it
    for what in whats:
        for _, n, shots, model in _points(what, options):
            points.setdefault(model, [])
            if (shots, n) not in points[model]:
                points[model].append((shots, n))
    measured: list[dict] = []
    for what in whats:
        done: dict[tuple[int, int, str], dict] = {}
        for axis, n, shots, model in _points(what, options):
            key = (n, shots, model)
            if key not in done:
                done[key] = _measure(what, n, shots, model, options, points[model], cache)
            line = {"bench": "scaling", "what": what, "axis": axis,
                    "value": {"prompts": n, "shots": shots, "model": model}[axis], **done[key]}
            first = next((m for m in measured if m["what"] == what and m["axis"] == axis), line)
            line["ratio"] = (round(line["seconds"] / first["seconds"], 3)
                             if line.get("seconds") and first.get("seconds") else None)
            line["ratio_is"] = "seconds / seconds at the axis's first value"
            measured.append(line)
            yield line
        yield from _fits(what, [m for m in measured if m["what"] == what])
    yield from _predictions(measured)
    yield from flop_predictions(measured)


def _measure(what: str, n: int, shots: int, model: str, options, points: list[tuple[int, int]], cache: dict) -> dict:
    from dataclasses import replace

    opts = replace(options, model=model, max_prompts=n)
    try:
        facts = _model_facts(model, options.relation, options.seed, points, cache)
        mean_tokens = facts["tokens"][f"{shots},{n}"]
    except Exception as exc:  # noqa: BLE001 - a model that is not installed: the line says so
        return {"n_prompts": n, "shots": shots, "model": model, "seconds": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
    child = run_cli([*ARGS[what], *common_args(opts, shots), "--out", "{out}", "--json"])
    out = {"n_prompts": n, "shots": shots, "model": model, "mean_tokens": round(mean_tokens, 2),
           "n_params": facts["n_params"], "layers": facts["layers"], "heads": facts["heads"],
           # the children inherit it: torch's threads are the CLI's choice unless it is set
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if child.returncode != 0:
        return {**out, "seconds": None, "error": child.error()[:300]}
    out = {**out, "seconds": round(child.seconds, 2),
           "peak_rss_gb": None if child.peak_rss_gb is None else round(child.peak_rss_gb, 3)}
    if what == "patch_total":  # the engine's own seconds and prompts: the FLOP-count prediction reads them
        summary = json.loads(child.stdout)
        patch = summary.get("stages", {}).get("patch", summary)
        out.update(engine_seconds=patch.get("engine_seconds"), patched_prompts=patch.get("n_prompts"), shape=facts["shape"])
    return out


X_OF_AXIS = {"prompts": "n_prompts", "shots": "mean_tokens", "model": "n_params"}


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope of log y on log x, R²) by least squares."""
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    total = float(((ly - ly.mean()) ** 2).sum())
    return float(slope), (1.0 - float((resid**2).sum()) / total) if total > 0 else 1.0


def _fits(what: str, lines: list[dict]) -> Iterator[dict]:
    for axis, xkey in X_OF_AXIS.items():
        ok = [m for m in lines if m["axis"] == axis and m.get("seconds") and m.get(xkey)]
        xs = {m[xkey] for m in ok}
        if len(xs) < 2:
            continue
        x = np.array([m[xkey] for m in ok], dtype=float)
        exp_s, r2 = _fit(x, np.array([m["seconds"] for m in ok], dtype=float))
        rss = [m.get("peak_rss_gb") for m in ok]
        exp_m = _fit(x, np.array(rss, dtype=float))[0] if all(rss) else None
        yield {
            "bench": "scaling_fit", "what": what, "axis": axis, "x": xkey, "n_points": len(ok),
            "exponent_seconds": round(exp_s, 3), "r2_seconds": round(r2, 4),
            "exponent_peak_rss": None if exp_m is None else round(exp_m, 3),
            "ratio": round(exp_s, 3),
            "note": "two models of different shape: a crude size axis" if axis == "model" else
                    "log-log least squares (numpy.polyfit); start-up and model load inside the seconds",
        }


# A model-size prediction extrapolates a fitted exponent by one to two orders of magnitude: with two
# sizes the fit has no residual to judge it by (smollm2-135m and gemma3-270m gave path patching an
# exponent of 0.09, hence 0.3 s for Llama-2-7B on one GPU: nonsense); three sizes at least.
MIN_MODEL_SIZES = 3


def _predictions(measured: list[dict]) -> Iterator[dict]:
    fits = {}
    for what in {m["what"] for m in measured}:
        ok = [m for m in measured if m["what"] == what and m["axis"] == "model" and m.get("seconds") and m.get("n_params")]
        if len({m["n_params"] for m in ok}) >= 2:
            x = np.array([m["n_params"] for m in ok], dtype=float)
            fits[what] = (_fit(x, np.array([m["seconds"] for m in ok], dtype=float))[0], max(ok, key=lambda m: m["n_params"]))
    if not fits:
        return
    cpu = _cpu_matmul_gflops()
    factor = GPU_FP32_GFLOPS / cpu
    for what, (exponent, largest) in sorted(fits.items()):
        sizes = len({m["n_params"] for m in measured if m["what"] == what and m["axis"] == "model" and m.get("seconds")})
        if sizes < MIN_MODEL_SIZES:
            yield {"bench": "scaling_prediction", "what": what, "prediction": True, "ratio": None,
                   "skipped": (f"{sizes} model sizes measured: a line through {sizes} points fits them exactly (R² = 1 "
                               f"whatever the truth) and cannot be judged; {MIN_MODEL_SIZES} or more are needed for a "
                               f"model-size prediction (fitted exponent {exponent:.2f}, not used)")}
            continue
        if exponent <= 0:  # cost cannot fall with size: the points were measured under unequal load
            yield {"bench": "scaling_prediction", "what": what, "prediction": True, "ratio": None,
                   "skipped": (f"fitted model-size exponent {exponent:.2f} <= 0: cost did not grow with parameters between "
                               "the measured models (they differ in layers, heads, vocabulary and the prompts they "
                               "know: size alone does not order their cost); not a usable fit")}
            continue
        for name, spec in PREDICTED.items():
            scale = (spec["n_params"] / largest["n_params"]) ** exponent
            cpu_s = largest["seconds"] * scale
            yield {
                "bench": "scaling_prediction", "what": what, "basis": "model-size exponent", "model": name,
                "n_params": spec["n_params"],
                "prediction": True,
                "predicted_cpu_seconds": round(cpu_s, 1),
                "gpu_speedup_assumed": round(factor, 1),
                "predicted_gpu_seconds": round(cpu_s / factor, 1),
                "ratio": None,
                "arithmetic": (
                    f"PREDICTION: {largest['seconds']:.1f} s ({largest['model']}, {largest['n_params'] / 1e6:.0f}M parameters, "
                    f"{largest['n_prompts']} prompts, {largest['shots']} shots, this CPU) x ({spec['n_params'] / 1e9:.2f}e9 / "
                    f"{largest['n_params'] / 1e9:.3f}e9)^{exponent:.2f} = {cpu_s:.0f} s on this CPU; / ({GPU_FP32_GFLOPS:.0f} GFLOP/s of "
                    f"{GPU_NAME} / {cpu:.0f} GFLOP/s measured here for a float32 1024^3 matmul) = {cpu_s / factor:.1f} s; "
                    "assumes equal utilisation on both and a float32 model that fits the GPU's memory "
                    f"({spec['n_params'] * 4 / 1e9:.0f} GB of weights)"
                ),
            }


def flop_predictions(measured: list[dict], cpu_gflops: float | None = None) -> Iterator[dict]:
    """The exact total-effect engine on GPT-2 XL and Llama-2-7B, predicted from its FLOP count.

    Basis: the patch_total point of the first model with the most patched prompts. There the engine
    reached ``achieved`` = 2 · exact_engine_macs(shape) · prompts / engine seconds, a ``share`` of
    this machine's float32 matmul rate. A target's engine time for ``PREDICTED_PROMPTS`` known
    prompts is 2 · exact_engine_macs(target shape) · prompts / (rate · share), on this CPU and on
    the GPU (its spec-sheet float32 rate, the same share assumed). The engine only: start-up,
    recall and the corrupted means are left out, and the weights must fit the device.
    """
    base = [m for m in measured if m.get("what") == "patch_total" and m.get("engine_seconds") and m.get("patched_prompts")
            and m.get("shape")]
    if not base:
        return
    first_model = base[0]["model"]
    b = max((m for m in base if m["model"] == first_model), key=lambda m: m["patched_prompts"])
    cpu = cpu_gflops if cpu_gflops is not None else _cpu_matmul_gflops()
    achieved = 2 * exact_engine_macs(SimpleNamespace(**b["shape"])) * b["patched_prompts"] / b["engine_seconds"] / 1e9
    share = achieved / cpu
    for name, spec in PREDICTED.items():
        macs = exact_engine_macs(SimpleNamespace(**spec["shape"]))
        gflop = 2 * macs * PREDICTED_PROMPTS / 1e9
        cpu_s, gpu_s = gflop / (cpu * share), gflop / (GPU_FP32_GFLOPS * share)
        yield {
            "bench": "scaling_prediction", "what": "patch_total", "basis": "flop count", "model": name,
            "n_params": spec["n_params"], "prediction": True, "n_prompts": PREDICTED_PROMPTS,
            "engine_tmac_per_prompt": round(macs / 1e12, 4), "engine_share_of_matmul": round(share, 3),
            "predicted_cpu_seconds": round(cpu_s, 1), "gpu_speedup_assumed": round(GPU_FP32_GFLOPS / cpu, 1),
            "predicted_gpu_seconds": round(gpu_s, 1), "ratio": None,
            "arithmetic": (
                f"PREDICTION: the exact total-effect engine, {PREDICTED_PROMPTS} known prompts of {name}: "
                f"{macs / 1e12:.3f} TMAC per prompt (sum_l [(H+1)(L-1-l) layer + H mlp] at its published shape) x 2 x "
                f"{PREDICTED_PROMPTS} = {gflop / 1e3:.0f} TFLOP; the engine ran at {achieved:.1f} GFLOP/s here ({b['model']}, "
                f"{b['patched_prompts']} prompts patched in {b['engine_seconds']:.1f} s) = {share:.2f} of {cpu:.0f} GFLOP/s "
                f"(a float32 1024^3 matmul); at that share: {cpu_s:.0f} s on this CPU, {gpu_s:.1f} s on {GPU_NAME}; "
                f"engine only, weights ({spec['n_params'] * 4 / 1e9:.0f} GB in float32) assumed to fit"
            ),
        }  # fmt: skip
