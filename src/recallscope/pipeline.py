"""The run layer: stages in dependency order over one run directory, resumable.

Stages are pure functions (model + prompts + config → result); this module is the only one that
reads or writes files. Each stage is registered as a :class:`Stage`: its name, the stages it
needs, its config dataclass, and a ``compute(ctx)`` that returns a result object with
``to_frame()`` and ``to_dict()``. A stage reads what earlier stages found through
``ctx.frame(name)`` / ``ctx.summary(name)``, which work the same whether the earlier stage ran in
this process or was loaded from the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import importlib.metadata
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from . import __version__
from .errors import UserError
from .models import Model, load_model
from .recall import RecallConfig, RecallResult, recall
from .rundir import RunDir, dumps
from .tasks import PromptSet, Relation, build_prompts, load_relation


@dataclass(frozen=True)
class RunConfig:
    model: str = "smollm2-135m"
    relation: str = "country_capital_extended"
    shots: int = 0
    seed: int = 0
    max_prompts: int | None = None
    device: str = "cpu"
    dtype: str = "float32"

    def identity(self) -> dict:
        """What makes two runs' results comparable (device is not part of it)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "device"}


@dataclass(frozen=True)
class Stage:
    name: str
    requires: tuple[str, ...]
    config_type: type
    compute: Callable[["StageContext"], Any]
    description: str = ""
    # Stages whose results this one reads when they exist, without requiring them to run;
    # a stage is recomputed whenever anything it requires or reads was recomputed.
    reads: tuple[str, ...] = ()
    # Checks the stage's config against the model (layer/head ranges, choices) before any stage
    # runs, so a bad flag fails in a second rather than after the stages before it.
    check: Callable[[Any, Model], None] | None = None


@dataclass
class StageContext:
    """What a stage's compute function sees."""

    model: Model
    run: RunConfig
    prompts: PromptSet  # every prompt built for the relation
    configs: dict[str, Any]  # stage name -> its config dataclass instance
    rundir: RunDir | None = None
    progress: bool = True
    results: dict[str, Any] = field(default_factory=dict)  # results computed in this process
    summaries: dict[str, dict] = field(default_factory=dict)

    def config(self, stage: str):
        return self.configs[stage]

    def frame(self, stage: str) -> pd.DataFrame:
        if stage in self.results:
            return self.results[stage].to_frame()
        if self.rundir is not None and self.rundir.table_path(stage).is_file():
            return self.rundir.read_table(stage)
        raise KeyError(f"stage {stage!r} has not run")

    def summary(self, stage: str) -> dict:
        return self.summaries[stage]

    def known_prompts(self) -> PromptSet:
        """Prompts the model knows (from the recall stage's table)."""
        table = self.frame("recall")
        tmp = RecallResult(self.prompts, table, self.configs["recall"])
        return tmp.known_prompts()

    def unknown_prompts(self) -> PromptSet:
        table = self.frame("recall")
        return RecallResult(self.prompts, table, self.configs["recall"]).unknown_prompts()


def _recall_stage(ctx: StageContext) -> RecallResult:
    return recall(ctx.model, ctx.prompts, ctx.config("recall"), progress=ctx.progress)


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    STAGES[stage.name] = stage
    return stage


register(Stage("recall", (), RecallConfig, _recall_stage, "score the prompts; keep the known ones"))

# Stages of later modules register themselves on import; the order here is the pipeline's order.
PIPELINE_ORDER = ("recall", "patch", "movers", "decompose", "intercept", "suppress", "claims")


def _load_stage_modules() -> None:
    for name in PIPELINE_ORDER[1:]:
        try:
            importlib.import_module(f"recallscope.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"recallscope.{name}":
                raise


def available_stages() -> list[str]:
    _load_stage_modules()
    return [s for s in PIPELINE_ORDER if s in STAGES]


def resolve(targets: list[str]) -> list[str]:
    """The targets and everything they need, in pipeline order."""
    _load_stage_modules()
    needed: set[str] = set()

    def visit(name: str) -> None:
        if name not in STAGES:
            raise UserError(f"unknown stage {name!r}; available: {', '.join(available_stages())}")
        if name in needed:
            return
        for dep in STAGES[name].requires:
            visit(dep)
        needed.add(name)

    for t in targets:
        visit(t)
    return [s for s in PIPELINE_ORDER if s in needed]


def make_configs(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every registered stage's config, with overrides applied to each config that has the field.

    Keys of ``overrides`` are either ``field`` (applied to every stage config that has it) or
    ``stage.field`` (one stage only).
    """
    _load_stage_modules()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    configs = {}
    used = set()
    for name, stage in STAGES.items():
        names = {f.name for f in dataclasses.fields(stage.config_type)}
        kwargs = {}
        for key, value in overrides.items():
            stage_name, _, field_name = key.rpartition(".")
            if (stage_name in ("", name)) and field_name in names:
                kwargs[field_name] = value
                used.add(key)
        configs[name] = stage.config_type(**kwargs)
    unused = set(overrides) - used
    if unused:
        raise UserError(f"unknown setting(s) {', '.join(sorted(unused))} for the stages {', '.join(available_stages())}")
    return configs


def check_stages(targets: list[str], configs: dict[str, Any], model: Model) -> list[str]:
    """Check each needed stage's config against the model before anything runs; the stages in order."""
    order = resolve(targets)
    for name in order:
        if STAGES[name].check is not None:
            STAGES[name].check(configs[name], model)
    return order


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "recallscope": __version__, "platform": platform.platform()}
    for pkg in ("torch", "transformers", "gguf", "numpy", "pandas", "pyarrow", "plotly"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def manifest(run: RunConfig, model: Model, configs: dict[str, Any], relation: Relation) -> dict:
    return {
        "identity": {**run.identity(), "model_hash": model.model_hash},
        "run": dataclasses.asdict(run),
        "model": model.describe(),
        "relation": {"name": relation.name, "source": relation.source, "n_samples": len(relation.samples)},
        "stage_configs": {k: dataclasses.asdict(v) for k, v in configs.items()},
        "versions": versions(),
    }


def summary_header(run: RunConfig, model: Model, prompts: PromptSet) -> dict:
    return {
        "model": model.name,
        "model_hash": model.model_hash,
        "relation": prompts.relation.name,
        "shots": run.shots,
        "seed": run.seed,
    }


def execute(
    run: RunConfig,
    targets: list[str],
    out: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    model: Model | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[StageContext, dict]:
    """Run ``targets`` (and what they need) for one relation and shot count.

    With ``out``, finished stages found there are reused (unless ``force``) and every new
    result is written there atomically. Returns the context (results in memory) and the summary.
    """
    rundir = RunDir(out) if out else None
    relation = load_relation(run.relation)
    configs = make_configs(overrides)
    if model is None:
        model = load_model(run.model, device=run.device, dtype=run.dtype)
    prompts = build_prompts(relation, model.tokenizer, shots=run.shots, seed=run.seed, max_prompts=run.max_prompts)
    ctx = StageContext(model=model, run=run, prompts=prompts, configs=configs, rundir=rundir, progress=progress)
    order = check_stages(targets, configs, model)
    summary = summary_header(run, model, prompts)
    summary["stages"] = {}
    # As JSON reads them back (tuples become lists), so a saved config compares equal to its own.
    stage_configs = json.loads(dumps({k: dataclasses.asdict(v) for k, v in configs.items()}))
    if rundir is not None:
        rundir.check_same_config({**run.identity(), "model_hash": model.model_hash}, force)
        rundir.create()
        old = rundir.summary()
        old_manifest = rundir.manifest() or {}
        same_run = old_manifest.get("identity") == {**run.identity(), "model_hash": model.model_hash}
        # A finished stage is kept when the run and its own config are unchanged; --force
        # redoes the stages asked for (and what they need), and keeps the others.
        for name, data in old.get("stages", {}).items():
            if not same_run or (force and name in order):
                continue
            if old_manifest.get("stage_configs", {}).get(name) == stage_configs.get(name) and rundir.has_stage(name):
                summary["stages"][name] = data
        ctx.summaries.update(summary["stages"])
        rundir.write_manifest(manifest(run, model, configs, relation))
    recomputed: set[str] = set()
    for name in order:
        upstream = _upstream(name)
        if name in summary["stages"] and rundir is not None and rundir.has_stage(name) and not (upstream & recomputed):
            ctx.summaries[name] = summary["stages"][name]
            log(f"{name}: reused from {rundir.path}")
            continue
        recomputed.add(name)
        summary["stages"].pop(name, None)
        start = time.perf_counter()
        result = STAGES[name].compute(ctx)
        data = result.to_dict()
        data["wall_seconds"] = round(time.perf_counter() - start, 3)
        ctx.results[name] = result
        ctx.summaries[name] = data
        summary["stages"][name] = data
        if rundir is not None:
            rundir.write_table(name, result.to_frame())
            _update_top_level(summary, ctx)
            rundir.write_summary(summary)
        log(f"{name}: done in {data['wall_seconds']:.1f} s")
    _update_top_level(summary, ctx)
    if rundir is not None:
        rundir.write_summary(summary)
    return ctx, summary


def _shot_claims(relations, shots, patch_frames, overrides) -> list[dict]:
    """Claim 6 (few-shot engages the same heads earlier), per relation: fewest vs most shots."""
    from .claims import shot_claim

    cfg = make_configs(overrides)["claims"]
    out = []
    for rel in relations:
        low, high = shots[0], shots[-1]
        claim = shot_claim(_slug(rel), (low, patch_frames.get((rel, low))), (high, patch_frames.get((rel, high))), cfg)
        out.append({**dataclasses.asdict(claim), "relation": _slug(rel)})
    return out


def _upstream(name: str) -> set[str]:
    """Every stage ``name`` requires or reads, transitively."""
    seen: set[str] = set()
    todo = list(STAGES[name].requires + STAGES[name].reads)
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in STAGES:
            continue
        seen.add(dep)
        todo += STAGES[dep].requires + STAGES[dep].reads
    return seen


def _update_top_level(summary: dict, ctx: StageContext) -> None:
    rec = summary["stages"].get("recall")
    if rec:
        for key in ("n_prompts", "n_known", "accuracy", "mean_p_answer"):
            summary[key] = rec[key]
    claims = summary["stages"].get("claims")
    if claims:
        summary["claims"] = claims["claims"]


def _slug(text: str) -> str:
    from pathlib import Path

    name = Path(text).stem if text.endswith(".json") else text
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "relation"


def _combined_identity(base: RunConfig, model: Model, relations: list[str], shots_list: list[int]) -> dict:
    shared = {k: v for k, v in base.identity().items() if k not in ("relation", "shots")}
    return {**shared, "model_hash": model.model_hash, "relations": relations, "shots": shots_list}


def execute_many(
    base: RunConfig,
    relations: list[str],
    shots_list: list[int],
    targets: list[str],
    out: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict:
    """Every relation × shot count, one model load; one sub-run directory each.

    With one relation and one shot count the run directory is ``out`` itself; otherwise
    ``out/<relation>/<k>shot`` holds each sub-run and ``out/summary.json`` lists them all.
    """
    from pathlib import Path

    if not relations:
        raise UserError("--relation: give at least one relation")
    if not shots_list:
        raise UserError("--shots: give at least one shot count")
    if any(k < 0 for k in shots_list):
        raise UserError(f"--shots must be >= 0, got {shots_list}")
    resolve(targets)  # fail early, before the model loads, on an unknown stage or setting
    make_configs(overrides)
    for rel in relations:
        load_relation(rel)  # ... or relation
    if out is not None:
        RunDir(out)  # refuses a file
    model = load_model(base.model, device=base.device, dtype=base.dtype)
    single = len(relations) == 1 and len(shots_list) == 1
    # Everything that can be refused is refused before the first stage runs: stage settings out of
    # range for the model, and a sub-run directory holding another configuration.
    check_stages(targets, make_configs(overrides), model)
    if out is not None:
        if not single:
            RunDir(out).check_same_config(_combined_identity(base, model, relations, shots_list), force)
        for rel in relations:
            for k in shots_list:
                sub = out if single else str(Path(out) / _slug(rel) / f"{k}shot")
                identity = {**dataclasses.replace(base, relation=rel, shots=k).identity(), "model_hash": model.model_hash}
                RunDir(sub).check_same_config(identity, force)
        RunDir(out).create()  # an unwritable --out fails here, before any stage
    runs = []
    patch_frames: dict[tuple[str, int], Any] = {}
    for rel in relations:
        for k in shots_list:
            run = dataclasses.replace(base, relation=rel, shots=k)
            sub = out if (single or out is None) else str(Path(out) / _slug(rel) / f"{k}shot")
            log(f"— {rel}, {k}-shot" + (f" → {sub}" if sub else ""))
            ctx, summary = execute(run, targets, out=sub, overrides=overrides, force=force, model=model,
                                   progress=progress, log=log)
            try:
                patch_frames[(rel, k)] = ctx.frame("patch")
            except KeyError:
                pass
            if not single and sub is not None:
                summary = {**summary, "path": str(Path(sub).relative_to(out))}
            runs.append(summary)
    if single:
        return runs[0]
    combined = {"model": model.name, "model_hash": model.model_hash, "runs": runs}
    if "claims" in STAGES and len(set(shots_list)) > 1:
        combined["claims"] = _shot_claims(relations, sorted(set(shots_list)), patch_frames, overrides)
    if out is not None:
        rundir = RunDir(out)
        rundir.create()
        rundir.write_manifest({
            "identity": _combined_identity(base, model, relations, shots_list),
            "run": dataclasses.asdict(base),
            "model": model.describe(),
            "versions": versions(),
        })
        rundir.write_summary(combined)
    return combined


@dataclass
class Study:
    """What :func:`run` returns: every stage's result object, the summary and the prompts."""

    results: dict[str, Any]
    summary: dict
    prompts: PromptSet
    model: Model

    def __getitem__(self, stage: str):
        return self.results[stage]

    def claims(self) -> pd.DataFrame:
        return pd.DataFrame(self.summary.get("claims", []))


def run(
    model: str | Model = "smollm2-135m",
    relation: str = "country_capital_extended",
    shots: int = 0,
    stages: list[str] | None = None,
    out: str | None = None,
    seed: int = 0,
    max_prompts: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    force: bool = False,
    progress: bool = True,
    **settings: Any,
) -> Study:
    """The whole study (or ``stages`` and what they need) for one relation and shot count.

    ``settings`` are stage settings, e.g. ``run(..., **{"decompose.solver": "sgd"})`` or
    ``run(..., n_corruptions=5)``. With ``out`` the run directory is written (and resumed).
    """
    loaded = model if isinstance(model, Model) else None
    name = loaded.name if loaded else model
    config = RunConfig(model=name, relation=relation, shots=shots, seed=seed, max_prompts=max_prompts, device=device, dtype=dtype)
    ctx, summary = execute(config, stages or available_stages(), out=out, overrides=settings, force=force,
                           model=loaded, progress=progress)
    return Study(results=ctx.results, summary=summary, prompts=ctx.prompts, model=ctx.model)
