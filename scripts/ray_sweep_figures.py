#!/usr/bin/env python3
"""The Ray executor's figures on this machine, measured, and the section of docs/scaling-out.md made from them.

    python scripts/ray_sweep_figures.py measure [--max-prompts 2]
    python scripts/ray_sweep_figures.py render

``measure`` runs one sweep (smollm2-135m, 2 relations × 2 shot counts, stages recall, patch,
claims) five times through the CLI, each in a fresh run directory:

1. serially (``--executor serial``): the reference;
2. on a local Ray cluster of 1 CPU, then 3. of 2 CPUs (one cell per CPU: 1 and 2 workers;
   the cluster is started before the clock starts): wall time, and every table compared with the
   serial run's (exactly; summaries without their timings);
4. on the 2-CPU cluster again, the driver and its workers killed (SIGKILL) as soon as the first
   cell is written; 5. the same command rerun, one worker killed while it runs a cell: cells
   written before the crash, Parquet files rewritten by the rerun (0 expected), stages reused,
   retries, and the tables compared with the serial run's.

It appends one JSON line to docs/scaling/ray_sweep.jsonl (with the date, commit, CPUs and the load
average before and after: on a shared machine every wall time is contended). ``render`` writes
the last line as a table between ``<!-- ray-figures -->`` and ``<!-- /ray-figures -->`` in
docs/scaling-out.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "scaling" / "ray_sweep.jsonl"
DOC = ROOT / "docs" / "scaling-out.md"
BEGIN, END = "<!-- ray-figures -->", "<!-- /ray-figures -->"
RELATIONS = ["country_capital_extended", "country_language"]
SHOTS = [0, 1]
STAGES = ["recall", "patch", "claims"]
SETTINGS = ["--set", "patch.n_corruptions=2", "--set", "patch.min_prompts=1"]


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not (k == "seconds" or k.endswith("_seconds"))}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def compare(a: Path, b: Path) -> dict:
    """Tables compared, and whether every one (and every summary, timings aside) is equal."""
    tables = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    same = tables == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in tables if same else []:
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel), check_exact=True)
        except AssertionError:
            same = False
    for rel in sorted(p.relative_to(a) for p in a.rglob("summary.json")):
        other = b / rel
        same = same and other.is_file() and _untimed(json.loads((a / rel).read_text())) == _untimed(json.loads(other.read_text()))
    return {"tables": len(tables), "equal": same}


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def workers() -> list[int]:
    """Ray workers running a cell on the cluster this process started (worker → raylet → this process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::run_cell") and _parent(_parent(int(entry.name))) == os.getpid():
                found.append(int(entry.name))
    return found


def finished(out: Path) -> list[Path]:
    done = []
    for path in out.glob("*/*shot/summary.json"):
        try:
            if set(STAGES) <= set(json.loads(path.read_text()).get("stages", {})) or json.loads(path.read_text()).get(
                "not_measurable"
            ):
                done.append(path.parent)
        except (OSError, ValueError):
            continue
    return done


def command(out: Path, max_prompts: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "recallscope", "run", "--max-prompts", str(max_prompts), "--relation", ",".join(RELATIONS),
        "--shots", ",".join(map(str, SHOTS)), "--stages", ",".join(STAGES), "--no-report", "--out", str(out),
        *SETTINGS, *extra,
    ]  # fmt: skip


def timed(cmd: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stderr


def wait_for(condition, timeout=1800):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError("timed out")


def on_cluster(cpus: int, fn):
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - start
    try:
        return started, fn(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def measure(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]
    record: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_before": round(load_before, 2),
        "model": "smollm2-135m",
        "relations": RELATIONS,
        "shots": SHOTS,
        "stages": STAGES,
        "max_prompts": args.max_prompts,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wall, rc, err = timed(command(tmp / "serial", args.max_prompts))
        record["serial"] = {"wall_s": round(wall, 1), "exit": rc}
        print(f"serial: {wall:.1f} s (exit {rc})", file=sys.stderr)
        for cpus in (1, 2):
            out = tmp / f"ray{cpus}"
            started, (wall, rc, err) = on_cluster(
                cpus, lambda address: timed(command(out, args.max_prompts, "--ray-address", address))
            )
            record[f"ray_{cpus}_workers"] = {"wall_s": round(wall, 1), "cluster_start_s": round(started, 1), "exit": rc,
                                            **compare(tmp / "serial", out)}  # fmt: skip
            print(f"ray, {cpus} CPUs: {record[f'ray_{cpus}_workers']}", file=sys.stderr)

        def crash_and_resume(address: str) -> dict:
            out = tmp / "crash"
            cmd = command(out, args.max_prompts, "--ray-address", address)
            first = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            done = wait_for(lambda: finished(out))
            first.kill()
            for pid in workers():
                os.kill(pid, signal.SIGKILL)
            first.wait()
            wait_for(lambda: not workers(), 120)
            kept = {p: p.stat().st_mtime_ns for cell in done for p in cell.rglob("*.parquet")}
            start = time.perf_counter()
            rerun = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            victim = wait_for(workers)[0]
            os.kill(victim, signal.SIGKILL)
            _, stderr = rerun.communicate()
            return {
                "cells_written_before_crash": len(done),
                "parquet_files_before_crash": len(kept),
                "parquet_files_rewritten_by_rerun": sum(p.stat().st_mtime_ns != t for p, t in kept.items()),
                "stages_reused_by_rerun": stderr.count("reused from"),
                "retries": stderr.count("retrying"),
                "rerun_wall_s": round(time.perf_counter() - start, 1),
                "rerun_exit": rerun.returncode,
                **compare(tmp / "serial", out),
            }

        _, record["crash_and_resume"] = on_cluster(2, crash_and_resume)
        print(f"crash and resume: {record['crash_and_resume']}", file=sys.stderr)
    record["load_after"] = round(os.getloadavg()[0], 2)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    with DATA.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def render(_args) -> None:
    r = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()][-1]
    c = r["crash_and_resume"]
    # a load average of the CPU count or more before the first run: other work shared the cores
    contended = " (the machine was shared: every wall time is contended)" if r["load_before"] >= r["cpus"] else " (idle cores)"
    lines = [
        f"`python scripts/ray_sweep_figures.py measure` on {r['date'][:10]} (commit {r['commit']}), {r['cpus']} CPUs, "
        f"load average {r['load_before']} before and {r['load_after']} after{contended}. Sweep: {r['model']}, {' and '.join(r['relations'])} × {r['shots']} shots, stages "
        f"{', '.join(r['stages'])}, --max-prompts {r['max_prompts']}. Wall times include each process's start and model "
        "load (the driver's and every task's); the Ray cluster's start is not in them.",
        "",
        "| executor | wall time | exit | tables equal to the serial run's |",
        "|---|---|---|---|",
        f"| serial | {r['serial']['wall_s']} s | {r['serial']['exit']} | (the reference) |",
    ]
    for n in (1, 2):
        x = r[f"ray_{n}_workers"]
        lines.append(
            f"| Ray, {n} worker{'s' if n > 1 else ''} (local cluster of {n} CPU{'s' if n > 1 else ''}; started in "
            f"{x['cluster_start_s']} s) | {x['wall_s']} s | {x['exit']} | {'all ' if x['equal'] else 'NOT all '}{x['tables']} |"
        )
    lines += [
        "",
        "Crash and resume (2 workers): the driver and its workers killed once the first cell was written, then the "
        "command rerun with one worker killed while it ran a cell:",
        "",
        "| cells written before the crash | their Parquet files | rewritten by the rerun | stages reused | retries | "
        "rerun exit | tables equal to the serial run's |",
        "|---|---|---|---|---|---|---|",
        f"| {c['cells_written_before_crash']} | {c['parquet_files_before_crash']} | {c['parquet_files_rewritten_by_rerun']} | "
        f"{c['stages_reused_by_rerun']} | {c['retries']} | {c['rerun_exit']} | {'all ' if c['equal'] else 'NOT all '}{c['tables']} |",
        "",
        "The serial run loads the model once and runs every cell on all the process's threads; each Ray task is a "
        "process of its own that loads the model and runs its cell on the threads of its CPUs (1 here). So 1 worker "
        "pays a model load per cell on half the threads, and 2 workers on 2 cores at best match the serial run: "
        "Ray pays off with more cores than one cell's threads can use, or more machines.",
    ]
    if r["serial"]["exit"] == 3:
        lines += [
            "",
            f"Exit 3 is the serial run's too: at {r['max_prompts']} prompts some cell lacks the known prompts a stage "
            "needs, so that stage is not measurable there (the sweep says so and goes on).",
        ]
    text = DOC.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail, encoding="utf-8")
    print(f"wrote {DOC}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--max-prompts", type=int, default=2)
    sub.add_parser("render")
    args = parser.parse_args(argv)
    (measure if args.command == "measure" else render)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
