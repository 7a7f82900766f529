"""What the command line prints, end to end on the real model: a relation whose name carries Rich
markup and terminal control sequences goes through run → report → claims shown literally, exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BUILTIN = Path(__file__).resolve().parents[1] / "src" / "recallscope" / "tasks" / "builtin"
# Markup that closed a tag never opened (Rich raised MarkupError after the run had finished: exit 1),
# then an OSC 0 sequence that retitles the terminal window, ended by BEL.
HOSTILE_NAME = "capitals [/draft] \x1b]0;x\x07"
SHOWN = "[/draft]_\\x1b]0;x\\x07"  # the relation as the run records it (spaces made "_"), its controls as escapes


def recallscope(*args: str, columns: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "recallscope", *args], capture_output=True, env=env, timeout=1200)


def assert_literal(done: subprocess.CompletedProcess) -> str:
    out = (done.stdout + done.stderr).decode("utf-8")
    assert done.returncode == 0, out
    assert "\x1b]" not in out and "\x07" not in out  # nothing a terminal would obey
    return out


@pytest.mark.slow
def test_a_hostile_relation_name_goes_through_run_report_and_claims_literally(tmp_path, smollm2):
    relation = json.loads((BUILTIN / "country_capital_extended.json").read_text(encoding="utf-8"))
    relation["name"] = HOSTILE_NAME
    path = tmp_path / "capitals.json"
    path.write_text(json.dumps(relation), encoding="utf-8")
    out = tmp_path / "run"

    ran = assert_literal(recallscope("run", "--relation", str(path), "--max-prompts", "16", "--out", str(out)))
    assert SHOWN in ran and "C1" in ran and "C5" in ran  # the run's table names it; its claims follow

    assert_literal(recallscope("report", str(out)))
    page = (out / "report.html").read_text(encoding="utf-8")
    assert SHOWN in page and "\x1b" not in page and "\x07" not in page  # shown, not dropped by the browser

    claims = assert_literal(recallscope("claims", str(out), columns=80))
    assert SHOWN in claims
    rows = [line for line in claims.splitlines() if line[:2] in ("C1", "C2", "C3", "C4", "C5", "C6")]
    # one row per claim in the table; at 80 columns each claim then follows in full under its id
    assert [r.split()[0] for r in rows] == ["C1", "C2", "C3", "C4", "C5", "C6"] * 2
    assert max(len(line) for line in claims.splitlines()) <= 80

    as_json = recallscope("claims", str(out), "--json")
    assert as_json.returncode == 0 and b"\x1b" not in as_json.stdout
    recorded = json.loads((out / "summary.json").read_text(encoding="utf-8"))["relation"]
    assert "\x1b]0;x\x07" in recorded and json.loads(as_json.stdout)["runs"][0]["relation"] == recorded  # JSON-escaped
