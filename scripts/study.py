"""The study: the paper's claims on two real models, several relations, 0/1/3 shots, both presets.

    python scripts/study.py                  # run every sweep on every prompt (resuming finished cells), then render
    python scripts/study.py --render-only    # re-render docs/study.md and README.md from the run directories
    python scripts/study.py --models smollm2-135m --max-prompts 16 --out /tmp/study-try \
        --doc /tmp/study-try/study.md --readme ''                          # a small try, the docs left alone

Each model × preset × relation is ONE sweep over the shot counts, run in a child process::

    recallscope run --model M --preset P --relation R --shots 0,1,3 --max-prompts N \\
        --no-report --out <out>/<M>/<P>/<R> --json --set ...

(cells in ``<out>/<M>/<P>/<R>/<R>/<k>shot``; the sweep's own ``summary.json`` holds the claims
across shot counts: C6, and C10 and C11 about what demonstrations change). The sweeps run relation
by relation — every model and preset on the paper's task first, then the next relation — so that a study cut short by the
machine's time covers whole relations on every model, and they run one after the other (never
two at once). A model loads once per sweep (from recallscope's safetensors cache: seconds).

The run layer resumes a sweep: rerunning the script reuses every finished stage of every cell,
so an interrupted study continues where it stopped (same ``--max-prompts`` and settings; a
different one is refused by the run directory). Each sweep's command, commit, start and end
date, wall time, load average and exit code are appended to ``<out>/study.json``; its stderr
goes to ``<out>/<M>/<P>/<R>.log``.

``STAGES``: the run's default stages and the opt-in surgery stage (C9). ``STUDY_SETTINGS`` (passed
as ``--set`` to every sweep, both presets) trim work the claims do not read: no attribution patching
(the claims read the exact engine), the zero-ablation mitigation only (the mitigation claim's
``mitigation_mode``), 200 random directions for the intercept's baseline instead of 1000; and they
trim surgery to what C9 reads on at most ``SURGERY_PROMPTS`` known prompts per cell (the end
position; it ablates every null head set, up to 200 per null, on every prompt). They are printed in
docs/study.md with the commands (``SETTING_WHY``).

Rendering reads only files (no model, no torch): per cell the claims stage's main table
(``claims.parquet``: value, interval, threshold, margin, verdict, prompts needed, rule, …) and the
cell's ``summary.json`` (prompt counts); per sweep the combined ``summary.json`` (the claims
across shot counts) and ``<out>/study.json``. Nothing is recomputed: a figure in docs/study.md is a value of
those files, formatted. The README's claims section is the block between ``<!-- study:begin -->``
and ``<!-- study:end -->``, rewritten from the same data.

Verdicts are the claims stage's four (``recallscope.claims``): holds, does not hold, inconclusive
(an interval straddles its threshold: too few prompts to decide; the row's ``prompts_needed`` says
how many known prompts would decide it if the effect stayed as measured) and not measurable here.
Per claim and model · preset the study counts all four and gives the median prompts needed of the
inconclusive cells.

What changed against the 24-prompt study: that study's run directories were not kept; its per-cell
verdicts are in ``docs/study-24.json``, extracted once from the docs/study.md it rendered
(``--extract-baseline COMMIT``: the commit's docs/study.md, read with git; the file records the
commit). The renderer compares every cell and claim with it (``--baseline``): which verdicts turned
inconclusive, which flipped between holds and does not hold, which others changed.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from recallscope.rundir import RunDir, atomic_write_text, dumps, relation_slug  # noqa: E402  (torch-free)
from recallscope.verdicts import EVIDENCE_STAGE, IDS, claim_id  # noqa: E402  (pure Python: the ids the report and the terminal use)
from recallscope.verdicts import whole as prompts  # noqa: E402  (prompt counts as the terminal writes them)

LRE = "lre"  # the LRE relations the package ships (src/recallscope/tasks/lre), by name: lre/<name>
MODELS = ("smollm2-135m", "gemma3-270m")
PRESETS = ("recallscope", "paper")
RELATIONS = (
    "paper_country_capital",
    f"{LRE}/country_capital_city",
    f"{LRE}/city_in_country",
    f"{LRE}/country_language",
    f"{LRE}/landmark_in_country",
    f"{LRE}/person_plays_pro_sport",
    f"{LRE}/presidents_birth_year",  # numerical facts: years, scored on the whole answer (recall.answer_metric=auto)
    f"{LRE}/presidents_election_year",
)
NUMERICAL = ("presidents_birth_year", "presidents_election_year")  # the numerical facts (years); the rest are categorical
SHOTS = (0, 1, 3)
MAX_PROMPTS = "all"  # every prompt of each relation: the 24-prompt study could not decide many claims (issue 27)
# the run's default stages and the opt-in surgery (C9: the check the paper leaves open, movers against random heads);
# tests/test_study_script.py checks this is pipeline.default_stages() + surgery, in pipeline order
STAGES = "recall,patch,movers,decompose,intercept,suppress,onset,surgery,claims"
SURGERY_PROMPTS = 32  # C9 on a seeded draw of at most this many known prompts per cell (surgery.max_prompts)
STUDY_SETTINGS = (
    "patch.attribution=false",
    "suppress.modes=zero",
    "intercept.n_random=200",
    "surgery.scopes=end",
    f"surgery.max_prompts={SURGERY_PROMPTS}",
)
# why each setting: work the claims do not read, or what it trims from what they read
SETTING_WHY = {
    "patch.attribution=false": "work the claims do not read",
    "suppress.modes=zero": "work the claims do not read",
    "intercept.n_random=200": "work the claims do not read",
    "surgery.scopes=end": "the end position only, the scope C9 reads",
    f"surgery.max_prompts={SURGERY_PROMPTS}": f"C9 on a seeded draw of at most {SURGERY_PROMPTS} of the cell's known prompts: "
    "the surgery stage ablates every null head set (up to 200 per null, two nulls) on every prompt; each cell's "
    "time is in its sweep's log",
}
OUT = "runs/study"
DOC = "docs/study.md"
BASELINE = "docs/study-24.json"  # the 24-prompt study's per-cell verdicts (extract_baseline)
README = "README.md"
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
RECORD = "study.json"
OK_EXIT = (0, 3)  # 3: the sweep finished, some cells lacked the data for some stage (listed in its summary)

# the claims stage's verdicts (recallscope.claims.VERDICTS; written here so that rendering imports no stage)
HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURABLE = "holds", "does not hold", "inconclusive", "not measurable here"
DECIDED = (HOLDS, FAILS, INCONCLUSIVE)  # measured: a verdict from the run's figures
MARK = {HOLDS: "✓", FAILS: "✗", INCONCLUSIVE: "?"}


# --------------------------------------------------------------------------- running
def slug(relation: str) -> str:
    """The cell folder of a relation in a sweep (``recallscope.rundir.relation_slug``; the study's
    relations never share one)."""
    return relation_slug(relation)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sweep_command(
    model: str,
    preset: str,
    relations,
    shots,
    max_prompts: int | str,
    out: Path,
    stages: str | None,
    threads: int | None,
    settings=(),
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
    subjects: int | None = None  # distinct subjects among the known prompts (recall's table), None without it

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
        sweep.shot_claims += [
            {**row, "relation": row.get("relation") or slug(rel), "folder": slug(rel)} for row in combined.get("claims", [])
        ]
        sweep.incomplete += list(combined.get("incomplete", []))
        for k in shots:
            cell = RunDir(root / slug(rel) / f"{k}shot")
            summary = cell.summary() if cell.path.is_dir() else {}
            claims = cell.read_table("claims") if cell.has_stage("claims") else None
            sweep.cells.append(Cell(model, preset, slug(rel), k, summary, claims, known_subjects(cell)))
    return sweep


def known_subjects(cell: RunDir) -> int | None:
    """How many distinct subjects the cell's known prompts hold (a relation's prompts are subjects ×
    templates: the intervals resample prompts, so many prompts of few subjects give narrow intervals)."""
    if not cell.path.is_dir() or not cell.has_stage("recall"):
        return None
    recall = cell.read_table("recall")
    if "subject" not in recall or "known" not in recall:
        return None
    return int(recall.loc[recall["known"].astype(bool), "subject"].nunique())


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


def beyond(row) -> bool:
    """Whether an inconclusive row's prompts needed are more than its relation can give (``prompts_available``:
    the relation's usable prompts at the cell's known rate)."""
    needed, available = _g(row, "prompts_needed"), _g(row, "prompts_available")
    return verdict_of(row) == INCONCLUSIVE and needed is not None and available is not None and float(needed) > float(available)


def needed_text(row, short: bool = False) -> str:
    """ "≈ 1,944 known prompts would decide it — more than the relation can give (≈ 183)" (``short``: "≈1,944 > 183")."""
    n, available = _g(row, "prompts_needed"), _g(row, "prompts_available")
    if short:
        return f"≈{prompts(n)}" + (f" > {prompts(available)}" if beyond(row) else "")
    return f"≈ {prompts(n)} known prompts would decide it" + (
        f" — more than the relation can give (≈ {prompts(available)})" if beyond(row) else ""
    )


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


def label(name: str, names: list[str]) -> str:
    """A claim's id as the report and the terminal give it (``recallscope.verdicts.IDS``: C1 … C11, whatever
    claims a study's runs hold), else ``#<position>`` in the study's list."""
    return claim_id({"claim": name}, names.index(name) if name in names else len(names))


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
    inconclusive: list = field(default_factory=list)
    needed: list = field(default_factory=list)  # prompts_needed of the inconclusive ones (None: none decides it)
    beyond: list = field(default_factory=list)  # the inconclusive ones whose prompts needed exceed what the relation gives
    missing: list = field(default_factory=list)  # not measurable (the run says why)
    not_run: list = field(default_factory=list)  # no result yet (the sweep has not reached it)
    across: bool = False  # one verdict per relation (compares shot counts), not per cell

    @property
    def measured(self) -> int:
        return len(self.holds) + len(self.fails) + len(self.inconclusive)

    def add(self, row, where) -> None:
        """Count one claims row (its verdict, and for an inconclusive one its prompts needed) at ``where``."""
        verdict = verdict_of(row)
        if verdict == HOLDS:
            self.holds.append(where)
        elif verdict == FAILS:
            self.fails.append(where)
        elif verdict == INCONCLUSIVE:
            self.inconclusive.append(where)
            self.needed.append(_g(row, "prompts_needed"))
            if beyond(row):
                self.beyond.append(where)
        else:
            self.missing.append(where)

    def beyond_text(self) -> str:
        """ " (3 of them more than their relation can give)", or "" when none is."""
        if not self.beyond:
            return ""
        return f" ({len(self.beyond)} of them more than their relation can give)"

    def median_needed(self):
        """The median prompts needed over the inconclusive ones that some number of prompts decides (None: none)."""
        known = sorted(int(n) for n in self.needed if n is not None)
        return None if not known else float(pd.Series(known).median())

    def short(self) -> str:
        """ "holds · does not hold · inconclusive · n/m" counts, the inconclusive ones' median prompts needed."""
        if not self.measured and not self.missing and not self.not_run:
            return "—"
        text = f"{len(self.holds)} · {len(self.fails)} · {len(self.inconclusive)} · {len(self.missing)}"
        median = self.median_needed()
        if median is not None:
            text += f" (≈ {prompts(median)})"
        return text + (f", {len(self.not_run)} not run" if self.not_run else "")


def across_shots(sweeps: list[Sweep]) -> set[str]:
    """The claims that compare shot counts (one verdict per relation, in the sweep's combined summary)."""
    return {row.get("claim") for s in sweeps for row in s.shot_claims}


def tally(sweep: Sweep, claim: str, across: bool = False) -> Tally:
    """Where ``claim`` holds, fails, is inconclusive, not measurable, or has not run in ``sweep``: cells, or relations when ``across``."""
    t = Tally(across=across)
    if across:
        for row in sweep.shot_claims:
            if row.get("claim") == claim:
                t.add(row, (row.get("relation"), None))
        t.not_run += [(rel, None) for rel in sweep.unfinished]
        return t
    for c in sweep.cells:
        if c.claims is None:
            (t.missing if c.summary.get("not_measurable") else t.not_run).append((c.relation, c.shots))
            continue
        rows = c.claims[c.claims["claim"] == claim]
        if not len(rows):  # its stage was not measurable here, or has not run in this cell yet (added later: surgery)
            (t.missing if stage_not_measurable(c, claim) else t.not_run).append((c.relation, c.shots))
            continue
        t.add(rows.iloc[0], (c.relation, c.shots))
    return t


def stage_not_measurable(cell: Cell, claim: str) -> bool:
    """Whether the stage that holds ``claim``'s evidence was not measurable in ``cell`` (its run says why)."""
    return EVIDENCE_STAGE.get(IDS.get(claim, "")) in (cell.summary.get("not_measurable") or {})


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
    else:
        parts = []
        for label, items in (("holds", t.holds), ("does not hold", t.fails), ("inconclusive", t.inconclusive)):
            if items:
                parts.append(f"{label} in {len(items)} ({where(items)})")
        text = f"{who}, of {_count(t.measured, 'measured ' + unit)}: " + "; ".join(parts)
        if t.inconclusive:
            median = t.median_needed()
            text += (
                f" — median ≈ {prompts(median)} known prompts would decide the inconclusive ones{t.beyond_text()}"
                if median is not None
                else " — no number of prompts decides the inconclusive ones at their estimates"
            )
    if t.missing:
        text += f"; not measurable in {_count(len(t.missing), unit)} ({where(t.missing)})"
    if t.not_run:
        text += f"; {_count(len(t.not_run), unit)} not run yet"
    return text + "."


def nearest_flip(sweep: Sweep, claim: str) -> str | None:
    """Among the measured cells where the deciding condition's setting alone can change the verdict
    (``flips_at`` set), the one whose margin is smallest: the verdict nearest to flipping (None without such a cell)."""
    best = None
    for c in sweep.cells:
        if c.claims is None or "margin" not in c.claims or "flips_at" not in c.claims:
            continue
        rows = c.claims[(c.claims["claim"] == claim) & c.claims["verdict"].isin(list(DECIDED))]
        for _, row in rows.iterrows():
            m, f = _g(row, "margin"), _g(row, "flips_at")
            if m is not None and f is not None and (best is None or abs(float(m)) < abs(best[0])):
                best = (float(m), c, verdict_of(row), f)
    if best is None:
        return None
    m, c, v, f = best
    return (
        f"The verdict nearest to flipping: {c.relation} at {shots_text(c.shots)} ({v}, margin {num(m)}; "
        f"it changes with the deciding threshold's setting at {num(f)})."
    )


# --------------------------------------------------------------------------- rendering
def legend(names: list[str]) -> list[str]:
    return [f"- **{label(n, names)}** — {cell_text(n)}" for n in names]


COUNTS_KEY = (
    "`h · f · i · n` = holds in h cells, does not hold in f, inconclusive in i (an interval straddles its "
    "threshold), not measurable in n; `(≈ N)` = the median known prompts that would decide the inconclusive ones "
    "if their effects stayed as measured (the claims stage's `prompts_needed`: interval width ∝ 1/√n); `≈N > M` in a "
    "cell: more than the M known prompts its relation can give"
)


def summary_table(sweeps: list[Sweep], names: list[str]) -> list[str]:
    """Claims × (model, preset): the four-way counts of the measured cells (:meth:`Tally.short`)."""
    head = "| claim | " + " | ".join(f"{s.model} · {s.preset}" for s in sweeps) + " |"
    lines = [head, "|---|" + "---|" * len(sweeps)]
    across = across_shots(sweeps)
    for name in names:
        lines.append(f"| {label(name, names)} | " + " | ".join(tally(s, name, name in across).short() for s in sweeps) + " |")
    return lines


def counts_table(sweeps: list[Sweep], names: list[str]) -> list[str]:
    """Per claim and model · preset, one row: holds, does not hold, inconclusive, not measurable, the
    inconclusive ones' median prompts needed (and their range)."""
    lines = [
        "| claim | model · preset | holds | does not hold | inconclusive | not measurable | not run | "
        "median prompts needed (range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    across = across_shots(sweeps)
    for name in names:
        for s in sweeps:
            t = tally(s, name, name in across)
            known = sorted(int(n) for n in t.needed if n is not None)
            needed = "—" if not known else f"{prompts(t.median_needed())} ({prompts(known[0])}–{prompts(known[-1])})"
            if len(known) < len(t.inconclusive):
                needed += f"; {len(t.inconclusive) - len(known)} undecidable at their estimate"
            if t.beyond:
                needed += f"; {len(t.beyond)} more than the relation can give"
            lines.append(
                f"| {label(name, names)} | {s.model} · {s.preset} | {len(t.holds)} | {len(t.fails)} | {len(t.inconclusive)} | "
                f"{len(t.missing)} | {len(t.not_run)} | {needed} |"
            )
    return lines


def only(sweep: Sweep, folders) -> Sweep:
    """``sweep`` restricted to the relations whose folders (:func:`slug`) are in ``folders``."""
    keep = set(folders)
    return replace(
        sweep,
        cells=[c for c in sweep.cells if c.relation in keep],
        shot_claims=[r for r in sweep.shot_claims if r.get("folder", r.get("relation")) in keep],
        unfinished=[r for r in sweep.unfinished if r in keep],
    )


def _known_range(cells: list[Cell]) -> str:
    known = [c.summary["n_known"] for c in cells if c.summary.get("n_known") is not None]
    return "none run yet" if not known else f"{min(known)}–{max(known)}" if min(known) != max(known) else str(known[0])


def split_numerical(relations) -> tuple[list[str], list[str]]:
    """The rendered relations' folders: (numerical ones, :data:`NUMERICAL`; categorical ones)."""
    folders = [slug(r) for r in relations]
    return [f for f in folders if f in NUMERICAL], [f for f in folders if f not in NUMERICAL]


def numerical_words(sweeps: list[Sweep], names: list[str], relations) -> str:
    """Every claim's verdicts counted together on the numerical relations and on the categorical ones, in one
    sentence ("" without both kinds)."""
    numerical, categorical = split_numerical(relations)
    if not numerical or not categorical:
        return ""
    across = across_shots(sweeps)
    words = []
    for kind, subset in (("numerical", numerical), ("categorical", categorical)):
        t = Tally()
        for name in names:
            for s in sweeps:
                got = tally(only(s, subset), name, name in across)
                for key in ("holds", "fails", "inconclusive", "missing", "not_run"):
                    getattr(t, key).extend(getattr(got, key))
        words.append(
            f"on the {kind} relations, of {t.measured} measured verdicts {len(t.holds)} hold, {len(t.fails)} do not "
            f"hold and {len(t.inconclusive)} are inconclusive; {len(t.missing)} are not measurable"
            + (f" and {len(t.not_run)} not run yet" if t.not_run else "")
        )
    return "In all claims: " + "; ".join(words) + "."


def numerical_section(sweeps: list[Sweep], names: list[str], relations) -> list[str]:
    """The paper's open question — do its mechanisms hold for numerical facts? — as the study answers it:
    per claim and model · preset, the four-way counts on the numerical relations (:data:`NUMERICAL`) beside
    those on the categorical ones. Empty when the rendered relations lack either kind."""
    numerical, categorical = split_numerical(relations)
    if not numerical or not categorical:
        return []
    num_cells = [c for s in sweeps for c in only(s, numerical).cells]
    metrics = sorted({c.summary.get("stages", {}).get("recall", {}).get("answer_metric_rule") for c in num_cells} - {None})
    lines = [
        "## Numerical facts against categorical ones",
        "",
        "The paper's mechanisms are shown on categorical facts; whether they hold for numerical ones is left open. "
        f"The study's numerical relations are {', '.join(numerical)} (years: several tokens on both models, so each "
        "is scored on the whole answer"
        + (f": {'; '.join(metrics)}" if metrics else "")
        + f"); the other {len(categorical)} relations are categorical. Known prompts per cell: numerical "
        f"{_known_range(num_cells)}, categorical {_known_range([c for s in sweeps for c in only(s, categorical).cells])}. "
        "Counts as in the summary above (`h · f · i · n`). The two kinds differ in size as much as in kind: few "
        "known prompts per numerical cell leave many of its verdicts inconclusive or not measurable, so a count "
        "here is not evidence that a mechanism is absent from numerical recall.",
        "",
        "| claim | model · preset | numerical | categorical |",
        "|---|---|---|---|",
    ]
    across = across_shots(sweeps)
    for name in names:
        for s in sweeps:
            num, cat = (tally(only(s, subset), name, name in across).short() for subset in (numerical, categorical))
            lines.append(f"| {label(name, names)} | {s.model} · {s.preset} | {num} | {cat} |")
    return [*lines, "", numerical_words(sweeps, names, relations), ""]


def figure(row) -> str:
    """The statistic that decided a claims row, with its interval (``decided_value``, ``decided_ci_*``: it is
    not always what ``value`` measures), else (a table without them) the primary ``value``."""
    if _g(row, "decided_value") is not None:
        return f"{num(_g(row, 'decided_value'))} {interval(_g(row, 'decided_ci_low'), _g(row, 'decided_ci_high'))}"
    return f"{num(_g(row, 'value'))} {interval(_g(row, 'ci_low'), _g(row, 'ci_high'))}"


def grid(sweep: Sweep, names: list[str], across: set[str]) -> list[str]:
    """One row per cell: known prompts, then each claim's verdict mark, the deciding statistic and its
    interval (:func:`figure`; and, when inconclusive, the prompts that would decide it)."""
    per_cell = [n for n in names if n not in across]
    lines = [
        "| relation | shots | known/prompts | subjects | " + " | ".join(label(n, names) for n in per_cell) + " |",
        "|---|---|---|---|" + "---|" * len(per_cell),
    ]
    for c in sweep.cells:
        parts = []
        for n in per_cell:
            if c.claims is None:
                parts.append("n/m" if c.summary.get("not_measurable") else "not run")
                continue
            rows = c.claims[c.claims["claim"] == n]
            if not len(rows):  # as in tally: its stage was not measurable here, or has not run in this cell yet
                parts.append("n/m" if stage_not_measurable(c, n) else "not run")
                continue
            row = rows.iloc[0]
            v = verdict_of(row)
            if v in DECIDED:
                text = f"{mark(v)} {figure(row)}"
                if v == INCONCLUSIVE and _g(row, "prompts_needed") is not None:
                    text += f" {needed_text(row, short=True)}"
                parts.append(text)
            else:
                parts.append("n/m")
        subjects = "—" if c.subjects is None else str(c.subjects)
        lines.append(f"| {c.relation} | {c.shots} | {c.known} | {subjects} | " + " | ".join(parts) + " |")
    return lines


DETAIL_COLUMNS = (
    "about",
    "value",
    "interval",
    "decided",
    "threshold",
    "margin",
    "flips_at",
    "verdict",
    "prompts_needed",
    "prompts_available",
    "rule",
    "detail",
)


def detail_table(sweep: Sweep, names: list[str]) -> list[str]:
    """Every claims row of every cell: the claims stage's columns (value, interval, the deciding condition's
    figure, threshold, margin, verdict, prompts needed, rule, …; those a table lacks are left out)."""
    sample = next((c.claims for c in sweep.cells if c.claims is not None), None)
    present = set() if sample is None else set(sample.columns) | {"interval"}
    if "decided_by" in present:
        present.add("decided")
    cols = [col for col in DETAIL_COLUMNS if col in present or col in ("value", "interval", "verdict")]
    lines = ["| relation | shots | claim | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]

    def row_line(rel, k, row):
        name = row.get("claim")
        out = []
        for col in cols:
            if col == "interval":
                out.append(interval(_g(row, "ci_low"), _g(row, "ci_high")))
            elif col == "decided":
                by = _g(row, "decided_by")
                out.append(
                    "—"
                    if by is None
                    else cell_text(
                        f"{by} = {num(_g(row, 'decided_value'))} "
                        f"{interval(_g(row, 'decided_ci_low'), _g(row, 'decided_ci_high'))}"
                    )
                )
            elif col in ("prompts_needed", "prompts_available"):
                out.append(prompts(_g(row, col)))
            elif col in ("value", "margin", "threshold", "flips_at"):
                out.append(num(_g(row, col)))
            else:
                value = _g(row, col)
                out.append(cell_text(num(value) if isinstance(value, float) else value if value is not None else ""))
        shown = label(name, names) if name in names else cell_text(name)
        return f"| {rel} | {k} | {shown} | " + " | ".join(out) + " |"

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


def attempts_of(out: Path, args) -> list[dict]:
    """The sweep attempts in ``<out>/study.json`` of the models, presets and relations rendered (a folder that
    also holds other sweeps, e.g. a try of another relation, does not add their time to this study's)."""
    rendered = {slug(r) for r in args.relations}
    return [
        a
        for a in read_record(out).get("attempts", [])
        if a.get("model") in args.models and a.get("preset") in args.presets and a.get("relation") in rendered
    ]


def provenance(out: Path, sweeps: list[Sweep], args) -> list[str]:
    attempts = attempts_of(out, args)
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
        lines += [
            f"Each model × preset × relation is one sweep over the shot counts (one model load) run by the script; "
            f"{run_time(out, args)}, on a machine whose cores may have been shared with other work "
            "(the load averages say how much; the times are not benchmarks). Exit 0: every stage of every cell "
            "ran; exit 3: the sweep finished but some stage was not measurable in some cell (its summary.json says "
            "why; rerunning does not change that); an attempt stopped by hand is not listed:",
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
                "the claims across shot counts (C6, C10, C11) of those relations are missing. `python scripts/study.py` "
                "resumes them (finished cells are reused)."
            )
    return lines


def duration(seconds: float) -> str:
    """ "42 min", "3.5 h"."""
    return f"{num(seconds / 60)} min" if seconds < 5400 else f"{num(seconds / 3600)} h"


def run_time(out: Path, args) -> str | None:
    """How long the study took: the wall time of every sweep attempt of the rendered sweeps
    (:func:`attempts_of`), in all and per model, the time of the failed ones among them, and the dates it ran
    between (None before the first attempt)."""
    attempts = attempts_of(out, args)
    if not attempts:
        return None
    per_model: dict[str, float] = {}
    for a in attempts:
        per_model[a["model"]] = per_model.get(a["model"], 0.0) + (a.get("wall_s") or 0)
    total = sum(per_model.values())
    models = ", ".join(f"{m} {duration(t)}" for m, t in per_model.items())
    failed = [a for a in attempts if a.get("returncode") not in OK_EXIT]
    return (
        f"{len(attempts)} sweep attempt(s) took {duration(total)} of wall time in all ({models}"
        + (f"; {len(failed)} attempt(s) failed, {duration(sum(a.get('wall_s') or 0 for a in failed))} of it" if failed else "")
        + f"), between {min(a['start'] for a in attempts)} and {max(a.get('end') or a['start'] for a in attempts)} (UTC)"
    )


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
    if args.stages != STAGES:
        parts += ["--stages", args.stages or ""]
    if tuple(args.settings) != STUDY_SETTINGS:
        parts += [a for setting in args.settings for a in ("--set", setting)]
    if args.out != OUT:
        parts += ["--out", args.out]
    return "python scripts/study.py " + shlex.join(parts)


def sample_sizes(sweeps: list[Sweep], args) -> str:
    known = [c.summary.get("n_known") for s in sweeps for c in s.cells if c.summary.get("n_known") is not None]
    text = (
        "Sample: every prompt of each relation (`--max-prompts all`: every template × subject prompt), seed 0"
        if str(args.max_prompts) == "all"
        else f"Sample: at most {args.max_prompts} prompts per cell (`--max-prompts {args.max_prompts}`: a seeded "
        "subsample of the relation's template × subject prompts), seed 0"
    ) + "; the stages after recall use the prompts the model knows (top-1 = answer)"
    if known:
        text += f", {min(known)} to {max(known)} per cell here (the `known/prompts` column)"
    if args.stages:
        text += f". Stages: `{args.stages}`"
    if args.settings:
        text += ". Every sweep also gets " + "; ".join(
            f"`--set {x}`" + (f" ({SETTING_WHY[x]})" if x in SETTING_WHY else "") for x in args.settings
        )
    return text + (
        ". Intervals are the claims stage's (95%: bootstrap over prompts, Clopper–Pearson for a share of prompts; "
        "`recallscope.claims`). They treat the known prompts as independent draws, but a relation's prompts are "
        "subjects × templates (paper_country_capital: 15 countries × 15 templates): where a cell's known prompts far "
        "outnumber its distinct subjects (the grids' `subjects` column), an interval that resampled subjects instead "
        "would be wider, and the prompts needed to decide a claim are in part more templates of the same subjects."
    )


def headline(sweeps: list[Sweep], names: list[str]) -> list[str]:
    """Plain words per claim: where it holds, from the tallies."""
    lines = []
    across = across_shots(sweeps)
    for name in names:
        lines.append(f"**{label(name, names)}. {cell_text(name)}.**")
        lines.append("")
        for s in sweeps:
            t = tally(s, name, name in across)
            flip = nearest_flip(s, name)
            lines.append(f"- {sentence(s, name, t)}" + (f" {flip}" if flip else ""))
        lines += ["", f"In short: {in_short(sweeps, name, names, across)}", ""]
    return lines


def in_short(sweeps: list[Sweep], name: str, names: list[str], across: set[str]) -> str:
    """One sentence per claim over the whole study: holds / does not hold / inconclusive in how many
    measured cells, per model, and the inconclusive ones' median prompts needed."""
    unit = "relation" if name in across else "cell"
    per_model: dict[str, Tally] = {}
    for s in sweeps:
        t = tally(s, name, name in across)
        m = per_model.setdefault(s.model, Tally(across=t.across))
        m.holds += t.holds
        m.fails += t.fails
        m.inconclusive += t.inconclusive
        m.needed += t.needed
        m.beyond += t.beyond
    every = Tally(
        needed=[n for t in per_model.values() for n in t.needed], beyond=[b for t in per_model.values() for b in t.beyond]
    )
    held, failed, open_ = (sum(len(getattr(t, k)) for t in per_model.values()) for k in ("holds", "fails", "inconclusive"))
    measured = held + failed + open_
    if not measured:
        return f"{label(name, names)} was measured in no {unit} yet."
    models = ", ".join(f"{model} {len(t.holds)} · {len(t.fails)} · {len(t.inconclusive)}" for model, t in per_model.items())
    text = (
        f"{label(name, names)}, of {_count(measured, 'measured ' + unit)}: holds in {held}, does not hold in {failed}, "
        f"inconclusive in {open_} ({models})"
    )
    if open_:
        median = every.median_needed()
        text += (
            f"; median ≈ {prompts(median)} known prompts would decide the inconclusive ones{every.beyond_text()}"
            if median is not None
            else "; no number of prompts decides the inconclusive ones at their estimates"
        )
    return text + "."


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
                if n in va and n in vb and {va[n], vb[n]} <= set(DECIDED):
                    compared += 1
                    if va[n] != vb[n]:
                        diffs.append(
                            f"{label(n, names)} on {a.relation} at {shots_text(a.shots)} "
                            f"({PRESETS[0]}: {va[n]}, {PRESETS[1]}: {vb[n]})"
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


# --------------------------------------------------------------------------- the 24-prompt study
def _md_cells(line: str) -> list[str]:
    """The cells of one markdown table row (pipes escaped as ``\\|`` stay inside a cell)."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def _md_number(text: str):
    return None if text in ("", "—", "–") else float(text)


def extract_baseline(markdown: str, commit: str, source: str = DOC) -> dict:
    """The per-cell verdicts of a docs/study.md rendered by this script, as data: its claim legend, the
    known/prompts of every cell (the per-cell grids) and every claims row (the "Every claims row"
    tables: value, interval, threshold, margin, flips_at, verdict as printed, 3 significant digits).
    ``commit``: the commit whose ``source`` this is, recorded in the result. A cell without a claims
    row is not measurable there (its grid says n/m)."""
    legend = dict(re.findall(r"^- \*\*(C\d+)\*\* — (.+)$", markdown, flags=re.M))
    sample = re.search(r"at most (\d+) prompts per cell", markdown)
    section = None
    sweep = None
    header: list[str] = []
    known: dict = {}
    rows: list[dict] = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            section, header = line[3:], []
            continue
        if line.startswith("### "):
            m = re.match(r"### (\S+) · (\S+) preset", line)
            sweep, header = (m.group(1), m.group(2)) if m else None, []
            continue
        if not line.startswith("|") or sweep is None or section is None:
            continue
        cells = _md_cells(line)
        if not header:
            header = cells
            continue
        if set(line) <= set("|-"):
            continue
        row = dict(zip(header, cells, strict=False))
        if section.startswith("Per cell"):
            k, n = row["known/prompts"].split("/") if "/" in row["known/prompts"] else (None, None)
            known[(*sweep, row["relation"], row["shots"])] = (int(k) if k else None, int(n) if n else None)
        elif section.startswith("Every claims row") and row.get("claim") in legend:
            lo, hi = (None, None)
            if row.get("interval", "—") not in ("—", ""):
                lo, hi = (float(x) for x in row["interval"].strip("[]").split(","))
            k, n = known.get((*sweep, row["relation"], row["shots"]), (None, None))
            rows.append(
                {
                    "model": sweep[0],
                    "preset": sweep[1],
                    "relation": row["relation"],
                    "shots": int(row["shots"]) if row["shots"].isdigit() else row["shots"],
                    "claim": legend[row["claim"]],
                    "label": row["claim"],
                    "value": _md_number(row.get("value", "")),
                    "ci_low": lo,
                    "ci_high": hi,
                    "threshold": _md_number(row.get("threshold", "")),
                    "margin": _md_number(row.get("margin", "")),
                    "flips_at": _md_number(row.get("flips_at", "")),
                    "verdict": row["verdict"],
                    "n_known": k,
                    "n_prompts": n,
                }
            )
    return {
        "source": {
            "file": source,
            "commit": commit,
            "note": "extracted by `python scripts/study.py --extract-baseline COMMIT` from the file at that commit "
            "(its run directories were not kept); figures as printed there (3 significant digits)",
        },
        "max_prompts": int(sample.group(1)) if sample else None,
        "claims": legend,
        "rows": rows,
    }


def load_baseline(path: str | None) -> dict | None:
    if not path:
        return None
    file = Path(path) if Path(path).is_absolute() else ROOT / path
    return json.loads(file.read_text(encoding="utf-8")) if file.exists() else None


def _key(model, preset, relation, shots, claim) -> tuple:
    return (model, preset, relation, str(shots), claim)


def current_verdicts(sweeps: list[Sweep]) -> dict:
    """(model, preset, relation, shots, claim) → the claims row (as a dict) of every measured or not-measurable
    claim of the study (the claims across shot counts, C6, C10 and C11, under shots "k0→k1")."""
    out = {}
    for s in sweeps:
        for c in s.cells:
            if c.claims is None:
                continue
            for _, row in c.claims.iterrows():
                out[_key(s.model, s.preset, c.relation, c.shots, row["claim"])] = row.to_dict()
        for row in s.shot_claims:
            out[_key(s.model, s.preset, row.get("relation"), f"{min(s.shots)}→{max(s.shots)}", row.get("claim"))] = row
    return out


SHIPPED_LRE = ROOT / "src" / "recallscope" / "tasks" / "lre"  # where ``lre/<name>`` relations live (torch-free to read)


def relation_aliases(relations) -> dict[str, str]:
    """Other names a relation had in an earlier study → its cell folder (:func:`slug`): the name inside an LRE
    file (``"plays pro sport"`` → ``plays_pro_sport``), under which the 24-prompt study's combined summaries
    listed the few-shot claim of ``person_plays_pro_sport``. Read from the file as JSON (no torch); a name that
    is some rendered relation's own folder is not an alias."""
    folders = {slug(r) for r in relations}
    out = {}
    for rel in relations:
        if rel.startswith("lre/"):
            path = SHIPPED_LRE / f"{rel[4:]}.json"
        elif rel.endswith(".json"):
            path = Path(rel) if Path(rel).is_absolute() else ROOT / rel
        else:
            continue  # a built-in relation: its name is its folder
        try:
            name = json.loads(path.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            continue
        alias = relation_slug(name) if isinstance(name, str) and name else None
        if alias and alias not in folders:
            out[alias] = slug(rel)
    return out


def changes(sweeps: list[Sweep], names: list[str], baseline: dict, relations=()) -> dict:
    """Every cell and claim of the baseline compared with this study: ``inconclusive`` (decided then,
    inconclusive now), ``flipped`` (holds ↔ does not hold), ``other`` (any other change: measurable
    now or no longer, decided now from inconclusive), ``same``, ``missing`` (not in this study's run
    directories: not run yet, or a claim since renamed); each a list of (baseline row, current row or None). Only
    the baseline's rows of the models, presets, shot counts and (when ``relations`` are given: the rendered
    ones, under their folder or an earlier name, :func:`relation_aliases`) relations in ``sweeps`` are compared:
    a small try is not told that the rest of the earlier study is missing."""
    now_rows = current_verdicts(sweeps)
    aliases = relation_aliases(relations)
    folders = {slug(r) for r in relations}
    studied = {(s.model, s.preset) for s in sweeps}
    shots = {str(k) for s in sweeps for k in s.shots} | {f"{min(s.shots)}→{max(s.shots)}" for s in sweeps}
    out: dict[str, list] = {"inconclusive": [], "flipped": [], "other": [], "same": [], "missing": []}
    for old in baseline.get("rows", []):
        if (old["model"], old["preset"]) not in studied or str(old["shots"]) not in shots:
            continue  # a model, preset or shot count this rendering leaves out
        relation = aliases.get(old["relation"], old["relation"])
        if folders and relation not in folders:
            continue
        new = now_rows.get(_key(old["model"], old["preset"], relation, old["shots"], old["claim"]))
        if new is None:
            out["missing"].append((old, None))
            continue
        a, b = old["verdict"], str(new.get("verdict"))
        kind = (
            "same"
            if a == b
            else "inconclusive"
            if b == INCONCLUSIVE and a in (HOLDS, FAILS)
            else "flipped"
            if {a, b} == {HOLDS, FAILS}
            else "other"
        )
        out[kind].append((old, new))
    return out


def _change_line(old: dict, new: dict | None, names: list[str]) -> str:
    shown = label(old["claim"], names) if old["claim"] in names else old.get("label", "?")
    shots = old["shots"] if isinstance(old["shots"], str) else shots_text(old["shots"])
    was = f"{old['verdict']} ({num(old.get('value'))} {interval(old.get('ci_low'), old.get('ci_high'))}"
    was += f", margin {num(old.get('margin'))}" + (f", {old['n_known']} known)" if old.get("n_known") is not None else ")")
    if new is None:
        return f"- {shown} · {old['model']} · {old['preset']} · {old['relation']} · {shots}: {was} → not in this study"
    now_text = f"{new.get('verdict')} ({num(_g(new, 'value'))} {interval(_g(new, 'ci_low'), _g(new, 'ci_high'))}"
    if _g(new, "decided_by") is not None and _g(new, "decided_value") is not None:
        now_text += f"; decided by {cell_text(_g(new, 'decided_by'))} = {figure(new)}"
    if _g(new, "prompts_needed") is not None:
        now_text += f"; {needed_text(new)}"
    if _g(new, "prompts_used") is not None:
        now_text += f"; {prompts(_g(new, 'prompts_used'))} used"
    return f"- {shown} · {old['model']} · {old['preset']} · {old['relation']} · {shots}: {was} → {now_text})"


def changes_summary(got: dict, baseline: dict) -> str:
    compared = sum(len(v) for k, v in got.items() if k != "missing")
    text = (
        f"Against the {baseline.get('max_prompts')}-prompt study ({BASELINE}, from docs/study.md at "
        f"{str(baseline['source']['commit'])[:12]}): of {compared} verdicts compared, {len(got['same'])} are unchanged, "
        f"{len(got['inconclusive'])} turned inconclusive, {len(got['flipped'])} flipped between holds and does not hold"
    )
    if got["flipped"]:
        up = sum(1 for old, _ in got["flipped"] if old["verdict"] == FAILS)
        text += f" ({up} to holds, {len(got['flipped']) - up} to does not hold)"
    text += f", {len(got['other'])} changed otherwise"
    if got["missing"]:
        text += f"; {_count(len(got['missing']), 'verdict')} of it not in this study's run directories"
    return text + "."


def changes_section(got: dict, baseline: dict, names: list[str]) -> list[str]:
    lines = [
        changes_summary(got, baseline),
        "",
        f"A change from does not hold to inconclusive is what the four verdicts are for: the "
        f"{baseline.get('max_prompts')}-prompt study called an interval that straddled its threshold *does not "
        "hold*. Each line: claim · model · preset · relation · shots: the verdict then (value [interval], margin, "
        "known prompts) → now.",
        "",
    ]
    for kind, title in (
        ("inconclusive", "Turned inconclusive"),
        ("flipped", "Flipped between holds and does not hold"),
        ("other", "Changed otherwise (measurable now or no longer, or decided now)"),
    ):
        if got[kind]:
            lines += [f"### {title} ({len(got[kind])})", ""]
            lines += [_change_line(old, new, names) for old, new in got[kind]]
            lines.append("")
    if got["missing"]:
        where = {}
        for old, _ in got["missing"]:
            where.setdefault(f"{old['model']} · {old['preset']}", set()).add(f"{old['relation']} at {old['shots']}")
        lines += [
            f"Not in this study's run directories yet ({_count(len(got['missing']), 'verdict')}): "
            + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in where.items())
            + ".",
            "",
        ]
    return lines


def render_doc(out: Path, sweeps: list[Sweep], args, baseline: dict | None = None) -> str:
    names = claim_names(sweeps)
    lines = [
        "# The paper's claims across models, relations, shot counts and presets",
        "",
        "Generated by `scripts/study.py` from the run directories it wrote — no figure here is typed by hand. "
        "Each row of a claims table is the claims stage's own output (`claims.parquet` of the cell's run "
        "directory; the claims across shot counts — C6, and C10 and C11 about what demonstrations change — compare "
        "the fewest and most shots of a relation and are in the sweep's "
        "`summary.json`). Presets: `recallscope` (the defaults) and `paper` (the definitions of the authors' released "
        "code, trestad/Factual-Recall-Mechanism, where recallscope's defaults differ: path patching with every head's "
        "queries, keys and values frozen to the clean run; the sender's dataset mean as their code takes it — the "
        "corrupted texts with the answer appended, right-padded, averaged at each absolute position and read at each "
        "clean prompt's end; their corruption draw (any subject of the relation, the clean one included); the ratio "
        "of means; every prompt patched, known or not; the first subject token; their demonstration format. What it cannot reproduce is listed "
        "under `not_reproduced` in each run's manifest; `recallscope.presets` gives each definition with the "
        "function of their code it follows).",
        "",
        f"Rendered {now()} at commit {_git('rev-parse', '--short=12', 'HEAD') or 'unknown'}.",
        "",
        sample_sizes(sweeps, args),
        "",
        coverage(sweeps) + (f" The study's {run_time(out, args)}." if run_time(out, args) else ""),
        "",
        "Verdicts (`recallscope.claims`): *holds* — every condition's interval on the passing side of its "
        "threshold; *does not hold* — some condition's interval wholly on the failing side; *inconclusive* — none "
        "fails but some interval straddles its threshold (too few prompts to decide either way; the row gives the "
        "known prompts that would decide it if the effect stayed as measured, interval width ∝ 1/√n); *not "
        "measurable here* — a stage lacked data.",
        "",
        "## Claims",
        "",
        *legend(names),
        "",
        "## Summary: the four verdicts per claim",
        "",
        f"Cells are relation × shot count; {COUNTS_KEY}; `not run` = the study has not reached the cell yet (rerun "
        "the command to resume). The claims across shot counts (C6, C10, C11) are one each "
        f"per relation ({min(args.shots)} vs {max(args.shots)} shots).",
        "",
        *summary_table(sweeps, names),
        "",
        *counts_table(sweeps, names),
        "",
    ]
    if baseline:
        lines += [
            f"## What changed against the {baseline.get('max_prompts')}-prompt study",
            "",
            *changes_section(changes(sweeps, names, baseline, args.relations), baseline, names),
        ]
    lines += numerical_section(sweeps, names, args.relations)
    lines += [
        "## Which claims hold where, in words",
        "",
        *headline(sweeps, names),
        "### recallscope's definitions vs the paper's",
        "",
        *preset_disagreements(sweeps, names),
        "",
        "## Per cell: verdict and the statistic that decided it [95% interval]",
        "",
        "✓ holds, ✗ does not hold, ? inconclusive (≈ the known prompts that would decide it; > M: more than the M its "
        "relation can give), n/m not measurable. The "
        "figure is the deciding condition's (the claims table's `decided_value`: not always the claim's primary "
        "`value`; the table below names it and shows both). `subjects`: the distinct subjects among the known "
        "prompts; the intervals resample prompts, so where prompts far outnumber subjects (many templates of few "
        "subjects) they are narrower than a subject-level interval would be.",
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


def render_readme_block(out: Path, sweeps: list[Sweep], args, baseline: dict | None = None) -> str:
    names = claim_names(sweeps)
    sample = "every prompt of each relation" if str(args.max_prompts) == "all" else f"at most {args.max_prompts} prompts per cell"
    took = run_time(out, args)
    lines = [
        BEGIN,
        "<!-- generated by scripts/study.py from the study's run directories: edit the script, not this block -->",
        "",
        f"Measured by `{study_command(args)}` on {', '.join(dict.fromkeys(s.model for s in sweeps))}: "
        f"{len(args.relations)} relations (the paper's task and LRE relations) × shots "
        f"{', '.join(str(k) for k in args.shots)} × presets {' and '.join(dict.fromkeys(s.preset for s in sweeps))}, "
        f"{sample}. The whole study — every value with its interval, "
        "margin and rule — is [docs/study.md](docs/study.md). " + coverage(sweeps) + (f" The study's {took}." if took else ""),
        "",
        *legend(names),
        "",
        f"Per claim and model · preset (cells: relation × shot count; {COUNTS_KEY}):",
        "",
        *summary_table(sweeps, names),
        "",
    ]
    across = across_shots(sweeps)
    lines += [f"- {in_short(sweeps, name, names, across)}" for name in names]
    numbers = numerical_words(sweeps, names, args.relations)
    if numbers:
        lines += [
            "",
            f"Numerical facts (years) against categorical ones — {numbers[0].lower()}{numbers[1:]} Per claim: docs/study.md.",
        ]
    if baseline:
        lines += ["", changes_summary(changes(sweeps, names, baseline, args.relations), baseline) + " Which ones: docs/study.md."]
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
    baseline = load_baseline(args.baseline)
    doc = ROOT / args.doc if not Path(args.doc).is_absolute() else Path(args.doc)
    atomic_write_text(doc, render_doc(out, sweeps, args, baseline))
    print(f"study: wrote {doc}", file=sys.stderr)
    if args.readme:
        readme = ROOT / args.readme if not Path(args.readme).is_absolute() else Path(args.readme)
        block = render_readme_block(out, sweeps, args, baseline)
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), block), encoding="utf-8")
        print(f"study: rewrote the study block of {readme}", file=sys.stderr)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--models", type=csv, default=list(MODELS))
    p.add_argument("--presets", type=csv, default=list(PRESETS))
    p.add_argument("--relations", type=csv, default=list(RELATIONS))
    p.add_argument("--shots", type=lambda s: [int(x) for x in csv(s)], default=list(SHOTS))
    p.add_argument("--max-prompts", type=max_prompts, default=MAX_PROMPTS, help="a number >= 1, or all (default: every prompt)")
    p.add_argument(
        "--stages", default=STAGES, help=f"comma-separated stages ('' for the run's default stages; default: {STAGES})"
    )
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
        "--baseline",
        default=BASELINE,
        help="the earlier study's per-cell verdicts to compare with ('' for none; a missing file is skipped)",
    )
    p.add_argument(
        "--extract-baseline",
        metavar="COMMIT",
        default=None,
        help="write --baseline from --doc as it was at COMMIT (git show), then stop",
    )
    p.add_argument(
        "--redo-claims",
        action="store_true",
        help="recompute every cell's claims stage (after a change to the claim rules); other stages are reused",
    )
    args = p.parse_args(argv)
    args.settings = list(STUDY_SETTINGS) if args.settings is None else args.settings
    return args


def max_prompts(text: str) -> int | str:
    """``--max-prompts``: "all" or a number >= 1."""
    if str(text).strip().lower() == "all":
        return "all"
    if not str(text).isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a number >= 1 or all, got {text!r}")
    return int(text)


def write_baseline(args) -> Path:
    """``--extract-baseline COMMIT``: the per-cell verdicts of ``--doc`` at COMMIT into ``--baseline``."""
    commit = _git("rev-parse", args.extract_baseline)
    if not commit:
        raise SystemExit(f"study: no commit {args.extract_baseline!r}")
    markdown = _git("show", f"{commit}:{args.doc}")
    if not markdown:
        raise SystemExit(f"study: {args.doc} does not exist at {commit}")
    data = extract_baseline(markdown, commit, args.doc)
    path = Path(args.baseline) if Path(args.baseline).is_absolute() else ROOT / args.baseline
    # one claims row per line: a reviewable diff, a file that greps by cell
    rows = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in data["rows"])
    head = json.dumps({k: v for k, v in data.items() if k != "rows"}, ensure_ascii=False, indent=1)[:-2]
    atomic_write_text(path, f'{head},\n "rows": [\n{rows}\n ]\n}}\n')
    print(f"study: wrote {path} ({len(data['rows'])} claims rows from {args.doc} at {commit[:12]})", file=sys.stderr)
    return path


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
    if args.extract_baseline:
        write_baseline(args)
        return 0
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
