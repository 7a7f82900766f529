"""What a browser shows of a report's plots, measured: every SVG text element of every plot must lie
inside its plot's box (plotly does not wrap: a title or label that does not fit runs past the
figure's edge, where the page clips it), and no annotation of a plot (subplot titles, row titles,
line labels) may overlap another one or any other text of that plot (a tick label, an axis title).

Used by ``tests/report/test_layout.py`` and ``scripts/report_png.py``; it needs Playwright and
Debian's Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

# For each drawn plot: its caption, the texts that lie outside its box (by more than half a pixel),
# and the pairs of its annotations whose boxes intersect.
MEASURE = """
() => {
  const problems = [];
  const inside = (r, box) => r.left >= box.left - 0.5 && r.right <= box.right + 0.5
                             && r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5;
  const meets = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  for (const div of document.querySelectorAll('div.plot')) {
    const box = div.getBoundingClientRect();
    const fig = div.closest('figure');
    const caption = (fig && fig.querySelector('figcaption') ? fig.querySelector('figcaption').textContent : div.id).slice(0, 90);
    for (const t of div.querySelectorAll('svg text')) {
      const s = t.textContent.trim();
      if (!s || t.closest('.hoverlayer')) continue;
      const r = t.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (!inside(r, box)) {
        problems.push(`${caption}: "${s.slice(0, 60)}" lies outside its figure `
          + `(text ${Math.round(r.left - box.left)}..${Math.round(r.right - box.left)} x `
          + `${Math.round(r.top - box.top)}..${Math.round(r.bottom - box.top)} in a ${Math.round(box.width)} x ${Math.round(box.height)} plot)`);
      }
    }
    const notes = Array.from(div.querySelectorAll('g.annotation-text-g text')).filter(t => t.textContent.trim());
    const others = Array.from(div.querySelectorAll('svg text')).filter(
      t => t.textContent.trim() && !t.closest('.hoverlayer') && !t.closest('g.annotation-text-g') && !t.closest('.legend'));
    for (let i = 0; i < notes.length; i++) {
      const a = notes[i].getBoundingClientRect();
      for (let j = i + 1; j < notes.length; j++) {
        if (meets(a, notes[j].getBoundingClientRect())) {
          problems.push(`${caption}: titles "${notes[i].textContent.slice(0, 40)}" and "${notes[j].textContent.slice(0, 40)}" overlap`);
        }
      }
      for (const o of others) {
        if (meets(a, o.getBoundingClientRect())) {
          problems.push(`${caption}: title "${notes[i].textContent.slice(0, 40)}" overlaps the label "${o.textContent.slice(0, 40)}"`);
        }
      }
    }
  }
  return problems;
}
"""


def layout_problems(report: Path, widths: tuple[int, ...] = (900, 1920), height: int = 900) -> dict[int, list[str]]:
    """Open ``report`` in headless Chromium at each width and return, per width, every text of a
    plot that lies outside its figure and every pair of overlapping annotations (empty lists: none).

    Raises AssertionError when the page logs an error or its plots do not finish drawing."""
    from playwright.sync_api import sync_playwright

    found: dict[int, list[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for width in widths:
                page = browser.new_page(viewport={"width": width, "height": height})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(report.resolve().as_uri(), wait_until="load", timeout=120_000)
                page.wait_for_selector("body[data-plots-done]", timeout=120_000)
                assert errors == [], errors
                found[width] = page.evaluate(MEASURE)
                page.close()
        finally:
            browser.close()
    return found


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 900) -> None:
    """Save the first screen (``width`` × ``height`` px) of ``report`` drawn by headless Chromium to ``out``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(report.resolve().as_uri(), wait_until="load", timeout=120_000)
            page.wait_for_selector("body[data-plots-done]", timeout=120_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            browser.close()
