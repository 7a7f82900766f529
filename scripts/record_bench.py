"""Run one ``recallscope bench`` command and keep its JSON lines, with the command that made them.

    python scripts/record_bench.py NAME -- recallscope bench patch --mode path --shots 0,3 --json

writes ``docs/bench/NAME.jsonl``: a header line (``record``, ``command``, ``commit``, ``dirty`` (code changed
since the commit; the records and BENCHMARKS.md do not count),
``date``, ``cpus`` usable by this process, ``load_before``: the 1-minute load average when it
started, so a contended measurement is visible), then every JSON line the command printed on
stdout, verbatim, then a footer line (``record_end``, ``wall_s``, ``peak_rss_mb``: the largest
resident set of the command or any process it waited for, ``load_after``, ``returncode``).
BENCHMARKS.md is generated from these files; nothing in it is typed by hand.

The command's stderr passes through. A non-zero exit keeps the file (with the return code in the
footer) and exits with the same code, so a failed measurement is never mistaken for one that ran.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench"
NOT_CODE = (":!docs/bench", ":!BENCHMARKS.md")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].replace("-", "").replace("_", "").isalnum():
        print("usage: python scripts/record_bench.py NAME -- recallscope bench ... --json", file=sys.stderr)
        return 2
    name, command = argv[0], argv[2:]
    if command[0] == "recallscope":  # run the checkout's CLI with this interpreter
        command = [sys.executable, "-m", "recallscope", *command[1:]]
    header = {
        "record": name,
        "command": shlex.join(["recallscope", *command[3:]] if command[1:3] == ["-m", "recallscope"] else command),
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        # The records and the page made from them are outputs, not code: changing them is not dirty.
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": len(os.sched_getaffinity(0)),
        "load_before": round(os.getloadavg()[0], 2),
    }
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    assert process.stdout is not None
    for raw in process.stdout:
        raw = raw.strip()
        if not raw:
            continue
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            print(raw, file=sys.stderr)  # not a bench line: shown, not recorded
    returncode = process.wait()
    footer = {
        "record_end": name,
        "returncode": returncode,
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "load_after": round(os.getloadavg()[0], 2),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in (header, *lines, footer)))
    print(f"wrote {path.relative_to(ROOT)} ({len(lines)} lines, exit {returncode})", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
