"""The stage figures, drawn from hand-built tables and summaries (no model): numbers land where
they should, data strings are escaped for plotly, and the package imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from recallscope import figures
from recallscope.figures import claims, decompose, intercept, movers, patch, recall, shots, suppress

STAGES = ("recall", "patch", "movers", "decompose", "intercept", "suppress", "onset", "claims")


def test_figures_modules_import_no_torch_and_each_stage_has_one():
    code = (
        "import sys, recallscope.figures as F\n"
        f"fns = [F.for_stage(s) for s in {STAGES!r}]\n"
        "assert all(callable(f) for f in fns), fns\n"
        "import recallscope.figures.shots\n"
        "print('torch' in sys.modules, len(fns))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "8"]


def test_for_stage_finds_modules_by_name_only():
    assert figures.for_stage("patch") is patch.figures
    assert figures.for_stage("no_such_stage") is None
    assert figures.for_stage("../patch") is None and figures.for_stage("") is None
    with pytest.raises(ValueError, match="no table"):
        figures.main_table({})


def test_recall_histogram_and_lowest_subjects():
    subjects = ["France", "<b>x</b>", "S" * 50, "Japan"]
    frame = pd.DataFrame(
        {
            "subject": subjects * 2,
            "p_answer": [0.9, 0.1, 0.3, 0.6, 0.7, 0.3, 0.5, 0.8],
            "known": [True, False, False, True, True, False, True, True],
        }
    )
    hist, bars = recall.figures({"recall": frame}, {"relation": "r<i>", "shots": 3})
    assert [t.name for t in hist.data] == ["known (5)", "unknown (3)"]
    assert sorted(hist.data[0].x) == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert "r&lt;i&gt;, 3-shot" in hist.layout.title.text
    assert list(bars.data[0].y) == pytest.approx([0.2, 0.4, 0.7, 0.8])  # mean p(Y) per subject, lowest first
    assert list(bars.data[0].x) == ["&lt;b&gt;x&lt;/b&gt;", "S" * 29 + "…", "Japan", "France"]


def test_patch_heatmap_holds_the_mean_effect_of_each_component():
    rows = []
    for prompt, scale in ((0, 1.0), (1, 3.0)):
        for layer in (0, 1):
            for head in (0, 1):
                rows.append({"kind": "head", "layer": layer, "head": head, "effect": scale * (10 * layer + head)})
            rows.append({"kind": "mlp", "layer": layer, "head": None, "effect": -scale * (layer + 1)})
    frame = pd.DataFrame(rows).astype({"head": "Int64"})
    (fig,) = patch.figures({"patch": frame}, {"mode": "noise"})
    assert list(fig.data[0].y) == ["H0", "H1", "MLP"] and list(fig.data[0].x) == ["0", "1"]
    np.testing.assert_allclose(np.asarray(fig.data[0].z), [[0, 20], [2, 22], [-2, -4]])
    assert fig.data[0].zmax == 22 and fig.data[0].zmin == -22


def _heads(is_mover: bool) -> list[dict]:
    return [
        {
            "layer": 1,
            "head": 0,
            "is_mover": is_mover,
            "projection_corr": 0.9,
            "projection_p_value": 1e-5,
            "failed": [] if is_mover else ["ov_copy"],
        },
        {
            "layer": 1,
            "head": 1,
            "is_mover": False,
            "projection_corr": float("nan"),
            "projection_p_value": 1.0,
            "failed": ["attention"],
        },
    ]


def test_movers_scatter_per_mover_and_the_example_attention():
    frame = pd.DataFrame(
        {
            "layer": [1, 1, 1, 1],
            "head": [0, 0, 1, 1],
            "subject": ["<s>", "b", "c", "d"],
            "attention_to_subject": [0.1, 0.5, 0.2, 0.3],
            "projection": [1.0, 2.0, 3.0, 4.0],
        }
    )
    example = {
        "layer": 1,
        "head": 0,
        "is_mover": True,
        "prompt_index": 0,
        "tokens": ["The", "<s>", " is"],
        "subject_span": [1, 2],
        "attention": [0.2, 0.7, 0.1],
    }
    figs = movers.figures({"movers": frame}, {"heads": _heads(True), "example": example})
    assert len(figs) == 2
    assert list(figs[0].data[0].x) == [0.1, 0.5] and list(figs[0].data[0].text) == ["&lt;s&gt;", "b"]
    # the stage's test, on point estimates (the claims stage reads interval ends): the title says which
    assert figs[0].layout.title.text.startswith("L1H0 — passes the mover test on point estimates: r = 0.900")
    assert list(figs[1].data[0].x) == ["0:The", "1:&lt;s&gt;", "2: is"]
    assert list(figs[1].data[0].marker.color) == ["steelblue", "crimson", "steelblue"]
    assert figs[1].layout.xaxis.tickangle == -45  # level, a half-width figure's labels ran together
    # no mover: the candidates with a finite r, titled as not movers
    (fig,) = movers.figures({"movers": frame}, {"heads": _heads(False)})
    assert "fails the mover test on OV top-5 share" in fig.layout.title.text
    # the condition that failed, with its threshold: a head whose r passes and whose p-value does
    # not (L23H4 of smollm2-135m on country_capital_extended, 16 prompts: r 0.584, p 0.036) fails on p
    heads = [{**_heads(False)[0], "projection_corr": 0.584, "projection_p_value": 0.036, "failed": ["p_value"]}]
    (fig,) = movers.figures({"movers": frame}, {"heads": heads, "thresholds": {"max_p_value": 0.01, "min_projection_corr": 0.5}})
    assert fig.layout.title.text == "L1H0 — fails the mover test on p > 0.01: r = 0.584, p = 0.036"
    # no mover: the heads C1 reads (largest |patching effect|), not the highest r (L23H4, C1's head, has r
    # 0.584 below three other candidates on that run and went unplotted)
    heads = [
        {**_heads(False)[0], "head": k, "projection_corr": r, "effect": e}
        for k, r, e in ((0, 0.584, -13.2), (1, 0.868, 0.1), (2, 0.716, 0.2), (3, 0.618, 1.55), (4, -0.42, -4.8))
    ]
    titles = [f.layout.title.text.split(" — ")[0] for f in movers.figures({"movers": frame}, {"heads": heads})]
    assert titles == ["L1H0", "L1H4", "L1H3"]


def test_decompose_coefficients_sweep_and_sgd_trace():
    coefs = [
        {"regressor": "L1H0", "coef": 1.5, "cv_std": 0.1, "cv_mean": 1.4, "verdict": "amplified"},
        {"regressor": "resid", "coef": -0.2, "cv_std": 0.05, "cv_mean": -0.2, "verdict": "reversed"},
    ]
    summary = {
        "coefficients": coefs,
        "layer": 2,
        "solver": "sgd",
        "r2": 0.8,
        "cv_r2": 0.7,
        "folds": 4,
        "sweep": [{"layer": 1, "r2": 0.5, "cv_r2": 0.4}, {"layer": 2, "r2": 0.8, "cv_r2": 0.7}],
        "sgd": {"converged": True, "standardise": True, "loss": 0.01, "lstsq_loss": 0.0099},
    }
    trace = pd.DataFrame({"step": [0, 1000, 2000], "loss": [1.0, 0.1, 0.01]})
    figs = decompose.figures({"decompose": pd.DataFrame(), "sgd_trace": trace}, summary)
    assert len(figs) == 3
    # one bar trace per verdict, in the regressors' order, coloured by verdict (the fit explains something held out)
    assert [(t.name, list(t.x), list(t.y), list(t.error_y.array), t.marker.color) for t in figs[0].data] == [
        ("amplified", ["L1H0"], [1.5], [0.1], "crimson"),
        ("reversed", ["resid"], [-0.2], [0.05], "darkorange"),
    ]
    assert list(figs[0].layout.xaxis.categoryarray) == ["L1H0", "resid"]
    assert list(figs[1].data[1].y) == [0.4, 0.7]
    assert list(figs[2].data[0].x) == [0, 1000, 2000] and list(figs[2].data[0].y) == [1.0, 0.1, 0.01]
    # lstsq: no trace table, no loss figure
    assert len(decompose.figures({"decompose": pd.DataFrame()}, {**summary, "sgd": None})) == 2


def test_a_decomposition_that_explains_nothing_held_out_is_drawn_grey():
    """Held-out R² ≤ 0 (the demo's MLP 23: R² 0.021, CV R² −0.28 under c = 6.56): no colour, a
    hatched grey bar, and the legend and the title say why."""
    coefs = [
        {"regressor": "L23H2", "coef": 6.56, "cv_std": 0.9, "cv_mean": 6.5, "verdict": "amplified"},
        {"regressor": "L23H0", "coef": -0.14, "cv_std": 0.02, "cv_mean": -0.14, "verdict": "reversed"},
    ]
    summary = {"coefficients": coefs, "layer": 23, "solver": "lstsq", "r2": 0.021, "cv_r2": -0.276, "folds": 4}
    (fig, *_) = decompose.figures({"decompose": pd.DataFrame()}, summary)
    assert [t.marker.color for t in fig.data] == [decompose.GREY, decompose.GREY]
    assert [t.marker.pattern.shape for t in fig.data] == ["/", "/"]
    assert [t.name for t in fig.data] == ["amplified (fit explains nothing held out)", "reversed (fit explains nothing held out)"]
    assert "held-out R² -0.276 ≤ 0: the fit explains nothing held out" in fig.layout.title.text
    # the same fit at CV R² 0.3 is coloured
    (fig, *_) = decompose.figures({"decompose": pd.DataFrame()}, {**summary, "cv_r2": 0.3})
    assert [t.marker.color for t in fig.data] == ["crimson", "darkorange"]


def test_intercept_top_tokens_and_redirect_ranks():
    summary = {
        "layer": 3,
        "answer_domain_share": 0.5,
        "answer_domain_baseline": {"mean": 0.01, "level": 0.95, "low": 0.0, "high": 0.05},
        "top_tokens": [{"token": " Paris", "logit": 5.0, "in_domain": True}, {"token": "<x>", "logit": 4.0, "in_domain": False}],
        "redirect": {
            p: {"median_rank_Y": r, "median_rank_X": 10 - r, "share_Y_above_X": 0.25 * (i + 1)}
            for i, (p, r) in enumerate((("r_mid", 9), ("r_mid_plus_b", 4), ("r_mid_plus_m", 0)))
        },
    }
    tokens, redirect = intercept.figures({"intercept": pd.DataFrame()}, summary)
    assert list(tokens.data[0].x) == ["0:&#x27; Paris&#x27;", "1:&#x27;&lt;x&gt;&#x27;"]  # repr, escaped for plotly
    # a token of a newline and 54 spaces (smollm2-135m's intercept, paper_country_capital) ran 340 px past its
    # figure as a tick label: runs of spaces are counted, and a label is cut at 16 characters
    summary["top_tokens"] = [
        {"token": "\n" + " " * 54, "logit": 3.0, "in_domain": False},
        {"token": "x" * 30, "logit": 2.0, "in_domain": False},
    ]
    long, _ = intercept.figures({"intercept": pd.DataFrame()}, summary)
    assert list(long.data[0].x) == ["0:&#x27;\\n␣×54&#x27;", "1:&#x27;xxxxxxxxxxxxxx…"]
    assert list(tokens.data[0].marker.color) == ["crimson", "steelblue"]
    assert list(redirect.data[0].y) == [10, 5, 1] and list(redirect.data[1].y) == [2, 7, 11]  # rank + 1
    assert "r_mid[l] + m[l]: Y above X in 75%" in redirect.layout.title.text
    # ranks 1 .. 11 on the log axis: ticks at 1, 2, 5, 10, 20 written whole
    assert list(redirect.layout.yaxis.tickvals) == [1, 2, 5, 10, 20]
    # the demo's ranks (about 550 .. 2,600): 500, 1,000, 2,000, 5,000, not a label every 100
    assert intercept._one_two_five(553, 2589) == [500, 1000, 2000, 5000]


def test_suppress_dla_layer_totals_and_mitigation():
    comps = [
        {"component": "L3H0", "mean_dla": -0.5, "ci_low": -0.7, "ci_high": -0.3, "share_negative": 0.9, "is_suppressor": True},
        {"component": "MLP3", "mean_dla": 1.0, "ci_low": 0.8, "ci_high": 1.3, "share_negative": 0.1, "is_suppressor": False},
    ]
    totals = [
        {"layer": 2, "mean_dla": 2.0, "ci_low": 1.0, "ci_high": 3.0},
        {"layer": 3, "mean_dla": 0.5, "ci_low": 0.1, "ci_high": 0.9},
    ]
    metrics = lambda p, a: {"p_answer": p, "accuracy": a}  # noqa: E731
    mitigation = {"zero": {pop: {"before": metrics(0.5, 0.6), "after": metrics(0.6, 0.7)} for pop in ("known", "unknown")}}
    figs = suppress.figures(
        {"suppress": pd.DataFrame()},
        {
            "components": comps,
            "layer_totals": totals,
            "mitigation": mitigation,
            "suppression_present": {"final_layer_total_dla": 0.5, "ci_low": 0.1, "ci_high": 0.9},
        },
    )
    assert len(figs) == 3
    assert list(figs[0].data[0].marker.color) == ["crimson", "steelblue"]
    # the share of prompts where a component is negative sits under its label, not on (or under) its bar
    assert list(figs[0].data[0].x) == ["L3H0<br>90% neg.", "MLP3<br>10% neg."] and figs[0].data[0].text is None
    assert list(figs[0].data[0].error_y.array) == pytest.approx([0.2, 0.3])
    assert list(figs[0].data[0].error_y.arrayminus) == pytest.approx([0.2, 0.2])
    assert list(figs[1].data[0].x) == ["L2", "L3"]
    assert [list(t.y) for t in figs[2].data] == [[0.5, 0.6], [0.6, 0.7]] * 2


CLAIM_ROWS = pd.DataFrame(
    {
        "claim": [
            "Mover heads move the topic (subject) to the last position",
            "The MLP after the mover heads amplifies or erases heads (linear decomposition)",
            "The final layer suppresses the correct answer",
            "Few-shot prompts employ the same heads as zero-shot",
        ],
        "value": [1.0, 0.0155, -1.48, None],
        "ci_low": [1.0, -0.0117, -1.78, None],
        "ci_high": [1.0, 0.0354, -1.22, None],
        "decided_by": ["scatter r, interval low", "held-out gain, interval low", "mean DLA to Y (logits), interval high", None],
        "threshold": [0.5, 0.05, -0.1, None],
        "verdict": ["does not hold", "inconclusive", "holds", "not measurable here"],
    }
)
CLAIM_CONDITIONS = pd.DataFrame(
    {
        "claim": [CLAIM_ROWS["claim"][0]] * 2 + [CLAIM_ROWS["claim"][1], CLAIM_ROWS["claim"][2]],
        "condition": [
            "OV top-5 share, interval low",
            "scatter r, interval low",
            "held-out gain, interval low",
            "mean DLA to Y (logits), interval high",
        ],
        "statistic": [1.0, 0.121, -0.0117, -1.22],
        "op": [">=", ">=", ">", "<"],
        "threshold": [0.5, 0.5, 0.05, -0.1],
        "margin": [0.5, -0.379, -0.0617, 1.12],
        "holds": [True, False, False, True],
    }
)


def test_claims_one_panel_per_measured_claim_in_its_own_units_with_its_threshold():
    """The demo's C1 (decided by the scatter r's lower end 0.121, not by its primary figure 1 [1, 1]),
    an inconclusive C2 and C4 (logits): three panels, three x axes, each with its threshold."""
    (fig,) = claims.figures({"claims": CLAIM_ROWS, "sensitivity": CLAIM_CONDITIONS}, {})
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [
        "C1 does not hold: scatter r ≥ 0.5",
        "C2 inconclusive: held-out gain &gt; 0.05",
        "C4 holds: mean DLA to Y (logits) &lt; -0.1",
    ]
    c1, c2, c4 = fig.data
    # C1: the deciding statistic is another condition than the primary one: the interval end it compares, marked
    assert list(c1.x) == [0.121] and c1.marker.symbol == "diamond" and list(c1.text) == ["interval low 0.121"]
    assert c1.error_x.array is None
    # C2 and C4: the primary condition decided: the primary figure with its 95% interval
    assert list(c2.x) == [0.0155] and list(c2.error_x.arrayminus) == pytest.approx([0.0272])
    assert list(c4.x) == [-1.48] and list(c4.error_x.array) == pytest.approx([0.26])
    assert [c1.marker.color, c2.marker.color, c4.marker.color] == [
        claims.VERDICT_COLOURS["fails"],
        claims.VERDICT_COLOURS["inconclusive"],
        claims.VERDICT_COLOURS["holds"],
    ]
    # one threshold line per panel, on its own axis
    assert [(s.x0, s.xref) for s in fig.layout.shapes] == [(0.5, "x"), (0.05, "x2"), (-0.1, "x3")]
    # a share and logits never share an axis: each panel's range holds its threshold and its interval
    ranges = [fig.layout[f"xaxis{i or ''}"].range for i in (0, 2, 3)]
    assert ranges[0][0] < 0.121 and ranges[0][1] > 0.5 and ranges[2][0] < -1.78 and ranges[2][1] > -0.1


def test_claims_figure_reads_the_deciding_interval_when_the_table_has_it():
    rows = CLAIM_ROWS.assign(
        decided_value=[0.555, 0.0155, -1.48, None],
        decided_ci_low=[0.121, -0.0117, -1.78, None],
        decided_ci_high=[0.83, 0.0354, -1.22, None],
    )
    c1 = claims.figures({"claims": rows, "sensitivity": CLAIM_CONDITIONS}, {})[0].data[0]
    assert list(c1.x) == [0.555] and list(c1.error_x.arrayminus) == pytest.approx([0.434]) and c1.marker.symbol == "circle"


def test_claims_figure_without_a_measured_claim_says_so():
    (fig,) = claims.figures({"claims": CLAIM_ROWS.iloc[3:]}, {})
    assert fig.layout.annotations[0].text == "no claim was measured on this run" and not fig.data


def test_finish_wraps_titles_to_the_narrowest_figure_and_puts_the_legend_below():
    fig = go.Figure([go.Bar(x=[1], y=[1], name="a"), go.Bar(x=[1], y=[2], name="b")])
    fig.update_layout(yaxis_title="coefficient (red: amplified, blue: attenuated, orange: reversed)", xaxis_title="x")
    figures.finish(fig)
    assert fig.layout.yaxis.title.text == "coefficient (red: amplified, blue:<br>attenuated, orange: reversed)"
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container" and fig.layout.height == 360
    assert figures.wrap("a b c", 10) == "a b c" and figures.wrap("aaaa bbbb cccc", 9) == "aaaa bbbb<br>cccc"


def test_shots_lines_per_relation_and_none_for_one_run():
    table = pd.DataFrame(
        {
            "relation": ["b", "a", "a", "<c>"],
            "shots": [0, 3, 0, None],
            "accuracy": [0.5, 0.9, 0.6, None],
            "mean_p_answer": [0.4, 0.8, 0.5, None],
        },
        dtype=object,
    )
    (fig,) = shots.figures({"runs": table}, {})
    assert [(t.name, list(t.x), list(t.y)) for t in fig.data] == [
        ("a", [0, 3], [0.6, 0.9]),
        ("a", [0, 3], [0.5, 0.8]),
        ("b", [0], [0.5]),
        ("b", [0], [0.4]),
    ]
    assert shots.figures({"runs": table.iloc[:1]}, {}) == []


def test_every_figure_serialises_to_json():
    frame = pd.DataFrame({"subject": ["x"], "p_answer": [0.5], "known": [True]})
    for fig in recall.figures({"recall": frame}, {}):
        assert isinstance(fig, go.Figure) and json.loads(fig.to_json())["data"]
