"""One writer per run directory (issue 25, item 2), and writes only into a directory recallscope owns (item 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recallscope import cli
from recallscope.errors import UserError
from recallscope.locks import Busy, FileLock
from recallscope.models import load_model
from recallscope.pipeline import RunConfig, execute
from recallscope.rundir import LOCK, RunDir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
RUN = RunConfig(model="planted", relation="paper_country_capital", max_prompts=8)


def hold(lock_file: Path) -> subprocess.Popen:
    """Another process that takes the lock and keeps it until it is killed."""
    code = (
        "import sys, time; from recallscope.locks import FileLock; "
        f"FileLock({str(lock_file)!r}, 'x').acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def planted():
    return load_model("planted")


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(planted, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = hold(out / LOCK)
    try:
        with pytest.raises(Busy) as exc:
            execute(RUN, ["recall"], out=str(out), model=planted, progress=False)
        assert str(exc.value).startswith(f"--out {out} is in use by PID {holder.pid} (")
        assert str(exc.value).endswith("; wait for it to finish, or rerun with --wait")
        assert not (out / "manifest.json").exists()  # refused before anything was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # kill -9 released the kernel's lock; the file still names the dead holder: taken over, said once
    log: list[str] = []
    execute(RUN, ["recall"], out=str(out), model=planted, progress=False, log=log.append)
    assert log[0].startswith(f"--out {out}: the run of PID {holder.pid} (") and log[0].endswith(
        "ended without finishing; continuing from its files"
    )
    assert (out / LOCK).read_text() == ""  # released cleanly: nobody named


def test_wait_waits_for_the_holder(planted, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = hold(out / LOCK)
    log: list[str] = []
    start = time.monotonic()
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(2); os.kill({holder.pid}, 9)"])
    try:
        execute(RUN, ["recall"], out=str(out), model=planted, progress=False, log=log.append, wait=True)
    finally:
        killer.wait()
        holder.wait()
    assert time.monotonic() - start >= 2
    assert log[0].startswith(f"--out {out} is in use by PID {holder.pid} (") and log[0].endswith("; waiting for it")
    assert (out / "recall.record.json").is_file()


def test_two_commands_on_one_out_never_mix(tmp_path):
    """The reported case: two runs on one --out differing only in a --set both exited 0 and left a
    manifest of one, a summary of the other and a mix of tables. Now the second is refused while
    the first writes; with --wait it runs after, and the directory describes the second alone.
    The first is paused after its recall stage (its log waits for a file), so the timing is fixed."""
    out, paused, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    first_code = f"""
import pathlib, time
from recallscope.pipeline import RunConfig, execute_many
def log(message):
    if message.startswith("recall: done"):
        pathlib.Path({str(paused)!r}).touch()
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.02)
execute_many(RunConfig(model="planted", max_prompts=8), ["paper_country_capital"], [0], ["recall", "patch"],
             out={str(out)!r}, overrides={{"patch.mode": "total"}}, progress=False, log=log)
"""
    first = subprocess.Popen([sys.executable, "-c", first_code], env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not paused.exists():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    base = [
        sys.executable,
        "-m",
        "recallscope",
        "run",
        "--model",
        "planted",
        "--relation",
        "paper_country_capital",
        "--max-prompts",
        "8",
        "--stages",
        "recall,patch",
        "--no-report",
        "--out",
        str(out),
        "--set",
        "patch.mode=path",
    ]
    second = subprocess.run(base, env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recallscope: error: --out {out} is in use by PID {first.pid} (")
    waiting = subprocess.Popen([*base, "--wait"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    go.touch()
    assert first.wait(timeout=300) == 0
    _, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, err
    assert "patch: recomputing (config changed: mode 'total' -> 'path')" in err
    manifest = json.loads((out / "manifest.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((out / "patch.record.json").read_text())
    assert manifest["stage_configs"]["patch"]["mode"] == summary["stages"]["patch"]["mode"] == record["config"]["mode"] == "path"


def test_a_folder_that_is_not_a_run_directory_is_refused_and_left_as_it_was(tmp_path, capsys):
    """The reported case: ``--out`` a user's folder deleted ``.thesis.tmp``, ``patch/my_results.parquet``
    and ``suppress/baseline.parquet`` and overwrote ``report.html`` and ``summary.json`` (exit 0)."""
    out = tmp_path / "thesis"
    files = {
        ".thesis.tmp": "draft",
        "patch/my_results.parquet": "mine",
        "suppress/baseline.parquet": "mine too",
        "report.html": "<p>my report</p>",
        "summary.json": '{"mine": true}',
    }
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    for argv in (
        ["run", "--model", "planted", "--relation", "paper_country_capital", "--max-prompts", "4", "--out", str(out)],
        ["recall", "--model", "planted", "--relation", "paper_country_capital", "--max-prompts", "4", "--out", str(out)],
        ["run", "--model", "planted", "--relation", "paper_country_capital", "--max-prompts", "4", "--out", str(out), "--force"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and "\n" not in err
        assert err == (
            f"recallscope: error: --out {out} is not a recallscope run directory (it holds .thesis.tmp, patch, report.html, "
            "summary.json and 1 more, and no manifest.json of recallscope's); recallscope writes only into a new or empty folder or a "
            "run directory it made: choose another --out"
        )
    assert {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()} == files
    # an empty folder is fine; a manifest that is not recallscope's is not
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "empty").check_ours()
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    with pytest.raises(UserError, match="is not a recallscope run directory"):
        RunDir(tmp_path / "web").check_ours()


def test_only_recallscopes_own_temporary_files_are_swept(planted, tmp_path):
    out = tmp_path / "run"
    execute(RUN, ["recall"], out=str(out), model=planted, progress=False)
    (out / ".thesis.tmp").write_text("the user's")
    (out / ".recall.parquet.ab12cd34.tmp").write_text("half a table")
    (out / "recall").mkdir(exist_ok=True)
    execute(RUN, ["recall"], out=str(out), model=planted, progress=False)
    assert (out / ".thesis.tmp").read_text() == "the user's" and not (out / ".recall.parquet.ab12cd34.tmp").exists()


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    path = tmp_path / "lock"
    a = FileLock(path, "A").acquire()
    b = FileLock(path, "B").acquire()  # the same process: re-entrant
    b.release()
    probe = [sys.executable, "-c", f"from recallscope.locks import FileLock; FileLock({str(path)!r}, 'the thing').acquire()"]
    busy = subprocess.run(probe, env=ENV, capture_output=True, text=True)
    assert busy.returncode == 1 and f"the thing is in use by PID {os.getpid()} (" in busy.stderr
    a.release()
    assert subprocess.run(probe, env=ENV, capture_output=True, text=True).returncode == 0


def test_claims_write_never_follows_a_path_out_of_the_run_directory(tmp_path, capsys):
    """The reported case: ``claims UNTRUSTED --write`` followed ``runs[].path`` out of the directory and
    rewrote another run's claims with the untrusted thresholds."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "summary.json").write_text('{"stages": {"claims": {}}}')
    before = (victim / "summary.json").read_text()
    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    (untrusted / "summary.json").write_text(json.dumps({"runs": [{"path": "../victim", "relation": "x", "shots": 0}]}))
    for argv in (["claims", str(untrusted), "--write"], ["claims", str(untrusted)]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err == (
            f"recallscope: error: {untrusted / 'summary.json'}: the runs[0].path '../victim' leads outside {untrusted}"
        )
    assert (victim / "summary.json").read_text() == before
