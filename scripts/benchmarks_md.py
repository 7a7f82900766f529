"""Generate BENCHMARKS.md from the benchmark records in docs/bench/*.jsonl, and nothing else.

    python scripts/benchmarks_md.py            # writes BENCHMARKS.md
    python scripts/benchmarks_md.py --check    # exit 1 when BENCHMARKS.md is not what the records give

A record (``scripts/record_bench.py NAME -- recallscope bench ... --json``) is a header line
(``record``, ``command``, ``commit``, ``dirty``, ``date``, ``cpus``, ``load_before``), the
command's JSON lines verbatim, and a footer (``record_end``, ``returncode``, ``wall_s``,
``peak_rss_mb``, ``load_after``). Every figure in BENCHMARKS.md is read from those lines; the
explanations (what is measured and how, what a ratio compares, the arithmetic of each FLOP
ratio in words) are prose in ``scripts/benchmarks_md.md.j2``. A benchmark line of a kind the
template does not know is still shown, in a table of its scalar fields. ``tests/
test_benchmarks_md.py`` checks that the committed BENCHMARKS.md equals this script's output for
the committed records, so the file is never edited by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "bench"
OUTPUT = ROOT / "BENCHMARKS.md"
TEMPLATE = Path(__file__).resolve().with_name("benchmarks_md.md.j2")


@dataclass
class Record:
    name: str
    header: dict
    lines: list[dict]
    footer: dict | None  # None: the command did not finish writing (never the case for record_bench's files)
    path: str

    @property
    def load(self) -> str:
        after = (self.footer or {}).get("load_after")
        return f"{fmt(self.header.get('load_before'))} → {fmt(after)}"


@dataclass
class Section:
    """The lines of one benchmark kind (``bench``), each with the record it came from."""

    bench: str
    rows: list[tuple[Record, dict]] = field(default_factory=list)


def read_records(folder: Path) -> list[Record]:
    """Every ``*.jsonl`` record in ``folder``, sorted by name (ValueError: a file that is not a record)."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        rows = [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]
        if not rows or "record" not in rows[0]:
            raise ValueError(f"{path}: the first line is not a record header (scripts/record_bench.py writes one)")
        footer = rows[-1] if "record_end" in rows[-1] else None
        lines = rows[1:-1] if footer is not None else rows[1:]
        records.append(Record(rows[0]["record"], rows[0], lines, footer, f"docs/bench/{path.name}"))
    return records


def sections(records: list[Record]) -> dict[str, Section]:
    out: dict[str, Section] = {}
    for record in records:
        for line in record.lines:
            bench = str(line.get("bench", "unnamed"))
            out.setdefault(bench, Section(bench)).rows.append((record, line))
    return out


def fmt(value, digits: int = 4) -> str:
    """One figure as text: None → "—", floats to ``digits`` significant digits (small ones in e-notation)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e7:
            return f"{value:.1e}"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v, digits)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def scalar_keys(rows: list[tuple[Record, dict]]) -> list[str]:
    """The keys of the lines' short scalar fields, in first-seen order (for a kind the template does not know)."""
    keys: dict[str, None] = {}
    for _, line in rows:
        for key, value in line.items():
            if key == "bench" or isinstance(value, (dict, list)):
                continue
            if isinstance(value, str) and len(value) > 60:
                continue
            keys.setdefault(key)
    return list(keys)


MEMORY_TARGET_MB = 3e9 / 2**20  # issue 17: every benchmark command under 3 GB (decimal) = 2861 MiB


def memory_rows(records: list[Record]) -> list[dict]:
    """One row per benchmark line that carries a peak: ``process_mb`` (``bench_process_peak_rss_mb``,
    the benchmark process's own high-water mark since that benchmark began), ``child_mb`` (the
    line's ``peak_rss_gb`` in MiB: the child process it started), their maximum against
    :data:`MEMORY_TARGET_MB` (None where the line has no process mark: an older record)."""
    rows = []
    for record in records:
        for line in record.lines:
            process = line.get("bench_process_peak_rss_mb")
            child = line.get("peak_rss_gb")
            child = None if child is None else round(child * 1024, 1)
            if process is None and child is None:
                continue
            peak = max(v for v in (process, child) if v is not None)
            described = (line.get(key) for key in ("mode", "policy", "stage", "what", "axis", "value"))
            detail = ", ".join(str(x) for x in described if x is not None and len(str(x)) <= 40)
            rows.append(
                {
                    "record": record.name,
                    "bench": line.get("bench"),
                    "shots": line.get("shots"),
                    "detail": detail or None,
                    "process_mb": process,
                    "child_mb": child,
                    "peak_mb": peak,
                    # without the process's own mark the command's peak is not known line by line
                    "within": None if process is None else peak <= MEMORY_TARGET_MB,
                }
            )
    return rows


SMOKE_RECORDS = ("all_quick",)  # --quick runs: a smoke test of every benchmark, not a measurement to quote


def ratio_rows(records: list[Record]) -> list[dict]:
    """The top table: every engine-against-baseline line (a ``bench`` named ``…_vs_…``) of the records
    that measure (not the --quick smoke run), with its ratio (how many times faster than the baseline),
    its end-to-end ratio where the line has one, the float64 agreement where it checks one, and the
    load the record was measured under."""
    rows = []
    for record in records:
        if record.name in SMOKE_RECORDS:
            continue
        for line in record.lines:
            bench = str(line.get("bench", ""))
            if "_vs_" not in bench or line.get("ratio") is None:
                continue
            engine, baseline = bench.split("_vs_", 1)
            rows.append(
                {
                    "engine": engine.replace("_", " "),
                    "baseline": baseline.replace("_", " "),
                    "shots": line.get("shots"),
                    "ratio": line.get("ratio"),
                    "ratio_end_to_end": line.get("ratio_end_to_end"),
                    "max_abs_diff": line.get("max_abs_diff"),
                    "record": record.name,
                    "load": record.load,
                }
            )
    return rows


def render(folder: Path = RECORDS) -> str:
    records = read_records(folder)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        autoescape=False,  # Markdown, not HTML: fmt() escapes the table separator
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["json"] = lambda line: json.dumps(line, ensure_ascii=False)
    env.filters["pair"] = lambda key: (key, key)
    env.globals["scalar_keys"] = scalar_keys
    text = env.get_template(TEMPLATE.name).render(
        records=records,
        sections=sections(records),
        memory=memory_rows(records),
        memory_target_mb=MEMORY_TARGET_MB,
        ratios=ratio_rows(records),
    )
    # one blank line between blocks, one newline at the end
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when BENCHMARKS.md differs from the records' rendering")
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render(args.records)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output.name} is not what {args.records} gives: run python scripts/benchmarks_md.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} from {len(read_records(args.records))} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
