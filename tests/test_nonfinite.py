"""Issue 25, item 3 (the compute half): ranks and comparisons are NaN-safe, and non-finite logits or
activations inside a stage stop it with one line naming the stage and the quantity.

The reported case: a model with one NaN in its final norm made every logit NaN; recall counted,
for each prompt, the logits greater than Y's — none, since every comparison with NaN is false —
so rank 0 everywhere: accuracy 1.0, 16/16 known, and ``run`` exited 0 with verdicts. (The load
now refuses such a model outright: tests/models/test_checks_and_cache.py; here the view's weights
are edited after the load, as a model that overflows in float16 would compute NaN from finite weights.)"""

from __future__ import annotations

import copy

import pytest
import torch

from recallscope import cli, pipeline
from recallscope.errors import NonFiniteError
from recallscope.lens import answer_stats, token_rank
from recallscope.models import load_model
from recallscope.recall import recall
from recallscope.tasks import build_prompts, load_relation

NAN, INF = float("nan"), float("inf")


def test_a_nan_logit_never_makes_a_token_top_1():
    logits = torch.tensor(
        [
            [NAN, NAN, NAN, NAN],  # every logit NaN (the reported model): Y ranks last, not first
            [1.0, NAN, 3.0, 2.0],  # a NaN elsewhere counts as ahead of Y
            [1.0, 5.0, 3.0, 2.0],  # finite: the usual rank
            [4.0, 4.0, 3.0, 4.0],  # ties are not ahead
            [INF, 1.0, 2.0, 3.0],
        ]
    )
    y = torch.tensor([0, 2, 2, 0, 3])
    assert token_rank(logits, y).tolist() == [3, 1, 1, 0, 1]
    stats = answer_stats(logits, y)
    assert stats["rank_answer"].tolist() == [3, 1, 1, 0, 1]
    # the old count, (logits > target).sum(), gave the NaN row rank 0: "known"
    assert (logits[0] > logits[0, 0]).sum() == 0


@pytest.fixture(scope="module")
def planted():
    return load_model("planted")


def nan_final_norm(model):
    """The model with one NaN in its final norm's weight (past the load's check)."""
    broken = copy.copy(model)
    weights = copy.deepcopy(model.view.weights)
    weights.ln_final.weight[3] = NAN
    broken.view = type(model.view)(model.cfg, weights)
    return broken


def test_recall_on_a_model_that_computes_nan_stops_with_one_line(planted):
    broken = nan_final_norm(planted)
    prompts = build_prompts(load_relation("paper_country_capital"), planted.tokenizer, max_prompts=16)
    with pytest.raises(NonFiniteError) as exc:
        recall(broken, prompts, progress=False)
    assert str(exc.value) == (
        "the model computed non-finite logits (NaN or inf) for 16 of 16 prompts of a batch; nothing derived from them can be trusted"
    )


def test_a_stage_that_computes_nan_stops_the_run_naming_the_stage_also_in_a_sweep(planted, tmp_path):
    broken = nan_final_norm(planted)
    run = pipeline.RunConfig(model="planted", relation="paper_country_capital", max_prompts=16)
    for incomplete_ok in (False, True):  # a sweep's cell does not turn it into "not measurable"
        with pytest.raises(NonFiniteError, match=r"^recall: the model computed non-finite logits \(NaN or inf\) for 16 of 16 "):
            pipeline.execute(
                run,
                ["claims"],
                out=str(tmp_path / f"r{incomplete_ok}"),
                model=broken,
                progress=False,
                incomplete_ok=incomplete_ok,
            )
        assert not (tmp_path / f"r{incomplete_ok}" / "recall.record.json").exists()


def test_nan_activations_in_a_later_layer_stop_the_first_stage_that_computes_them(planted, tmp_path):
    """A NaN in an MLP weight of the last layer: the residual stream, not only the logits."""
    broken = copy.copy(planted)
    weights = copy.deepcopy(planted.view.weights)
    weights.layers[-1].W_out[0, 0] = NAN
    broken.view = type(planted.view)(planted.cfg, weights)
    run = pipeline.RunConfig(model="planted", relation="paper_country_capital", max_prompts=8)
    with pytest.raises(
        NonFiniteError, match=r"^recall: the model computed non-finite activations: the residual stream after layer 2"
    ):
        pipeline.execute(run, ["patch"], model=broken, progress=False)


def test_the_cli_says_it_in_one_line(planted, tmp_path, monkeypatch, capsys):
    broken = nan_final_norm(planted)
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: broken)
    with pytest.raises(SystemExit) as exc:
        cli.main(
            [
                "run",
                "--model",
                "planted",
                "--relation",
                "paper_country_capital",
                "--max-prompts",
                "16",
                "--out",
                str(tmp_path / "run"),
            ]
        )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2
    assert err[-1].startswith("recallscope: error: recall: the model computed non-finite logits")
    assert not any("Traceback" in line for line in err)
