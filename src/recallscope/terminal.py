"""What reaches the terminal: every string from a relation file, a model config or a run directory
goes through here first.

Two dangers, one helper each, used by every print path of the CLI (tables, notes, errors, the run
layer's log lines, the package's log records):

- **Control characters** (C0 such as ESC ``\\x1b`` and BEL ``\\x07``, DEL, the C1 range whose
  ``\\x9b`` is an 8-bit CSI, and the Unicode bidi/format controls such as U+202E) would be
  interpreted by the terminal: an OSC 0 sequence retitles the window, OSC 52 writes the
  clipboard, a CSI moves the cursor or recolours what follows. :func:`escape_controls` writes each
  as a visible escape (``\\x1b``, ``\\u202e``), so the name is shown, never obeyed.
- **Rich markup**: a string passed to ``Console.print`` is parsed as markup, so ``a[l,h]`` prints as
  ``a``, ``"cv_converged": [true, true]`` loses its list and ``capitals [/draft]`` raises a
  ``MarkupError``. :func:`text` returns a :class:`rich.text.Text`, which Rich never parses.

:func:`json_line` does the same for ``--json``: ``json.dumps`` escapes C0 controls itself but,
with ``ensure_ascii=False``, writes DEL, C1 and bidi controls raw.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from rich.text import Text

# C0 (but tab and newline are decided by the caller), DEL, C1, and the Unicode format characters that
# reorder or hide text (bidi embeddings/overrides/isolates and marks, the zero-width space, word
# joiners, BOM, line and paragraph separators). The zero-width (non-)joiner stays: scripts and emoji need it.
_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
_NEWLINES = re.compile("[\t\n]")
_C0_C1 = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(value: Any, keep_newlines: bool = False, keep_format: bool = False) -> str:
    """``str(value)`` with every control and invisible format character written as an escape
    (``"\\x1b"``, ``"\\u202e"``); tab and newline too unless ``keep_newlines`` (a multi-line message).
    ``keep_format`` escapes the C0, DEL and C1 controls only: the HTML report isolates bidi text in
    ``<bdi>`` and shows the format characters as a browser does, but a browser drops the controls,
    so without their escapes the report would show a name other than the file's."""
    s = (_C0_C1 if keep_format else _CONTROLS).sub(_escape, str(value))
    return s if keep_newlines else _NEWLINES.sub(_escape, s)


def text(value: Any, style: str | None = None, keep_newlines: bool = False) -> Text:
    """``value`` as Rich text that is never parsed as markup, its control characters escaped."""
    return Text(escape_controls(value, keep_newlines=keep_newlines), style=style or "")


def json_line(value: Any) -> str:
    """One JSON object as a line for stdout: ``json.dumps(ensure_ascii=False)`` (non-ASCII letters
    stay readable), with the characters it leaves raw that a terminal interprets (DEL, C1, bidi and
    format controls) written as JSON ``\\uXXXX`` escapes — the same value to any JSON reader."""
    raw = json.dumps(value, ensure_ascii=False)
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", raw) + "\n"


class EscapingHandler(logging.Handler):
    """A logging handler that prints each record's message through :func:`text` on ``console``
    (the package's log records carry data: a figure's error message, a file name)."""

    def __init__(self, console, style: str = "dim") -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.style = style

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(text(record.getMessage(), self.style, keep_newlines=True), soft_wrap=True)
        except Exception:  # a handler must never raise into the code that logged
            self.handleError(record)


__all__ = ["EscapingHandler", "escape_controls", "json_line", "text"]
