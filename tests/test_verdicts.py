"""The claims as the report and the terminal read them (recallscope.verdicts): ids, the deciding
statistic, the conditions, a sweep's claims × cells grid."""

from __future__ import annotations

from helpers.demo_claims import CONDITIONS, ROWS

from recallscope import verdicts
from recallscope.causal_trace import CLAIM_MLP_PEAK
from recallscope.claims import CLAIM_INTERCEPT, CLAIM_MITIGATE, CLAIM_MLP, CLAIM_MOVERS, CLAIM_SHOTS, CLAIM_SUPPRESS
from recallscope.knockout import CLAIM_READS_SUBJECT
from recallscope.onset import CLAIM_DOMAIN_EARLIER, CLAIM_MOVE_EARLIER
from recallscope.surgery import CLAIM_NECESSARY

C1 = ROWS[0]
C1_CONDITIONS = [c for c in CONDITIONS if c["claim"] == CLAIM_MOVERS]  # OV share, attention, scatter r


def test_ids_are_the_numbers_of_the_package_claims():
    assert [
        verdicts.IDS[c]
        for c in (
            CLAIM_MOVERS,
            CLAIM_MLP,
            CLAIM_INTERCEPT,
            CLAIM_SUPPRESS,
            CLAIM_MITIGATE,
            CLAIM_SHOTS,
            CLAIM_MLP_PEAK,
            CLAIM_READS_SUBJECT,
            CLAIM_NECESSARY,
            CLAIM_MOVE_EARLIER,
            CLAIM_DOMAIN_EARLIER,
        )
    ] == [f"C{i}" for i in range(1, 12)]
    assert verdicts.claim_id({"claim": "something else"}, 4) == "#5"
    assert verdicts.claim_id({"claim": CLAIM_MOVERS, "id": "X1"}, 0) == "X1"  # a table that carries its ids wins


def test_four_verdicts_four_kinds():
    assert [verdicts.kind(v) for v in ("holds", "does not hold", "inconclusive", "not measurable here", "?")] == [
        "holds",
        "fails",
        "inconclusive",
        "na",
        "other",
    ]


def test_the_demo_c1_is_decided_by_the_scatter_r_not_by_its_primary_figure():
    """The demo's C1: value 1 [1, 1] against 0.5, yet it does not hold: the scatter r's lower end, 0.121, decided."""
    (v,) = verdicts.views([C1], C1_CONDITIONS)
    assert (v.id, v.kind, v.primary()) == ("C1", "fails", "1 [1, 1]")
    d = v.deciding
    assert (d.label, d.is_primary, d.value, d.compared, d.interval(), d.against()) == (
        "scatter r (attention vs a·W_U[X])",
        False,
        None,
        0.1215,
        "low 0.121",
        "≥ 0.5",
    )
    assert [(c.status, c.mark, c.text()) for c in v.conditions] == [
        ("met", "✓", "OV top-5 share of X (context): low 1 ≥ 0.5"),
        ("met", "✓", "mean attention end → subject: low 0.906 ≥ 0.3"),
        ("failed", "✗", "scatter r (attention vs a·W_U[X]): low 0.121 ≥ 0.5"),
    ]
    # once the claims table carries the deciding statistic's interval, that is what is shown
    (v,) = verdicts.views([{**C1, "decided_value": 0.555, "decided_ci_low": 0.1215, "decided_ci_high": 0.83}], C1_CONDITIONS)
    assert v.deciding.interval() == "0.555 [0.121, 0.83]" and v.figure() == "0.555 [0.121, 0.83]"


def test_the_primary_condition_decides_with_the_primary_interval_and_a_status_column_is_read():
    row = {
        "claim": CLAIM_MITIGATE,
        "value": 0.0711,
        "ci_low": 0.0332,
        "ci_high": 0.117,
        "verdict": "inconclusive",
        "decided_by": "Δp(Y), interval low",
        "threshold": 0.01,
        "prompts_needed": 139.6,
    }
    cond = {
        "claim": CLAIM_MITIGATE,
        "condition": "Δp(Y), interval low",
        "statistic": 0.0332,
        "op": ">",
        "threshold": 0.01,
        "margin": 0.0232,
        "holds": False,
        "status": "straddles",
    }
    (v,) = verdicts.views([row], [cond])
    assert v.deciding.is_primary and v.deciding.interval() == "0.0711 [0.0332, 0.117]" and v.deciding.against() == "> 0.01"
    assert [(c.status, c.mark) for c in v.conditions] == [("straddles", "?")]
    assert v.needed() == "≈ 140 known prompts would decide it"


def test_a_sweep_grid_counts_each_claim_and_spans_a_claim_across_shot_counts():
    cells = [
        {
            "relation": "a",
            "shots": k,
            "folder": f"a/{k}shot",
            "anchor": f"run-{i}",
            "claims": [{**C1, "verdict": v}],
            "sensitivity": C1_CONDITIONS,
        }
        for i, (k, v) in enumerate(((0, "holds"), (3, "does not hold")))
    ] + [
        {
            "relation": "b",
            "shots": 0,
            "folder": "b/0shot",
            "anchor": "run-2",
            "claims": [{"claim": CLAIM_MOVERS, "verdict": "not measurable here"}],
        },
        {"relation": "b", "shots": 3, "folder": "b/3shot", "anchor": "run-3", "claims": [{**C1, "verdict": "inconclusive"}]},
    ]
    shot_claims = [
        {"claim": CLAIM_SHOTS, "relation": "a", "value": 8, "ci_low": 6, "ci_high": 8, "verdict": "holds"},
        {"claim": CLAIM_SHOTS, "relation": "b", "value": 2, "ci_low": 0, "ci_high": 4, "verdict": "does not hold"},
    ]
    grid = verdicts.grid(cells, shot_claims)
    assert [r.id for r in grid.rows] == ["C1", "C6"]
    c1, c6 = grid.rows
    assert [c.claim.kind for c in c1.cells] == ["holds", "fails", "na", "inconclusive"]
    assert [c.anchor for c in c1.cells] == ["run-0-claim-C1", "run-1-claim-C1", "run-2-claim-C1", "run-3-claim-C1"]
    assert c1.count() == "1/3 (1 inconclusive, 1 n/m)"
    # C6 is one verdict per relation, spanning that relation's cells, counted per relation
    assert [(c.claim.relation, c.span) for c in c6.cells] == [("a", 2), ("b", 2)] and c6.count() == "1/2"
    assert c6.cells[0].claim.figure() == "8 [6, 8]"  # no condition recorded for it: the primary figure
    # `recallscope claims runs/sweep` names each cell by its path below the working directory: the
    # relation is still the folder above the shot count (it printed relation a's C6 in b's cells too)
    deep = [{**c, "folder": f"runs/sweep/{c['folder']}"} for c in cells]
    c6 = verdicts.grid(deep, shot_claims).rows[1]
    assert [(c.claim.relation, c.span) for c in c6.cells] == [("a", 2), ("b", 2)]


def test_the_sensitivity_tables_state_estimate_and_interval_are_read():
    """The claims stage's four-verdict tables: a condition's ``state`` and its estimate with its
    interval; an inconclusive row's prompts needed beyond what the relation gives is said."""
    row = {**C1, "verdict": "inconclusive", "prompts_needed": 238, "prompts_available": 190}
    conditions = [
        {**C1_CONDITIONS[0], "state": "met"},
        {**C1_CONDITIONS[1], "state": "met"},
        {**C1_CONDITIONS[2], "state": "straddles", "estimate": 0.584, "ci_low": 0.224, "ci_high": 0.835},
    ]
    (v,) = verdicts.views([row], conditions)
    assert [c.status for c in v.conditions] == ["met", "met", "straddles"]
    assert v.conditions[2].text() == "scatter r (attention vs a·W_U[X]): 0.584 [0.224, 0.835] ≥ 0.5"
    assert v.deciding.interval() == "0.584 [0.224, 0.835]"  # from its condition's row
    assert v.beyond_relation() and v.needed() == "≈ 238 known prompts would decide it — more than the relation can give (≈ 190)"
    (within,) = verdicts.views([{**row, "prompts_available": 238}], conditions)  # exactly enough: not beyond
    assert not within.beyond_relation() and within.needed() == "≈ 238 known prompts would decide it"
    (decided,) = verdicts.views([{**row, "verdict": "does not hold"}], conditions)
    assert not decided.beyond_relation() and decided.needed() is None


def test_the_deciding_condition_is_matched_by_name_comparison_and_threshold():
    """C7 tests the peak window centre twice (>= 7.5 and < 22.5): the report marked both as deciding
    ("✗ ✓ decided by peak window centre … ≥ 7.5") and hid the met one."""
    row = {
        "claim": CLAIM_MLP_PEAK,
        "verdict": "does not hold",
        "value": 0.619,
        "decided_by": "peak window centre",
        "decided_value": 1.0,
        "threshold": 7.5,
    }
    conds = [
        {"claim": CLAIM_MLP_PEAK, "condition": "largest mean IE", "statistic": 0.51, "op": ">=", "threshold": 0.01, "margin": 0.5,
         "state": "met"},
        {"claim": CLAIM_MLP_PEAK, "condition": "peak window centre", "statistic": 1.0, "op": ">=", "threshold": 7.5,
         "margin": -6.5, "state": "failed"},
        {"claim": CLAIM_MLP_PEAK, "condition": "peak window centre", "statistic": 1.0, "op": "<", "threshold": 22.5,
         "margin": 21.5, "state": "met"},
    ]  # fmt: skip
    (view,) = verdicts.views([row], conds)
    decided = view.deciding_condition()
    assert (decided.op, decided.threshold, decided.status) == (">=", 7.5, "failed")
    assert [c.threshold for c in view.conditions if c is not decided] == [0.01, 22.5]


def test_leading_first_puts_the_verdict_and_the_deciding_statistic_first():
    # a run written when the primary figure led reads in the new order
    old = ["claim", "stage", "about", "measure", "value", "ci_low", "ci_high", "decided_by", "decided_value", "verdict"]
    assert verdicts.leading_first(old) == [
        "claim",
        "verdict",
        "decided_by",
        "decided_value",
        "stage",
        "about",
        "measure",
        "value",
        "ci_low",
        "ci_high",
    ]


def test_only_a_claim_about_some_component_names_the_one_that_decided():
    """C4 (smollm2-135m, country_capital_extended, 16 prompts) held on L29H0's mean DLA -1.44 while the
    final layer as a whole added +4.63 logits to Y: its verdict line says "decided by L29H0"."""
    rows = [
        {"claim": "The final layer suppresses the correct answer", "about": "L29H0", "verdict": "holds", "value": -1.44},
        {"claim": "Mover heads move the topic (subject) to the last position", "about": "L23H4", "verdict": "inconclusive"},
        {"claim": "Removing the final-layer suppressors raises confidence in the answer", "about": "L29H0, L29H3",
         "verdict": "holds"},
    ]  # fmt: skip
    c4, c1, c5 = verdicts.views(rows, [])
    assert (c4.decider_line(), c1.decider_line(), c5.decider_line()) == (
        "decided by L29H0", "figures of L23H4; no candidate holds", None)  # fmt: skip
