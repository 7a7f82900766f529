"""The HTML report: one self-contained page for a run directory.

The page is a single file that works offline: plotly.js is embedded once, every figure travels
as JSON in its own ``<script type="application/json">`` block and is drawn by one small script
at the end, and a Content-Security-Policy forbids every network fetch. Everything that came
from data — model and relation names, subjects, answers, tokens, summary keys — is text to this
module: it goes through :func:`html.escape` before it reaches the page, and figure JSON has every
``<``, ``>`` and ``/`` written as a JSON escape, so a token such as ``</script>`` cannot end the
block it sits in.

Sections follow the pipeline: a header (model, relation, shots, seed, hash, versions and the
headline numbers), then one section per finished stage — its wall time, its summary as tables,
a preview of its Parquet table and the plots of the stage module's ``figures(frame, summary)``
when it has one — and the claims table with coloured verdicts. A parent directory that holds
several sub-runs (one per relation × shots) becomes one page with an overview and a section per
sub-run.
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..rundir import MANIFEST, SUMMARY, atomic_write_bytes
from .style import CSS, PLOT_SCRIPT

log = logging.getLogger(__name__)

REPORT = "report.html"
# The stages' order and titles come from the run's manifest ("stages", written from the stage table
# of recallscope.pipeline), so rendering a run directory does not import the stages (nor torch).
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; font-src data:"
TEXT_LIMIT = 160  # characters of one string shown in a table cell; the rest is cut with a note
LIST_LIMIT = 30  # items of a list of scalars shown inline
ROW_LIMIT = 25  # rows of a summary list shown in a table
PREVIEW_ROWS = 12  # rows of a stage's Parquet table shown in the preview
VERDICT_CLASS = {"holds": "v-holds", "does not hold": "v-fails", "not measurable": "v-na"}


# --------------------------------------------------------------------------- text
def esc(value: Any) -> str:
    """Any value as escaped HTML text (quotes too: the result may sit in an attribute)."""
    return html.escape(str(value), quote=True)


def text(value: str, limit: int = TEXT_LIMIT) -> str:
    """A data string as escaped HTML, cut to ``limit`` characters, isolated for bidi."""
    value = str(value)
    note = ""
    if len(value) > limit:
        note = f'<span class="cut">… ({len(value):,} characters)</span>'
        value = value[:limit]
    return f'<bdi class="s">{esc(value)}</bdi>{note}'


def number(value: Any) -> str:
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
    return text(value)


def cell(value: Any) -> str:
    """One value in a table cell: numbers formatted, strings escaped, containers compact."""
    if value is None:
        return '<span class="none">—</span>'
    if isinstance(value, (bool, int, float)):
        return f'<span class="n">{number(value)}</span>'

    if isinstance(value, str):
        return text(value)
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value):
        shown = ", ".join(cell(v) for v in list(value)[:LIST_LIMIT])
        more = f'<span class="cut"> … ({len(value):,} items)</span>' if len(value) > LIST_LIMIT else ""
        return f"[{shown}{more}]"
    try:
        return text(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return text(repr(value))


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


# --------------------------------------------------------------------------- tables
def kv_table(items: list[tuple[str, Any]], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{text(k, 80)}</th><td>{cell(v)}</td></tr>" for k, v in items)
    return f'<table class="{cls}">{rows}</table>'


def rows_table(rows: list[dict], limit: int = ROW_LIMIT) -> str:
    """A list of records as a table (columns: the union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{text(c, 60)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td{_nowrap(row.get(c))}>{cell(row.get(c))}</td>" for c in columns) + "</tr>"
        for row in rows[:limit]
    )
    note = f'<p class="note">first {limit} of {len(rows):,} rows</p>' if len(rows) > limit else ""
    return f'<div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}'


def _nowrap(value: Any) -> str:
    """Short values stay on one line (a wide table scrolls; three words stacked in a column do not read)."""
    try:
        short = len(json.dumps(value, ensure_ascii=False, default=str)) <= 40
    except (TypeError, ValueError):
        short = False
    return ' class="nw"' if short else ""


def is_records(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, dict) for v in value)


def summary_tables(entry: dict, skip: tuple[str, ...] = ()) -> str:
    """A stage's summary entry: scalars in one table, each list of records and each nested
    object in its own (collapsible) block."""
    scalars, blocks = [], []
    for key, value in entry.items():
        if key in skip:
            continue
        if is_records(value):
            opened = " open" if len(value) <= 20 else ""
            blocks.append(f"<details{opened}><summary>{text(key, 80)} ({len(value):,})</summary>{rows_table(value)}</details>")
        elif isinstance(value, dict) and value:
            if all(not isinstance(v, (dict, list)) for v in value.values()) and len(value) <= 12:
                scalars.append((key, _Inline(value)))
            else:
                blocks.append(f"<details><summary>{text(key, 80)}</summary>{summary_tables(value)}</details>")
        else:
            scalars.append((key, value))
    out = ""
    if scalars:
        pairs = "".join(
            f'<div class="pair"><span class="k">{text(k, 80)}</span> <span class="v">'
            f"{v.html() if isinstance(v, _Inline) else cell(v)}</span></div>"
            for k, v in scalars
        )
        out += f'<div class="pairs">{pairs}</div>'
    return out + "".join(blocks)


@dataclass
class _Inline:
    """A small flat dict shown as ``key: value`` pairs in one cell."""

    value: dict

    def html(self) -> str:
        return "; ".join(f"{text(k, 60)}: {cell(v)}" for k, v in self.value.items())


def frame_preview(stage: str, frame: pd.DataFrame) -> str:
    """The first rows of a stage's table (for recall: the prompts the model does not know first)."""
    shown = frame
    label = f"first {min(PREVIEW_ROWS, len(frame))}"
    if stage == "recall" and "known" in frame.columns:
        columns = [c for c in ("subject", "answer", "answer_token", "top1_token", "p_answer", "rank_answer", "known", "text")
                   if c in frame.columns]
        shown = frame.sort_values(["known", "p_answer"], kind="stable")[columns]
        label = f"the {min(PREVIEW_ROWS, len(frame))} with the lowest p(Y), unknown first"
    records = [{str(k): _plain(v) for k, v in row.items()} for row in shown.head(PREVIEW_ROWS).to_dict("records")]
    if not records:
        return '<p class="note">the table is empty</p>'
    return (
        f"<details><summary>{esc(stage)}.parquet: {len(frame):,} rows × {len(frame.columns)} columns — "
        f"{esc(label)}</summary>{rows_table(records, PREVIEW_ROWS)}</details>"
    )


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


# --------------------------------------------------------------------------- figures
_PLOTLY_TAG = re.compile(r"</?(b|i|em|sup|sub|span|s|u|a|br)(\s[^<>]*)?/?>", re.IGNORECASE)


def plain_title(title: str) -> str:
    """Plotly title text (a small HTML dialect with entities) as plain text for a caption."""
    return html.unescape(_PLOTLY_TAG.sub(" ", title)).strip()


@dataclass
class Page:
    """Collects the figures of a page so that each gets a unique id."""

    n_figures: int = 0
    problems: list[str] = field(default_factory=list)

    def figure(self, fig) -> str:
        """A plotly figure as a captioned container plus its JSON; the title becomes the caption
        (HTML wraps a long title, plotly would cut it)."""
        import plotly.graph_objects as go

        fig = go.Figure(fig)
        title = fig.layout.title.text or ""
        fig.update_layout(
            title=None, height=360, autosize=True, margin={"l": 60, "r": 20, "t": 30, "b": 60},
            font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12},
        )
        spec = fig.to_json()  # plotly writes <, > and / as \u003c, \u003e, \u002f already
        spec = spec.replace("</", "<\\/").replace("<!--", "<\\!--")
        self.n_figures += 1
        pid = f"plot-{self.n_figures}"
        caption = f"<figcaption>{text(plain_title(title), 400)}</figcaption>" if title else ""
        return (
            f'<figure class="fig">{caption}<div class="plot" id="{pid}"></div>'
            f'<script type="application/json" id="{pid}-json">{spec}</script></figure>'
        )

    def problem(self, message: str) -> str:
        self.problems.append(message)
        log.warning("report: %s", message)
        return f'<p class="problem">{text(message, 600)}</p>'


def stage_figures(stage: str, frame: pd.DataFrame | None, entry: dict, page: Page) -> str:
    """The plots of ``recallscope.<stage>.figures`` (none when the module has no such function)."""
    if frame is None:
        return ""
    try:
        module = importlib.import_module(f"recallscope.{stage}")
    except ImportError:
        return ""
    make = getattr(module, "figures", None)
    if not callable(make):
        return ""
    try:
        figs = make(frame, entry)
    except Exception as exc:  # a broken plot must not cost the user the rest of the report
        return page.problem(f"{stage}: the plots could not be drawn ({type(exc).__name__}: {exc})")
    if figs is None:
        return ""
    if not isinstance(figs, (list, tuple)):
        figs = [figs]
    parts = []
    for i, fig in enumerate(figs):
        try:
            parts.append(page.figure(fig))
        except Exception as exc:  # not a plotly figure, or one plotly cannot serialise
            parts.append(page.problem(f"{stage}: plot {i + 1} could not be drawn ({type(exc).__name__}: {exc})"))
    return '<div class="figs">' + "".join(parts) + "</div>" if parts else ""


# --------------------------------------------------------------------------- run directories
@dataclass
class Run:
    path: Path
    manifest: dict
    summary: dict

    @classmethod
    def read(cls, path: Path) -> "Run":
        return cls(path, _read_json(path / MANIFEST), _read_json(path / SUMMARY))

    def frame(self, stage: str) -> pd.DataFrame | None:
        table = self.path / f"{stage}.parquet"
        return pd.read_parquet(table) if table.is_file() else None

    def stages(self) -> list[str]:
        found = list((self.summary.get("stages") or {}).keys())
        order = [s.get("name") for s in (self.manifest or {}).get("stages") or [] if isinstance(s, dict)]
        known = [s for s in order if s in found]
        return known + [s for s in found if s not in order]

    def title(self, stage: str) -> str:
        titles = {s.get("name"): s.get("title") for s in (self.manifest or {}).get("stages") or [] if isinstance(s, dict)}
        return titles.get(stage) or stage


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("report: %s is not valid JSON; ignored", path)
        return {}
    return data if isinstance(data, dict) else {}


def sub_runs(root: Path, summary: dict) -> list[Path]:
    """Sub-run directories of a parent run: the summary's ``runs[].path`` in its order, then any
    other folder below ``root`` that holds a summary.json."""
    found: list[Path] = []
    for entry in summary.get("runs") or []:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(rel, str):
            candidate = (root / rel).resolve()
            if candidate.is_relative_to(root.resolve()) and (candidate / SUMMARY).is_file() and candidate not in found:
                found.append(candidate)
    for path in sorted(root.rglob(SUMMARY)):
        folder = path.parent.resolve()
        if folder != root.resolve() and folder not in found:
            found.append(folder)
    return found


# --------------------------------------------------------------------------- sections
def headline(summary: dict) -> str:
    rec = (summary.get("stages") or {}).get("recall") or {}
    get = lambda key: summary.get(key, rec.get(key))  # noqa: E731
    tiles = [
        ("accuracy", percent(get("accuracy"))),
        ("mean p(Y)", number(get("mean_p_answer")) if get("mean_p_answer") is not None else "—"),
        ("known prompts", f"{number(get('n_known'))} / {number(get('n_prompts'))}" if get("n_prompts") is not None else "—"),
    ]
    dropped = rec.get("dropped") or {}
    if dropped:
        tiles.append(("dropped", ", ".join(f"{text(k, 40)}: {number(v)}" for k, v in dropped.items())))
    return '<div class="tiles">' + "".join(
        f'<div class="tile"><div class="tv">{v}</div><div class="tk">{esc(k)}</div></div>' for k, v in tiles
    ) + "</div>"


def claims_rows(summary: dict) -> list[dict] | None:
    claims = summary.get("claims")
    if claims is None:
        claims = (summary.get("stages") or {}).get("claims")
    if isinstance(claims, dict):
        claims = claims.get("claims")
    return claims if is_records(claims) else None


def claims_table(claims: list[dict]) -> str:
    head = "<tr><th>claim</th><th>measured</th><th>95% CI</th><th>verdict</th></tr>"
    body = ""
    for c in claims:
        verdict = str(c.get("verdict", ""))
        cls = VERDICT_CLASS.get(verdict.strip().lower(), "v-other")
        lo, hi = c.get("ci_low"), c.get("ci_high")
        ci = f"{cell(lo)} – {cell(hi)}" if lo is not None or hi is not None else '<span class="none">—</span>'
        extra = "".join(
            f'<div class="note">{text(k, 40)}: {cell(v)}</div>'
            for k, v in c.items() if k not in ("claim", "value", "ci_low", "ci_high", "verdict")
        )
        body += (
            f"<tr><td>{text(c.get('claim', ''), 400)}{extra}</td><td>{cell(c.get('value'))}</td><td>{ci}</td>"
            f'<td><span class="verdict {cls}">{text(verdict, 40)}</span></td></tr>'
        )
    return f'<div class="scroll"><table class="grid claims"><thead>{head}</thead><tbody>{body}</tbody></table></div>'


def stage_section(run: Run, stage: str, anchor: str, page: Page) -> str:
    entry = (run.summary.get("stages") or {}).get(stage)
    if stage == "claims" and not isinstance(entry, dict):
        entry = {}
    entry = entry if isinstance(entry, dict) else {"value": entry}
    wall = entry.get("wall_seconds")
    wall_html = f'<span class="wall">{number(float(wall))} s</span>' if isinstance(wall, (int, float)) else ""
    title = run.title(stage)
    body = ""
    if stage == "claims":
        claims = claims_rows(run.summary)
        body += claims_table(claims) if claims else '<p class="note">no claims recorded</p>'
        body += stage_figures(stage, run.frame(stage), entry, page)
        rest = {k: v for k, v in entry.items() if k not in ("claims", "wall_seconds")}
        body += summary_tables(rest)
    else:
        frame = run.frame(stage)
        verdict = entry.get("verdict")
        if isinstance(verdict, str):
            body += f'<p class="lead">{text(verdict, 600)}</p>'
        body += stage_figures(stage, frame, entry, page)
        body += summary_tables(entry, skip=("wall_seconds", "verdict"))
        if frame is not None:
            body += frame_preview(stage, frame)
        else:
            body += f'<p class="note">{esc(stage)}.parquet is missing from this run directory</p>'
    return f'<section class="stage" id="{anchor}"><h3>{esc(title)} {wall_html}</h3>{body}</section>'


def run_sections(run: Run, prefix: str, page: Page) -> tuple[str, list[tuple[str, str]]]:
    stages = run.stages()
    if claims_rows(run.summary) and "claims" not in stages:
        stages.append("claims")
    toc = [(f"{prefix}-{i}", s) for i, s in enumerate(stages)]
    html_parts = [stage_section(run, s, anchor, page) for (anchor, s) in toc]
    if not stages:
        html_parts.append('<p class="note">no stage has finished in this run directory</p>')
    return "".join(html_parts), toc


def manifest_block(manifest: dict) -> str:
    parts = []
    model = manifest.get("model")
    if isinstance(model, dict) and model:
        parts.append(f"<details><summary>model</summary>{summary_tables(model)}</details>")
    versions = manifest.get("versions")
    if isinstance(versions, dict) and versions:
        parts.append(f"<details><summary>package versions</summary>{kv_table(list(versions.items()))}</details>")
    configs = manifest.get("stage_configs")
    if isinstance(configs, dict) and configs:
        parts.append(f"<details><summary>stage settings</summary>{summary_tables(configs)}</details>")
    return '<div class="meta">' + "".join(parts) + "</div>" if parts else ""


def identity_line(summary: dict, manifest: dict) -> str:
    ident = manifest.get("identity") or {}
    run = manifest.get("run") or {}
    fields = [
        ("model", summary.get("model", ident.get("model"))),
        ("relation", summary.get("relation", ident.get("relation"))),
        ("relations", None if "relation" in summary else ident.get("relations")),
        ("shots", summary.get("shots", ident.get("shots"))),
        ("seed", summary.get("seed", ident.get("seed", run.get("seed")))),
        ("max prompts", ident.get("max_prompts", run.get("max_prompts"))),
        ("dtype", ident.get("dtype", run.get("dtype"))),
        ("device", run.get("device")),
    ]
    items = "".join(f"<li><span class=k>{esc(k)}</span> {cell(v)}</li>" for k, v in fields if v is not None)
    model_hash = summary.get("model_hash", ident.get("model_hash"))
    if model_hash:
        short = str(model_hash)[:23] + ("…" if len(str(model_hash)) > 23 else "")
        items += f'<li><span class=k>model hash</span> <code title="{esc(model_hash)}">{esc(short)}</code></li>'
    return f'<ul class="ident">{items}</ul>'


def overview(runs: list[Run], root: Path, page: Page) -> str:
    rows = []
    for i, run in enumerate(runs):
        s = run.summary
        rec = (s.get("stages") or {}).get("recall") or {}
        rows.append(
            "<tr>"
            f'<td><a href="#run-{i}">{text(s.get("relation", run.path.name), 80)}</a></td>'
            f"<td>{cell(s.get('shots'))}</td><td>{cell(s.get('n_prompts', rec.get('n_prompts')))}</td>"
            f"<td>{cell(s.get('n_known', rec.get('n_known')))}</td>"
            f"<td>{percent(s.get('accuracy', rec.get('accuracy')))}</td>"
            f"<td>{cell(s.get('mean_p_answer', rec.get('mean_p_answer')))}</td>"
            f"<td>{', '.join(esc(x) for x in run.stages()) or '—'}</td>"
            f"<td><code>{text(str(run.path.relative_to(root.resolve())), 80)}</code></td></tr>"
        )
    table = (
        '<div class="scroll"><table class="grid"><thead><tr><th>relation</th><th>shots</th><th>prompts</th>'
        "<th>known</th><th>accuracy</th><th>mean p(Y)</th><th>stages</th><th>folder</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    return table + findings_table(runs) + shots_figure(runs, page)


def _names(records: Any, flag: str | None = None, limit: int = 4) -> str | None:
    if not is_records(records):
        return None
    names = [str(r.get("component", "")) for r in records if flag is None or r.get(flag)]
    return ", ".join(names[:limit]) + (" …" if len(names) > limit else "") if names else "none"


FINDINGS = (  # (column, stage, how to read it from the stage's summary entry)
    ("top patched component", "patch", lambda e: _names(e.get("top_components"), limit=1)),
    ("mover heads", "movers", lambda e: ", ".join(map(str, e["movers"])) or "none" if isinstance(e.get("movers"), list) else None),
    ("MLP layer", "decompose", lambda e: e.get("layer")),
    ("held-out R²", "decompose", lambda e: e.get("cv_r2")),
    ("answer-domain share", "intercept", lambda e: e.get("answer_domain_share")),
    ("suppressors", "suppress", lambda e: _names(e.get("components"), flag="is_suppressor")),
)


def findings_table(runs: list[Run]) -> str:
    """What each sub-run found, side by side: the shots comparison at a glance."""
    values = []
    for run in runs:
        stages = run.summary.get("stages") or {}
        row = {}
        for column, stage, read in FINDINGS:
            entry = stages.get(stage)
            if isinstance(entry, dict):
                try:
                    row[column] = read(entry)
                except (KeyError, TypeError, ValueError, IndexError):
                    row[column] = None
        values.append(row)
    columns = [c for c, _, _ in FINDINGS if any(row.get(c) is not None for row in values)]
    if not columns:
        return ""
    head = "<th>relation</th><th>shots</th>" + "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        f'<tr><td><a href="#run-{i}">{text(run.summary.get("relation", run.path.name), 80)}</a></td>'
        f"<td>{cell(run.summary.get('shots'))}</td>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns) + "</tr>"
        for i, (run, row) in enumerate(zip(runs, values, strict=True))
    )
    return (
        '<h3 class="sub">What each run found</h3><div class="scroll"><table class="grid">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def shots_figure(runs: list[Run], page: Page) -> str:
    """Accuracy and mean p(Y) against the shot count, one line per relation."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    by_relation: dict[str, list[tuple[int, float, float]]] = {}
    for run in runs:
        s = run.summary
        if isinstance(s.get("shots"), int) and isinstance(s.get("accuracy"), (int, float)):
            by_relation.setdefault(str(s.get("relation")), []).append((s["shots"], s["accuracy"], s.get("mean_p_answer")))
    if len(runs) < 2 or not by_relation:
        return ""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "mean p(Y)"))
    for i, (relation, points) in enumerate(sorted(by_relation.items())):
        points.sort()
        name = html.escape(relation)
        colour = _PALETTE[i % len(_PALETTE)]
        for col, k in ((1, 1), (2, 2)):
            fig.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[p[k] for p in points], mode="lines+markers", name=name,
                legendgroup=name, showlegend=col == 1, line={"color": colour},
            ), row=1, col=col)
    fig.update_xaxes(title_text="shots", dtick=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title="Zero-shot against few-shot: accuracy and mean p(Y) by relation")
    return '<div class="figs wide">' + page.figure(fig) + "</div>"


_PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0c8599", "#5c940d", "#f08c00")


# --------------------------------------------------------------------------- the page
def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one HTML string (see the module docstring)."""
    root = Path(run_dir)
    if not (root / SUMMARY).is_file() and not any(root.rglob(SUMMARY)):
        from ..errors import UserError

        raise UserError(f"{root}: no {SUMMARY} here; run a stage with --out {root} first")
    top = Run.read(root)
    page = Page()
    subs = [Run.read(p) for p in sub_runs(root, top.summary)]
    nav: list[str] = []
    if subs:
        model = top.summary.get("model") or subs[0].summary.get("model")
        title = f"recallscope — {model} — {len(subs)} runs"
        header = identity_line({"model": model, "model_hash": top.summary.get("model_hash")}, top.manifest)
        header += manifest_block(top.manifest or subs[0].manifest)
        body = f'<section class="overview" id="overview"><h2>Overview</h2>{overview(subs, root, page)}</section>'
        nav.append('<a href="#overview">overview</a>')
        for i, run in enumerate(subs):
            s = run.summary
            label = f"{s.get('relation', run.path.name)}, {s.get('shots', '?')}-shot"
            sections, toc = run_sections(run, f"run-{i}", page)
            links = " ".join(f'<a href="#{a}">{esc(name)}</a>' for a, name in toc)
            body += (
                f'<section class="run" id="run-{i}"><h2>{text(label, 120)}</h2>'
                f"{identity_line(s, run.manifest)}{headline(s)}<nav class=\"sub\">{links}</nav>{sections}</section>"
            )
            nav.append(f'<a href="#run-{i}">{text(label, 60)}</a>')
    else:
        s = top.summary
        title = f"recallscope — {s.get('model', '?')} — {s.get('relation', '?')}, {s.get('shots', '?')}-shot"
        header = identity_line(s, top.manifest) + headline(s) + manifest_block(top.manifest)
        body, toc = run_sections(top, "stage", page)
        nav += [f'<a href="#{a}">{esc(name)}</a>' for a, name in toc]
    return _page(title, header, "".join(nav), body, page)


def _page(title: str, header: str, nav: str, body: str, page: Page) -> str:
    import plotly.offline

    plotly_js = plotly.offline.get_plotlyjs() if page.n_figures else ""
    # The bundle is trusted code, but a "</script" inside it would still end the element early.
    plotly_js = re.sub(r"</(script)", r"<\\/\1", plotly_js, flags=re.IGNORECASE)
    scripts = ""
    if page.n_figures:
        scripts = (
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
            f'<script id="plotly-js">{plotly_js}</script>\n<script>{PLOT_SCRIPT}</script>'
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="recallscope">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body data-plots="{page.n_figures}">
<header><h1>{esc(title)}</h1>{header}<nav class="top">{nav}</nav></header>
<main>{body}</main>
<footer>recallscope report — a single offline file; every plot is interactive (hover, zoom, double-click to reset).</footer>
{scripts}
</body>
</html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into ``run_dir`` atomically and return its path."""
    root = Path(run_dir)
    out = root / REPORT
    # A lone surrogate cannot be written as UTF-8; it becomes "?" rather than costing the report.
    atomic_write_bytes(out, render_report(root).encode("utf-8", errors="replace"))
    return out
