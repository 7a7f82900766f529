"""Stage trace (causal tracing, ROME): the exact batched engine equals ROME's naive loop (one
batched forward of the clean prompt and its n noised copies per restoration) to 1e-5 of p(Y) in
float64 on a tiny model of every family and on smollm2-135m; the definitions behave as ROME's
(restoring a state before the subject changes nothing, the last layer's output at the last
token gives p_clean, ROME's windows and position groups); bad input is one line, exit 2."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.localise import FAMILIES, tiny, tiny_prompts
from helpers.tolerance import gamma, logit_difference_bound

from recallscope import causal_trace as CT
from recallscope.cli import main
from recallscope.errors import UserError
from recallscope.figures.causal_trace import GROUPS
from recallscope.models import Model
from recallscope.models.view import ModelView
from recallscope.tasks import build_prompts, load_relation
from recallscope.tasks.prompts import PromptSet


def run_both(model: Model, prompts: PromptSet, **kw):
    # random-token prompts have no subject strings to embed alone: the in-context σ rule
    config = CT.TraceConfig(n_samples=3, window=2, noise_rule="in_context", **kw)
    exact = CT.trace(model, prompts, dataclasses.replace(config, engine="exact"), progress=False)
    naive = CT.trace(model, prompts, dataclasses.replace(config, engine="naive"), progress=False)
    return exact, naive


@pytest.mark.parametrize("name", FAMILIES)
def test_exact_engine_equals_rome_naive_loop_on_tiny_models(name):
    model = tiny(name)
    exact, naive = run_both(model, tiny_prompts(model=model))  # σ = 3 × std (ROME)
    a, b = exact.to_frame(), naive.to_frame()
    assert len(a) == len(b) == 3 * (7 + 7 + 6) * model.cfg.n_layers
    diff = np.abs(a["p_restored"].to_numpy() - b["p_restored"].to_numpy()).max()
    assert diff <= 1e-5, diff
    assert np.abs(a["p_corrupted"] - b["p_corrupted"]).max() <= 1e-12
    # and the restorations matter (the test could fail)
    assert (a["indirect_effect"].abs() / a["p_clean"]).max() > 1e-2


def test_restoring_the_last_layer_output_at_the_last_token_gives_the_clean_probability():
    model = tiny("llama_gqa")
    result = CT.trace(
        model, tiny_prompts(model=model), CT.TraceConfig(n_samples=2, window=2, noise=1.0, kinds=("resid",)), progress=False
    )
    f = result.to_frame()
    L = model.cfg.n_layers
    last_layer = f[f["component"] == f"RES{L}"]  # ROME's h_{L-1}: the final residual
    at_end = last_layer[last_layer["groups"].str.contains("last token")]
    assert np.abs(at_end["p_restored"] - at_end["p_clean"]).max() <= 1e-12
    earlier = last_layer[~last_layer["groups"].str.contains("last token")]
    assert np.abs(earlier["p_restored"] - earlier["p_corrupted"]).max() <= 1e-12  # nothing reads it


@pytest.mark.parametrize("engine", ["exact", "naive"])
def test_restoring_a_state_before_the_subject_changes_nothing(engine):
    """States before the first subject token never see the noise: restoring them is a no-op."""
    model = tiny("llama_gqa")
    prompts = tiny_prompts(model=model)
    result = CT.trace(
        model, prompts, CT.TraceConfig(n_samples=2, window=2, engine=engine, noise_rule="in_context"), progress=False
    )
    f = result.to_frame()
    start = f["prompt_index"].map({p.index: p.subject_span[0] for p in prompts.prompts})
    before = f[f["position"] < start]
    assert len(before) == 3 * (1 + 2) * model.cfg.n_layers
    assert before["indirect_effect"].abs().max() <= 1e-12
    after = f[f["position"] >= start]
    assert (after["indirect_effect"].abs() / after["p_clean"]).max() > 1e-2


def test_rome_windows_and_position_groups():
    assert list(CT.window_layers(0, 10, 30)) == list(range(5))
    assert list(CT.window_layers(12, 10, 30)) == list(range(7, 17))
    assert list(CT.window_layers(29, 10, 30)) == list(range(24, 30))
    assert list(CT.window_layers(5, 9, 30)) == list(range(1, 10))  # Geva's k = 9: [l - 4, l + 5)
    p = tiny_prompts(lengths=(9,), spans=((2, 6),)).prompts[0]
    g = CT.position_groups(p)
    assert g == {
        "first subject token": [2],
        "middle subject tokens": [3, 4],
        "last subject token": [5],
        "first subsequent token": [6],
        "further tokens": [7],
        "last token": [8],
    }
    p = tiny_prompts(lengths=(4,), spans=((2, 3),)).prompts[0]  # one-token subject right before the last token
    g = CT.position_groups(p)
    assert g["first subject token"] == g["last subject token"] == [2]
    assert g["first subsequent token"] == g["last token"] == [3] and g["middle subject tokens"] == g["further tokens"] == []


def test_flop_ratio_of_even_spreads_is_about_four():
    T, L = 8, 30
    restores = CT.restorations(("resid",), T, L, 10)
    ratio = CT.flop_ratio(T, L, restores)
    assert 3.0 < ratio < 5.0, ratio


def test_grouped_means_and_intervals_are_over_prompts():
    model = tiny("opt")
    prompts = tiny_prompts(model=model)
    result = CT.trace(model, prompts, CT.TraceConfig(n_samples=2, window=2, noise=1.0, kinds=("mlp",)), progress=False)
    f, g = result.to_frame(), result.grouped
    # the last-token group's mean at layer 1 is the plain mean over prompts of their last position's IE
    last = f[(f["layer"] == 1) & f["groups"].str.contains("last token")]
    row = g[(g["group"] == "last token") & (g["layer"] == 1) & (g["kind"] == "mlp")].iloc[0]
    assert row["mean_indirect_effect"] == pytest.approx(last["indirect_effect"].mean(), abs=1e-15)
    assert row["ci_low"] <= row["mean_indirect_effect"] <= row["ci_high"] and row["n_prompts"] == 3
    # prompt 2 has a one-token subject: no middle subject tokens
    mid = g[(g["group"] == "middle subject tokens") & (g["kind"] == "mlp")]
    assert set(mid["n_prompts"]) == {1}


def test_in_context_noise_is_three_times_the_in_prompt_subject_embedding_std_and_seeded():
    model = tiny("gpt2")
    prompts = tiny_prompts(model=model)
    config = CT.TraceConfig(n_samples=2, window=2, kinds=("resid",), noise_rule="in_context")
    result = CT.trace(model, prompts, config, progress=False)
    ids = [t for p in prompts.prompts for t in p.input_ids[slice(*p.subject_span)]]
    std = model.view.weights.W_E[torch.tensor(ids)].std().item()
    assert result.noise == pytest.approx(3 * std, rel=1e-12)
    assert "in-context" in result.to_dict()["noise_rule"] and result.to_dict()["noise_rule_setting"] == "in_context"
    again = CT.trace(model, prompts, config, progress=False)
    assert np.array_equal(result.to_frame()["p_restored"], again.to_frame()["p_restored"])
    other = CT.trace(model, prompts, dataclasses.replace(config, seed=1), progress=False)
    assert not np.array_equal(result.to_frame()["p_corrupted"], other.to_frame()["p_corrupted"])
    # without a tokenizer ROME's rule (each subject string embedded alone) cannot run: one line
    with pytest.raises(UserError, match="noise_rule=in_context"):
        CT.trace(model, prompts, dataclasses.replace(config, noise_rule="rome"), progress=False)


def rome_collect_embedding_std(hf, tokenizer, subjects: list[str]) -> float:
    """ROME's ``collect_embedding_std(mt, subjects)`` (experiments/causal_trace.py) as written there: each
    subject through ``make_inputs`` alone (``tokenizer.encode``, no padding for one prompt), the embedding
    layer's output traced (``layername(model, 0, "embed")``; a forward hook in place of nethook.Trace),
    ``torch.cat(alldata).std().item()``."""
    alldata = []
    embed = hf.get_input_embeddings()  # GPT-2: transformer.wte, ROME's layername(mt.model, 0, "embed")
    for s in subjects:
        inp = {
            "input_ids": torch.tensor([tokenizer.encode(s)]),
            "attention_mask": torch.ones(1, len(tokenizer.encode(s)), dtype=torch.long),
        }
        seen = []
        handle = embed.register_forward_hook(lambda m, i, o: seen.append(o))
        try:
            with torch.no_grad():
                hf(**inp)
        finally:
            handle.remove()
        alldata.append(seen[0][0])
    return torch.cat(alldata).std().item()


def test_default_noise_is_romes_rule_on_a_tiny_gpt2_with_the_real_bpe(tmp_path):
    """trace's default σ = 3 × ROME's collect_embedding_std on the traced prompts' subjects (float32, as
    ROME runs); the in-context rule is another number there (" France" is not "France" in GPT-2's BPE)."""
    from transformers import GPT2LMHeadModel

    from helpers.gpt2_bpe import tiny_gpt2_bpe
    from recallscope import load_model

    folder = tiny_gpt2_bpe(tmp_path / "gpt2")
    model = load_model(str(folder))
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    ps = build_prompts(load_relation("paper_country_capital"), model.tokenizer, shots=0, seed=0, max_prompts=3)
    config = CT.TraceConfig(n_samples=2, window=1, kinds=("resid",))
    assert config.noise_rule == "rome"
    result = CT.trace(model, ps, config, progress=False)
    subjects = list(dict.fromkeys(p.subject for p in ps.prompts))
    rome = 3 * rome_collect_embedding_std(hf, model.tokenizer, subjects)
    assert abs(result.noise - rome) <= 1e-6 * rome, (result.noise, rome)
    summary = result.to_dict()
    assert "collect_embedding_std" in summary["noise_rule"] and summary["noise_rule_setting"] == "rome"
    in_context = CT.trace(model, ps, dataclasses.replace(config, noise_rule="in_context"), progress=False)
    assert abs(in_context.noise - 3 * CT.subject_embedding_std(model.view, ps)) <= 1e-12
    assert abs(in_context.noise - rome) > 1e-3 * rome  # the rules differ: the summary must say which ran
    assert "in-context" in in_context.to_dict()["noise_rule"]
    assert (
        CT.trace(model, ps, dataclasses.replace(config, noise=0.5), progress=False).to_dict()["noise_rule"]
        == "set by trace.noise"
    )


@pytest.mark.slow
def test_default_noise_is_romes_rule_on_smollm2(smollm2):
    """On the real model and the paper's 15 nations: σ = 3 × ROME's collect_embedding_std (the Hugging Face
    module's embedding layer traced, each subject alone) to 1e-6; the in-context σ is 13.5% smaller."""
    ps = build_prompts(load_relation("paper_country_capital"), smollm2.tokenizer, shots=0)
    subjects = list(dict.fromkeys(p.subject for p in ps.prompts))
    assert len(subjects) == 15
    sigma, std = CT.noise_level(smollm2.view, smollm2.tokenizer, ps, CT.TraceConfig())
    rome = 3 * rome_collect_embedding_std(smollm2.hf_loader(), smollm2.tokenizer, subjects)
    assert abs(sigma - rome) <= 1e-6 * rome, (sigma, rome)
    in_context, _ = CT.noise_level(smollm2.view, smollm2.tokenizer, ps, CT.TraceConfig(noise_rule="in_context"))
    assert in_context / sigma - 1 == pytest.approx(-0.135, abs=0.001)


@pytest.mark.slow
def test_the_trace_command_takes_romes_rule_by_default_and_the_in_context_rule_when_set(smollm2, tmp_path):
    """``recallscope trace`` itself (child processes) on smollm2-135m: the summary's σ = 3 × ROME's
    collect_embedding_std of the traced prompts' subjects (to 1e-6), and ``--set trace.noise_rule=in_context``
    selects the other rule; each summary names the rule that ran."""
    from test_cli import cli

    common = ["trace", "--model", "smollm2-135m", "--relation", "paper_country_capital", "--max-prompts", "4"]
    common += ["--set", "trace.kinds=resid", "--set", "trace.n_samples=2", "--set", "trace.window=1", "--json"]
    summaries, subjects = {}, {}
    for rule, extra in (("rome", []), ("in_context", ["--set", "trace.noise_rule=in_context"])):
        out = tmp_path / rule
        proc = cli(*common, "--out", str(out), *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        summaries[rule] = json.loads(proc.stdout)["stages"]["trace"]
        subjects[rule] = list(dict.fromkeys(pd.read_parquet(out / "trace" / "prompts.parquet")["subject"]))
    assert subjects["rome"] == subjects["in_context"] and len(subjects["rome"]) >= 2
    rome = 3 * rome_collect_embedding_std(smollm2.hf_loader(), smollm2.tokenizer, subjects["rome"])
    default = summaries["rome"]
    assert abs(default["noise"] - rome) <= 1e-6 * rome, (default["noise"], rome)
    assert default["noise_rule_setting"] == "rome" and "collect_embedding_std" in default["noise_rule"]
    other = summaries["in_context"]
    assert other["noise_rule_setting"] == "in_context" and "in-context" in other["noise_rule"]
    assert abs(other["noise"] - rome) > 0.05 * rome  # another σ, named as such


@pytest.mark.parametrize(
    "config, match",
    [
        (CT.TraceConfig(noise=0.0), "noise must be > 0"),
        (CT.TraceConfig(noise=-1.0), "noise must be > 0"),
        (CT.TraceConfig(window=4), "larger than the model"),
        (CT.TraceConfig(kinds=("heads",)), "unknown"),
        (CT.TraceConfig(noise_rule="wte"), "noise_rule must be one of rome, in_context"),
    ],
)
def test_bad_settings_are_user_errors(config, match):
    with pytest.raises(UserError, match=match):
        CT.trace(tiny("gpt2"), tiny_prompts(), config, progress=False)


def test_a_subject_not_located_before_the_last_token_is_a_user_error():
    prompts = tiny_prompts(lengths=(5,), spans=((3, 5),))
    with pytest.raises(UserError, match="cannot be located"):
        CT.trace(tiny("gpt2"), prompts, CT.TraceConfig(window=1), progress=False)
    empty = dataclasses.replace(prompts, prompts=(), dropped={"subject_tokens_not_found": 4})
    with pytest.raises(UserError, match="subject_tokens_not_found: 4"):
        CT.trace(tiny("gpt2"), empty, CT.TraceConfig(window=1), progress=False)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "trace.noise=0"], "trace.noise"),
        (["--set", "trace.noise=-1"], "trace.noise"),
        (["--set", "trace.window=0"], "trace.window"),
        (["--set", "trace.kinds=heads"], "trace.kinds"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trace", "--max-prompts", "3", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("recallscope: error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err


def test_figures_from_tables_heatmap_cells_hold_the_grouped_means():
    from recallscope import figures
    from recallscope.figures import causal_trace as FT

    rows = [
        {
            "kind": k,
            "group": g,
            "layer": layer,
            "mean_indirect_effect": 0.1 * i + 0.01 * layer,
            "ci_low": 0.0,
            "ci_high": 1.0,
            "n_prompts": 3,
        }
        for k in CT.KINDS
        for i, g in enumerate(CT.GROUPS)
        for layer in range(3)
    ]
    figs = FT.figures({"trace": pd.DataFrame(), "grouped": pd.DataFrame(rows)}, {"window": 2, "n_prompts": 3})
    assert len(figs) == 4 and figures.for_stage("trace") is FT.figures
    heat = figs[1]  # mlp
    assert heat.data[0].z[2][1] == pytest.approx(0.2 + 0.01)  # last subject token, layer 1
    assert list(heat.data[0].y) == list(CT.GROUPS)
    # a one-token subject: the last subject token's curve is the first's, and the legend says so
    same = pd.DataFrame([{**r, "mean_indirect_effect": 0.5} if r["group"] in CT.GROUPS[:3:2] else r for r in rows])
    names = [
        t.name
        for t in FT.figures({"trace": pd.DataFrame(), "grouped": same}, {"window": 2, "n_prompts": 3})[3].data
        if t.showlegend
    ]
    assert f"{CT.GROUPS[2]} (= {CT.GROUPS[0]})" in names and CT.GROUPS[1] in names


@pytest.mark.slow
def test_exact_equals_naive_on_smollm2_in_float64(smollm2):
    """One paper_country_capital prompt, every restoration by the exact engine; ROME's loop (float64,
    one forward of 1 + n rows each) on 45 restorations spread over kinds, positions and layers."""
    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    ps = build_prompts(load_relation("paper_country_capital"), smollm2.tokenizer, shots=0, seed=0, max_prompts=3)
    prompt = ps.prompts[0]
    L, d = smollm2.cfg.n_layers, smollm2.cfg.d_model
    sigma = 3 * CT.subject_embedding_std(view, ps)
    noise = torch.from_numpy(CT.noise_draws(prompt, 2, d, 0) * sigma)
    exact = CT.exact_group(view, [prompt], [noise], CT.KINDS, 10)
    restores = CT.restorations(CT.KINDS, prompt.n_tokens, L, 10)
    only = {(k, p, layer) for k, p, layer, _ in (restores[int(i)] for i in np.linspace(0, len(restores) - 1, 45).round())}
    naive = CT.naive_prompt(view, prompt, noise, CT.KINDS, 10, only=only)
    assert abs(exact["p_corrupted"][0] - naive["p_corrupted"]) <= 1e-12
    diff, moved = 0.0, 0.0
    for kind in CT.KINDS:
        ok = ~np.isnan(naive["p_restored"][kind])
        diff = max(diff, float(np.abs(exact["p_restored"][kind][0][ok] - naive["p_restored"][kind][ok]).max()))
        moved = max(moved, float(np.abs(exact["p_restored"][kind][0] - exact["p_corrupted"][0]).max()))
    assert diff <= 1e-5, diff
    assert moved > 0.01  # the noise and the restorations matter on the real model


def test_band_line_is_one_helper_for_the_trace_and_knockout_line_plots():
    """figures.causal_trace.add_band_line draws both stages' curves: band = [ci_low, ci_high], line = the means."""
    import plotly.graph_objects as go

    from recallscope.figures import causal_trace as FT
    from recallscope.figures import knockout as FK

    rows = pd.DataFrame({"layer": [0, 1, 2], "m": [0.1, 0.3, 0.2], "ci_low": [0.0, 0.2, 0.1], "ci_high": [0.2, 0.4, 0.3]})
    fig = go.Figure()
    FT.add_band_line(fig, rows, "m", "#123456", "g")
    band, line = fig.data
    assert list(band.x) == [0, 1, 2, 2, 1, 0] and list(band.y) == [0.2, 0.4, 0.3, 0.1, 0.2, 0.0]
    assert list(line.y) == [0.1, 0.3, 0.2] and band.legendgroup == line.legendgroup == "g" and not band.showlegend
    assert FK.add_band_line is FT.add_band_line
    windows = pd.DataFrame(
        {
            "block": "subject",
            "layer": [0, 1],
            "first_layer": 0,
            "last_layer": 1,
            "mean_relative_change_pct": [-5.0, -9.0],
            "ci_low": [-7.0, -12.0],
            "ci_high": [-3.0, -6.0],
            "n_prompts": 3,
        }
    )
    (knock,) = FK.figures({"knockout": pd.DataFrame(), "windows": windows}, {"window": 2, "n_prompts": 3})
    assert list(knock.data[0].y) == [-3.0, -6.0, -12.0, -7.0] and list(knock.data[1].y) == [-5.0, -9.0]


def test_exact_engine_in_chunks_equals_one_batch_and_skips_only_no_ops():
    """max_rows=1 splits every position's restorations into chunks of one: the same numbers;
    prompts of one length whose subjects start at different positions share a group."""
    model = tiny("llama_gqa")
    prompts = [p for p in tiny_prompts(model=model).prompts if p.n_tokens == 7]
    assert {p.subject_span[0] for p in prompts} == {1, 2}
    d = model.cfg.d_model
    noise = [torch.from_numpy(CT.noise_draws(p, 3, d, 0)) for p in prompts]
    whole = CT.exact_group(model.view, prompts, noise, CT.KINDS, 2)
    chunked = CT.exact_group(model.view, prompts, noise, CT.KINDS, 2, max_rows=1)
    for kind in CT.KINDS:
        assert np.abs(whole["p_restored"][kind] - chunked["p_restored"][kind]).max() <= 1e-12
    for b, p in enumerate(prompts):
        naive = CT.naive_prompt(model.view, p, noise[b], CT.KINDS, 2)
        for kind in CT.KINDS:
            assert np.abs(whole["p_restored"][kind][b] - naive["p_restored"][kind]).max() <= 1e-10


@pytest.mark.parametrize(
    ("peak", "ci_low", "ci_high", "layer", "verdict", "margin"),
    [
        (0.30, 0.20, 0.40, 6, "holds", 0.19),  # a mid-layer MLP peak of 20+ points of probability
        (2.3e-9, 5e-10, 4e-9, 6, "does not hold", 5e-10 - 0.01),  # a random model: interval above 0, wholly under the 0.01 floor
        (0.30, 0.20, 0.40, 1, "does not hold", 1 - 3.0),  # an early peak: the band (a quarter of 12 layers) decides
        (0.02, 0.005, 0.035, 6, "inconclusive", 0.005 - 0.01),  # an interval across the floor: undecided
    ],
)
def test_mlp_peak_claim_floor_and_band(peak, ci_low, ci_high, layer, verdict, margin):
    rows = [
        {
            "kind": "mlp",
            "group": GROUPS[2],
            "layer": ell,
            "mean_indirect_effect": peak if ell == layer else 0.0,
            "ci_low": ci_low if ell == layer else -0.01,
            "ci_high": ci_high if ell == layer else 0.01,
            "n_prompts": 20,
        }
        for ell in range(12)
    ]
    claim = CT.mlp_peak_claim(pd.DataFrame(rows), {"n_layers": 12, "window": 3, "n_prompts": 20, "noise": 0.3})
    assert (claim.verdict, claim.about) == (verdict, f"MLP{layer}")
    assert claim.margin == pytest.approx(margin)  # below 0 unless the verdict holds
    if verdict == "inconclusive":  # 0.02 − 0.015·√(20/n') ≥ 0.01 from n' = 20·(0.015/0.01)² = 45 prompts
        assert claim.prompts_needed == 45 and claim.row()["prompts_used"] == 20


@pytest.mark.parametrize("verb", ["trace", "knockout", "patch"])
def test_a_stage_verbs_help_lists_its_settings_with_defaults(verb, capsys, monkeypatch):
    from recallscope.pipeline import STAGES

    monkeypatch.setenv("COLUMNS", "400")  # one line per paragraph
    main([verb, "--help"])  # prints the help and returns
    out = " ".join(capsys.readouterr().out.split())
    assert f"--set {verb}.<field>=<value>" in out
    fields = [f.name for f in dataclasses.fields(STAGES[verb].config_type) if f.name != "seed"]
    assert all(f"{name}=" in out for name in fields), out
    if verb == "trace":
        assert "window=10" in out and "n_samples=10" in out


def test_final_probabilities_hold_a_bounded_number_of_logits(monkeypatch):
    """answer_prob_from_resid unembeds LOGIT_ELEMENTS // V rows at a time: a larger vocabulary gets
    fewer rows (gemma3-270m's 262,144 tokens at 1024 rows a chunk held 2 GB of logits and softmax),
    and the probabilities do not depend on the chunk."""
    model = tiny("llama_gqa")
    view = model.view
    V = view.cfg.d_vocab
    resid = torch.randn(10, view.cfg.d_model, generator=torch.Generator().manual_seed(0)).to(view.dtype)
    answers = torch.arange(10) % V
    whole = CT.answer_prob_from_resid(view, resid, answers, chunk=10)
    rows = []
    original = ModelView.logits_from_resid

    def counted(self, x):
        rows.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(ModelView, "logits_from_resid", counted)
    monkeypatch.setattr(CT, "LOGIT_ELEMENTS", 3 * V + 1)
    chunked = CT.answer_prob_from_resid(view, resid, answers)
    assert rows == [3, 3, 3, 1]
    # p = softmax(l)_Y moves by at most p·(|Δl_Y| + max|Δl|) ≤ 2·max|Δl| for logits that differ by
    # Δl, plus the softmax's own rounding (an exp, a sum of V, a division: a few ulps of p ≤ 1)
    per_logit = logit_difference_bound(view, resid)
    atol = 2 * per_logit + 2 * (gamma(V, whole.dtype) + 3 * torch.finfo(whole.dtype).eps)
    assert torch.allclose(chunked, whole, rtol=0, atol=atol) and atol < 1e-3  # p in [0, 1]
