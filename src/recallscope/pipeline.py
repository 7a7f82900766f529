"""The run layer: the one stage table, and the stages in dependency order over one run directory, resumable.

Stages are pure functions of the analysis modules (model + prompts + config → result); this module
is the only one that chooses what each stage reads and where its results go. :data:`STAGES`
declares every stage once, in pipeline order: its name, the stages it requires and reads, its
config dataclass, the function that feeds it, its report title, its CLI help and flags, and the
check of its settings against the model. Adding a stage is its module plus one entry here.

A stage reads what earlier stages found through ``ctx.table(name)`` / ``ctx.summary(name)``, which
work the same whether the earlier stage ran in this process or was loaded from the run directory.

Seeds: every random choice of a run derives from the run's ``--seed``. The prompts are sampled
with the seed itself; each stage gets its own seed, :func:`stage_seed` (a NumPy ``SeedSequence``
of the run seed and the stage's name), passed to the stage function or written into the stage
config's ``seed`` field when the user did not set that field. The manifest lists each derived seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from . import causal_trace, claims, decompose, intercept, knockout, movers, onset, patch, recall, records, suppress, surgery
from .constraints import coerce
from .errors import EXIT_INCOMPLETE, NonFiniteError, UserError
from .models import Model, load_model
from .presets import get_preset, merge
from .rundir import SUMMARY, RunDir, relation_slug
from .study import Study, Sweep
from .tasks import PromptSet, Relation, build_prompts, load_relation
from .tasks.prompts import DROP_SUBSAMPLED
from .version import __version__


DEFAULT_MAX_PROMPTS = 32  # the default run's seeded sample of the relation's prompts (see resolve_max_prompts)


def resolve_max_prompts(value: int | str | None, preset: str | None = None) -> int | None:
    """The prompt cap a run uses: ``value`` when given (an int >= 1, or "all" / None: every prompt),
    else ("default") the preset's (the paper preset: every prompt of its task), else
    :data:`DEFAULT_MAX_PROMPTS`. UserError on anything else.

    Why a default sample, and why 32: exact total-effect patching re-runs the end position from
    each of the 300 components' layers on (smollm2-135m: 16.1 GMAC per known prompt, the
    arithmetic in :mod:`recallscope.benchmarks.run`), and runs near the machine's matrix-product
    rate (BENCHMARKS.md, "run": the engine's share of that rate on each record). The default run
    has to fit 45 s on two idle CPU cores (SPEC, issue 17) with the interpreter, the model load, five other stages
    and the report; at 100 prompts (88 known) it took 91 s on this project's 2-core machine. That
    machine's speed drifts by ~20% from hour to hour (the same run's CPU seconds moved from 63 to
    72): 40 prompts (33 known) took 40 s at its usual speed and 47–50 s when it ran slow, 32
    (24 known) 35 s and 42 s, so 32 is the sample that fits both (BENCHMARKS.md, "run"). On
    smollm2-135m / country_capital_extended the claims table gives the same verdicts at 32, 40, 48
    and 100 prompts (only the margins move: the movers margin is −0.38 at 32, −0.14 at 100); the
    report's intervals say how wide a sample this is. ``--max-prompts 100`` or ``all`` for more.
    """
    if isinstance(value, str) and value != "default":
        if value.strip().lower() == "all":
            return None
        try:
            value = int(value)
        except ValueError:
            raise UserError(f"--max-prompts must be a number >= 1 or all, got {value!r}") from None
    if value == "default":
        settings = get_preset(preset).run_settings()
        return resolve_max_prompts(settings["max_prompts"]) if "max_prompts" in settings else DEFAULT_MAX_PROMPTS
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"--max-prompts must be a number >= 1 or all, got {value!r}")
    return value


@dataclass(frozen=True)
class RunConfig:
    model: str = "smollm2-135m"
    relation: str = "country_capital_extended"
    shots: int = 0
    seed: int = 0
    max_prompts: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    preset: str = "recallscope"  # the set of definitions (recallscope.presets); "paper": the paper's code's
    demonstrations: str = "template"  # build_prompts(demonstrations=...); the preset may set it
    device_map: str | None = None  # "auto" / "balanced": the model split over devices (load_model)

    def identity(self) -> dict:
        """What makes two runs' results comparable (where the weights sit — device, device_map — is not
        part of it; the relation's content hash and the model hash are added by :func:`run_identity`)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("device", "device_map")}


def relation_hash(relation: Relation) -> str:
    """SHA-256 of the relation's content (templates and samples), not of its path: an edited file is another run."""
    content = {
        "name": relation.name,
        "templates": list(relation.templates),
        "templates_zs": list(relation.templates_zs),
        "samples": [[s.subject, s.object] for s in relation.samples],
    }
    return hashlib.sha256(json.dumps(content, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def run_identity(run: RunConfig, model: Model, relation: Relation) -> dict:
    return {**run.identity(), "relation_hash": relation_hash(relation), "model_hash": model.model_hash}


def stage_seed(run_seed: int, stage: str) -> int:
    """The seed of ``stage`` in a run with ``--seed run_seed``: a 32-bit integer, the same on every platform."""
    return int(np.random.SeedSequence([int(run_seed), zlib.crc32(stage.encode("utf-8"))]).generate_state(1)[0])


# ----------------------------------------------------------------------------- the stage table
@dataclass(frozen=True)
class Stage:
    """One entry of the stage table."""

    name: str
    title: str  # the report's section heading
    help: str  # the CLI verb's help
    config_type: type
    compute: Callable[["StageContext"], Any]  # feeds the stage function from the context
    requires: tuple[str, ...] = ()  # must run first (and are run by `recallscope <name>`)
    # Read when they exist, without being run for this stage; a stage is recomputed whenever
    # anything it requires or reads changed (its record holds their content hashes).
    reads: tuple[str, ...] = ()
    # Requirements that depend on the stage's config (e.g. movers needs patch only to choose its heads).
    requires_when: Callable[[Any], tuple[str, ...]] | None = None
    # Checks the config against the model (layer/head ranges) before any stage runs.
    check: Callable[[Any, Model], None] | None = None
    # CLI flags of this stage's verb → the setting each sets (e.g. `intercept --layer` sets decompose.layer).
    flags: Mapping[str, str] = field(default_factory=dict)
    verb: bool = True  # has its own CLI verb
    # In `run` without --stages (False: opt-in, for stages slower than the default run's time target).
    in_default_run: bool = True

    def needs(self, config) -> tuple[str, ...]:
        extra = self.requires_when(config) if self.requires_when is not None and config is not None else ()
        return tuple(dict.fromkeys(self.requires + tuple(extra)))


@dataclass
class StageContext:
    """What a stage's compute function sees."""

    model: Model
    run: RunConfig
    prompts: PromptSet  # every prompt built for the relation
    configs: dict[str, Any]  # stage name -> its config dataclass instance
    seeds: dict[str, int] = field(default_factory=dict)  # stage name -> its derived seed
    rundir: RunDir | None = None
    progress: bool = True
    results: dict[str, Any] = field(default_factory=dict)  # results computed in this process
    summaries: dict[str, dict] = field(default_factory=dict)
    # Stages whose files in ``rundir`` may be read (their records checked by the run); None: any
    # stage the directory holds (reading a finished run, no model: each table is checked against
    # its record as it is read).
    available: set[str] | None = None

    def config(self, stage: str):
        return self.configs[stage]

    def table(self, stage: str, name: str | None = None) -> pd.DataFrame:
        """A table of an earlier stage (``name`` None: its main table), from memory or the run directory."""
        if stage in self.results:
            tables = self.results[stage].tables()
            return tables[name] if name is not None else next(iter(tables.values()))
        if self.rundir is not None and (self.available is None or stage in self.available) and self.rundir.has_table(stage, name):
            return self.rundir.read_table(stage, name)
        raise KeyError(f"stage {stage!r} has not run")

    def table_or_none(self, stage: str, name: str | None = None) -> pd.DataFrame | None:
        try:
            return self.table(stage, name)
        except KeyError:
            return None

    def summary(self, stage: str) -> dict:
        return self.summaries[stage]

    def _recall(self) -> recall.RecallResult:
        table = self.table("recall")
        if len(table) != len(self.prompts) or ("text" in table and list(table["text"]) != [p.text for p in self.prompts.prompts]):
            raise RuntimeError(
                f"the recall table holds {len(table)} prompts, the prompt set {len(self.prompts)}: "
                "a stale table was read (the run identity should have caught it)"
            )
        return recall.RecallResult(self.prompts, table, self.configs["recall"])

    def known_prompts(self) -> PromptSet:
        """Prompts the model knows (from the recall stage's table)."""
        return self._recall().known_prompts()

    def unknown_prompts(self) -> PromptSet:
        return self._recall().unknown_prompts()


def _recall(ctx: StageContext) -> recall.RecallResult:
    return recall.recall(ctx.model, ctx.prompts, ctx.config("recall"), progress=ctx.progress)


def _patch(ctx: StageContext) -> patch.PatchResult:
    config = ctx.config("patch")
    return patch.patch(ctx.model, patch.stage_prompts(ctx, config), config, progress=ctx.progress)


def _movers(ctx: StageContext) -> movers.MoversResult:
    return movers.movers(
        ctx.model,
        ctx.known_prompts(),
        ctx.config("movers"),
        patch=ctx.table_or_none("patch", "components"),
        progress=ctx.progress,
    )


def _decompose(ctx: StageContext) -> decompose.DecomposeResult:
    config: decompose.DecomposeConfig = ctx.config("decompose")
    cfg = ctx.model.cfg
    if config.layer is not None:
        layer, reason = decompose.choose_layer(config, cfg.n_layers, cfg.mlp_reads_own_heads(), None, None)
    else:
        movers_summary = ctx.summaries.get("movers")
        layer, reason = decompose.choose_layer(
            config, cfg.n_layers, cfg.mlp_reads_own_heads(), movers_summary, ctx.table_or_none("patch", "components")
        )
    prompts = ctx.known_prompts()
    acts = decompose.end_activations(
        ctx.model.view, prompts.prompts, ctx.model.tokenizer.pad_token_id, config.batch_size, ctx.progress
    )
    return decompose.decompose(acts, layer, config, seed=ctx.seeds["decompose"], layer_reason=reason, progress=ctx.progress)


def _intercept(ctx: StageContext) -> intercept.InterceptResult:
    layer, b = decompose.intercept_from_table(ctx.table("decompose", "intercept"))
    prompts = ctx.known_prompts()
    tok = ctx.model.tokenizer
    return intercept.analyse_intercept(
        ctx.model.view,
        prompts.prompts,
        torch.as_tensor(b),
        layer,
        prompts.answer_ids,
        ctx.config("intercept"),
        seed=ctx.seeds["intercept"],
        pad_id=tok.pad_token_id,
        decode=lambda t: tok.decode([t]),
        progress=ctx.progress,
    )


def _onset(ctx: StageContext) -> onset.OnsetResult:
    """The onsets, the move timed by the heads patching singles out as movers (``claims.patching_movers``,
    C1's heads) where the movers stage ran; by every head where it did not (the summary says which)."""
    movers = None
    if ctx.summaries.get("movers") is not None:
        movers = [
            (int(h["layer"]), int(h["head"])) for h in claims.patching_movers(ctx.summaries["movers"], ctx.config("claims"))
        ]
        if not movers:
            raise UserError("onset: the movers stage named no mover head, so the move has no heads to time it")
    return onset.onset(ctx.model, ctx.known_prompts(), ctx.config("onset"), progress=ctx.progress, movers=movers)


def _suppress(ctx: StageContext) -> suppress.SuppressResult:
    return suppress.suppress(ctx.model, ctx.known_prompts(), ctx.unknown_prompts(), ctx.config("suppress"), progress=ctx.progress)


def _claims(ctx: StageContext) -> claims.ClaimsResult:
    tables = {
        "movers": ctx.table_or_none("movers"),
        "decompose": ctx.table_or_none("decompose"),
        "decompose_heldout": ctx.table_or_none("decompose", "heldout"),
        "intercept": ctx.table_or_none("intercept"),
    }
    rows = list(claims.run_claims(dict(ctx.summaries), tables, ctx.config("claims")))
    # The other localisations' claims, where those opt-in stages ran (rows only then).
    if "trace" in ctx.summaries:
        rows.append(
            causal_trace.mlp_peak_claim(ctx.table_or_none("trace", "grouped"), ctx.summaries["trace"], ctx.config("claims"))
        )
    if "knockout" in ctx.summaries:
        rows.append(
            knockout.reads_subject_claim(
                ctx.table_or_none("knockout", "windows"), ctx.summaries["knockout"], _mover_layers(ctx), ctx.config("claims")
            )
        )
    if "surgery" in ctx.summaries:
        rows.append(
            surgery.necessity_claim(
                ctx.table_or_none("surgery", "prompts"),
                ctx.summaries["surgery"],
                claims.patching_movers(ctx.summaries.get("movers"), ctx.config("claims")),
                ctx.config("claims"),
            )
        )
    available = known_available(ctx.summaries.get("recall"))
    return claims.ClaimsResult(tuple(claims.with_available(r, available) for r in rows), ctx.config("claims"))


def known_available(recall_summary: dict | None) -> int | None:
    """The known prompts the run's relation can give at this run's known rate: its usable prompts
    (``n_prompts`` plus those ``--max-prompts`` left out, the recall summary's ``dropped``) × the
    share known here, rounded (the claims' ``prompts_available``). None without a recall summary."""
    s = recall_summary or {}
    n, known = s.get("n_prompts"), s.get("n_known")
    if not n or known is None:
        return None
    usable = n + int((s.get("dropped") or {}).get(DROP_SUBSAMPLED, 0))
    return int(round(usable * known / n))


def claims_of_rundir(path: str, overrides: dict[str, Any] | None = None) -> dict:
    """The claims of a finished run directory, evaluated again from its files (no model).

    The claims settings are the run's own (its manifest's), then ``overrides`` (e.g.
    ``{"claims.min_suppression_logits": 0.2}``, or another stage's threshold the rules read,
    ``claims.READ_SETTINGS``: ``{"movers.min_ov_top5_share": 0.3}``, which re-evaluates the rules
    without re-running that stage), checked as ``--set`` is. Returns ``{"runs": [{"path", "claims": ClaimsResult}], "shot_claims": [rows]}``;
    a sweep's parent directory gives one entry per sub-run and the few-shot claims across them.
    Nothing is written. UserError when ``path`` holds no finished run.
    """
    top = RunDir(path)
    if not (top.path / SUMMARY).is_file():
        raise UserError(f"{path}: no summary.json (not a finished run directory)")
    summary = top.summary()
    seed = (top.manifest() or {}).get("run", {}).get("seed", summary.get("seed", 0)) or 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"{top.path / 'manifest.json'}: run.seed must be an integer, got {seed!r}")
    # a sub-run's path is read from the file: it must lead to a folder inside this one
    subs = [
        (str(top.inside(r["path"], f"runs[{i}].path", top.path / SUMMARY)), r)
        for i, r in enumerate(summary.get("runs", []))
        if r.get("path") is not None
    ] or [(path, summary)]
    configs = make_configs({**_recorded_claims_settings(subs[0][0]), **(overrides or {})}, seed=seed)
    # other stages' thresholds the rules read (claims.READ_SETTINGS), as checked values
    read = {k: getattr(configs[k.split(".", 1)[0]], k.split(".", 1)[1]) for k in (overrides or {}) if k in claims.READ_SETTINGS}
    out: dict = {"runs": [], "shot_claims": []}
    patch_frames: dict[tuple[str, int], Any] = {}
    recall_summaries: dict[tuple[str, int], Any] = {}
    onset_cells: dict[tuple[str, int], Any] = {}
    for sub, sub_summary in subs:
        rundir = RunDir(sub)
        ctx = StageContext(
            model=None,
            run=None,
            prompts=None,
            configs=configs,
            rundir=rundir,  # type: ignore[arg-type]
            progress=False,
            summaries=claims.with_read_settings(dict(rundir.summary().get("stages", {})), read),
        )
        out["runs"].append(
            {"path": sub, "relation": sub_summary.get("relation"), "shots": sub_summary.get("shots"), "claims": _claims(ctx)}
        )
        frame = ctx.table_or_none("patch")
        key = (str(sub_summary.get("relation")), int(sub_summary.get("shots") or 0))
        if frame is not None:
            patch_frames[key] = frame
        recall_summaries[key] = ctx.summaries.get("recall")
        onset_cells[key] = _onset_cell(ctx)
    # every relation and shot count the run asked for, as the sweep decided them: a cell without a
    # patch table leaves its relation's claim not measurable (fewest vs most shots asked for)
    relations = list(dict.fromkeys(str(r.get("relation")) for _, r in subs))
    shots = sorted({int(r.get("shots") or 0) for _, r in subs})
    if len(shots) > 1:
        out["shot_claims"] = _shot_claims(relations, shots, patch_frames, configs, recall_summaries, onset_cells=onset_cells)
    return out


def _recorded_claims_settings(path: str) -> dict[str, Any]:
    """The claims settings a run was made with (its manifest's ``stage_configs``), as ``claims.<field>``
    overrides; the seed is derived from the run's seed again. Empty when the manifest lists none."""
    recorded = ((RunDir(path).manifest() or {}).get("stage_configs") or {}).get("claims") or {}
    fields = {f.name for f in dataclasses.fields(claims.ClaimsConfig)} - {"seed"}  # a setting since removed is left out
    return {f"claims.{k}": v for k, v in recorded.items() if k in fields}


def write_claims(path: str, got: dict, wait: bool = False, note: Callable[[str], None] | None = None) -> list[str]:
    """Write claims evaluated again by :func:`claims_of_rundir` into the run directory ``path``:
    each run's claims tables, record and summary's claims (the stage's timings kept), and a sweep's
    parent summary (its runs' claims and the claims across shot counts). Only runs whose claims
    stage ran are rewritten, and only inside ``path``; each directory is locked while it is written
    (UserError naming the holder, unless ``wait``). The report is not re-rendered (``recallscope
    report``). Returns the run directories written. For runs made before a change of the claim
    rules: the rules of this version, the run's own measurements; the claims record names this
    version and code."""
    top = RunDir(path)
    root = top.path.resolve()
    for r in got["runs"]:
        if not Path(r["path"]).resolve().is_relative_to(root):
            raise UserError(f"{path}: the run {r['path']!r} is outside it; nothing written")
    written = []
    by_path = {}
    top.lock(wait, note)
    try:
        for r in got["runs"]:
            rundir = RunDir(r["path"])
            if rundir.path.resolve() != root:
                rundir.lock(wait, note)
            try:
                data = _write_claims_of(rundir, r["claims"])
            finally:
                if rundir.path.resolve() != root:
                    rundir.release()
            if data is None:
                continue
            by_path[str(Path(r["path"]).resolve())] = data
            written.append(r["path"])
        summary = top.summary()
        if summary.get("runs"):  # a sweep's parent: its copies of the runs' summaries and the shot claims
            for i, entry in enumerate(summary["runs"]):
                if entry.get("path") is None:
                    continue
                data = by_path.get(str(top.inside(entry["path"], f"runs[{i}].path", top.path / SUMMARY).resolve()))
                if data is not None:
                    entry.setdefault("stages", {})["claims"] = data
                    entry["claims"] = data["claims"]
            if got["shot_claims"]:
                summary["claims"] = got["shot_claims"]
            top.write_summary(summary)
    finally:
        top.release()
    return written


def _write_claims_of(rundir: RunDir, result: claims.ClaimsResult) -> dict | None:
    """One run's claims rewritten (tables, record, summary, manifest entry); None when its claims stage never ran."""
    record, _ = rundir.read_record("claims")
    if record is None and not rundir.has_stage("claims"):
        return None
    summary = rundir.summary()
    old = summary.get("stages", {}).get("claims", {})
    data = {**result.to_dict(), **{k: old[k] for k in ("wall_seconds", "cpu_seconds") if k in old}}
    if record is None:  # a run directory written before records
        rundir.write_tables("claims", _tables(result))
    else:
        stage = STAGES["claims"]
        now = {
            **{k: record.get(k) for k in records.KEY},
            "recallscope": __version__,
            "code_sha256": records.code_sha256(stage.compute, stage.config_type),
        }
        record = rundir.write_stage("claims", _tables(result), {**now, "summary": data})
        described = rundir.manifest() or {}
        if isinstance(described.get("stage_records"), dict):
            described["stage_records"]["claims"] = {
                "record": rundir.record_path("claims").name,
                "content_sha256": records.content_sha256(record),
                "recallscope": __version__,
                "code_sha256": now["code_sha256"],
            }
            rundir.write_manifest(described)
    summary.setdefault("stages", {})["claims"] = data
    summary["claims"] = data["claims"]
    rundir.write_summary(summary)
    return data


def _mover_layers(ctx: StageContext) -> tuple[int, ...]:
    """Layers of the heads patching singles out as movers (``claims.patching_movers``: the same heads
    the movers claim tests, whether or not they pass its test); empty when the movers stage did not run."""
    heads = claims.patching_movers(ctx.summaries.get("movers"), ctx.config("claims"))
    return tuple(sorted({int(h["layer"]) for h in heads}))


def _trace(ctx: StageContext) -> causal_trace.TraceResult:
    return causal_trace.trace(ctx.model, ctx.known_prompts(), ctx.config("trace"), progress=ctx.progress)


def _knockout(ctx: StageContext) -> knockout.KnockoutResult:
    return knockout.knockout(
        ctx.model, ctx.known_prompts(), ctx.config("knockout"), progress=ctx.progress, mover_layers=_mover_layers(ctx)
    )


def _surgery(ctx: StageContext) -> surgery.SurgeryResult:
    heads = claims.patching_movers(ctx.summaries.get("movers"), ctx.config("claims"))
    return surgery.surgery(
        ctx.model, ctx.known_prompts(), [(h["layer"], h["head"]) for h in heads], ctx.config("surgery"), progress=ctx.progress
    )


_PATCH_FLAGS = {"layers": "patch.layers", "components": "patch.components"}

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "recall",
            "Recall — does the model know the fact?",
            "Score the prompts: accuracy, p(Y), rank, π; keep the known ones.",
            recall.RecallConfig,
            _recall,
        ),
        Stage(
            "patch",
            "Patch — causal mediation at the end position",
            "Causal mediation: patch every head and MLP at the end position.",
            patch.PatchConfig,
            _patch,
            requires=("recall",),
            check=patch.check_config,
            flags={**_PATCH_FLAGS, "top_k": "patch.top_k", "mode": "patch.mode", "prompts": "patch.prompts"},
        ),
        Stage(
            "movers",
            "Movers — heads that move the topic to the end",
            "Mover heads: attention to the subject, projection on its unembedding, OV copying.",
            movers.MoversConfig,
            _movers,
            requires=("recall",),
            reads=("patch",),
            # heads="top" chooses the candidates from the patch table; a given layer or heads="all" does not
            requires_when=lambda c: ("patch",) if c.layer is None and c.heads == "top" else (),
            check=lambda config, model: movers.check_config(config, model.cfg.n_layers, model.cfg.n_heads),
            flags={**_PATCH_FLAGS, "layer": "movers.layer", "head": "movers.head", "top_k": "movers.top_k"},
        ),
        Stage(
            "decompose",
            "Decompose — the MLP as per-head coefficients plus an intercept",
            "Fit the MLP output as per-head coefficients plus an intercept.",
            decompose.DecomposeConfig,
            _decompose,
            requires=("movers",),
            reads=("patch",),
            check=decompose.check_config,
            flags={**_PATCH_FLAGS, "layer": "decompose.layer", "solver": "decompose.solver"},
        ),
        Stage(
            "intercept",
            "Intercept — function application",
            "Function application: logit lens of the intercept and the redirect test.",
            intercept.InterceptConfig,
            _intercept,
            requires=("decompose",),
            check=intercept.check_config,
            flags={**_PATCH_FLAGS, "layer": "decompose.layer", "solver": "decompose.solver", "top_k": "intercept.top_k"},
        ),
        Stage(
            "suppress",
            "Suppress — anti-overconfidence in the final layer",
            "Anti-overconfidence in the final layer, and its mitigation.",
            suppress.SuppressConfig,
            _suppress,
            requires=("recall",),
            check=suppress.check_config,
            flags={"layers": "suppress.layers"},
        ),
        Stage(
            "onset",
            "Onset — the layer where the subject reaches the last position and the answer domain appears",
            "Per prompt: the layer where the mover heads' write along W_U[X] reaches a share of its peak, the layer where "
            "the logit lens shows the answer domain, p(Y) (compared across shot counts in a sweep).",
            onset.OnsetConfig,
            _onset,
            requires=("recall",),
            reads=("movers",),
        ),
        Stage(
            "trace",
            "Trace — causal tracing (Meng et al. 2022): which states carry the fact",
            "Causal tracing (ROME): noise the subject's embeddings, restore clean states, MLP and attention windows.",
            causal_trace.TraceConfig,
            _trace,
            requires=("recall",),
            check=causal_trace.check_config,
            in_default_run=False,  # ~T·L·3 restorations of n noised runs per prompt: minutes per prompt on 2 cores
        ),
        Stage(
            "knockout",
            "Knockout — attention knockout (Geva et al. 2023): where the last position reads the subject",
            "Attention knockout: block the last position's edges to the subject in windows of layers.",
            knockout.KnockoutConfig,
            _knockout,
            requires=("recall",),
            reads=("movers",),
            check=knockout.check_config,
            in_default_run=False,
        ),
        Stage(
            "surgery",
            "Surgery — the mover heads ablated against random head sets",
            "Ablate the mover heads (the movers claim's) and random head sets of the same size: the drop in p(Y) and accuracy against a null.",
            surgery.SurgeryConfig,
            _surgery,
            requires=("recall", "movers"),
            check=surgery.check_config,
            in_default_run=False,
        ),
        Stage(
            "claims",
            "Claims — does the paper's story hold on this run?",
            "The paper's claims: figure, interval, verdict.",
            claims.ClaimsConfig,
            _claims,
            requires=("recall",),
            reads=("patch", "movers", "decompose", "intercept", "suppress", "trace", "knockout", "surgery"),
            verb=False,
        ),
    )
}


def available_stages() -> list[str]:
    return list(STAGES)


def default_stages() -> list[str]:
    """The stages `run` computes without --stages (the opt-in ones left out)."""
    return [name for name, stage in STAGES.items() if stage.in_default_run]


def resolve(targets: list[str], configs: dict[str, Any] | None = None) -> list[str]:
    """The targets and everything they need (under ``configs``; default configs without), in pipeline order."""
    needed: set[str] = set()

    def visit(name: str) -> None:
        if name not in STAGES:
            raise UserError(f"unknown stage {name!r}; available: {', '.join(STAGES)}")
        if name in needed:
            return
        needed.add(name)
        for dep in STAGES[name].needs((configs or {}).get(name, STAGES[name].config_type())):
            visit(dep)

    for t in targets:
        visit(t)
    return [s for s in STAGES if s in needed]


def make_configs(overrides: dict[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """Every stage's config, with overrides parsed, range-checked and applied to each config that has the field.

    Keys of ``overrides`` are either ``field`` (applied to every stage config that has it) or
    ``stage.field`` (one stage only); each value is parsed to the field's type and checked against
    the constraint declared beside the field (UserError: one line naming the setting, the value and
    what is allowed). With ``seed`` (the run's), a config's ``seed`` field not set by the user
    holds the stage's derived seed.
    """
    overrides = dict(overrides or {})
    configs = {}
    used = set()
    for name, stage in STAGES.items():
        names = {f.name for f in dataclasses.fields(stage.config_type)}
        kwargs = {}
        for key, value in overrides.items():
            stage_name, _, field_name = key.rpartition(".")
            if stage_name in ("", name) and field_name in names:
                kwargs[field_name] = coerce(stage.config_type, field_name, value, setting=f"{name}.{field_name}")
                used.add(key)
        if seed is not None and "seed" in names and "seed" not in kwargs:
            kwargs["seed"] = stage_seed(seed, name)
        configs[name] = stage.config_type(**kwargs)
    unused = set(overrides) - used
    if unused:
        raise UserError(f"unknown setting(s) {', '.join(sorted(unused))} for the stages {', '.join(STAGES)}")
    return configs


def check_stages(targets: list[str], configs: dict[str, Any], model: Model) -> list[str]:
    """Check each needed stage's config against the model before anything runs; the stages in order."""
    order = resolve(targets, configs)
    for name in order:
        if STAGES[name].check is not None:
            STAGES[name].check(configs[name], model)
    return order


def check_positions(prompts: PromptSet, model: Model) -> None:
    """Refuse prompts longer than the model's position table (one line, before any stage runs)."""
    limit = getattr(model.cfg, "max_positions", None)
    if limit is None or not len(prompts):
        return
    # a run reads the prompt and, under the whole-answer metric, its first A − 1 scored tokens after it
    longest = max(prompts.prompts, key=lambda p: p.n_tokens + p.n_targets - 1)
    if longest.n_tokens + longest.n_targets - 1 > limit:
        raise UserError(
            f"the longest prompt of {prompts.relation.name!r} at {prompts.shots} shots has "
            f"{longest.n_tokens + longest.n_targets - 1} tokens; "
            f"the model {model.name!r} has positions for {limit}: use fewer --shots or a model with a longer context"
        )


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "recallscope": __version__, "platform": platform.platform()}
    for pkg in ("torch", "transformers", "gguf", "numpy", "pandas", "pyarrow", "plotly"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def compute_record() -> dict:
    """What a run computed with beyond its packages: torch's intra-op threads and OpenMP's wait
    policy. On CPU the thread count can change the last digits (the patch stage on smollm2-135m,
    64 prompts of country_capital_extended: 1 vs 2 threads, effects up to 2.3e-4 percentage points
    apart; the same count gives the same bits), so ``--threads N`` with the recorded N reproduces a
    run bit for bit. This is also why the default count is the usable CPUs and not the CPUs idle
    when a run starts: a count that followed the machine's load would make the bits follow it too."""
    return {"torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def stage_list() -> list[dict]:
    """The stage table as the manifest lists it (the report reads titles from here, without importing the stages)."""
    return [{"name": s.name, "title": s.title, "requires": list(s.requires), "reads": list(s.reads)} for s in STAGES.values()]


def seeds_of(run: RunConfig) -> dict[str, int]:
    return {name: stage_seed(run.seed, name) for name in STAGES}


def apply_preset(run: RunConfig, overrides: dict[str, Any] | None) -> tuple[RunConfig, dict[str, Any]]:
    """The run and stage settings with ``run.preset``'s definitions under the user's own settings.

    The preset's stage settings go under ``overrides`` (a ``--set`` or flag wins); its
    demonstrations format replaces the default one. UserError for an unknown preset.
    """
    preset = get_preset(run.preset)
    demonstrations = preset.run_settings().get("demonstrations")
    if demonstrations is not None and run.demonstrations == "template":
        run = dataclasses.replace(run, demonstrations=demonstrations)
    return run, merge(preset, dict(overrides or {}))


def preset_record(run: RunConfig) -> dict:
    """For the manifest and the summary: the preset that ran and every definition it selected."""
    return get_preset(run.preset).to_dict()


def manifest(run: RunConfig, model: Model, configs: dict[str, Any], relation: Relation) -> dict:
    return {
        "identity": run_identity(run, model, relation),
        "run": dataclasses.asdict(run),
        "preset": preset_record(run),
        "model": model.describe(),
        "relation": {
            "name": relation.name,
            "source": relation.source,
            "n_samples": len(relation.samples),
            "sha256": relation_hash(relation),
        },
        "seeds": {"prompts": run.seed, **seeds_of(run)},
        "stages": stage_list(),
        "stage_configs": {k: dataclasses.asdict(v) for k, v in configs.items()},
        "versions": versions(),
        "compute": compute_record(),
    }


def summary_header(run: RunConfig, model: Model, prompts: PromptSet) -> dict:
    return {
        "model": model.name,
        "model_hash": model.model_hash,
        "relation": prompts.relation.name,
        "shots": run.shots,
        "seed": run.seed,
        "preset": preset_record(run),
    }


def _tables(result) -> dict[str, pd.DataFrame]:
    return result.tables()


def _dependents(failed: str, order: list[str], configs: dict[str, Any]) -> list[str]:
    """Stages of ``order`` that require ``failed`` (transitively)."""
    out: list[str] = []
    bad = {failed}
    for name in order:
        if name != failed and set(STAGES[name].needs(configs.get(name))) & bad:
            bad.add(name)
            out.append(name)
    return out


def execute(
    run: RunConfig,
    targets: list[str],
    out: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    model: Model | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
    prompts: PromptSet | None = None,
    incomplete_ok: bool = False,
    wait: bool = False,
) -> tuple[StageContext, dict]:
    """Run ``targets`` (and what they need) for one relation and shot count.

    With ``out``, a stage found there is reused only when its record matches what this run would
    compute now (:mod:`recallscope.records`: config, inputs, prompts, run identity, code), unless
    ``force``; otherwise it is recomputed and ``log`` says why. Every new result is written there
    atomically, its record after its tables; the manifest and the summary follow the records.
    The run holds the directory's lock (another writer: UserError naming it, or with ``wait``
    the run waits). Returns the context (results in memory) and the summary.
    With ``incomplete_ok`` (a cell of a sweep), a stage whose data cannot support it (a
    UserError raised while it runs, after every setting was checked) is recorded under
    ``summary["not_measurable"]`` with its dependents, and the other stages go on.
    """
    rundir = RunDir(out) if out else None
    run, overrides = apply_preset(run, overrides)
    check_run(run)
    relation = prompts.relation if prompts is not None else load_relation(run.relation)
    configs = make_configs(overrides, seed=run.seed)
    if rundir is not None:
        rundir.claim(wait, note=log)  # not ours, or busy: refused before the model loads
    try:
        if model is None:
            model = load_model(run.model, device=run.device, dtype=run.dtype, device_map=run.device_map)
        if prompts is None:
            prompts = build_prompts(
                relation,
                model.tokenizer,
                shots=run.shots,
                seed=run.seed,
                max_prompts=run.max_prompts,
                demonstrations=run.demonstrations,
                answer_metric=configs["recall"].answer_metric,
            )
        check_positions(prompts, model)
        order = check_stages(targets, configs, model)
        ctx = StageContext(
            model=model, run=run, prompts=prompts, configs=configs, seeds=seeds_of(run), rundir=rundir, progress=progress
        )
        if rundir is None:
            return ctx, _run_stages(ctx, order, None, log, incomplete_ok)
        rundir.create(wait, note=log)
        rundir.check_same_config(run_identity(run, model, relation), force)
        book = _Book(rundir, ctx, relation, force, order, log)
        return ctx, _run_stages(ctx, order, book, log, incomplete_ok)
    finally:
        if rundir is not None:
            rundir.release()


def check_run(run: RunConfig) -> None:
    """Run settings that would fail deep inside a stage, refused in one line first."""
    if isinstance(run.seed, bool) or not isinstance(run.seed, int) or not 0 <= run.seed <= MAX_SEED:
        raise UserError(f"--seed must be an integer in [0, {MAX_SEED}], got {run.seed!r}")


MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer; NumPy's SeedSequence any non-negative one


def _run_stages(ctx: StageContext, order: list[str], book: "_Book | None", log, incomplete_ok: bool) -> dict:
    skipped: dict[str, str] = {}
    for name in order:
        if name in skipped:
            continue
        if book is not None:
            reason = book.reusable(name)
            if reason is None:
                log(f"{name}: reused from {book.rundir.path}")
                continue
            if reason:
                log(f"{name}: recomputing ({reason})")
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            result = STAGES[name].compute(ctx)
        except NonFiniteError as exc:  # the model, not the cell's data: stops the run in a sweep too
            raise NonFiniteError(f"{name}: {exc}") from None
        except UserError as exc:
            if not incomplete_ok:
                raise
            skipped[name] = str(exc)
            for dep in _dependents(name, order, ctx.configs):
                skipped.setdefault(dep, f"needs {name}, which is not measurable here")
            log(f"{name}: not measurable here ({exc})")
            if book is not None:
                book.remove(name)
            continue
        data = result.to_dict()
        data["wall_seconds"] = round(time.perf_counter() - start, 3)
        # CPU seconds of every thread of this process: on a shared machine the work a stage did,
        # which its wall time (stretched by the other processes) is not.
        data["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
        ctx.results[name] = result
        ctx.summaries[name] = data
        if book is not None:
            book.write(name, _tables(result), data)
        log(f"{name}: done in {data['wall_seconds']:.1f} s")
    if book is not None:
        return book.finish(skipped)
    summary = {**summary_header(ctx.run, ctx.model, ctx.prompts), "stages": dict(ctx.summaries)}
    _update_top_level(summary, ctx)
    if skipped:
        summary["not_measurable"] = _not_measurable(skipped, summary, ctx.prompts)
    return summary


class _Book:
    """The stage records of one run directory as one run sees them: which stages are on disk and
    consistent, which may be reused, and the summary and manifest written from them.

    On opening, every stage of the table is checked: a record that cannot be read, a table that
    does not match it, or inputs that are not the stages now on disk make the stage stale; a stale
    stage is removed from the directory (a stage this run will compute is recomputed, saying why).
    A stage this run computes is reused only when its record equals what this run would write
    (:func:`recallscope.records.stale_reason`). Writing a stage: it and every stage that read it
    leave the summary and the manifest first, its record is removed, its tables are written, then
    its record; stages that read its old content are removed; the summary and the manifest are
    written again from the records. So they never describe a stage whose record is not on disk.
    """

    def __init__(self, rundir: RunDir, ctx: StageContext, relation: Relation, force: bool, order: list[str], log):
        self.rundir, self.ctx, self.relation, self.force, self.order, self.log = rundir, ctx, relation, force, order, log
        self.identity = run_identity(ctx.run, ctx.model, relation)
        self.prompts_hash = records.prompts_sha256(ctx.prompts)
        self.on_disk: dict[str, dict] = {}  # stage -> its record (consistent with the disk and each other)
        self.why: dict[str, str] = {}  # stage -> why its files were not kept
        try:
            rundir.summary()
        except UserError as exc:  # derived from the records: rewritten below, said once
            log(f"{str(exc).split('; ')[0]}; rewritten from the stage records")
        old_identity = self._old_identity()
        dropped = []
        for name in STAGES:
            record, problem = rundir.read_record(name)
            if record is None:
                if problem is None and rundir.legacy_stage(name):
                    problem = "its tables have no record (written by an older recallscope, or an interrupted write)"
                if problem is not None:
                    self._drop(name, problem, dropped)
                continue
            problem = rundir.verify(name, record) or records.stale_reason(record, self._key(name, record), own=False)
            if problem is not None:
                self._drop(name, problem, dropped)
                continue
            self.on_disk[name] = record
        if old_identity not in (None, self.identity) and dropped:
            log(f"--force: removed the stages of the other configuration in {rundir.path} ({', '.join(dropped)})")
        else:
            for name in dropped:
                if name not in order:
                    log(f"{name}: removed from {rundir.path} ({self.why[name]})")
        ctx.summaries.clear()
        ctx.summaries.update({n: r.get("summary") or {} for n, r in self.on_disk.items()})
        ctx.available = set(self.on_disk)
        self._describe()

    def _old_identity(self):
        try:
            return (self.rundir.manifest() or {}).get("identity")
        except UserError:
            return None

    def _drop(self, name: str, why: str, dropped: list[str]) -> None:
        self.rundir.remove_stage(name)
        self.why[name] = why
        dropped.append(name)

    def _inputs(self, name: str, record: dict | None = None) -> dict[str, str | None]:
        """Content hashes of the stages ``name`` reads, as on disk now; for a stage this run does
        not compute, the inputs its record names."""
        if name in self.order or record is None:
            deps = list(dict.fromkeys(STAGES[name].needs(self.ctx.configs.get(name)) + STAGES[name].reads))
        else:
            deps = list(record.get("inputs") or {})
        return {d: records.content_sha256(self.on_disk[d]) if d in self.on_disk else None for d in deps}

    def _key(self, name: str, record: dict | None = None) -> dict:
        stage = STAGES[name]
        return records.key(
            self.identity,
            self.prompts_hash,
            self.ctx.configs[name],
            self._inputs(name, record),
            records.code_sha256(stage.compute, stage.config_type),
        )

    def reusable(self, name: str) -> str | None:
        """None when the stage on disk may be reused; else why it is computed ("" when it was never computed)."""
        record = self.on_disk.get(name)
        if record is None:
            return self.why.get(name, "")
        if self.force:
            return "--force"
        return records.stale_reason(record, self._key(name))

    def _readers(self, name: str) -> list[str]:
        """Stages on disk that read ``name``, transitively, in pipeline order."""
        found = {name}
        for other in STAGES:
            if other in self.on_disk and other not in found and set((self.on_disk[other].get("inputs") or {})) & found:
                found.add(other)
        return [s for s in STAGES if s in found and s != name]

    def _forget(self, names) -> None:
        for n in names:
            self.on_disk.pop(n, None)
            self.ctx.summaries.pop(n, None)
            self.ctx.available.discard(n)

    def remove(self, name: str) -> None:
        """Remove a stage (and the stages that read it) from the directory."""
        gone = [name, *self._readers(name)]
        self._forget(gone)
        self._describe()
        for n in gone:
            self.rundir.remove_stage(n)

    def write(self, name: str, tables: dict[str, pd.DataFrame], data: dict) -> None:
        readers = self._readers(name)
        before = {r: self.on_disk[r] for r in readers}
        self._forget([name, *readers])
        self._describe()  # the summary and manifest stop describing them before their files change
        record = self.rundir.write_stage(name, tables, {**self._key(name), "summary": data})
        self.on_disk[name] = record
        self.ctx.summaries[name] = data
        self.ctx.available.add(name)
        for reader in readers:  # in pipeline order: what a reader read is settled before it
            inputs = before[reader].get("inputs") or {}
            now = {d: records.content_sha256(self.on_disk[d]) if d in self.on_disk else None for d in inputs}
            if now == inputs:  # the stage it read came out the same (a deterministic stage redone)
                self.on_disk[reader] = before[reader]
                self.ctx.summaries[reader] = before[reader].get("summary") or {}
                self.ctx.available.add(reader)
                continue
            self.rundir.remove_stage(reader)
            self.why[reader] = f"it was computed from the previous {name}"
            if reader not in self.order:
                self.log(f"{reader}: removed from {self.rundir.path} ({self.why[reader]})")
        self._describe()

    def _describe(self, skipped: dict[str, str] | None = None) -> dict:
        """Write the summary and the manifest from the records on disk; returns the summary."""
        ctx = self.ctx
        summary = summary_header(ctx.run, ctx.model, ctx.prompts)
        # a stage computed in this process keeps its values as computed (NaN stays NaN for the caller;
        # the file gets JSON's null, as every record does)
        summary["stages"] = {
            n: ctx.summaries[n] if n in ctx.results and n in ctx.summaries else self.on_disk[n].get("summary") or {}
            for n in STAGES
            if n in self.on_disk
        }
        _update_top_level(summary, ctx)
        if skipped:
            summary["not_measurable"] = _not_measurable(skipped, summary, ctx.prompts)
        described = manifest(ctx.run, ctx.model, ctx.configs, self.relation)
        described["stage_configs"] = {n: self.on_disk[n].get("config") for n in STAGES if n in self.on_disk}
        described["stage_records"] = {
            n: {
                "record": self.rundir.record_path(n).name,
                "content_sha256": records.content_sha256(self.on_disk[n]),
                "recallscope": self.on_disk[n].get("recallscope"),
                "code_sha256": self.on_disk[n].get("code_sha256"),
            }
            for n in STAGES
            if n in self.on_disk
        }
        self.rundir.write_summary(summary)
        self.rundir.write_manifest(described)
        return summary

    def finish(self, skipped: dict[str, str]) -> dict:
        return self._describe(skipped)


def _not_measurable(skipped: dict[str, str], summary: dict, prompts: PromptSet | None) -> dict:
    counts = {
        "n_prompts": summary.get("n_prompts", len(prompts) if prompts is not None else 0),
        "n_known": summary.get("n_known"),
    }
    return {name: {"reason": why, **counts} for name, why in skipped.items()}


def _onset_cell(ctx: StageContext) -> tuple:
    """(main table, layers table, summary) of a cell's onset stage; Nones where it did not run."""
    return ctx.table_or_none("onset"), ctx.table_or_none("onset", "layers"), ctx.summaries.get("onset")


def _shot_claims(
    relations, shots, patch_frames, configs, recall_summaries=None, slugs: dict[str, str] | None = None, onset_cells=None
) -> list[dict]:
    """The claims across shot counts, per relation, fewest vs most shots: C6 (few-shot prompts employ
    the same heads), then C10 and C11 (:func:`recallscope.onset.earlier_claims`: the subject reaches the
    last position earlier, the answer domain appears earlier) where the onset stage ran in the sweep.
    ``recall_summaries`` ((relation, shots) → the cell's recall summary) give the prompts available
    (the fewer of the two cells'); ``slugs`` name each relation as its sweep folder does; ``onset_cells``
    ((relation, shots) → :func:`_onset_cell`) the onsets."""
    cfg = configs["claims"]
    slugs = slugs or {rel: relation_slug(rel) for rel in relations}
    out = []
    for rel in relations:
        low, high = shots[0], shots[-1]
        rows = [claims.shot_claim(slugs[rel], (low, patch_frames.get((rel, low))), (high, patch_frames.get((rel, high))), cfg)]
        cells = [(onset_cells or {}).get((rel, k)) or (None, None, None) for k in (low, high)]
        if any(c[0] is not None for c in cells):
            rows += onset.earlier_claims(slugs[rel], (low, *cells[0]), (high, *cells[1]), cfg)
        available = [known_available((recall_summaries or {}).get((rel, k))) for k in (low, high)]
        for claim in rows:
            if None not in available:
                claim = claims.with_available(claim, min(available))
            out.append({**claim.row(), "relation": slugs[rel]})
    return out


def _update_top_level(summary: dict, ctx: StageContext) -> None:
    rec = summary["stages"].get("recall")
    if rec:
        for key in ("n_prompts", "n_known", "accuracy", "mean_p_answer", "answer_metric"):
            if key in rec:  # (a recall summary written before the whole-answer metric has no answer_metric)
                summary[key] = rec[key]
    claims_entry = summary["stages"].get("claims")
    if claims_entry:
        summary["claims"] = claims_entry["claims"]


def _combined_identity(base: RunConfig, model: Model, relations: list[Relation], shots_list: list[int]) -> dict:
    shared = {k: v for k, v in base.identity().items() if k not in ("relation", "shots")}
    return {
        **shared,
        "model_hash": model.model_hash,
        "relations": [r.source for r in relations],
        "relation_hashes": [relation_hash(r) for r in relations],
        "shots": shots_list,
    }


@dataclass(frozen=True)
class CellJob:
    """One cell of a sweep as an executor other than the serial one runs it (in another process,
    maybe on another node): :func:`execute` of its run into its sub-run directory ``out``, with
    the prompts the driver built (so a worker builds nothing differently). Calling it returns the
    cell's summary; ``log`` receives its progress lines."""

    run: RunConfig
    targets: tuple[str, ...]
    out: str
    prompts: PromptSet
    overrides: dict[str, Any]
    force: bool
    incomplete_ok: bool

    def __call__(self, log: Callable[[str], None] = lambda _msg: None) -> dict:
        _, summary = execute(
            self.run,
            list(self.targets),
            out=self.out,
            overrides=self.overrides,
            force=self.force,
            progress=False,
            log=log,
            prompts=self.prompts,
            incomplete_ok=self.incomplete_ok,
        )
        return summary


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
    executor: Any = None,
    model: Model | None = None,
    contexts: dict | None = None,
    wait: bool = False,
) -> dict:
    """Every relation × shot count, one model load; one sub-run directory each.

    ``model``: a model already loaded (``base.model`` is then its name only); None loads
    ``base.model``. ``contexts``, when given, receives each cell run in this process as
    ``(relation, shots) → StageContext`` (its results, prompts and model: :func:`run` builds the
    studies from them). ``wait``: wait for another process writing ``out`` (else UserError naming it).

    With one relation and one shot count the run directory is ``out`` itself; otherwise
    ``out/<relation>/<k>shot`` holds each sub-run and ``out/summary.json`` lists them all.

    In a sweep (several cells) a cell whose data cannot support a stage (too few prompts, no
    known prompt, no usable sample) records why under its ``not_measurable`` entry, with the
    counts, and the sweep goes on; the combined summary lists those cells under ``incomplete``
    and holds ``exit_code`` :data:`~recallscope.errors.EXIT_INCOMPLETE`. A single cell keeps the
    error (exit 2). Bad input (an unknown stage, setting, relation or an out-of-range value, a
    prompt longer than the model's positions) is refused before any stage runs in either case.

    ``executor`` (None: every cell in this process, one after the other) has
    ``run(cells: list[CellJob], root: str, log) -> list[dict]``: it runs the cells (each
    resumes from its sub-run directory as here) and returns their summaries in order; the
    combined summary, the few-shot claims (from the cells' patch tables on disk) and the manifest
    are then built here as for the serial run (:mod:`recallscope.executors`: Ray). Needs ``out``.
    """
    if executor is not None and out is None:
        raise UserError("a distributed sweep needs a run directory (--out) that every node sees")
    if executor is not None and model is not None:
        raise UserError("a model already in memory runs in this process; a distributed sweep (--executor) needs a model name")
    if not relations:
        raise UserError("--relation: give at least one relation")
    if not shots_list:
        raise UserError("--shots: give at least one shot count")
    if any(k < 0 for k in shots_list):
        raise UserError(f"--shots must be >= 0, got {shots_list}")
    base, overrides = apply_preset(base, overrides)  # an unknown preset fails here
    check_run(base)
    configs = make_configs(overrides, seed=base.seed)  # fail early, before the model loads, on a bad setting ...
    resolve(targets, configs)  # ... or stage
    loaded = [load_relation(rel) for rel in relations]  # ... or relation
    slugs = cell_slugs(relations, loaded)  # ... or two relations in one cell folder
    top = RunDir(out) if out is not None else None
    if top is not None:
        top.claim(wait, note=log)  # not ours, or busy: refused before the model loads
    try:
        return _execute_many(
            base,
            relations,
            loaded,
            slugs,
            shots_list,
            targets,
            top,
            overrides,
            configs,
            force,
            progress,
            log,
            executor,
            wait,
            model,
            contexts,
        )
    finally:
        if top is not None:
            top.release()


def cell_slugs(relations: list[str], loaded: list[Relation]) -> dict[str, str]:
    """Each relation's folder in a sweep (``out/<slug>/<k>shot``): :func:`recallscope.rundir.relation_slug`,
    with the first 8 hex digits of the relation's content hash added where two relations of the
    sweep would share one (``a/capitals.json`` and ``b/capitals.json``). UserError for a relation
    given twice (the same content)."""
    hashes = [relation_hash(r) for r in loaded]
    seen: dict[str, str] = {}
    for rel, h in zip(relations, hashes, strict=True):
        if h in seen:
            raise UserError(f"--relation lists one relation twice: {seen[h]!r} and {rel!r} have the same content")
        seen[h] = rel
    base = [relation_slug(rel) for rel in relations]
    return {rel: (b if base.count(b) == 1 else f"{b[:71]}-{h[:8]}") for rel, b, h in zip(relations, base, hashes, strict=True)}


def _execute_many(
    base,
    relations,
    loaded,
    slugs,
    shots_list,
    targets,
    top,
    overrides,
    configs,
    force,
    progress,
    log,
    executor,
    wait,
    model=None,
    contexts=None,
) -> dict:
    out = str(top.path) if top is not None else None
    single = len(relations) == 1 and len(shots_list) == 1
    if model is None:
        model = load_model(base.model, device=base.device, dtype=base.dtype, device_map=base.device_map)
    # Everything that can be refused is refused before the first stage runs: stage settings out of
    # range for the model, prompts longer than its positions, a sub-run directory holding another configuration.
    check_stages(targets, configs, model)
    cells = []
    for rel, relation in zip(relations, loaded, strict=True):
        for k in shots_list:
            run = dataclasses.replace(base, relation=rel, shots=k)
            sub = out if (single or out is None) else str(Path(out) / slugs[rel] / f"{k}shot")
            try:
                prompts = build_prompts(
                    relation,
                    model.tokenizer,
                    shots=k,
                    seed=base.seed,
                    max_prompts=base.max_prompts,
                    demonstrations=base.demonstrations,
                    answer_metric=configs["recall"].answer_metric,
                )
            except UserError as exc:
                if single:
                    raise
                cells.append((rel, k, run, sub, None, str(exc)))
                continue
            check_positions(prompts, model)
            cells.append((rel, k, run, sub, prompts, None))
    if top is not None:
        top.create(wait, note=log)  # an unwritable --out fails here, before any stage
        if not single:
            top.check_same_config(_combined_identity(base, model, loaded, shots_list), force)
        for rel, k, run, sub, prompts, _ in cells:
            if not single:
                RunDir(sub).check_ours()
            if prompts is not None:
                RunDir(sub).check_same_config(run_identity(run, model, prompts.relation), force)
        if not single:  # the parent is a run directory from the start (its summary is written at the end)
            top.write_manifest(_combined_manifest(base, model, loaded, shots_list))
    runs = []
    incomplete = []
    patch_frames: dict[tuple[str, int], Any] = {}
    recall_summaries: dict[tuple[str, int], Any] = {}
    onset_cells: dict[tuple[str, int], Any] = {}
    order = resolve(targets, configs)
    relation_of = dict(zip(relations, loaded, strict=True))
    if executor is not None:  # every runnable cell at once; their summaries are read below in order
        jobs = {
            (rel, k): CellJob(run, tuple(targets), sub, prompts, dict(overrides or {}), force, not single)
            for rel, k, run, sub, prompts, _ in cells
            if prompts is not None
        }
        done = dict(zip(jobs, executor.run(list(jobs.values()), str(out), log), strict=True))
    for rel, k, run, sub, prompts, why in cells:
        if executor is None:  # (an executor logged each cell as it finished)
            log(f"— {rel}, {k}-shot" + (f" → {sub}" if sub else ""))
        if prompts is None:
            summary = {
                "model": model.name,
                "model_hash": model.model_hash,
                "relation": relation_of[rel].name,
                "shots": k,
                "seed": base.seed,
                "stages": {},
                "not_measurable": {name: {"reason": why, "n_prompts": 0, "n_known": None} for name in order},
            }
            log(f"{rel}, {k}-shot: not measurable here ({why})")
            if sub is not None:  # the cell's folder says why it is empty
                cell = RunDir(sub)
                cell.create(wait, note=log)
                try:
                    cell.write_manifest(manifest(run, model, configs, relation_of[rel]) | {"stage_configs": {}})
                    cell.write_summary(summary)
                finally:
                    cell.release()
        elif executor is not None:
            summary = done[(rel, k)]
            frame = _cell_patch_table(sub)
            if frame is not None:
                patch_frames[(rel, k)] = frame
            cell = StageContext(model=model, run=run, prompts=prompts, configs=configs, rundir=RunDir(sub))
            cell.summaries.update(summary.get("stages") or {})
            onset_cells[(rel, k)] = _onset_cell(cell)
        else:
            ctx, summary = execute(
                run,
                targets,
                out=sub,
                overrides=overrides,
                force=force,
                model=model,
                progress=progress,
                log=log,
                prompts=prompts,
                incomplete_ok=not single,
                wait=wait,
            )
            frame = ctx.table_or_none("patch")
            if frame is not None:
                patch_frames[(rel, k)] = frame
            onset_cells[(rel, k)] = _onset_cell(ctx)
            if contexts is not None:
                contexts[(rel, k)] = ctx
        recall_summaries[(rel, k)] = summary.get("stages", {}).get("recall")
        if summary.get("not_measurable"):
            incomplete.append(
                {
                    "relation": summary.get("relation"),
                    "shots": k,
                    "stages": {n: e["reason"] for n, e in summary["not_measurable"].items()},
                }
            )
        if not single and sub is not None:
            summary = {**summary, "path": Path(sub).relative_to(out).as_posix()}
        runs.append(summary)
    if single:
        return runs[0]
    combined = {"model": model.name, "model_hash": model.model_hash, "preset": preset_record(base), "runs": runs}
    if "claims" in order and len(set(shots_list)) > 1:
        combined["claims"] = _shot_claims(
            relations, sorted(set(shots_list)), patch_frames, configs, recall_summaries, slugs, onset_cells
        )
    if incomplete:
        combined["incomplete"] = incomplete
        combined["exit_code"] = EXIT_INCOMPLETE
    if top is not None:
        top.write_summary(combined)
    return combined


def _cell_patch_table(sub: str):
    """A cell's patch table, read back after an executor ran the cell (None when it has none)."""
    cell = RunDir(sub)
    return cell.read_table("patch") if cell.has_table("patch") else None


def _combined_manifest(base: RunConfig, model: Model, loaded: list[Relation], shots_list: list[int]) -> dict:
    return {
        "identity": _combined_identity(base, model, loaded, shots_list),
        "run": dataclasses.asdict(base),
        "preset": preset_record(base),
        "model": model.describe(),
        "seeds": {"prompts": base.seed, **seeds_of(base)},
        "stages": stage_list(),
        "versions": versions(),
        "compute": compute_record(),
    }


def run(
    model: Any = "smollm2-135m",
    relation: str | os.PathLike | list = "country_capital_extended",
    shots: int | list[int] = 0,
    stages: list[str] | None = None,
    out: str | None = None,
    seed: int = 0,
    max_prompts: int | str | None = "default",
    device: str = "cpu",
    dtype: str = "float32",
    force: bool = False,
    progress: bool = True,
    preset: str = "recallscope",
    tokenizer: Any = None,
    device_map: str | None = None,
    settings: dict[str, Any] | None = None,
    executor: Any = None,
    log: Callable[[str], None] | None = None,
    wait: bool = False,
    **more_settings: Any,
) -> Study | Sweep:
    """The whole study (or ``stages`` and what they need) for one relation and shot count — a
    :class:`~recallscope.study.Study` — or for several — a :class:`~recallscope.study.Sweep` with
    one study per (relation, shots) and the claims across shot counts. ``recallscope run`` on the
    command line calls this function.

    ``model``: an alias (``"smollm2-135m"``), hub id or local directory; a loaded
    :class:`~recallscope.models.Model`; or a model already in memory — a transformers causal LM
    (with its ``tokenizer``), an nnsight ``LanguageModel`` or a TransformerLens ``TransformerBridge``
    (:func:`recallscope.models.load_model`), whose run identity hashes its weights.
    ``relation``: a built-in relation name or an LRE JSON path, or a list of them; ``shots``: an
    int or a list of ints (>= 0). ``settings`` (or keyword arguments) are stage settings, e.g.
    ``settings={"decompose.solver": "sgd"}`` or ``n_corruptions=5``; each is parsed and
    range-checked as ``--set`` is. With ``out`` the run directory is written (and resumed: a sweep
    writes ``out/<relation>/<k>shot``). ``preset``: "recallscope" (the defaults) or "paper" (the
    paper's definitions, :mod:`recallscope.presets`; settings still win). ``max_prompts``: as
    ``--max-prompts`` (:func:`resolve_max_prompts`: "default" is a seeded sample of 32 prompts,
    every prompt under the paper preset; None or "all": every prompt). ``progress=False`` shows no
    progress bar (they show on a terminal and in notebooks). ``executor``: run a sweep's cells
    elsewhere (:mod:`recallscope.executors`). ``log`` receives the progress lines the CLI prints.
    ``wait``: when another process is writing ``out``, wait for it (else UserError naming it).

    Every stage after recall runs on the prompts the model knows (``study.known``); a stage
    function called directly uses the prompts it is given, so ``movers.movers(study.model,
    study.known, config)`` reproduces the run's movers table. Raises UserError on bad input.
    """
    relations = _as_list(relation, "relation")
    shots_list = _as_shots(shots)
    loaded = model if isinstance(model, Model) else None
    if loaded is None and not isinstance(model, (str, os.PathLike)):
        loaded = load_model(model, tokenizer=tokenizer)
    elif loaded is None and tokenizer is not None:
        raise UserError("tokenizer= goes with a model already in memory; a model given by name loads its own")
    base = RunConfig(
        model=loaded.name if loaded is not None else str(model),
        seed=seed,
        max_prompts=resolve_max_prompts(max_prompts, preset),
        device=str(loaded.device) if loaded is not None else device,
        dtype=str(loaded.view.dtype).replace("torch.", "") if loaded is not None else dtype,
        preset=preset,
        device_map=device_map,
    )
    contexts: dict[tuple[str, int], StageContext] = {}
    summary = execute_many(
        base,
        relations,
        shots_list,
        stages or default_stages(),
        out=out,
        overrides={**(settings or {}), **more_settings},
        force=force,
        progress=progress,
        log=log or (lambda _msg: None),
        executor=executor,
        model=loaded,
        contexts=contexts,
        wait=wait,
    )
    cells = [(rel, k) for rel in relations for k in shots_list]
    if len(cells) == 1:
        return _study(contexts.get(cells[0]), summary, out)
    studies = {}
    for (rel, k), entry in zip(cells, summary["runs"], strict=True):
        path = str(Path(out) / entry["path"]) if out is not None and entry.get("path") else None
        studies[(str(entry.get("relation")), k)] = _study(contexts.get((rel, k)), entry, path)
    return Sweep(cells=studies, summary=summary, path=out)


def _study(ctx: StageContext | None, summary: dict, path: str | None) -> Study:
    manifest = (RunDir(path).manifest() or {}) if path is not None else {}
    if ctx is None:  # a cell run elsewhere (an executor) or not measurable: what its directory holds
        return Study(results={}, summary=summary, path=path, manifest=manifest)
    return Study(results=dict(ctx.results), summary=summary, prompts=ctx.prompts, model=ctx.model, path=path, manifest=manifest)


def _as_list(value: Any, name: str) -> list[str]:
    values = [value] if isinstance(value, (str, os.PathLike)) else list(value) if isinstance(value, (list, tuple)) else None
    if not values or not all(isinstance(v, (str, os.PathLike)) for v in values):
        raise UserError(f"{name}: give a name or path, or a list of them; got {value!r}")
    return [str(v) for v in values]


def _as_shots(value: Any) -> list[int]:
    values = [value] if not isinstance(value, (list, tuple)) else list(value)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise UserError(f"shots: give a number of demonstrations >= 0, or a list of them; got {value!r}")
    return [int(v) for v in values]
