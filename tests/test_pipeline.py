"""The run layer: the stage table, settings checked before the model loads, the run identity, sweeps."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recallscope.claims import NOT_MEASURABLE
from recallscope.constraints import COUNT_LIMIT, RESAMPLES
from recallscope.errors import EXIT_INCOMPLETE, EXIT_USER, UserError
from recallscope.pipeline import STAGES, RunConfig, default_stages, execute, make_configs, resolve, stage_seed
from recallscope.rundir import dumps

COUNTRIES = [
    ("France", "Paris"),
    ("Spain", "Madrid"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Russia", "Moscow"),
    ("Greece", "Athens"),
    ("Kenya", "Nairobi"),
]


def cli(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "recallscope", *args], capture_output=True, text=True, env=env, timeout=900)


def one_line_error(proc) -> str:
    assert proc.returncode == EXIT_USER, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("recallscope: error:"), proc.stderr
    return lines[0]


def write_relation(path: Path, samples) -> Path:
    path.write_text(
        json.dumps(
            {
                "name": "mutable",
                "prompt_templates": ["The capital of {} is"],
                "samples": [{"subject": s, "object": o} for s, o in samples],
            }
        ),
        encoding="utf-8",
    )
    return path


def build_tiny_gpt2(out: Path, n_positions: int) -> Path:
    """A random 1-layer GPT-2 with smollm2's tokenizer and ``n_positions`` learned positions, as a local model directory."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from recallscope.models import EMBEDDED
    from recallscope.models.gguf import cache_dir

    tokenizer_dir = cache_dir(EMBEDDED["smollm2-135m"])
    assert (tokenizer_dir / "tokenizer.json").is_file(), "the smollm2 cache holds the tokenizer"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=49152, n_positions=n_positions, n_embd=16, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(config).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """12 positions: too few for 2-shot prompts."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2_12"), 12)


@pytest.fixture(scope="module")
def tiny_gpt2_long(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2_256"), 256)


# ----------------------------------------------------------------------------- the stage table
def test_the_stage_table_declares_each_stage_once_in_order():
    assert list(STAGES) == [
        "recall", "patch", "movers", "decompose", "intercept", "suppress", "onset", "trace", "knockout", "surgery", "claims"
    ]  # fmt: skip
    # trace, knockout and surgery are opt-in (--stages): slower than the default run's time target on two cores
    assert default_stages() == ["recall", "patch", "movers", "decompose", "intercept", "suppress", "onset", "claims"]
    for name, stage in STAGES.items():
        assert stage.name == name and stage.title and stage.help
        for dep in stage.requires + stage.reads:
            assert list(STAGES).index(dep) < list(STAGES).index(name), (name, dep)
    # claims has no verb; every flag of a verb names a setting that exists
    assert [s.name for s in STAGES.values() if not s.verb] == ["claims"]
    configs = make_configs()
    for stage in STAGES.values():
        for flag, setting in stage.flags.items():
            owner, _, field = setting.partition(".")
            assert field in {f.name for f in dataclasses.fields(configs[owner])}, (stage.name, flag)


def test_movers_requires_patch_only_when_it_chooses_heads_from_it():
    assert resolve(["movers"]) == ["recall", "patch", "movers"]
    assert resolve(["movers"], make_configs({"movers.heads": "all"})) == ["recall", "movers"]
    assert resolve(["movers"], make_configs({"movers.layer": 3})) == ["recall", "movers"]
    assert STAGES["movers"].requires == ("recall",) and STAGES["movers"].reads == ("patch",)


def test_stage_seeds_derive_from_the_run_seed():
    configs = make_configs(seed=7)
    assert configs["suppress"].seed == stage_seed(7, "suppress") != stage_seed(8, "suppress")
    assert configs["claims"].seed == stage_seed(7, "claims") != configs["suppress"].seed
    assert stage_seed(7, "suppress") == stage_seed(7, "suppress")  # deterministic across calls and processes
    assert stage_seed(0, "suppress") == 2807682989  # the same number on every platform
    # a seed the user sets is kept
    assert make_configs({"suppress.seed": 5}, seed=7)["suppress"].seed == 5


# ----------------------------------------------------------------------------- H: settings
def every_field():
    configs = make_configs()
    for stage, config in configs.items():
        for f in dataclasses.fields(config):
            yield stage, f.name


@pytest.mark.parametrize("stage,name", list(every_field()))
def test_every_setting_refuses_a_wrong_type_in_one_line(stage, name):
    """Every field of every stage config: a value of the wrong type is refused, naming the setting and what is allowed."""
    config = make_configs()[stage]
    default = getattr(config, name)
    bad = "not-a-number" if not isinstance(default, str) else 12345
    if isinstance(default, tuple) and default and isinstance(default[0], str):
        bad = "no-such-choice"
    with pytest.raises(UserError) as err:
        make_configs({f"{stage}.{name}": bad})
    message = str(err.value)
    assert f"{stage}.{name}={bad}" in message and "must be" in message and "\n" not in message
    # the default itself is accepted, given as the CLI would give it
    make_configs({f"{stage}.{name}": json.loads(dumps(default))})


@pytest.mark.parametrize(
    "setting,value,allowed",
    [
        ("intercept.level", 1.5, "a number in (0, 1)"),
        ("patch.top_k", 0, f"an integer in [1, {COUNT_LIMIT:,}] (this machine's memory in 8-byte numbers)"),
        ("patch.top_k", 2.5, "an integer in [1, "),
        ("patch.top_k", 1e15, "an integer in [1, "),  # issue 25: every count is bounded by what the machine holds
        ("decompose.folds", 1, "an integer >= 2"),
        ("suppress.threshold_share", 1.0, "a number in [0, 1)"),
        ("movers.heads", "some", "one of top, all"),
        ("patch.components", "heads,attn", "a list of: one of heads, mlp, resid"),
        ("patch.layers", -1, "a list of integers >= 0"),
        ("decompose.sweep", "maybe", "a boolean"),
        ("claims.n_bootstrap", None, "an integer in [1, "),
        ("suppress.n_bootstrap", 1e11, f"an integer in [1, {RESAMPLES.high:,}] (this machine's memory at 8 KiB per resample)"),
    ],
)
def test_out_of_range_settings_are_refused(setting, value, allowed):
    with pytest.raises(UserError, match=None) as err:
        make_configs({setting: value})
    assert allowed in str(err.value) and setting in str(err.value)


def test_a_scalar_for_a_list_setting_is_a_one_element_list():
    assert make_configs({"patch.layers": 5})["patch"].layers == (5,)
    assert make_configs({"patch.layers": "3,4"})["patch"].layers == (3, 4)
    assert make_configs({"suppress.modes": "zero"})["suppress"].modes == ("zero",)
    assert make_configs({"patch.components": "heads,mlp"})["patch"].components == ("heads", "mlp")


def test_bad_settings_fail_before_the_model_loads(tmp_path):
    # a model that does not exist: the setting must be refused first
    for setting, fragment in (("patch.layers=abc", "patch.layers=abc"), ("intercept.level=1.5", "intercept.level=1.5")):
        line = one_line_error(cli("run", "--model", str(tmp_path / "no-model"), "--set", setting, "--out", str(tmp_path / "o")))
        assert fragment in line
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- G: positions
def test_prompts_longer_than_the_position_table_are_refused_before_any_stage(tiny_gpt2, tmp_path):
    out = tmp_path / "run"
    line = one_line_error(cli("run", "--model", str(tiny_gpt2), "--shots", "2", "--max-prompts", "4", "--out", str(out)))
    assert "has positions for 12" in line and "country_capital_extended" in line
    longest = int(line.split(" tokens;")[0].rsplit(" ", 1)[1])
    assert longest > 12
    assert not list(out.glob("*.parquet"))  # no stage ran
    # and the same through a stage verb
    assert "has positions for 12" in one_line_error(cli("recall", "--model", str(tiny_gpt2), "--shots", "2"))


# ----------------------------------------------------------------------------- I: sweeps
def test_a_sweep_goes_on_past_cells_without_data_and_exits_3(tiny_gpt2_long, lre_dir, tmp_path):
    out = tmp_path / "sweep"
    # Every prompt counts as known (the random model knows nothing), so patch and movers run on
    # country_capital_extended; 3 prompts are too few for decompose's 4 folds; presidents_birth_year scored
    # on the first token has no usable sample at 1 shot (every answer shares it), so that whole cell is empty.
    proc = cli(
        "run",
        "--model",
        str(tiny_gpt2_long),
        "--relation",
        f"country_capital_extended,{lre_dir / 'presidents_birth_year.json'}",
        "--shots",
        "0,1",
        "--max-prompts",
        "3",
        "--stages",
        "recall,patch,movers,decompose",
        "--set",
        "recall.known_top_k=100000",
        "--set",
        "patch.n_corruptions=2",
        "--set",
        "patch.min_prompts=1",
        "--set",
        "recall.answer_metric=first_token",
        "--json",
        "--out",
        str(out),
    )
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    assert "Traceback" not in proc.stderr and "recallscope: incomplete:" in proc.stderr
    combined = json.loads(proc.stdout)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["exit_code"] == EXIT_INCOMPLETE and len(on_disk["runs"]) == 4
    cells = {(r["relation"], r["shots"]): r for r in combined["runs"]}
    for k in (0, 1):
        cell = cells[("country_capital_extended", k)]
        assert set(cell["stages"]) == {"recall", "patch", "movers"}  # done
        assert cell["n_prompts"] == 3
        entry = cell["not_measurable"]["decompose"]
        assert "too few" in entry["reason"] and entry["n_prompts"] == 3 and entry["n_known"] == 3
        assert (out / "country_capital_extended" / f"{k}shot" / "movers.parquet").is_file()
    empty = cells[("president_birth_year", 1)]  # the relation's name, as every cell shows it
    assert (
        json.loads((out / "presidents_birth_year" / "1shot" / "summary.json").read_text())["not_measurable"]
        == empty["not_measurable"]
    )
    assert empty["stages"] == {} and set(empty["not_measurable"]) == {"recall", "patch", "movers", "decompose"}
    assert "usable" in empty["not_measurable"]["recall"]["reason"]
    assert {(c["relation"], c["shots"]) for c in combined["incomplete"]} >= {
        ("country_capital_extended", 0),
        ("president_birth_year", 1),
    }
    assert (out / "report.html").is_file()


def test_a_single_cell_keeps_the_error_of_a_stage_asked_for_by_name(tiny_gpt2_long, tmp_path):
    proc = cli(
        "decompose",
        "--model",
        str(tiny_gpt2_long),
        "--max-prompts",
        "3",
        "--set",
        "recall.known_top_k=100000",
        "--set",
        "movers.heads=all",
        "--layer",
        "0",
    )
    assert proc.returncode == EXIT_USER and "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    # the stages before it ran (movers with heads=all needs no patch), then the one-line error
    assert lines == [
        "recall: done in " + lines[0].split("done in ")[1],
        "movers: done in " + lines[1].split("done in ")[1],
        "recallscope: error: decompose: 3 prompts are too few for 4-fold cross-validation (need 8)",
    ]


# ----------------------------------------------------------------------------- F: run identity
def test_an_edited_relation_file_is_another_run(tiny_gpt2, tmp_path):
    from recallscope import load_model

    model = load_model(str(tiny_gpt2))
    rel = write_relation(tmp_path / "mutable.json", COUNTRIES[:6])
    out = str(tmp_path / "D")
    run = RunConfig(model=str(tiny_gpt2), relation=str(rel))
    _, first = execute(run, ["recall"], out=out, model=model, progress=False)
    assert first["n_prompts"] == 6
    # the same path, other content: 10 samples, some answers changed
    edited = COUNTRIES[:2] + [("Italy", "Milan"), ("Germany", "Munich")] + COUNTRIES[4:]
    write_relation(rel, edited)
    with pytest.raises(UserError, match="relation_hash"):
        execute(run, ["recall"], out=out, model=model, progress=False)
    log: list[str] = []
    ctx, again = execute(run, ["recall"], out=out, model=model, progress=False, force=True, log=log.append)
    assert not any("reused" in m for m in log)
    assert again["n_prompts"] == 10
    _, fresh = execute(run, ["recall"], out=str(tmp_path / "fresh"), model=model, progress=False)
    assert {k: v for k, v in again["stages"]["recall"].items() if k not in ("wall_seconds", "cpu_seconds")} == {
        k: v for k, v in fresh["stages"]["recall"].items() if k not in ("wall_seconds", "cpu_seconds")
    }
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    assert manifest["identity"]["relation_hash"] == manifest["relation"]["sha256"]
    assert [p.answer for p in ctx.prompts.prompts][2:4] == ["Milan", "Munich"]


def test_the_manifest_records_the_thread_count(tiny_gpt2, tmp_path):
    """On CPU another thread count can change the last digits: the manifest says which one ran."""
    import torch

    from recallscope import load_model

    model = load_model(str(tiny_gpt2))
    rel = write_relation(tmp_path / "r.json", COUNTRIES[:6])
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"t{threads}"
            execute(RunConfig(model=str(tiny_gpt2), relation=str(rel)), ["recall"], out=str(out), model=model, progress=False)
            compute = json.loads((out / "manifest.json").read_text())["compute"]
            assert compute["torch_threads"] == threads and "omp_wait_policy" in compute
    finally:
        torch.set_num_threads(before)


def test_a_stale_recall_table_is_never_paired_with_other_prompts(tiny_gpt2, tmp_path):
    """Even if a recall table of another prompt list were read, the pairing refuses it."""
    import pandas as pd

    from recallscope import load_model
    from recallscope.pipeline import StageContext
    from recallscope.tasks import build_prompts, load_relation

    model = load_model(str(tiny_gpt2))
    rel = write_relation(tmp_path / "r.json", COUNTRIES)
    prompts = build_prompts(load_relation(str(rel)), model.tokenizer, shots=0, seed=0)
    ctx = StageContext(model=model, run=RunConfig(), prompts=prompts, configs=make_configs())
    ctx.results["recall"] = type("R", (), {"tables": lambda self: {"recall": pd.DataFrame({"known": [True] * 6})}})()
    with pytest.raises(RuntimeError, match="stale"):
        ctx.known_prompts()


# ----------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_force_on_one_stage_keeps_the_others_and_claims_read_them(smollm2, tmp_path):
    run = RunConfig(max_prompts=10)
    out = str(tmp_path / "run")
    _, first = execute(run, ["suppress"], out=out, model=smollm2, progress=False)
    assert set(first["stages"]) == {"recall", "suppress"}
    _, again = execute(run, ["claims"], out=out, model=smollm2, progress=False, force=True)
    as_saved = json.loads(dumps(first["stages"]["suppress"]))
    assert again["stages"]["suppress"] == as_saved  # kept, not redone
    verdicts = {c["claim"]: c["verdict"] for c in again["claims"]}
    assert verdicts["The final layer suppresses the correct answer"] != NOT_MEASURABLE
    assert verdicts["Mover heads move the topic (subject) to the last position"] == NOT_MEASURABLE


# ----------------------------------------------------------------------------- issue 25: sweep cells
def test_two_relation_files_with_one_name_get_two_cells(tiny_gpt2, tmp_path):
    """The reported case: ``a/capitals.json,b/capitals.json`` mapped both to one cell (exit 2 after the
    first; with --force the second replaced the first and the summary listed one path twice)."""
    from recallscope.pipeline import execute_many, relation_hash
    from recallscope.tasks import load_relation

    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    a = write_relation(tmp_path / "a" / "capitals.json", COUNTRIES[:6])
    b = write_relation(tmp_path / "b" / "capitals.json", COUNTRIES[4:])
    out = tmp_path / "sweep"
    run = RunConfig(model=str(tiny_gpt2), max_prompts=4)
    combined = execute_many(run, [str(a), str(b)], [0], ["recall"], out=str(out), progress=False)
    paths = [r["path"] for r in combined["runs"]]
    ha, hb = (relation_hash(load_relation(str(p)))[:8] for p in (a, b))
    assert paths == [f"capitals-{ha}/0shot", f"capitals-{hb}/0shot"]
    for path, rel in zip(paths, (a, b), strict=True):
        manifest = json.loads((out / path / "manifest.json").read_text())
        assert manifest["identity"]["relation"] == str(rel)
    log: list[str] = []
    execute_many(run, [str(a), str(b)], [0], ["recall"], out=str(out), progress=False, log=log.append)
    assert sum("recall: reused" in m for m in log) == 2
    copy = tmp_path / "c" / "capitals.json"
    copy.write_text(a.read_text())
    with pytest.raises(UserError, match=r"--relation lists one relation twice: .* have the same content"):
        execute_many(run, [str(a), str(copy)], [0], ["recall"], out=str(tmp_path / "dup"), progress=False)
