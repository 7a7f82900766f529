"""The command line: one verb per stage, ``run`` for the whole study, ``report``, ``models``, ``relations``, ``bench``.

Every stage verb shares the common flags (--model, --relation, --shots, --out, --seed, --max-prompts,
--device, --dtype, --json, --threads). ``--json`` prints one JSON object on stdout and nothing else;
progress and notes go to stderr. Exit codes (:mod:`recallscope.errors`): 0 done; 2 bad input (one
line on stderr, no traceback); 3 a sweep finished but some cells lacked the data for some stages
(``summary.json`` lists them under ``incomplete``); 130 interrupted (rerun to resume); 1 a bug.

The stage verbs are made from the stage table (:data:`recallscope.pipeline.STAGES`): their help
and their flags are declared there, once. ``recallscope report RUN_DIR`` never imports the stage
table (nor torch): it renders from the run directory's files.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from typing import Any, Optional

import click
import typer
from rich.console import Console

from . import printing, verdicts
from .constraints import coerce
from .errors import EXIT_BUG, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USER, UserError
from .terminal import EscapingHandler, text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # help text is plain: a docstring's single line breaks are joined and the paragraph rewrapped to the
    # terminal (Typer's default "rich" mode keeps them, leaving 1–3-word stubs at 80 columns), and brackets
    # such as "[95% CI]" are not read as markup
    rich_markup_mode=None,
    help="How a transformer language model recalls a fact (Lv et al. 2024), end to end.",
)
_APP = app  # the real app (a test may swap ``app`` for its own)
out_console = Console()
err_console = Console(stderr=True)


def _note(message: str) -> None:
    """A note on stderr (the run layer's log lines come here): escaped, never parsed as markup."""
    err_console.print(text(message, "dim", keep_newlines=True), soft_wrap=True)


def _error(message: str) -> None:
    """The one line of a failed command on stderr, escaped (it often quotes a file's contents)."""
    err_console.print(text(f"recallscope: {message}", keep_newlines=True), soft_wrap=True)


def _parse_set(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _split_list(value: Optional[str], kind=str) -> list:
    if value is None:
        return []
    try:
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise UserError(f"cannot read {value!r} as a comma-separated list of {kind.__name__}") from exc


def _print_summary(stage: str, summary: dict, as_json: bool) -> None:
    if as_json:
        printing.print_json(_json_ready(summary))
        return
    printing.print_stage(out_console, stage, summary)


def _json_ready(value):
    from .rundir import _clean

    return _clean(value)


# Options every stage verb and ``run`` share (one definition each).
def settings_epilog(stage) -> str:
    """The stage's settings with their defaults, for its --help: ``--set <stage>.<field>=<value>``."""
    import dataclasses

    def default(f) -> str:
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)

    fields = [f for f in dataclasses.fields(stage.config_type) if f.name != "seed" and f.init]
    return f"Settings (--set {stage.name}.<field>=<value>; defaults shown): " + "; ".join(
        f"{f.name}={default(f)}" for f in fields
    )


MODEL_OPTION = typer.Option("smollm2-135m", "--model", "-m", help="Alias, hub id or local directory.")
SEED_OPTION = typer.Option(0, "--seed", help="Every random choice of the run derives from it (see manifest.json 'seeds').")
MAX_PROMPTS_OPTION = typer.Option(
    "default",
    "--max-prompts",
    help="Prompts sampled (seeded) from the relation: a number, or all. Default: 32 (the paper preset: all).",
    show_default=False,
)
DEVICE_OPTION = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 or auto.")
DTYPE_OPTION = typer.Option("float32", "--dtype")
DEVICE_MAP_OPTION = typer.Option(
    None, "--device-map", help="auto or balanced: split a model bigger than one device over the visible devices (accelerate)."
)
JSON_OPTION = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout.")
WIDE_OPTION = typer.Option(
    False, "--wide", help="Every column of the claims (the primary figure, margin, flips at, the conditions), wrapped."
)
FORCE_OPTION = typer.Option(False, "--force", help="Redo stages already in --out.")
THREADS_OPTION = typer.Option(None, "--threads", help="torch intra-op threads (default: the CPUs this process may use).")
WAIT_OPTION = typer.Option(
    False, "--wait", help="When another recallscope process is writing the run directory, wait for it instead of stopping."
)

# The flags a stage verb may have; which setting each sets is the stage table's ``flags``.
FLAG_HELP = {
    "layer": "Layer (movers: its heads; decompose/intercept: the MLP).",
    "layers": "Comma-separated layers (patch; suppress: the attributed layers).",
    "head": "Head for movers.",
    "components": "Components to patch: heads,mlp,resid.",
    "solver": "decompose solver: lstsq or sgd.",
    "top_k": "How many top components/heads/tokens.",
    "mode": "patch: total (every later component recomputes) or path (every head frozen: the paper's path patching).",
    "prompts": "patch: known (the prompts the model gets right) or all (the paper's).",
}
PRESET_HELP = (
    "Definitions: recallscope (the defaults) or paper (the authors' code's choice for each setting recallscope.presets.PAPER "
    "lists; what it cannot reproduce is in the manifest)."
)
RELATION_DEFAULT = "country_capital_extended"


def _relation(relation: Optional[str], preset: str) -> str:
    """The --relation given, else the preset's relation, else recallscope's default (UserError: unknown preset)."""
    from .presets import get_preset

    return relation or get_preset(preset).run_settings().get("relation") or RELATION_DEFAULT


def _flag_overrides(stage: str, flags: dict[str, Any], stages: dict) -> dict[str, Any]:
    """The settings the given flags of ``recallscope <stage>`` set, from the stage table's ``flags``."""
    out = {}
    for name, value in flags.items():
        if value is None:
            continue
        target = stages[stage].flags.get(name)
        flag = f"--{name.replace('_', '-')}"
        if target is None:
            verbs = ", ".join(s.name for s in stages.values() if name in s.flags)
            raise UserError(f"{flag} does not apply to `recallscope {stage}` (it applies to: {verbs})")
        owner, _, field_name = target.partition(".")
        # checked here, so the message names the flag the user typed
        out[target] = coerce(stages[owner].config_type, field_name, value, setting=flag, flag=True)
    return out


def _check_common(threads: Optional[int]) -> None:
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")


def _add_stage_verbs(target: typer.Typer, pipeline) -> None:
    """One verb per stage of the stage table (``verb=True``), and ``run``."""

    def stage_command(stage: str):
        def command(
            model: str = MODEL_OPTION,
            relation: Optional[str] = typer.Option(
                None,
                "--relation",
                "-r",
                help=f"Built-in relation name or LRE JSON path (default: the preset's, else {RELATION_DEFAULT}).",
            ),
            shots: int = typer.Option(0, "--shots", "-k", help="In-context demonstrations per prompt."),
            out: Optional[str] = typer.Option(
                None, "--out", "-o", help="Run directory (resumable). Without it the stage's tables are not saved (it says so)."
            ),
            seed: int = SEED_OPTION,
            max_prompts: str = MAX_PROMPTS_OPTION,
            device: str = DEVICE_OPTION,
            dtype: str = DTYPE_OPTION,
            device_map: Optional[str] = DEVICE_MAP_OPTION,
            as_json: bool = JSON_OPTION,
            force: bool = FORCE_OPTION,
            threads: Optional[int] = THREADS_OPTION,
            wait: bool = WAIT_OPTION,
            layer: Optional[int] = typer.Option(None, "--layer", help=FLAG_HELP["layer"]),
            layers: Optional[str] = typer.Option(None, "--layers", help=FLAG_HELP["layers"]),
            head: Optional[int] = typer.Option(None, "--head", help=FLAG_HELP["head"]),
            components: Optional[str] = typer.Option(None, "--components", help=FLAG_HELP["components"]),
            solver: Optional[str] = typer.Option(None, "--solver", help=FLAG_HELP["solver"]),
            top_k: Optional[int] = typer.Option(None, "--top-k", help=FLAG_HELP["top_k"]),
            mode: Optional[str] = typer.Option(None, "--mode", help=FLAG_HELP["mode"]),
            prompts: Optional[str] = typer.Option(None, "--prompts", help=FLAG_HELP["prompts"]),
            preset: str = typer.Option("recallscope", "--preset", help=PRESET_HELP),
            settings: list[str] = typer.Option(
                [], "--set", help="Stage setting, e.g. --set patch.direction=denoise (repeatable)."
            ),
        ) -> None:
            _check_common(threads)
            max_prompts = pipeline.resolve_max_prompts(max_prompts, preset)
            if shots < 0:
                raise UserError(f"--shots must be >= 0, got {shots}")
            overrides = _parse_set(settings)
            overrides.update(
                _flag_overrides(
                    stage,
                    {
                        "layer": layer,
                        "layers": _split_list(layers, int) or None,
                        "head": head,
                        "components": _split_list(components) or None,
                        "solver": solver,
                        "top_k": top_k,
                        "mode": mode,
                        "prompts": prompts,
                    },
                    pipeline.STAGES,
                )
            )
            _set_threads(threads)
            run = pipeline.RunConfig(
                model=model,
                relation=_relation(relation, preset),
                shots=shots,
                seed=seed,
                max_prompts=max_prompts,
                device=device,
                dtype=dtype,
                preset=preset,
                device_map=_device_map(device_map),
            )
            _, summary = pipeline.execute(
                run, [stage], out=out, overrides=overrides, force=force, progress=True, log=_note, wait=wait
            )
            _print_summary(stage, summary, as_json)
            if out is None:
                # chosen over a default directory: a one-off look at a stage should not leave runs behind
                _note(
                    f"nothing was saved (no --out); add --out DIR to keep the {stage} stage's tables, then `recallscope report DIR`"
                )

        command.__doc__ = pipeline.STAGES[stage].help
        return command

    for stage in pipeline.STAGES.values():
        if stage.verb:
            target.command(stage.name, help=stage.help, epilog=settings_epilog(stage))(stage_command(stage.name))

    @target.command("claims")
    def claims_command(
        run_dir: str = typer.Argument(..., help="A run directory written by `recallscope run` (or a sweep's parent)."),
        sensitivity: bool = typer.Option(
            False, "--sensitivity", help="Also list every condition of every rule and the setting value where the verdict flips."
        ),
        as_json: bool = JSON_OPTION,
        wide: bool = WIDE_OPTION,
        settings: list[str] = typer.Option(
            [],
            "--set",
            help="Claims setting, e.g. --set claims.min_suppression_logits=0.2, or a threshold of another stage that a rule "
            "reads (every setting --sensitivity names), e.g. --set movers.min_ov_top5_share=0.3 (that stage is not re-run).",
        ),
        write: bool = typer.Option(
            False,
            "--write",
            help="Write the claims evaluated again into the run directory (a run made before a change of the claim rules); "
            "re-render the report with `recallscope report`.",
        ),
        wait: bool = WAIT_OPTION,
    ) -> None:
        """The paper's claims of a finished run, evaluated again from its files (no model; nothing written unless --write).

        One line per claim: its id, its verdict (holds, does not hold, inconclusive with ≈ the known
        prompts that would decide it, not measurable here), the statistic that decided it with its 95%
        interval and the threshold it is compared with. A condition is met when its whole interval
        passes, failed when its whole interval fails, and straddles otherwise; a claim holds when every
        condition is met, does not hold when one fails, and is inconclusive when none fails but one
        straddles (the deciding condition: recallscope.claims.decide_conditions). --wide adds the primary figure, the
        margin (the signed room to the threshold, in the condition's units) and flips at (the setting
        value at which the verdict flips, everything else fixed) and every condition; --sensitivity
        lists every condition with its setting and current value. A sweep prints its claims x cells
        grid (--wide: each cell's claims too)."""
        from pathlib import Path

        if not Path(run_dir).is_dir():
            raise UserError(f"{run_dir}: not a run directory")
        overrides = _parse_set(settings)
        bad = [k for k in overrides if not k.startswith("claims.") and k not in pipeline.claims.READ_SETTINGS]
        if bad:
            raise UserError(
                f"--set {bad[0]}: `recallscope claims` takes claims settings (claims.<field>) and the thresholds of other "
                f"stages its rules read ({', '.join(pipeline.claims.READ_SETTINGS)})"
            )
        if write and overrides:
            raise UserError("--write keeps the run's claims settings (its manifest lists them); drop --set to write")
        got = pipeline.claims_of_rundir(run_dir, overrides)
        if write:
            written = pipeline.write_claims(run_dir, got, wait=wait, note=_note)
            _note(f"claims rewritten in {len(written)} run director{'y' if len(written) == 1 else 'ies'} of {run_dir}")
        if as_json:
            payload = {
                "runs": [
                    {
                        "path": r["path"],
                        "relation": r["relation"],
                        "shots": r["shots"],
                        **{k: v for k, v in r["claims"].to_dict().items() if k in ("claims", "sensitivity")},
                    }
                    for r in got["runs"]
                ],
                "shot_claims": got["shot_claims"],
            }
            printing.print_json(_json_ready(payload))
            return
        _print_claims_of_rundir(got, sensitivity, wide)

    @target.command("run")
    def run_command(
        model: str = MODEL_OPTION,
        relation: Optional[str] = typer.Option(
            None,
            "--relation",
            "-r",
            help=f"Relation names or LRE paths, comma-separated (default: the preset's, else {RELATION_DEFAULT}).",
        ),
        shots: str = typer.Option("0", "--shots", "-k", help="Shot counts, comma-separated (e.g. 0,1,3)."),
        out: str = typer.Option("runs/latest", "--out", "-o", help="Run directory (resumable)."),
        seed: int = SEED_OPTION,
        max_prompts: str = MAX_PROMPTS_OPTION,
        device: str = DEVICE_OPTION,
        dtype: str = DTYPE_OPTION,
        device_map: Optional[str] = DEVICE_MAP_OPTION,
        as_json: bool = JSON_OPTION,
        force: bool = FORCE_OPTION,
        threads: Optional[int] = THREADS_OPTION,
        wait: bool = WAIT_OPTION,
        stages: Optional[str] = typer.Option(
            None, "--stages", help="Comma-separated subset of stages (default: all but the opt-in trace, knockout and surgery)."
        ),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.html."),
        wide: bool = WIDE_OPTION,
        preset: str = typer.Option("recallscope", "--preset", help=PRESET_HELP),
        settings: list[str] = typer.Option([], "--set", help="Stage setting, e.g. --set decompose.solver=sgd (repeatable)."),
        executor: str = typer.Option(
            "serial",
            "--executor",
            help="serial (in this process), ray (each cell a Ray task on a new local cluster) or ray://HOST:PORT.",
        ),
        ray_address: Optional[str] = typer.Option(
            None, "--ray-address", help="Run the cells on this running Ray cluster: auto, HOST:PORT or ray://HOST:PORT."
        ),
        cpus_per_cell: int = typer.Option(1, "--cpus-per-cell", help="CPUs each Ray task declares (and its torch threads)."),
    ) -> None:
        """The whole study: every stage, for each relation and shot count, and the HTML report.

        Exit code 3 when a sweep finished but some cells lacked the data for some stages."""
        _check_common(threads)
        max_prompts = pipeline.resolve_max_prompts(max_prompts, preset)
        targets = _split_list(stages) or pipeline.default_stages()
        _set_threads(threads)
        cells_on = _executor(executor, ray_address, cpus_per_cell)
        # the function the Python API's recallscope.run is: a Study for one cell, a Sweep for several
        summary = pipeline.run(
            model=model,
            relation=_split_list(_relation(relation, preset)),
            shots=_split_list(shots, int),
            stages=targets,
            out=out,
            seed=seed,
            max_prompts=max_prompts,
            device=device,
            dtype=dtype,
            force=force,
            progress=True,
            preset=preset,
            device_map=_device_map(device_map),
            settings=_parse_set(settings),
            executor=cells_on,
            log=_note,
            wait=wait,
        ).summary
        if report:
            path = _write_report(out, wait)
            if path is not None:
                _note(f"report: {path}")
        if as_json:
            printing.print_json(_json_ready(summary))
        else:
            printing.print_run(out_console, summary, wide)
        if summary.get("incomplete"):
            cells = "; ".join(f"{c['relation']} {c['shots']}-shot: {', '.join(c['stages'])}" for c in summary["incomplete"])
            _error(f"incomplete: not measurable here: {cells} (see {out}/summary.json)")
            raise typer.Exit(EXIT_INCOMPLETE)


DEVICE_MAPS = ("auto", "balanced")


def _device_map(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in DEVICE_MAPS:
        raise UserError(f"--device-map must be one of {', '.join(DEVICE_MAPS)}, got {value!r}")
    return value


def _executor(executor: str, ray_address: Optional[str], cpus_per_cell: int):
    """None (the serial executor) or a RayExecutor; Ray is imported only here, only when asked for."""
    from . import executors

    address = executors.parse_executor(executor, ray_address)
    if address is None:
        if cpus_per_cell != 1:
            raise UserError("--cpus-per-cell applies to the Ray executor (--executor ray)")
        return None
    return executors.RayExecutor(address, cpus_per_cell=cpus_per_cell)


@app.command("report")
def report_command(
    run_dir: str = typer.Argument(..., help="A run directory written by `recallscope run`."),
    figures: Optional[str] = typer.Option(
        None, "--figures", help="Also write every figure into this folder (<stage>-<n>.<format>; needs recallscope[export])."
    ),
    fmt: str = typer.Option("png", "--format", help="Figure files: png, svg or pdf (with --figures)."),
    wait: bool = WAIT_OPTION,
) -> None:
    """Render report.html again from a run directory's files (no model, no torch); --figures writes its figures as files."""
    from pathlib import Path

    from .rundir import MANIFEST, SUMMARY

    if figures is None and fmt != "png":
        raise UserError("--format applies to --figures DIR")
    from .report.export import check_format, write_figures

    check_format(fmt)  # before anything is written
    if not Path(run_dir).is_dir() or not any((Path(run_dir) / name).is_file() for name in (MANIFEST, SUMMARY)):
        raise UserError(f"{run_dir}: not a run directory (no manifest.json or summary.json)")
    path = _write_report(run_dir, wait)
    if path is not None:
        _note(f"report: {path}")
    if figures is not None:
        written = write_figures(run_dir, figures, fmt)
        _note(f"figures: {len(written)} {fmt} files in {figures}")


def _write_report(out: str, wait: bool = False):
    """report.html written into the run directory ``out`` under its lock (no other writer meanwhile)."""
    from .rundir import RunDir

    try:
        from .report import write_report
    except ImportError:
        _note("report: the report module is not available in this build")
        return None
    rundir = RunDir(out)
    rundir.lock(wait, _note)
    try:
        return write_report(out)
    finally:
        rundir.release()


def _print_claims_of_rundir(got: dict, sensitivity: bool, wide: bool) -> None:
    """``recallscope claims``: one run's claims; a sweep's claims x cells grid (``wide``: and each cell's claims)."""
    runs = got["runs"]
    plain = [{"path": r["path"], "relation": r["relation"], "shots": r["shots"], **r["claims"].to_dict()} for r in runs]
    if len(runs) == 1 and not got["shot_claims"]:
        r = plain[0]
        views = verdicts.views(r["claims"], r["sensitivity"])
        printing.print_claims(out_console, views, f"claims — {r['relation']} · {r['shots']}-shot · {r['path']}", wide)
        if sensitivity:
            printing.print_sensitivity(out_console, views)
        return
    grid = verdicts.grid(printing.sweep_cells(plain), got["shot_claims"])
    printing.print_grid(out_console, grid, "the paper's claims in each cell")
    if wide or sensitivity:
        for r in plain:
            views = verdicts.views(r["claims"], r["sensitivity"])
            title = f"claims — {r['relation']} · {r['shots']}-shot · {r['path']}"
            printing.print_claims(out_console, views, title, wide, note=False)
            if sensitivity:
                printing.print_sensitivity(out_console, views)
        if got["shot_claims"]:
            printing.print_claims(out_console, verdicts.views(got["shot_claims"]), "claims across shot counts", wide, note=False)


@app.command("models")
def models_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Model aliases, what is installed, how to install the rest."""
    from .models import model_catalog

    rows = model_catalog()
    if as_json:
        printing.print_json({"models": rows})
        return
    printing.print_models(out_console, rows)


@app.command("relations")
def relations_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Built-in relations (any LRE-format JSON file also works by path)."""
    from .tasks import builtin_names, load_relation

    rows = []
    for name in builtin_names():
        rel = load_relation(name)
        rows.append(
            {
                "relation": name,
                "samples": len(rel.samples),
                "templates": len(rel.templates),
                "example": rel.templates[0].format(rel.samples[0].subject) + " → " + rel.samples[0].object,
            }
        )
    if as_json:
        printing.print_json({"relations": rows})
        return
    printing.print_relations(out_console, rows)


@app.command("bench")
def bench_command(
    names: list[str] = typer.Argument(
        None, help="Benchmarks to run (default: all but the opt-in scaling and surgery; patch in both modes)."
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    relation: Optional[str] = typer.Option(None, "--relation", "-r", help="Default: each benchmark's own relation."),
    shots: Optional[str] = typer.Option(
        None, "--shots", help="Comma-separated shot counts (default 0,3; with --quick 0; scaling 0,1,3,5)."
    ),
    seed: int = typer.Option(0, "--seed"),
    max_prompts: Optional[int] = typer.Option(None, "--max-prompts"),
    device: str = typer.Option("cpu", "--device"),
    quick: bool = typer.Option(False, "--quick", help="Small samples: a smoke run of every benchmark in minutes."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line on stdout."),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="patch: total (exact vs naive) or path (path engine vs frozen-heads loop); default total."
    ),
    models: Optional[str] = typer.Option(None, "--models", help="scaling: comma-separated models of the model-size axis."),
    stages: Optional[str] = typer.Option(None, "--stages", help="scaling: which of patch_total, patch_path, trace, run."),
) -> None:
    """The performance benchmarks, one JSON line each (ratios measured side by side). Every line has
    ``bench_process_peak_rss_mb``: the benchmark process's own resident-set high-water mark since that
    benchmark began (the children it starts report theirs in ``peak_rss_gb``)."""
    from . import benchmarks
    from .benchmarks import _child

    if mode not in (None, "total", "path"):
        raise UserError(f"--mode must be one of total, path, got {mode!r}")
    if max_prompts is not None and max_prompts < 1:
        raise UserError(f"--max-prompts must be >= 1, got {max_prompts}")
    available = benchmarks.names()
    unknown = [n for n in names or [] if n not in available]
    if unknown:
        raise UserError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    shot_counts = tuple(_split_list(shots, int)) if shots else ()  # (): each benchmark's own
    if any(k < 0 for k in shot_counts):
        raise UserError(f"--shots must be >= 0, got {shots}")
    options = benchmarks.BenchOptions(
        model=model,
        relation=relation,
        shots=shot_counts,
        seed=seed,
        max_prompts=max_prompts,
        device=device,
        quick=quick,
        mode=mode or "total",
        models=tuple(_split_list(models)) if models else (),
        stages=tuple(_split_list(stages)) if stages else (),
    )
    plan = benchmarks.plan(names, options)
    if mode is not None and not names:
        plan = [(n, o) for n, o in plan if n != "patch" or o.mode == mode]  # --mode picks patch's mode
    for name, opts in plan:
        _child.trim_heap()  # what the previous benchmark freed goes back to the system first
        reset = _child.reset_own_peak()
        for line in benchmarks.measure(name, opts):
            # this process's own peak since the benchmark began (its children report theirs as peak_rss_gb)
            line.setdefault("bench_process_peak_rss_mb", _child.own_peak_mb() if reset else None)
            if as_json:
                printing.print_json(_json_ready(line))
                sys.stdout.flush()
            else:
                out_console.print(text(json.dumps(_json_ready(line), ensure_ascii=False)), soft_wrap=True)


def _click_exceptions(name: str) -> tuple[type, ...]:
    """``name`` from click and from the copy of click that typer >= 0.2x vendors (``typer._click``):
    typer raises its own copy's classes, which ``click.UsageError`` does not catch."""
    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        vendored = None
    if vendored is not None:
        modules.append(vendored)
    found = tuple(getattr(m, name) for m in modules if hasattr(m, name))
    if name in ("Exit", "Abort") and hasattr(typer, name):
        found += (getattr(typer, name),)
    return tuple(dict.fromkeys(found))


def _set_threads(threads: Optional[int]) -> None:
    """torch's intra-op threads (:func:`recallscope.models.loading.set_threads`); imported here, not at
    the top, because ``recallscope report`` must run without torch."""
    from .models.loading import set_threads

    set_threads(threads)


def _cell_failed() -> tuple[type, ...]:
    """The executors' "a cell failed on every try" error, where that module was loaded (a sweep asked for Ray)."""
    module = sys.modules.get("recallscope.executors")
    return (module.CellFailed,) if module is not None else ()


_VERBS_ADDED: list[bool] = []


def _log_through_terminal() -> None:
    """The package's warnings (a figure that could not be drawn, a file that is not JSON) reach
    stderr escaped, as every other line does (:class:`recallscope.terminal.EscapingHandler`)."""
    logger = logging.getLogger("recallscope")
    if not any(isinstance(h, EscapingHandler) for h in logger.handlers):
        logger.addHandler(EscapingHandler(err_console))


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and exit 2 for bad input, never a traceback for it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before torch loads: OpenMP threads that spin while waiting steal the cores of other processes.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    _log_through_terminal()
    if args[:1] != ["report"] and not _VERBS_ADDED and app is _APP:
        # The stage table imports every analysis stage, and torch; `recallscope report` needs neither.
        from . import pipeline

        _add_stage_verbs(app, pipeline)
        _VERBS_ADDED.append(True)
    try:
        status = app(args=args, standalone_mode=False)
        # typer >= 0.2x turns Ctrl-C into Exit(130) and, outside standalone mode, *returns* the code.
        if isinstance(status, int) and not isinstance(status, bool) and status != 0:
            if status == EXIT_INTERRUPTED:
                raise KeyboardInterrupt
            sys.exit(status)
    except UserError as exc:
        _error(f"error: {exc}")
        sys.exit(EXIT_USER)
    except _click_exceptions("NoArgsIsHelpError") as exc:
        out_console.print(text(exc.ctx.get_help() if getattr(exc, "ctx", None) else "", keep_newlines=True))
        sys.exit(0)
    except _click_exceptions("UsageError") as exc:
        message = " ".join(exc.format_message().split())
        _error(f"error: {message}")
        sys.exit(EXIT_USER)
    except _click_exceptions("Exit") as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except _click_exceptions("Abort"):
        err_console.print("recallscope: interrupted", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err_console.print("recallscope: interrupted; rerun the same command to resume", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    except _cell_failed() as exc:
        _error(f"error: {exc}")
        sys.exit(EXIT_BUG)
    except BrokenPipeError:
        sys.exit(0)
    except MemoryError as exc:
        _one_line(_out_of_memory(exc))
    except RuntimeError as exc:
        if not _is_out_of_memory(exc):
            raise
        _one_line(_out_of_memory(exc))
    except OSError as exc:
        if exc.errno not in _FILESYSTEM_REFUSALS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        _one_line(f"cannot write{where}: {exc.strerror}")


# A write the filesystem refused: full, over quota, read-only, no permission. Bad input (where
# --out or the cache points), said in one line; every other OSError is a bug and keeps its traceback.
_FILESYSTEM_REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _one_line(message: str) -> None:
    _error(f"error: {message}")
    sys.exit(EXIT_USER)


def _is_out_of_memory(exc: RuntimeError) -> bool:
    """torch's allocation failures: ``torch.OutOfMemoryError`` (CUDA) and the CPU allocator's RuntimeError."""
    said = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in said or "not enough memory" in said


def _out_of_memory(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return (
        f"out of memory{f' ({first})' if first else ''}: a size setting (--max-prompts, --set <stage>.batch_size, "
        "n_bootstrap, ...) asks for more memory than this machine has; lower it, or use a larger machine"
    )


if __name__ == "__main__":
    main()
