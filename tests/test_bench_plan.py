"""The benchmarks' plumbing: what `recallscope bench` runs, the contention and scaling arithmetic (without a
model, except one slow test where a child process reads smollm2-135m's facts)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recallscope import benchmarks
from recallscope.benchmarks import contention, scaling
from recallscope.benchmarks._child import ChildRun


def test_all_benchmarks_plan():
    names = benchmarks.names()
    assert {"load", "patch", "decompose", "trace", "contention", "run", "scaling"} <= set(names)
    plan = benchmarks.plan(None, benchmarks.BenchOptions(quick=True))
    assert [(n, o.mode) for n, o in plan] == [
        ("load", "total"),
        ("patch", "total"),
        ("patch", "path"),
        ("decompose", "total"),
        ("trace", "total"),
        ("contention", "total"),
        ("run", "total"),
    ]
    assert all(o.quick for _, o in plan)
    assert "scaling" in benchmarks.OPT_IN and "scaling" not in [n for n, _ in plan]
    assert "surgery" in benchmarks.OPT_IN and "surgery" not in [n for n, _ in plan]
    assert benchmarks.plan(["scaling"], benchmarks.BenchOptions()) == [("scaling", benchmarks.BenchOptions())]


def _child(seconds: float, rss: float = 1.0) -> ChildRun:
    return ChildRun(0, "{}", "", seconds, rss)


def test_contention_ratios_and_interleaving(monkeypatch):
    calls = []
    alone = {"before": iter([20.0, 22.0]), "after": iter([10.0, 12.0])}

    def fake_alone(args, policy):
        name = "before" if policy["preload_torch"] else "after"
        if name == "after" and "--threads" in args:  # one thread alone
            calls.append(("alone", f"after, {args[args.index('--threads') + 1]} threads"))
            return _child(17.6)
        calls.append(("alone", name))
        return _child(next(alone[name]))

    def fake_competitor(args, policy):
        name = "before" if policy["preload_torch"] else "after"
        threads = args[args.index("--threads") + 1] if "--threads" in args else None
        if name == "after" and threads:  # the same case at another thread count
            calls.append(("competitor", f"after, {threads} threads"))
            return _child({"1": 18.0, "3": 15.0}[threads])
        calls.append(("competitor", name))
        return _child({"before": 63.0, "after": 16.5}[name], 1.5)

    def fake_pair(args, policy):
        name = "before" if policy["preload_torch"] else "after"
        calls.append(("pair", name))
        together = {"before": 100.0, "after": 23.1}[name]
        return together, [_child(together - 1), _child(together, 1.25)]

    monkeypatch.setattr(contention, "_alone", fake_alone)
    monkeypatch.setattr(contention, "_with_competitor", fake_competitor)
    monkeypatch.setattr(contention, "_pair", fake_pair)
    monkeypatch.setattr(contention, "usable_cpus", lambda: 2)
    lines = list(contention.run(benchmarks.BenchOptions(quick=True, relation="country_capital_extended")))
    # every step runs both policies in turn: the machine's drift touches both alike
    assert calls == [
        ("alone", "before"),
        ("alone", "after"),
        ("alone", "after, 1 threads"),
        ("competitor", "before"),
        ("competitor", "after"),
        ("competitor", "after, 1 threads"),
        ("competitor", "after, 3 threads"),
        ("pair", "before"),
        ("pair", "after"),
        ("alone", "before"),
        ("alone", "after"),
    ]
    by = {(x["bench"], x.get("policy")): x for x in lines}
    assert by["contention_competitor", "before"]["ratio"] == 3.0  # 63 / mean(20, 22)
    assert by["contention_competitor", "before"]["target_met"] is False
    assert by["contention_competitor", "after"]["ratio"] == 1.5 and by["contention_competitor", "after"]["target_met"]
    assert by["contention_pair", "before"]["ratio"] == round(100 / 42, 2)
    assert by["contention_pair", "after"]["sequential_seconds"] == 22.0
    assert by["contention_pair", "after"]["ratio"] == 1.05 and by["contention_pair", "after"]["target_met"]
    assert by["contention_pair", "after"]["peak_rss_gb"] == 1.25
    assert by["contention_competitor", "after"]["max_prompts"] == 16
    assert "--threads" in by["contention_competitor", "before"]["command"]
    assert "--threads" not in by["contention_competitor", "after"]["command"]
    (policy,) = [x for x in lines if x["bench"] == "contention_policy"]
    assert policy["ratios"] == {
        "alone": round(42 / 22, 2),
        "with_competitor": round(63 / 16.5, 2),
        "pair_together": round(100 / 23.1, 2),
    }
    assert policy["ratio"] == policy["ratios"]["with_competitor"]
    # beside the competitor, the shipped count (2) against 1 and 3 threads: 3 was faster here
    (threads,) = [x for x in lines if x["bench"] == "contention_threads"]
    assert threads["with_competitor_seconds"] == {"1": 18.0, "2": 16.5, "3": 15.0}
    assert threads["shipped_threads"] == 2 and threads["ratio"] == round(16.5 / 15.0, 2)
    # the bound: one thread alone against the shipped count alone (mean of 10 and 12)
    assert threads["one_thread_alone_seconds"] == 17.6 and threads["second_core_speedup"] == round(17.6 / 11, 2)


def test_contention_child_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    for policy in contention.POLICIES.values():
        env = contention._env(policy)
        assert "OMP_NUM_THREADS" not in env and "OMP_WAIT_POLICY" not in env  # the policy under test applies


def test_scaling_fit_recovers_a_power_law():
    x = np.array([25.0, 50, 100, 200])
    slope, r2 = scaling._fit(x, 3.0 * x**1.5)
    assert math.isclose(slope, 1.5, abs_tol=1e-12) and math.isclose(r2, 1.0, abs_tol=1e-12)


def test_scaling_points_and_caps():
    options = benchmarks.BenchOptions(shots=scaling.SHOTS)
    points = scaling._points("patch_total", options)
    assert [p for p in points if p[0] == "prompts"] == [("prompts", n, 0, "smollm2-135m") for n in (25, 50, 100, 200)]
    assert [p[1:3] for p in points if p[0] == "shots"] == [(50, k) for k in (0, 1, 3, 5)]
    assert [p[3] for p in points if p[0] == "model"] == ["smollm2-135m", "gemma3-270m"]
    capped = scaling._points("trace", benchmarks.BenchOptions(shots=(0, 3), max_prompts=5, models=("smollm2-135m",)))
    assert [p[1] for p in capped if p[0] == "prompts"] == [2, 4] and {p[1] for p in capped if p[0] != "prompts"} == {4}


def test_scaling_fits_and_prediction_arithmetic(monkeypatch):
    lines = [
        {
            "what": "patch_total",
            "axis": "model",
            "seconds": 10.0,
            "n_params": 1e8,
            "n_prompts": 50,
            "shots": 0,
            "model": "a",
            "peak_rss_gb": 1.0,
        },
        {
            "what": "patch_total",
            "axis": "model",
            "seconds": 40.0,
            "n_params": 2e8,
            "n_prompts": 50,
            "shots": 0,
            "model": "b",
            "peak_rss_gb": 2.0,
        },
    ]
    (fit,) = scaling._fits("patch_total", lines)
    assert fit["axis"] == "model" and fit["exponent_seconds"] == 2.0 and fit["exponent_peak_rss"] == 1.0
    monkeypatch.setattr(scaling, "_cpu_matmul_gflops", lambda: 195.0)
    # two sizes: a line through two points cannot be judged, so nothing is predicted
    (two,) = scaling._predictions(lines)
    assert two["ratio"] is None and "2 model sizes" in two["skipped"] and "predicted_cpu_seconds" not in two
    lines.append({**lines[1], "seconds": 160.0, "n_params": 4e8, "model": "c", "peak_rss_gb": 4.0})
    preds = {p["model"]: p for p in scaling._predictions(lines)}
    llama = preds["llama-2-7b"]
    expected_cpu = 160.0 * (6.738e9 / 4e8) ** 2.0
    assert llama["prediction"] is True and llama["predicted_cpu_seconds"] == round(expected_cpu, 1)
    assert llama["gpu_speedup_assumed"] == 100.0 and llama["predicted_gpu_seconds"] == round(expected_cpu / 100, 1)
    assert llama["arithmetic"].startswith("PREDICTION")


def test_scaling_refuses_an_unknown_stage():
    from recallscope.errors import UserError

    with pytest.raises(UserError, match="patch_total"):
        list(scaling.run(benchmarks.BenchOptions(stages=("bogus",), relation="country_capital_extended")))


def test_no_benchmark_module_shadows_an_attribute_of_the_package():
    """Importing ``recallscope.benchmarks.<name>`` binds ``<name>`` on the package: a function of
    that name (``benchmarks.run`` and the module ``benchmarks/run.py``) became a module mid-suite."""
    import importlib
    import types

    from recallscope import benchmarks

    own = {k for k, v in vars(benchmarks).items() if not isinstance(v, types.ModuleType) and not k.startswith("_")}
    assert not own & set(benchmarks.names())
    for name in benchmarks.names():
        importlib.import_module(f"recallscope.benchmarks.{name}")
    assert callable(benchmarks.measure) and not isinstance(benchmarks.measure, types.ModuleType)


def test_scaling_flop_predictions_from_the_engines_measured_share():
    """GPT-2 XL's engine count by hand: layer = d(H+2K)dh + H dh d + 2 d d_mlp = 30.72M MAC; sum over the
    48 layers of (H+1)(L-1-l) = 26 * 1128 = 29328 layer evaluations, plus H * mlp per layer."""
    gpt2 = scaling.PREDICTED["gpt2-xl"]["shape"]
    from types import SimpleNamespace

    from recallscope.benchmarks.run import exact_engine_macs

    assert exact_engine_macs(SimpleNamespace(**gpt2)) == 29328 * 30_720_000 + 48 * 25 * 20_480_000
    smollm2 = {"n_layers": 30, "n_heads": 9, "n_kv_heads": 3, "d_model": 576, "d_head": 64, "d_mlp": 1536, "gated_mlp": True}
    macs = exact_engine_macs(SimpleNamespace(**smollm2))
    line = {"what": "patch_total", "model": "smollm2-135m", "engine_seconds": 40.0, "patched_prompts": 80, "shape": smollm2}
    smaller = {**line, "patched_prompts": 20, "engine_seconds": 1.0}  # the basis is the point with the most prompts
    preds = {p["model"]: p for p in scaling.flop_predictions([smaller, line], cpu_gflops=100.0)}
    share = 2 * macs * 80 / 40.0 / 1e9 / 100.0
    assert preds["gpt2-xl"]["engine_share_of_matmul"] == round(share, 3)
    expected_gpu = 2 * exact_engine_macs(SimpleNamespace(**gpt2)) * 100 / 1e9 / (scaling.GPU_FP32_GFLOPS * share)
    assert preds["gpt2-xl"]["predicted_gpu_seconds"] == round(expected_gpu, 1)
    assert preds["gpt2-xl"]["predicted_cpu_seconds"] == round(expected_gpu * scaling.GPU_FP32_GFLOPS / 100.0, 1)
    assert all(p["prediction"] is True and p["arithmetic"].startswith("PREDICTION") for p in preds.values())
    assert list(scaling.flop_predictions([{"what": "trace", "seconds": 3.0}], cpu_gflops=100.0)) == []


@pytest.mark.slow
def test_scaling_reads_model_facts_in_a_child_process():
    """The scaling bench's own process loads no model (its peak RSS stays below its children's): a
    child reports the parameters, shape and mean prompt tokens of every point."""
    cache: dict = {}
    facts = scaling._model_facts("smollm2-135m", "paper_country_capital", 0, [(0, 4), (1, 4)], cache)
    assert facts["n_params"] == 134_515_008 and facts["layers"] == 30 and facts["heads"] == 9
    assert facts["shape"]["n_kv_heads"] == 3 and facts["shape"]["d_mlp"] == 1536
    assert 8 < facts["tokens"]["0,4"] < facts["tokens"]["1,4"] < 40
    assert scaling._model_facts("smollm2-135m", "paper_country_capital", 0, [], cache) is facts  # once per model
    with pytest.raises(RuntimeError):
        scaling._model_facts("no-such-model", "paper_country_capital", 0, [(0, 4)], {})


def test_each_benchmark_line_carries_its_own_process_peak(monkeypatch, capsys):
    """`recallscope bench` gives freed memory back and resets the high-water mark between benchmarks,
    so a benchmark that held 300 MiB does not raise the next one's bench_process_peak_rss_mb."""
    import json

    from recallscope import cli

    def fake_measure(name, options):
        if name == "load":
            held = b"\x01" * (300 * 2**20)  # touched: resident
            yield {"bench": "holds", "ratio": None}
            del held
        else:
            yield {"bench": f"light_{name}", "ratio": None}

    monkeypatch.setattr(benchmarks, "measure", fake_measure)
    cli.main(["bench", "load", "decompose", "--json"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["bench"] for x in lines] == ["holds", "light_decompose"]
    heavy, light = (x["bench_process_peak_rss_mb"] for x in lines)
    assert heavy - light >= 250, (heavy, light)


def test_trim_heap_returns_freed_heap_memory():
    """glibc keeps freed small blocks between live ones; malloc_trim gives their pages back."""
    from recallscope.benchmarks import _child

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS:"))

    blocks = [b"\x01" * (64 * 1024 - 64) for _ in range(4000)]  # ~250 MiB of heap blocks, below the mmap threshold
    kept = blocks[::16]  # one in 16 stays: the heap cannot shrink from its top
    del blocks
    before = rss_mb()
    assert _child.trim_heap()
    assert before - rss_mb() >= 150
    assert len(kept) == 250


def test_transformerlens_line_drops_the_module_it_made_the_model_build():
    """An embedded model keeps no Hugging Face module; the TransformerLens line builds one to wrap,
    and it must not outlive the line (kept, it sat beside the next shot count's float64 checks:
    3244 MiB at 3 shots instead of 2549). A model that came with its module keeps it."""
    from types import SimpleNamespace

    import torch

    from recallscope.benchmarks import patch as bench_patch

    def uses_module(model):  # as Model.hf_model does on first use
        model.hf = model.hf_loader()
        return {"bench": "patch_exact_vs_transformerlens"}

    embedded = SimpleNamespace(hf=None, hf_loader=lambda: torch.nn.Linear(2, 2))
    assert bench_patch._without_new_module(embedded, lambda: uses_module(embedded))["bench"]
    assert embedded.hf is None
    own = torch.nn.Linear(2, 2)
    loaded = SimpleNamespace(hf=own, hf_loader=None)
    bench_patch._without_new_module(loaded, lambda: {"bench": "x"})
    assert loaded.hf is own

    def fails():
        embedded.hf = embedded.hf_loader()
        raise RuntimeError("TransformerLens failed")

    with pytest.raises(RuntimeError):
        bench_patch._without_new_module(embedded, fails)
    assert embedded.hf is None


def test_children_started_together_are_timed_at_their_own_exit(monkeypatch):
    """Waited for in start order, a child that exits first must not be timed when the other one is
    done (a pair of contention runs both read 64.8 s)."""
    from recallscope.benchmarks import _child

    monkeypatch.setattr(_child, "_WRAPPER", "import sys, time\ntime.sleep(float(sys.argv[3]))")
    slow, fast = _child.start_cli(["1.5"]), _child.start_cli(["0.1"])
    slow_run, fast_run = slow.wait(), fast.wait()
    assert slow_run.returncode == fast_run.returncode == 0
    assert slow_run.seconds >= 1.5 and fast_run.seconds < 1.0, (slow_run.seconds, fast_run.seconds)
