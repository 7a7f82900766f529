"""What reaches the terminal: control characters escaped, data never parsed as Rich markup."""

from __future__ import annotations

import io
import json
import logging

from rich.console import Console

from recallscope.terminal import EscapingHandler, escape_controls, json_line, text

HOSTILE = "capitals [/draft] \x1b]0;x\x07"


def render(value) -> str:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=True, color_system=None).print(value)
    return out.getvalue()


def test_control_characters_are_shown_as_escapes():
    assert escape_controls(HOSTILE) == "capitals [/draft] \\x1b]0;x\\x07"
    # OSC 52 (write the clipboard), an 8-bit CSI, DEL, a bidi override, a line separator
    assert (
        escape_controls("\x1b]52;c;aGk=\x07 \x9b2J \x7f \u202eevil \u2028")
        == "\\x1b]52;c;aGk=\\x07 \\x9b2J \\x7f \\u202eevil \\u2028"
    )
    assert escape_controls("a\nb\tc") == "a\\x0ab\\x09c" and escape_controls("a\nb", keep_newlines=True) == "a\nb"
    # letters of any script, emoji and their joiners stay
    assert escape_controls("Zürich 東京 \U0001f469\u200d\U0001f467") == "Zürich 東京 \U0001f469\u200d\U0001f467"


def test_data_is_never_markup():
    """The reported cases: a[l,h] printed as "a", r[l] as "r", a JSON list dropped, [/draft] raised."""
    for s in ("a[l,h]", "r[l]", '"cv_converged": [true, true]', "capitals [/draft]", "[bold red]x[/]"):
        assert render(text(s)).rstrip("\n") == s
    assert "\x1b" not in render(text(HOSTILE)).replace("\x1b[", "")  # only Rich's own styling (none here)


def test_json_lines_escape_what_a_terminal_would_obey_and_stay_the_same_value():
    value = {"relation": HOSTILE + "\x9b\u202e é"}
    line = json_line(value)
    assert "\x1b" not in line and "\x9b" not in line and "\u202e" not in line and "é" in line
    assert json.loads(line) == value


def test_log_records_go_through_the_same_escape(caplog):
    out = io.StringIO()
    handler = EscapingHandler(Console(file=out, width=200, color_system=None))
    logger = logging.getLogger("recallscope.test_terminal")
    logger.addHandler(handler)
    try:
        logger.warning("report: %s is not valid JSON", HOSTILE)
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "report: capitals [/draft] \\x1b]0;x\\x07 is not valid JSON\n"
