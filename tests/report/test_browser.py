"""The report in a real browser: headless Chromium (Debian's) opens report.html from disk.

Checks what only a browser can: no console or page errors, every plot drawn (a ``.main-svg`` in
each container), no script from the data ran (``window.__pwned`` stays undefined, no dialog
opened), nothing fetched from the network, and a screenshot that is not blank. With
``RECALLSCOPE_SCREENSHOT=path.png`` the screenshot is also saved there: of the run in
``RECALLSCOPE_REPORT_RUN`` when that names a run directory (the README's picture), else of the
hand-built hostile run.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recallscope.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB/RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def distinct_colours(data: bytes, step: int = 4) -> int:
    width, height, rows = png_pixels(data)
    bpp = len(rows[0]) // width
    seen = set()
    for row in rows[::step]:
        for x in range(0, width, step):
            seen.add(row[x * bpp:x * bpp + 3])
    return len(seen)


def test_png_reader_counts_colours():
    # A 2×2 RGB PNG, filter 0 and 1 rows: red, green / white, white.
    raw = b"\x00" + bytes([255, 0, 0, 0, 255, 0]) + b"\x01" + bytes([255, 255, 255, 0, 0, 0])
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    assert png_pixels(png)[2] == [bytes([255, 0, 0, 0, 255, 0]), bytes([255, 255, 255, 255, 255, 255])]
    assert distinct_colours(png, step=1) == 3


@dataclass
class Seen:
    """What the browser saw while it opened one report."""

    n_plots: int  # the page's own count (body[data-plots])
    containers: int  # <div class="plot"> elements
    drawn: int  # containers holding a .main-svg and marked rendered by the page's script
    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    dialogs: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    pwned: str = ""
    injected: int = 0
    screenshot: bytes = b""


def open_in_chromium(report: Path, screenshot: Path) -> Seen:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); CI installs it in .ci/run")
    from playwright.sync_api import sync_playwright

    console_errors, page_errors, dialogs, requests = [], [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load", timeout=20_000)
            page.wait_for_selector("body[data-plots-done]", timeout=20_000)
            seen = Seen(
                n_plots=int(page.evaluate("document.body.dataset.plots")),
                containers=page.locator("div.plot").count(),
                drawn=page.evaluate(
                    "Array.from(document.querySelectorAll('div.plot')).filter(d => d.querySelector('.main-svg')"
                    " && d.getAttribute('data-rendered') === '1').length"
                ),
                pwned=page.evaluate("typeof window.__pwned"),
                injected=page.evaluate("document.querySelectorAll('img, iframe, object, embed').length"),
            )
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    seen.console_errors, seen.page_errors, seen.dialogs = console_errors, page_errors, dialogs
    seen.requests = [u for u in requests if not u.startswith(("file:", "data:", "about:"))]
    seen.screenshot = screenshot.read_bytes()
    return seen


def assert_clean(seen: Seen) -> None:
    assert seen.console_errors == [] and seen.page_errors == [], (seen.console_errors, seen.page_errors)
    assert seen.n_plots > 0 and seen.containers == seen.n_plots and seen.drawn == seen.n_plots
    assert seen.pwned == "undefined" and seen.dialogs == [] and seen.injected == 0
    assert seen.requests == []  # nothing fetched: the page is self-contained
    assert distinct_colours(seen.screenshot) >= 20, "the screenshot is (nearly) blank"


def save_screenshot(seen: Seen) -> None:
    target = os.environ.get("RECALLSCOPE_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(seen.screenshot)


def test_hostile_report_in_headless_chromium(hostile_run, tmp_path):
    """Hand-built run full of markup, quotes, 5,000-character and bidi strings: nothing runs."""
    seen = open_in_chromium(write_report(hostile_run), tmp_path / "report.png")
    assert seen.n_plots == 3  # recall: 2, the hostile stage: 1
    assert_clean(seen)
    if not os.environ.get("RECALLSCOPE_REPORT_RUN"):
        save_screenshot(seen)


@pytest.mark.slow
def test_real_run_report_in_headless_chromium(smollm2, tmp_path):
    """A run of the real pipeline — the one in $RECALLSCOPE_REPORT_RUN (e.g. a finished
    ``recallscope run``; its screenshot is the README's), else a fresh recall on 20 prompts."""
    run_dir = os.environ.get("RECALLSCOPE_REPORT_RUN")
    if run_dir:
        run_dir = Path(run_dir)
    else:
        from recallscope.pipeline import RunConfig, execute

        run_dir = tmp_path / "run"
        execute(RunConfig(max_prompts=20), ["recall"], out=str(run_dir), model=smollm2, progress=False)
    seen = open_in_chromium(write_report(run_dir), tmp_path / "report.png")
    assert_clean(seen)
    if os.environ.get("RECALLSCOPE_REPORT_RUN"):
        save_screenshot(seen)


@pytest.mark.slow
def test_hostile_relation_through_every_stage_in_headless_chromium(smollm2, tmp_path, h):
    """Markup, quotes, a 300-character subject, bidi/zero-width/emoji subjects and answers through
    all seven real stages; the model knows some hostile answers, so they reach the later stages."""
    import json

    import pandas as pd

    from recallscope.pipeline import RunConfig, default_stages, execute

    samples = [
        ("France", "Paris" + h.SCRIPT), (h.SCRIPT, "Lisbon"), ('"</div><b>', "Vienna"),
        ("Japan", 'Tokyo"</div><img src=x onerror=alert(1)>'), ("S" * 300, "Madrid"), (h.RTL, "Dublin"),
        ("Ger\u200bmany", "Bern"), ("Egypt \U0001F3FA", "Cairo \U0001F42A"), ("Russia", "Moscow" + h.END_SCRIPT),
        ("China", "Beijing"), ("Germany", "Berlin"), ("Canada", "Ottawa"), ("India", "New Delhi"),
        ("Greece", "Athens"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"), ("Norway", "Oslo"), ("Kenya", "Nairobi"),
    ]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({
        "name": "capital " + h.SCRIPT, "prompt_templates": ["The capital of {} is"],
        "samples": [{"subject": s, "object": o} for s, o in samples],
    }, ensure_ascii=False), encoding="utf-8")
    run_dir = tmp_path / "run"
    ctx, summary = execute(RunConfig(relation=str(path)), default_stages(), out=str(run_dir), model=smollm2, progress=False)
    assert set(summary["stages"]) == set(default_stages()) == {
        "recall", "patch", "movers", "decompose", "intercept", "suppress", "onset", "claims"}
    recall = pd.read_parquet(run_dir / "recall.parquet")
    assert list(recall["subject"]) == [s for s, _ in samples]  # every hostile subject kept, byte for byte
    known = set(recall.loc[recall["known"], "answer"])
    assert {"Paris" + h.SCRIPT, "Moscow" + h.END_SCRIPT} <= known and len(known) >= 8  # enough for 4-fold CV

    page_path = write_report(run_dir)
    page = page_path.read_text(encoding="utf-8")
    for raw in (h.SCRIPT, '"</div><b>', "<img src=x", h.END_SCRIPT):
        assert raw not in page, raw
    seen = open_in_chromium(page_path, tmp_path / "report.png")
    assert_clean(seen)  # no script from the data ran, no dialog, no injected element, plots drawn
    assert seen.n_plots >= 7

    # result.plot() is one type everywhere, and it is the figure the report redrew from the run
    # directory's files: the first plot of the stage's section, trace for trace.
    import plotly.graph_objects as go

    firsts = {}
    for anchor, name in re.findall(r'<a href="#(stage-\d+)">([a-z_]+)</a>', page.split('<nav class="top">', 1)[1].split("</nav>", 1)[0]):
        section = page.split(f'<section class="stage" id="{anchor}">', 1)[1].split("</section>", 1)[0]
        block = re.search(r'<script type="application/json" id="plot-\d+-json">(.*?)</script>', section, flags=re.S)
        firsts[name] = json.loads(block.group(1))
    assert set(firsts) == set(default_stages())
    for name in default_stages():
        fig = ctx.results[name].plot()
        assert isinstance(fig, go.Figure), name
        assert json.loads(fig.to_json())["data"] == firsts[name]["data"], name
