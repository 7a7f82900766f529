"""Compare two run directories table by table: are the results the same?

    python scripts/compare_runs.py RUN_A RUN_B [--json]

For every table both runs wrote (``<stage>.parquet``, ``<stage>/<name>.parquet``): the row counts,
the largest absolute difference of every numeric column (rows in file order; the tables are
written in a deterministic order) and the number of differing cells of every other column; then
every numeric leaf of summary.json with the timings left out (``rundir.without_timings``). A table
or column present in one run only is listed. Exit code 0 always: the figures are the answer.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recallscope.rundir import without_timings


def tables(run: Path) -> dict[str, Path]:
    out = {p.stem: p for p in run.glob("*.parquet")}
    out.update({f"{p.parent.name}/{p.stem}": p for p in run.glob("*/*.parquet")})
    return out


def compare_frames(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    out: dict = {"rows": [len(a), len(b)]}
    if len(a) != len(b):
        return out
    cols = {}
    for col in sorted(set(a.columns) | set(b.columns)):
        if col not in a.columns or col not in b.columns:
            cols[col] = "only in " + ("b" if col not in a.columns else "a")
            continue
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(x):
            xv = x.to_numpy(dtype=float, na_value=np.nan)
            yv = y.to_numpy(dtype=float, na_value=np.nan)
            nan_differs = int((np.isnan(xv) != np.isnan(yv)).sum())
            both = ~np.isnan(xv) & ~np.isnan(yv)
            diff = float(np.max(np.abs(xv[both] - yv[both]))) if both.any() else 0.0
            cols[col] = {"max_abs_diff": diff, "nan_differs": nan_differs}
        else:
            cols[col] = {"differing_cells": int((x.astype(str).to_numpy() != y.astype(str).to_numpy()).sum())}
    out["columns"] = cols
    return out


def leaves(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def compare_summaries(a: dict, b: dict) -> dict:
    la, lb = dict(leaves(without_timings(a))), dict(leaves(without_timings(b)))
    numeric, other = {}, []
    for key in sorted(set(la) | set(lb)):
        x, y = la.get(key), lb.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if not (isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y)):
                numeric[key] = abs(float(x) - float(y))
        elif x != y:
            other.append(key)
    worst = sorted(numeric.items(), key=lambda kv: -kv[1])[:10]
    return {"max_abs_diff": worst[0][1] if worst else 0.0, "largest": worst, "non_numeric_differences": other}


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    paths = [Path(a) for a in argv if a != "--json"]
    if len(paths) != 2:
        print("usage: python scripts/compare_runs.py RUN_A RUN_B [--json]", file=sys.stderr)
        return 2
    a, b = paths
    ta, tb = tables(a), tables(b)
    report = {"only_in_a": sorted(set(ta) - set(tb)), "only_in_b": sorted(set(tb) - set(ta)), "tables": {}}
    for name in sorted(set(ta) & set(tb)):
        report["tables"][name] = compare_frames(pd.read_parquet(ta[name]), pd.read_parquet(tb[name]))
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    report["summary"] = compare_summaries(sa, sb)
    if as_json:
        print(json.dumps(report))
        return 0
    for name, r in report["tables"].items():
        cols = r.get("columns", {})
        nums = {c: v["max_abs_diff"] for c, v in cols.items() if isinstance(v, dict) and "max_abs_diff" in v}
        other = {c: v for c, v in cols.items() if not (isinstance(v, dict) and "max_abs_diff" in v)}
        worst = max(nums.items(), key=lambda kv: kv[1]) if nums else ("-", 0.0)
        bad = {c: v for c, v in other.items() if v != {"differing_cells": 0}}
        print(
            f"{name:28s} rows {r['rows'][0]}/{r['rows'][1]}  max |diff| {worst[1]:.3g} ({worst[0]})"
            + (f"  other columns differing: {bad}" if bad else "")
        )
    print(
        f"summary.json: max |diff| {report['summary']['max_abs_diff']:.3g}; largest {report['summary']['largest'][:3]}; "
        f"non-numeric differences {report['summary']['non_numeric_differences'][:10]}"
    )
    if report["only_in_a"] or report["only_in_b"]:
        print(f"only in {a}: {report['only_in_a']}; only in {b}: {report['only_in_b']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
