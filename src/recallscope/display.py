"""How results show themselves in a notebook or a REPL: a short ``repr``, an HTML view, a layer × head grid.

The view of an object lives apart from the object (as scikit-learn keeps ``_repr_html_`` apart
from its estimators): a stage's result class inherits :class:`ResultView`, which builds every view
from what the result already has — ``to_dict()`` (its summary entry, as ``summary.json`` holds it)
and ``tables()`` — so a result computed in this process and one read back from a run directory
(:class:`recallscope.study.StoredResult`) look the same. No torch here: an opened run directory
shows itself without the model stack.

- ``repr(result)``: a few lines (at most :data:`MAX_LINES`): the stage, its prompts, its headline
  figures (the top components with their effects, the verdict, the fit's quality, …).
- ``result._repr_html_()``: the same as a small HTML block, for Jupyter.
- ``result.head_grid(value)`` / ``result.to_array(value)``: a per-head quantity as a
  ``[n_layers, n_heads]`` DataFrame / array (NaN where a head was not measured), ready for
  ``plotly.express.imshow`` or ``matplotlib.pyplot.imshow``.

Verdict colours (:data:`VERDICT_COLOURS`) cover the claims' four verdicts: holds, does not hold,
inconclusive, not measurable here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from jinja2 import Environment

from . import verdicts

MAX_LINES = 16  # a repr is at most this many lines: a screen, not the 130,000 characters of the dataclass's own

# verdict kind (verdicts.kind) → (background, text colour): the report's palette (report/templates/report.css)
_KIND_COLOURS: dict[str, tuple[str, str]] = {
    "holds": ("#d3f9d8", "#2b8a3e"),
    "fails": ("#ffe3e3", "#c92a2a"),
    "inconclusive": ("#fff3bf", "#8f6b00"),
    "na": ("#e9ecef", "#495057"),
}
VERDICT_COLOURS: dict[str, tuple[str, str]] = {
    verdicts.HOLDS: _KIND_COLOURS["holds"],
    verdicts.FAILS: _KIND_COLOURS["fails"],
    verdicts.INCONCLUSIVE: _KIND_COLOURS["inconclusive"],
    verdicts.NOT_MEASURABLE: _KIND_COLOURS["na"],
}


def verdict_colours(verdict: Any) -> tuple[str, str]:
    """(background, text) colours of a claims verdict (by :func:`recallscope.verdicts.kind`); anything
    else gets the inconclusive amber."""
    return _KIND_COLOURS.get(verdicts.kind(verdict), _KIND_COLOURS["inconclusive"])


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any, digits: int = 3) -> str:
    """A number as a reader wants it in one line (3 significant digits), anything else as text; None → —."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return verdicts.fmt(value, digits)
    return str(value)


def shorten(text: str, width: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _components(items: Iterable[dict], key: str, k: int = 5, unit: str = "") -> str:
    """'L23H4 −15.9 %, L29H1 −9.1 %, …' from summary records."""
    items = list(items)
    shown = [f"{r.get('component') or r.get('regressor')} {fmt(r.get(key))}{unit}" for r in items[:k]]
    return ", ".join(shown) + (", …" if len(items) > k else "")


# ----------------------------------------------------------------------------- headlines per stage
def _recall(s: dict) -> list[tuple[str, str]]:
    return [
        ("prompts", f"{fmt(s.get('n_prompts'))}, known {fmt(s.get('n_known'))} ({s.get('known_rule', '')})"),
        ("accuracy", f"{fmt(s.get('accuracy'))} · mean p(Y) {fmt(s.get('mean_p_answer'))}"),
    ]


def _patch(s: dict) -> list[tuple[str, str]]:
    kind = "path patching (heads frozen)" if s.get("mode") == "path" else "activation patching (total effect)"
    return [
        ("method", f"{kind}, {s.get('direction')}, {str(s.get('aggregate', '')).replace('_', ' ')}"),
        ("prompts", f"{fmt(s.get('n_prompts'))} ({s.get('prompts')}), components {fmt(s.get('n_components'))}"),
        ("top effects (% of π)", _components(s.get("top_components", []), "effect")),
    ]


def _movers(s: dict) -> list[tuple[str, str]]:
    heads = s.get("heads", [])
    lines = [("verdict", str(s.get("verdict", ""))), ("prompts", fmt(s.get("n_prompts")))]
    if len(heads) == 1:  # one head asked for: what it attends to and what it writes
        h = heads[0]
        lines.append(
            (
                f"L{h.get('layer')}H{h.get('head')}",
                f"attention to subject {fmt(h.get('attention_to_subject'))}, "
                f"r(attention, a·W_U[X]) {fmt(h.get('projection_corr'))}, "
                f"OV top-5 share {fmt(h.get('ov_top5_share_' + str(h.get('ov_input', 'context'))))}",
            )
        )
    elif heads:  # the candidates, in the stage's order, with the figures the mover test reads
        shown = [
            f"L{h.get('layer')}H{h.get('head')} {fmt(h.get('attention_to_subject'), 2)}/{fmt(h.get('projection_corr'), 2)}"
            + (" ✓" if h.get("is_mover") else "")
            for h in heads[:4]
        ]
        lines.append(("candidates (attention / r, ✓ mover)", ", ".join(shown) + (", …" if len(heads) > 4 else "")))
    return lines


def _decompose(s: dict) -> list[tuple[str, str]]:
    coefs = sorted(s.get("coefficients", []), key=lambda r: -abs(r.get("coef") or 0.0))
    return [
        ("layer", str(s.get("layer_reason") or f"MLP {s.get('layer')}")),
        ("fit", f"{s.get('solver')}, CV R² {fmt(s.get('cv_r2'))} (R² {fmt(s.get('r2'))}), prompts {fmt(s.get('n_prompts'))}"),
        ("largest |c|", _components(coefs, "coef")),
    ]


def _intercept(s: dict) -> list[tuple[str, str]]:
    tokens = ", ".join(repr(t.get("token")) for t in s.get("top_tokens", [])[:6])
    return [
        ("layer", f"{fmt(s.get('layer'))}, ‖b‖ {fmt(s.get('intercept_norm'))}, prompts {fmt(s.get('n_prompts'))}"),
        ("answer-domain share", fmt(s.get("answer_domain_share"))),
        ("top tokens of b", tokens),
    ]


def _suppress(s: dict) -> list[tuple[str, str]]:
    present = s.get("suppression_present") or {}
    lines = [
        (
            "final layer",
            f"total DLA to Y {fmt(present.get('final_layer_total_dla'))} logits "
            f"[{fmt(present.get('ci_low'))}, {fmt(present.get('ci_high'))}]",
        ),
        (
            "most negative DLA (logits)",
            _components(sorted(s.get("components", []), key=lambda r: r.get("mean_dla") or 0.0), "mean_dla"),
        ),
    ]
    zero = ((s.get("mitigation") or {}).get("zero") or {}).get("known") or {}
    if zero:
        lines.append(("mitigation (zero)", f"p(Y) {fmt(zero['before'].get('p_answer'))} → {fmt(zero['after'].get('p_answer'))}"))
    return lines


def _surgery(s: dict) -> list[tuple[str, str]]:
    lines = [("heads ablated", f"{', '.join(s.get('heads', []))} on {fmt(s.get('n_prompts'))} prompts")]
    for r in s.get("results", []):
        if r.get("metric") == "p_answer":
            lines.append(
                (
                    f"drop in p(Y), {r.get('scope')} / {r.get('null')} null",
                    f"movers {fmt(r.get('movers_drop'))}, null median {fmt(r.get('null_median'))}, "
                    f"95th pct {fmt(r.get('null_quantile'))}, p = {fmt(r.get('p_value'))} ({fmt(r.get('n_sets'))} sets)",
                )
            )
    return lines


def _onset(s: dict) -> list[tuple[str, str]]:
    th = s.get("thresholds") or {}
    return [
        ("prompts", f"{fmt(s.get('n_prompts'))}, {fmt(s.get('n_layers'))} layers, p(Y) {fmt(s.get('mean_p_answer'))}"),
        (
            "move onset",
            f"mean layer {fmt(s.get('mean_move_layer'))} ({fmt(th.get('move_fraction'))} of the peak write along u_X, "
            f"mean peak {fmt(s.get('mean_move_peak'))} logits)",
        ),
        (
            "domain onset",
            f"mean layer {fmt(s.get('mean_domain_layer'))}; reached on {fmt(s.get('n_domain_reached'))} prompts",
        ),
    ]


def _claims(s: dict) -> list[tuple[str, str]]:
    return [
        (verdicts.claim_id(c, i), f"{c.get('verdict')} — {shorten(c.get('claim', ''), 70)}")
        for i, c in enumerate(s.get("claims", []))
    ]


HEADLINES: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "recall": _recall,
    "patch": _patch,
    "movers": _movers,
    "decompose": _decompose,
    "intercept": _intercept,
    "suppress": _suppress,
    "surgery": _surgery,
    "onset": _onset,
    "claims": _claims,
}


def headline(stage: str, summary: dict) -> list[tuple[str, str]]:
    """The (label, text) lines a stage's views show: the stage's own choice, else its scalar figures."""
    make = HEADLINES.get(stage)
    if make is not None:
        try:
            return make(summary)
        except (AttributeError, KeyError, TypeError):  # a summary of another version: fall back to its scalars
            pass
    skip = {"wall_seconds", "cpu_seconds", "config"}
    scalars = [(k, fmt(v)) for k, v in summary.items() if k not in skip and not isinstance(v, (dict, list))]
    return scalars[: MAX_LINES - 2]


# ----------------------------------------------------------------------------- text and HTML views
def text_view(title: str, lines: list[tuple[str, str]], footer: str = "") -> str:
    """``title`` then ``label: text`` lines, each at most 120 characters, at most :data:`MAX_LINES` in all."""
    body = [f"  {shorten(f'{label}: {text}', 116)}" for label, text in lines[: MAX_LINES - 2]]
    return "\n".join([title, *body] + ([f"  {footer}"] if footer else []))


_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["fmt"] = fmt
_ENV.filters["shorten"] = shorten
_ENV.globals["verdict_colours"] = verdict_colours

_STAGE_HTML = _ENV.from_string(
    """<div class="recallscope-result" style="font-size:0.9em">
<div><b>{{ title }}</b></div>
<table style="border-collapse:collapse">
{% for label, text in lines %}<tr><td style="padding:1px 8px 1px 0;color:#555;text-align:left;vertical-align:top">{{ label }}</td>
<td style="padding:1px 0;text-align:left">{{ text | shorten(160) }}</td></tr>
{% endfor %}</table>
{% if footer %}<div style="color:#777">{{ footer }}</div>{% endif %}
</div>"""
)

_CLAIMS_HTML = _ENV.from_string(
    """<table style="border-collapse:collapse;font-size:0.9em">
<thead><tr>{% for h in header %}<th style="text-align:left;padding:2px 6px;border-bottom:1px solid #ccc">{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in rows %}<tr>
<td style="padding:2px 6px">{{ r.id }}</td>
<td style="padding:2px 6px;text-align:left">{{ r.claim | shorten(90) }}{% if r.where %} <span style="color:#777">({{ r.where }})</span>{% endif %}</td>
<td style="padding:2px 6px;text-align:left">{% set bg, fg = verdict_colours(r.verdict) %}<span style="background:{{ bg }};color:{{ fg }};border-radius:8px;padding:0 8px;font-weight:600;white-space:nowrap">{{ r.verdict }}</span></td>
<td style="padding:2px 6px;text-align:right">{{ r.value | fmt }}{% if r.ci_low is not none %} [{{ r.ci_low | fmt }}, {{ r.ci_high | fmt }}]{% endif %}</td>
<td style="padding:2px 6px;text-align:right">{{ r.threshold | fmt }}</td>
<td style="padding:2px 6px;text-align:left;color:#555">{{ r.about | fmt }}</td>
</tr>
{% endfor %}</tbody></table>"""
)


def stage_html(title: str, lines: list[tuple[str, str]], footer: str = "") -> str:
    return _STAGE_HTML.render(title=title, lines=lines[: MAX_LINES - 2], footer=footer)


def claims_rows(frame: pd.DataFrame) -> list[dict]:
    """The claims table's rows as the views show them: id (:func:`recallscope.verdicts.claim_id`: C1 …),
    claim, where (a sweep's relation and shots), verdict, value, interval, threshold, about."""
    rows = []
    for i, r in enumerate(frame.to_dict("records")):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        where = " · ".join(
            str(clean[k]) + ("-shot" if k == "shots" else "") for k in ("relation", "shots") if clean.get(k) is not None
        )
        rows.append({**clean, "id": verdicts.claim_id(clean, i), "where": where})
    return rows


def claims_html(frame: pd.DataFrame) -> str:
    """The claims table as HTML: id, claim, verdict badge (:data:`VERDICT_COLOURS`), value [interval], threshold, about."""
    header = ("", "claim", "verdict", "value [95% CI]", "threshold", "about")
    return _CLAIMS_HTML.render(header=header, rows=claims_rows(frame))


def claims_text(frame: pd.DataFrame, limit: int = MAX_LINES) -> list[str]:
    out = []
    for r in claims_rows(frame)[:limit]:
        where = f" ({r['where']})" if r["where"] else ""
        out.append(f"{r['id']} {r['verdict']}: {shorten(str(r.get('claim', '')), 60)}{where}")
    return out


# ----------------------------------------------------------------------------- per-head grids
# Per stage: the table holding one row per head (None: the main table, averaged over its prompts)
# and the quantity a grid shows by default.
HEAD_TABLES: dict[str, tuple[str | None, str]] = {
    "patch": ("components", "effect"),
    "movers": (None, "attention_to_subject"),
    "suppress": (None, "dla"),
    "decompose": (None, "coef"),
    "surgery": ("heads", "change_norm"),
}


def grid_of_heads(frame: pd.DataFrame, value: str, n_layers: int | None = None, n_heads: int | None = None) -> pd.DataFrame:
    """``[n_layers, n_heads]`` DataFrame (index ``layer``, columns ``head``) of ``value`` averaged over a
    table's rows per head (rows without a head — MLPs, residuals — left out); NaN where a head has no row.

    ``n_layers`` / ``n_heads`` default to the largest layer and head in the table, plus one.
    Raises ValueError when the table has no ``layer``/``head`` columns or no column ``value``.
    """
    for column in ("layer", "head", value):
        if column not in frame:
            raise ValueError(f"no column {column!r} in this table (columns: {', '.join(map(str, frame.columns))})")
    rows = frame[frame["head"].notna()]
    if "kind" in rows:
        rows = rows[rows["kind"] == "head"]
    means = rows.groupby([rows["layer"].astype(int), rows["head"].astype(int)])[value].mean()
    n_layers = n_layers if n_layers is not None else (int(rows["layer"].max()) + 1 if len(rows) else 0)
    n_heads = n_heads if n_heads is not None else (int(rows["head"].max()) + 1 if len(rows) else 0)
    grid = pd.DataFrame(np.nan, index=pd.RangeIndex(n_layers, name="layer"), columns=pd.RangeIndex(n_heads, name="head"))
    for (layer, head), v in means.items():
        grid.loc[layer, head] = float(v)
    grid.attrs["value"] = value
    return grid


class ResultView:
    """What every stage result shows: a short repr, an HTML view, per-head grids.

    A subclass has ``stage`` (its name in the stage table), ``to_dict()`` and ``tables()``; a stage
    that knows its model's shape sets ``n_layers`` / ``n_heads`` (the grid then covers every head).
    Declare the dataclass with ``repr=False`` so this ``__repr__`` is the one used. (``head_grid``,
    not ``heads``: a movers result's ``heads`` are its per-head records.)
    """

    stage: str = ""

    def _title(self) -> str:
        return f"{type(self).__name__} · {self.stage}"

    def _footer(self) -> str:
        # the main table, then the others by name: a run directory keeps no order among them
        # (RunDir.read_tables), and a result read back must show what the in-memory one shows
        main, *others = self.tables()
        names = [main, *sorted(others)]
        return "tables: " + ", ".join(names) + " · .to_frame(), .tables(), .to_dict(), .plot()"

    def __repr__(self) -> str:
        return text_view(self._title(), headline(self.stage, self.to_dict()), self._footer())

    def _repr_html_(self) -> str:
        return stage_html(self._title(), headline(self.stage, self.to_dict()), self._footer())

    def head_grid(self, value: str | None = None) -> pd.DataFrame:
        """A per-head quantity as a ``[n_layers, n_heads]`` DataFrame (index layer, columns head), NaN
        where a head was not measured (movers: the candidate heads only).

        ``value``: a column of the stage's per-head table (default: patch ``effect`` (% of π) from
        the ``components`` table; movers ``attention_to_subject``; suppress ``dla`` (logits); decompose
        ``coef``), averaged over prompts where the table has one row per prompt. ValueError for a
        stage without per-head rows or an unknown column."""
        if self.stage not in HEAD_TABLES:
            raise ValueError(f"the {self.stage} stage has no per-head table")
        name, default = HEAD_TABLES[self.stage]
        tables = self.tables()
        frame = tables[name] if name is not None else next(iter(tables.values()))
        return grid_of_heads(
            frame, value or default, getattr(self, "n_layers", None) or None, getattr(self, "n_heads", None) or None
        )

    def to_array(self, value: str | None = None) -> np.ndarray:
        """:meth:`head_grid` as a float ``[n_layers, n_heads]`` NumPy array (for ``imshow``)."""
        return self.head_grid(value).to_numpy(dtype=float)


_GRID_HTML = _ENV.from_string(
    """<table style="border-collapse:collapse;font-size:0.9em">
<thead><tr><th></th>{% for c in columns %}<th style="padding:2px 6px;border-bottom:1px solid #ccc">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for label, cells in rows %}<tr><td style="padding:2px 6px;text-align:left">{{ label | shorten(70) }}</td>
{% for v in cells %}{% if v is string %}{% set bg, fg = verdict_colours(v) %}<td style="padding:2px 6px;background:{{ bg }};color:{{ fg }};font-weight:600;white-space:nowrap">{{ v }}</td>
{% else %}<td style="padding:2px 6px;text-align:right">{{ v | fmt }}</td>{% endif %}{% endfor %}</tr>
{% endfor %}</tbody></table>"""
)


def grid_html(grid: pd.DataFrame) -> str:
    """A claims × cells grid (:meth:`recallscope.study.Sweep.grid`) as HTML; verdict cells in their colours."""
    columns = [
        " · ".join(f"{x}-shot" if isinstance(x, (int, np.integer)) else str(x) for x in (c if isinstance(c, tuple) else (c,)))
        for c in grid.columns
    ]
    rows = [
        (label, [None if isinstance(v, float) and math.isnan(v) else v for v in values])
        for label, values in zip(grid.index, grid.to_numpy().tolist(), strict=True)
    ]
    return _GRID_HTML.render(columns=columns, rows=rows)
