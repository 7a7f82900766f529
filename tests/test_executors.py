"""Sweeps on other executors: each cell as one Ray task, equal to the serial run, resumable after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from recallscope import executors
from recallscope.models import loading
from recallscope.errors import EXIT_INCOMPLETE, EXIT_USER, UserError
from recallscope.pipeline import RunConfig, execute_many
from recallscope.rundir import dumps
from test_pipeline import build_tiny_gpt2

RELATIONS = ["country_capital_extended", "country_language"]
SHOTS = [0, 1]
TARGETS = ["recall", "patch", "claims"]  # claims: the few-shot claim across cells reads every cell's patch table
SETTINGS = {"patch.n_corruptions": 2, "patch.min_prompts": 1}


def _untimed(value):
    """A summary without its timings (the only thing two equal runs may differ in), as JSON reads it (NaN: None)."""
    if not isinstance(value, (dict, list)):
        return json.loads(dumps(value))
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not (k == "seconds" or k.endswith("_seconds"))}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def assert_same_run(a: Path, b: Path) -> int:
    """Every table of run directory ``a`` equals ``b``'s, and so do the summaries (timings aside); the number of tables."""
    tables_a = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert tables_a == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in tables_a:
        pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel), check_exact=True)
    for rel in sorted(p.relative_to(a) for p in a.rglob("summary.json")):
        assert _untimed(json.loads((a / rel).read_text())) == _untimed(json.loads((b / rel).read_text())), rel
    return len(tables_a)


# ----------------------------------------------------------------------------- without Ray
def test_parse_executor():
    assert executors.parse_executor("serial", None) is None
    assert executors.parse_executor("ray", None) == ""  # a new local cluster
    assert executors.parse_executor("ray", "auto") == "auto"
    assert executors.parse_executor("serial", "10.0.0.1:6379") == "10.0.0.1:6379"  # --ray-address alone asks for Ray
    assert executors.parse_executor("ray://head:10001", None) == "ray://head:10001"
    with pytest.raises(UserError, match="two clusters"):
        executors.parse_executor("ray://head:10001", "auto")
    with pytest.raises(UserError, match="serial, ray or ray://"):
        executors.parse_executor("dask", None)


def test_a_node_that_cannot_see_the_run_directory_fails_in_one_line(tmp_path):
    (tmp_path / executors.TOKEN_FILE).write_text("abc\n")
    executors.check_shared(str(tmp_path), "abc")
    with pytest.raises(UserError, match=r"reads another run's .*filesystem every node shares"):
        executors.check_shared(str(tmp_path), "xyz")
    with pytest.raises(UserError, match=r"cannot read .*nowhere.*filesystem every node shares"):
        executors.check_shared(str(tmp_path / "nowhere"), "abc")


def test_executor_ray_without_ray_names_the_extra(tmp_path):
    code = "import sys; sys.modules['ray'] = None; from recallscope.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--executor", "ray", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == EXIT_USER, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines == ["recallscope: error: --executor ray needs Ray, which is not installed: pip install 'recallscope[ray]'"]
    assert not (tmp_path / "r").exists()  # refused before anything ran


@pytest.fixture(scope="module")
def tiny_gpt2_long(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2_256"), 256)


class _Reversed:
    """An executor that runs the cells in this process, last first: the driver must not depend on the order."""

    def __init__(self):
        self.cells = []

    def run(self, cells, root, log):
        self.cells = list(cells)
        return [c(log=log) for c in cells[::-1]][::-1]


def test_an_executor_gets_every_cell_and_the_sweep_equals_the_serial_one(tiny_gpt2_long, tmp_path):
    base = RunConfig(model=str(tiny_gpt2_long), max_prompts=3)
    overrides = {**SETTINGS, "recall.known_top_k": 100000}
    serial = execute_many(base, RELATIONS, SHOTS, TARGETS, out=str(tmp_path / "serial"), overrides=overrides)
    fake = _Reversed()
    other = execute_many(base, RELATIONS, SHOTS, TARGETS, out=str(tmp_path / "other"), overrides=overrides, executor=fake)
    assert [(c.run.relation, c.run.shots) for c in fake.cells] == [(r, k) for r in RELATIONS for k in SHOTS]
    assert _untimed(other) == _untimed(serial) and len(other["claims"]) == len(RELATIONS)  # the few-shot claim per relation
    assert assert_same_run(tmp_path / "serial", tmp_path / "other") >= 4 * 4  # recall, patch (2+ tables), claims per cell


# ----------------------------------------------------------------------------- a real local Ray cluster
def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _ray_workers(task: str = "run_cell") -> list[int]:
    """PIDs of the Ray worker processes running ``task`` (Ray titles them ``ray::<task>``) of the cluster
    this process started (a worker's parent is the raylet, whose parent is this process): no other Ray
    on the machine is touched."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{task}") and _parent(_parent(int(entry.name))) == os.getpid():
                found.append(int(entry.name))
    return found


def _finished_cells(out: Path) -> list[Path]:
    """Sub-run directories whose summary lists every target stage."""
    done = []
    for path in out.glob("*/*shot/summary.json"):
        try:
            if set(TARGETS) <= set(json.loads(path.read_text()).get("stages", {})):
                done.append(path.parent)
        except (OSError, ValueError):
            continue
    return done


def _wait(condition, timeout: float, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before the awaited moment:\n{proc.stderr.read()}")
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_a_ray_sweep_equals_the_serial_one_and_resumes_after_a_crash(tmp_path, monkeypatch):
    import ray

    serial = tmp_path / "serial"
    settings = [x for k, v in SETTINGS.items() for x in ("--set", f"{k}={v}")]
    threads = torch.get_num_threads()
    # 1 thread, as each Ray task (1 CPU): the same reductions, so the same floats bit for bit. Chosen with
    # set_threads, not torch's own call: the model load resets a count nobody chose to the usable CPUs.
    monkeypatch.setattr(loading, "_THREADS_CHOSEN", [])
    loading.set_threads(1)
    try:
        execute_many(RunConfig(max_prompts=2), RELATIONS, SHOTS, TARGETS, out=str(serial), overrides=SETTINGS, progress=False)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "ray"
        command = [
            sys.executable, "-m", "recallscope", "run", "--ray-address", address, "--max-prompts", "2",
            "--relation", ",".join(RELATIONS), "--shots", ",".join(map(str, SHOTS)), "--stages", ",".join(TARGETS),
            "--no-report", "--out", str(out), *settings,
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        # 1. The driver and its workers die once the first cell is written (a crashed sweep).
        first = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        done = _wait(lambda: _finished_cells(out), 900, first)
        first.kill()
        for pid in _ray_workers():
            os.kill(pid, signal.SIGKILL)
        first.wait()
        _wait(lambda: not _ray_workers(), 120)  # the crashed sweep's workers are gone
        kept = {p: p.stat().st_mtime_ns for cell in done for p in cell.rglob("*.parquet")}
        assert len(done) < 4 and kept
        # 2. The rerun: a worker is killed while it runs a cell; the driver retries that cell once.
        rerun = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        victim = _wait(_ray_workers, 900, rerun)[0]
        os.kill(victim, signal.SIGKILL)
        _, stderr = rerun.communicate(timeout=900)
        # 2 prompts of country_language at 0 shots: none known, so that cell's patch is not measurable (exit 3), as serially
        expected = json.loads((serial / "summary.json").read_text()).get("exit_code", 0)
        assert rerun.returncode == expected == EXIT_INCOMPLETE, stderr
        assert "failed" in stderr and "retrying" in stderr, stderr
        assert stderr.count("reused from") >= len(done) * len(TARGETS), stderr
        # Nothing lost: the cells written before the crash were not rewritten, and every table equals the serial run's.
        assert {p: p.stat().st_mtime_ns for p in kept} == kept
        assert assert_same_run(serial, out) >= 4 * 2 + 3 * 2  # recall and claims per cell; patch in the 3 measurable ones
        claims = json.loads((out / "summary.json").read_text())["claims"]
        assert [c["relation"] for c in claims] == RELATIONS  # the few-shot claims across cells
    finally:
        ray.shutdown()
