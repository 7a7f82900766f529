"""Issue 16, class B (the reported case, without a model directory): decompose on a tiny
GPT-NeoX with parallel residual failed with "Can't call numpy() on Tensor that requires grad"
(b_O, a parameter, was subtracted outside no-grad). The view's weights are now detached."""

from __future__ import annotations

import torch

from models.test_architectures import tiny_model  # noqa: E402  (tests/ is on sys.path)
from recallscope.decompose import DecomposeConfig, EndActivations, decompose
from recallscope.models.adapters import extract
from recallscope.models.view import ModelView


def test_fault_B_decompose_on_parallel_residual_neox():
    cfg, weights = extract(tiny_model("gpt_neox_parallel"))
    assert cfg.parallel_residual
    assert not any(t.requires_grad for t in weights.tensors())
    view = ModelView(cfg, weights)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (16, 7), generator=gen)
    t = view.trace(ids, record=["head_out", "resid_pre", "mlp_out"])
    bias = tuple(view.layer(l).b_O for l in range(cfg.n_layers))
    acts = EndActivations(t.head_out[:, 0], t.resid_pre[:, 0], t.mlp_out[:, 0], True, bias)
    reg = acts.regressors(1)
    # the parallel branch's regressor: r[1] − Σ_h a[0,h] − b_O[0], the rest of what MLP 1 reads
    rest = acts.resid_pre[:, 1] - acts.head_out[:, 0].sum(1) - bias[0]
    assert not reg.values.requires_grad and torch.allclose(reg.values[:, -1], rest)
    lstsq = decompose(acts, 1, DecomposeConfig(solver="lstsq"), progress=False)
    sgd = decompose(acts, 1, DecomposeConfig(solver="sgd", sgd_steps=500), progress=False)
    assert lstsq.to_dict()["solver"] == "lstsq" and sgd.to_dict()["solver"] == "sgd"
    assert 0.0 <= lstsq.to_dict()["r2"] <= 1.0 + 1e-9  # in-sample least squares: R² in [0, 1]
