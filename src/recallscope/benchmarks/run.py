"""The default ``recallscope run`` on the embedded model: wall seconds and peak RSS.

The run executes in a child process (a fresh interpreter, as a user would start it) into a
temporary directory; peak RSS is the child's maximum resident set size (getrusage). Targets
(SPEC.md): ≤ 300 s on 2 CPU cores, ≤ 3 GB. ``ratio`` is target seconds / measured seconds
(≥ 1 means within target).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Iterator

TARGET_SECONDS = 300.0
TARGET_RSS_GB = 3.0


def run(options) -> Iterator[dict]:
    for shots in options.shots:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "recallscope", "run", "--model", options.model, "--relation", options.relation,
                   "--shots", str(shots), "--seed", str(options.seed), "--out", os.path.join(tmp, "run"), "--json"]
            if options.max_prompts:
                cmd += ["--max-prompts", str(options.max_prompts)]
            if options.device != "cpu":
                cmd += ["--device", options.device]
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if proc.returncode != 0:
                yield {"bench": "run_default", "shots": shots, "ratio": None,
                       "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
                continue
            stages = {}
            import json

            summary = json.loads(proc.stdout)
            for name, data in summary.get("stages", {}).items():
                stages[name] = data.get("wall_seconds")
            rss_gb = peak_kb / 1024 / 1024
            yield {
                "bench": "run_default",
                "model": options.model, "relation": options.relation, "shots": shots,
                "n_prompts": summary.get("n_prompts"), "n_known": summary.get("n_known"),
                "wall_seconds": round(seconds, 1), "stage_seconds": stages,
                "peak_rss_gb": round(rss_gb, 2),
                "ratio": round(TARGET_SECONDS / seconds, 2),
                "target": f"<= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_GB} GB on 2 CPU cores",
                "target_met": bool(seconds <= TARGET_SECONDS and rss_gb <= TARGET_RSS_GB and peak_kb >= before),
                "cpu_count": os.cpu_count(),
            }
