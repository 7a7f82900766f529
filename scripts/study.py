"""The study: the paper's claims on two real models, several relations, 0/1/3 shots, both presets.

    python scripts/study.py                  # run every sweep (resuming finished cells), then render
    python scripts/study.py --render-only    # re-render docs/study.md and README.md from the run directories
    python scripts/study.py --models smollm2-135m --max-prompts 8 --out runs/study-try   # a small try

Each model × preset × relation is ONE sweep over the shot counts, run in a child process::

    recallscope run --model M --preset P --relation R --shots 0,1,3 --max-prompts N \\
        --no-report --out <out>/<M>/<P>/<R> --json --set ...

(cells in ``<out>/<M>/<P>/<R>/<R>/<k>shot``; the sweep's own ``summary.json`` holds the few-shot
claim, which compares the shot counts). The sweeps run relation by relation — every model and
preset on the paper's task first, then the next relation — so that a study cut short by the
machine's time covers whole relations on every model, and they run one after the other (never
two at once). A model loads once per sweep (from recallscope's safetensors cache: seconds).

The run layer resumes a sweep: rerunning the script reuses every finished stage of every cell,
so an interrupted study continues where it stopped (same ``--max-prompts`` and settings; a
different one is refused by the run directory). Each sweep's command, commit, start and end
date, wall time, load average and exit code are appended to ``<out>/study.json``; its stderr
goes to ``<out>/<M>/<P>/<R>.log``.

``STUDY_SETTINGS`` (passed as ``--set`` to every sweep, both presets) only trim work the claims do
not read: no attribution patching (the claims read the exact engine), the zero-ablation
mitigation only (the mitigation claim's ``mitigation_mode``), 200 random directions for the
intercept's baseline instead of 1000. They are printed in docs/study.md with the commands.

Rendering reads only files (no model, no torch): per cell the claims stage's main table
(``claims.parquet``: value, interval, threshold, margin, verdict, rule, …) and the cell's
``summary.json`` (prompt counts); per sweep the combined ``summary.json`` (the few-shot claim)
and ``<out>/study.json``. Nothing is recomputed: a figure in docs/study.md is a value of those
files, formatted. The README's claims section is the block between ``<!-- study:begin -->`` and
``<!-- study:end -->``, rewritten from the same data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from recallscope.rundir import RunDir, atomic_write_text, dumps  # noqa: E402  (torch-free)

LRE = "../shared/data/lre"  # relative to the repository root, as the README and CI reach it
MODELS = ("smollm2-135m", "gemma3-270m")
PRESETS = ("recallscope", "paper")
RELATIONS = (
    "paper_country_capital",
    f"{LRE}/country_capital_city.json",
    f"{LRE}/city_in_country.json",
    f"{LRE}/country_language.json",
    f"{LRE}/landmark_in_country.json",
    f"{LRE}/person_plays_pro_sport.json",
)
SHOTS = (0, 1, 3)
MAX_PROMPTS = 24
STUDY_SETTINGS = ("patch.attribution=false", "suppress.modes=zero", "intercept.n_random=200")
OUT = "runs/study"
DOC = "docs/study.md"
README = "README.md"
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
RECORD = "study.json"
OK_EXIT = (0, 3)  # 3: the sweep finished, some cells lacked the data for some stage (listed in its summary)

HOLDS, FAILS = "holds", "does not hold"
MARK = {HOLDS: "✓", FAILS: "✗"}


# --------------------------------------------------------------------------- running
def slug(relation: str) -> str:
    """The cell folder of a relation in a sweep (as ``recallscope.pipeline._slug`` names it)."""
    name = Path(relation).stem if relation.endswith(".json") else relation
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "relation"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sweep_command(
    model: str, preset: str, relations, shots, max_prompts: int, out: Path, stages: str | None, threads: int | None, settings=()
) -> list[str]:
    """The ``recallscope run`` arguments of one sweep (without the interpreter)."""
    cmd = [
        "recallscope",
        "run",
        "--model",
        model,
        "--preset",
        preset,
        "--relation",
        ",".join(relations),
        "--shots",
        ",".join(str(k) for k in shots),
        "--max-prompts",
        str(max_prompts),
        "--no-report",
        "--out",
        str(out),
        "--json",
    ]
    for setting in settings:
        cmd += ["--set", setting]
    if stages:
        cmd += ["--stages", stages]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


def read_record(out: Path) -> dict:
    path = out / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"attempts": []}


def write_record(out: Path, record: dict) -> None:
    atomic_write_text(out / RECORD, dumps(record) + "\n")


def out_path(args) -> Path:
    """The study's folder (``--out``, relative to the repository root unless absolute)."""
    return Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out


def run_sweep(args, model: str, preset: str, relation: str) -> int:
    """One model × preset × relation sweep over the shot counts, in a child process; its attempt is
    appended to ``<out>/study.json``."""
    out = out_path(args)
    (out / model / preset).mkdir(parents=True, exist_ok=True)
    # the command as recorded runs from the repository root (the child's working directory)
    cmd = sweep_command(
        model,
        preset,
        [relation],
        args.shots,
        args.max_prompts,
        Path(args.out) / model / preset / slug(relation),
        args.stages,
        args.threads,
        args.settings,
    )
    attempt = {
        "model": model,
        "preset": preset,
        "relation": slug(relation),
        "command": shlex.join(cmd),
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "start": now(),
        "load_before": round(os.getloadavg()[0], 2),
    }
    print(f"study: {attempt['command']}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    base = out / model / preset / slug(relation)
    with open(f"{base}.log", "a", encoding="utf-8") as log, open(f"{base}.json", "w", encoding="utf-8") as stdout:
        log.write(f"\n=== {attempt['start']} {attempt['command']}\n")
        log.flush()
        proc = subprocess.run([sys.executable, "-m", "recallscope", *cmd[1:]], cwd=ROOT, stdout=stdout, stderr=log)
    attempt.update(
        end=now(),
        wall_s=round(time.perf_counter() - start, 1),
        load_after=round(os.getloadavg()[0], 2),
        returncode=proc.returncode,
    )
    record = read_record(out)
    record["attempts"].append(attempt)
    write_record(out, record)
    print(
        f"study: {model} / {preset} / {slug(relation)}: exit {proc.returncode} after {attempt['wall_s']} s",
        file=sys.stderr,
        flush=True,
    )
    return proc.returncode


# --------------------------------------------------------------------------- reading
@dataclass
class Cell:
    model: str
    preset: str
    relation: str  # slug
    shots: int
    summary: dict
    claims: pd.DataFrame | None  # the claims stage's main table, None when it did not run

    @property
    def known(self) -> str:
        n, k = self.summary.get("n_prompts"), self.summary.get("n_known")
        return f"{k}/{n}" if n is not None and k is not None else "—"


@dataclass
class Sweep:
    model: str
    preset: str
    path: Path
    cells: list[Cell] = field(default_factory=list)
    shot_claims: list[dict] = field(default_factory=list)  # the combined summary's claims (across shot counts)
    finished: bool = False  # every relation's combined summary exists (its sweep ran to its end)
    unfinished: list[str] = field(default_factory=list)
    shots: list[int] = field(default_factory=lambda: [0])  # relations whose sweep has not finished
    incomplete: list[dict] = field(default_factory=list)


def read_sweep(out: Path, model: str, preset: str, relations, shots) -> Sweep:
    """Every relation's sweep of one model and preset, as one list of cells (relation-major)."""
    path = out / model / preset
    sweep = Sweep(model, preset, path, shots=list(shots))
    sweep.finished = True
    for rel in relations:
        root = path / slug(rel)
        combined = RunDir(root).summary() if root.is_dir() else {}
        if "runs" not in combined:
            sweep.finished = False
            sweep.unfinished.append(slug(rel))
        sweep.shot_claims += [{**row, "relation": row.get("relation") or slug(rel)} for row in combined.get("claims", [])]
        sweep.incomplete += list(combined.get("incomplete", []))
        for k in shots:
            cell = RunDir(root / slug(rel) / f"{k}shot")
            summary = cell.summary() if cell.path.is_dir() else {}
            claims = cell.read_table("claims") if cell.has_stage("claims") else None
            sweep.cells.append(Cell(model, preset, slug(rel), k, summary, claims))
    return sweep


# --------------------------------------------------------------------------- formatting
def num(x) -> str:
    """A figure as the study prints it: 3 significant digits, '—' when missing."""
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    x = float(x)
    return f"{x:.3g}" if x != 0 else "0"


def interval(lo, hi) -> str:
    return "—" if lo is None or hi is None or lo != lo or hi != hi else f"[{num(lo)}, {num(hi)}]"


def cell_text(text) -> str:
    """A value inside a markdown table cell: one line, pipes escaped."""
    return re.sub(r"\s+", " ", str(text if text is not None else "")).replace("|", "\\|").strip()


def verdict_of(row) -> str:
    return str(row.get("verdict", ""))


def mark(verdict: str) -> str:
    return MARK.get(verdict, "–")


def _g(row, key):
    value = row.get(key) if hasattr(row, "get") else None
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def claim_names(sweeps: list[Sweep]) -> list[str]:
    """Every claim text, in the order the claims tables list them (C1, C2, …)."""
    names: list[str] = []
    for s in sweeps:
        for c in s.cells:
            if c.claims is not None:
                for name in c.claims["claim"]:
                    if name not in names:
                        names.append(name)
        for row in s.shot_claims:
            if row.get("claim") not in names:
                names.append(row.get("claim"))
    return names


def shots_text(k: int) -> str:
    """ "1 shot", "3 shots"."""
    return f"{k} shot{'' if k == 1 else 's'}"


def _where(cells: list[tuple[str, int]]) -> str:
    """ "paper_country_capital at 0 and 3 shots; country_language at 3 shots"."""
    by: dict[str, list[int]] = {}
    for rel, k in cells:
        by.setdefault(rel, []).append(k)
    parts = []
    for rel, ks in by.items():
        ks = sorted(ks)
        shots = ", ".join(str(k) for k in ks[:-1]) + (" and " if len(ks) > 1 else "") + str(ks[-1])
        parts.append(f"{rel} at {shots} shot{'s' if len(ks) > 1 or ks[0] != 1 else ''}")  # "0 and 1 shots", "1 shot"
    return "; ".join(parts)


@dataclass
class Tally:
    holds: list = field(default_factory=list)  # (relation, shots)
    fails: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # not measurable (the run says why)
    not_run: list = field(default_factory=list)  # no result yet (the sweep has not reached it)
    across: bool = False  # one verdict per relation (compares shot counts), not per cell

    @property
    def measured(self) -> int:
        return len(self.holds) + len(self.fails)

    def short(self) -> str:
        if not self.measured and not self.missing and not self.not_run:
            return "—"
        text = f"{len(self.holds)}/{self.measured}"
        notes = ([f"{len(self.missing)} n/m"] if self.missing else []) + (
            [f"{len(self.not_run)} not run"] if self.not_run else []
        )
        return text + (f" ({', '.join(notes)})" if notes else "")


def across_shots(sweeps: list[Sweep]) -> set[str]:
    """The claims that compare shot counts (one verdict per relation, in the sweep's combined summary)."""
    return {row.get("claim") for s in sweeps for row in s.shot_claims}


def tally(sweep: Sweep, claim: str, across: bool = False) -> Tally:
    """Where ``claim`` holds, fails, is not measurable, or has not run in ``sweep``: cells, or relations when ``across``."""
    t = Tally(across=across)
    if across:
        for row in sweep.shot_claims:
            if row.get("claim") == claim:
                v = row.get("verdict")
                (t.holds if v == HOLDS else t.fails if v == FAILS else t.missing).append((row.get("relation"), None))
        t.not_run += [(rel, None) for rel in sweep.unfinished]
        return t
    for c in sweep.cells:
        if c.claims is None:
            (t.missing if c.summary.get("not_measurable") else t.not_run).append((c.relation, c.shots))
            continue
        rows = c.claims[c.claims["claim"] == claim]
        if not len(rows):
            continue
        v = verdict_of(rows.iloc[0])
        (t.holds if v == HOLDS else t.fails if v == FAILS else t.missing).append((c.relation, c.shots))
    return t


def _shot_where(items) -> str:
    return ", ".join(str(rel) for rel, _ in items)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'s' if n != 1 else ''}"


def sentence(sweep: Sweep, claim: str, t: Tally) -> str:
    """The plain-words line of one claim on one sweep, from its tally."""
    who = f"**{sweep.model}, {sweep.preset} preset**"
    where = _shot_where if t.across else _where
    unit = "relation" if t.across else "cell"
    if not t.measured:
        text = f"{who}: measured in no {unit}"
    elif not t.holds:
        text = f"{who}: does not hold in " + (
            f"the one measured {unit}" if t.measured == 1 else f"any of the {t.measured} measured {unit}s"
        )
    elif not t.fails:
        text = f"{who}: holds in " + (f"the one measured {unit}" if t.measured == 1 else f"every measured {unit} ({t.measured})")
    else:
        text = f"{who}: holds in {len(t.holds)} of {t.measured} measured {unit}s ({where(t.holds)})"
    if t.missing:
        text += f"; not measurable in {_count(len(t.missing), unit)} ({where(t.missing)})"
    if t.not_run:
        text += f"; {_count(len(t.not_run), unit)} not run yet"
    return text + "."


def nearest_flip(sweep: Sweep, claim: str) -> str | None:
    """Among the measured cells where the primary condition alone decides (``flips_at`` set), the one
    whose margin is smallest: the verdict nearest to flipping (None without such a cell)."""
    best = None
    for c in sweep.cells:
        if c.claims is None or "margin" not in c.claims or "flips_at" not in c.claims:
            continue
        rows = c.claims[(c.claims["claim"] == claim) & c.claims["verdict"].isin([HOLDS, FAILS])]
        for _, row in rows.iterrows():
            m, f = _g(row, "margin"), _g(row, "flips_at")
            if m is not None and f is not None and (best is None or abs(float(m)) < abs(best[0])):
                best = (float(m), c, verdict_of(row), f)
    if best is None:
        return None
    m, c, v, f = best
    return (
        f"The verdict nearest to flipping: {c.relation} at {shots_text(c.shots)} ({v}, margin {num(m)}; "
        f"it flips with the threshold's setting at {num(f)})."
    )


# --------------------------------------------------------------------------- rendering
def legend(names: list[str]) -> list[str]:
    return [f"- **C{i + 1}** — {cell_text(n)}" for i, n in enumerate(names)]


def summary_table(sweeps: list[Sweep], names: list[str]) -> list[str]:
    """Claims × (model, preset): holds in how many of the measured cells."""
    head = "| claim | " + " | ".join(f"{s.model} · {s.preset}" for s in sweeps) + " |"
    lines = [head, "|---|" + "---|" * len(sweeps)]
    across = across_shots(sweeps)
    for i, name in enumerate(names):
        lines.append(f"| C{i + 1} | " + " | ".join(tally(s, name, name in across).short() for s in sweeps) + " |")
    return lines


def grid(sweep: Sweep, names: list[str], across: set[str]) -> list[str]:
    """One row per cell: known prompts, then each claim's value, interval and verdict mark."""
    per_cell = [n for n in names if n not in across]
    lines = [
        "| relation | shots | known/prompts | " + " | ".join(f"C{names.index(n) + 1}" for n in per_cell) + " |",
        "|---|---|---|" + "---|" * len(per_cell),
    ]
    for c in sweep.cells:
        parts = []
        for n in per_cell:
            if c.claims is None:
                parts.append("n/m" if c.summary.get("not_measurable") else "not run")
                continue
            rows = c.claims[c.claims["claim"] == n]
            if not len(rows):
                parts.append("–")
                continue
            row = rows.iloc[0]
            v = verdict_of(row)
            if v in (HOLDS, FAILS):
                parts.append(f"{mark(v)} {num(_g(row, 'value'))} {interval(_g(row, 'ci_low'), _g(row, 'ci_high'))}")
            else:
                parts.append("n/m")
        lines.append(f"| {c.relation} | {c.shots} | {c.known} | " + " | ".join(parts) + " |")
    return lines


DETAIL_COLUMNS = ("about", "value", "interval", "threshold", "margin", "flips_at", "verdict", "rule", "detail")


def detail_table(sweep: Sweep, names: list[str]) -> list[str]:
    """Every claims row of every cell: the claims stage's columns (value, interval, threshold, margin, verdict, rule, …)."""
    sample = next((c.claims for c in sweep.cells if c.claims is not None), None)
    present = set() if sample is None else set(sample.columns) | {"interval"}
    cols = [col for col in DETAIL_COLUMNS if col in present or col in ("value", "interval", "verdict")]
    lines = ["| relation | shots | claim | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]

    def row_line(rel, k, row):
        name = row.get("claim")
        out = []
        for col in cols:
            if col == "interval":
                out.append(interval(_g(row, "ci_low"), _g(row, "ci_high")))
            elif col in ("value", "margin", "threshold", "flips_at"):
                out.append(num(_g(row, col)))
            else:
                value = _g(row, col)
                out.append(cell_text(num(value) if isinstance(value, float) else value if value is not None else ""))
        label = f"C{names.index(name) + 1}" if name in names else cell_text(name)
        return f"| {rel} | {k} | {label} | " + " | ".join(out) + " |"

    for c in sweep.cells:
        if c.claims is None:
            why = "; ".join(f"{k}: {v.get('reason')}" for k, v in (c.summary.get("not_measurable") or {}).items())
            lines.append(
                f"| {c.relation} | {c.shots} | — | "
                + " | ".join([cell_text(why or "the claims stage has not run in this cell")] + [""] * (len(cols) - 1))
                + " |"
            )
            continue
        for _, row in c.claims.iterrows():
            lines.append(row_line(c.relation, c.shots, row))
    for row in sweep.shot_claims:
        lines.append(row_line(row.get("relation"), f"{min(sweep.shots)}→{max(sweep.shots)}", row))
    return lines


def provenance(out: Path, sweeps: list[Sweep], args) -> list[str]:
    record = read_record(out)
    attempts = record.get("attempts", [])
    lines = [
        "Regenerate (resumes: finished cells are reused; `--render-only` re-renders without a model):",
        "",
        "```bash",
        study_command(args),
        "python scripts/study.py --render-only" + (f" --out {args.out}" if args.out != OUT else ""),
        "```",
        "",
    ]
    if attempts:
        total = sum(a.get("wall_s") or 0 for a in attempts)
        lines += [
            f"Each model × preset × relation is one sweep over the shot counts (one model load) run by the script; "
            f"{len(attempts)} attempt(s), "
            f"{num(total / 60)} min of wall time in all, on a machine whose cores were shared with other work "
            "(the load averages say how much; the times are contended, not benchmarks):",
            "",
            "| model | preset | relation | started (UTC) | wall s | load before → after | exit | commit | command |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in attempts:
            lines.append(
                f"| {a['model']} | {a['preset']} | {a.get('relation', '')} | {a['start']} | {num(a.get('wall_s'))} | "
                f"{num(a.get('load_before'))} → {num(a.get('load_after'))} | {a.get('returncode')} | "
                f"{a.get('commit')}{' (dirty)' if a.get('dirty') else ''} | `{cell_text(a['command'])}` |"
            )
        lines.append("")
    else:
        lines += ["No sweep has been run by this script in this output folder yet.", ""]
    for s in sweeps:
        if not s.finished:
            lines.append(
                f"- {s.model} · {s.preset}: not run to the end for {', '.join(s.unfinished)} (no combined "
                "summary yet): cells without a claims table show as not measurable (n/m) or not run, and "
                "the few-shot claim of those relations is missing. The command above resumes them."
            )
    return lines


def study_command(args) -> str:
    parts: list[str] = []
    if tuple(args.models) != MODELS:
        parts += ["--models", ",".join(args.models)]
    if tuple(args.presets) != PRESETS:
        parts += ["--presets", ",".join(args.presets)]
    if tuple(args.relations) != RELATIONS:
        parts += ["--relations", ",".join(args.relations)]
    if tuple(args.shots) != SHOTS:
        parts += ["--shots", ",".join(str(k) for k in args.shots)]
    parts += ["--max-prompts", str(args.max_prompts)]
    if args.stages:
        parts += ["--stages", args.stages]
    if tuple(args.settings) != STUDY_SETTINGS:
        parts += [a for setting in args.settings for a in ("--set", setting)]
    if args.out != OUT:
        parts += ["--out", args.out]
    return "python scripts/study.py " + shlex.join(parts)


def sample_sizes(sweeps: list[Sweep], args) -> str:
    known = [c.summary.get("n_known") for s in sweeps for c in s.cells if c.summary.get("n_known") is not None]
    text = (
        f"Sample: at most {args.max_prompts} prompts per cell (`--max-prompts {args.max_prompts}`: a seeded "
        f"subsample of the relation's template × subject prompts), seed 0; the stages after recall use the "
        f"prompts the model knows (top-1 = answer)"
    )
    if known:
        text += f", {min(known)} to {max(known)} per cell here (the `known/prompts` column)"
    if args.settings:
        text += (
            ". Every sweep also gets "
            + ", ".join(f"`--set {x}`" for x in args.settings)
            + " (work the claims do not read, left out to fit the machine's time)"
        )
    return text + ". Intervals are the claims stage's (95%, bootstrap over prompts unless its `measure` says otherwise)."


def headline(sweeps: list[Sweep], names: list[str]) -> list[str]:
    """Plain words per claim: where it holds, from the tallies."""
    lines = []
    across = across_shots(sweeps)
    for i, name in enumerate(names):
        lines.append(f"**C{i + 1}. {cell_text(name)}.**")
        lines.append("")
        for s in sweeps:
            t = tally(s, name, name in across)
            flip = nearest_flip(s, name)
            lines.append(f"- {sentence(s, name, t)}" + (f" {flip}" if flip else ""))
        lines += ["", f"In short: {in_short(sweeps, name, i, across)}", ""]
    return lines


def in_short(sweeps: list[Sweep], name: str, i: int, across: set[str]) -> str:
    """One sentence per claim over the whole study: holds in how many measured cells, per model."""
    unit = "relation" if name in across else "cell"
    per_model: dict[str, list[int]] = {}
    for s in sweeps:
        t = tally(s, name, name in across)
        h, m = per_model.setdefault(s.model, [0, 0])
        per_model[s.model] = [h + len(t.holds), m + t.measured]
    held = sum(h for h, _ in per_model.values())
    measured = sum(m for _, m in per_model.values())
    if not measured:
        return f"C{i + 1} was measured in no {unit} yet."
    models = ", ".join(f"{model} {h}/{m}" for model, (h, m) in per_model.items())
    if not held:
        return f"C{i + 1} holds in none of the {_count(measured, 'measured ' + unit)} ({models})."
    if held == measured:
        what = f"the one measured {unit}" if measured == 1 else f"all {measured} measured {unit}s"
        return f"C{i + 1} holds in {what} ({models})."
    return f"C{i + 1} holds in {held} of {measured} measured {unit}s ({models})."


def preset_disagreements(sweeps: list[Sweep], names: list[str]) -> list[str]:
    """Cells where the two presets give different verdicts for one model, relation and shot count."""
    by = {(s.model, s.preset): s for s in sweeps}
    lines = []
    for model in dict.fromkeys(s.model for s in sweeps):
        pair = [by.get((model, p)) for p in PRESETS]
        if None in pair:
            continue
        diffs = []
        compared = 0
        for a, b in zip(pair[0].cells, pair[1].cells, strict=True):
            if a.claims is None or b.claims is None:
                continue
            va = dict(zip(a.claims["claim"], a.claims["verdict"], strict=True))
            vb = dict(zip(b.claims["claim"], b.claims["verdict"], strict=True))
            for n in names:
                if n in va and n in vb and {va[n], vb[n]} <= {HOLDS, FAILS}:
                    compared += 1
                if n in va and n in vb and va[n] != vb[n] and {va[n], vb[n]} <= {HOLDS, FAILS}:
                    diffs.append(
                        f"C{names.index(n) + 1} on {a.relation} at {shots_text(a.shots)} ({PRESETS[0]}: {va[n]}, {PRESETS[1]}: {vb[n]})"
                    )
        if diffs:
            lines.append(
                f"- {model}: of the {compared} verdicts measured under both presets, {len(diffs)} differ: "
                + "; ".join(diffs)
                + "."
            )
        elif compared:
            lines.append(f"- {model}: the presets agree on all {compared} verdicts measured under both.")
        else:
            lines.append(f"- {model}: no verdict has been measured under both presets yet.")
    return lines


def render_doc(out: Path, sweeps: list[Sweep], args) -> str:
    names = claim_names(sweeps)
    lines = [
        "# The paper's claims across models, relations, shot counts and presets",
        "",
        "Generated by `scripts/study.py` from the run directories it wrote — no figure here is typed by hand. "
        "Each row of a claims table is the claims stage's own output (`claims.parquet` of the cell's run "
        "directory; the few-shot claim compares the shot counts of a relation and is in the sweep's "
        "`summary.json`). Presets: `recallscope` (the defaults) and `paper` (the paper's code's definitions: "
        "path patching, dataset means, ratio of means, every prompt, first subject token, plain demonstrations; "
        "see `recallscope.presets`).",
        "",
        f"Rendered {now()} at commit {_git('rev-parse', '--short=12', 'HEAD') or 'unknown'}.",
        "",
        sample_sizes(sweeps, args),
        "",
        coverage(sweeps),
        "",
        "## Claims",
        "",
        *legend(names),
        "",
        "## Summary: in how many cells each claim holds",
        "",
        "Cells are relation × shot count; `k/n` = holds in k of the n cells where it was measurable, "
        "`n/m` = not measurable (a stage lacked data, e.g. too few known prompts), `not run` = the study has not "
        "reached the cell yet (rerun the command to resume). The few-shot claim is one "
        f"per relation ({min(args.shots)} vs {max(args.shots)} shots).",
        "",
        *summary_table(sweeps, names),
        "",
        "## Which claims hold where, in words",
        "",
        *headline(sweeps, names),
        "### recallscope's definitions vs the paper's",
        "",
        *preset_disagreements(sweeps, names),
        "",
        "## Per cell: value [95% interval] and verdict (✓ holds, ✗ does not hold, n/m not measurable)",
        "",
    ]
    for s in sweeps:
        lines += [f"### {s.model} · {s.preset} preset", "", *grid(s, names, across_shots(sweeps)), ""]
    lines += ["## Every claims row", "", "The claims stage's columns as written in each cell's `claims.parquet`.", ""]
    for s in sweeps:
        lines += [f"### {s.model} · {s.preset} preset (`{args.out}/{s.model}/{s.preset}`)", "", *detail_table(s, names), ""]
    lines += ["## How it was run", "", *provenance(out, sweeps, args), ""]
    return "\n".join(lines).rstrip() + "\n"


def coverage(sweeps: list[Sweep]) -> str:
    """How many cells the study has reached (a claims table, or a recorded reason it could not run)."""
    cells = [c for s in sweeps for c in s.cells]
    done = [c for c in cells if c.claims is not None or c.summary.get("not_measurable")]
    text = f"{len(done)} of {len(cells)} cells have run"
    if len(done) < len(cells):
        reached = list(dict.fromkeys(c.relation for c in done))
        text += (
            f" (relations reached so far: {', '.join(reached) or 'none'}); the others are marked `not run` and "
            "the same command resumes the study where it stopped"
        )
    return text + "."


def render_readme_block(sweeps: list[Sweep], args) -> str:
    names = claim_names(sweeps)
    lines = [
        BEGIN,
        "<!-- generated by scripts/study.py from the study's run directories: edit the script, not this block -->",
        "",
        f"Measured by `{study_command(args)}` on {', '.join(dict.fromkeys(s.model for s in sweeps))}: "
        f"{len(args.relations)} relations (the paper's task and LRE relations) × shots "
        f"{', '.join(str(k) for k in args.shots)} × presets {' and '.join(dict.fromkeys(s.preset for s in sweeps))}, "
        f"at most {args.max_prompts} prompts per cell. The whole study — every value with its interval, "
        "margin and rule — is [docs/study.md](docs/study.md). " + coverage(sweeps),
        "",
        *legend(names),
        "",
        "Holds in k of the n measurable cells (relation × shot count; `n/m` = not measurable; `not run` = "
        "not reached yet by the study):",
        "",
        *summary_table(sweeps, names),
        "",
    ]
    across = across_shots(sweeps)
    lines += [f"- {in_short(sweeps, name, i, across)}" for i, name in enumerate(names)]
    lines += ["", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the study markers (markers included) replaced by ``block``."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"{README}: the markers {BEGIN} … {END} are missing; add them where the claims section goes")
    return text[:start] + block + text[stop + len(END) :]


def render(args) -> None:
    out = out_path(args)
    sweeps = [read_sweep(out, m, p, args.relations, args.shots) for m in args.models for p in args.presets]
    doc = ROOT / args.doc if not Path(args.doc).is_absolute() else Path(args.doc)
    atomic_write_text(doc, render_doc(out, sweeps, args))
    print(f"study: wrote {doc}", file=sys.stderr)
    if args.readme:
        readme = ROOT / args.readme if not Path(args.readme).is_absolute() else Path(args.readme)
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), render_readme_block(sweeps, args)), encoding="utf-8")
        print(f"study: rewrote the study block of {readme}", file=sys.stderr)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--models", type=csv, default=list(MODELS))
    p.add_argument("--presets", type=csv, default=list(PRESETS))
    p.add_argument("--relations", type=csv, default=list(RELATIONS))
    p.add_argument("--shots", type=lambda s: [int(x) for x in csv(s)], default=list(SHOTS))
    p.add_argument("--max-prompts", type=int, default=MAX_PROMPTS)
    p.add_argument("--stages", default=None, help="comma-separated stages (default: the run's default stages)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=None,
        help=f"stage setting for every sweep (repeatable; default: {' '.join(STUDY_SETTINGS)})",
    )
    p.add_argument("--out", default=OUT, help="the study's run directories (relative to the repository root)")
    p.add_argument("--doc", default=DOC)
    p.add_argument("--readme", default=README, help="README whose study block is rewritten ('' to leave it)")
    p.add_argument("--render-only", action="store_true", help="no run: re-render from the run directories")
    p.add_argument(
        "--redo-claims",
        action="store_true",
        help="recompute every cell's claims stage (after a change to the claim rules); other stages are reused",
    )
    args = p.parse_args(argv)
    args.settings = list(STUDY_SETTINGS) if args.settings is None else args.settings
    if args.max_prompts < 1:
        p.error("--max-prompts must be >= 1")
    return args


def drop_claims(out: Path, args) -> int:
    """Remove every cell's claims tables, so that the next run recomputes the claims stage alone.

    The run layer reuses a stage whose config is unchanged; a change to the claim rules in code
    (not in ``ClaimsConfig``) needs this. Every other stage is still reused. Returns the number of
    cells touched.
    """
    n = 0
    for m in args.models:
        for p in args.presets:
            for rel in args.relations:
                for k in args.shots:
                    cell = out / m / p / slug(rel) / slug(rel) / f"{k}shot"
                    main_table = cell / "claims.parquet"
                    if main_table.exists():
                        main_table.unlink()
                        for extra in (cell / "claims").glob("*.parquet") if (cell / "claims").is_dir() else []:
                            extra.unlink()
                        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = out_path(args)
    failed = []
    if args.redo_claims and not args.render_only:
        print(f"study: dropped the claims tables of {drop_claims(out, args)} cells (recomputed below)", file=sys.stderr)
    if not args.render_only:
        out.mkdir(parents=True, exist_ok=True)
        for rel in args.relations:
            for m in args.models:
                for p in args.presets:
                    rc = run_sweep(args, m, p, rel)
                    if rc not in OK_EXIT:
                        failed.append(f"{m} · {p} · {slug(rel)} (exit {rc}; see {out / m / p / slug(rel)}.log)")
    render(args)
    if failed:
        print("study: sweeps that failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
