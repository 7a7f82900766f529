"""What the command line prints: a run, its claims, a sweep's claims × cells grid, a stage's summary,
the models and the relations — readable at 80 columns, every string from data through
:mod:`recallscope.terminal` (escaped, never parsed as markup).

The claims read as the report shows them (:mod:`recallscope.verdicts`): at any width one line per
claim — id, verdict, the statistic that decided it with its 95% interval, its threshold, the claim
— and ``--wide`` for the rest (the primary figure, margin, flips at, every condition); ``--json``
prints everything as one JSON object instead.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from rich import box
from rich.console import Console, Group
from rich.table import Table

from . import verdicts
from .columns import Y_SCORED
from .terminal import json_line, text
from .verdicts import ClaimView

STYLE = {"holds": "green", "fails": "red", "inconclusive": "yellow", "na": "dim", "other": "magenta"}
SHORT_VERDICT = {"na": "not measurable"}
ROWS = 10  # rows of a list shown in a stage's summary (--json: all)
CELL = 60  # characters of one value in a stage's summary table


def _table(title: str | None = None, **kwargs) -> Table:
    return Table(
        title=text(title) if title else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        **kwargs,
    )


def _cells_width(widths: list[int]) -> int:
    """Columns plus what a :func:`_table` adds: one space of padding each side (none at the outer
    edges) and one space between columns."""
    return sum(widths) + 2 * len(widths) - 2 + len(widths) - 1


def _shrink(widths: list[int], width: int) -> None:
    """Columns still too wide for ``width`` (a narrow terminal): the widest give a character at a time
    (down to 4), the first never — it names the row (a claim's id, a relation's code). In place."""
    while _cells_width(widths) > width and max(widths[1:], default=0) > 4:
        widest = max(range(1, len(widths)), key=lambda i: widths[i])
        widths[widest] -= 1


def fitted_table(
    console: Console, title: str | None, headers: list[str], rows: list[list], flexible: int | None, bold_first: bool = True
) -> Table:
    """A :func:`_table` whose columns are as wide as their widest cell and whose ``flexible`` column
    (cut with an ellipsis) gets the width that is left on ``console``.

    Widths are set here rather than left to Rich: with cells that must not wrap, Rich collapses
    whole columns to nothing when the table is too wide (the claim ids vanished at 80 columns)."""
    widths = _widths(headers, rows)
    if flexible is not None:
        widths[flexible] = max(8, min(widths[flexible], _width_left(console, headers, rows, flexible)))
    _shrink(widths, console.width)
    t = _table(title)
    for i, header in enumerate(headers):
        t.add_column(
            text(header, keep_newlines=True),
            no_wrap=True,
            overflow="ellipsis",
            width=widths[i],
            style="bold" if bold_first and i == 0 else None,
        )
    for r in rows:
        t.add_row(*r)
    return t


MIN_CLAIM_WIDTH = 24  # below this the claims table writes each claim on its own line instead of cutting it


def _widths(headers: list[str], rows: list[list]) -> list[int]:
    """Each column's natural width: its widest header line or cell."""
    return [max([len(line) for line in headers[i].split("\n")] + [r[i].cell_len for r in rows]) for i in range(len(headers))]


def _width_left(console: Console, headers: list[str], rows: list[list], flexible: int) -> int:
    """The width :func:`fitted_table` gives its ``flexible`` column on ``console`` (before the 8-character floor)."""
    widths = _widths(headers, rows)
    return console.width - _cells_width([w for i, w in enumerate(widths) if i != flexible] + [0])


def _wrapped_list(entries: list[tuple]) -> Table:
    """(id, text) pairs, one per line: the id bold, the text in full, wrapped under itself (never cut)."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for key, value in entries:
        t.add_row(key, value)
    return t


def fmt(value: Any) -> str:
    """A value for a table cell: numbers with 3–4 significant digits, lists and dicts compact."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return verdicts.fmt(value, 4) if math.isfinite(value) else "—"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def _cut(s: str, limit: int = CELL) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def print_json(value: Any) -> None:
    """``value`` as one JSON line on stdout (:func:`recallscope.terminal.json_line`)."""
    import sys

    sys.stdout.write(json_line(value))


# --------------------------------------------------------------------------- claims
def verdict_text(c: ClaimView):
    label = SHORT_VERDICT.get(c.kind, c.verdict)
    if c.kind == "inconclusive" and verdicts.number(c.prompts_needed) is not None:
        beyond = f" > {verdicts.whole(c.prompts_available)}" if c.beyond_relation() else ""
        label += f" (≈{verdicts.whole(c.prompts_needed)}{beyond})"
    return text(label, STYLE[c.kind])


def claims_table(console: Console, claims: list[ClaimView], title: str, wide: bool = False) -> Table:
    """The claims, one row per claim. Compact (the default): id, verdict, the deciding statistic
    with its interval, its threshold and the claim (cut to the width left). ``wide``: every column."""
    if not wide:
        rows = []
        for c in claims:
            statement = c.statement + (f" · {c.relation}" if c.relation else "") + (f" · {c.about}" if c.about else "")
            rows.append(
                [
                    text(c.id),
                    verdict_text(c),
                    text(f"{c.decider()}: {c.figure()}" if c.decider() else c.figure()),
                    text(c.deciding.against() if c.deciding.name else ""),
                    text(statement),
                ]
            )
        headers = ["id", "verdict", "value [95% CI]", "vs", "claim"]
        if _width_left(console, headers, rows, 4) >= MIN_CLAIM_WIDTH:
            return fitted_table(console, title, headers, rows, flexible=4)
        # a narrow terminal: the claim column would keep a few characters ("Mover h…" at 80 columns); the
        # table keeps the figures and each claim is written in full below it, wrapped, under its id
        table = fitted_table(console, title, headers[:4], [r[:4] for r in rows], flexible=None)
        return Group(table, "", _wrapped_list([(r[0], r[4]) for r in rows]))
    t = _table(title)
    for name in (
        "id",
        "claim",
        "verdict",
        "primary figure [95% CI]",
        "decided by",
        "value [95% CI]",
        "vs",
        "margin",
        "flips at",
        "conditions",
    ):
        t.add_column(name, no_wrap=name in ("id", "verdict"))
    for c in claims:
        conds = "\n".join(f"{cond.mark} {cond.text()}" for cond in c.conditions) or (c.detail or "")
        statement = c.statement + (f" ({c.relation})" if c.relation else "") + (f" · about {c.about}" if c.about else "")
        t.add_row(
            text(c.id),
            text(statement),
            verdict_text(c),
            text(c.primary()),
            text((c.deciding.name or "—") + (f" (of {c.decider()})" if c.decider() else "")),
            text(c.figure()),
            text(c.deciding.against()),
            text(fmt(c.margin)),
            text(fmt(c.flips_at)),
            text(conds, keep_newlines=True),
        )
    return t


CLAIMS_NOTE = (
    "value: the statistic that decided the verdict with its 95% interval (low/high: only the end the rule compares is "
    'recorded; "L29H0: …": the component that decided a claim about some component); vs: its threshold. inconclusive (≈N): about N known prompts would decide it if the effect stayed as '
    "measured (interval width ∝ 1/√n); ≈N > M: more than the M known prompts the relation can give. --wide: the primary "
    "figure, margin, flips at and every condition; --json: everything."
)


def print_claims(console: Console, claims: list[ClaimView], title: str, wide: bool = False, note: bool = True) -> None:
    console.print(claims_table(console, claims, title, wide))
    if note and not wide:
        console.print(text(CLAIMS_NOTE, "dim"))


def print_sensitivity(console: Console, claims: list[ClaimView]) -> None:
    """Every condition of every rule: its state (✓ met, ✗ failed, ? straddles), its estimate and
    interval (else the interval end the rule compares) against its threshold, its margin, the setting
    value at which the verdict would flip and, for a straddling one, the prompts that would decide it.
    A table where it fits the console; otherwise (80 columns) two lines per condition, the condition
    then its figures, so no name is cut to a few characters."""
    title = "sensitivity: each condition, its interval against its threshold, and the setting value where the verdict flips"
    headers = ["id", "", "condition", "value [95% CI]", "vs", "margin", "setting", "now", "flips at", "prompts needed"]
    rows = []
    for c in claims:
        for cond in c.conditions:
            label, end = verdicts.split_end(cond.name)
            shown = (
                f"{fmt(cond.estimate)} [{fmt(cond.low)}, {fmt(cond.high)}]"
                if cond.estimate is not None and cond.low is not None and cond.high is not None
                else f"{end} {fmt(cond.statistic)}".strip()
            )
            rows.append(
                [
                    text(c.id),
                    text(cond.mark),
                    text(label),
                    text(shown),
                    text(f"{verdicts.OPS.get(cond.op, cond.op)} {fmt(cond.threshold)}"),
                    text(fmt(cond.margin)),
                    text(cond.setting or "derived"),
                    text(fmt(cond.setting_value)),
                    text(fmt(cond.flips_at)),
                    text(verdicts.whole(cond.prompts_needed)),
                ]
            )
    if _cells_width(_widths(headers, rows)) <= console.width:
        t = _table(title)
        for name in headers:
            t.add_column(name, no_wrap=True)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        return
    console.print(text(title))
    blocks = Table.grid(padding=(0, 1))
    blocks.add_column(style="bold", no_wrap=True)
    blocks.add_column(no_wrap=True)
    blocks.add_column(overflow="fold")
    for r in rows:
        setting = f"{r[6].plain} = {r[7].plain}" if r[6].plain != "derived" else "a derived threshold (no setting)"
        flips = f", the verdict flips at {r[8].plain}" if r[8].plain != "—" else ""
        figures = text(f"{r[3].plain} {r[4].plain} · margin {r[5].plain} · {setting}{flips}")
        if r[9].plain not in ("", "—"):
            figures.append(f" · ≈{r[9].plain} known prompts would decide it")
        blocks.add_row(r[0], r[1], r[2])
        blocks.add_row("", "", figures, end_section=True)
    console.print(blocks)


# --------------------------------------------------------------------------- a sweep
def grid_table(console: Console, grid: verdicts.Grid, title: str) -> tuple[Table, list[tuple[str, str]]]:
    """The claims × cells grid: per cell the verdict's mark and the deciding statistic (fewer digits,
    then the mark alone, when the cells do not fit the console); per claim the count of cells where
    it holds. Returns the table and, when the relations' names do not fit their columns, the codes
    the columns carry instead ([("R1", relation), ...]; printed under the grid)."""
    for digits, needed in ((3, True), (2, True), (2, False), (0, False)):
        rows = []
        for row in grid.rows:
            cells = []
            for cell in row.cells:
                # a claim across shot counts (C6, C10, C11) is one verdict per relation: printed once, under
                # the relation's first column, a dot under the others (it is not a verdict of each cell)
                cells.extend([_grid_cell(cell.claim, digits, needed)] + [text("·", "dim")] * (cell.span - 1))
            rows.append([text(row.id), *cells, text(row.count(short=True))])
        widths = [max([r[i].cell_len for r in rows] + [2]) for i in range(len(grid.columns) + 2)]
        widths[1:-1] = [max(w, 6) for w in widths[1:-1]]  # room for "0-shot"
        if _cells_width(widths) <= console.width:
            break
    relations = list(dict.fromkeys(str(col["relation"]) for col in grid.columns))
    extra = [max(0, len(str(col["relation"])) - widths[i]) for i, col in enumerate(grid.columns, start=1)]
    fits = sum(extra) <= console.width - _cells_width(widths)
    if fits:  # the relations' names as headers
        widths[1:-1] = [w + e for w, e in zip(widths[1:-1], extra, strict=True)]
    codes = [] if fits else [(f"R{j + 1}", rel) for j, rel in enumerate(relations)]
    code_of = {rel: code for code, rel in codes}
    headers = ["id"] + [f"{code_of.get(str(col['relation']), col['relation'])}\n{col['shots']}-shot" for col in grid.columns]
    _shrink(widths, console.width)
    t = _table(title)
    for i, header in enumerate([*headers, "holds in"]):
        t.add_column(
            text(header, keep_newlines=True), no_wrap=True, overflow="ellipsis", width=widths[i], style="bold" if i == 0 else None
        )
    for r in rows:
        t.add_row(*r)
    return t, codes


def _grid_cell(c: ClaimView | None, digits: int, needed: bool):
    if c is None:
        return text("—", "dim")
    if digits == 0 or c.kind == "na":
        shown = c.mark
    else:
        d = c.deciding
        value = d.value if d.value is not None else d.compared if d.compared is not None else c.value
        shown = f"{c.mark} {verdicts.fmt(value, digits)}"
    if needed and c.kind == "inconclusive" and verdicts.number(c.prompts_needed) is not None:
        shown += f" ≈{verdicts.whole(c.prompts_needed)}"
    return text(shown, STYLE[c.kind])


GRID_NOTE = (
    "✓ holds, ✗ does not hold, ? inconclusive (≈ known prompts that would decide it), – not measurable; the figure is "
    "the statistic that decided the verdict (its point value, or the interval end the rule compares). holds in: k/n "
    "measured cells (?: inconclusive, n/m: not measurable); C6, C10 and C11 compare the fewest and the most shots: one verdict per relation, under its first column (· under the others). "
    "--wide: each cell's claims."
)


def print_grid(console: Console, grid: verdicts.Grid, title: str) -> None:
    table, codes = grid_table(console, grid, title)
    console.print(table)
    entries = [(text(code), text(relation, "dim")) for code, relation in codes]
    entries += [(text(r.id), text(r.statement, "dim")) for r in grid.rows]
    console.print(_wrapped_list(entries))
    console.print(text(GRID_NOTE, "dim"))


def sweep_cells(runs: Iterable[dict]) -> list[dict]:
    """The grid's cells from a sweep's summary ``runs`` entries (each with its ``claims`` and its
    claims stage's ``sensitivity``) or from ``claims_of_rundir`` runs made plain."""
    cells = []
    for r in runs:
        entry = ((r.get("stages") or {}).get("claims") or {}) if isinstance(r.get("stages"), dict) else {}
        cells.append(
            {
                "relation": r.get("relation"),
                "shots": r.get("shots"),
                "folder": r.get("path"),
                "anchor": None,
                "claims": r.get("claims") if isinstance(r.get("claims"), list) else None,
                "sensitivity": r.get("sensitivity") or entry.get("sensitivity"),
            }
        )
    return cells


# --------------------------------------------------------------------------- a run
def print_run(console: Console, summary: dict, wide: bool = False) -> None:
    """A finished ``recallscope run``: the cells with their headline numbers, then the claims (one
    run) or the claims × cells grid (a sweep)."""
    runs = summary.get("runs", [summary])
    # "Y scored": the recall metric every stage used (tasks.prompts: the first token, or the whole answer)
    headers = ["relation", "shots", "Y scored", "prompts", "known", "accuracy", "mean p(Y)", "stages"]
    rows = [
        [
            text(r.get("relation")),
            text(r.get("shots")),
            text(Y_SCORED.get(r.get("answer_metric"), "—")),
            text(r.get("n_prompts")),
            text(r.get("n_known")),
            text(fmt(r.get("accuracy"))),
            text(fmt(r.get("mean_p_answer"))),
            text(f"{len(r.get('stages') or {})}"),
        ]
        for r in runs
    ]
    # a relation whose name does not fit its column is coded R1, R2 … (as the claims grid does), its
    # name whole under the table: a name cut or wrapped in its cell reads as another name
    others = [max([len(h)] + [row[i].cell_len for row in rows]) for i, h in enumerate(headers) if i]
    room = console.width - _cells_width([0, *others])
    # (one relation: named in the title instead)
    title = f"recallscope run — {summary.get('model')}"
    relations = list(dict.fromkeys(str(r.get("relation")) for r in runs))
    codes = []
    if max(row[0].cell_len for row in rows) > room and len(relations) == 1:
        console.print(text(f"{title} — {relations[0]}", "italic"))
        title, headers, rows = None, headers[1:], [row[1:] for row in rows]
    elif max(row[0].cell_len for row in rows) > room:
        codes = [(f"R{j + 1}", rel) for j, rel in enumerate(relations)]
        code_of = dict((rel, code) for code, rel in codes)
        for row, r in zip(rows, runs, strict=True):
            row[0] = text(code_of[str(r.get("relation"))])
    console.print(fitted_table(console, title, headers, rows, None, bold_first=False))
    for code, relation in codes:
        console.print(text(f"{code}  {relation}", "dim"), soft_wrap=True)
    if "runs" in summary:
        grid = verdicts.grid(sweep_cells(runs), summary.get("claims"))
        if grid.rows:
            print_grid(console, grid, "the paper's claims in each cell")
        return
    claims = summary.get("claims") or ((summary.get("stages") or {}).get("claims") or {}).get("claims")
    if claims:
        sensitivity = ((summary.get("stages") or {}).get("claims") or {}).get("sensitivity")
        print_claims(console, verdicts.views(claims, sensitivity), "the paper's claims on this run", wide)


# --------------------------------------------------------------------------- a stage's summary
# The columns of a stage's lists worth reading on a terminal (--json for all of them).
COLUMNS = {
    ("patch", "top_components"): ("component", "effect", "ci"),
    ("movers", "heads"): (
        "layer",
        "head",
        "is_mover",
        "attention_to_subject",
        "projection_corr",
        "projection_p_value",
        "ov_top5_share_context",
        "failed",
    ),
    ("decompose", "coefficients"): ("regressor", "coef", "ci_low", "ci_high", "cv_std", "verdict"),
    ("intercept", "top_tokens"): ("token", "logit", "in_domain"),
    ("suppress", "components"): ("component", "mean_dla", "ci_low", "ci_high", "share_negative", "is_suppressor"),
}
SKIP = ("wall_seconds", "cpu_seconds", "verdict", "relation", "shots")


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def print_stage(console: Console, stage: str, summary: dict) -> None:
    """A stage's summary, readable: its lead (a stage that tests what a claim also tests says which
    rule it used), its scalars, each list as a table of its first rows, and — for one head (``movers
    --layer L --head H``) — every statistic of that head and where it attends."""
    entry = (summary.get("stages") or {}).get(stage, summary)
    console.print(text(f"{stage} — {summary.get('model')} · {summary.get('relation')} · {summary.get('shots')}-shot", "bold"))
    lead, notes, hidden = verdicts.stage_story(stage, entry, [])
    if lead:
        console.print(text(lead))
    for n in notes:
        console.print(text(n, "dim"))
    scalars = _table(None, show_header=False)
    scalars.add_column("key", style="dim", no_wrap=True)
    scalars.add_column("value", overflow="fold")
    blocks = []
    for key, value in entry.items():
        if key in SKIP or key in hidden:
            continue
        if _records(value):
            blocks.append((key, value))
        elif isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
            blocks.append((key, value))
        else:
            scalars.add_row(text(key), text(_cut(fmt(value), 200)))
    console.print(scalars)
    for key, value in blocks:
        if isinstance(value, dict):
            _print_object(console, stage, key, value)
        elif len(value) == 1:
            one = value[0]
            label = f"L{one['layer']}H{one['head']}" if "layer" in one and one.get("head") is not None else ""
            _print_one(console, f"{key}: {label}" if label else key, one)
        else:
            _print_records(console, stage, key, value)


def _print_records(console: Console, stage: str, key: str, rows: list[dict]) -> None:
    columns = list(COLUMNS.get((stage, key)) or list(dict.fromkeys(k for r in rows for k in r))[:6])
    columns = [c for c in columns if any(c in r for r in rows)]
    more = f" (first {ROWS} of {len(rows)}; --json for all)" if len(rows) > ROWS else ""
    t = _table(f"{key}{more}")
    for c in columns:
        t.add_column(text(c), overflow="fold")
    for r in rows[:ROWS]:
        t.add_row(*[text(_cut(fmt(r.get(c)))) for c in columns])
    console.print(t)


def _print_one(console: Console, title: str, record: dict) -> None:
    """One record, one line per field (a single head: every statistic)."""
    t = _table(title, show_header=False)
    t.add_column("key", style="dim", no_wrap=True)
    t.add_column("value", overflow="fold")
    for k, v in record.items():
        t.add_row(text(k), text(_cut(fmt(v), 200)))
    console.print(t)


def _print_object(console: Console, stage: str, key: str, value: dict) -> None:
    if stage == "movers" and key == "example" and isinstance(value.get("tokens"), list):
        _print_attention(console, value)
        return
    flat = {}
    for k, v in value.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = v2
        else:
            flat[k] = v
    _print_one(console, key, {k: (f"{len(v)} rows (--json)" if _records(v) else v) for k, v in flat.items()})


def _print_attention(console: Console, ex: dict) -> None:
    """Where the example head attends from the end position: its top positions with their tokens."""
    tokens, attention = ex.get("tokens") or [], ex.get("attention") or []
    span = ex.get("subject_span") or [0, 0]
    order = sorted(range(min(len(tokens), len(attention))), key=lambda i: -attention[i])[:6]
    head = f"L{ex.get('layer')}H{ex.get('head')}"
    t = _table(f"where {head} attends from the end position (prompt {ex.get('prompt_index')}; * = subject)")
    t.add_column("position", no_wrap=True)
    t.add_column("token", overflow="fold")
    t.add_column("attention", no_wrap=True)
    for i in order:
        mark = " *" if span[0] <= i < span[1] else ""
        t.add_row(text(f"{i}{mark}"), text(repr(tokens[i])), text(fmt(attention[i])))
    console.print(t)


# --------------------------------------------------------------------------- models and relations
def print_models(console: Console, rows: list[dict]) -> None:
    """The models table; the install commands below it, one per line and never wrapped inside a
    cell, so each can be copied whole."""
    t = _table("recallscope models")
    for col in ("model", "kind", "installed", "cached", "description"):
        t.add_column(col, overflow="fold", no_wrap=col in ("model", "kind"))  # fold: a word longer than the column
    installs = []
    for r in rows:
        t.add_row(*[text(fmt(r.get(c))) for c in ("model", "kind", "installed", "cached", "description")])
        if r.get("install") and not r.get("installed"):
            installs.append((r["model"], r["install"]))
    console.print(t)
    for model, command in installs:
        if command.startswith("pip "):  # a command: alone on its line, so that it pastes
            console.print(text(f"to install {model}:", "dim"))
            console.print(text(command), soft_wrap=True)
        else:  # a hint ("recallscope run --model gpt2 (downloads from the hub)")
            console.print(text(f"{model}: {command}", "dim"), soft_wrap=True)


def print_relations(console: Console, rows: list[dict]) -> None:
    t = _table("built-in relations (or --relation path/to/lre.json)")
    for col in ("relation", "samples", "templates", "example"):
        t.add_column(col, overflow="fold", no_wrap=col != "example")
    for r in rows:
        t.add_row(text(r["relation"]), text(r["samples"]), text(r["templates"]), text(r["example"]))
    console.print(t)


__all__ = [
    "claims_table",
    "fmt",
    "grid_table",
    "print_claims",
    "print_grid",
    "print_json",
    "print_models",
    "print_relations",
    "print_run",
    "print_sensitivity",
    "print_stage",
    "sweep_cells",
]
