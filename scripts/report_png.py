"""Regenerate docs/report.png, the README's picture, from ``make demo``'s run directory.

    make demo && python scripts/report_png.py            # runs/demo -> docs/report.png
    python scripts/report_png.py RUN_DIR --out PATH.png  # another run, another file

Re-renders the run's report.html with the installed recallscope (so the picture shows the report
as the code draws it today), checks its layout at 900 and 1920 px as tests/report/test_layout.py
does, opens it in headless Chromium (Debian's /usr/bin/chromium, through Playwright) at 1400 x
900 px and saves the first screen: the run's identity and its claims. Refuses
a run that is not ``make demo``'s (another model, relation, shot count, sample or seed), so the
picture never shows what ``make demo`` no longer produces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # helpers.layout: the browser checks the layout test makes
# `make demo` = recallscope run --model smollm2-135m --relation country_capital_extended --shots 0 (seed 0, 32 prompts)
DEMO = {
    "model": "smollm2-135m",
    "relation": "country_capital_extended",
    "shots": 0,
    "seed": 0,
    "max_prompts": 32,
    "preset": "recallscope",
}
VIEWPORT = {"width": 1400, "height": 900}


def check_demo(run: Path) -> None:
    """SystemExit (one line) unless ``run`` is a finished ``make demo`` run."""
    manifest = run / "manifest.json"
    if not (run / "summary.json").is_file() or not manifest.is_file():
        sys.exit(f"report_png: {run} holds no finished run; run `make demo` first")
    identity = json.loads(manifest.read_text(encoding="utf-8")).get("identity") or {}
    differ = {k: identity.get(k) for k, v in DEMO.items() if identity.get(k) != v}
    if differ:
        sys.exit(f"report_png: {run} is not make demo's run ({', '.join(f'{k}={v!r}' for k, v in differ.items())})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default=str(ROOT / "runs" / "demo"), help="make demo's run directory")
    parser.add_argument("--out", default=str(ROOT / "docs" / "report.png"))
    args = parser.parse_args(argv)
    run = Path(args.run)
    check_demo(run)
    from recallscope.report import write_report

    from helpers.layout import CHROMIUM, layout_problems, screenshot

    if not CHROMIUM.is_file():
        sys.exit(f"report_png: {CHROMIUM} is missing (apt-get install -y chromium)")
    report = write_report(run)
    problems = [f"{w} px: {p}" for w, found in layout_problems(report, widths=(900, 1920)).items() for p in found]
    if problems:  # the picture must not show a report the layout test would fail
        sys.exit("report_png: the report's layout has problems:\n" + "\n".join(problems))
    screenshot(report, Path(args.out), **VIEWPORT)
    print(f"report_png: {args.out} from {report}")


if __name__ == "__main__":
    main()
