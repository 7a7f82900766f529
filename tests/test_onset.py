"""The onset stage (recallscope.onset) and its two claims across shot counts, C10 and C11.

- The per-layer figures equal a naive computation on tiny models of every family (float64): the heads'
  summed write along u_X is the attention output's (minus its bias) direct contribution to π(X) read
  from the V-wide logit lens, the lens's answer-domain share is each prompt run alone through the
  ordinary logit lens, p(Y) the model's softmax.
- ``onsets`` reads the onset layers off the layer table (first crossing; NaN without a move; L = never).
- The verdict logic of ``earlier_claims`` on tables whose answer is known: holds, does not hold (on the
  shift, and on the move floor), inconclusive with the prompts that would decide it, paired against
  independent, not measurable.
- The controls: ``planted`` has no demonstration mechanism (its movers act in layer 1 and the domain
  appears after layer 1 at every shot count), so both rows *do not hold* there, each on a shift of
  exactly 0 with the move floor met; on ``random`` C10 fails on its floor and C11 on a zero shift (the
  domain never appears).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.tiny import CONFIGS, random_prompts, tiny_view
from recallscope import cli, pipeline
from recallscope.display import fmt
from recallscope.claims import FAILED, FAILS, HOLDS, INCONCLUSIVE, MET, NOT_MEASURABLE, ClaimsConfig
from recallscope.figures import onset as onset_figures
from recallscope.figures import shots as shots_figures
from recallscope.lens import logit_lens, recall_metric, token_attribution
from recallscope.models import controls
from recallscope.onset import (
    CLAIM_DOMAIN_EARLIER,
    CLAIM_MOVE_EARLIER,
    OnsetConfig,
    earlier_claims,
    first_crossing,
    measure_onsets,
    onsets,
)
from recallscope.report.html import render_report
from recallscope.rundir import RunDir
from recallscope.tasks.prompts import Prompt

FAMILIES = sorted(name for name in CONFIGS if name != "gemma3_multimodal")
PAD = 0


def _prompts(seed: int = 3) -> list[Prompt]:
    out = []
    for i, ids in enumerate(random_prompts(seed)):
        lo = 1 if len(ids) > 3 else 0
        out.append(
            Prompt(
                text=f"p{i}",
                subject=f"s{i}",
                answer=f"a{i}",
                template="t",
                demos=(),
                input_ids=tuple(ids),
                subject_span=(lo, lo + 1),
                answer_id=5 + i,
                index=i,
            )
        )
    return out


# ----------------------------------------------------------------------------- the stage against naive loops
@pytest.mark.parametrize("name", FAMILIES)
def test_token_attribution_is_the_lens_read_at_the_token(name):
    view = tiny_view(name)
    ids = torch.tensor([p.input_ids[-4:] for p in _prompts() if len(p.input_ids) >= 4])
    t = view.trace(ids, record=("attn_out", "resid_final"))
    rf, x = t.resid_final[:, 0], ids[:, 1]
    for layer in range(view.cfg.n_layers):
        v = t.attn_out[:, 0, layer]
        naive = recall_metric(logit_lens(view, v, reference=rf), x)
        assert (token_attribution(view, v, rf, x) - naive).abs().max().item() <= 1e-9


@pytest.mark.parametrize("name", FAMILIES[:3])
def test_the_mover_heads_write_is_their_heads_summed_one_prompt_at_a_time(name):
    """With ``movers`` the move is timed by those heads only: attn_write_x at layer l is the sum over the
    movers of layer l of each head's lens read at X (a naive loop over heads, float64); every head's
    sum stays beside it; the summary names the heads. No mover, or a head outside the model, is refused."""
    view = tiny_view(name)
    prompts = _prompts()
    L, H = view.cfg.n_layers, view.cfg.n_heads
    movers = [(0, H - 1), (L - 1, 0), (L - 1, H - 1)]
    cfg = OnsetConfig(batch_size=3)
    res = measure_onsets(view, prompts, [5, 6, 7], cfg, pad_id=PAD, progress=False, movers=movers)
    every = measure_onsets(view, prompts, [5, 6, 7], cfg, pad_id=PAD, progress=False)
    assert res.to_dict()["move_heads"] == f"the mover heads L0H{H - 1}, L{L - 1}H0, L{L - 1}H{H - 1}"
    assert every.to_dict()["move_heads"] == "every head" and every.to_dict()["movers"] is None
    assert res.layers["attn_write_x_every_head"].to_numpy() == pytest.approx(every.layers["attn_write_x"].to_numpy(), abs=1e-12)
    for p in prompts:
        t = view.trace(torch.tensor([p.input_ids]), record=("head_out", "resid_final"))
        rf, x = t.resid_final[:, 0], torch.tensor([p.subject_id])
        rows = res.layers[res.layers["prompt_index"] == p.index].sort_values("layer")
        for layer in range(L):
            naive = sum(
                recall_metric(logit_lens(view, t.head_out[:, 0, layer, h], reference=rf), x).item()
                for (ml, h) in movers
                if ml == layer
            )
            assert rows["attn_write_x"].iloc[layer] == pytest.approx(naive, abs=1e-9), (name, p.index, layer)
        assert rows["attn_write_x_cumulative"].to_numpy() == pytest.approx(np.cumsum(rows["attn_write_x"].to_numpy()))
    # the move layer is read off the movers' running write (onsets on the table); every head's is kept apart
    np.testing.assert_array_equal(
        res.frame["move_layer"].to_numpy(), onsets(res.layers, cfg.move_fraction, cfg.min_domain_share)["move_layer"].to_numpy()
    )
    from recallscope.errors import UserError

    with pytest.raises(UserError, match="no mover head"):
        measure_onsets(view, prompts, [5], cfg, pad_id=PAD, progress=False, movers=[])
    with pytest.raises(UserError, match=f"L{L}H0 are outside"):
        measure_onsets(view, prompts, [5], cfg, pad_id=PAD, progress=False, movers=[(L, 0)])


def test_a_run_times_the_move_by_the_heads_patching_names(tmp_path):
    """In a run with the movers stage, the onset stage reads the heads claim C1 tests (claims.patching_movers):
    on ``planted`` the mover L1H0 among them; C10 says which heads timed the move at each count."""
    from recallscope.claims import patching_movers

    got = pipeline.execute_many(
        pipeline.RunConfig(model="planted", max_prompts=40),
        [RELATION],
        [0, 3],
        ["patch", "movers", "onset", "claims"],
        out=str(tmp_path),
        progress=False,
    )
    for run in got["runs"]:
        stages = run["stages"]
        heads = patching_movers(stages["movers"], ClaimsConfig())
        assert stages["onset"]["movers"] == [
            {"layer": h["layer"], "head": h["head"]} for h in sorted(heads, key=lambda h: (h["layer"], h["head"]))
        ]
        assert {"layer": 1, "head": 0} in stages["onset"]["movers"]
        frame = RunDir(tmp_path / run["path"]).read_table("onset")
        assert (frame["move_layer"] == 1).all()
    move = _onset_rows(got)[CLAIM_MOVE_EARLIER]
    assert move["verdict"] == FAILS and move["value"] == 0.0 and move["every_head_shift"] == 0.0
    assert "timed by the mover heads" in move["detail"] and "L1H0" in move["detail"]
    # the mover heads' onset can only be a layer a mover sits in: the row says so (a new user read 0 [0, 0] as
    # "demonstrations do not speed up the move")
    assert (
        "they sit in layers 1, 2 at 0 shots and 1, 2 at 3 shots: their move onset can only be one of those layers"
        in move["detail"]
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_the_layer_table_equals_a_naive_loop_one_prompt_at_a_time(name):
    view = tiny_view(name)
    prompts = _prompts()
    domain = [5, 6, 7, 8, 9, 10, 11, 40, 41]
    cfg = OnsetConfig(domain_top_k=7, min_domain_share=0.2, batch_size=3)
    res = measure_onsets(view, prompts, domain, cfg, pad_id=PAD, progress=False)
    L = view.cfg.n_layers
    assert len(res.layers) == len(prompts) * L and res.n_layers == L
    dom = torch.tensor(domain)
    for p in prompts:
        ids = torch.tensor([p.input_ids])
        t = view.trace(ids, record=("attn_out", "head_out", "resid_pre", "resid_final", "logits", "z"))
        rf = t.resid_final[:, 0]
        x = torch.tensor([p.subject_id])
        rows = res.layers[res.layers["prompt_index"] == p.index].sort_values("layer")
        for layer in range(L):
            # the heads' share of the attention output: attn_out minus the bias share (Σ_h head_out + bias = attn_out)
            raw = view.attn_raw(layer, t.z[:, :, layer]) if view.cfg.post_attn_norm else None
            bias = view.head_bias(layer, raw)
            heads = t.attn_out[:, 0, layer] - (
                bias[:, 0] if bias is not None and bias.dim() == 3 else bias if bias is not None else 0.0
            )
            naive = recall_metric(logit_lens(view, heads, reference=rf), x).item()
            assert rows["attn_write_x"].iloc[layer] == pytest.approx(naive, abs=1e-9), (name, p.index, layer)
            state = t.resid_pre[:, 0, layer + 1] if layer + 1 < L else rf
            top = view.logits_from_resid(state).topk(7, -1).indices
            assert rows["lens_domain_share"].iloc[layer] == torch.isin(top, dom).double().mean().item()
        assert rows["attn_write_x_cumulative"].to_numpy() == pytest.approx(np.cumsum(rows["attn_write_x"].to_numpy()))
        p_y = torch.softmax(t.logits[0, 0].double(), -1)[p.answer_id].item()
        assert res.frame.loc[p.index, "p_answer"] == pytest.approx(p_y, rel=1e-12)
    # the short repr's headline: the summary's mean onsets and p(Y)
    s = res.to_dict()
    text = repr(res)
    assert f"move onset: mean layer {fmt(s['mean_move_layer'])}" in text and f"p(Y) {fmt(s['mean_p_answer'])}" in text
    assert f"reached on {s['n_domain_reached']} prompts" in text


def test_onsets_read_the_first_crossing_off_the_layer_table():
    assert first_crossing(np.array([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]]), np.array([1.0, 0.5])).tolist() == [1, 3]
    layers = pd.DataFrame(
        {
            "prompt_index": np.repeat([0, 1, 2], 4),
            "layer": np.tile(np.arange(4), 3),
            # prompt 0 peaks at 4 (layer 2): half of it is reached at layer 1; prompt 1 never moves X (peak ≤ 0)
            "attn_write_x_cumulative": [1.0, 2.0, 4.0, 3.0, -1.0, -2.0, -0.5, -3.0, 0.0, 0.0, 0.0, 5.0],
            "lens_domain_share": [0.0, 0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5],
        }
    )
    got = onsets(layers.sample(frac=1.0, random_state=0), move_fraction=0.5, min_domain_share=0.2)
    assert got.index.tolist() == [0, 1, 2]
    assert got["move_peak"].tolist() == [4.0, -0.5, 5.0]
    assert got["move_layer"].tolist()[0] == 1 and math.isnan(got["move_layer"].iloc[1]) and got["move_layer"].iloc[2] == 3
    assert got["domain_layer"].tolist() == [2, 4, 0]  # 4 = L: the domain never appears
    assert onsets(layers, 1.0, 0.35)["move_layer"].tolist()[::2] == [2, 3]


# ----------------------------------------------------------------------------- the verdict logic
def _cell(shots: int, move: list, domain: list, peak: float = 5.0, p: float = 0.5, templates=None, L: int = 10):
    """A cell's onset tables whose onsets are ``move`` and ``domain`` (per prompt), from cumulative writes that
    jump to ``peak`` at the move layer and domain shares that jump to 1 at the domain layer."""
    n = len(move)
    cumulative = np.array([[peak * (layer >= m) if m == m else 0.0 for layer in range(L)] for m in move])
    share = np.array([[1.0 * (layer >= d) for layer in range(L)] for d in domain])
    layers = pd.DataFrame(
        {
            "prompt_index": np.repeat(np.arange(n), L),
            "layer": np.tile(np.arange(L), n),
            "attn_write_x": np.diff(cumulative, axis=1, prepend=0.0).ravel(),
            "attn_write_x_cumulative": cumulative.ravel(),
            "lens_domain_share": share.ravel(),
        }
    )
    main = pd.DataFrame(
        {"prompt_index": np.arange(n), "subject": [f"s{i}" for i in range(n)], "template": templates or ["t"] * n, "p_answer": p}
    )
    summary = {"n_layers": L, "thresholds": OnsetConfig().thresholds()}
    return (shots, main, layers, summary)


CFG = ClaimsConfig(n_bootstrap=500)


def _rows(low, high, cfg=CFG):
    move, domain = earlier_claims("rel", low, high, cfg)
    assert (move.claim, domain.claim) == (CLAIM_MOVE_EARLIER, CLAIM_DOMAIN_EARLIER)
    return move, domain


def test_earlier_onsets_on_every_prompt_hold():
    low = _cell(0, [6] * 12, [9] * 12, p=0.3)
    high = _cell(3, [4] * 12, [7] * 12, p=0.8)
    move, domain = _rows(low, high)
    assert move.verdict == domain.verdict == HOLDS
    assert (move.value, move.ci_low, move.ci_high) == (-2.0, -2.0, -2.0)
    assert move.evidence["pairing"] == "paired" and move.evidence["n_paired"] == 12
    assert (move.evidence["onset_fewest"], move.evidence["onset_most"]) == (6.0, 4.0)
    assert (move.evidence["p_fewest"], move.evidence["p_most"]) == pytest.approx((0.3, 0.8))
    shift, floor = move.conditions
    assert shift.state() == floor.state() == MET and floor.estimate == 5.0 and shift.setting == "claims.min_onset_shift"
    assert move.margin == 2.0  # the primary's statistic (high end −2) below −0
    # a shift threshold past 2 layers turns it: flips_at is that setting
    assert move.flips_at == pytest.approx(2.0)
    assert _rows(low, high, ClaimsConfig(n_bootstrap=500, min_onset_shift=2.5))[0].verdict == FAILS


def test_no_shift_does_not_hold_and_a_weak_move_fails_on_its_floor():
    same = _rows(_cell(0, [5] * 10, [8] * 10), _cell(3, [5] * 10, [8] * 10))
    assert [c.verdict for c in same] == [FAILS, FAILS]
    assert same[0].conditions[0].state() == FAILED and same[0].conditions[1].state() == MET
    assert (same[1].ci_low, same[1].ci_high) == (0.0, 0.0)
    assert same[1].detail.endswith("= 0, needs < 0")  # the threshold −min_onset_shift printed as 0, not −0
    assert same[1].flips_at == 0.0 and math.copysign(1.0, same[1].flips_at) == 1.0  # +0, not −0 ("flips at -0")
    # earlier onsets but a transport of a tenth of a logit: the floor fails, whatever the shift says
    weak = _rows(_cell(0, [6] * 10, [9] * 10, peak=0.1), _cell(3, [4] * 10, [7] * 10, peak=0.1))[0]
    assert weak.verdict == FAILS and weak.decided_by.startswith("the attention's peak write")
    assert weak.conditions[0].state() == MET and weak.conditions[1].state() == FAILED


def test_a_few_mixed_prompts_are_inconclusive_with_the_prompts_that_would_decide_them():
    low = _cell(0, [5, 5, 5, 5, 5, 5], [8] * 6)
    high = _cell(3, [3, 6, 4, 5, 6, 4], [8, 7, 8, 9, 8, 7])
    move, domain = _rows(low, high)
    assert move.verdict == domain.verdict == INCONCLUSIVE
    assert move.value == pytest.approx(-1 / 3) and move.ci_low < 0 < move.ci_high
    assert move.prompts_needed is not None and move.prompts_needed > 6


def test_independent_when_the_shot_counts_share_no_prompt_and_not_measurable_without_the_stage():
    low = _cell(0, [6] * 8, [9] * 8, templates=["zero-shot template"] * 8)
    high = _cell(3, [4] * 10, [9] * 10)
    move, domain = _rows(low, high)
    assert move.evidence["pairing"] == "independent" and move.evidence["n_paired"] == 0
    assert move.verdict == HOLDS and move.value == -2.0 and move.conditions[0].n == 8
    assert domain.verdict == FAILS
    missing = _rows((0, None, None, None), high)
    assert [c.verdict for c in missing] == [NOT_MEASURABLE, NOT_MEASURABLE]
    assert "did not run at 0 and 3 shots" in missing[0].detail


def test_prompts_without_a_move_leave_the_shift_and_the_thresholds_come_from_the_summary():
    low = _cell(0, [6, 6, float("nan"), 6], [9] * 4)
    high = _cell(3, [4, 4, 4, float("nan")], [9] * 4)
    move = _rows(low, high)[0]
    assert move.conditions[0].n == 2 and "2 prompt-counts without an onset" in move.detail
    # the onsets are read again with the summary's thresholds (claims --set onset.min_domain_share=…)
    zero = _cell(0, [5] * 6, [9] * 6)
    three = _cell(3, [5] * 6, [9] * 6)
    lay = three[2]
    lay.loc[lay["layer"].isin([7, 8]), "lens_domain_share"] = 0.3  # a first, partial appearance at layer 7
    assert _rows(zero, three)[1].value == pytest.approx(-2.0)  # 0.3 ≥ 0.2: at 3 shots the domain appears at layer 7
    strict = {"thresholds": {"move_fraction": 0.5, "min_domain_share": 0.5}, "n_layers": 10}
    assert _rows((*zero[:3], strict), (*three[:3], strict))[1].value == 0.0  # at 0.5 it appears at layer 9 at both


# ----------------------------------------------------------------------------- the controls
RELATION = controls.PLANTED["relation"]


def _sweep(model: str, out, **settings) -> dict:
    base = pipeline.RunConfig(model=model, max_prompts=40)
    return pipeline.execute_many(
        base, [RELATION], [0, 1, 3], ["onset", "claims"], out=str(out), overrides=settings, progress=False
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("onset-planted")
    return out, _sweep("planted", out)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("onset-random")
    return out, _sweep("random", out, **{"recall.known_top_k": 49152})


# A planted model WITH a demonstration mechanism (test-only; the shipped ``planted`` control has none): the
# relation's answer tokens Y get an embedding along v (the answer-domain coordinate, which no planted
# head or MLP reads at a non-end position), and head L0H0 attends from the end token to them (key on v,
# score DEMO_SCORE) and writes DEMO_WRITE·v at the end. A 0-shot prompt holds no answer token: the head
# finds nothing (every score 0, every value 0) and the model is the planted one exactly. A k-shot prompt
# holds k demonstration answers: after layer 0 the end's logit lens already ranks the answers first, so
# the answer domain appears at layer 0 instead of layer 1 (b, MLP 1) — an earlier domain onset by
# construction, on every prompt. The mover is untouched (L1H0 at every shot count): C10 stays a zero shift.
DEMO_SCORE, DEMO_WRITE = 10.0, 1.0


def planted_with_demonstrations():
    from recallscope.models import load_model
    from recallscope.models.loading import load_in_memory

    base = load_model("planted")
    hf, tok = base.hf_model, base.tokenizer
    d, dh, row = controls.D_MODEL, controls.D_HEAD, controls.ROTARY_DIM  # row: the near position-free rotary coordinate
    x_end = controls.GAMMA / math.sqrt(controls.GAMMA**2 / d + 1e-5)  # the normed end token's e_end entry
    x_y = math.sqrt(d)  # a Y token's normed v entry (its only coordinate, 1 before the norm)
    with torch.no_grad():
        for y in controls.planted_tokens(tok)["answers"]:
            hf.model.embed_tokens.weight[y, controls.V_COORD] = 1.0
        attn = hf.model.layers[0].self_attn
        attn.q_proj.weight[row, controls.E_END] = 1.0
        attn.k_proj.weight[row, controls.V_COORD] = DEMO_SCORE / (x_end * x_y * dh**-0.5)
        attn.v_proj.weight[0, controls.V_COORD] = 1.0
        attn.o_proj.weight[controls.V_COORD, 0] = DEMO_WRITE / x_y
    return load_in_memory(hf, tok)


@pytest.fixture(scope="module")
def planted_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("onset-planted-demos")
    base = pipeline.RunConfig(model="planted", max_prompts=40)
    got = pipeline.execute_many(
        base, [RELATION], [0, 3], ["onset", "claims"], out=str(out), model=planted_with_demonstrations(), progress=False
    )
    return out, got


def _onset_rows(summary: dict) -> dict:
    return {c["claim"]: c for c in summary["claims"] if c["claim"] in (CLAIM_MOVE_EARLIER, CLAIM_DOMAIN_EARLIER)}


def test_planted_has_no_demonstration_mechanism_and_both_rows_say_so(planted):
    """The planted movers act in layer 1 and b (MLP 1) puts the answers on top after layer 1, at 0, 1 and
    3 shots alike (controls module docstring): every prompt's onsets are layer 1 at every shot count, so
    the shift is exactly 0 — failed, *does not hold* — while the subject's transport clears its floor (the
    row fails on the shift, not for want of a move)."""
    out, summary = planted
    for run in summary["runs"]:
        frame = RunDir(out / run["path"]).read_table("onset")
        assert len(frame) == 40 and (frame["move_layer"] == 1).all() and (frame["domain_layer"] == 1).all()
    rows = _onset_rows(summary)
    assert set(rows) == {CLAIM_MOVE_EARLIER, CLAIM_DOMAIN_EARLIER}
    for row in rows.values():
        assert row["verdict"] == FAILS and row["relation"] == RELATION
        assert (row["value"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0)
        assert row["decided_by"].startswith("mean ") and row["pairing"] == "paired" and row["n_paired"] == 40
        assert row["onset_fewest"] == row["onset_most"] == 1.0
    move = rows[CLAIM_MOVE_EARLIER]
    assert "3 − 0 shots" in move["decided_by"]
    # demonstrations dilute the planted mover's attention to X (the recency score): p(Y) falls with shots
    assert move["p_most"] < move["p_fewest"]


def test_a_planted_demonstration_mechanism_makes_the_domain_row_hold(planted_demos, planted):
    """The rule says *holds* where a model has what C11 states: with the test-only demonstration head the
    answer domain appears at layer 0 at 3 shots and at layer 1 at 0 shots on every prompt — a shift of
    exactly −1 layer, interval [−1, −1], holds; the move (L1H0 at both counts) is still a zero shift."""
    out, summary = planted_demos
    frames = {run["shots"]: RunDir(out / run["path"]).read_table("onset") for run in summary["runs"]}
    assert (frames[0]["domain_layer"] == 1).all() and (frames[3]["domain_layer"] == 0).all()
    assert (frames[0]["move_layer"] == 1).all() and (frames[3]["move_layer"] == 1).all()
    rows = _onset_rows(summary)
    domain, move = rows[CLAIM_DOMAIN_EARLIER], rows[CLAIM_MOVE_EARLIER]
    assert domain["verdict"] == HOLDS and (domain["value"], domain["ci_low"], domain["ci_high"]) == (-1.0, -1.0, -1.0)
    assert domain["pairing"] == "paired" and domain["n_paired"] == len(frames[0]) == 40
    assert move["verdict"] == FAILS and move["value"] == 0.0
    # the 0-shot model is the planted control exactly: the head finds no answer token there
    plain_out, plain = planted
    plain_zero = RunDir(plain_out / plain["runs"][0]["path"]).read_table("onset")
    assert plain["runs"][0]["shots"] == 0 and plain_zero.equals(frames[0])


def test_random_both_rows_do_not_hold_on_the_floor_and_on_a_zero_shift(random_run):
    out, summary = random_run
    rows = _onset_rows(summary)
    move, domain = rows[CLAIM_MOVE_EARLIER], rows[CLAIM_DOMAIN_EARLIER]
    assert move["verdict"] == domain["verdict"] == FAILS
    # random heads write hundredths of a logit along u_X: the floor's whole interval lies below 1 logit
    assert move["decided_by"].startswith("the attention's peak write") and move["decided_ci_high"] < 0.2
    # the answer domain never reaches the random model's lens: layer L at both counts, a zero shift
    assert (domain["value"], domain["ci_low"], domain["ci_high"]) == (0.0, 0.0, 0.0)
    assert domain["onset_fewest"] == domain["onset_most"] == 3


def test_claims_verb_reads_the_onsets_again_with_a_set_threshold(planted, capsys):
    out, summary = planted
    cli.main(["claims", str(out), "--json", "--sensitivity"])
    got = json.loads(capsys.readouterr().out)
    again = {c["claim"]: c for c in got["shot_claims"]}
    for claim, row in _onset_rows(summary).items():
        assert (again[claim]["verdict"], again[claim]["value"]) == (row["verdict"], row["value"])
    # move_fraction 1: the onset is the peak's own layer, 1 at every shot count — the same zero shift
    cli.main(["claims", str(out), "--json", "--set", "onset.move_fraction=1", "--set", "onset.min_domain_share=1"])
    strict = {c["claim"]: c for c in json.loads(capsys.readouterr().out)["shot_claims"]}
    assert strict[CLAIM_MOVE_EARLIER]["value"] == 0.0 and strict[CLAIM_DOMAIN_EARLIER]["verdict"] == FAILS


def test_a_sweep_without_the_onset_stage_has_no_onset_rows(tmp_path):
    base = pipeline.RunConfig(model="planted", max_prompts=6)
    got = pipeline.execute_many(base, [RELATION], [0, 3], ["claims"], out=str(tmp_path), progress=False)
    assert [c["claim"] for c in got["claims"]] == ["Few-shot prompts employ the same heads as zero-shot"]


def test_the_figures_draw_the_tables_means_and_the_overview_shows_them(planted):
    out, summary = planted
    run = summary["runs"][0]
    tables = RunDir(out / run["path"]).read_tables("onset")
    [fig] = onset_figures.figures(tables, run["stages"]["onset"])
    lines = [t for t in fig.data if t.mode and "lines" in t.mode]
    means = tables["layers"].groupby("layer")["attn_write_x_cumulative"].mean().to_numpy()
    assert np.allclose(lines[0].y, means) and list(lines[0].x) == [0, 1, 2]
    assert np.allclose(lines[1].y, tables["layers"].groupby("layer")["lens_domain_share"].mean().to_numpy())
    # the sweep's overview: one profile figure for the relation, one line per shot count with its p(Y)
    frames = [RunDir(out / r["path"]).read_tables("onset") for r in summary["runs"]]
    main = pd.concat(
        [f["onset"].assign(relation=RELATION, shots=r["shots"]) for f, r in zip(frames, summary["runs"], strict=True)]
    )
    layers = pd.concat(
        [f["layers"].assign(relation=RELATION, shots=r["shots"]) for f, r in zip(frames, summary["runs"], strict=True)]
    )
    runs = pd.DataFrame({"relation": [RELATION] * 3, "shots": [0, 1, 3], "accuracy": [1.0] * 3, "mean_p_answer": [0.5] * 3})
    figs = shots_figures.figures({"runs": runs, "onset": main, "onset_layers": layers}, {"min_domain_share": 0.2})
    assert len(figs) == 2 and "What demonstrations change" in figs[1].layout.title.text
    names = [t.name for t in figs[1].data if t.showlegend is not False and t.name]
    assert names[0].startswith("0 shots: p(Y) ") and names[1].startswith("1 shot: ") and len(names) == 3
    page = render_report(out)
    assert "What demonstrations change" in page and "C10" in page and "C11" in page


# ----------------------------------------------------------------------------- the real embedded model
@pytest.mark.slow
def test_smollm2_onsets_at_0_and_3_shots_read_the_model_and_decide_both_rows(smollm2, tmp_path):
    """On smollm2-135m (24 prompts of country_capital_extended, 0 and 3 shots): after the last layer the lens is
    the model's own logits, so the last layer's domain share is the share of the model's top 10 among the
    answers' first tokens, and p(Y) is the recall stage's; the two rows are decided (not "not measurable")
    over prompts paired by template and subject, and their detail names the mean onsets the tables give."""
    from recallscope.tasks import build_prompts, load_relation

    base = pipeline.RunConfig(model=smollm2.name, relation="country_capital_extended", max_prompts=24)
    got = pipeline.execute_many(
        base,
        ["country_capital_extended"],
        [0, 3],
        ["patch", "movers", "onset", "claims"],
        out=str(tmp_path),
        model=smollm2,
        progress=False,
    )
    view, L = smollm2.view, smollm2.view.cfg.n_layers
    for run in got["runs"]:
        # the move is timed by the cell's mover heads (C1's), as a run with the movers stage does
        assert run["stages"]["onset"]["movers"] and run["stages"]["onset"]["move_heads"].startswith("the mover heads L")
        cell = RunDir(tmp_path / run["path"])
        frame, layers, recall = cell.read_table("onset"), cell.read_table("onset", "layers"), cell.read_table("recall")
        assert len(frame) == run["stages"]["recall"]["n_known"] > 0
        known = recall[recall["known"]].reset_index(drop=True)
        assert frame["p_answer"].to_numpy() == pytest.approx(known["p_answer"].to_numpy(), rel=1e-4, abs=1e-6)
        prompts = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=run["shots"])
        by_text = {p.text: p for p in prompts.prompts}
        domain = torch.tensor(sorted(set(prompts.answer_ids)))
        last = layers[layers["layer"] == L - 1].set_index("prompt_index")["lens_domain_share"]
        for i in (0, len(frame) - 1):
            p = by_text[known.loc[i, "text"]]
            with torch.no_grad():
                logits = view.trace(torch.tensor([p.input_ids]), record=("logits",)).logits[0, 0]
            assert last.loc[i] == torch.isin(logits.topk(10).indices, domain).double().mean().item()
    rows = _onset_rows(got)
    for row in rows.values():
        assert row["verdict"] != NOT_MEASURABLE and row["pairing"] == "paired" and row["n_paired"] >= 2
    frames = {run["shots"]: RunDir(tmp_path / run["path"]).read_table("onset") for run in got["runs"]}
    move = rows[CLAIM_MOVE_EARLIER]
    paired = (
        frames[0]
        .merge(frames[3], on=["template", "subject"], suffixes=("_0", "_3"))
        .dropna(subset=["move_layer_0", "move_layer_3"])
    )
    assert move["value"] == pytest.approx((paired["move_layer_3"] - paired["move_layer_0"]).mean())
    assert "timed by the mover heads" in move["detail"] and move["every_head_shift"] is not None
