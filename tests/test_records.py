"""Stage records (issue 25, item 1): a stage is reused only when its record matches what the run would
compute now; the manifest and the summary follow the records, never ahead of them; a table changed
after it was written is detected by its recorded sha256. On the ``planted`` control (3 layers, seconds)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from recallscope.errors import UserError
from recallscope.models import load_model
from recallscope.pipeline import STAGES, RunConfig, execute
from recallscope.rundir import RunDir, dumps, sha256_file

RUN = RunConfig(model="planted", relation="paper_country_capital", max_prompts=8)


@pytest.fixture(scope="module")
def planted():
    return load_model("planted")


def run(planted, out: Path, stages, log=None, **kwargs) -> dict:
    _, summary = execute(
        RUN, stages, out=str(out), model=planted, progress=False, log=(log if log is not None else []).append, **kwargs
    )
    return summary


def on_disk(out: Path) -> tuple[dict, dict, dict]:
    """(manifest, summary, {stage: record}) as the directory holds them."""
    records = {p.name.removesuffix(".record.json"): json.loads(p.read_text()) for p in out.glob("*.record.json")}
    return json.loads((out / "manifest.json").read_text()), json.loads((out / "summary.json").read_text()), records


def agree(out: Path) -> dict:
    """The manifest, the summary and the records describe the same stages with the same configs, and
    every table matches its record; returns the records."""
    manifest, summary, records = on_disk(out)
    assert set(manifest["stage_configs"]) == set(summary["stages"]) == set(records) == set(manifest["stage_records"])
    for name, record in records.items():
        assert manifest["stage_configs"][name] == record["config"]
        assert {k: v for k, v in summary["stages"][name].items()} == record["summary"]
        for entry in record["tables"].values():
            assert sha256_file(out / entry["file"]) == entry["sha256"]
    return records


def test_an_interrupted_rerun_in_path_mode_is_recomputed_in_path_mode_not_reused(planted, tmp_path, monkeypatch):
    """The reported case: ``--stages recall,patch``; rerun with ``--set patch.mode=path``, interrupted
    during patch; rerun: patch must be recomputed in path mode (it was "reused", the table of the
    total-mode run, the manifest saying path and the summary total)."""
    out = tmp_path / "run"
    run(planted, out, ["patch"])
    total = pd.read_parquet(out / "patch.parquet")
    real = STAGES["patch"]

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(STAGES, "patch", dataclasses.replace(real, compute=interrupted))
    with pytest.raises(KeyboardInterrupt):
        run(planted, out, ["patch"], overrides={"patch.mode": "path"})
    # interrupted: the directory still describes the total-mode stage, everywhere alike
    records = agree(out)
    assert records["patch"]["config"]["mode"] == "total"
    pd.testing.assert_frame_equal(pd.read_parquet(out / "patch.parquet"), total)
    monkeypatch.setitem(STAGES, "patch", real)

    log: list[str] = []
    summary = run(planted, out, ["patch"], log=log, overrides={"patch.mode": "path"})
    assert "recall: reused from " + str(out) in log
    assert "patch: recomputing (config changed: mode 'total' -> 'path')" in log
    records = agree(out)
    manifest, on_file, _ = on_disk(out)
    assert summary["stages"]["patch"]["mode"] == on_file["stages"]["patch"]["mode"] == "path"
    assert manifest["stage_configs"]["patch"]["mode"] == records["patch"]["config"]["mode"] == "path"
    fresh = tmp_path / "fresh"
    run(planted, fresh, ["patch"], overrides={"patch.mode": "path"})
    pd.testing.assert_frame_equal(pd.read_parquet(out / "patch.parquet"), pd.read_parquet(fresh / "patch.parquet"))
    assert not pd.read_parquet(out / "patch.parquet").equals(total)
    # the same command again reuses both
    log.clear()
    run(planted, out, ["patch"], log=log, overrides={"patch.mode": "path"})
    assert [m for m in log if "reused" in m] == [f"recall: reused from {out}", f"patch: reused from {out}"]


def test_a_stage_that_read_a_recomputed_stage_is_removed_with_a_line(planted, tmp_path):
    """movers read the total-mode patch table; recomputing patch in path mode leaves no movers beside it."""
    out = tmp_path / "run"
    run(planted, out, ["movers"])
    assert {"recall", "patch", "movers"} <= set(agree(out))
    log: list[str] = []
    summary = run(planted, out, ["patch"], log=log, overrides={"patch.mode": "path"})
    assert f"movers: removed from {out} (it was computed from the previous patch)" in log
    assert set(summary["stages"]) == set(agree(out)) == {"recall", "patch"}
    assert not (out / "movers.parquet").exists()


def test_a_deterministic_stage_redone_under_force_keeps_the_stages_that_read_it(planted, tmp_path):
    """--force on recall redoes it bit for bit: suppress, which read it, stays valid (its input's content is the same)."""
    out = tmp_path / "run"
    first = run(planted, out, ["suppress"], overrides={"suppress.n_bootstrap": 50})
    log: list[str] = []
    again = run(planted, out, ["recall"], log=log, force=True)
    assert "recall: recomputing (--force)" in log and not any("removed" in m for m in log)
    assert again["stages"]["suppress"] == json.loads(dumps(first["stages"]["suppress"]))
    assert set(agree(out)) == {"recall", "suppress"}


@pytest.mark.parametrize("where", ["body", "secondary"])
def test_a_table_changed_after_it_was_written_is_recomputed_and_refused_by_readers(planted, tmp_path, where, capsys):
    """A Parquet body corrupted with its header and footer intact (b"PAR1" at both ends, so it looked
    finished): the rerun recomputes the stage saying why; ``report`` and ``claims`` refuse in one line."""
    from recallscope import cli

    out = tmp_path / "run"
    run(planted, out, ["patch", "claims"])
    path = out / ("patch.parquet" if where == "body" else "patch/components.parquet")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\x00" * 16
    path.write_bytes(bytes(data))
    assert data[:4] == data[-4:] == b"PAR1"
    rel = path.relative_to(out).as_posix()
    for argv in (["report", str(out)], ["claims", str(out)]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1, err
        assert err[0] == (
            f"recallscope: error: {out}: stage patch: {rel} does not match the sha256 its record holds "
            "(changed after recallscope wrote it); rerun the command that made it"
        )
    log: list[str] = []
    run(planted, out, ["patch", "claims"], log=log)
    assert f"patch: recomputing ({rel} does not match the sha256 its record holds (changed after recallscope wrote it))" in log
    assert "recall: reused from " + str(out) in log
    agree(out)
    cli.main(["report", str(out)])


def test_a_stage_computed_by_other_code_is_recomputed_saying_so(planted, tmp_path):
    out = tmp_path / "run"
    run(planted, out, ["recall"])
    record = json.loads((out / "recall.record.json").read_text())
    record["code_sha256"] = "0" * 64
    (out / "recall.record.json").write_text(json.dumps(record))
    log: list[str] = []
    run(planted, out, ["recall"], log=log)
    assert log[0].startswith("recall: recomputing (computed by other code (code sha256 000000000000... -> ")


def test_the_code_hash_covers_the_stage_module_and_what_it_imports():
    from recallscope import records

    stage = STAGES["patch"]
    code = records.code_sha256(stage.compute, stage.config_type)
    assert len(code) == 64 and code != records.code_sha256(STAGES["recall"].compute, STAGES["recall"].config_type)
    files = {Path(f).name for f in records._closure(frozenset({"recallscope.patch"}))}
    assert {"patch.py", "view.py", "lens.py", "prompts.py", "components.py"} <= files
    assert not any("figures" in f for f in records._closure(frozenset({"recallscope.recall"})))


def test_the_code_hash_of_a_stage_leaves_out_modules_it_does_not_run():
    """The package's lazy __init__ names every module (under TYPE_CHECKING and in functions): once it
    was in every closure, so a change to any module — the onset stage's, the claim rules — recomputed
    every stage of every run. A stage's closure holds the modules it imports at run time, no more."""
    from recallscope import records

    root = Path(records.__file__).parent
    for name in ("recall", "patch", "movers", "decompose", "intercept", "suppress"):
        stage = STAGES[name]
        modules = {stage.config_type.__module__}
        files = {str(Path(f).relative_to(root)) for f in records._closure(frozenset(modules))}
        assert f"{name}.py" in files and not files & {"__init__.py", "pipeline.py", "onset.py", "claims.py", "study.py"}, name
    # the onset stage's own code and the rules it imports are in its closure
    assert {"onset.py", "claims.py"} <= {Path(f).name for f in records._closure(frozenset({"recallscope.onset"}))}
    # and an import under TYPE_CHECKING is not followed
    import ast

    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .pipeline import run\nelse:\n    from .stats import x\n"
    )
    assert sorted(n.module for n in records._runtime_imports(tree) if isinstance(n, ast.ImportFrom)) == ["stats", "typing"]


def test_a_run_directory_without_records_is_read_and_its_stages_recomputed(planted, tmp_path):
    """A run directory of an older recallscope (no records): ``report`` reads it; a run recomputes its stages."""
    from recallscope import cli

    out = tmp_path / "run"
    run(planted, out, ["recall"])
    for path in out.glob("*.record.json"):
        path.unlink()
    cli.main(["report", str(out)])
    assert (out / "report.html").is_file()
    assert RunDir(out).read_table("recall").shape[0] == 8
    log: list[str] = []
    run(planted, out, ["recall"], log=log)
    assert log[0] == "recall: recomputing (its tables have no record (written by an older recallscope, or an interrupted write))"


def test_the_manifest_lists_only_stages_on_disk(planted, tmp_path):
    """Before: the manifest was written before any stage ran, with every stage's config."""
    out = tmp_path / "run"
    run(planted, out, ["recall"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stage_configs"]) == {"recall"} and set(manifest["stage_records"]) == {"recall"}


def test_a_summary_with_wrong_types_is_one_line_for_readers_and_rewritten_by_a_run(planted, tmp_path, capsys):
    from recallscope import cli

    out = tmp_path / "run"
    run(planted, out, ["recall"])
    (out / "summary.json").write_text(json.dumps({"stages": ["recall"]}))
    with pytest.raises(SystemExit) as exc:
        cli.main(["claims", str(out)])
    assert exc.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"recallscope: error: {out / 'summary.json'}: field 'stages' must be an object, got list"
    )
    log: list[str] = []
    summary = run(planted, out, ["recall"], log=log)
    assert "recall: reused from " + str(out) in log and "rewritten from the stage records" in log[0]
    assert json.loads((out / "summary.json").read_text())["stages"]["recall"] == summary["stages"]["recall"]


def test_summary_stage_names_never_lead_outside_the_run_directory(planted, tmp_path, capsys):
    """``report`` read any Parquet file a ``../`` stage key of summary.json named."""
    from recallscope import cli

    out = tmp_path / "run"
    run(planted, out, ["recall"])
    secret = tmp_path / "secret.parquet"
    pd.DataFrame({"password": ["hunter2"]}).to_parquet(secret)
    summary = json.loads((out / "summary.json").read_text())
    summary["stages"]["../secret"] = {"wall_seconds": 1.0}
    (out / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert (
        err
        == f"recallscope: error: {out}: the stage name '../secret' is not a plain name (a run directory's files name only files inside it)"
    )
    assert "hunter2" not in (out / "report.html").read_text() if (out / "report.html").exists() else True
    with pytest.raises(UserError, match="not a plain name"):
        RunDir(out).read_table("../secret")


def test_a_table_symlinked_out_of_the_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "elsewhere.parquet").write_bytes(pd.DataFrame({"x": [1]}).to_parquet())
    (out / "recall.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(UserError, match="leads outside"):
        RunDir(out).read_table("recall")


# ----------------------------------------------------------------------------- refused writes
def refuse_writes_of(monkeypatch, fragment: str, code: int) -> None:
    """The filesystem refuses (``code``: ENOSPC, EROFS) every write of a file whose name holds
    ``fragment``, as a full or read-only disk answers ``write``/``fsync``."""
    import errno
    import os

    real = os.fsync

    def fsync(fd):
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)

    assert code in (errno.ENOSPC, errno.EROFS)
    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_stops_in_one_line_keeps_what_was_written_and_a_rerun_resumes(planted, tmp_path, monkeypatch, capsys):
    """``--out`` on a full filesystem was a traceback. The disk fills while patch writes its
    components table: one line, exit 2; recall (written before) is intact; the rerun resumes."""
    import errno

    from recallscope import cli

    out = tmp_path / "run"
    argv = [
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
    ]
    refuse_writes_of(monkeypatch, "components.parquet", errno.ENOSPC)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recallscope:")]
    assert exc.value.code == 2 and err == [
        f"recallscope: error: cannot write {out / 'patch' / 'components.parquet'}: No space left on device; every file "
        "written before is complete, so rerunning the same command once there is room resumes"
    ]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert set(agree(out)) == {"recall"}  # patch never got a record; the summary does not claim it
    monkeypatch.undo()
    cli.main(argv)
    err = " ".join(capsys.readouterr().err.split())  # the notes wrap at the terminal's width
    assert f"recall: reused from {out}" in err and "patch: done in" in err
    assert set(agree(out)) == {"recall", "patch"}


@pytest.mark.parametrize("argv", [["report"], ["claims", "--write"]])
def test_report_and_claims_write_on_a_read_only_directory_are_one_line(planted, tmp_path, monkeypatch, capsys, argv):
    import errno
    import os

    from recallscope import cli
    from recallscope import locks

    out = tmp_path / "run"
    run(planted, out, ["recall", "claims"])
    real = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(locks.os, "open", read_only)
    with pytest.raises(SystemExit) as exc:
        cli.main([argv[0], str(out), *argv[1:]])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == f"recallscope: error: cannot write {out}: Read-only file system"


def test_open_never_follows_a_sub_run_path_out_of_the_run_directory(tmp_path):
    """``rs.open`` (reading a run back) follows ``runs[].path`` like ``claims`` does: inside only."""
    from recallscope.study import open_run

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "summary.json").write_text('{"stages": {}}')
    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    (untrusted / "summary.json").write_text(json.dumps({"runs": [{"path": "../victim", "relation": "x", "shots": 0}]}))
    with pytest.raises(UserError) as exc:
        open_run(str(untrusted))
    assert str(exc.value) == f"{untrusted / 'summary.json'}: the runs[0].path '../victim' leads outside {untrusted}"
    (untrusted / "summary.json").write_text(json.dumps({"runs": "x"}))
    with pytest.raises(UserError, match="field 'runs' must be a list of objects"):
        open_run(str(untrusted))
