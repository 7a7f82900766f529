"""Stage **decompose**: how the MLP after the mover heads treats each head — Lv et al.'s new method.

The paper asks what an MLP does to the heads that feed it. Its answer is a *linear* picture of a
non-linear block: across prompts, at the end position, fit the MLP's output as

    m[l] ≈ Σ_h c_h · a[l', h] + c_r · r + b

with one **scalar** coefficient per head (c_h > 1: the MLP amplifies the head's write; 0 ≤ c_h ≤ 1:
it attenuates it; c_h < 0: it reverses it) and one **vector** intercept b — the part of the MLP's
output that does not depend on the prompt, which the **intercept** stage reads as the relation's
"function application" (it steers every prompt's residual towards the answer domain).

Which heads and which residual
    l is the MLP layer being decomposed and l' the layer of the heads it reads: l' = l in
    sequential models (the MLP of layer l reads r_mid[l] = r[l] + Σ_h a[l,h] + b_O) and l' = l − 1
    in parallel-residual ones (the MLP of layer l reads r[l], which holds layer l − 1's heads;
    :meth:`~recallscope.models.arch.ArchConfig.mlp_reads_own_heads`). The residual regressor r
    is the rest of what the MLP reads: r[l] (the residual entering the layer, as SPEC.md writes
    c_r · r[l]) in sequential models, so Σ_h a[l,h] + r[l] is the MLP's input up to the constant
    b_O; r[l] − Σ_h a[l−1,h] − b_O[l−1] in parallel-residual ones. Heads of the ``earlier_layers``
    layers before l' can be added as extra regressors (they are also inside r, so their
    coefficient is what the MLP does to them *on top of* c_r).

The default layer is the MLP after the strongest mover head (the mover with the largest
|patching effect|, from the movers stage's summary); when no head is a mover, the head with
the largest |patching effect| (from the patch stage's ``components`` table: the aggregate the
run's ``patch.aggregate`` selected, the ratio of means under the ``paper`` preset), and the summary says so
(``layer_reason``). ``layer`` overrides both.

The least-squares problem and its two solvers
    minimise Σ_n ‖m_n − Σ_k c_k x_{n,k} − b‖² over scalars c_k and a vector b,

  n over prompts, k over regressors, ‖·‖ over the d dimensions of the residual stream.

- ``lstsq`` — the exact solution. For fixed c the best b is mean_n(m_n − Σ_k c_k x_{n,k}), so
  centring every regressor and the target over prompts (x̃ = x − x̄, m̃ = m − m̄) removes b, and
  what is left is a K × K system (K = number of regressors): G c = g with
  G_jk = Σ_n ⟨x̃_{n,j}, x̃_{n,k}⟩ and g_j = Σ_n ⟨x̃_{n,j}, m̃_n⟩, solved in float64 (a minimum-norm
  least-squares solve, so collinear regressors do not fail); then b = m̄ − Σ_k c_k x̄_k.
- ``sgd`` — the paper's recipe: stochastic gradient descent (full batch: every prompt every
  step) with lr 0.005, momentum 0.99 (PyTorch's heavy-ball rule: v ← μ v + ∇, θ ← θ − lr · v),
  60,000 steps, on the loss L(c, b) = mean over prompts *and* dimensions of the squared error,
  L = Σ_n ‖m_n − Σ_k c_k x_{n,k} − b‖² / (N d); c starts at ``sgd_init`` (0 by default: no prior
  on amplification) and b at 0. Two engines compute the same steps: ``"data"`` evaluates the
  predictions of all prompts each step and back-propagates (the paper's code does this;
  torch.optim.SGD, float32), ``"gram"`` (default) uses the identity
  L = (Σ‖m‖² − 2 c·g − 2 b·Σm + cᵀGc + 2 b·Sᵀc + N‖b‖²) / (N d) with the sums precomputed
  (uncentred G, g, S_k = Σ_n x_{n,k}), which gives the same gradient in O(K² + K d) per step,
  float64. **Input scaling** (``sgd_standardise``, on by default, switch it off for the raw
  recipe): before SGD every regressor and the target are centred over prompts and divided by
  their root-mean-square, and the coefficients are mapped back afterwards
  (c_k = c'_k · s_m / s_k, b = m̄ + s_m b' − Σ c_k x̄_k). The optimum is the same; only the
  units change, which keeps lr 0.005 stable for residual streams of any size. SGD has
  **converged** when its final loss is within ``sgd_tolerance`` (relative) of the exact
  least-squares loss, which is computed beside it for that check.

Quality of the fit
    R² = 1 − Σ_n ‖m_n − m̂_n‖² / Σ_n ‖m_n − m̄‖², on the flattened vectors (one sum over prompts and
    dimensions; m̄ the mean over the prompts evaluated), and the mean over prompts of
    cos(m_n, m̂_n). 4-fold cross-validation (prompts shuffled with the run seed): fit on three
    folds, score R² and cosine on the fourth (m̄ there is the held-out mean); per-fold
    coefficients give each coefficient's mean ± std. The coefficients reported as ``coef`` are
    the fit on every prompt. ``sweep`` fits every layer (always with ``lstsq``) for a per-layer
    R² table.

Held-out prediction against simpler models (recallscope's, for the claims table)
    Every prompt is held out once in the cross-validation; per prompt the ``heldout`` table keeps
    the squared error ‖m − m̂‖² of three fits made on the other folds: the decomposition
    (``sq_err``), the **intercept-only** model m̂ = mean of the training m (``sq_err_intercept``)
    and the model without head terms, c_r · r + b (``sq_err_no_heads``; with ``lstsq``), beside
    ‖m‖² (``sq_norm``). Pooled over the held-out prompts:

    - centred R² of the intercept-only model ≈ 0 by construction, so the centred R² asks how much
      of the *across-prompt variation* of m the heads explain;
    - **uncentred** R² = 1 − Σ‖m − m̂‖² / Σ‖m‖²: how much of m itself the fit reproduces, with
      the intercept-only model's uncentred R² beside it (a large constant part of m is the
      intercept's, not the heads');
    - **gain** over the intercept-only model = 1 − Σ sq_err / Σ sq_err_intercept (the share of
      the intercept-only model's held-out error the head and residual terms remove; > 0: they
      improve prediction), and ``gain_over_no_heads`` = 1 − Σ sq_err / Σ sq_err_no_heads (the
      head terms' own share). The claims table puts a bootstrap interval (over prompts) on them.

Coefficient intervals
    ``ci_low``/``ci_high``: percentile bootstrap interval of each coefficient of the ``lstsq``
    fit over prompts (``n_bootstrap`` resamples, ``level``; each resample refits through the
    per-prompt K × K normal equations, so no activation is re-read), beside the per-fold values.
    ``identifiable`` is False for a regressor that does not vary across prompts (a head that
    writes nothing, a constant residual): its coefficient is the minimum-norm 0, not a finding.
    ``departs_stable``: every fold's coefficient lies on the same side of the pass-through
    value c = 1 (c − 1 of one sign on every fold).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from .components import head_label, top_heads
from .constraints import LEVEL, NON_NEGATIVE, POSITIVE, RESAMPLES, Interval
from .display import ResultView
from .errors import UserError
from .figures import decompose as decompose_figures
from .models.view import ModelView
from .progress import track
from .stats import assign_folds
from .tasks.collect import collect
from .tasks.prompts import Prompt

RESID = "resid"


@dataclass(frozen=True)
class DecomposeConfig:
    layer: int | None = None  # the MLP layer; None: the MLP after the strongest mover head
    solver: Literal["lstsq", "sgd"] = "lstsq"  # lstsq is the exact optimum that sgd approaches
    earlier_layers: int = 0  # heads of this many layers before the heads' layer as extra regressors
    folds: int = 4  # cross-validation folds
    sweep: bool = False  # also fit every layer (lstsq) for a per-layer R² table
    # The paper's SGD recipe.
    sgd_lr: float = 0.005
    sgd_momentum: float = 0.99
    sgd_steps: int = 60_000
    sgd_init: float = 0.0  # initial value of every coefficient (the intercept starts at 0)
    sgd_engine: Literal["gram", "data"] = "gram"  # same steps; "data" recomputes every prediction
    sgd_standardise: bool = True  # centre and scale inputs before SGD (documented above)
    sgd_tolerance: float = 1e-3  # converged: loss ≤ (1 + tol) · least-squares loss
    sgd_log_every: int = 1000  # record the SGD loss every this many steps
    batch_size: int = 32
    n_bootstrap: int = 1000  # resamples of the coefficients' bootstrap interval (lstsq refits)
    level: float = 0.95  # the intervals' confidence level

    constraints: ClassVar[dict] = {
        "layer": NON_NEGATIVE, "earlier_layers": NON_NEGATIVE, "folds": Interval(2, None), "sgd_lr": Interval(0, None, "neither"),
        "sgd_momentum": Interval(0, 1, "left"), "sgd_steps": POSITIVE, "sgd_init": Interval(), "sgd_tolerance": Interval(0, None),
        "sgd_log_every": POSITIVE, "batch_size": POSITIVE, "n_bootstrap": RESAMPLES, "level": LEVEL,
    }


# ----------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class Fit:
    """One solution of the least-squares problem on one set of prompts."""

    coef: np.ndarray  # [K]
    intercept: np.ndarray  # [d]
    loss: float  # mean over prompts and dimensions of the squared error
    r2: float
    cosine: float
    solver: str
    seconds: float = 0.0
    steps: int = 0
    converged: bool | None = None  # sgd only
    lstsq_loss: float | None = None  # sgd only: the exact optimum it is compared with
    loss_trace: tuple[tuple[int, float], ...] = ()  # sgd only


def predict(regressors: Tensor, coef: Tensor, intercept: Tensor) -> Tensor:
    """m̂ [N, d] = Σ_k c_k x_k + b from regressors [N, K, d]."""
    return torch.einsum("nkd,k->nd", regressors, coef.to(regressors.dtype)) + intercept.to(regressors.dtype)


def r_squared(target: Tensor, prediction: Tensor) -> float:
    """R² on the flattened vectors: 1 − Σ‖m − m̂‖² / Σ‖m − m̄‖² (m̄: mean over these prompts)."""
    target, prediction = target.double(), prediction.double()
    ss_res = ((target - prediction) ** 2).sum()
    ss_tot = ((target - target.mean(0)) ** 2).sum()
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def mean_cosine(target: Tensor, prediction: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(target.double(), prediction.double(), dim=-1).mean())


def mse(target: Tensor, prediction: Tensor) -> float:
    return float(((target.double() - prediction.double()) ** 2).mean())


def _score(solver: str, regressors: Tensor, target: Tensor, coef: Tensor, intercept: Tensor, **extra) -> Fit:
    pred = predict(regressors.double(), coef.double(), intercept.double())
    return Fit(
        coef=coef.double().cpu().numpy(), intercept=intercept.double().cpu().numpy(),
        loss=mse(target, pred), r2=r_squared(target, pred), cosine=mean_cosine(target, pred), solver=solver, **extra,
    )


def solve_lstsq(regressors: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Exact (c [K], b [d]) in float64: centre, solve the K × K normal equations, recover b."""
    x = regressors.double()
    m = target.double()
    x_mean, m_mean = x.mean(0), m.mean(0)
    xc, mc = x - x_mean, m - m_mean
    # One BLAS product over the flattened (prompt, dimension) axis: G = X Xᵀ, r = X m.
    flat = xc.transpose(0, 1).reshape(xc.shape[1], -1)
    gram = flat @ flat.T
    rhs = flat @ mc.reshape(-1)
    # Minimum-norm least squares (SVD-based on CPU): exact when G is invertible, still defined
    # when two regressors are collinear.
    coef = torch.linalg.lstsq(gram.cpu(), rhs.cpu()[:, None], driver="gelsd").solution[:, 0].to(x.device)
    intercept = m_mean - torch.einsum("k,kd->d", coef, x_mean)
    return coef, intercept


def fit_lstsq(regressors: Tensor, target: Tensor) -> Fit:
    start = time.perf_counter()
    coef, intercept = solve_lstsq(regressors, target)
    seconds = time.perf_counter() - start
    return _score("lstsq", regressors, target, coef, intercept, seconds=seconds)


def _standardise(regressors: Tensor, target: Tensor, on: bool):
    """(x', m', x̄, m̄, s_x [K], s_m): x' = (x − x̄)/s_x, m' = (m − m̄)/s_m, or the identity."""
    x, m = regressors.double(), target.double()
    K, d = x.shape[1], x.shape[2]
    if not on:
        one = torch.ones(K, dtype=torch.float64, device=x.device)
        return x, m, torch.zeros(K, d, dtype=x.dtype, device=x.device), torch.zeros(d, dtype=x.dtype, device=x.device), one, 1.0
    x_mean, m_mean = x.mean(0), m.mean(0)
    xc, mc = x - x_mean, m - m_mean
    s_x = xc.pow(2).mean(dim=(0, 2)).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    s_m = float(mc.pow(2).mean().sqrt()) or 1.0
    return xc / s_x[None, :, None], mc / s_m, x_mean, m_mean, s_x, s_m


def _unstandardise(coef_s: Tensor, b_s: Tensor, x_mean: Tensor, m_mean: Tensor, s_x: Tensor, s_m: float):
    coef = coef_s.double() * s_m / s_x
    intercept = m_mean + s_m * b_s.double() - torch.einsum("k,kd->d", coef, x_mean)
    return coef, intercept


def _sgd_gram(x: Tensor, m: Tensor, config: DecomposeConfig) -> tuple[Tensor, Tensor, list, bool]:
    """Heavy-ball SGD (torch.optim.SGD's rule, dampening 0, no Nesterov) on the expanded loss."""
    N, K, d = x.shape
    scale = 2.0 / (N * d)
    gram = torch.einsum("nkd,njd->kj", x, x)
    cross = torch.einsum("nkd,nd->k", x, m)
    sums = x.sum(0)  # S [K, d]
    m_sum = m.sum(0)
    total = float((m * m).sum())
    c = torch.full((K,), float(config.sgd_init), dtype=torch.float64, device=x.device)
    b = torch.zeros(d, dtype=torch.float64, device=x.device)
    vc, vb = torch.zeros_like(c), torch.zeros_like(b)
    lr, mu = config.sgd_lr, config.sgd_momentum
    trace: list[tuple[int, float]] = []
    ok = True
    for step in range(config.sgd_steps):
        gram_c, sums_t_c = gram @ c, sums.T @ c
        # dL/dc and dL/db without the 2/(N d) factor (folded into the velocity update below).
        gc = gram_c + sums @ b - cross
        gb = sums_t_c + N * b - m_sum
        if config.sgd_log_every and step % config.sgd_log_every == 0:
            loss = (total - 2 * (c @ cross) - 2 * (b @ m_sum) + c @ gram_c + 2 * (b @ sums_t_c) + N * (b @ b)) / (N * d)
            trace.append((step, float(loss)))
            if not math.isfinite(float(loss)):
                ok = False
                break
        vc.mul_(mu).add_(gc, alpha=scale)
        vb.mul_(mu).add_(gb, alpha=scale)
        c.sub_(vc, alpha=lr)
        b.sub_(vb, alpha=lr)
    return c, b, trace, ok


def _sgd_data(x: Tensor, m: Tensor, config: DecomposeConfig) -> tuple[Tensor, Tensor, list, bool]:
    """The literal recipe: every step predicts every prompt and back-propagates (float32)."""
    x32, m32 = x.float(), m.float()
    N, K, d = x.shape
    c = torch.full((K,), float(config.sgd_init), dtype=torch.float32, device=x.device, requires_grad=True)
    b = torch.zeros(d, dtype=torch.float32, device=x.device, requires_grad=True)
    opt = torch.optim.SGD([c, b], lr=config.sgd_lr, momentum=config.sgd_momentum)
    trace: list[tuple[int, float]] = []
    ok = True
    with torch.enable_grad():
        for step in range(config.sgd_steps):
            opt.zero_grad(set_to_none=True)
            loss = ((m32 - torch.einsum("nkd,k->nd", x32, c) - b) ** 2).mean()
            loss.backward()
            if config.sgd_log_every and step % config.sgd_log_every == 0:
                trace.append((step, float(loss.detach())))
                if not math.isfinite(trace[-1][1]):
                    ok = False
                    break
            opt.step()
    return c.detach().double(), b.detach().double(), trace, ok


def fit_sgd(regressors: Tensor, target: Tensor, config: DecomposeConfig = DecomposeConfig(), reference: Fit | None = None) -> Fit:
    """The paper's SGD recipe on the same problem; ``converged`` compares it with the exact loss."""
    if config.sgd_engine not in ("gram", "data"):
        raise UserError(f"decompose.sgd_engine must be 'gram' or 'data', got {config.sgd_engine!r}")
    start = time.perf_counter()
    x, m, x_mean, m_mean, s_x, s_m = _standardise(regressors, target, config.sgd_standardise)
    engine = _sgd_gram if config.sgd_engine == "gram" else _sgd_data
    c_s, b_s, trace, finite = engine(x, m, config)
    coef, intercept = _unstandardise(c_s, b_s, x_mean, m_mean, s_x, s_m)
    seconds = time.perf_counter() - start
    if reference is None:
        reference = fit_lstsq(regressors, target)
    # The losses are in the original units; a small absolute floor covers an exact fit (loss 0).
    fit = _score("sgd", regressors, target, coef, intercept, seconds=seconds, steps=config.sgd_steps,
                 lstsq_loss=reference.loss, loss_trace=tuple(trace))
    converged = finite and math.isfinite(fit.loss) and fit.loss <= reference.loss * (1 + config.sgd_tolerance) + 1e-12
    return Fit(**{**fit.__dict__, "converged": bool(converged)})


def fit(regressors: Tensor, target: Tensor, config: DecomposeConfig = DecomposeConfig()) -> Fit:
    if config.solver == "lstsq":
        return fit_lstsq(regressors, target)
    if config.solver == "sgd":
        return fit_sgd(regressors, target, config)
    raise UserError(f"--solver must be lstsq or sgd, got {config.solver!r}")


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint held-out index sets covering range(n), from a seeded shuffle."""
    if folds < 2:
        raise UserError(f"decompose.folds must be >= 2, got {folds}")
    if n < 2 * folds:
        hint = f"; set --set decompose.folds={n // 2}" if n >= 4 else ""
        raise UserError(f"decompose: {n} prompts are too few for {folds}-fold cross-validation (need {2 * folds}){hint}")
    fold = assign_folds(n, folds, seed)
    return [np.flatnonzero(fold == f) for f in range(folds)]


@dataclass(frozen=True)
class CrossValidation:
    coef: np.ndarray  # [folds, K]
    r2: np.ndarray  # [folds], held out
    cosine: np.ndarray  # [folds], held out
    converged: tuple[bool | None, ...]
    # per prompt [N], each from the fold that held it out (module docstring: held-out prediction)
    fold: np.ndarray | None = None
    sq_err: np.ndarray | None = None
    sq_err_intercept: np.ndarray | None = None
    sq_err_no_heads: np.ndarray | None = None
    sq_norm: np.ndarray | None = None

    def pooled(self) -> dict:
        """Held-out figures pooled over every prompt (module docstring); NaN without per-prompt errors."""
        if self.sq_err is None:
            return {}
        err, base, no_heads, norm = (float(np.sum(a)) for a in (self.sq_err, self.sq_err_intercept, self.sq_err_no_heads,
                                                               self.sq_norm))
        ratio = lambda a, b: float(1.0 - a / b) if b > 0 else float("nan")  # noqa: E731
        return {
            "cv_r2_uncentred": ratio(err, norm),
            "intercept_only_cv_r2_uncentred": ratio(base, norm),
            "heldout_gain": ratio(err, base),
            "heldout_gain_over_no_heads": ratio(err, no_heads),
        }


def _sq(a: Tensor, b: Tensor) -> np.ndarray:
    return ((a.double() - b.double()) ** 2).sum(-1).cpu().numpy()


def cross_validate(regressors: Tensor, target: Tensor, config: DecomposeConfig, seed: int,
                   no_heads: Sequence[int] = ()) -> CrossValidation:
    """K-fold cross-validation; ``no_heads``: the regressors (indices) of the model without head terms."""
    N = regressors.shape[0]
    coefs, r2s, coss, conv = [], [], [], []
    fold = np.zeros(N, dtype=np.int64)
    sq_err, sq_int, sq_nh = np.zeros(N), np.zeros(N), np.zeros(N)
    keep = torch.as_tensor(list(no_heads), dtype=torch.long, device=regressors.device)
    for k, held in enumerate(fold_indices(N, config.folds, seed)):
        train = np.setdiff1d(np.arange(N), held)
        tr, te = torch.as_tensor(train, device=regressors.device), torch.as_tensor(held, device=regressors.device)
        f = fit(regressors[tr], target[tr], config)
        pred = predict(regressors[te].double(), torch.as_tensor(f.coef), torch.as_tensor(f.intercept).to(regressors.device))
        coefs.append(f.coef)
        r2s.append(r_squared(target[te], pred))
        coss.append(mean_cosine(target[te], pred))
        conv.append(f.converged)
        fold[held] = k
        sq_err[held] = _sq(target[te], pred)
        sq_int[held] = _sq(target[te], target[tr].double().mean(0, keepdim=True))
        if len(keep):
            c_nh, b_nh = solve_lstsq(regressors[tr][:, keep], target[tr])
            sq_nh[held] = _sq(target[te], predict(regressors[te][:, keep].double(), c_nh, b_nh))
        else:
            sq_nh[held] = sq_int[held]
    norm = (target.double() ** 2).sum(-1).cpu().numpy()
    return CrossValidation(np.stack(coefs), np.array(r2s), np.array(coss), tuple(conv), fold, sq_err, sq_int, sq_nh, norm)


def bootstrap_coefficients(regressors: Tensor, target: Tensor, n: int, seed: int) -> np.ndarray:
    """Coefficients [n, K] of the exact (``lstsq``) fit on ``n`` bootstrap resamples of the prompts.

    A resample with multiplicities w_i (Σ w = N) has the centred normal equations
    G = Σ w_i X_i X_iᵀ − S Sᵀ / N, g = Σ w_i X_i m_i − S · (Σ w_i m_i) / N with S = Σ w_i X_i
    (X_i [K, d] the prompt's regressors), so the per-prompt K × K and K products are computed
    once and each resample costs O(N K d) for S only. Percentiles of the rows give the interval
    (the percentile bootstrap, as :func:`recallscope.stats.bootstrap_ci`).
    """
    x, m = regressors.double().cpu(), target.double().cpu()
    N = x.shape[0]
    gram_n = torch.einsum("nkd,njd->nkj", x, x)
    cross_n = torch.einsum("nkd,nd->nk", x, m)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n, 250):  # resamples in chunks: S is [chunk, K, d]
        draws = rng.integers(0, N, size=(min(250, n - start), N))
        w = torch.as_tensor(np.stack([np.bincount(row, minlength=N) for row in draws]), dtype=torch.float64)
        S, Sm = torch.einsum("bn,nkd->bkd", w, x), w @ m
        G = torch.einsum("bn,nkj->bkj", w, gram_n) - torch.einsum("bkd,bjd->bkj", S, S) / N
        g = w @ cross_n - torch.einsum("bkd,bd->bk", S, Sm) / N
        out.append(torch.linalg.lstsq(G, g[..., None], driver="gelsd").solution[..., 0])
    return torch.cat(out).numpy()


def verdict(coef: float) -> str:
    """c > 1 amplified, 0 ≤ c ≤ 1 attenuated, c < 0 reversed (the paper's reading)."""
    if coef > 1:
        return "amplified"
    if coef >= 0:
        return "attenuated"
    return "reversed"


# ----------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class Regressors:
    names: tuple[str, ...]  # "L{l}H{h}" or "resid"
    layers: tuple[int, ...]  # the head's layer (the residual's: the MLP layer)
    heads: tuple[int, ...]  # -1 for the residual
    values: Tensor  # [N, K, d]
    target: Tensor  # [N, d]: m[l]


@dataclass(frozen=True)
class EndActivations:
    """End-position activations of every prompt: what the decomposition reads."""

    head_out: Tensor  # [N, L, H, d]
    resid_pre: Tensor  # [N, L, d]
    mlp_out: Tensor  # [N, L, d]
    parallel_residual: bool
    head_bias: tuple[Tensor | None, ...]  # b_O per layer (or None)

    def head_layer(self, mlp_layer: int) -> int:
        return mlp_layer - 1 if self.parallel_residual else mlp_layer

    def regressors(self, mlp_layer: int, earlier_layers: int = 0) -> Regressors:
        L, H = self.head_out.shape[1], self.head_out.shape[2]
        if not 0 <= mlp_layer < L:
            raise UserError(f"--layer {mlp_layer} out of range: the model has layers 0..{L - 1}")
        hl = self.head_layer(mlp_layer)
        if hl < 0:
            raise UserError(f"--layer {mlp_layer}: in a parallel-residual model the MLP of layer 0 reads no head")
        if earlier_layers < 0:
            raise UserError(f"decompose.earlier_layers must be >= 0, got {earlier_layers}")
        head_layers = list(range(max(0, hl - earlier_layers), hl + 1))
        names, layers, heads, cols = [], [], [], []
        for l in head_layers:
            for h in range(H):
                names.append(head_label(l, h))
                layers.append(l)
                heads.append(h)
                cols.append(self.head_out[:, l, h])
        if self.parallel_residual:
            rest = self.resid_pre[:, mlp_layer] - self.head_out[:, hl].sum(1)
            if self.head_bias[hl] is not None:
                rest = rest - self.head_bias[hl]
        else:
            rest = self.resid_pre[:, mlp_layer]
        names.append(RESID)
        layers.append(mlp_layer)
        heads.append(-1)
        cols.append(rest)
        return Regressors(tuple(names), tuple(layers), tuple(heads), torch.stack(cols, 1), self.mlp_out[:, mlp_layer])


@torch.no_grad()
def end_activations(view: ModelView, prompts: Sequence[Prompt], pad_id: int, batch_size: int = 32, progress: bool = True) -> EndActivations:
    """The end-position activations the decomposition is fitted on: per prompt a[l,h], r[l], m[l].

    ``prompts``: the prompts the stage uses, as given (the pipeline passes the known ones, ``recall(model, prompts).known``; a direct call on them reproduces the run's table). UserError when there is none."""
    prompts = list(prompts)
    if not prompts:
        raise UserError("decompose: no prompt to fit")
    cfg = view.cfg

    def measure(indices, batch) -> dict[str, Tensor]:
        t = view.trace(batch.input_ids, batch.attention_mask, record=["head_out", "resid_pre", "mlp_out"])
        return {"head_out": t.head_out[:, 0].float(), "resid_pre": t.resid_pre[:, 0].float(), "mlp_out": t.mlp_out[:, 0].float()}

    got = collect(prompts, pad_id, batch_size, measure, "decompose: activations", progress)
    head_out, resid_pre, mlp_out = got["head_out"], got["resid_pre"], got["mlp_out"]
    # b_O (Gemma's post-attention norm has no b_O, so the plain bias is right wherever it exists).
    bias = tuple(view.layer(l).b_O.float().to(view.device) if view.layer(l).b_O is not None else None for l in range(cfg.n_layers))
    return EndActivations(head_out, resid_pre, mlp_out, bool(cfg.parallel_residual), bias)


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class DecomposeResult(ResultView):
    stage = "decompose"

    layer: int  # the MLP layer
    head_layer: int
    layer_reason: str
    regressors: Regressors = field(repr=False)
    full: Fit = field(repr=False)
    cv: CrossValidation = field(repr=False)
    config: DecomposeConfig = DecomposeConfig()
    lstsq_reference: Fit | None = field(default=None, repr=False)  # sgd runs: the exact fit beside it
    sweep: pd.DataFrame | None = field(default=None, repr=False)  # layer, r2, cv_r2, cv_cosine
    n_prompts: int = 0
    bootstrap: np.ndarray | None = field(default=None, repr=False)  # [n_bootstrap, K] lstsq coefficients
    n_layers: int = 0  # the model's shape: head_grid() / to_array() cover every head, NaN off the regressors
    n_heads: int = 0

    def coefficients(self) -> list[dict]:
        rows = []
        x = self.regressors.values.double()
        spread = ((x - x.mean(0)) ** 2).sum(dim=(0, 2)).cpu().numpy()  # [K] centred sum of squares
        alpha = (1.0 - self.config.level) / 2
        for k, name in enumerate(self.regressors.names):
            c = float(self.full.coef[k])
            folds = self.cv.coef[:, k]
            fold_verdicts = {verdict(float(v)) for v in folds}
            if self.bootstrap is not None:
                lo, hi = (float(v) for v in np.quantile(self.bootstrap[:, k], [alpha, 1 - alpha]))
            else:
                lo = hi = float("nan")
            rows.append({
                "regressor": name,
                "layer": self.regressors.layers[k],
                "head": self.regressors.heads[k] if self.regressors.heads[k] >= 0 else None,
                "coef": c,
                "cv_mean": float(folds.mean()),
                "cv_std": float(folds.std(ddof=1)) if len(folds) > 1 else 0.0,
                "verdict": verdict(c),
                "verdict_stable": len(fold_verdicts) == 1,
                "ci_low": lo,
                "ci_high": hi,
                "departs_stable": bool(np.all(folds > 1) or np.all(folds < 1)),
                "identifiable": bool(spread[k] > 1e-12 * max(float(spread.max()), np.finfo(float).tiny)),
                **({"coef_lstsq": float(self.lstsq_reference.coef[k])} if self.lstsq_reference is not None else {}),
            })
        return rows

    def to_frame(self) -> pd.DataFrame:
        """The main table: one row per regressor (its coefficient on all prompts, CV mean/std, verdict)."""
        frame = pd.DataFrame(self.coefficients())
        frame["layer"] = frame["layer"].astype("int64")
        frame["head"] = frame["head"].astype("Int64")
        return frame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Tidy tables, one kind of row each (the main one first):

        - ``decompose``: per regressor: ``regressor, layer, head, coef, cv_mean, cv_std, verdict,
          verdict_stable, ci_low, ci_high, departs_stable, identifiable`` (and ``coef_lstsq``
          beside an SGD fit; module docstring: coefficient intervals);
        - ``fold_coefficients``: per fold and regressor: ``fold, regressor, layer, head, coef``;
        - ``folds``: per fold: ``fold, r2, cosine`` on the held-out prompts;
        - ``intercept``: the intercept vector b of MLP ``layer``: ``layer, dim, value`` (d rows);
        - ``sgd_trace``: ``step, loss`` (empty for lstsq);
        - ``sweep``: per MLP layer: ``layer, r2, cv_r2, cv_cosine`` (empty without ``sweep``);
        - ``heldout``: per prompt (its position among the fitted prompts): ``prompt, fold, sq_err,
          sq_err_intercept, sq_err_no_heads, sq_norm`` (squared norms, residual-stream units²;
          module docstring: held-out prediction).
        """
        reg = self.regressors
        heads = pd.array([h if h >= 0 else None for h in reg.heads], dtype="Int64")
        K, F = len(reg.names), self.cv.coef.shape[0]
        fold_coefficients = pd.DataFrame({
            "fold": np.repeat(np.arange(F), K).astype("int64"),
            "regressor": list(reg.names) * F,
            "layer": np.tile(np.asarray(reg.layers, dtype="int64"), F),
            "head": pd.array(list(heads) * F, dtype="Int64"),
            "coef": self.cv.coef.reshape(-1).astype("float64"),
        })
        folds = pd.DataFrame({"fold": np.arange(len(self.cv.r2), dtype="int64"),
                              "r2": np.asarray(self.cv.r2, dtype="float64"),
                              "cosine": np.asarray(self.cv.cosine, dtype="float64")})
        b = np.asarray(self.full.intercept, dtype="float64").reshape(-1)
        intercept = pd.DataFrame({"layer": np.full(len(b), self.layer, dtype="int64"),
                                  "dim": np.arange(len(b), dtype="int64"), "value": b})
        trace = pd.DataFrame({"step": np.asarray([s for s, _ in self.full.loss_trace], dtype="int64"),
                              "loss": np.asarray([v for _, v in self.full.loss_trace], dtype="float64")})
        sweep = (self.sweep.astype({"layer": "int64", "r2": "float64", "cv_r2": "float64", "cv_cosine": "float64"})
                 if self.sweep is not None else
                 pd.DataFrame({"layer": pd.Series(dtype="int64"), "r2": pd.Series(dtype="float64"),
                               "cv_r2": pd.Series(dtype="float64"), "cv_cosine": pd.Series(dtype="float64")}))
        cv = self.cv
        n = len(cv.sq_err) if cv.sq_err is not None else 0
        heldout = pd.DataFrame({
            "prompt_index": np.arange(n, dtype="int64"),
            "fold": np.asarray(cv.fold if n else [], dtype="int64"),
            **{name: np.asarray(getattr(cv, name) if n else [], dtype="float64")
               for name in ("sq_err", "sq_err_intercept", "sq_err_no_heads", "sq_norm")},
        })
        return {"decompose": self.to_frame(), "fold_coefficients": fold_coefficients, "folds": folds,
                "intercept": intercept, "sgd_trace": trace, "sweep": sweep[["layer", "r2", "cv_r2", "cv_cosine"]],
                "heldout": heldout}

    def to_dict(self) -> dict:
        out = {
            "layer": self.layer,
            "head_layer": self.head_layer,
            "layer_reason": self.layer_reason,
            "solver": self.full.solver,
            "n_prompts": self.n_prompts,
            "r2": self.full.r2,
            "cosine": self.full.cosine,
            "cv_r2": float(self.cv.r2.mean()),
            "cv_r2_std": float(self.cv.r2.std(ddof=1)),
            "cv_cosine": float(self.cv.cosine.mean()),
            "cv_cosine_std": float(self.cv.cosine.std(ddof=1)),
            **self.cv.pooled(),
            "folds": int(len(self.cv.r2)),
            "coefficients": self.coefficients(),
            "intercept_norm": float(np.linalg.norm(self.full.intercept)),
            "fit_seconds": self.full.seconds,
            "residual_regressor": (
                "r[l] − Σ_h a[l−1,h] − b_O: the rest of the MLP's input (parallel residual)"
                if self.head_layer != self.layer else "r[l], the residual entering the layer"
            ),
            "r2_definition": "1 − Σ‖m − m̂‖² / Σ‖m − m̄‖² over prompts and dimensions; CV: held-out prompts, held-out mean",
            "verdicts": "c > 1 amplified, 0 ≤ c ≤ 1 attenuated, c < 0 reversed",
        }
        if self.full.solver == "sgd":
            c = self.config
            out["sgd"] = {
                "converged": self.full.converged,
                "cv_converged": list(self.cv.converged),
                "loss": self.full.loss,
                "lstsq_loss": self.full.lstsq_loss,
                "lr": c.sgd_lr, "momentum": c.sgd_momentum, "steps": c.sgd_steps, "init": c.sgd_init,
                "engine": c.sgd_engine, "standardise": c.sgd_standardise, "tolerance": c.sgd_tolerance,
                "max_coef_diff_vs_lstsq": float(np.abs(self.full.coef - self.lstsq_reference.coef).max())
                if self.lstsq_reference is not None else None,
            }
            out["sgd_converged"] = self.full.converged
        if self.sweep is not None:
            out["sweep"] = [{k: (int(v) if k == "layer" else float(v)) for k, v in rec.items()} for rec in self.sweep.to_dict("records")]
        return out

    def plot(self) -> go.Figure:
        """The coefficients with their CV spread (the first of :func:`recallscope.figures.decompose.figures`)."""
        return decompose_figures.figures(self.tables(), self.to_dict())[0]


def intercept_from_table(table: pd.DataFrame) -> tuple[int, np.ndarray]:
    """(MLP layer, b [d]) from the decompose stage's ``intercept`` table (rows ``layer, dim, value``)."""
    if table is None or table.empty:
        raise UserError("the decompose stage's intercept table is empty (re-run decompose with --force)")
    layers = table["layer"].unique()
    if len(layers) != 1:
        raise ValueError(f"the intercept table holds layers {list(layers)}; one expected")
    ordered = table.sort_values("dim")
    if list(ordered["dim"]) != list(range(len(ordered))):
        raise ValueError("the intercept table's dims are not 0..d-1")
    return int(layers[0]), np.array(ordered["value"], dtype=np.float64)  # a writable copy (torch warns on read-only arrays)


def decompose(
    activations: EndActivations,
    layer: int,
    config: DecomposeConfig = DecomposeConfig(),
    seed: int = 0,
    layer_reason: str = "given",
    progress: bool = True,
) -> DecomposeResult:
    """Fit the decomposition of MLP ``layer`` (with CV, and the sweep if configured)."""
    if config.solver not in ("lstsq", "sgd"):
        raise UserError(f"--solver must be lstsq or sgd, got {config.solver!r}")
    reg = activations.regressors(layer, config.earlier_layers)
    N = reg.values.shape[0]
    reference = fit_lstsq(reg.values, reg.target)
    full = reference if config.solver == "lstsq" else fit_sgd(reg.values, reg.target, config, reference=reference)
    no_heads = [k for k, h in enumerate(reg.heads) if h < 0]
    cv = cross_validate(reg.values, reg.target, config, seed, no_heads=no_heads)
    boot = bootstrap_coefficients(reg.values, reg.target, config.n_bootstrap, int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
    sweep = None
    if config.sweep:
        lstsq_cfg = DecomposeConfig(solver="lstsq", folds=config.folds, earlier_layers=config.earlier_layers)
        rows = []
        n_layers = activations.mlp_out.shape[1]
        first = 1 if activations.parallel_residual else 0
        for l in track(range(first, n_layers), "decompose: sweep", total=n_layers - first, enabled=progress, unit="layers"):
            r = activations.regressors(l, config.earlier_layers)
            f = fit_lstsq(r.values, r.target)
            c = cross_validate(r.values, r.target, lstsq_cfg, seed)
            rows.append({"layer": l, "r2": f.r2, "cv_r2": float(c.r2.mean()), "cv_cosine": float(c.cosine.mean())})
        sweep = pd.DataFrame(rows)
    return DecomposeResult(
        layer=layer, head_layer=activations.head_layer(layer), layer_reason=layer_reason, regressors=reg, full=full,
        cv=cv, config=config, lstsq_reference=reference if config.solver == "sgd" else None, sweep=sweep, n_prompts=N,
        bootstrap=boot,
        n_layers=activations.head_out.shape[1],
        n_heads=activations.head_out.shape[2],
    )


# ----------------------------------------------------------------------------- default layer
def mlp_after(head_layer: int, mlp_reads_own_heads: bool, n_layers: int) -> int:
    layer = head_layer if mlp_reads_own_heads else head_layer + 1
    if layer >= n_layers:
        raise UserError(f"the strongest head is in the last layer ({head_layer}); no MLP reads it — give --layer")
    return layer


def strongest_head(movers_summary: dict | None, patch: pd.DataFrame | None) -> tuple[tuple[int, int], str]:
    """((layer, head), why): the mover with the largest |patching effect| (candidate order
    when effects are missing), else the head with the largest |patching effect| in ``patch`` (the
    patch stage's ``components`` table, ranked by the run's aggregate; see ``components.top_heads``)."""
    heads = (movers_summary or {}).get("heads") or []
    movers = [h for h in heads if h.get("is_mover")]
    if movers:
        def strength(item):
            i, h = item
            e = h.get("effect")
            return (0 if e is not None and math.isfinite(e) else 1, -abs(e) if e is not None and math.isfinite(e) else i)
        _, best = min(enumerate(movers), key=strength)
        return (int(best["layer"]), int(best["head"])), (
            f"the strongest mover head {head_label(best['layer'], best['head'])}"
            + (f" (patching effect {best['effect']:.1f}%)" if best.get("effect") is not None else "")
        )
    if patch is not None and "kind" in patch and (patch["kind"] == "head").any():
        best = top_heads(patch, 1)  # by the aggregate the run's patch config selected
        comp, effect = best.index[0], float(best.iloc[0])
        return (comp.layer, comp.head), (
            f"no head is a mover; the head with the largest |patching effect| ({best.name.replace('_', ' ')}) "
            f"is {comp.label} ({effect:.1f}%)"
        )
    raise UserError("decompose: no mover head and no patching result to choose a layer from; give --layer")


def check_config(config: DecomposeConfig, model) -> None:
    """The given layer, the solver and the fold count, checked before any stage runs."""
    cfg = model.cfg
    if config.layer is not None:
        if not 0 <= config.layer < cfg.n_layers:
            raise UserError(f"--layer {config.layer} out of range: the model has layers 0..{cfg.n_layers - 1}")
        if config.layer == 0 and cfg.parallel_residual:
            raise UserError(f"--layer {config.layer}: in a parallel-residual model the MLP of layer 0 reads no head")
    if config.solver not in ("lstsq", "sgd"):
        raise UserError(f"--solver must be lstsq or sgd, got {config.solver!r}")
    if config.sgd_engine not in ("gram", "data"):
        raise UserError(f"decompose.sgd_engine must be 'gram' or 'data', got {config.sgd_engine!r}")
    if config.folds < 2:
        raise UserError(f"decompose.folds must be >= 2, got {config.folds}")
    if config.earlier_layers < 0:
        raise UserError(f"decompose.earlier_layers must be >= 0, got {config.earlier_layers}")


def choose_layer(config: DecomposeConfig, n_layers: int, mlp_reads_own_heads: bool, movers_summary, patch) -> tuple[int, str]:
    if config.layer is not None:
        if not 0 <= config.layer < n_layers:
            raise UserError(f"--layer {config.layer} out of range: the model has layers 0..{n_layers - 1}")
        return int(config.layer), f"--layer {config.layer} (given)"
    (hl, hh), why = strongest_head(movers_summary, patch)
    layer = mlp_after(hl, mlp_reads_own_heads, n_layers)
    return layer, f"MLP {layer}, the MLP after {why}"
