"""decompose: both solvers recover known coefficients; lstsq is the exact optimum on the real model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recallscope.decompose import (
    DecomposeConfig,
    EndActivations,
    choose_layer,
    cross_validate,
    decompose,
    end_activations,
    fit_lstsq,
    fit_sgd,
    fold_indices,
    intercept_from_table,
    predict,
    solve_lstsq,
    strongest_head,
    verdict,
)
from recallscope.errors import UserError
from recallscope.figures.decompose import figures


def synthetic(n=120, k=5, d=48, noise=1e-3, seed=0):
    """Regressors with a large shared mean (as residual streams have) and known c, b."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 4.0, k, dtype=torch.float64)[None, :, None]
    x = x + 3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    coef = torch.tensor([2.5, 0.4, -1.2, 1.0, 0.0][:k], dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    m = torch.einsum("nkd,k->nd", x, coef) + b + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, m, coef, b


def test_lstsq_recovers_known_coefficients_and_intercept():
    x, m, coef, b = synthetic()
    f = fit_lstsq(x, m)
    assert np.abs(f.coef - coef.numpy()).max() < 1e-3
    assert np.abs(f.intercept - b.numpy()).max() < 1e-3
    assert f.r2 > 0.999999


def test_sgd_recipe_recovers_known_coefficients_and_intercept():
    x, m, coef, b = synthetic()
    f = fit_sgd(x, m, DecomposeConfig(solver="sgd"))  # lr 0.005, momentum 0.99, 60,000 steps
    assert f.converged is True
    assert f.steps == 60_000
    assert np.abs(f.coef - coef.numpy()).max() < 1e-3
    assert np.abs(f.intercept - b.numpy()).max() < 1e-3
    assert abs(f.loss - f.lstsq_loss) <= 1e-3 * f.lstsq_loss


def test_gram_engine_takes_the_same_steps_as_torch_optim_sgd_on_the_data():
    x, m, _, _ = synthetic(n=40, k=3, d=16, noise=0.5)
    cfg = DecomposeConfig(solver="sgd", sgd_steps=300)
    gram = fit_sgd(x, m, cfg)
    data = fit_sgd(x, m, DecomposeConfig(solver="sgd", sgd_steps=300, sgd_engine="data"))
    assert gram.converged is False  # 300 steps are not enough: the check must say so
    np.testing.assert_allclose(gram.coef, data.coef, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gram.intercept, data.intercept, rtol=1e-4, atol=1e-4)
    # Same loss trace (the data engine logs the loss in float32).
    np.testing.assert_allclose([l for _, l in gram.loss_trace], [l for _, l in data.loss_trace], rtol=1e-4)


def test_raw_recipe_is_switchable_and_reports_non_convergence():
    x, m, _, _ = synthetic(noise=0.1)
    raw = fit_sgd(x * 50, m * 50, DecomposeConfig(solver="sgd", sgd_standardise=False, sgd_steps=2000))
    assert raw.converged is False
    scaled = fit_sgd(x * 50, m * 50, DecomposeConfig(solver="sgd", sgd_steps=2000))
    assert scaled.loss < raw.loss or not np.isfinite(raw.loss)


def test_lstsq_residual_is_orthogonal_to_every_regressor_synthetic():
    x, m, _, _ = synthetic(noise=0.5)
    c, b = solve_lstsq(x, m)
    resid = m - predict(x, c, b)
    # Normal equations: Σ_n resid_n = 0 (intercept) and Σ_n ⟨resid_n, x_{n,k}⟩ = 0 for every k.
    assert resid.sum(0).abs().max() < 1e-9 * m.abs().sum()
    inner = torch.einsum("nd,nkd->k", resid, x)
    scale = resid.norm() * x.norm(dim=(0, 2))
    assert (inner.abs() / scale).max() < 1e-10


def test_cross_validation_folds_partition_and_recover():
    folds = fold_indices(50, 4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(50))
    assert fold_indices(50, 4, seed=3)[0].tolist() == folds[0].tolist()  # seeded
    x, m, coef, _ = synthetic(noise=1e-3)
    cv = cross_validate(x, m, DecomposeConfig(), seed=0)
    assert cv.coef.shape == (4, 5)
    assert np.abs(cv.coef - coef.numpy()).max() < 1e-3
    assert cv.r2.min() > 0.99999
    with pytest.raises(UserError, match="too few"):
        fold_indices(5, 4, seed=0)


def test_verdicts():
    assert [verdict(c) for c in (2.0, 1.0, 0.3, 0.0, -0.1)] == ["amplified", "attenuated", "attenuated", "attenuated", "reversed"]


def fake_activations(parallel=False, n=24, L=3, H=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads = torch.randn(n, L, H, d, generator=g)
    resid_pre = torch.randn(n, L, d, generator=g)
    mlp = torch.randn(n, L, d, generator=g)
    return EndActivations(heads, resid_pre, mlp, parallel, (None,) * L)


def test_regressors_sequential_and_parallel_layouts():
    seq = fake_activations(parallel=False)
    r = seq.regressors(1)
    assert r.names == ("L1H0", "L1H1", "resid")
    assert torch.equal(r.values[:, 2], seq.resid_pre[:, 1])
    assert torch.equal(r.target, seq.mlp_out[:, 1])
    par = fake_activations(parallel=True)
    r = par.regressors(2, earlier_layers=1)
    assert r.names == ("L0H0", "L0H1", "L1H0", "L1H1", "resid")  # MLP 2 reads layer 1's heads
    torch.testing.assert_close(r.values[:, -1], par.resid_pre[:, 2] - par.head_out[:, 1].sum(1))
    with pytest.raises(UserError, match="out of range"):
        seq.regressors(3)
    with pytest.raises(UserError, match="reads no head"):
        par.regressors(0)


def test_default_layer_from_movers_then_patch():
    movers = {"heads": [
        {"layer": 5, "head": 1, "is_mover": True, "effect": -3.0},
        {"layer": 9, "head": 2, "is_mover": True, "effect": -12.0},
        {"layer": 7, "head": 0, "is_mover": False, "effect": -40.0},
    ]}
    assert strongest_head(movers, None)[0] == (9, 2)
    assert choose_layer(DecomposeConfig(), 30, True, movers, None)[0] == 9
    assert choose_layer(DecomposeConfig(), 30, False, movers, None)[0] == 10  # parallel residual
    assert choose_layer(DecomposeConfig(layer=4), 30, True, movers, None) == (4, "--layer 4 (given)")
    patch = pd.DataFrame({"kind": ["head"] * 4 + ["mlp"], "layer": [1, 1, 3, 3, 2], "head": [0, 0, 1, 1, None],
                          "effect": [-5.0, -7.0, 20.0, 10.0, -90.0]})
    (layer, head), why = strongest_head({"heads": [dict(movers["heads"][2])]}, patch)
    assert (layer, head) == (3, 1) and "no head is a mover" in why
    with pytest.raises(UserError, match="give --layer"):
        strongest_head({"heads": []}, None)
    with pytest.raises(UserError, match="out of range"):
        choose_layer(DecomposeConfig(layer=30), 30, True, movers, None)
    with pytest.raises(UserError, match="last layer"):
        choose_layer(DecomposeConfig(), 10, False, movers, None)


def test_table_round_trip_keeps_the_intercept_and_figures_rebuild(tmp_path):
    acts = fake_activations(n=40)
    result = decompose(acts, 1, DecomposeConfig(sweep=True), seed=0, progress=False)
    from recallscope.rundir import RunDir

    run = RunDir(tmp_path)
    run.write_tables("decompose", result.tables())
    tables = run.read_tables("decompose")
    assert list(tables) == ["decompose", "fold_coefficients", "folds", "heldout", "intercept", "sgd_trace", "sweep"]
    assert (tmp_path / "decompose.parquet").is_file() and (tmp_path / "decompose" / "folds.parquet").is_file()
    layer, b = intercept_from_table(tables["intercept"])
    assert layer == 1
    np.testing.assert_allclose(b, result.full.intercept)
    # one kind of row per table: no column holds two meanings
    assert list(tables["folds"].columns) == ["fold", "r2", "cosine"]
    np.testing.assert_allclose(tables["folds"]["r2"], result.cv.r2)
    assert len(tables["fold_coefficients"]) == result.cv.coef.shape[0] * 3
    assert tables["sgd_trace"].empty and list(tables["sweep"]["layer"]) == [0, 1, 2]
    assert not any("seconds" in c for frame in tables.values() for c in frame.columns)
    frame = tables["decompose"]
    assert list(frame["regressor"]) == ["L1H0", "L1H1", "resid"]
    np.testing.assert_allclose(frame["coef"], result.full.coef)
    summary = json.loads(json.dumps(result.to_dict()))
    assert [c["regressor"] for c in summary["coefficients"]] == ["L1H0", "L1H1", "resid"]
    assert len(summary["sweep"]) == 3
    figs = figures(tables, summary)
    assert len(figs) == 2  # coefficients, sweep
    drawn = {x: y for trace in figs[0].data for x, y in zip(trace.x, trace.y, strict=True)}  # one bar trace per verdict
    assert [drawn[c["regressor"]] for c in summary["coefficients"]] == pytest.approx([c["coef"] for c in summary["coefficients"]])


# ----------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def smollm2_layer23(smollm2):
    from recallscope.recall import recall
    from recallscope.tasks import build_prompts, load_relation

    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, seed=0, max_prompts=48)
    known = recall(smollm2, ps, progress=False).known_prompts()
    acts = end_activations(smollm2.view, known.prompts, smollm2.tokenizer.pad_token_id, 48, progress=False)
    return acts.regressors(23)


@pytest.mark.slow
def test_smollm2_lstsq_residual_is_orthogonal_to_every_regressor(smollm2_layer23):
    reg = smollm2_layer23
    c, b = solve_lstsq(reg.values, reg.target)
    x, m = reg.values.double(), reg.target.double()
    resid = m - predict(x, c, b)
    assert resid.sum(0).norm() < 1e-8 * resid.norm()
    cosines = torch.einsum("nd,nkd->k", resid, x) / (resid.norm() * x.norm(dim=(0, 2)))
    assert cosines.abs().max() < 1e-8


@pytest.mark.slow
def test_smollm2_lstsq_in_sample_r2_is_never_below_sgd(smollm2_layer23):
    reg = smollm2_layer23
    exact = fit_lstsq(reg.values, reg.target)
    sgd = fit_sgd(reg.values, reg.target, DecomposeConfig(solver="sgd"))
    assert exact.r2 >= sgd.r2 - 1e-12
    assert sgd.loss >= exact.loss * (1 - 1e-12)
    raw = fit_sgd(reg.values, reg.target, DecomposeConfig(solver="sgd", sgd_standardise=False, sgd_steps=3000))
    assert np.isnan(raw.r2) or exact.r2 >= raw.r2


# ----------------------------------------------------------------------------- intervals and held-out figures
def test_bootstrap_coefficients_equal_refits_on_the_resampled_prompts():
    """The per-prompt normal equations give, for each resample, exactly the lstsq fit on it."""
    from recallscope.decompose import bootstrap_coefficients

    x, m, coef, _ = synthetic(n=40, noise=0.05)
    boot = bootstrap_coefficients(x, m, n=3, seed=7)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 40, size=(3, 40))
    for row, idx in zip(boot, draws, strict=True):
        c, _ = solve_lstsq(x[torch.as_tensor(idx)], m[torch.as_tensor(idx)])
        assert np.abs(row - c.numpy()).max() < 1e-9


def test_coefficient_intervals_cover_the_truth_and_flag_what_is_not_identifiable():
    x, m, coef, _ = synthetic(n=120, k=5, noise=0.05)
    x[:, 4] = 0.0  # a head that writes nothing: its c is the minimum-norm 0, not a finding
    acts = EndActivations(head_out=x[:, None, :4].float(), resid_pre=x[:, None, 4].float(), mlp_out=m[:, None].float(),
                          parallel_residual=False, head_bias=(None,))
    result = decompose(acts, 0, DecomposeConfig(n_bootstrap=300), seed=0, progress=False)
    rows = {r["regressor"]: r for r in result.coefficients()}
    for k, name in enumerate(["L0H0", "L0H1", "L0H2", "L0H3"]):
        assert rows[name]["ci_low"] <= coef[k].item() <= rows[name]["ci_high"], name
        assert rows[name]["identifiable"]
    assert not rows["resid"]["identifiable"] and rows["resid"]["coef"] == 0.0
    assert rows["L0H0"]["departs_stable"] and rows["L0H2"]["departs_stable"]  # 2.5 and -1.2: one side of 1 on every fold
    assert not rows["L0H3"]["departs_stable"]  # c = 1: pass-through, folds on both sides


def test_heldout_table_gives_the_gain_over_the_intercept_only_model():
    x, m, coef, b = synthetic(n=120, k=5, noise=0.05)
    acts = EndActivations(head_out=x[:, None, :4].float(), resid_pre=x[:, None, 4].float(), mlp_out=m[:, None].float(),
                          parallel_residual=False, head_bias=(None,))
    result = decompose(acts, 0, DecomposeConfig(n_bootstrap=10), seed=3, progress=False)
    held = result.tables()["heldout"]
    assert list(held.columns) == ["prompt_index", "fold", "sq_err", "sq_err_intercept", "sq_err_no_heads", "sq_norm"]
    assert len(held) == 120 and sorted(held["fold"].unique()) == [0, 1, 2, 3]
    summary = result.to_dict()
    gain = 1 - held["sq_err"].sum() / held["sq_err_intercept"].sum()
    assert abs(summary["heldout_gain"] - gain) < 1e-12 and gain > 0.99  # the heads carry all the variation
    # the intercept-only model's held-out error on a fold is its squared distance to the training mean
    fold0 = held[held["fold"] == 0]["prompt_index"].to_numpy().copy()
    train = np.setdiff1d(np.arange(120), fold0)
    mean = m[torch.as_tensor(train)].float().double().mean(0)
    expected = ((m[torch.as_tensor(fold0)].float().double() - mean) ** 2).sum(-1).numpy()
    assert np.abs(held[held["fold"] == 0]["sq_err_intercept"].to_numpy() - expected).max() < 1e-6 * expected.max()
    assert abs(summary["cv_r2_uncentred"] - (1 - held["sq_err"].sum() / held["sq_norm"].sum())) < 1e-12
