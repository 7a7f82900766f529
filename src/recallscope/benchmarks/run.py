"""The default ``recallscope run`` on the embedded model: wall seconds and peak RSS.

The run executes in a child process (a fresh interpreter, as a user would start it) into a
temporary directory; peak RSS is that child's own high-water mark (``_child``). Targets
(SPEC.md): ≤ 300 s on 2 CPU cores, ≤ 3 GB. ``ratio`` is target seconds / measured seconds
(≥ 1 means within target).
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from ._child import common_args, run_cli

TARGET_SECONDS = 300.0
TARGET_RSS_GB = 3.0


def run(options) -> Iterator[dict]:
    for shots in options.shots:
        child = run_cli(["run", *common_args(options, shots), "--out", "{out}", "--json"])
        if child.returncode != 0:
            yield {"bench": "run_default", "shots": shots, "ratio": None, "error": child.error()}
            continue
        summary = json.loads(child.stdout)
        stages = {name: data.get("wall_seconds") for name, data in summary.get("stages", {}).items()}
        yield {
            "bench": "run_default",
            "model": options.model, "relation": options.relation, "shots": shots,
            "n_prompts": summary.get("n_prompts"), "n_known": summary.get("n_known"),
            "wall_seconds": round(child.seconds, 1), "stage_seconds": stages,
            "peak_rss_gb": None if child.peak_rss_gb is None else round(child.peak_rss_gb, 2),
            "ratio": round(TARGET_SECONDS / child.seconds, 2),
            "target": f"<= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_GB} GB on 2 CPU cores",
            "target_met": bool(child.seconds <= TARGET_SECONDS and (child.peak_rss_gb or 0.0) <= TARGET_RSS_GB),
            "cpu_count": os.cpu_count(),
        }
