"""Run a recallscope command in a child process: its wall time and its own peak RSS.

The peak is the child's ``VmHWM`` (the high-water mark of its own address space, read from
/proc when it exits). ``getrusage``/``wait4`` would not do: Linux carries the forking parent's
high-water mark into the child's ``ru_maxrss`` at exec, so a benchmark process holding a few GB
would be charged to the command it starts.
"""

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
    peak_rss_gb: float | None  # the child's own VmHWM; None where /proc is not available

    def error(self) -> str:
        return (self.stderr.strip().splitlines() or [f"exit {self.returncode}"])[-1]


_WRAPPER = """
import atexit, sys

def _write_status(path=sys.argv[1]):
    try:
        with open("/proc/self/status") as src, open(path, "w") as dst:
            dst.write(src.read())
    except OSError:
        pass

atexit.register(_write_status)
sys.argv = ["recallscope", *sys.argv[2:]]
from recallscope.cli import main
main()
"""


def run_cli(args: list[str]) -> ChildRun:
    """``recallscope <args>`` in a fresh interpreter (``{out}`` in args → a temporary directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        status_file = os.path.join(tmp, "status")
        cmd = [sys.executable, "-c", _WRAPPER, status_file, *(a.replace("{out}", os.path.join(tmp, "out")) for a in args)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        return ChildRun(proc.returncode, proc.stdout, proc.stderr, seconds, _vm_hwm_gb(status_file))


def _vm_hwm_gb(path: str) -> float | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024 / 1024  # kB
    except OSError:
        pass
    return None


def common_args(options, shots: int) -> list[str]:
    args = ["--model", options.model, "--relation", options.relation, "--shots", str(shots), "--seed", str(options.seed)]
    if options.max_prompts:
        args += ["--max-prompts", str(options.max_prompts)]
    if options.device != "cpu":
        args += ["--device", options.device]
    return args
