"""One stage on shared cores: alone, beside a CPU-bound competitor, and two stages started together.

A researcher's laptop or shared server runs other work beside recallscope, or several sweeps at
once. This benchmark runs one stage (``recallscope patch`` on ``--max-prompts`` prompts, a fresh
child process each time, wall time including start-up, model load and recall) under two thread
policies, side by side in one run:

- ``before``: the policy recallscope had before issue 17: OpenMP's default wait policy (libgomp
  spins for a while before it sleeps; the child imports torch before recallscope's CLI could set
  ``OMP_WAIT_POLICY``) and ``os.cpu_count()`` intra-op threads (``--threads``).
- ``after``: the CLI as shipped: ``OMP_WAIT_POLICY=PASSIVE`` set before torch loads and the
  threads chosen from the CPUs the process may use (affinity, cgroup quota).

The children get the caller's environment without ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY``, so
the policy under test is the one that applies. The runs are interleaved (before, after, before,
after, ...) so a machine whose load drifts affects both policies alike. Per policy:

- ``contention_competitor``: ``ratio`` = seconds beside one CPU-bound competitor (a
  single-threaded NumPy matrix-product loop started by the benchmark, one core's worth of work) /
  seconds alone (the mean of two alone runs). Target ≤ 1.6.
- ``contention_pair``: ``ratio`` = seconds until both of two stages started together are done /
  the two alone runs' seconds added (running them one after the other). Target ≤ 1.1.

- ``contention_policy``: before / after seconds of each case (alone, beside the competitor, the
  pair together), from the same runs.
- ``contention_threads``: the ``after`` stage beside the competitor at one thread and at one
  more than the usable CPUs, run right after the shipped count's: ``ratio`` = the shipped count's
  seconds / the fastest other's; and the stage alone at one thread (after the first alone run),
  whose time over the shipped alone time, ``second_core_speedup``, is about the competitor ratio
  (beside a one-core competitor the stage has one core). It says whether the competitor target is missed for want of a
  better thread count or because the machine has no more to give: with one of two cores taken,
  the stage's parallel work gets about one core's worth (4/3 only if the scheduler shared every
  thread evenly; measured, the stage beside the competitor takes about its one-thread time alone).
  recallscope does not pick the count from the CPUs idle at start: on CPU the count can change
  the last digits of a run (``pipeline.compute_record``), and a run's digits must not follow
  the machine's load; ``--threads 1`` is the user's choice on a machine they know is busy.

Each line carries the 1-minute load average when its policy's first run started: measured on a
machine that other work shares, the seconds are slow; the ratios compare runs under the same load.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from typing import Iterator

from ..models.loading import usable_cpus
from ._child import ChildRun, common_args, run_cli, start_cli

COMPETITOR_TARGET = 1.6
PAIR_TARGET = 1.1

# one core's worth of CPU-bound work: a single-threaded BLAS loop
COMPETITOR = """
import numpy as np
a = np.random.default_rng(0).standard_normal((384, 384))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""

POLICIES = {
    "before": {
        "description": "OpenMP default wait policy (libgomp spins before it sleeps), os.cpu_count() threads",
        "env": {},
        "preload_torch": True,
        "threads": lambda: os.cpu_count() or 1,
    },
    "after": {
        "description": "recallscope's CLI policy: OMP_WAIT_POLICY=PASSIVE before torch loads, threads = usable CPUs",
        "env": {},
        "preload_torch": False,
        "threads": lambda: None,
    },
}


def default_relation(options) -> str:
    return "country_capital_extended"


def _env(policy: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(policy["env"])
    return env


def _max_prompts(options) -> int:
    return options.max_prompts or (16 if options.quick else 64)


def _stage_args(options, policy: dict) -> list[str]:
    args = ["patch", *common_args(_with_max_prompts(options, _max_prompts(options)), 0), "--out", "{out}", "--json"]
    threads = policy["threads"]()
    return args + (["--threads", str(threads)] if threads else [])


def _with_max_prompts(options, n: int):
    from dataclasses import replace

    return replace(options, max_prompts=n)


def _start_competitor() -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # numpy imported, the loop running
    if proc.poll() is not None:
        raise RuntimeError(f"the CPU-bound competitor exited at once (code {proc.returncode})")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _alone(args, policy) -> ChildRun:
    return run_cli(args, _env(policy), policy["preload_torch"])


def _with_competitor(args, policy) -> ChildRun:
    competitor = _start_competitor()
    try:
        return _alone(args, policy)
    finally:
        _stop(competitor)


def _pair(args, policy) -> tuple[float, list[ChildRun]]:
    start = time.perf_counter()
    children = [start_cli(args, _env(policy), policy["preload_torch"]) for _ in range(2)]
    runs = [c.wait() for c in children]
    return time.perf_counter() - start, runs


def run(options) -> Iterator[dict]:
    names = list(POLICIES)
    args = {name: _stage_args(options, POLICIES[name]) for name in names}
    load = {}
    alone: dict[str, list[ChildRun]] = {n: [] for n in names}
    competitor: dict[str, ChildRun] = {}
    pair: dict[str, tuple[float, list[ChildRun]]] = {}
    others: dict[int, ChildRun] = {}  # "after" beside the competitor at other thread counts
    one_alone: ChildRun | None = None  # "after" alone at one thread
    # interleaved: each step runs every policy in turn before the next step
    for step in ("alone", "competitor", "pair", "alone"):
        for name in names:
            policy = POLICIES[name]
            load.setdefault(name, round(os.getloadavg()[0], 2))
            if step == "alone":
                alone[name].append(_alone(args[name], policy))
                if name == "after" and one_alone is None:  # what one core gives the stage
                    one_alone = _alone(_stage_args(options, {"threads": lambda: 1}), policy)
            elif step == "competitor":
                competitor[name] = _with_competitor(args[name], policy)
                if name == "after":  # the same case at other thread counts, right after it
                    others = {
                        n: _with_competitor(_stage_args(options, {"threads": lambda n=n: n}), policy)
                        for n in _other_thread_counts()
                    }
            else:
                pair[name] = _pair(args[name], policy)
    for name in names:
        policy = POLICIES[name]
        failed = [r for r in (*alone[name], competitor[name], *pair[name][1]) if r.returncode != 0]
        common = {
            "policy": name,
            "policy_detail": policy["description"],
            "stage": "patch",
            "max_prompts": _max_prompts(options),
            "command": shlex.join(["recallscope", *(a for a in args[name] if a not in ("--out", "{out}"))]),
            "model": options.model,
            "relation": options.relation,
            "cpus": len(os.sched_getaffinity(0)),
            "load_1m_at_start": load[name],
        }
        if failed:
            for bench in ("contention_competitor", "contention_pair"):
                yield {"bench": bench, **common, "ratio": None, "error": failed[0].error()}
            continue
        alone_s = [r.seconds for r in alone[name]]
        mean_alone = sum(alone_s) / len(alone_s)
        ratio = competitor[name].seconds / mean_alone
        yield {
            "bench": "contention_competitor",
            **common,
            "alone_seconds": [round(s, 1) for s in alone_s],
            "with_competitor_seconds": round(competitor[name].seconds, 1),
            "competitor": "one single-threaded NumPy matrix-product loop (OPENBLAS_NUM_THREADS=1), started 1 s before the stage",
            "ratio": round(ratio, 2),
            "ratio_is": "with competitor / mean alone",
            "target": f"<= {COMPETITOR_TARGET}",
            "target_met": bool(ratio <= COMPETITOR_TARGET),
            "peak_rss_gb": _peak([*alone[name], competitor[name]]),
        }
        together_s, runs = pair[name]
        sequential = sum(alone_s)
        ratio = together_s / sequential
        yield {
            "bench": "contention_pair",
            **common,
            "sequential_seconds": round(sequential, 1),
            "sequential_is": "the two alone runs, one after the other",
            "together_seconds": round(together_s, 1),
            "together_each_seconds": [round(r.seconds, 1) for r in runs],
            "ratio": round(ratio, 2),
            "ratio_is": "both started together, until both are done / one after the other",
            "target": f"<= {PAIR_TARGET}",
            "target_met": bool(ratio <= PAIR_TARGET),
            "peak_rss_gb": _peak(runs),
        }
    if (
        "before" in POLICIES
        and "after" in POLICIES
        and not any(r.returncode for n in names for r in (*alone[n], competitor[n], *pair[n][1]))
    ):
        yield _policy_line(alone, competitor, pair, load)
    if "after" in POLICIES:
        yield _threads_line(competitor["after"], others, load["after"], alone["after"], one_alone)


def _other_thread_counts() -> list[int]:
    """Thread counts beside the shipped one (the usable CPUs): one thread, and one more than the CPUs."""
    usable = usable_cpus()
    return sorted({1, usable + 1} - {usable})


def _threads_line(shipped: ChildRun, others: dict[int, ChildRun], load: float, alone: list[ChildRun],
                  one_alone: ChildRun | None) -> dict:
    """Beside the competitor, the shipped thread count against the others (``ratio`` = shipped
    seconds / the fastest other's; ≤ 1: no other count does better), and what bounds the
    competitor ratio: beside a one-core competitor on two cores the stage has one core, so its time
    is about its one-thread time alone (``one_thread_alone_seconds``), and the competitor ratio is
    about the stage's own speed-up from its second core (``second_core_speedup`` = one-thread /
    shipped seconds alone). A stage that uses its second core well cannot stay under 1.6× there."""
    runs = {usable_cpus(): shipped, **others}
    failed = [r for r in (*runs.values(), *alone, *([one_alone] if one_alone else [])) if r.returncode != 0]
    line = {
        "bench": "contention_threads",
        "load_1m_at_start": load,
        "cpus": len(os.sched_getaffinity(0)),
        "shipped_threads": usable_cpus(),
    }
    if failed:
        return {**line, "ratio": None, "error": failed[0].error()}
    best = min(others.values(), key=lambda r: r.seconds) if others else shipped
    mean_alone = sum(r.seconds for r in alone) / len(alone)
    bound = {}
    if one_alone is not None:
        bound = {
            "one_thread_alone_seconds": round(one_alone.seconds, 1),
            "shipped_alone_seconds": round(mean_alone, 1),
            "second_core_speedup": round(one_alone.seconds / mean_alone, 2),
            "second_core_speedup_is": "one thread alone / shipped threads alone (mean of the two alone runs)",
        }
    return {
        **line,
        "with_competitor_seconds": {str(n): round(r.seconds, 1) for n, r in sorted(runs.items())},
        **bound,
        "ratio": round(shipped.seconds / best.seconds, 2),
        "ratio_is": "shipped threads / the fastest other thread count, both beside one competitor (<= 1: none does better)",
    }


def _policy_line(alone, competitor, pair, load) -> dict:
    """before / after seconds of each case: what the thread policy changed, measured side by side."""
    cases = {
        "alone": (sum(r.seconds for r in alone["before"]), sum(r.seconds for r in alone["after"])),
        "with_competitor": (competitor["before"].seconds, competitor["after"].seconds),
        "pair_together": (pair["before"][0], pair["after"][0]),
    }
    ratios = {case: round(b / a, 2) for case, (b, a) in cases.items()}
    return {
        "bench": "contention_policy",
        "before_seconds": {case: round(b, 1) for case, (b, _) in cases.items()},
        "after_seconds": {case: round(a, 1) for case, (_, a) in cases.items()},
        "ratios": ratios,
        "ratio": ratios["with_competitor"],
        "ratio_is": "before / after seconds beside one competitor (ratios: every case; > 1: the policy made it faster)",
        "load_1m_at_start": load["before"],
        "cpus": len(os.sched_getaffinity(0)),
    }


def _peak(runs: list[ChildRun]) -> float | None:
    peaks = [r.peak_rss_gb for r in runs if r.peak_rss_gb is not None]
    return round(max(peaks), 2) if peaks else None
