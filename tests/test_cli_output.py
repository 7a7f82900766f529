"""What the command line prints, end to end on the real model: a relation whose name carries Rich
markup and terminal control sequences goes through run → report → claims shown literally, exit 0."""

from __future__ import annotations

import json
import os
import re
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


def test_every_commands_help_rewraps_its_paragraphs_at_80_columns(monkeypatch, capsys):
    """`recallscope claims --help` kept its docstring's line breaks at 80 columns: every other line a 1–3-word
    stub ("with ≈ the known"). Every command's description is now rewrapped to the terminal: inside a
    paragraph only its last line may be short."""
    import typer.main

    from recallscope.cli import app, main

    monkeypatch.setenv("COLUMNS", "80")
    main(["--help"])  # adds the stage verbs
    names = sorted(typer.main.get_command(app).commands)
    assert {"run", "claims", "patch", "surgery", "report"} <= set(names)
    for argv in (["--help"], *([name, "--help"] for name in names)):
        main(argv)
        out = "\n".join(line.rstrip() for line in capsys.readouterr().out.splitlines()).strip()
        description = re.split(r"\n(?:╭|Options:|Arguments:|Commands:)", out.split("\n\n", 1)[1])[0]
        for paragraph in description.strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            assert all(len(line) <= 80 for line in lines), (argv, paragraph)
            assert all(len(line) > 50 for line in lines[:-1]), (argv, paragraph)
        if argv[0] == "claims":
            assert "with ≈ the known prompts that would decide it, not measurable here), the\n" in out
