"""Interrupting ``recallscope run`` in the middle of a stage (SIGINT, SIGKILL), then rerunning it:
the run resumes, no partial file is left, and the summary equals an uninterrupted run's."""

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

from recallscope.rundir import without_timings

pytestmark = pytest.mark.slow

ARGS = ["run", "--max-prompts", "12", "--shots", "0", "--json", "--stages", "recall,patch,movers,suppress"]


def start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # A job started in the background by a non-interactive shell (CI, this test's own parent)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: give the child the
    # default disposition, as a terminal's Ctrl-C would find it.
    return subprocess.Popen(
        [sys.executable, "-m", "recallscope", *ARGS, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_to_end(out: Path) -> tuple[dict, str]:
    proc = start(out)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return json.loads(stdout), stderr


def recall_finished(out: Path) -> bool:
    """recall's table and summary entry are on disk (patch, the next stage, is running)."""
    try:
        return (out / "recall.parquet").is_file() and "recall" in json.loads((out / "summary.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return False


def interrupt_during_patch(out: Path, sig: int) -> tuple[int, str]:
    proc = start(out)
    deadline = time.monotonic() + 300
    while not recall_finished(out):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "recall did not finish in 300 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def assert_only_complete_files(out: Path) -> list[str]:
    """Every file parses; returns the stage tables as paths without suffix (``patch``, ``patch/components``)."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")], files
    for path in files:
        if path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".html":
            assert path.read_text(encoding="utf-8").rstrip().endswith("</html>")
    return sorted(p.relative_to(out).with_suffix("").as_posix() for p in files if p.suffix == ".parquet")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    summary, _ = run_to_end(tmp_path_factory.mktemp("reference"))
    assert set(summary["stages"]) == {"recall", "patch", "movers", "suppress"}
    return summary


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_run_resumes_to_the_same_summary(sig, reference, tmp_path):
    out = tmp_path / "run"
    returncode, stderr = interrupt_during_patch(out, sig)
    if sig == signal.SIGINT:
        assert returncode == 130, stderr
        assert "interrupted; rerun the same command to resume" in stderr and "Traceback" not in stderr
    else:
        assert returncode == -signal.SIGKILL
        # A kill during a write leaves the temp file behind; plant one to be sure the rerun removes it.
        (out / ".patch.parquet.x1y2.tmp").write_bytes(b"PAR1 half a table")
    if sig == signal.SIGINT:
        assert_only_complete_files(out)
    tables = sorted(p.stem for p in out.glob("*.parquet"))
    assert tables == ["recall"], tables  # interrupted in patch: patch never published a table
    for path in out.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))

    summary, stderr = run_to_end(out)
    assert "recall: reused" in stderr and "patch: done" in stderr  # resumed where it stopped
    assert assert_only_complete_files(out) == ["movers", "patch", "patch/components", "recall", "suppress", "suppress/eval"]
    assert without_timings(summary) == without_timings(reference)
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert without_timings(on_disk) == without_timings(summary)


def test_a_rerun_in_path_mode_interrupted_in_patch_is_recomputed_in_path_mode(tmp_path):
    """Issue 25's reported case on the real model, from the CLI: ``--stages recall,patch``; rerun with
    ``--set patch.mode=path``, Ctrl-C during patch; rerun. It said "patch: reused" with the total-mode
    table, the manifest saying path and the summary total. Now the interrupted run leaves the
    total-mode stage described alike everywhere, and the rerun recomputes patch in path mode."""
    out = tmp_path / "run"
    base = ["run", "--max-prompts", "12", "--stages", "recall,patch", "--no-report", "--json", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "400"}

    def cli(*extra) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "recallscope", *base, *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def described(key: str) -> tuple[str, str, str]:
        manifest = json.loads((out / "manifest.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        record = json.loads((out / "patch.record.json").read_text())
        return manifest["stage_configs"]["patch"][key], summary["stages"]["patch"][key], record["config"][key]

    first = cli()
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    total = (out / "patch.parquet").read_bytes()
    second = cli("--set", "patch.mode=path")
    seen = []
    while not seen or "patch: recomputing" not in seen[-1]:  # its log lines arrive as they are written
        line = second.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    time.sleep(3)  # in patch: recall was reused, patch is being recomputed
    second.send_signal(signal.SIGINT)
    _, rest = second.communicate(timeout=120)
    err = "".join(seen) + rest
    assert second.returncode == 130 and "patch: recomputing (config changed: mode 'total' -> 'path')" in err, err
    assert described("mode") == ("total", "total", "total") and (out / "patch.parquet").read_bytes() == total
    third = cli("--set", "patch.mode=path")
    stdout, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    assert "recall: reused" in err and "patch: recomputing (config changed: mode 'total' -> 'path')" in err
    assert described("mode") == ("path", "path", "path") == (json.loads(stdout)["stages"]["patch"]["mode"],) * 3
    assert (out / "patch.parquet").read_bytes() != total
