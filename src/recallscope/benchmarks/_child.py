"""Run a recallscope command in a child process: its wall time and its own peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_gb: float  # this child's maximum resident set size (wait4), not the maximum over all children

    def error(self) -> str:
        return (self.stderr.strip().splitlines() or [f"exit {self.returncode}"])[-1]


def run_cli(args: list[str]) -> ChildRun:
    """``python -m recallscope <args>`` in a fresh interpreter (``{out}`` in args → a temporary directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "recallscope", *(a.replace("{out}", os.path.join(tmp, "out")) for a in args)]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            return ChildRun(proc.returncode, out.read(), err.read(), seconds, usage.ru_maxrss / 1024 / 1024)


def common_args(options, shots: int) -> list[str]:
    args = ["--model", options.model, "--relation", options.relation, "--shots", str(shots), "--seed", str(options.seed)]
    if options.max_prompts:
        args += ["--max-prompts", str(options.max_prompts)]
    if options.device != "cpu":
        args += ["--device", options.device]
    return args
