"""The HTML report: escaped, self-contained, one section per stage — no model, no browser."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import markupsafe
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest

from recallscope.errors import UserError
from recallscope.report import render_report, write_report
from recallscope.report.html import Page, environment, plain_title


def esc(value: str) -> str:
    """As the templates' autoescaping writes a data string (quotes as &#34; and &#39;)."""
    return str(markupsafe.escape(value))



class Elements(HTMLParser):
    """Every element with its attributes, and the text of every <script>, as a browser parses them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.text = []
        self._in_script: dict | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "script":
            self._in_script = attrs
            self.scripts.append((attrs, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)

    def tags(self, name: str) -> list[dict]:
        return [a for t, a in self.elements if t == name]


def test_hostile_strings_are_escaped(h, hostile_run):
    page = render_report(hostile_run)
    for raw in (h.SCRIPT, h.BREAKOUT, h.IMG, h.END_SCRIPT, "<!--"):
        assert raw not in page, raw
    # the escaped forms are there: in the tables, the header and the captions
    assert esc(h.SCRIPT) in page
    assert esc(h.BREAKOUT) in page
    assert esc(h.IMG) in page
    assert esc(h.END_SCRIPT) in page
    # odd Unicode passes through unchanged, isolated for bidi
    assert f'<bdi class="s">{h.RTL}</bdi>' in page
    # ... but for its control characters, which a browser would drop: shown as escapes (the NUL here)
    assert esc(h.ZWJ.replace("\x00", "\\x00")) in page and "\U0001F5FC" in page
    # a 5,000-character string is cut, with a note saying how long it was
    assert "(5,000 characters)" in page and "L" * 161 not in page.replace(json.dumps(h.LONG)[1:-1], "")


def test_page_parses_to_exactly_the_elements_we_wrote(h, hostile_run):
    page = render_report(hostile_run)
    dom = Elements(page)
    n_plots = len([a for a in dom.tags("div") if a.get("class") == "plot"])
    assert n_plots == 3 == int(re.search(r'data-plots="(\d+)"', page).group(1))
    # scripts: the plotly config, the plotly bundle, one JSON block per plot, the drawing script
    kinds = [a.get("type", "js") for a, _ in dom.scripts]
    assert kinds.count("application/json") == n_plots
    assert len(dom.scripts) == n_plots + 3
    # no element from the data: no image, frame or event handler anywhere
    assert not dom.tags("img") and not dom.tags("iframe") and not dom.tags("object")
    assert all(not k.startswith("on") for _, attrs in dom.elements for k in attrs)
    # every JSON block is valid JSON and holds the raw data strings, intact
    blocks = [json.loads(body) for a, body in dom.scripts if a.get("type") == "application/json"]
    hostile_fig = [b for b in blocks if b["data"][0].get("type") == "bar" and h.END_SCRIPT in json.dumps(b, ensure_ascii=False)]
    assert len(hostile_fig) == 1 and hostile_fig[0]["data"][0]["x"][0] == h.SCRIPT
    assert all("</" not in body and "<!--" not in body for a, body in dom.scripts if a.get("type") == "application/json")


def test_self_contained_one_plotly_copy_and_no_network(hostile_run):
    page = render_report(hostile_run)
    dom = Elements(page)
    bundle = plotly.offline.get_plotlyjs()
    assert page.count(bundle[:2000]) == 1 and page.count(bundle[-2000:]) == 1
    assert [a.get("id") for a, body in dom.scripts if len(body) > 1_000_000] == ["plotly-js"]
    for tag, attrs in dom.elements:  # nothing loaded from anywhere: no src, no stylesheet link
        assert "src" not in attrs, (tag, attrs)
        if tag == "link":
            raise AssertionError(f"<link> in a self-contained page: {attrs}")
        href = attrs.get("href", "")
        assert href == "" or href.startswith("#"), (tag, attrs)
    outside_scripts = "".join(dom.text)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", outside_scripts)
    csp = [a["content"] for a in dom.tags("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "connect-src" not in csp[0]


def test_sections_follow_the_pipeline_with_wall_times_and_tables(h, hostile_run):
    page = render_report(hostile_run)
    order = [m.group(1) for m in re.finditer(r'<section class="stage" id="stage-\d+"><h3>([^<]+?) <', page)]
    # titles and order from the manifest's stage table; a stage it does not list (zz_tables) by
    # its name, before the claims, which come last
    assert order == [h.STAGE_TABLE[0]["title"], esc(h.STAGE_TABLE[1]["title"]), "zz_tables", esc(h.STAGE_TABLE[2]["title"])]
    assert '<span class="wall">0.5 s</span>' in page and '<span class="wall">1.25 s</span>' in page
    # the stage without figures: its summary as tables, nested records included
    tables = page.split('id="stage-2"', 1)[1].split("</section>", 1)[0]
    assert '<span class="k"><bdi class="s">cv_r2</bdi></span> <span class="v"><span class="n">0.91</span></span>' in tables and "coefficients</bdi> (4)" in tables and 'class="plot"' not in tables
    # the recall preview lists the prompts the model does not know first (lowest p first)
    recall = page.split('id="stage-0"', 1)[1].split("</section>", 1)[0]
    rows = re.findall(r"<tr><td(?: class=\"nw\")?><bdi class=\"s\">(.*?)</bdi>", recall.split("recall.parquet", 1)[1])
    assert rows[:3] == [esc(h.IMG), esc(h.SCRIPT), esc(h.LONG[:160])]
    # headline numbers
    assert ">50.0%</div><div class=\"tk\">accuracy" in page and ">3 / 6</div>" in page
    assert "multi_token_clash</bdi>: 2," in page


def test_claims_have_coloured_verdicts(h, tmp_path):
    """Four verdicts, four colours, wherever a summary holds the claims; the verdict block (first) and
    the claims table (in the claims section) show the same verdicts."""
    run = h.write_run(tmp_path / "r", relation="country_capital_extended")
    summary = json.loads((run / "summary.json").read_text())
    expected = [("v-holds", "holds"), ("v-fails", "does not hold"), ("v-na", "not measurable"), ("v-inconclusive", "inconclusive")]
    for where in ("top", "stage", "stage-dict"):
        summary.pop("claims", None)
        summary["stages"].pop("claims", None)
        if where == "top":
            summary["claims"] = h.CLAIMS
        elif where == "stage":
            summary["stages"]["claims"] = h.CLAIMS
        else:
            summary["stages"]["claims"] = {"claims": h.CLAIMS, "wall_seconds": 0.1}
        (run / "summary.json").write_text(json.dumps(summary))
        page = render_report(run)
        found = re.findall(r'<span class="verdict (v-[a-z]+)"><bdi class="s">([^<]+)</bdi>', page)
        assert found == expected * 2, where
        # the claims table: the primary figure, the deciding condition with its threshold, no loose column name
        assert '<td class="nw"><span class="n">0.81 [0.7, 0.9]</span></td>' in page and esc(h.SCRIPT) in page
        # no condition recorded (this summary has no sensitivity rows): the row's own margin and threshold
        assert '<bdi class="s">share of prompts with DLA &lt; 0</bdi>: <span class="n">margin -0.3 threshold 0.3</span>' in page
        assert "decided_by" not in page and "prompts_needed" not in page, where
        # an inconclusive claim says how many prompts would decide it, in the block and in the table
        assert page.count("≈ 140 known prompts would decide it") == 2


def test_the_report_opens_with_the_verdicts_then_the_top_components(h, tmp_path):
    """The verdict block comes before every stage section: per claim its id, verdict, the deciding
    statistic against its threshold, each condition marked, and a link to the evidence."""
    extra = {"movers": ({"movers": ["L1H2"], "verdict": "1 of 4 candidate heads are movers: L1H2",
                         "thresholds": {"min_attention_to_subject": 0.3, "min_projection_corr": 0.5}}, None),
             "patch": ({"top_components": [{"component": "L1H2", "effect": -15.93}, {"component": "MLP1", "effect": 2.5}]},
                       None)}
    run = h.write_run(tmp_path / "r", relation="rel", claims=h.CLAIMS, extra_stages=extra)
    summary = json.loads((run / "summary.json").read_text())
    summary["stages"]["claims"] = {"claims": h.CLAIMS, "sensitivity": h.SENSITIVITY}
    (run / "summary.json").write_text(json.dumps(summary))
    page = render_report(run)
    answer = page.split('<section class="answer" id="answer">', 1)[1].split("</section>", 1)[0]
    assert page.index('id="answer"') < page.index('<section class="stage"')
    ids = re.findall(r'<div class="claim k-([a-z]+)" id="stage-claim-[^"]+">\n<div class="cid"><bdi class="s">([^<]+)</bdi>', answer)
    # a claim the package does not number (a hand-written one) is numbered by its row
    assert ids == [("holds", "C1"), ("fails", "#2"), ("na", "#3"), ("inconclusive", "#4")]
    blocks = re.split(r'<div class="claim ', answer)[1:]
    dec = [re.sub(r"<[^>]+>", "", d) for d in re.findall(r'<div class="dec">(.*?)</div>', answer)]
    # the deciding statistic (the primary condition here: the primary figure and its interval) against the threshold
    assert dec[0] == "✓ decided by OV top-5 share: 0.81 [0.7, 0.9] ≥ 0.5"
    # every condition marked, the deciding one first (once, on the decided-by line); a data string in a condition stays text
    assert re.findall(r'<span class="m c-([a-z]+)"', blocks[0]) == ["met"]
    assert re.findall(r'<li class="c-([a-z]+)"', blocks[0]) == ["met"]
    assert esc(h.BREAKOUT) in blocks[0] and h.BREAKOUT not in page
    # another condition than the primary decided: its compared interval end, and the primary figure beside it, labelled
    assert dec[1] == "✗ decided by share of prompts with DLA &lt; 0: 0 &gt; 0.3 primary figure -0.02 [-0.1, 0.05]"
    assert re.findall(r'<li class="c-([a-z]+)', blocks[1]) == ["met"]
    assert 'href="#stage-1">evidence: movers →</a>' in blocks[0]  # the movers section holds C1's evidence
    # then the top components: the patched ones with their effect, the point-estimate mover test named as such
    tops = answer.split("Top components", 1)[1]
    assert re.findall(r'<span class="chip"><bdi class="s">([^<]+)</bdi>(?: <span class="n">([^<]+)</span>)?', tops) == [
        ("L1H2", "-15.9%"), ("MLP1", "2.5%"), ("L1H2", "")]
    # and one line on how C1's rule differs, linking to C1's row
    assert re.search(r'pass the movers stage&#39;s test \(point estimates(, p ≤ [0-9.]+)?\)</a>.*· unlike <a href="#(stage-)?[a-z0-9-]*claim-C1">C1</a>, '
                     r"which reads the lower ends of the 95% intervals and no p-value", tops)


def test_a_stage_section_never_states_a_verdict_of_its_own_under_another_rule(h, tmp_path):
    """The movers section said "2 of 10 candidate heads are movers" while C1 (interval ends) did not
    hold; the suppress section said "suppression_present: no" while C4 held. Each now names its rule
    and says in one line how the claim's figure differs."""
    c1 = {**h.CLAIMS[0], "verdict": "does not hold", "about": "L23H4", "decided_by": "scatter r, interval low"}
    c4 = {"claim": "The final layer suppresses the correct answer", "about": "L29H0", "stage": "suppress", "value": -1.48,
          "ci_low": -1.78, "ci_high": -1.22, "decided_by": "mean DLA to Y (logits), interval high", "threshold": -0.1,
          "verdict": "holds"}
    c1["stage"] = "movers"
    sens = [{"claim": c1["claim"], "condition": "OV top-5 share, interval low", "statistic": 1.0, "op": ">=", "threshold": 0.5,
             "margin": 0.5, "holds": True},
            {"claim": c1["claim"], "condition": "scatter r, interval low", "statistic": 0.121, "op": ">=", "threshold": 0.5,
             "margin": -0.379, "holds": False},
            {"claim": c4["claim"], "condition": "mean DLA to Y (logits), interval high", "statistic": -1.22, "op": "<",
             "threshold": -0.1, "margin": 1.12, "holds": True}]
    extra = {
        "movers": ({"movers": ["L23H4", "L23H5"], "verdict": "2 of 10 candidate heads are movers: L23H4, L23H5",
                    "heads": [{"layer": 29, "head": 0, "failed": ["p_value"]}, {"layer": 29, "head": 1, "failed": ["attention"]}],
                    "thresholds": {"min_attention_to_subject": 0.3, "min_projection_corr": 0.5, "max_p_value": 0.01,
                                   "min_ov_top5_share": 0.5}}, None),
        "suppress": ({"suppression_present": {"present": False, "final_layer_total_dla": 5.23, "ci_low": 4.42,
                                              "ci_high": 5.99}}, None),
    }
    run = h.write_run(tmp_path / "r", relation="rel", claims=[c1, c4], extra_stages=extra)
    summary = json.loads((run / "summary.json").read_text())
    summary["stages"]["claims"] = {"claims": [c1, c4], "sensitivity": sens}
    (run / "summary.json").write_text(json.dumps(summary))
    page = render_report(run)
    # C4 holds on one component (L29H0) while the layer as a whole raises Y: the verdict names it
    verdict_lines = re.findall(r'<div class="cv"><span class="verdict v-[a-z]+">(?:<bdi class="s">)?([^<]+)(?:</bdi>)?</span>'
                               r'(?:<div class="needed">(?:<bdi class="s">)?([^<]+))?', page)
    assert verdict_lines == [("does not hold", "figures of L23H4; no candidate holds"), ("holds", "decided by L29H0")]
    movers = page.split('<section class="stage" id="stage-1">', 1)[1].split("</section>", 1)[0]
    text_of = lambda html_: " ".join(re.sub(r"<[^>]+>", "", html_).split())  # noqa: E731
    assert "Mover test on point estimates (attention to the subject ≥ 0.3, scatter r ≥ 0.5, its p-value ≤ 0.01, OV top-5 " \
           "share ≥ 0.5): 2 of 10 candidate heads are movers: L23H4, L23H5." in text_of(movers)
    # C1's rule differs: interval ends and no p-value; the heads failing here on p alone are named
    assert "C1 (does not hold) reads the same heads&#39; OV share, attention and scatter r at the lower ends of their 95% " \
           "intervals against the same thresholds and uses no p-value, so a head can fail the test here and not there " \
           "(L29H0 fails here on p alone): L23H4&#39;s scatter r low 0.121 ≥ 0.5" in text_of(movers)
    assert text_of(movers).startswith("movers C1 does not hold reads this section")
    suppress = page.split('<section class="stage" id="stage-2">', 1)[1].split("</section>", 1)[0]
    assert "suppression_present" not in suppress  # its "present: no" was a verdict under the whole-layer rule
    assert ("The whole final layer (heads + bias + MLP) adds 5.23 [4.42, 5.99] logits to Y at the end position: as a whole it "
            "does not lower Y. C4 (holds) asks whether one of its components lowers Y: L29H0 -1.48 [-1.78, -1.22] logits, "
            "mean DLA to Y (logits) &lt; -0.1.") in text_of(suppress)


def test_old_run_directories_without_sensitivity_or_decided_columns_still_render(h, tmp_path):
    """A run written before the claims had conditions: the row's figure, its decided_by and threshold."""
    run = h.write_run(tmp_path / "r", relation="rel", claims=h.CLAIMS[:2])
    answer = render_report(run).split('id="answer"', 1)[1].split("</section>", 1)[0]
    text_ = " ".join(re.sub(r"<[^>]+>", "", answer).split())
    assert "decided by OV top-5 share: — ≥ 0.5" not in text_  # no condition recorded: nothing invented
    assert "<ul class=\"conds\">" not in answer and "C1" in text_ and "holds" in text_


def test_parent_directory_with_sub_runs_is_one_page(h, tmp_path):
    root = tmp_path / "multi"
    subs = [("a_rel", 0), ("a_rel", 3), (h.SCRIPT, 1)]
    runs = []
    for relation, shots in subs:
        rel = f"{'x' if relation == h.SCRIPT else relation}/{shots}shot"
        h.write_run(root / rel, relation=relation, shots=shots)
        runs.append({"relation": relation, "shots": shots, "path": rel})
    (root / "summary.json").write_text(json.dumps({"model": "tiny", "model_hash": "h", "runs": runs[::-1]}))
    (root / "manifest.json").write_text(json.dumps({"versions": {"plotly": "7"}}))
    page = render_report(root)
    headings = re.findall(r'<section class="run" id="run-(\d)"><h2><bdi class="s">(.*?)</bdi>', page)
    # one section per sub-run, in the order of the summary's "runs"
    assert headings == [("0", esc(h.SCRIPT) + ", 1-shot"), ("1", "a_rel, 3-shot"), ("2", "a_rel, 0-shot")]
    assert h.SCRIPT not in page
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # 2 recall plots per sub-run + the accuracy-by-shots overview
    assert int(re.search(r'data-plots="(\d+)"', page).group(1)) == 2 * 3 + 1
    assert page.count('<section class="stage"') == 3 and 'id="overview"' in page


def test_sub_runs_are_found_without_a_runs_list(h, tmp_path):
    root = tmp_path / "multi"
    h.write_run(root / "b" / "0shot", relation="b")
    h.write_run(root / "a" / "1shot", relation="a", shots=1)
    (root / "summary.json").write_text(json.dumps({"model": "tiny"}))
    page = render_report(root)
    assert re.findall(r'<section class="run" id="run-\d"><h2><bdi class="s">(.*?)</bdi>', page) == ["a, 1-shot", "b, 0-shot"]


def test_write_report_is_atomic_and_matches_render(hostile_run):
    path = write_report(hostile_run)
    assert path == hostile_run / "report.html"
    assert path.read_text(encoding="utf-8") == render_report(hostile_run)
    assert not list(hostile_run.glob(".*.tmp"))
    assert write_report(str(hostile_run)) == path  # the CLI passes a string


def test_a_failing_figures_function_leaves_the_rest_of_the_report(h, hostile_run, hostile_stage_module):
    def broken(frame, summary):
        raise ValueError("bad " + h.SCRIPT)

    hostile_stage_module.figures = broken
    page = render_report(hostile_run)
    assert '<p class="problem">' in page and esc("ValueError: bad " + h.SCRIPT) in page
    assert int(re.search(r'data-plots="(\d+)"', page).group(1)) == 2  # recall's plots still there
    assert esc("Claims — ") in page


def test_figure_json_cannot_close_its_script_block():
    raw = "</script><script>alert(1)</script>\u2028<!--'&"
    fig = go.Figure(go.Scatter(x=[raw], y=[1], text=[raw]))
    fig.update_layout(title="t <b>bold</b> &lt;x&gt; " + raw)
    block = Page().figure(fig)
    out = str(environment().get_template("macros.html.j2").module.figure(block))
    body = out.split('type="application/json" id="plot-1-json">', 1)[1].rsplit("</script>", 1)[0]
    assert not set("<>&'") & set(body)
    spec = json.loads(body)
    assert spec["data"][0]["x"] == [raw] and spec["layout"].get("title", {}).get("text") is None
    caption = out.split("<figcaption>", 1)[1].split("</figcaption>", 1)[0]
    assert caption.startswith('<bdi class="s">t  bold  ') and esc("<x>") in caption and "<script>" not in caption
    assert plain_title("a<br>b &amp; <sup>2</sup>") == "a b &  2"


def test_run_without_summary_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no summary.json"):
        render_report(tmp_path)


def test_every_hostile_string_survives_a_real_figure_round_trip(h, hostile_run):
    """The hostile stage's figure JSON gives back each string exactly (escaping loses nothing)."""
    dom = Elements(render_report(hostile_run))
    blocks = [json.loads(b) for a, b in dom.scripts if a.get("type") == "application/json"]
    labels = next(b["data"][0]["x"] for b in blocks if b["data"][0].get("name") == h.END_SCRIPT)
    assert labels == [s for s in (h.SCRIPT, h.IMG, h.END_SCRIPT, h.RTL, h.ZWJ, h.HOSTILE[-1])]


@pytest.mark.slow
def test_real_pipeline_on_a_hostile_relation(smollm2, tmp_path, h):
    """Hostile subjects, answers, templates and relation name through the real recall stage."""
    from recallscope.pipeline import RunConfig, execute

    relation = {
        "name": "capital " + h.SCRIPT,
        "prompt_templates": ["The capital of {} is"],
        "prompt_templates_zs": ["The capital of {} is", h.BREAKOUT + " The capital city of {} is"],
        "properties": {"relation_type": "factual"},
        "samples": [{"subject": "France", "object": "Paris"}, {"subject": h.SCRIPT, "object": "</script><b>x"},
                    {"subject": h.RTL, "object": "Tokyo \U0001F5FC"}],
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(relation, ensure_ascii=False), encoding="utf-8")
    run_dir = tmp_path / "run"
    execute(RunConfig(relation=str(path)), ["recall"], out=str(run_dir), model=smollm2, progress=False)
    frame = pd.read_parquet(run_dir / "recall.parquet")
    assert h.SCRIPT in set(frame["subject"]) and h.RTL in set(frame["subject"])  # the pipeline kept them
    page = write_report(run_dir).read_text(encoding="utf-8")
    for raw in (h.SCRIPT, h.BREAKOUT, "</script><b>x"):
        assert raw not in page
    assert esc(h.SCRIPT) in page and esc(h.BREAKOUT) in page
    assert esc("</script><b>x") in page and f"{h.RTL}</bdi>" in page
    dom = Elements(page)
    assert not dom.tags("img") and not dom.tags("b")
    assert int(re.search(r'data-plots="(\d+)"', page).group(1)) == 2


def test_a_figures_function_returning_junk_keeps_the_plot_count_honest(h, hostile_run, hostile_stage_module):
    real = hostile_stage_module.figures
    hostile_stage_module.figures = lambda frame, summary: [real(frame, summary)[0], "not a figure " + h.SCRIPT]
    page = render_report(hostile_run)
    dom = Elements(page)
    n_divs = len([a for a in dom.tags("div") if a.get("class") == "plot"])
    assert n_divs == int(re.search(r'data-plots="(\d+)"', page).group(1)) == 3
    assert page.count('<p class="problem">') == 1 and "plot 2 could not be drawn" in page


def test_lone_surrogate_in_a_summary_does_not_cost_the_report(h, tmp_path):
    run = h.write_run(tmp_path / "r", relation="ok")
    raw = (run / "summary.json").read_text(encoding="utf-8").replace('"relation": "ok"', '"relation": "bad \\ud83d end"')
    (run / "summary.json").write_text(raw, encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    assert "bad ? end" in page


def test_overview_compares_what_each_sub_run_found(h, tmp_path):
    root = tmp_path / "multi"
    found = {
        0: {"movers": ({"movers": [], "wall_seconds": 1}, None),
            "decompose": ({"layer": 23, "cv_r2": -0.17}, None)},
        3: {"movers": ({"movers": ["L15H2", h.SCRIPT]}, None),
            "suppress": ({"components": [{"component": "L29H0", "is_suppressor": True},
                                         {"component": "MLP29", "is_suppressor": False}]}, None)},
    }
    runs = []
    for k, extra in found.items():
        h.write_run(root / f"rel/{k}shot", relation="rel", shots=k, extra_stages=extra)
        runs.append({"path": f"rel/{k}shot"})
    (root / "summary.json").write_text(json.dumps({"model": "tiny", "runs": runs}))
    page = render_report(root)
    table = page.split("What each run found", 1)[1].split("</table>", 1)[0]
    heads = re.findall(r"<th>(.*?)</th>", table)
    assert heads == ["relation", "shots", "pass the mover test (point estimates)", "MLP layer", "held-out R²", "suppressors"]
    rows = [re.sub(r"<[^>]+>", "", r) for r in re.findall(r"<tr><td>.*?</tr>", table)]
    # a stage a run lacks reads "—"
    assert rows[0] == "rel0none23-0.17—" and rows[1] == "rel3L15H2, " + esc(h.SCRIPT) + "——L29H0"


def test_navigation_lists_each_stage_once(h, tmp_path):
    """Claims in both places a summary may hold them (top level and stages) give one link, one section."""
    run = h.write_run(tmp_path / "r", relation="rel", claims=h.CLAIMS)
    summary = json.loads((run / "summary.json").read_text())
    summary["stages"]["claims"] = {"claims": h.CLAIMS, "wall_seconds": 0.1}
    (run / "summary.json").write_text(json.dumps(summary))
    page = render_report(run)
    nav = page.split('<nav class="top">', 1)[1].split("</nav>", 1)[0]
    assert re.findall(r'<a href="#(stage-\d)">([^<]+)</a>', nav) == [("stage-0", "recall"), ("stage-1", "claims")]
    assert page.count('<section class="stage"') == 2 and page.count("<table class=\"grid claims\">") == 1


def test_every_template_autoescapes():
    env = environment()
    names = env.list_templates()
    assert {"report.html.j2", "macros.html.j2", "stage.html.j2", "overview.html.j2"} <= set(names)
    assert all(env.autoescape(name) for name in names) and env.undefined.__name__ == "StrictUndefined"
    # a value is text to every template: the same string renders escaped through the page's macros
    macros = env.get_template("macros.html.j2").module
    assert str(macros.cell("<i>'\"&")) == '<bdi class="s">&lt;i&gt;&#39;&#34;&amp;</bdi>'
    assert str(macros.cell(["<a>", 1234567, None, 0.000123456])) == (
        '[<bdi class="s">&lt;a&gt;</bdi>, <span class="n">1,234,567</span>, <span class="none">—</span>, '
        '<span class="n">0.000123</span>]')


def test_named_tables_reach_the_figures_main_table_first(h, tmp_path, hostile_stage_module):
    """``<stage>.parquet`` is the main table, ``<stage>/<name>.parquet`` the others, as the run layer writes them."""
    seen = {}

    def capture(tables, summary):
        seen.update({name: len(frame) for name, frame in tables.items()})
        return []

    hostile_stage_module.figures = capture
    run = h.write_run(tmp_path / "r", relation="rel", extra_stages={h.HOSTILE_STAGE: ({"k": 1}, pd.DataFrame({"x": [1, 2, 3]}))})
    (run / h.HOSTILE_STAGE).mkdir()
    pd.DataFrame({"y": [1]}).to_parquet(run / h.HOSTILE_STAGE / "zeta.parquet")
    pd.DataFrame({"y": [1, 2]}).to_parquet(run / h.HOSTILE_STAGE / "alpha.parquet")
    render_report(run)
    assert list(seen.items()) == [(h.HOSTILE_STAGE, 3), ("alpha", 2), ("zeta", 1)]


def test_parent_page_shows_the_claims_across_shot_counts(h, tmp_path):
    root = tmp_path / "multi"
    for k in (0, 3):
        h.write_run(root / f"rel/{k}shot", relation="rel", shots=k)
    shot_claim = {**h.CLAIMS[0], "claim": "Few-shot engages the same heads earlier", "relation": h.SCRIPT}
    (root / "summary.json").write_text(json.dumps({"model": "tiny", "claims": [shot_claim]}))
    page = render_report(root)
    overview = page.split('id="overview"', 1)[1].split('<section class="run"', 1)[0]
    assert "Claims across shot counts" in overview and "Few-shot engages the same heads earlier" in overview
    assert esc(h.SCRIPT) in overview and h.SCRIPT not in page
    assert re.findall(r'<span class="verdict (v-[a-z]+)">', overview) == ["v-holds"]


def test_report_verb_rerenders_a_run_directory_without_torch(h, tmp_path):
    """``recallscope report RUN_DIR`` from the run directory's files alone: torch never loads."""
    import subprocess
    import sys

    run = h.write_run(tmp_path / "r", relation="rel", claims=h.CLAIMS)
    code = (
        "import sys\n"
        "from recallscope.cli import main\n"
        "try:\n    main(['report', sys.argv[1]])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('recallscope.')))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().replace("'", '"'))
    assert "torch" not in loaded
    # the package's torch-free layers only: no stage module, no pipeline, no model code
    assert not [m for m in loaded if m.split(".")[1] in ("pipeline", "models", "patch", "recall", "claims", "lens")]
    assert (run / "report.html").read_text(encoding="utf-8") == render_report(run)
    bad = subprocess.run([sys.executable, "-m", "recallscope", "report", str(tmp_path / "none")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a run directory" in bad.stderr


def test_a_sampled_run_says_it_is_a_sample_and_how_to_run_every_prompt():
    from recallscope.report.html import headline

    summary = {"stages": {"recall": {"accuracy": 0.825, "mean_p_answer": 0.457, "n_prompts": 40, "n_known": 33,
                                     "dropped": {"over_max_prompts": 185, "unknown_to_model": 7}}}}
    tiles = {t["key"]: t for t in headline(summary)}
    assert tiles["a seeded sample; --max-prompts all runs every prompt"]["value"] == "40 of 225 prompts"
    summary["stages"]["recall"]["dropped"] = {"unknown_to_model": 7}  # every prompt ran: no sample tile
    assert not any("sample" in t["key"] for t in headline(summary))


def test_a_sweep_opens_with_its_claims_by_cells_grid(h, tmp_path):
    """Overview first: one row per claim, one column per cell (verdict colour, deciding figure, a link
    to the claim in its cell), the claim across shot counts spanning its relation's cells, k/n counts."""
    root = tmp_path / "sweep"
    verdicts_by_cell = {0: ("holds", "does not hold"), 3: ("inconclusive", "holds")}
    runs = []
    for k, (v1, v2) in verdicts_by_cell.items():
        claims = [{**h.CLAIMS[0], "verdict": v1}, {**h.CLAIMS[1], "verdict": v2}]
        h.write_run(root / f"rel/{k}shot", relation="rel", shots=k, claims=claims)
        runs.append({"path": f"rel/{k}shot"})
    shot = {"claim": "Few-shot prompts employ the same heads as zero-shot", "relation": "rel", "value": 8, "ci_low": 6,
            "ci_high": 8, "verdict": "holds"}
    (root / "summary.json").write_text(json.dumps({"model": "tiny", "runs": runs, "claims": [shot]}))
    page = render_report(root)
    overview = page.split('id="overview"', 1)[1].split("<h3", 1)[0]
    grid = overview.split('<table class="grid cgrid">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr><th class="rowh"[^>]*><bdi class="s">([^<]+)</bdi>(.*?)</tr>', grid, flags=re.S)
    assert [r[0] for r in rows] == ["C1", "#2", "C6"]
    cells = {cid: re.findall(r'<td(?: colspan="(\d)")? class="gc v-([a-z]+)"', body) for cid, body in rows}
    assert cells == {"C1": [("", "holds"), ("", "inconclusive")], "#2": [("", "fails"), ("", "holds")], "C6": [("2", "holds")]}
    counts = {cid: re.findall(r'<td class="nw"><b>([^<]+)</b></td>', body)[0] for cid, body in rows}
    assert counts == {"C1": "1/2 (1 inconclusive)", "#2": "1/2", "C6": "1/1"}
    # each cell links to its claim's row in that cell's section, which exists
    link = re.findall(r'<a href="#(run-\d-claim-C1)">', grid)
    assert link == ["run-0-claim-C1", "run-1-claim-C1"] and all(f'id="{a}"' in page for a in link)
    assert "≈ 140 known prompts would decide it" not in grid  # this inconclusive row has no estimate: none invented
