"""Run a recallscope command in a child process: its wall time and its own peak RSS.

The peak is the child's ``VmHWM`` (the high-water mark of its own address space, read from
/proc when it exits). ``getrusage``/``wait4`` would not do: Linux carries the forking parent's
high-water mark into the child's ``ru_maxrss`` at exec, so a benchmark process holding a few GB
would be charged to the command it starts.

:func:`start_cli` starts one without waiting (several at once: the contention benchmark), with
environment overrides and, for the "before" thread policy, torch imported before recallscope's
CLI sets its OpenMP wait policy (libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
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
if sys.argv[2] == "preload-torch":
    import torch  # the OpenMP runtime starts with the environment as given, before the CLI sets its policy
sys.argv = ["recallscope", *sys.argv[3:]]
from recallscope.cli import main
main()
"""


class Child:
    """A started ``recallscope`` child process; :meth:`wait` gives its :class:`ChildRun`."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, preload_torch: bool = False):
        self._tmp = tempfile.TemporaryDirectory()
        self._status = os.path.join(self._tmp.name, "status")
        argv = [a.replace("{out}", os.path.join(self._tmp.name, "out")) for a in args]
        cmd = [sys.executable, "-c", _WRAPPER, self._status, "preload-torch" if preload_torch else "-", *argv]
        # output to files, not pipes: a child started beside others never blocks on a full pipe
        self._out = open(os.path.join(self._tmp.name, "stdout"), "w+")
        self._err = open(os.path.join(self._tmp.name, "stderr"), "w+")
        self._start = time.perf_counter()
        self._proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, text=True, env=env)
        # The exit is timed when it happens, not when wait() is called: children started together
        # are waited for one after the other, and one that finished first was timed as late as the
        # other (two runs started together both read 64.8 s).
        self._exited: float | None = None
        self._watch = threading.Thread(target=self._time_exit, daemon=True)
        self._watch.start()

    def _time_exit(self) -> None:
        self._proc.wait()
        self._exited = time.perf_counter()

    def wait(self) -> ChildRun:
        self._watch.join()
        returncode = self._proc.wait()
        seconds = (self._exited or time.perf_counter()) - self._start
        try:
            texts = []
            for f in (self._out, self._err):
                f.seek(0)
                texts.append(f.read())
                f.close()
            return ChildRun(returncode, texts[0], texts[1], seconds, _vm_hwm_gb(self._status))
        finally:
            self._tmp.cleanup()

    def kill(self) -> None:
        """Stop the child (used when a benchmark is interrupted)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self.wait()


def start_cli(args: list[str], env: dict[str, str] | None = None, preload_torch: bool = False) -> Child:
    """Start ``recallscope <args>`` in a fresh interpreter (``{out}`` in args → its own temporary directory)."""
    return Child(args, env, preload_torch)


def run_cli(args: list[str], env: dict[str, str] | None = None, preload_torch: bool = False) -> ChildRun:
    """``recallscope <args>`` in a fresh interpreter, waited for."""
    return start_cli(args, env, preload_torch).wait()


def trim_heap() -> bool:
    """Collect garbage (objects in reference cycles: a loaded model's tokenizer and modules hold some),
    then give the memory this process has freed back to the operating system (glibc's
    ``malloc_trim(0)``); False where the C library has no such call (not glibc).

    glibc keeps freed blocks below its mmap threshold on its heap, and that threshold rises (up to
    32 MiB) each time a larger block is freed, so after one benchmark has freed a model copy and its
    activations the process may stay gigabytes above what it holds: measured with ``recallscope bench
    --quick`` on smollm2-135m, 2335 MiB resident after the total-mode patch benchmark, 503 MiB after a
    trim (without ``gc.collect`` first the quick set's decompose benchmark still peaked at 2805 MiB).
    The benchmarks trim between benchmarks and around their float64 checks, outside any timed section,
    so one benchmark's freed memory is not counted in the next one's peak."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is None:
        return False
    trim(0)
    return True


def reset_own_peak() -> bool:
    """Reset this process's resident-set high-water mark (``VmHWM``) by writing 5 to
    /proc/self/clear_refs (Linux >= 4.0); False where that is not possible. Lets one process that runs
    several benchmarks report each one's own peak (:func:`own_peak_mb`)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def own_peak_mb() -> float | None:
    """This process's ``VmHWM`` in MiB (since it started or since :func:`reset_own_peak`); None without /proc."""
    gb = _vm_hwm_gb("/proc/self/status")
    return None if gb is None else round(gb * 1024, 1)


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
