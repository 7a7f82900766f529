"""The CLI as a user meets it: real processes, stdout/stderr and exit codes."""

import json
import os
import subprocess
import sys

import pytest


def cli(*args, cwd=None, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "recallscope", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("recallscope: error:") and fragment in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unknown_relation_lists_builtins():
    assert_one_line_error(cli("recall", "--relation", "nope"), "country_capital_extended")


def test_unknown_model_names_the_default():
    assert_one_line_error(cli("recall", "--model", "no-such-model"), "smollm2-135m")


def test_hub_id_offline_is_one_line():
    assert_one_line_error(cli("recall", "--model", "gpt2"), "offline")


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert_one_line_error(cli("recall", "--out", str(f)), "is a file")


def test_malformed_relation_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt_templates": ["{} is"], "samples": [{"subject": "a"}]}')
    assert_one_line_error(cli("recall", "--relation", str(bad)), "missing field 'object'")


@pytest.mark.slow
def test_nothing_left_after_filtering_gives_counts(lre_dir):
    proc = cli(
        "recall", "--relation", str(lre_dir / "presidents_election_year.json"), "--set", "recall.answer_metric=first_token"
    )
    assert_one_line_error(proc, "answer_first_token_shared: 19")
    assert "recall.answer_metric=answer" in proc.stderr  # how to score them


def test_relations_json():
    proc = cli("relations", "--json")
    assert proc.returncode == 0
    names = [r["relation"] for r in json.loads(proc.stdout)["relations"]]
    assert "country_capital_extended" in names and len(names) >= 7


def test_models_json_reports_embedded_install_state():
    proc = cli("models", "--json")
    rows = {r["model"]: r for r in json.loads(proc.stdout)["models"]}
    assert rows["smollm2-135m"]["installed"] is True
    assert "pip install" in rows["smollm2-135m"]["install"]


@pytest.mark.slow
def test_recall_json_and_resume(tmp_path):
    out = tmp_path / "run"
    proc = cli("recall", "--max-prompts", "30", "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert summary["n_prompts"] == 30 and summary["relation"] == "country_capital_extended"
    assert set(summary) >= {"model", "relation", "shots", "n_prompts", "n_known", "accuracy", "mean_p_answer", "stages"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["accuracy"] == summary["accuracy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["hash"].startswith("sha256:b179c952")
    assert manifest["versions"]["torch"]
    again = cli("recall", "--max-prompts", "30", "--json", "--out", str(out))
    assert "recall: reused" in again.stderr
    assert json.loads(again.stdout)["stages"]["recall"] == summary["stages"]["recall"]
    other = cli("recall", "--max-prompts", "30", "--shots", "1", "--json", "--out", str(out))
    assert_one_line_error(other, "different configuration")


def test_flag_that_does_not_apply_to_the_verb():
    assert_one_line_error(cli("suppress", "--layer", "3"), "does not apply to `recallscope suppress`")


def test_stage_flags_go_to_the_verbs_stage():
    from recallscope.cli import _flag_overrides
    from recallscope.pipeline import STAGES

    assert _flag_overrides("decompose", {"layer": 12, "solver": "sgd"}, STAGES) == {
        "decompose.layer": 12,
        "decompose.solver": "sgd",
    }
    assert _flag_overrides("movers", {"layer": 23, "head": 4}, STAGES) == {"movers.layer": 23, "movers.head": 4}
    assert _flag_overrides("patch", {"layers": [1, 2]}, STAGES) == {"patch.layers": (1, 2)}
    assert _flag_overrides("intercept", {"layer": 20, "top_k": 5}, STAGES) == {"decompose.layer": 20, "intercept.top_k": 5}


def test_ctrl_c_in_a_command_exits_130_with_a_resume_hint(monkeypatch, capsys):
    """typer >= 0.2x returns 130 for Ctrl-C instead of raising: main must still exit 130, not 0."""
    import typer

    from recallscope import cli as cli_module

    app = typer.Typer()

    @app.command()
    def stage() -> None:
        raise KeyboardInterrupt

    @app.command()
    def other() -> None:
        pass

    monkeypatch.setattr(cli_module, "app", app)
    with pytest.raises(SystemExit) as exc:
        cli_module.main(["stage"])
    assert exc.value.code == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    """--threads is kept through a model load (a load used to reset it to os.cpu_count())."""
    import torch

    from recallscope import load_model
    from recallscope import cli as cli_module
    from recallscope.models import loading

    usable = loading.usable_cpus()
    assert 1 <= usable <= len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(loading, "_THREADS_CHOSEN", [])
    before = torch.get_num_threads()
    try:
        cli_module._set_threads(None)
        assert torch.get_num_threads() == usable
        torch.set_num_threads(usable + 3)
        load_model("planted")  # no count chosen: the load applies the usable CPUs
        assert torch.get_num_threads() == usable
        cli_module._set_threads(1)
        load_model("planted")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_omp_wait_policy_is_passive_unless_the_user_chose():
    code = "import os; from recallscope.cli import main; main(['relations', '--json']); print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "PASSIVE"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, timeout=300
    )
    assert proc.stdout.splitlines()[-1] == "ACTIVE"


def test_threads_zero_is_one_line():
    assert_one_line_error(cli("recall", "--threads", "0"), "--threads must be >= 1, got 0")


def test_a_stage_verb_without_out_saves_nothing_and_says_so(tmp_path):
    """The documented choice (README, --out's help): no default run directory; the note says so."""
    proc = cli("recall", "--model", "planted", "--relation", "paper_country_capital", "--max-prompts", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nothing was saved (no --out); add --out DIR to keep the recall stage's tables" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing in the working directory
