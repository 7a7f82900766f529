"""The control models: ``planted`` (every mechanism of the paper, with known parameters) and
``random`` (no mechanism), loaded by alias and run through the existing stages.

On ``planted`` the stages must recover what was planted (``controls.PLANTED``): the mover head,
each MLP coefficient within 1e-3, the intercept's direction and answer domain, the suppressor.
On ``random`` the same figures show none of it. The claims verdicts on both are reported by the
claims stage's own tests once its rules are rewritten; here only the stage figures are asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import recallscope
from recallscope.models import controls, load_model, model_catalog
from recallscope.tasks import build_prompts, load_relation

PLANTED = controls.PLANTED
RELATION = PLANTED["relation"]
STAGES = ["patch", "movers", "decompose", "intercept", "suppress", "claims"]
V = 49152  # SmolLM2's vocabulary: with known_top_k = V every prompt is kept on the random model


@pytest.fixture(scope="module")
def planted():
    return load_model("planted")


@pytest.fixture(scope="module")
def random_model():
    return load_model("random")


@pytest.fixture(scope="module")
def planted_study(planted):
    return recallscope.run(model=planted, relation=RELATION, stages=STAGES, progress=False, max_prompts="all")


@pytest.fixture(scope="module")
def random_study(random_model):
    # The random model knows no fact, so every prompt is kept (known_top_k = V) for the stages to run.
    return recallscope.run(model=random_model, relation=RELATION, stages=STAGES, progress=False, max_prompts="all",
                           **{"recall.known_top_k": V})


def _prompt_ids(model, n=6):
    prompts = build_prompts(load_relation(RELATION), model.tokenizer).prompts
    lengths = {}
    for p in prompts:  # prompts of every length, so that left padding is exercised
        lengths.setdefault(p.n_tokens, list(p.input_ids))
    return list(lengths.values())[:n]


# ----------------------------------------------------------------------------- loading and the view
@pytest.mark.parametrize("name", ["planted", "random"])
def test_view_equals_transformers(name, planted, random_model, identities):
    model = planted if name == "planted" else random_model
    measure, check = identities
    m = measure(model.view, model.hf_model, _prompt_ids(model), model.tokenizer.pad_token_id)
    check(m)


def test_controls_are_listed_and_loaded_offline(planted, random_model):
    rows = {r["model"]: r for r in model_catalog()}
    assert rows["planted"]["kind"] == rows["random"]["kind"] == "control"
    assert planted.source == random_model.source == "control"
    assert planted.tokenizer.vocab_size == random_model.tokenizer.vocab_size == V
    cfg = planted.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_model) == (controls.N_LAYERS, controls.N_HEADS, controls.N_KV_HEADS, controls.D_MODEL)
    assert random_model.cfg == planted.cfg  # same shape, other weights


def test_random_is_seeded(random_model):
    again = load_model("random")
    assert again.model_hash == random_model.model_hash
    assert all(torch.equal(a, b) for a, b in zip(again.hf.parameters(), random_model.hf.parameters(), strict=True))


def test_planted_knows_every_fact(planted_study):
    recall = planted_study.summary["stages"]["recall"]
    assert recall["n_prompts"] == 225 and recall["n_known"] == 225 and recall["accuracy"] == 1.0


# ----------------------------------------------------------------------------- planted: recovered
def _head_effects(study) -> list[tuple[str, float]]:
    frame = study["patch"].to_frame()
    heads = frame[frame["kind"] == "head"].groupby("component")["effect"].mean()
    return sorted(heads.items(), key=lambda kv: -abs(kv[1]))


def test_patch_ranks_the_planted_mover_then_the_suppressor(planted_study):
    ranked = _head_effects(planted_study)
    (first, e1), (second, e2) = ranked[:2]
    assert (first, second) == (PLANTED["mover"], PLANTED["suppressor"])
    assert e1 < -10 and e2 > 5  # % of π: removing the mover hurts, removing the suppressor helps
    assert max(abs(e) for _, e in ranked[2:]) < 0.01  # every other head: nothing readable by Y


def test_movers_finds_exactly_the_planted_mover(planted_study):
    summary = planted_study.summary["stages"]["movers"]
    assert summary["movers"] == [PLANTED["mover"]]
    mover = next(h for h in summary["heads"] if h["is_mover"])
    assert mover["projection_corr"] > 0.9999 and mover["ov_copy_rank"] == 0 and mover["ov_top5_share"] == 1.0
    assert 0.3 < mover["attention_to_subject"] < 0.9  # varies across prompts by construction


def test_decompose_recovers_every_planted_coefficient(planted_study):
    summary = planted_study.summary["stages"]["decompose"]
    assert summary["layer"] == PLANTED["mlp_layer"] and summary["solver"] == "lstsq"
    coef = {c["regressor"]: c["coef"] for c in summary["coefficients"]}
    for head, planted_c in PLANTED["coefficients"].items():
        assert abs(coef[head] - planted_c) < 1e-3, (head, coef[head], planted_c)
        # the only departure from linearity is the RMS norm's factor, within linearity_bound of 1
        assert abs(coef[head] - planted_c) <= abs(planted_c) * PLANTED["linearity_bound"]
    assert summary["cv_r2"] > 0.999999


def test_decompose_recovers_the_intercept_direction(planted_study):
    result = planted_study["decompose"]
    layer, b = result.layer, np.asarray(result.full.intercept)
    direction = np.asarray(PLANTED["intercept_direction"])
    assert layer == PLANTED["mlp_layer"]
    assert float(b @ direction) / np.linalg.norm(b) > 1 - 1e-9
    assert abs(np.linalg.norm(b) - PLANTED["intercept_norm"]) < 1e-3


def test_intercept_lens_lists_the_answer_domain(planted_study):
    summary = planted_study.summary["stages"]["intercept"]
    domain = set(planted_study.prompts.answer_ids)
    top = [t["token_id"] for t in summary["top_tokens"]]
    assert set(top[: len(domain)]) == domain  # the answers tie at the top of b's logit lens
    assert summary["answer_domain_share"] == len(domain) / summary["top_k"]
    redirect = summary["redirect"]
    assert redirect["r_mid"]["median_rank_Y"] == 1 and redirect["r_mid"]["median_rank_X"] == 0
    assert redirect["r_mid_plus_b"]["share_Y_top1"] == 1.0  # b alone lifts Y over X on every prompt


def test_suppress_names_the_planted_suppressor(planted_study):
    components = planted_study.summary["stages"]["suppress"]["components"]
    suppressors = [c for c in components if c["is_suppressor"]]
    assert [c["component"] for c in suppressors] == [PLANTED["suppressor"]]
    assert suppressors[0]["share_negative"] == 1.0 and suppressors[0]["ci_high"] < -1.0
    assert all(c["mean_dla"] == 0.0 for c in components if not c["is_suppressor"])  # idle heads, empty MLP


# ----------------------------------------------------------------------------- random: none of it
def test_random_knows_nothing(random_study):
    assert random_study.summary["stages"]["recall"]["accuracy"] == 0.0


def test_random_has_no_mover(random_study):
    summary = random_study.summary["stages"]["movers"]
    assert summary["n_movers"] == 0
    assert max(h["attention_to_subject"] for h in summary["heads"]) < 0.2
    assert max(h["ov_top5_share"] for h in summary["heads"]) == 0.0


def test_random_mlp_is_not_linear_in_its_heads(random_study):
    assert random_study.summary["stages"]["decompose"]["cv_r2"] < 0.1


def test_random_intercept_points_nowhere(random_study):
    summary = random_study.summary["stages"]["intercept"]
    assert summary["answer_domain_share"] == 0.0
    assert summary["redirect"]["r_mid_plus_b"]["share_Y_top1"] == 0.0


def test_random_final_layer_writes_noise(random_study, planted_study):
    dla = [abs(c["mean_dla"]) for c in random_study.summary["stages"]["suppress"]["components"]]
    planted_dla = [abs(c["mean_dla"]) for c in planted_study.summary["stages"]["suppress"]["components"]]
    assert max(dla) < 0.1 < 1.0 < max(planted_dla)  # logits


# ----------------------------------------------------------------------------- the CLI
def test_cli_run_planted_end_to_end(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "planted-run"
    proc = subprocess.run(
        [sys.executable, "-m", "recallscope", "run", "--model", "planted", "--relation", RELATION, "--out", str(out),
         "--max-prompts", "60", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] == "planted" and summary["accuracy"] == 1.0
    coef = {c["regressor"]: c["coef"] for c in summary["stages"]["decompose"]["coefficients"]}
    assert all(abs(coef[h] - c) < 1e-3 for h, c in PLANTED["coefficients"].items())
    assert len(summary["claims"]) == 6 and (out / "report.html").is_file()
    models = subprocess.run([sys.executable, "-m", "recallscope", "models", "--json"], capture_output=True, text=True, env=env)
    assert {"planted", "random"} <= {r["model"] for r in json.loads(models.stdout)["models"]}
