"""The HTML report: one self-contained page for a run directory, rendered from its files alone.

The page is a single file that works offline: plotly.js is embedded once, every figure travels
as JSON in its own ``<script type="application/json">`` block and is drawn by one small script
at the end, and a Content-Security-Policy forbids every network fetch.

The HTML lives in Jinja2 templates (``report/templates/*.html.j2``) with autoescaping on: every
value from data — model and relation names, subjects, answers, tokens, summary keys — is text
to them and is escaped where it is written, with no call to forget. The only markup that
reaches the page unescaped is the project's own: the templates, the stylesheet and script
beside them, and the plotly.js bundle (:func:`plotly_bundle`). Figure JSON goes through Jinja's
``tojson``, which writes ``<``, ``>``, ``&`` and ``'`` as JSON escapes, so a token such as
``</script>`` cannot end the block it sits in.

This module turns the run directory into plain values (sections, tables, figures); the
templates lay them out. Sections follow the pipeline: a header (model, relation, shots, seed,
hash, versions and the headline numbers), then one section per finished stage — its wall time,
its summary as tables, a preview of its main table and the plots of
``recallscope.figures.<stage>`` — and the claims table with coloured verdicts. A parent directory
that holds several sub-runs (one per relation × shots) becomes one page with an overview and a
section per sub-run. A figure that cannot be drawn costs that figure, not the page.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
from markupsafe import Markup

from .. import figures as stage_figures
from ..columns import Y_SCORED
from ..errors import UserError
from ..figures import shots as shots_figures
from ..rundir import SUMMARY, atomic_write_bytes
from ..terminal import escape_controls
from .. import verdicts
from .reading import CLAIMS, Run, claims_rows, is_records, sub_runs
from ..verdicts import ClaimView

log = logging.getLogger(__name__)

REPORT = "report.html"
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; font-src data:"
TEXT_LIMIT = 160  # characters of one string shown in a table cell; the rest is cut with a note
LIST_LIMIT = 30  # items of a list of scalars shown inline
ROW_LIMIT = 25  # rows of a summary list shown in a table
PREVIEW_ROWS = 12  # rows of a stage's main table shown in the preview
INLINE_KEYS = 12  # a flat dict of at most this many keys is shown as "key: value" pairs in one cell
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


# --------------------------------------------------------------------------- values for the templates
def fmt_number(value: Any) -> str:
    """A number as plain text: thousands separators for integers, 4 significant digits for floats,
    "—" for NaN and infinities, yes/no for booleans."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3g}"
    return str(value)


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if is_number(value) and math.isfinite(value) else "—"


def is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float))


def value_kind(value: Any) -> str:
    """How a table cell shows ``value``: none, number, string, list (of scalars) or json."""
    if value is None:
        return "none"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value):
        return "list"
    return "json"


def compact_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def is_short(value: Any) -> bool:
    """Short values stay on one line (a wide table scrolls; three words stacked in a column do not read)."""
    return len(compact_json(value)) <= 40


def columns_of(rows: list[dict]) -> list[str]:
    """The union of the records' keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


@dataclass
class Parts:
    """A summary entry split for display: scalars (and small flat dicts, ``inline``) as pairs,
    lists of records and nested objects as their own blocks."""

    scalars: list[tuple[str, Any, bool]]
    blocks: list[tuple[str, str, Any]]  # (kind: "records" | "object", key, value)


def split_summary(entry: dict, skip: tuple[str, ...] = ()) -> Parts:
    scalars, blocks = [], []
    for key, value in entry.items():
        if key in skip:
            continue
        if is_records(value):
            blocks.append(("records", key, value))
        elif isinstance(value, dict) and value:
            if all(not isinstance(v, (dict, list)) for v in value.values()) and len(value) <= INLINE_KEYS:
                scalars.append((key, value, True))
            else:
                blocks.append(("object", key, value))
        else:
            scalars.append((key, value, False))
    return Parts(scalars, blocks)


def verdict_class(verdict: Any) -> str:
    """The CSS class of a verdict badge: v-holds, v-fails, v-inconclusive, v-na (not measurable), v-other."""
    return "v-" + verdicts.kind(verdict)


# --------------------------------------------------------------------------- figures
_PLOTLY_TAG = re.compile(r"</?(b|i|em|sup|sub|span|s|u|a|br)(\s[^<>]*)?/?>", re.IGNORECASE)


def plain_title(title: str) -> str:
    """Plotly title text (a small HTML dialect with entities) as plain text for a caption."""
    return html.unescape(_PLOTLY_TAG.sub(" ", title)).strip()


@dataclass
class FigureBlock:
    """One plot on the page: its element id, its caption (the figure's title, as plain text; HTML
    wraps a long title where plotly would cut it) and its plotly JSON as Python values."""

    id: str
    caption: str
    spec: dict
    height: int = 360  # px


@dataclass
class Problem:
    """Something that could not be drawn; shown in its place."""

    message: str


@dataclass
class Page:
    """Collects the figures of a page so that each gets a unique id, and the problems met."""

    n_figures: int = 0
    problems: list[str] = field(default_factory=list)

    def figure(self, fig: Any) -> FigureBlock:
        """A plotly figure as a block for the page. Raises whatever plotly raises for something
        that is not a figure or cannot be serialised."""
        fig = go.Figure(fig)
        title = fig.layout.title.text or ""
        fig.update_layout(title=None, font={"family": FONT, "size": 12})
        stage_figures.finish(fig)
        spec = json.loads(fig.to_json())  # plotly's encoder turns numpy arrays into lists
        self.n_figures += 1
        return FigureBlock(f"plot-{self.n_figures}", plain_title(title), spec, int(fig.layout.height))

    def problem(self, message: str) -> Problem:
        self.problems.append(message)
        log.warning("report: %s", message)
        return Problem(message)

    def draw(self, name: str, make, tables: dict, summary: dict) -> list[FigureBlock | Problem]:
        """The figures of ``make(tables, summary)``; a failure costs the figure it concerns."""
        try:
            figs = make(tables, summary)
        except Exception as exc:  # a broken plot must not cost the user the rest of the report
            return [self.problem(f"{name}: the plots could not be drawn ({type(exc).__name__}: {exc})")]
        if figs is None:
            return []
        if not isinstance(figs, (list, tuple)):
            figs = [figs]
        out: list[FigureBlock | Problem] = []
        for i, fig in enumerate(figs):
            try:
                out.append(self.figure(fig))
            except Exception as exc:  # not a plotly figure, or one plotly cannot serialise
                out.append(self.problem(f"{name}: plot {i + 1} could not be drawn ({type(exc).__name__}: {exc})"))
        return out


# --------------------------------------------------------------------------- sections
@dataclass
class Preview:
    """The first rows of a stage's main table."""

    name: str  # file name
    n_rows: int
    n_columns: int
    label: str
    records: list[dict]


@dataclass
class ClaimLink:
    """A claim that reads a stage section's figures, shown at the top of that section."""

    claim: ClaimView
    anchor: str  # the claim's row in the verdict block


@dataclass
class StageSection:
    anchor: str
    name: str
    title: str
    wall: float | None
    lead: str | None = None
    figures: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    preview: Preview | None = None
    missing_table: bool = False
    claims: list[ClaimView] | None = None  # the claims stage: every claim, with its conditions
    sensitivity: list[dict] | None = None  # the claims stage: one row per condition of each rule
    links: list[ClaimLink] = field(default_factory=list)  # the claims that read this section
    notes: list[str] = field(default_factory=list)  # how this section's own summary differs from those claims


def preview(stage: str, frame: pd.DataFrame) -> Preview:
    """The first rows of a stage's main table (for recall: the prompts the model does not know first)."""
    shown = frame
    label = f"first {min(PREVIEW_ROWS, len(frame))}"
    if stage == "recall" and "known" in frame.columns:
        columns = [
            c
            for c in (
                "subject",
                "answer",
                "answer_token",
                "answer_tokens",
                "top1_token",
                "p_answer",
                "rank_answer",
                "known",
                "text",
            )
            if c in frame.columns
        ]
        shown = frame.sort_values(["known", "p_answer"], kind="stable")[columns]
        label = f"the {min(PREVIEW_ROWS, len(frame))} with the lowest p(Y), unknown first"
    records = [{str(k): _plain(v) for k, v in row.items()} for row in shown.head(PREVIEW_ROWS).to_dict("records")]
    return Preview(f"{stage}.parquet", len(frame), len(frame.columns), label, records)


def _plain(value: Any) -> Any:
    """A table value as a Python value (numpy scalars and arrays to numbers and lists; NA to None)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def stage_section(run: Run, stage: str, anchor: str, page: Page, claims: list[ClaimView], claim_anchor) -> StageSection:
    """One stage's section; ``claims`` are the run's claims (the ones whose evidence this stage
    holds are linked at the top, with a line on how the stage's own summary differs from them),
    ``claim_anchor(claim)`` the id of a claim's row in the verdict block."""
    entry = run.entry(stage)
    if stage == CLAIMS and not isinstance(entry, dict):
        entry = {}
    entry = entry if isinstance(entry, dict) else {"value": entry}
    wall = entry.get("wall_seconds")
    section = StageSection(anchor, stage, run.stage_title(stage), float(wall) if is_number(wall) else None)
    tables = run.tables(stage)
    make = stage_figures.for_stage(stage)
    if tables is not None and make is not None:
        section.figures = page.draw(stage, make, tables, entry)
    if stage == CLAIMS:
        section.claims = claims
        section.sensitivity = entry.get("sensitivity") if is_records(entry.get("sensitivity")) else None
        section.summary = {k: v for k, v in entry.items() if k not in ("claims", "wall_seconds", "cpu_seconds", "sensitivity")}
        return section
    mine = [c for c in claims if c.evidence_stage == stage]
    section.links = [ClaimLink(c, claim_anchor(c)) for c in mine]
    lead, notes, hidden = verdicts.stage_story(stage, entry, mine)
    section.lead, section.notes = lead, notes
    section.summary = {k: v for k, v in entry.items() if k not in ("wall_seconds", "cpu_seconds", "verdict", *hidden)}
    if tables is None:
        section.missing_table = True
    else:
        section.preview = preview(stage, next(iter(tables.values())))
    return section


@dataclass
class RunView:
    """One run's part of the page: the identity line, the headline tiles, the verdict block (its
    claims, then its top components), the stage sections."""

    anchor: str
    label: str
    identity: list[tuple[str, Any]]
    model_hash: str | None
    tiles: list[dict]
    sections: list[StageSection]
    claims: list[ClaimView] = field(default_factory=list)
    claim_anchors: dict[str, str] = field(default_factory=dict)  # claim id -> the id of its row in the verdict block
    stage_anchors: dict[str, str] = field(default_factory=dict)  # stage -> its section's id
    findings: list[dict] = field(default_factory=list)


def run_claims(run: Run) -> list[ClaimView]:
    """The run's claims as the verdict block shows them, their conditions from the claims stage's sensitivity rows."""
    entry = run.entry(CLAIMS)
    sensitivity = entry.get("sensitivity") if isinstance(entry, dict) and is_records(entry.get("sensitivity")) else None
    if sensitivity is None:
        tables = run.tables(CLAIMS) or {}
        frame = tables.get("sensitivity")
        sensitivity = [{k: _plain(v) for k, v in r.items()} for r in frame.to_dict("records")] if frame is not None else None
    return verdicts.views(claims_rows(run.summary), sensitivity)


def _effect(value: Any, unit: str = "") -> str:
    return f"{verdicts.fmt(value)}{unit}" if verdicts.number(value) is not None else "—"


def findings(run: Run, claim_anchors: dict[str, str] | None = None) -> list[dict]:
    """The top components, after the claims: each ``{stage, label, items: [(component, figure)], note}``.

    The patched components by |effect|, the heads that pass the movers stage's point-estimate test
    (labelled as such, with one line on how C1's rule differs and a link to C1 from ``claim_anchors``,
    claim id → its row's id), the final-layer suppressors with their mean DLA."""
    claim_anchors = claim_anchors or {}
    out = []
    patch = run.entry("patch")
    if isinstance(patch, dict) and is_records(patch.get("top_components")):
        items = [(str(c.get("component")), _effect(c.get("effect"), "%")) for c in patch["top_components"][:6]]
        out.append(
            {"stage": "patch", "label": f"patching ({patch.get('mode', 'total')} effect on π(Y))", "items": items, "note": None}
        )
    movers = run.entry("movers")
    if isinstance(movers, dict) and isinstance(movers.get("movers"), list):
        items = [(str(m), "") for m in movers["movers"]]
        p_max = (movers.get("thresholds") or {}).get("max_p_value") if isinstance(movers.get("thresholds"), dict) else None
        note = None if items else "none"
        out.append(
            {
                "stage": "movers",
                "label": f"pass the movers stage's test (point estimates, p ≤ {verdicts.fmt(p_max)})"
                if verdicts.number(p_max) is not None
                else "pass the movers stage's test (point estimates)",
                "items": items,
                "note": note,
                # one line on how the rule differs from C1's, with a link to C1 (no claims: no link)
                "differs": ("C1", claim_anchors.get("C1"), "reads the lower ends of the 95% intervals and no p-value"),
            }
        )
    suppress = run.entry("suppress")
    if isinstance(suppress, dict) and is_records(suppress.get("components")):
        items = [(str(c.get("component")), _effect(c.get("mean_dla"))) for c in suppress["components"] if c.get("is_suppressor")]
        out.append(
            {
                "stage": "suppress",
                "label": "final-layer suppressors (mean DLA to Y, logits)",
                "items": items,
                "note": None if items else "none",
            }
        )
    return out


def identity(summary: dict, manifest: dict) -> tuple[list[tuple[str, Any]], str | None]:
    ident = manifest.get("identity") or {}
    run = manifest.get("run") or {}
    fields = [
        ("model", summary.get("model", ident.get("model"))),
        ("relation", summary.get("relation", ident.get("relation"))),
        ("relations", None if "relation" in summary else ident.get("relations")),
        ("shots", summary.get("shots", ident.get("shots"))),
        # how Y was scored (tasks.prompts): the first token, or the whole answer teacher-forced
        ("Y scored", Y_SCORED.get(summary.get("answer_metric"))),
        ("seed", summary.get("seed", ident.get("seed", run.get("seed")))),
        ("max prompts", ident.get("max_prompts", run.get("max_prompts"))),
        ("dtype", ident.get("dtype", run.get("dtype"))),
        ("device", run.get("device")),
    ]
    model_hash = summary.get("model_hash", ident.get("model_hash"))
    return [(k, v) for k, v in fields if v is not None], (str(model_hash) if model_hash else None)


def headline(summary: dict) -> list[dict]:
    """The headline tiles: accuracy, mean p(Y), known prompts and why prompts were dropped."""
    rec = (summary.get("stages") or {}).get("recall") or {}
    get = lambda key: summary.get(key, rec.get(key))  # noqa: E731
    tiles = [
        {"key": "accuracy", "value": percent(get("accuracy"))},
        {"key": "mean p(Y)", "value": fmt_number(get("mean_p_answer")) if get("mean_p_answer") is not None else "—"},
        {
            "key": "known prompts",
            "value": f"{fmt_number(get('n_known'))} / {fmt_number(get('n_prompts'))}" if get("n_prompts") is not None else "—",
        },
    ]
    dropped = rec.get("dropped") or {}
    sampled_out = dropped.get("over_max_prompts") if isinstance(dropped, dict) else None
    if sampled_out and get("n_prompts") is not None:
        # a reader should see that this is a sample (the default run's) and how to run them all
        total = int(get("n_prompts")) + int(sampled_out)
        tiles.append(
            {
                "key": "a seeded sample; --max-prompts all runs every prompt",
                "value": f"{fmt_number(get('n_prompts'))} of {fmt_number(total)} prompts",
            }
        )
    # the sample tile already says how many were left out by the sample
    shown = (
        {k: v for k, v in dropped.items() if not (sampled_out and k == "over_max_prompts")} if isinstance(dropped, dict) else {}
    )
    if shown:
        tiles.append({"key": "dropped", "pairs": list(shown.items())})
    return tiles


def anchor_part(value: str) -> str:
    """``value`` as a piece of an element id: letters, digits, "-" and "_" only (a claim numbered by its
    row is "#2", which a link's fragment cannot carry)."""
    return re.sub(r"[^A-Za-z0-9_-]", "", value) or "x"


def run_view(run: Run, anchor: str, label: str, prefix: str, page: Page) -> RunView:
    idents, model_hash = identity(run.summary, run.manifest)
    claims = run_claims(run)
    claim_anchors = {c.id: f"{prefix}-claim-{anchor_part(c.id)}" for c in claims}
    stages = run.stages()
    stage_anchors = {s: f"{prefix}-{i}" for i, s in enumerate(stages)}
    sections = [stage_section(run, s, stage_anchors[s], page, claims, lambda c: claim_anchors[c.id]) for s in stages]
    return RunView(
        anchor,
        label,
        idents,
        model_hash,
        headline(run.summary),
        sections,
        claims,
        claim_anchors,
        stage_anchors,
        findings(run, claim_anchors),
    )


def preset_view(summary: dict, manifest: dict) -> dict | None:
    """The preset that ran, the definitions it selected and what it cannot reproduce
    (``presets.Preset.to_dict``), from the summary (else the manifest); None for a run directory
    written before presets existed (runs from before ``not_reproduced`` existed show none)."""
    preset = summary.get("preset") or manifest.get("preset")
    if not isinstance(preset, dict) or not preset.get("name"):
        return None
    definitions = [d for d in preset.get("definitions") or [] if isinstance(d, dict)]
    not_reproduced = [line for line in preset.get("not_reproduced") or [] if isinstance(line, str)]
    return {
        "name": preset["name"],
        "description": preset.get("description") or "",
        "definitions": definitions,
        "not_reproduced": not_reproduced,
    }


def manifest_blocks(manifest: dict) -> list[dict]:
    """The manifest's model description, package versions, compute (threads: another count can change
    the last digits on CPU, ``pipeline.compute_record``) and stage settings, each collapsible."""
    blocks = []
    for key, title in (
        ("model", "model"),
        ("versions", "package versions"),
        ("compute", "compute (--threads N reproduces the digits)"),
        ("stage_configs", "stage settings"),
    ):
        value = manifest.get(key)
        if isinstance(value, dict) and value:
            blocks.append({"title": title, "kind": "pairs" if key in ("versions", "compute") else "summary", "value": value})
    return blocks


# --------------------------------------------------------------------------- overview of sub-runs
def _names(records: Any, flag: str | None = None, limit: int = 4) -> str | None:
    if not is_records(records):
        return None
    names = [str(r.get("component", "")) for r in records if flag is None or r.get(flag)]
    return ", ".join(names[:limit]) + (" …" if len(names) > limit else "") if names else "none"


FINDINGS = (  # (column, stage, how to read it from the stage's summary entry)
    ("top patched component", "patch", lambda e: _names(e.get("top_components"), limit=1)),
    (
        "pass the mover test (point estimates)",
        "movers",
        lambda e: ", ".join(map(str, e["movers"])) or "none" if isinstance(e.get("movers"), list) else None,
    ),
    ("MLP layer", "decompose", lambda e: e.get("layer")),
    ("held-out R²", "decompose", lambda e: e.get("cv_r2")),
    ("answer-domain share", "intercept", lambda e: e.get("answer_domain_share")),
    ("suppressors", "suppress", lambda e: _names(e.get("components"), flag="is_suppressor")),
)


def _onset_tables(runs: list[Run]) -> dict[str, pd.DataFrame]:
    """The cells' onset tables (main and ``layers``), each with its cell's ``relation`` and ``shots``:
    the shots figure's layer profiles (claims C10 and C11); {} when no cell ran the onset stage."""
    parts: dict[str, list[pd.DataFrame]] = {"onset": [], "onset_layers": []}
    for run in runs:
        tables = run.tables("onset")
        if not tables or "layers" not in tables:
            continue
        cell = {"relation": str(run.summary.get("relation")), "shots": run.summary.get("shots")}
        parts["onset"].append(next(iter(tables.values())).assign(**cell))
        parts["onset_layers"].append(tables["layers"].assign(**cell))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items() if frames}


def _onset_threshold(runs: list[Run]) -> dict:
    for run in runs:
        entry = run.entry("onset")
        if isinstance(entry, dict) and isinstance(entry.get("thresholds"), dict):
            return {"min_domain_share": entry["thresholds"].get("min_domain_share")}
    return {}


def overview(runs: list[Run], root: Path, page: Page, shot_claims: list[dict] | None = None) -> dict:
    """The overview of a parent run: the claims × cells grid (:func:`recallscope.report.verdicts.grid`),
    one row per sub-run, what each found, the shots figure."""
    rows, found, per_run = [], [], []
    for i, run in enumerate(runs):
        s = run.summary
        rec = (s.get("stages") or {}).get("recall") or {}
        rows.append(
            {
                "anchor": f"run-{i}",
                "relation": s.get("relation", run.path.name),
                "shots": s.get("shots"),
                "n_prompts": s.get("n_prompts", rec.get("n_prompts")),
                "n_known": s.get("n_known", rec.get("n_known")),
                "accuracy": percent(s.get("accuracy", rec.get("accuracy"))),
                "mean_p_answer": s.get("mean_p_answer", rec.get("mean_p_answer")),
                "stages": run.stages(),
                "folder": str(run.path.relative_to(root.resolve())),
            }
        )
        values = {}
        for column, stage, read in FINDINGS:
            entry = run.entry(stage)
            if isinstance(entry, dict):
                try:
                    values[column] = read(entry)
                except (KeyError, TypeError, ValueError, IndexError):
                    values[column] = None
        per_run.append(values)
    columns = [c for c, _, _ in FINDINGS if any(v.get(c) is not None for v in per_run)]
    for row, values in zip(rows, per_run, strict=True):
        found.append({**row, "values": [values.get(c) for c in columns]})
    table = pd.DataFrame(
        {
            "relation": [str(r.summary.get("relation")) for r in runs],
            "shots": [r.summary.get("shots") for r in runs],
            "accuracy": [r.summary.get("accuracy") for r in runs],
            "mean_p_answer": [r.summary.get("mean_p_answer") for r in runs],
        },
        dtype=object,
    )
    figs = page.draw("shots", shots_figures.figures, {"runs": table, **_onset_tables(runs)}, _onset_threshold(runs))
    cells = []
    for i, (run, row) in enumerate(zip(runs, rows, strict=True)):
        entry = run.entry(CLAIMS)
        cells.append(
            {
                "relation": row["relation"],
                "shots": row["shots"],
                "folder": row["folder"],
                "anchor": f"run-{i}",
                "claims": claims_rows(run.summary),
                "sensitivity": entry.get("sensitivity") if isinstance(entry, dict) else None,
            }
        )
    grid = verdicts.grid(cells, shot_claims)
    return {"rows": rows, "finding_columns": columns, "found": found, "figures": figs, "grid": grid}


# --------------------------------------------------------------------------- the page
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("recallscope.report", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def visible(value: Any) -> str:
    """A data string as the page shows it: C0, DEL and C1 control characters written as escapes
    (``\\x1b``), since a browser drops them and the page would show another name than the file's;
    bidi and format characters stay (``<bdi>`` isolates them)."""
    return escape_controls(value, keep_newlines=True, keep_format=True)


_ENV.filters.update(
    visible=visible,
    number=fmt_number,
    percent=percent,
    kind=value_kind,
    compact_json=compact_json,
    is_short=is_short,
    columns=columns_of,
    split_summary=split_summary,
    verdict_class=verdict_class,
)
_ENV.tests.update(problem=lambda v: isinstance(v, Problem))
_ENV.globals.update(TEXT_LIMIT=TEXT_LIMIT, LIST_LIMIT=LIST_LIMIT, ROW_LIMIT=ROW_LIMIT, PREVIEW_ROWS=PREVIEW_ROWS)


def environment() -> jinja2.Environment:
    """The report's Jinja2 environment (autoescaping on for every template)."""
    return _ENV


def plotly_bundle() -> Markup:
    """plotly.js, the one piece of the page's script that is not the project's own template text.

    It is trusted code, but a ``</script`` inside it would still end the element early.
    """
    bundle = plotly.offline.get_plotlyjs()
    return Markup(re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE))


def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one HTML string (see the module docstring).

    Raises :class:`~recallscope.errors.UserError` when ``run_dir`` holds no ``summary.json``,
    neither itself nor in a folder below it.
    """
    root = Path(run_dir)
    if not (root / SUMMARY).is_file() and not any(root.rglob(SUMMARY)):
        raise UserError(f"{root}: no {SUMMARY} here; run a stage with --out {root} first")
    top = Run.read(root)
    page = Page()
    subs = [Run.read(p) for p in sub_runs(root, top.summary)]
    context: dict[str, Any] = {"csp": CSP}
    if subs:
        model = top.summary.get("model") or subs[0].summary.get("model")
        context["title"] = f"recallscope — {model} — {len(subs)} runs"
        idents, model_hash = identity({"model": model, "model_hash": top.summary.get("model_hash")}, top.manifest)
        context["header"] = {
            "identity": idents,
            "model_hash": model_hash,
            "tiles": [],
            "manifest": manifest_blocks(top.manifest or subs[0].manifest),
            "preset": preset_view(top.summary, top.manifest or subs[0].manifest),
        }
        context["shot_claims"] = verdicts.views(claims_rows(top.summary))
        context["overview"] = overview(subs, root, page, claims_rows(top.summary))
        runs = []
        for i, run in enumerate(subs):
            s = run.summary
            label = f"{s.get('relation', run.path.name)}, {s.get('shots', '?')}-shot"
            runs.append(run_view(run, f"run-{i}", label, f"run-{i}", page))
        context["runs"] = runs
    else:
        s = top.summary
        context["title"] = f"recallscope — {s.get('model', '?')} — {s.get('relation', '?')}, {s.get('shots', '?')}-shot"
        view = run_view(top, "run", context["title"], "stage", page)
        context["header"] = {
            "identity": view.identity,
            "model_hash": view.model_hash,
            "tiles": view.tiles,
            "manifest": manifest_blocks(top.manifest),
            "preset": preset_view(top.summary, top.manifest),
        }
        context["overview"] = None
        context["shot_claims"] = None
        context["runs"] = [view]
    context["single"] = not subs
    context["n_figures"] = page.n_figures
    context["plotly_js"] = plotly_bundle() if page.n_figures else None
    return _ENV.get_template("report.html.j2").render(context)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into ``run_dir`` atomically and return its path."""
    root = Path(run_dir)
    out = root / REPORT
    # A lone surrogate cannot be written as UTF-8; it becomes "?" rather than costing the report.
    atomic_write_bytes(out, render_report(root).encode("utf-8", errors="replace"))
    return out
