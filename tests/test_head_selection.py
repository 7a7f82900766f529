"""Movers and decompose choose their heads by the aggregate the run's patch config selected.

The patch stage's ``components`` table holds both aggregates; its ``effect`` column is the one
``patch.aggregate`` chose (mean of per-prompt ratios by default, ratio of means under the
``paper`` preset, as the authors' ``plot_path_patching``). A hand-made result where the two
aggregates order the heads differently, then a run of the pipeline under ``--preset paper``.
"""

from __future__ import annotations

import numpy as np
import pytest

from recallscope import patch as P
from recallscope.components import Component, top_heads
from recallscope.decompose import strongest_head
from recallscope.movers import MoversConfig, candidates_for

A, B, C = Component("head", 0, 0), Component("head", 0, 1), Component("head", 1, 0)
MLP = Component("mlp", 1)


def result(aggregate: str) -> P.PatchResult:
    """Two prompts, π_clean 1 and 100 (noising: π_base = π_clean).

    L0H0: −50% on the small-π prompt, 0 on the other: mean of ratios −25, ratio of means
    100 · (−0.5 / 2) / 50.5 = −0.495. L0H1: −10% on the large-π prompt: mean of ratios −5,
    ratio of means 100 · (−10 / 2) / 50.5 = −9.90. L1H0: −2% on both: −2 either way.
    """
    pi_clean = np.array([1.0, 100.0])
    effects = np.array([[-50.0, 0.0, -2.0, -80.0], [0.0, -10.0, -2.0, -80.0]])
    return P.PatchResult(
        prompts=None,
        components=(A, B, C, MLP),
        effects=effects,
        pi_clean=pi_clean,
        pi_base=pi_clean,
        config=P.PatchConfig(aggregate=aggregate, n_bootstrap=10),
        n_layers=2,
        n_heads=2,
    )


def test_the_components_table_ranks_heads_by_the_runs_aggregate():
    of_means = result("ratio_of_means")
    assert of_means.ratio_of_means()[:3] == pytest.approx([-100 * 0.25 / 50.5, -100 * 5 / 50.5, -2.0])
    table = of_means.tables()["components"]
    ranked = top_heads(table)
    assert list(ranked.index) == [B, C, A] and ranked.name == "ratio_of_means"
    assert ranked.tolist() == pytest.approx([-9.90099, -2.0, -0.49505], abs=1e-5)
    by_ratios = top_heads(result("mean_of_ratios").tables()["components"])
    assert list(by_ratios.index) == [A, B, C] and by_ratios.name == "mean_of_ratios"
    assert by_ratios.tolist() == pytest.approx([-25.0, -5.0, -2.0])
    # the per-prompt table cannot tell the run's aggregate: the mean of ratios
    per_prompt = top_heads(of_means.tables()["patch"])
    assert list(per_prompt.index) == [A, B, C] and per_prompt.name == "mean_of_ratios"


def test_movers_and_decompose_follow_ratio_of_means_when_the_run_selected_it():
    table = result("ratio_of_means").tables()["components"]
    chosen, effects, selection = candidates_for(MoversConfig(top_k=2), 2, 2, table)
    assert chosen == [(0, 1), (1, 0)] and selection == "top 2 heads by |patching effect| (ratio of means)"
    assert effects[(0, 0)] == pytest.approx(-0.49505, abs=1e-5) and effects[(0, 1)] == pytest.approx(-9.90099, abs=1e-5)
    (layer, head), why = strongest_head(None, table)
    assert (layer, head) == (0, 1) and "(ratio of means) is L0H1 (-9.9%)" in why
    default = result("mean_of_ratios").tables()["components"]
    assert candidates_for(MoversConfig(top_k=2), 2, 2, default)[0] == [(0, 0), (0, 1)]
    assert strongest_head(None, default)[0] == (0, 0)


def test_under_the_paper_preset_movers_take_the_ratio_of_means_order(tmp_path):
    """The pipeline passes the components table: a random 2-layer GPT-2 (every prompt counted as
    known, so movers has prompts), the paper preset on 30 prompts of the paper's task."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from recallscope import load_model
    from recallscope.pipeline import RunConfig, execute
    from test_pipeline import build_tiny_gpt2  # noqa: E402  (tests/ is on sys.path)

    path = build_tiny_gpt2(tmp_path / "gpt2", 256)
    torch.manual_seed(3)
    config = GPT2Config(vocab_size=49152, n_positions=256, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(config).eval().save_pretrained(path)  # more heads than build_tiny_gpt2's two
    model = load_model(str(path))
    run = RunConfig(model=str(path), relation="paper_country_capital", max_prompts=30, preset="paper")
    ctx, summary = execute(
        run,
        ["movers", "decompose"],
        model=model,
        progress=False,
        overrides={"recall.known_top_k": 49152, "movers.top_k": 5, "patch.n_bootstrap": 10},
    )
    patch = summary["stages"]["patch"]
    assert patch["mode"] == "path" and patch["aggregate"] == "ratio_of_means" and patch["n_prompts"] == 30
    comps = ctx.table("patch", "components")
    heads = comps[comps["kind"] == "head"]
    assert (heads["effect"] == heads["effect_ratio_of_means"]).all()

    def order(column):
        return [
            (int(r.layer), int(r.head))
            for r in heads.iloc[np.argsort(-heads[column].abs().to_numpy(), kind="stable")].itertuples()
        ]

    by_means, by_ratios = order("effect_ratio_of_means"), order("effect_mean_of_ratios")
    assert by_means[:5] != by_ratios[:5], "this seed must order the heads differently under the two aggregates"
    movers = summary["stages"]["movers"]
    assert [(h["layer"], h["head"]) for h in movers["heads"]] == by_means[:5]
    assert movers["candidates"] == "top 5 heads by |patching effect| (ratio of means)"
    for h in movers["heads"]:
        row = heads[(heads["layer"] == h["layer"]) & (heads["head"] == h["head"])]
        assert h["effect"] == pytest.approx(float(row["effect_ratio_of_means"].iloc[0]))
    decompose = summary["stages"]["decompose"]
    if not movers["movers"]:  # no mover in a random model: decompose reads the patch table itself
        l, h = by_means[0]
        assert "(ratio of means)" in decompose["layer_reason"] and f"L{l}H{h}" in decompose["layer_reason"]
        assert decompose["layer"] == l
