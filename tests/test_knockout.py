"""Stage knockout (attention knockout, Geva et al. 2023): the exact engine (last position only,
from the window's first layer, over the clean run's cached keys/values) equals the naive loop
(one full forward per blocked set and window) in float64 on a tiny model of every family and on
smollm2-135m; blocking removes exactly the listed edges of every query head; windows and the
default k follow Geva et al.; bad input is one line, exit 2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.localise import FAMILIES, tiny, tiny_prompts

from recallscope import knockout as K
from recallscope.cli import main
from recallscope.errors import UserError
from recallscope.models.view import ModelView
from recallscope.tasks import build_prompts, load_relation
from recallscope.tasks.prompts import make_batch


def run_both(model, prompts, **kw):
    config = K.KnockoutConfig(window=2, **kw)
    exact = K.knockout(model, prompts, dataclasses.replace(config, engine="exact"), progress=False)
    naive = K.knockout(model, prompts, dataclasses.replace(config, engine="naive"), progress=False)
    return exact, naive


@pytest.mark.parametrize("name", FAMILIES)
def test_exact_engine_equals_naive_loop_on_tiny_models(name):
    model = tiny(name)
    exact, naive = run_both(model, tiny_prompts(model=model))
    a, b = exact.to_frame(), naive.to_frame()
    assert len(a) == len(b) == 3 * 3 * model.cfg.n_layers
    assert np.abs(a["p_blocked"].to_numpy() - b["p_blocked"].to_numpy()).max() <= 1e-10
    assert np.abs(a["p_clean"] - b["p_clean"]).max() <= 1e-12
    # and the knockouts matter (the test could fail)
    assert a["relative_change_pct"].abs().max() > 1.0  # percent


def test_blocked_edges_get_zero_attention_in_every_query_head_and_nothing_else_changes():
    model = tiny("llama_gqa")  # grouped-query attention: 4 query heads share 2 key/value heads
    prompts = tiny_prompts(model=model)
    batch = make_batch(list(prompts.prompts), 0)
    keys = K.blocked_keys(batch, "subject")
    S = batch.input_ids.shape[1]
    positions = torch.arange(S)[None].expand(len(prompts), S)
    clean = model.view.trace(batch.input_ids, batch.attention_mask, positions=positions, record=["pattern", "resid_pre"])
    blocked = model.view.trace(
        batch.input_ids,
        batch.attention_mask,
        positions=positions,
        record=["pattern", "resid_pre"],
        edits={("attn_bias", 0): K.block_edit(keys)},
    )
    last = blocked.pattern[:, 0, :, -1]  # [B, H, S] the last query at layer 0, every query head
    assert last[keys[:, None].expand_as(last)].abs().max().item() == 0.0
    assert torch.allclose(last.sum(-1), torch.ones_like(last.sum(-1)))
    # earlier queries are untouched at layer 0, and earlier positions at every layer
    assert torch.equal(blocked.pattern[:, 0, :, :-1], clean.pattern[:, 0, :, :-1])
    assert torch.equal(blocked.resid_pre[:, :-1], clean.resid_pre[:, :-1])


def test_blocked_sets_partition_the_earlier_positions():
    model = tiny("gpt2")
    prompts = tiny_prompts(model=model)
    batch = make_batch(list(prompts.prompts), 0)
    subject, other, last = (K.blocked_keys(batch, b) for b in K.BLOCKS)
    real = batch.attention_mask.bool()
    assert torch.equal(subject | other | last, real)
    assert not (subject & other).any() and not (subject & last).any() and not (other & last).any()
    assert subject.sum(1).tolist() == [p.subject_n_tokens for p in prompts.prompts]


def test_default_window_scales_gevas_nine_of_forty_eight():
    assert K.default_window(48) == 9
    assert K.default_window(30) == 6
    assert K.default_window(2) == 1


def test_relative_change_and_intervals():
    model = tiny("opt")
    result = K.knockout(model, tiny_prompts(model=model), K.KnockoutConfig(window=1), progress=False)
    f, w = result.to_frame(), result.windows
    assert np.allclose(f["relative_change_pct"], 100 * (f["p_blocked"] - f["p_clean"]) / f["p_clean"])
    row = w[(w["block"] == "subject") & (w["layer"] == 0)].iloc[0]
    assert row["mean_relative_change_pct"] == pytest.approx(
        f[(f["block"] == "subject") & (f["layer"] == 0)]["relative_change_pct"].mean(), abs=1e-12
    )
    assert row["ci_low"] <= row["mean_relative_change_pct"] <= row["ci_high"]


def test_reads_subject_claim():
    model = tiny("gpt2")
    result = K.knockout(model, tiny_prompts(model=model), K.KnockoutConfig(window=1), progress=False)
    dip = result.dip("subject")
    claim = K.reads_subject_claim(result.windows, result.to_dict(), [dip["layer"]])
    assert claim.value == pytest.approx(dip["mean_relative_change_pct"])
    assert claim.verdict in ("holds", "does not hold", "inconclusive")
    assert K.reads_subject_claim(result.windows, result.to_dict(), []).verdict == "not measurable here"
    assert K.reads_subject_claim(None, None, [1]).verdict == "not measurable here"


@pytest.mark.parametrize(
    "config, match",
    [
        (K.KnockoutConfig(window=3), "larger than the model"),
        (K.KnockoutConfig(window=0), ">= 1"),
        (K.KnockoutConfig(blocks=("verb",)), "unknown"),
    ],
)
def test_bad_settings_are_user_errors(config, match):
    with pytest.raises(UserError, match=match):
        K.knockout(tiny("gpt2"), tiny_prompts(), config, progress=False)


def test_a_subject_not_located_is_a_user_error():
    with pytest.raises(UserError, match="cannot be located"):
        K.knockout(tiny("gpt2"), tiny_prompts(lengths=(5,), spans=((3, 5),)), K.KnockoutConfig(window=1), progress=False)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "knockout.window=0"], "knockout.window"),
        (["--set", "knockout.blocks=verb"], "knockout.blocks"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["knockout", "--max-prompts", "3", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("recallscope: error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err


def test_figure_from_tables_one_line_per_block_and_mover_layers_marked():
    from recallscope import figures
    from recallscope.figures import knockout as FK

    rows = [
        {
            "block": b,
            "layer": layer,
            "first_layer": layer,
            "last_layer": layer,
            "mean_relative_change_pct": -10.0 * i - layer,
            "ci_low": -50.0,
            "ci_high": 0.0,
            "n_prompts": 3,
        }
        for i, b in enumerate(K.BLOCKS)
        for layer in range(4)
    ]
    fig = FK.figures(
        {"knockout": pd.DataFrame(), "windows": pd.DataFrame(rows)}, {"window": 1, "n_prompts": 3, "mover_layers": [2]}
    )[0]
    assert figures.for_stage("knockout") is FK.figures
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == [FK.NAMES[b] for b in K.BLOCKS]
    assert list(lines[1].y) == [-10.0, -11.0, -12.0, -13.0]
    assert [s.x0 for s in fig.layout.shapes if s.line.dash == "dot"] == [2]


@pytest.mark.slow
def test_exact_equals_naive_on_smollm2_subset_in_float64(smollm2):
    model = dataclasses.replace(smollm2, view=ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64)))
    ps = build_prompts(load_relation("paper_country_capital"), smollm2.tokenizer, shots=0, seed=0, max_prompts=2)
    config = K.KnockoutConfig()  # k = 6 of 30 layers
    exact = K.knockout(model, ps, config, progress=False)
    naive = K.knockout(model, ps, dataclasses.replace(config, engine="naive"), progress=False)
    a, b = exact.to_frame(), naive.to_frame()
    assert np.abs(a["p_blocked"].to_numpy() - b["p_blocked"].to_numpy()).max() <= 1e-10
    assert np.abs(a["relative_change_pct"]).max() > 1.0


def _windows(dip: float, ci_high: float, control: float) -> pd.DataFrame:
    """A knockout windows table of a 12-layer model: the subject curve dips at the window 4..6."""
    rows = []
    for centre in range(1, 11):
        first, last = centre - 1, centre + 1
        sub = dip if centre == 5 else -0.1
        rows.append(
            {
                "block": "subject",
                "layer": centre,
                "first_layer": first,
                "last_layer": last,
                "mean_relative_change_pct": sub,
                "ci_low": sub - 2.0,
                "ci_high": ci_high if centre == 5 else 0.5,
            }
        )
        rows.append(
            {
                "block": "non_subject",
                "layer": centre,
                "first_layer": first,
                "last_layer": last,
                "mean_relative_change_pct": control,
                "ci_low": control - 1,
                "ci_high": control + 1,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("dip", "ci_high", "control", "movers", "verdict", "margin"),
    [
        (-60.0, -50.0, -5.0, [5], "holds", 40.0),  # a mechanism: a deep dip where the mover sits
        (-0.5, -0.01, 0.0, [5], "does not hold", -9.99),  # a random model: [-2.5, -0.01], wholly above the 10% floor
        (-12.0, -8.0, 0.0, [5], "inconclusive", -2.0),  # [-14, -8] straddles the floor: undecided
        (-60.0, -50.0, -5.0, [9], "does not hold", -1.0),  # the dip is not where the mover is (that condition decides)
        (-60.0, -50.0, -80.0, [5], "does not hold", -30.0),  # the non-subject control drops below the whole dip interval
    ],
)
def test_reads_subject_claim_floor_and_conditions(dip, ci_high, control, movers, verdict, margin):
    claim = K.reads_subject_claim(_windows(dip, ci_high, control), {"window": 3}, movers)
    assert (claim.verdict, claim.value) == (verdict, dip)
    assert claim.margin == pytest.approx(margin)  # the deciding condition's: below 0 unless it holds
    if verdict == "does not hold" and abs(dip) < 10:
        # the floor decides: below a floor of 2.5% (the dip's interval low end, −2.5%) the interval would straddle it
        assert claim.flips_at == pytest.approx(-(dip - 2.0))
    elif verdict == "does not hold":  # a derived threshold decides (mover layers, the control): no setting flips it
        assert claim.flips_at is None
