"""The claims as a reader sees them, in one place for the report, its figures and the terminal, so
they never tell different stories: each claim's id (C1 …), its verdict, the statistic that decided
it with its interval against its threshold, and every condition of its rule marked met / failed /
straddles.

Reads only the rows of the claims table (``recallscope.claims.COLUMNS``) and of its sensitivity
table (one row per condition), as plain dicts. Columns that a run directory written by an older
recallscope lacks (``decided_value``/``decided_ci_low``/``decided_ci_high``, a condition's
``status``, ``prompts_needed``, ``id``) are optional: without them the deciding statistic is the end
of its interval that the rule compares (the sensitivity row's ``statistic``), and a condition is
met or failed. Pure Python (no pandas, no torch): the report, the figures and the CLI all import it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURABLE = "holds", "does not hold", "inconclusive", "not measurable here"

# The paper's six claims keep the numbers the README's study gives them (its claims tables list them in
# this order); the two localisations follow, then the paper's open checks. Keyed by the statements of
# recallscope.claims, recallscope.causal_trace, recallscope.knockout, recallscope.surgery and
# recallscope.onset (tests/test_verdicts.py checks they agree).
IDS = {
    "Mover heads move the topic (subject) to the last position": "C1",
    "The MLP after the mover heads amplifies or erases heads (linear decomposition)": "C2",
    "A deep MLP's intercept redirects the residual from topic to answer": "C3",
    "The final layer suppresses the correct answer": "C4",
    "Removing the final-layer suppressors raises confidence in the answer": "C5",
    "Few-shot prompts employ the same heads as zero-shot": "C6",
    "The subject's last-token MLP states matter at middle layers (causal tracing)": "C7",
    "The last position reads the subject in the layers where the mover heads sit (attention knockout)": "C8",
    "Ablating the mover heads hurts recall more than ablating matched random heads": "C9",
    "Demonstrations move the subject to the last position earlier": "C10",
    "With demonstrations the answer domain appears earlier": "C11",
}

# The stage whose section holds each claim's evidence (a row's own ``stage`` column first).
EVIDENCE_STAGE = {
    "C1": "movers",
    "C2": "decompose",
    "C3": "intercept",
    "C4": "suppress",
    "C5": "suppress",
    "C6": "patch",
    "C7": "trace",
    "C8": "knockout",
    "C9": "surgery",
    "C10": "onset",
    "C11": "onset",
}

# Claims about *some* component (recallscope.claims.best_of): the verdict is the one candidate's that
# ``about`` names, not the whole's (C4 holds on L29H0's −1.44 logits while the final layer as a whole
# adds +4.63 to Y), so the verdict line names it.
ONE_OF = frozenset({"C1", "C4"})

# The claims table's leading columns: the verdict and the statistic that decided it (what the report
# and the CLI show as a claim's value), before the claim's primary figure (value, ci_low, ci_high).
LEADING = (
    "claim",
    "verdict",
    "decided_by",
    "decided_value",
    "decided_ci_low",
    "decided_ci_high",
    "threshold",
    "margin",
    "flips_at",
)


def leading_first(columns: Iterable[str]) -> list[str]:
    """``columns`` with the :data:`LEADING` ones first, in that order (a run written before they led
    reads in the same order as a new one)."""
    columns = list(columns)
    return [c for c in LEADING if c in columns] + [c for c in columns if c not in LEADING]


# Columns the claim block shows itself; the rest of a row are evidence notes.
SHOWN = frozenset(LEADING) | frozenset(
    {
        "id",
        "stage",
        "about",
        "measure",
        "value",
        "ci_low",
        "ci_high",
        "rule",
        "detail",
        "prompts_needed",
        "prompts_available",
        "prompts_used",
        "relation",
    }
)


def kind(verdict: Any) -> str:
    """``holds``, ``fails``, ``inconclusive``, ``na`` (not measurable) or ``other``: the verdict's colour class."""
    v = str(verdict).strip().lower()
    if v == HOLDS:
        return "holds"
    if v == FAILS:
        return "fails"
    if v.startswith(INCONCLUSIVE):
        return "inconclusive"
    if v.startswith("not measurable"):
        return "na"
    return "other"


MARKS = {"holds": "✓", "fails": "✗", "inconclusive": "?", "na": "–", "other": "·"}
OPS = {">=": "≥", "<=": "≤"}


def split_end(name: str | None) -> tuple[str, str]:
    """A condition's name without its trailing ", interval low"/", interval high", and that end
    ("low", "high", or "" for a condition on a count or a point value)."""
    name = name or ""
    for end in ("low", "high"):
        suffix = f", interval {end}"
        if name.endswith(suffix):
            return name[: -len(suffix)], end
    return name, ""


def number(value: Any) -> float | None:
    """A finite float, else None (NaN from a Parquet column, strings, None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def whole(value: Any) -> str:
    """A count (of prompts): whole, with thousands separators ("83,653,711", never "8.37e+07"; a median's half
    rounded); "—" when missing."""
    x = number(value)
    return "—" if x is None else f"{int(round(x)):,}"


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits ("—" when missing)."""
    x = number(value)
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}"
    return f"{x:.2e}"


@dataclass
class Condition:
    """One condition of a claim's rule: ``statistic op threshold``, the statistic being the end of
    an interval the rule compares (or a count)."""

    name: str
    statistic: float | None
    op: str
    threshold: float | None
    margin: float | None
    status: str  # met, failed, straddles, unknown
    setting: str | None = None
    flips_at: float | None = None
    setting_value: float | None = None
    estimate: float | None = None  # the condition's point value and interval, where the sensitivity table has them
    low: float | None = None
    high: float | None = None
    prompts_needed: float | None = None  # a straddling condition: the known prompts that would decide it

    @property
    def mark(self) -> str:
        return {"met": "✓", "failed": "✗", "straddles": "?"}.get(self.status, "·")

    def text(self) -> str:
        """ "scatter r (attention vs a·W_U[X]): 0.584 [0.224, 0.835] ≥ 0.5" (its interval where recorded),
        else "…: low 0.224 ≥ 0.5" (the interval end the rule compares)."""
        label, end = split_end(self.name)
        if self.estimate is not None and self.low is not None and self.high is not None:
            shown = f"{fmt(self.estimate)} [{fmt(self.low)}, {fmt(self.high)}]"
        else:
            shown = f"{end} {fmt(self.statistic)}".strip()
        return f"{label}: {shown} {OPS.get(self.op, self.op)} {fmt(self.threshold)}"


@dataclass
class Deciding:
    """The statistic that decided the verdict: its point value and interval where known, the end
    of it the rule compares, and the threshold."""

    name: str | None
    value: float | None
    low: float | None
    high: float | None
    compared: float | None  # the interval end (or count) the rule compares with the threshold
    op: str | None
    threshold: float | None
    is_primary: bool
    margin: float | None = None  # the row's margin: all an old run directory (no conditions recorded) says

    @property
    def label(self) -> str:
        """The deciding condition's name without ", interval low/high"."""
        return split_end(self.name)[0]

    def interval(self) -> str:
        """ "0.555 [0.121, 0.83]", "low 0.121" (only the compared end known) or "—"."""
        if self.value is not None:
            if self.low is not None and self.high is not None:
                return f"{fmt(self.value)} [{fmt(self.low)}, {fmt(self.high)}]"
            return fmt(self.value)
        if self.compared is not None:
            return f"{split_end(self.name)[1]} {fmt(self.compared)}".strip()
        if self.margin is not None:
            return f"margin {fmt(self.margin)}"
        return "—"

    def short(self) -> str:
        """The point value alone ("0.555"), else the compared end ("low 0.121"): a grid cell's figure."""
        if self.value is not None:
            return fmt(self.value)
        return self.interval()

    def against(self) -> str:
        """ "≥ 0.5" — the threshold with its comparison."""
        if self.threshold is None:
            return "—"
        if not self.op:
            return f"threshold {fmt(self.threshold)}"
        return f"{OPS.get(self.op, self.op)} {fmt(self.threshold)}"


@dataclass
class ClaimView:
    id: str
    statement: str
    verdict: str
    kind: str
    about: str | None
    stage: str | None
    measure: str | None
    value: float | None
    low: float | None
    high: float | None
    deciding: Deciding
    conditions: list[Condition] = field(default_factory=list)
    prompts_needed: Any = None
    prompts_available: Any = None
    margin: float | None = None
    flips_at: float | None = None
    rule: str | None = None
    detail: str | None = None
    relation: str | None = None
    evidence: dict = field(default_factory=dict)

    @property
    def mark(self) -> str:
        return MARKS[self.kind]

    @property
    def evidence_stage(self) -> str | None:
        return self.stage or EVIDENCE_STAGE.get(self.id)

    def primary(self) -> str:
        """The primary figure with its interval: "1 [1, 1]"."""
        if self.value is None:
            return "—"
        if self.low is not None and self.high is not None:
            return f"{fmt(self.value)} [{fmt(self.low)}, {fmt(self.high)}]"
        return fmt(self.value)

    def figure(self) -> str:
        """The deciding statistic with its interval, else (no condition recorded) the primary figure."""
        d = self.deciding
        return d.interval() if d.value is not None or d.compared is not None else self.primary()

    def short(self) -> str:
        """The deciding statistic's point value (or compared end), else the primary figure's value."""
        d = self.deciding
        return d.short() if d.value is not None or d.compared is not None else fmt(self.value)

    def beyond_relation(self) -> bool:
        """Whether the known prompts that would decide this inconclusive claim are more than its relation can
        give (``prompts_available``: the relation's usable prompts at this run's known rate)."""
        n, available = number(self.prompts_needed), number(self.prompts_available)
        return self.kind == "inconclusive" and n is not None and available is not None and available < n

    def deciding_condition(self) -> Condition | None:
        """The condition that decided the verdict: the one with the deciding statistic's name,
        comparison and threshold (a rule may test one statistic twice: C7's window centre
        ``>= 7.5`` and ``< 22.5``), else the first with its name; None when none was recorded."""
        d = self.deciding
        named = [c for c in self.conditions if c.name == d.name]
        return next((c for c in named if c.op == d.op and c.threshold == d.threshold), named[0] if named else None)

    def decider(self) -> str | None:
        """The component whose figures a claim about *some* component shows (:data:`ONE_OF`: a mover
        head, a suppressor), "L29H0"; None for a claim about one thing or a set."""
        return self.about if self.id in ONE_OF and self.about and self.kind != "na" else None

    def decider_line(self) -> str | None:
        """Beside the verdict of a :data:`ONE_OF` claim: "decided by L29H0" where that component holds
        (one suffices); else "figures of L23H4; no candidate holds" (every candidate decides a failure)."""
        who = self.decider()
        if who is None:
            return None
        return f"decided by {who}" if self.kind == "holds" else f"figures of {who}; no candidate holds"

    def needed(self) -> str | None:
        """ "≈ 140 known prompts would decide it" for an inconclusive claim with that estimate; "… — more than
        the relation can give (≈ 183)" when it is (:meth:`beyond_relation`)."""
        if self.kind != "inconclusive" or self.prompts_needed is None:
            return None
        n = number(self.prompts_needed)
        if n is None:
            return str(self.prompts_needed)
        available = number(self.prompts_available)
        beyond = f" — more than the relation can give (≈ {whole(available)})" if self.beyond_relation() else ""
        return f"≈ {whole(n)} known prompts would decide it{beyond}"


def claim_id(row: dict, index: int) -> str:
    """The row's ``id`` when the table has one, else the claim's number (:data:`IDS`), else its position."""
    given = row.get("id")
    if isinstance(given, str) and given:
        return given
    return IDS.get(str(row.get("claim"))) or f"#{index + 1}"


def _conditions(rows: Iterable[dict]) -> list[Condition]:
    out = []
    for r in rows:
        status = r.get("state", r.get("status"))  # met / failed / straddles (older tables: only "holds")
        if not isinstance(status, str) or not status:
            holds = r.get("holds")
            status = "unknown" if holds is None or number(r.get("margin")) is None else ("met" if bool(holds) else "failed")
        setting = r.get("setting")
        out.append(
            Condition(
                str(r.get("condition")),
                number(r.get("statistic")),
                str(r.get("op") or ""),
                number(r.get("threshold")),
                number(r.get("margin")),
                status,
                setting if isinstance(setting, str) else None,
                number(r.get("flips_at")),
                number(r.get("setting_value")),
                number(r.get("estimate")),
                number(r.get("ci_low")),
                number(r.get("ci_high")),
                number(r.get("prompts_needed")),
            )
        )
    return out


def view(row: dict, condition_rows: list[dict] | None, index: int = 0) -> ClaimView:
    """One claims-table row (and its sensitivity rows, in rule order: the primary condition first)
    as the report and the terminal show it."""
    conditions = _conditions(condition_rows or [])
    decided_by = row.get("decided_by") if isinstance(row.get("decided_by"), str) else None
    match = next((c for c in conditions if c.name == decided_by), None)
    is_primary = bool(conditions) and match is conditions[0]
    value, low, high = number(row.get("value")), number(row.get("ci_low")), number(row.get("ci_high"))
    if number(row.get("decided_value")) is not None:  # the claims table names the deciding statistic and its interval
        d_value, d_low, d_high = (
            number(row.get("decided_value")),
            number(row.get("decided_ci_low")),
            number(row.get("decided_ci_high")),
        )
    elif match is not None and match.estimate is not None:  # its condition's row has them
        d_value, d_low, d_high = match.estimate, match.low, match.high
    elif is_primary:
        d_value, d_low, d_high = value, low, high
    else:
        d_value = d_low = d_high = None
    deciding = Deciding(
        decided_by,
        d_value,
        d_low,
        d_high,
        match.statistic if match else None,
        match.op if match else None,
        number(row.get("threshold")) if match is None else match.threshold,
        is_primary,
        number(row.get("margin")),
    )
    verdict = str(row.get("verdict") or "")
    relation = row.get("relation")
    return ClaimView(
        id=claim_id(row, index),
        statement=str(row.get("claim") or ""),
        verdict=verdict,
        kind=kind(verdict),
        about=row.get("about") if isinstance(row.get("about"), str) else None,
        stage=row.get("stage") if isinstance(row.get("stage"), str) else None,
        measure=row.get("measure") if isinstance(row.get("measure"), str) else None,
        value=value,
        low=low,
        high=high,
        deciding=deciding,
        conditions=conditions,
        prompts_needed=row.get("prompts_needed") if number(row.get("prompts_needed")) is not None else None,
        prompts_available=number(row.get("prompts_available")),
        margin=number(row.get("margin")),
        flips_at=number(row.get("flips_at")),
        rule=row.get("rule") if isinstance(row.get("rule"), str) else None,
        detail=row.get("detail") if isinstance(row.get("detail"), str) else None,
        relation=relation if isinstance(relation, str) else None,
        evidence={k: v for k, v in row.items() if k not in SHOWN and v is not None and not _is_nan(v)},
    )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def views(claims: list[dict] | None, sensitivity: list[dict] | None = None) -> list[ClaimView]:
    """Every row of a claims table as a :class:`ClaimView`, with its conditions from ``sensitivity``
    (matched by the claim's ``id`` when both tables carry one, else by its statement)."""
    by_id: dict[str, list[dict]] = {}
    by_claim: dict[str, list[dict]] = {}
    for r in sensitivity or []:
        if isinstance(r, dict):
            if r.get("id"):
                by_id.setdefault(str(r["id"]), []).append(r)
            by_claim.setdefault(str(r.get("claim")), []).append(r)
    out = []
    for i, row in enumerate(claims or []):
        if not isinstance(row, dict):
            continue
        rows = by_id.get(str(row.get("id"))) if row.get("id") else None
        out.append(view(row, rows if rows is not None else by_claim.get(str(row.get("claim"))), i))
    return out


# --------------------------------------------------------------------------- one story
def _is_num(value: Any) -> bool:
    return number(value) is not None


def _claim(claims: list[ClaimView], cid: str) -> ClaimView | None:
    return next((c for c in claims if c.id == cid and c.kind != "na"), None)


def stage_story(stage: str, entry: dict, claims: list[ClaimView]) -> tuple[str | None, list[str], tuple[str, ...]]:
    """The section's lead line, its notes and the summary keys it leaves out, so that a stage never
    states a verdict of its own on what a claim decides under another rule: where its summary
    tests something a claim also tests, the lead says which rule it is and a note says, in one
    line, how and why the claim's figure differs (the figures themselves are the same files').

    Returns ``(lead, notes, hidden keys)``."""
    verdict = entry.get("verdict") if isinstance(entry.get("verdict"), str) else None
    notes: list[str] = []
    hidden: tuple[str, ...] = ()
    if stage == "movers" and verdict is not None:
        t = entry.get("thresholds") if isinstance(entry.get("thresholds"), dict) else {}
        rule = ", ".join(
            f"{name} {op} {fmt(t[key])}"
            for key, name, op in (
                ("min_attention_to_subject", "attention to the subject", "≥"),
                ("min_projection_corr", "scatter r", "≥"),
                ("max_p_value", "its p-value", "≤"),
                ("min_ov_top5_share", "OV top-5 share", "≥"),
            )
            if _is_num(t.get(key))
        )
        verdict = f"Mover test on point estimates{f' ({rule})' if rule else ''}: {verdict}."
        # the heads this test fails on their p-value alone: C1 has no p condition, so they are the
        # ones a reader would otherwise read as contradicting it
        heads = entry.get("heads") if isinstance(entry.get("heads"), list) else []
        on_p = [f"L{h['layer']}H{h['head']}" for h in heads if isinstance(h, dict) and h.get("failed") == ["p_value"]]
        p_only = f" ({', '.join(on_p)} {'fails' if len(on_p) == 1 else 'fail'} here on p alone)" if on_p else ""
        c1 = _claim(claims, "C1")
        differs = (
            "reads the same heads' OV share, attention and scatter r at the lower ends of their 95% intervals against "
            f"the same thresholds and uses no p-value, so a head can fail the test here and not there{p_only}"
        )
        if c1 is None:
            notes.append(f"Claim C1 {differs} (the claims stage).")
        else:
            notes.append(
                f"{c1.id} ({c1.verdict}) {differs}: {c1.about or 'its head'}'s "
                f"{c1.deciding.label} {c1.deciding.interval()} {c1.deciding.against()}."
            )
    if stage == "suppress":
        sp = entry.get("suppression_present")
        if isinstance(sp, dict) and _is_num(sp.get("final_layer_total_dla")):
            hidden = ("suppression_present",)
            total = f"{fmt(sp['final_layer_total_dla'])} [{fmt(sp.get('ci_low'))}, {fmt(sp.get('ci_high'))}]"
            side = "lowers" if _is_num(sp.get("ci_high")) and sp["ci_high"] < 0 else "does not lower"
            line = f"The whole final layer (heads + bias + MLP) adds {total} logits to Y at the end position: as a whole it {side} Y."
            c4 = _claim(claims, "C4")
            if c4 is not None:
                line += (
                    f" {c4.id} ({c4.verdict}) asks whether one of its components lowers Y: {c4.about or 'the lowest'} "
                    f"{c4.primary()} logits, {c4.deciding.label} {c4.deciding.against()}."
                )
            notes.append(line)
    if stage == "decompose" and _is_num(entry.get("cv_r2")) and entry["cv_r2"] <= 0:
        notes.append(
            f"Held-out R² {fmt(entry['cv_r2'])} ≤ 0: the decomposition predicts the held-out MLP outputs no better than "
            "their mean, so its coefficients (grey in the plot) are not evidence that a head is amplified or erased."
        )
    return verdict, notes, hidden


# --------------------------------------------------------------------------- a sweep: claims × cells
@dataclass
class GridCell:
    """One claim in one cell of a sweep (``claim`` None: the cell has no such row); a claim measured
    across shot counts (C6) spans its relation's cells."""

    claim: ClaimView | None
    anchor: str | None = None
    span: int = 1


@dataclass
class GridRow:
    id: str
    statement: str
    cells: list[GridCell]
    counts: dict  # holds, fails, inconclusive, na, measured (cells, or relations for a claim across shot counts)

    def count(self, short: bool = False) -> str:
        """ "1/4 (2 inconclusive, 1 n/m)": holds in k of the n measured, the rest said ("1/4 (2?, 1 n/m)" short)."""
        c = self.counts
        incl = f"{c['inconclusive']}?" if short else f"{c['inconclusive']} inconclusive"
        extra = [incl if c["inconclusive"] else "", f"{c['na']} n/m" if c["na"] else ""]
        extra = [e for e in extra if e]
        return f"{c['holds']}/{c['measured']}" + (f" ({', '.join(extra)})" if extra else "")


@dataclass
class Grid:
    columns: list[dict]  # {relation, shots, anchor, folder}
    rows: list[GridRow]


def _counts(claims: list[ClaimView]) -> dict:
    kinds = [c.kind for c in claims]
    n = {k: kinds.count(k) for k in ("holds", "fails", "inconclusive", "na")}
    n["measured"] = len(kinds) - n["na"]
    return n


def grid(cells: list[dict], shot_claims: list[dict] | None = None) -> Grid:
    """The claims × cells grid of a sweep. ``cells``: one per sub-run, in the sweep's order (relation
    by relation), each ``{relation, shots, folder (the sub-run's path below the sweep), anchor, claims,
    sensitivity}``; ``shot_claims``: the rows measured across shot counts, one per relation (its
    ``relation`` is the relation's folder name). A cell's anchor plus ``-claim-<id>`` is the id of
    that claim's row on the page."""
    per_cell = [views(c.get("claims"), c.get("sensitivity")) for c in cells]
    across = views(shot_claims)
    across_ids = {v.id for v in across}
    order: list[tuple[str, str]] = []
    for vs in per_cell + [across]:
        for v in vs:
            if v.id not in [i for i, _ in order]:
                order.append((v.id, v.statement))
    order.sort(key=lambda item: (0, int(item[0][1:])) if item[0][1:].isdigit() else (1, 0))
    columns = [
        {"relation": c.get("relation"), "shots": c.get("shots"), "anchor": c.get("anchor"), "folder": c.get("folder")}
        for c in cells
    ]
    rows = []
    for cid, statement in order:
        if cid in across_ids:
            rows.append(_across_row(cid, statement, cells, [v for v in across if v.id == cid]))
            continue
        found = []
        row_cells = []
        for cell, vs in zip(cells, per_cell, strict=True):
            v = next((x for x in vs if x.id == cid), None)
            anchor = (
                f"{cell['anchor']}-claim-{re.sub(r'[^A-Za-z0-9_-]', '', cid)}" if cell.get("anchor") and v is not None else None
            )
            row_cells.append(GridCell(v, anchor))
            if v is not None:
                found.append(v)
        rows.append(GridRow(cid, statement, row_cells, _counts(found)))
    return Grid(columns, rows)


def _relation_key(cell: dict) -> str:
    """The relation's sweep folder: the one above the cell's ``<k>shot`` folder, whether ``folder`` is
    relative to the sweep ("rel/0shot") or to the working directory ("runs/sweep/rel/0shot")."""
    parts = str(cell.get("folder") or "").strip("/").split("/")
    return parts[-2] if len(parts) >= 2 else str(cell.get("relation"))


def _across_row(cid: str, statement: str, cells: list[dict], claims: list[ClaimView]) -> GridRow:
    """A claim measured across shot counts: one cell per relation, spanning that relation's cells."""
    row_cells: list[GridCell] = []
    i = 0
    while i < len(cells):
        key = _relation_key(cells[i])
        span = 1
        while i + span < len(cells) and _relation_key(cells[i + span]) == key:
            span += 1
        v = next((c for c in claims if c.relation in (key, cells[i].get("relation"))), None)
        row_cells.append(GridCell(v, None, span))
        i += span
    return GridRow(cid, statement, row_cells, _counts([c for c in claims]))


__all__ = [
    "ClaimView",
    "Condition",
    "Deciding",
    "Grid",
    "GridCell",
    "GridRow",
    "IDS",
    "claim_id",
    "fmt",
    "grid",
    "kind",
    "split_end",
    "stage_story",
    "ONE_OF",
    "view",
    "views",
]
