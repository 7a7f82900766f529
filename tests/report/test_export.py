"""Figures as files: `recallscope report RUN_DIR --figures DIR --format png|svg|pdf` writes every figure
at a size where no text is clipped (checked by rendering each SVG in headless Chromium and measuring
every text element against the image), and save_figure does the same for one figure. kaleido drives
Debian's Chromium, hence the browser mark."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

import recallscope as rs
from recallscope.report import export

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# Text elements whose box leaves the SVG's box (1 px of rounding allowed): clipped in a PNG or PDF.
OUTSIDE = """() => {
  const svg = document.querySelector('svg'); const box = svg.getBoundingClientRect(); const out = [];
  for (const t of svg.querySelectorAll('text')) {
    const r = t.getBoundingClientRect();
    if (!t.textContent.trim() || (r.width === 0 && r.height === 0)) continue;
    if (r.left < box.left - 1 || r.top < box.top - 1 || r.right > box.right + 1 || r.bottom > box.bottom + 1)
      out.push(t.textContent.slice(0, 50));
  }
  return out;
}"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "recallscope", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(every_stage_study):
    """A run of every stage of the stage table (opt-in ones included: tests/conftest.py), so every figure the report draws is checked."""
    return Path(every_stage_study.path)


def clipped(svgs: list[Path]) -> dict[str, list[str]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        found = {}
        for svg in svgs:
            page.goto(svg.resolve().as_uri())
            found[svg.name] = page.evaluate(OUTSIDE)
        browser.close()
    return found


def expected_files(run_dir: Path) -> list[str]:
    study = rs.open(run_dir)
    return sorted(f"{stage}-{n}" for stage in study.stages for n in range(1, len(study[stage].figures()) + 1))


def test_report_figures_writes_every_figure_and_clips_no_text(run_dir, tmp_path):
    proc = cli("report", str(run_dir), "--figures", str(tmp_path / "svg"), "--format", "svg")
    assert proc.returncode == 0, proc.stderr
    svgs = sorted((tmp_path / "svg").glob("*.svg"))
    assert sorted(p.stem for p in svgs) == expected_files(run_dir) and len(svgs) >= 10
    assert f"figures: {len(svgs)} svg files" in proc.stderr
    assert clipped(svgs) == {p.name: [] for p in svgs}


def test_plotlys_default_size_clips_what_the_export_size_does_not(run_dir, tmp_path):
    """The check above can fail: the same figures written at plotly's default size (700 x 500) clip their titles."""
    study = rs.open(run_dir)
    fig = study["patch"].plot()
    fig.write_image(tmp_path / "default.svg")
    export.save_figure(fig, tmp_path / "export.svg")
    found = clipped([tmp_path / "default.svg", tmp_path / "export.svg"])
    assert found["default.svg"] and not found["export.svg"]


def test_png_and_pdf_have_the_export_size(run_dir, tmp_path):
    fig = rs.open(run_dir)["claims"].plot()
    _, width, height = export.prepared(fig)
    png = export.save_figure(fig, tmp_path / "claims.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (width, height)
    pdf = export.save_figure(fig, tmp_path / "claims.pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and len(pdf) > 1000


def test_bad_format_and_missing_exporter_are_one_line_errors(run_dir, tmp_path, monkeypatch):
    proc = cli("report", str(run_dir), "--figures", str(tmp_path), "--format", "jpg")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "recallscope: error: --format must be one of png, svg, pdf, got 'jpg'"
    ]
    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if the export extra were not installed
    with pytest.raises(rs.UserError, match=r"needs kaleido: pip install 'recallscope\[export\]'"):
        export.write_figures(run_dir, tmp_path, "png")
