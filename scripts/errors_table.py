"""Every bad input a new user might try, run for real; prints docs/errors.md's table.

    python scripts/errors_table.py > docs/errors.md

Each case runs ``python -m recallscope ...`` in a fresh temporary folder (relative paths, so the
messages read as a user would see them) and records the exit code and what stderr said. The
tests (tests/test_errors.py) run the same CASES and check that the doc holds each message.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REL = lambda samples, templates=("The capital of {} is",): json.dumps(  # noqa: E731
    {"prompt_templates": list(templates), "samples": [{"subject": s, "object": o} for s, o in samples]}
)
SMALL = REL([("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo")])
# Years: every answer starts with the same token, so no answer can be told apart by its first token.
SHARED_FIRST_TOKEN = REL([("A", "1990"), ("B", "1991"), ("C", "1992")], ("{} was elected in",))
UNKNOWN = REL([("Zorblax", "Quuxville"), ("Blorf", "Wibbleton")])


@dataclass(frozen=True)
class Case:
    name: str  # what the user got wrong
    args: tuple[str, ...]
    expect: str  # a fragment the message must hold (checked by the tests)
    files: dict = field(default_factory=dict)  # relative path -> text ("/" at the end: a folder)
    before: tuple[str, ...] = ()  # a command run first (e.g. an existing run in --out)
    progress_lines: int = 0  # stderr lines before the error (a stage that had to run first)
    exit_code: int = 2
    corrupt_cache: bool = False  # run with a copy of the weight cache whose weights are truncated
    model: bool = False  # the model loads before the error (the tests mark such cases slow)
    build: str | None = None  # a function of BUILDERS that writes what the case needs (e.g. a tiny model folder)
    edit: dict = field(default_factory=dict)  # files written after ``before`` ran (an input edited between runs)
    after: str | None = None  # a function of BUILDERS run after ``before`` (e.g. a table damaged on disk)
    # regexes of what depends on the machine (a bound from its memory or thread limit): shown as <N>
    machine: tuple[str, ...] = ()


CASES: tuple[Case, ...] = (
    Case(
        "unknown model",
        ("recall", "--model", "no-such-model"),
        "unknown model 'no-such-model'; aliases: gemma3-270m, smollm2-135m",
    ),
    Case("hub id, offline", ("recall", "--model", "gpt2"), "the model hub is not reachable from here (offline)"),
    Case(
        "folder that is not a model",
        ("recall", "--model", "notamodel"),
        "not a loadable model directory",
        files={"notamodel/": ""},
    ),
    Case("unknown relation", ("recall", "--relation", "nope"), "unknown relation 'nope'; built-in: "),
    Case("relation: a folder", ("recall", "--relation", "notamodel"), "is a directory", files={"notamodel/": ""}),
    Case(
        "relation: truncated JSON",
        ("recall", "--relation", "trunc.json"),
        "trunc.json: not valid JSON (line 1",
        files={"trunc.json": SMALL[:40]},
    ),
    Case("relation: empty file", ("recall", "--relation", "empty.json"), "empty.json: not valid JSON", files={"empty.json": ""}),
    Case(
        "relation: lacks a field",
        ("recall", "--relation", "nofield.json"),
        "nofield.json: missing field 'prompt_templates'",
        files={"nofield.json": '{"samples": [{"subject": "France", "object": "Paris"}]}'},
    ),
    Case(
        "relation: a sample lacks a field",
        ("recall", "--relation", "noobject.json"),
        "noobject.json: samples[0] is missing field 'object'",
        files={"noobject.json": '{"prompt_templates": ["{} is"], "samples": [{"subject": "France"}]}'},
    ),
    Case(
        "relation: wrong type",
        ("recall", "--relation", "wrongtype.json"),
        "samples[0].subject must be a string, got int",
        files={"wrongtype.json": '{"prompt_templates": ["{} is"], "samples": [{"subject": 3, "object": "Paris"}]}'},
    ),
    Case(
        "relation: templates not a list",
        ("recall", "--relation", "tpl.json"),
        "field 'prompt_templates' must be list, got str",
        files={"tpl.json": '{"prompt_templates": "{} is", "samples": [{"subject": "France", "object": "Paris"}]}'},
    ),
    Case(
        "relation: template without {}",
        ("recall", "--relation", "slot.json"),
        "must contain exactly one '{}'",
        files={"slot.json": '{"prompt_templates": ["The capital is"], "samples": [{"subject": "France", "object": "Paris"}]}'},
    ),
    Case(
        "relation: no samples",
        ("recall", "--relation", "nosamples.json"),
        "field 'samples' is empty",
        files={"nosamples.json": '{"prompt_templates": ["{} is"], "samples": []}'},
    ),
    Case(
        "relation: no single-token answers, scored on their first token",
        ("recall", "--relation", "years.json", "--set", "recall.answer_metric=first_token"),
        "no prompt left for relation 'years' after filtering (answer_first_token_shared: 3)",
        files={"years.json": SHARED_FIRST_TOKEN},
        model=True,
    ),
    Case(
        "no known prompt left",
        ("patch", "--relation", "unknown.json"),
        "no known prompt left for relation 'unknown' (unknown_to_model: 2)",
        files={"unknown.json": UNKNOWN},
        progress_lines=1,
        model=True,
    ),
    Case(
        "--shots more than the demonstrations",
        ("recall", "--shots", "50", "--relation", "small.json"),
        "--shots 50 needs at least 51 usable samples in relation 'small'; it has 3",
        files={"small.json": SMALL},
        model=True,
    ),
    # issue 16 (classes D and "also seen"): templates parsed with str.format's grammar; the real cause of too few samples
    Case(
        "relation: template with only literal braces",
        ("recall", "--relation", "braces.json"),
        "must contain exactly one '{}' for the subject (it has 0)",
        files={"braces.json": REL([("France", "Paris")], ("Capital of {{}} is",))},
    ),
    Case(
        "relation: template with a named field",
        ("recall", "--relation", "named.json"),
        "has the field '{note}'",
        files={"named.json": REL([("France", "Paris")], ("{note} The capital of {} is",))},
    ),
    Case(
        "--shots where every answer shares its first token (scored on it)",
        ("recall", "--shots", "1", "--relation", "years.json", "--set", "recall.answer_metric=first_token"),
        "it has 0 of 3 (answer_first_token_shared: 3; every answer starts with the token",
        files={"years.json": SHARED_FIRST_TOKEN},
        model=True,
    ),
    Case("--shots negative", ("recall", "--shots", "-1"), "--shots must be >= 0, got -1"),
    Case("--shots not a number", ("run", "--shots", "0,a"), "cannot read '0,a' as a comma-separated list of int"),
    Case("--max-prompts 0", ("recall", "--max-prompts", "0"), "--max-prompts must be a number >= 1 or all, got 0"),
    Case("--max-prompts lots", ("recall", "--max-prompts", "lots"), "--max-prompts must be a number >= 1 or all, got 'lots'"),
    Case(
        "--layer out of range (movers)",
        ("movers", "--layer", "99", "--head", "0"),
        "--layer 99 out of range: the model has layers 0..29",
        model=True,
    ),
    Case(
        "--head out of range",
        ("movers", "--layer", "3", "--head", "99"),
        "--head 99 out of range: the model has heads 0..8",
        model=True,
    ),
    Case("--head without --layer", ("movers", "--head", "3"), "--head needs --layer", model=True),
    Case(
        "--layer out of range (decompose)",
        ("decompose", "--layer", "99"),
        "--layer 99 out of range: the model has layers 0..29",
        model=True,
    ),
    Case(
        "--layer negative (intercept)",
        ("intercept", "--layer", "-1"),
        "--layer -1 is not allowed: --layer must be an integer >= 0",
    ),
    Case(
        "--layers out of range (patch)",
        ("patch", "--layers", "0,40"),
        "--layers: [40] out of range; the model has layers 0..29",
        model=True,
    ),
    Case(
        "--layers out of range (suppress)",
        ("suppress", "--layers", "40"),
        "--layers [40] out of range: the model has layers 0..29",
        model=True,
    ),
    Case(
        "--solver unknown", ("decompose", "--solver", "adam"), "--solver adam is not allowed: --solver must be one of lstsq, sgd"
    ),
    Case("a flag the verb does not take", ("suppress", "--layer", "3"), "--layer does not apply to `recallscope suppress`"),
    Case("--set unknown setting", ("recall", "--set", "patch.nope=1"), "unknown setting(s) patch.nope"),
    Case("--set without =", ("recall", "--set", "patch.mode"), "--set expects key=value, got 'patch.mode'"),
    Case(
        "--stages unknown", ("run", "--stages", "recall,nope", "--out", "run"), "unknown stage 'nope'; available: recall, patch"
    ),
    Case("--dtype unknown", ("recall", "--dtype", "int8"), "unknown dtype 'int8'"),
    Case("unknown option", ("recall", "--shot", "3"), "No such option: --shot"),
    Case("unknown verb", ("recal",), "No such command 'recal'"),
    Case("--out is a file", ("recall", "--out", "afile"), "--out afile is a file, not a directory", files={"afile": "x"}),
    Case(
        "--out unwritable (under a file)",
        ("recall", "--out", "afile/run"),
        "--out afile/run: cannot create the directory: ",
        files={"afile": "x"},
        model=True,
    ),
    Case(
        "--out unwritable (in /proc)",
        ("run", "--stages", "recall", "--out", "/proc/recallscope-run"),
        "--out /proc/recallscope-run: cannot create the directory in /proc",
        model=True,
    ),
    Case(
        "--out holds a run of another configuration",
        ("recall", "--max-prompts", "4", "--shots", "1", "--out", "run"),
        "--out run holds a run with a different configuration (shots: 0 -> 1)",
        before=("recall", "--max-prompts", "4", "--out", "run"),
        model=True,
    ),
    Case(
        "--out holds a damaged summary.json",
        ("recall", "--max-prompts", "4", "--out", "run"),
        "run/summary.json: not valid JSON; rewritten from the stage records",
        before=("recall", "--max-prompts", "4", "--out", "run"),
        edit={"run/summary.json": '{"stages": {'},
        exit_code=0,  # the summary is written from the stage records: nothing is lost
        model=True,
    ),
    Case(
        "--out holds a run of an edited relation file",
        ("recall", "--relation", "mutable.json", "--out", "run"),
        "--out run holds a run with a different configuration (relation_hash: ",
        files={"mutable.json": SMALL},
        before=("recall", "--relation", "mutable.json", "--out", "run"),
        edit={"mutable.json": REL([("France", "Paris"), ("Italy", "Milan"), ("Japan", "Tokyo"), ("Spain", "Madrid")])},
        model=True,
    ),
    Case(
        "prompts longer than the model's positions",
        ("run", "--model", "tiny", "--shots", "2", "--max-prompts", "4", "--out", "run"),
        "has positions for 12: use fewer --shots or a model with a longer context",
        build="tiny_gpt2_12_positions",
        model=True,
    ),
    Case("--set: a word for a list of layers", ("patch", "--set", "patch.layers=abc"), "patch.layers=abc is not allowed"),
    Case(
        "--set: a value out of range",
        ("run", "--set", "intercept.level=1.5", "--out", "run"),
        "intercept.level=1.5 is not allowed: intercept.level must be a number in (0, 1)",
    ),
    Case("--set: a fraction for a count", ("recall", "--set", "decompose.folds=2.5"), "decompose.folds must be an integer >= 2"),
    Case("--set: not one of the choices", ("recall", "--set", "patch.mode=both"), "patch.mode must be one of total, path"),
    Case("--set: a word for a switch", ("recall", "--set", "patch.attribution=yes"), "must be a boolean (true or false)"),
    Case(
        "--set: an answer metric that does not exist",
        ("recall", "--set", "recall.answer_metric=digits"),
        "recall.answer_metric must be one of auto, first_token, answer",
    ),
    Case("--threads 0", ("recall", "--threads", "0"), "--threads must be >= 1, got 0"),
    # issue 13: path patching flags and presets
    Case("--mode unknown", ("patch", "--mode", "sideways"), "--mode must be one of total, path"),
    Case("--prompts unknown", ("patch", "--prompts", "some"), "--prompts must be one of known, all"),
    Case(
        "--prompts all, no prompt with a valid answer token",
        ("patch", "--prompts", "all", "--relation", "years.json", "--set", "recall.answer_metric=first_token"),
        "no prompt left for relation 'years' after filtering (answer_first_token_shared: 3)",
        files={"years.json": SHARED_FIRST_TOKEN},
        model=True,
    ),
    Case("--preset unknown", ("run", "--preset", "nope", "--out", "run"), "unknown preset 'nope'; available: paper, recallscope"),
    # issue 15: causal tracing and attention knockout
    Case(
        "trace: the subject is the prompt's last token",
        ("trace", "--relation", "endsubj.json", "--set", "recall.known_top_k=1000"),
        "cannot be located before the last token of prompt 0 ('The capital city of France': subject tokens 4..4, last token 4)",
        files={"endsubj.json": REL([("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo")], ("The capital city of {}",))},
        progress_lines=1,
        model=True,
    ),
    Case(
        "trace: window larger than the model",
        ("trace", "--set", "trace.window=31"),
        "trace.window 31 is larger than the model (30 layers)",
        model=True,
    ),
    Case(
        "knockout: window larger than the model",
        ("knockout", "--set", "knockout.window=31"),
        "knockout.window 31 is larger than the model (30 layers)",
        model=True,
    ),
    Case("trace: noise 0", ("trace", "--set", "trace.noise=0"), "trace.noise must be a number > 0"),
    Case("surgery: unknown null", ("surgery", "--set", "surgery.nulls=shuffle"), "surgery.nulls"),
    Case("trace: noise negative", ("trace", "--set", "trace.noise=-1"), "trace.noise must be a number > 0"),
    Case(
        "a sweep with cells its data cannot support",
        (
            "run",
            "--relation",
            "small.json,years.json",
            "--max-prompts",
            "3",
            "--stages",
            "recall",
            "--no-report",
            "--set",
            "recall.answer_metric=first_token",
            "--out",
            "run",
        ),
        "recallscope: incomplete: not measurable here: years 0-shot: recall (see run/summary.json)",
        files={"small.json": SMALL, "years.json": SHARED_FIRST_TOKEN},
        exit_code=3,
        model=True,
    ),
    Case(
        "weight cache corrupt (truncated)",
        ("recall", "--max-prompts", "4", "--json"),
        "failed its hash check; rebuilding it from the GGUF file",
        exit_code=0,
        corrupt_cache=True,
        model=True,
    ),
    Case(
        "claims --write with --set",
        ("claims", "run", "--write", "--set", "claims.min_suppression_logits=0.2"),
        "--write keeps the run's claims settings",
        files={"run/": ""},
    ),
    Case(
        "report --figures: unknown format",
        ("report", "run", "--figures", "figs", "--format", "jpg"),
        "--format must be one of png, svg, pdf, got 'jpg'",
        files={"run/": ""},
    ),
    Case(
        "report: --format without --figures",
        ("report", "run", "--format", "svg"),
        "--format applies to --figures DIR",
        files={"run/": ""},
    ),
    # issue 25: each of these was a traceback, or worse, a silent mix or a deleted file
    Case(
        "--out a folder that is not a run directory",
        ("recall", "--out", "thesis"),
        "--out thesis is not a recallscope run directory (it holds .thesis.tmp, notes.txt",
        files={"thesis/.thesis.tmp": "draft", "thesis/notes.txt": "mine", "thesis/patch/my_results.parquet": "mine"},
    ),
    Case("--device mps", ("recall", "--device", "mps"), "--device mps: recallscope runs on cpu or cuda, not mps"),
    Case("--device meta", ("recall", "--device", "meta"), "--device meta: recallscope runs on cpu or cuda, not meta"),
    Case("--device xla", ("recall", "--device", "xla"), "--device xla: recallscope runs on cpu or cuda, not xla"),
    Case(
        "--threads past what the machine can start",
        ("recall", "--threads", "100000"),
        "--threads must be in 1..",
        machine=(r"(?<=in 1\.\.)\d+",),
    ),
    Case("--seed negative", ("recall", "--seed", "-1"), "--seed must be an integer in [0, 9223372036854775807], got -1"),
    Case(
        "--set: a resample count past the machine's memory",
        ("run", "--set", "suppress.n_bootstrap=1e11", "--out", "run"),
        "suppress.n_bootstrap=100000000000.0 is not allowed: suppress.n_bootstrap must be an integer in [1, ",
        machine=(r"(?<=in \[1, )[\d,]+",),
    ),
    Case(
        "--set: a batch past the machine's memory",
        ("recall", "--set", "recall.batch_size=1e15"),
        "recall.batch_size must be an integer in [1, ",
        machine=(r"(?<=in \[1, )[\d,]+",),
    ),
    Case(
        "relation: a lone surrogate",
        ("recall", "--relation", "surrogate.json"),
        "samples[0].subject holds a lone UTF-16 surrogate (\\ud800 at character 2), which is not text",
        files={"surrogate.json": '{"prompt_templates": ["{} is"], "samples": [{"subject": "Fr\\ud800nce", "object": "Paris"}]}'},
    ),
    Case(
        "relation: demonstration template without {}",
        ("recall", "--relation", "demo.json"),
        "properties.demonstration_template must contain exactly one '{}' for the subject (it has 0)",
        files={
            "demo.json": '{"prompt_templates": ["{} is"], "properties": {"demonstration_template": "The capital is"}, '
            '"samples": [{"subject": "France", "object": "Paris"}]}'
        },
    ),
    Case(
        "a sweep with one relation twice",
        ("run", "--relation", "a/capitals.json,b/capitals.json", "--out", "run"),
        "--relation lists one relation twice: 'a/capitals.json' and 'b/capitals.json' have the same content",
        files={"a/capitals.json": SMALL, "b/capitals.json": SMALL},
    ),
    Case(
        "local model: a config field of the wrong type",
        ("recall", "--model", "tiny"),
        "--model tiny: not a loadable model directory (StrictDataclassFieldValidationError: ",
        build="tiny_llama_wrong_type",
        model=True,
    ),
    Case(
        "local model: a truncated weight file",
        ("recall", "--model", "tiny"),
        "--model tiny: not a loadable model directory (",
        build="tiny_llama_truncated",
        model=True,
    ),
    Case(
        "report: a folder that is not a run directory",
        ("report", "notes"),
        "notes: not a run directory (no manifest.json or summary.json)",
        files={"notes/todo.txt": "x"},
    ),
    Case(
        "summary.json with a field of the wrong type",
        ("claims", "run"),
        "run/summary.json: field 'stages' must be an object, got list",
        files={"run/summary.json": '{"stages": ["recall"]}'},
    ),
    Case(
        "report: a stage name leading outside the run directory",
        ("report", "run"),
        "run: the stage name '../secret' is not a plain name (a run directory's files name only files inside it)",
        files={"run/summary.json": '{"stages": {"../secret": {"wall_seconds": 1}}}', "secret.parquet": "x"},
    ),
    Case(
        "claims --write: a sub-run path leading outside",
        ("claims", "run", "--write"),
        "run/summary.json: the runs[0].path '../victim' leads outside run",
        files={"run/summary.json": '{"runs": [{"path": "../victim", "relation": "x", "shots": 0}]}', "victim/": ""},
    ),
    Case(
        "a table changed after it was written (its body, header and footer intact)",
        ("report", "run"),
        "run: stage recall: recall.parquet does not match the sha256 its record holds (changed after recallscope wrote it)",
        before=("run", "--stages", "recall", "--max-prompts", "4", "--no-report", "--out", "run"),
        after="damage_recall_table",
        model=True,
    ),
)


@dataclass
class Outcome:
    exit_code: int
    stderr: str
    stdout: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def message(self) -> str:
        """The error line (or, for a case that succeeds, the note it printed)."""
        errors = [line for line in self.lines if line.startswith("recallscope:")]
        if not errors:  # a note of the run layer (not prefixed): the one that says what was repaired
            errors = [line for line in self.lines if "rewritten from" in line]
        return errors[-1] if errors else ""


def _corrupt_cache_copy(root: Path) -> Path:
    from recallscope.models import gguf
    from recallscope.models.loading import EMBEDDED

    source = gguf.cache_dir(EMBEDDED["smollm2-135m"])
    target = root / "cache" / "models" / source.name
    shutil.copytree(source, target)
    for name in ("view.json", "view.safetensors"):  # a cache from before the view cache: the weights are read
        (target / name).unlink(missing_ok=True)
    weights = target / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    return root / "cache"


def tiny_gpt2_12_positions(folder: Path) -> None:
    """``tiny/``: a random 1-layer GPT-2 with 12 learned positions and smollm2's tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from recallscope.models import gguf
    from recallscope.models.loading import EMBEDDED

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=49152, n_positions=12, n_embd=16, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(config).eval().save_pretrained(folder / "tiny")
    source = gguf.cache_dir(EMBEDDED["smollm2-135m"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / "tiny" / name)


def _tiny_llama(folder: Path) -> Path:
    """``tiny/``: a random 1-layer Llama with smollm2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from recallscope.models import gguf
    from recallscope.models.loading import EMBEDDED

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder / "tiny")
    source = gguf.cache_dir(EMBEDDED["smollm2-135m"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / "tiny" / name)
    return folder / "tiny"


def tiny_llama_wrong_type(folder: Path) -> None:
    config = json.loads((_tiny_llama(folder) / "config.json").read_text())
    config["num_hidden_layers"] = "one"
    (folder / "tiny" / "config.json").write_text(json.dumps(config))


def tiny_llama_truncated(folder: Path) -> None:
    weights = _tiny_llama(folder) / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)


def damage_recall_table(folder: Path) -> None:
    """Zero 16 bytes in the middle of run/recall.parquet: b"PAR1" still opens and ends it."""
    path = folder / "run" / "recall.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    path.write_bytes(bytes(data))


BUILDERS = {
    "tiny_gpt2_12_positions": tiny_gpt2_12_positions,
    "tiny_llama_wrong_type": tiny_llama_wrong_type,
    "tiny_llama_truncated": tiny_llama_truncated,
    "damage_recall_table": damage_recall_table,
}


def _subprocess(args, folder: Path, env: dict) -> Outcome:
    proc = subprocess.run(
        [sys.executable, "-m", "recallscope", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    return Outcome(proc.returncode, proc.stderr, proc.stdout)


def _in_process(args, folder: Path, env: dict) -> Outcome:
    """``recallscope.cli.main`` in this process (the tests: no interpreter start per case).
    An exception that escapes ``main`` propagates: that is the traceback a user would see."""
    import contextlib
    import io

    from recallscope.cli import main as cli_main

    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli_main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(cwd)
    return Outcome(code, err.getvalue(), out.getvalue())


def run_case(case: Case, workdir: Path | None = None, in_process: bool = False) -> Outcome:
    """Run one case in a fresh folder (``workdir``, or a temporary one); paths inside it print as <tmp>."""
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="recallscope-errors-")) if own else workdir
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "400"}
        if case.corrupt_cache:
            if in_process:
                raise ValueError("the corrupt-cache case runs in a subprocess (its own RECALLSCOPE_CACHE)")
            env["RECALLSCOPE_CACHE"] = str(_corrupt_cache_copy(folder))
        for name, text in case.files.items():
            path = folder / name
            if name.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        if case.build:
            BUILDERS[case.build](folder)
        cli = _in_process if in_process else _subprocess
        if case.before:
            first = cli(case.before, folder, env)
            assert first.exit_code == 0, first.stderr
        for name, text in case.edit.items():
            (folder / name).write_text(text, encoding="utf-8")
        if case.after:
            BUILDERS[case.after](folder)
        outcome = cli(case.args, folder, env)
        outcome.stderr = outcome.stderr.replace(str(folder), "<tmp>")
        for pattern in case.machine:
            outcome.stderr = re.sub(pattern, "<N>", outcome.stderr)
        return outcome
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def cell(text: str) -> str:
    """Text for a Markdown table cell, exactly as printed (HTML code, pipes escaped)."""
    return "<code>" + html.escape(text, quote=False).replace("|", "&#124;") + "</code>"


def row(case: Case, outcome: Outcome) -> str:
    command = "recallscope " + " ".join(case.args)
    note = f" (after {case.progress_lines} progress line)" if case.progress_lines else ""
    return f"| {case.name} | {cell(command)} | {cell(outcome.message)}{note} | {outcome.exit_code} |"


HEADER = """# Bad input: what recallscope says

Every row is a real run of the command (`python scripts/errors_table.py > docs/errors.md`
regenerates this page; `tests/test_errors.py` runs the same cases and checks that each message
below is what the command prints). Paths are relative to the folder the command ran in; the
files a case needs (a truncated relation, a file in the way of `--out`…) are written there first.

Bad input prints **one line on stderr** starting with `recallscope: error:`, exits with code
**2**, and never shows a traceback. Every `--set` value is parsed to its setting's type and checked
against the range declared beside the setting before the model loads; a relation file's content
(not its path) is part of a run's identity; prompts longer than a model's learned position table
are refused before any stage runs. A sweep (several relations or shot counts) whose cells lack the
data for some stage is not bad input: it finishes the other cells, writes the combined summary and
report, lists the empty cells under `incomplete` in `summary.json`, prints one
`recallscope: incomplete:` line and exits with code **3** (exit codes: 0 done, 1 a bug, 2 bad
input, 3 an incomplete sweep, 130 interrupted). The only exception to "one line" is an error that can only be
known after a stage ran (no prompt the model knows: the recall stage runs first and prints its
progress line). Range checks on `--layer`, `--head` and `--layers` happen before any stage runs (a
negative layer, an unknown choice or a value of the wrong type: before the model loads).
A weight cache that fails its hash check is not an error: it is rebuilt from the GGUF file
(exit 0, one note on stderr); so is a view cache (the weights as recallscope computes with them,
beside the weight cache), rebuilt through transformers with one note; so is a run directory's
summary.json that cannot be read, rewritten from the stage records it is written from. `--out` "unwritable": the tests run as root, who can write
anywhere a permission bit forbids, so the unwritable places are a path under a file and `/proc`.
`<N>` stands for a bound computed from the machine that ran the command (its memory, the threads it
lets one user start). recallscope writes only into a new or empty folder or a run directory it made,
one writer at a time: a second writer gets `recallscope: error: --out run is in use by PID …; wait for
it to finish, or rerun with --wait` (exit 2); a full or read-only filesystem gets `recallscope: error:
cannot write PATH: No space left on device; every file written before is complete, so rerunning the
same command once there is room resumes` (or `: Read-only file system`), exit 2 — these need a second
process or a full disk, so they are tested in tests/test_locks.py and tests/test_records.py rather
than listed here. A model whose weights hold a NaN or an infinity is refused at load naming the
tensor (tests/models/test_checks_and_cache.py); a stage whose model computes a NaN stops the run
naming the stage (tests/test_nonfinite.py).

| input | command | message (stderr) | exit |
|---|---|---|---|
"""


def main() -> None:
    lines = [HEADER.rstrip("\n")]
    for case in CASES:
        outcome = run_case(case)
        lines.append(row(case, outcome))
        print(f"{case.name}: {outcome.exit_code}", file=sys.stderr)
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
