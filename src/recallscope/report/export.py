"""Figures as files: PNG, SVG or PDF, at a size where no title, label or legend is clipped.

``recallscope report RUN_DIR --figures DIR --format png|svg|pdf`` writes every figure the report
draws (:mod:`recallscope.figures`, the same as each result's ``.plot()``) into ``DIR``, one file
per figure: ``<stage>-<n>.<format>``, under ``<relation>/<k>shot/`` for a sweep's cells. From
Python, :func:`save_figure` writes one figure the same way::

    from recallscope.report.export import save_figure
    save_figure(study["patch"].plot(), "patch.png")

(``fig.write_image(path)`` works too, at plotly's default 700 × 500 px, which clips long titles.)

Export needs the ``export`` extra (``pip install 'recallscope[export]'``: kaleido >= 1), which
drives a Chrome or Chromium found on the machine (Debian: ``apt-get install chromium``). The size:
plotly does not wrap titles, so the width is at least what the longest title or axis title needs
at its font size (0.6 em per character, a generous average for plotly's default fonts), and never
below :data:`MIN_WIDTH`; every axis and the title take the margin they need (``automargin``).
No torch: figures are drawn from the run directory's files.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..study import Study, Sweep, open_run

FORMATS = ("png", "svg", "pdf")
MIN_WIDTH = 1100  # px: the report's narrowest two-column layout holds figures about this wide
MIN_HEIGHT = 560  # px
EM_PER_CHARACTER = 0.6  # average glyph width of plotly's default sans-serif, in em (a generous bound)


def _text_width(text: str, font_size: float) -> float:
    longest = max((len(line) for line in str(text).replace("<br>", "\n").split("\n")), default=0)
    return longest * EM_PER_CHARACTER * font_size


def prepared(fig) -> tuple[Any, int, int]:
    """(a copy of ``fig`` with automargins on, width, height) so that nothing is clipped when written."""
    fig = copy.deepcopy(fig)
    layout = fig.layout
    base = (layout.font.size if layout.font and layout.font.size else None) or 12
    title = layout.title.text if layout.title and layout.title.text else ""
    title_size = (layout.title.font.size if layout.title.font and layout.title.font.size else None) or base * 17 / 12
    needed = _text_width(title, title_size) + 120
    # the title's top inside the image (plotly's default puts its bounding box a few px above it),
    # and the plot pushed down as far as the title needs
    fig.update_layout(title_automargin=True, title_yref="container", title_y=0.985, title_yanchor="top")
    for axis in [*fig.select_xaxes(), *fig.select_yaxes()]:
        axis.automargin = True
        if axis.title and axis.title.text:
            needed = max(needed, _text_width(axis.title.text, base * 14 / 12) + 200)
    for note in layout.annotations or ():  # subplot titles sit above their panels, side by side
        if note.text:
            needed = max(
                needed, _text_width(note.text, (note.font.size if note.font and note.font.size else None) or base * 16 / 12) * 2.4
            )
    width = int(max(layout.width or 0, MIN_WIDTH, math.ceil(needed)))
    height = int(max(layout.height or 0, MIN_HEIGHT))
    fig.update_layout(width=width, height=height)
    return fig, width, height


def check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _write(figures: list, paths: list[Path], fmt: str) -> None:
    """Write the figures with one browser session (plotly.io.write_images); one line on failure."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise UserError("figure export needs kaleido: pip install 'recallscope[export]'") from None
    import plotly.io as pio

    ready = [prepared(f) for f in figures]
    try:
        pio.write_images(
            [f for f, _, _ in ready],
            [str(p) for p in paths],
            format=fmt,
            width=[w for _, w, _ in ready],
            height=[h for _, _, h in ready],
        )
    except Exception as exc:  # noqa: BLE001 - kaleido's errors (no Chrome found, …): one line that says what to do
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"figure export failed ({type(exc).__name__}: {first}); kaleido needs Chrome or Chromium (apt-get install chromium)"
        ) from exc


def save_figure(fig, path: str | Path, format: str | None = None) -> Path:
    """Write one plotly figure to ``path`` (format from ``format`` or the suffix: png, svg, pdf) at a size
    where nothing is clipped (:func:`prepared`). Returns the path. UserError without kaleido or a browser."""
    path = Path(path)
    fmt = check_format(format or path.suffix or "png")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write([fig], [path], fmt)
    return path


def write_figures(run_dir: str | Path, out_dir: str | Path, format: str = "png") -> list[Path]:
    """Every figure of the run directory ``run_dir`` (a study or a sweep's parent) as files in ``out_dir``:
    ``<stage>-<n>.<format>`` (n from 1, in the report's order), a sweep's cells under ``<relation>/<k>shot/``.
    Returns the paths written. UserError for a bad format, a directory without a finished run, or no exporter."""
    fmt = check_format(format)
    opened = open_run(run_dir)
    cells: list[tuple[Path, Study]] = (
        [(Path(rel) / f"{k}shot", study) for (rel, k), study in opened.cells.items()]
        if isinstance(opened, Sweep)
        else [(Path(), opened)]
    )
    figures, paths = [], []
    for folder, study in cells:
        for stage in study.stages:
            try:
                made = study[stage].figures()
            except KeyError:  # a stage recorded without tables (not measurable here)
                continue
            for n, fig in enumerate(made, start=1):
                figures.append(fig)
                paths.append(Path(out_dir) / folder / f"{stage}-{n}.{fmt}")
    if not figures:
        raise UserError(f"{run_dir}: no figure to write (no stage with figures has finished)")
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    _write(figures, paths, fmt)
    return paths
