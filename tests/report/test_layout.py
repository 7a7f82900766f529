"""The report of a real run, laid out by a real browser (headless Chromium) at 900, 1400 and 1920 px:
no text of any plot lies outside its figure, no subplot title overlaps another text, and the
verdicts fit the first screen.

The run is every stage the pipeline has (so every figure the report draws) — the default ones and
the opt-in ones (causal tracing with 2 noised samples per prompt instead of ROME's 10, to keep it
short: the figures' layout does not depend on it) — on 16 prompts of the embedded smollm2-135m; or
the run directory named by ``RECALLSCOPE_LAYOUT_RUN`` (e.g. ``make demo``'s ``runs/demo``), its
report drawn by this code; or a report.html as another version drew it, named by
``RECALLSCOPE_LAYOUT_REPORT`` and checked as it is (beside its run's summary.json). Nothing here
names a claim or a stage: a claim or a stage added later is laid out and checked too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.layout import ARGS, CHROMIUM, layout_problems

from recallscope.report import write_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_report(request, tmp_path_factory) -> Path:
    drawn = os.environ.get("RECALLSCOPE_LAYOUT_REPORT")
    if drawn:
        return Path(drawn)
    given = os.environ.get("RECALLSCOPE_LAYOUT_RUN")
    if given:
        return write_report(Path(given))
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from recallscope.pipeline import STAGES, RunConfig, execute

    out = tmp_path_factory.mktemp("layout") / "run"
    model = request.getfixturevalue("smollm2")  # loaded only when the test runs its own run
    execute(RunConfig(max_prompts=16), list(STAGES), out=str(out), overrides={"trace.n_samples": 2}, model=model, progress=False)
    return write_report(out)


def test_no_plot_text_outside_its_figure_and_no_overlapping_titles_at_900_and_1920_px(real_report):
    found = layout_problems(real_report, widths=(900, 1920))
    assert found == {900: [], 1920: []}, "\n".join(f"{w} px: {p}" for w, ps in found.items() for p in ps)


def test_the_verdicts_fit_the_first_screen_at_1400_px(real_report):
    """Identity, every claim (id, verdict, deciding statistic, conditions) within the first 900 px."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(real_report.resolve().as_uri(), wait_until="load")
            claims = page.evaluate(
                "Array.from(document.querySelectorAll('section.answer .claim')).map("
                "c => [c.querySelector('.cid').textContent, c.getBoundingClientRect().bottom])"
            )
            identity = page.evaluate("document.querySelector('ul.ident').getBoundingClientRect().bottom")
        finally:
            browser.close()
    rows = json.loads((real_report.parent / "summary.json").read_text(encoding="utf-8"))["stages"]["claims"]["claims"]
    # every row of the run's claims table has its block, each with an id of its own
    assert len(claims) == len(rows) >= 6 and len({cid for cid, _ in claims}) == len(claims) and all(c for c, _ in claims)
    assert identity < 150 and max(bottom for _, bottom in claims) <= 900, claims


def test_the_claims_tables_fit_their_box_at_1400_px(real_report):
    """A sweep's "claims across shot counts, in full" table was 1369 px wide in its 1272 px box at 1400 px:
    the rule column's text ran past the right edge ("top-10 head over…"), the scroll bar out of sight
    below the table. Every full claims table (the sweep's and each claims section's) now fits its box."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(real_report.resolve().as_uri(), wait_until="load")
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            widths = page.evaluate(
                "Array.from(document.querySelectorAll('table.claims')).map("
                "t => [t.closest('.scroll').clientWidth, t.scrollWidth, t.querySelectorAll('tbody tr').length])"
            )
        finally:
            browser.close()
    assert widths and all(rows for _, _, rows in widths), widths
    assert all(table <= box + 1 for box, table, _ in widths), widths
