"""The report says which preset ran and lists the definitions it selected (from summary.json)."""

from __future__ import annotations

import json
import re
from html import unescape

from conftest import write_run  # noqa: E402  (tests/report is on sys.path)

from recallscope import presets
from recallscope.report import render_report


def with_preset(path, preset: dict | None):
    write_run(path)
    summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    if preset is not None:
        summary["preset"] = preset
    (path / "summary.json").write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
    return path


def block(page: str) -> str:
    found = re.search(r'<div class="preset" id="preset">(.*?)</div>\n(?!</details>)', page, re.S)
    assert found, "no preset block"
    return found.group(1)


def cells(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    return [[unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", r, re.S)] for r in rows]


def test_the_paper_preset_and_each_of_its_definitions_are_in_the_report(tmp_path):
    page = render_report(with_preset(tmp_path / "run", presets.PAPER.to_dict()))
    html = block(page)
    assert re.search(r'<span class="k">preset</span><strong>paper</strong>', html)
    assert unescape(presets.PAPER.description) in unescape(html)
    rows = cells(html)
    assert rows[0][:3] == ["setting", "value", "recallscope's default"]
    expected = [[d.setting, str(d.value), str(d.default), d.description, d.source] for d in presets.PAPER.definitions]
    assert rows[1:] == expected and len(expected) == 9
    assert ["patch.aggregate", "ratio_of_means", "mean_of_ratios"] in [row[:3] for row in rows[1:]]
    assert f"{len(expected)} definitions it selects" in html
    # and what it cannot reproduce, each item as the manifest records it
    assert f"what it cannot reproduce ({len(presets.PAPER.not_reproduced)})" in html
    items = [unescape(i) for i in re.findall(r"<li>(.*?)</li>", html, re.S)]
    assert items == list(presets.PAPER.not_reproduced) and len(items) == 4


def test_the_default_preset_says_nothing_differs_and_old_runs_have_no_block(tmp_path):
    html = block(render_report(with_preset(tmp_path / "a", presets.RECALLSCOPE.to_dict())))
    assert "<strong>recallscope</strong>" in html and "no definition differs from recallscope's defaults" in html
    assert "<table" not in html
    assert 'id="preset"' not in render_report(with_preset(tmp_path / "b", None))


def test_a_hostile_definition_is_escaped(tmp_path):
    hostile = {
        "name": "x<script>",
        "description": "</details><b>",
        "definitions": [
            {"setting": "patch.mode", "value": "<img src=x>", "default": "total", "description": "&", "source": "\"'"}
        ],
        "not_reproduced": ["<script>alert(1)</script>", 7],
    }
    html = block(render_report(with_preset(tmp_path / "run", hostile)))
    assert "<script>" not in html and "<img" not in html and "</details><b>" not in html
    assert cells(html)[1] == ["patch.mode", "<img src=x>", "total", "&", "\"'"]
    assert [unescape(i) for i in re.findall(r"<li>(.*?)</li>", html, re.S)] == ["<script>alert(1)</script>"]  # a non-string item is left out
