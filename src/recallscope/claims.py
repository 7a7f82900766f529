"""Stage **claims**: does the paper's story hold for *this* model and relation?

Each of the paper's claims becomes one row: the figure measured on this run, a 95% interval and
a verdict — *holds*, *does not hold*, or *not measurable here* (a stage did not run, no prompt
qualified, or the claim needs several shot counts). The thresholds that turn a figure into a
verdict are fields of :class:`ClaimsConfig`, printed in the manifest and in each row's
``rule``. The figures are read from the other stages' tables and summaries; nothing is
recomputed on the model.

1. *Mover heads extract the topic*: at least one candidate head passes every mover threshold
   (movers stage). Figure: Pearson r (attention to the subject vs. its write along W_U[X]) of
   the strongest candidate, bootstrap interval over prompts.
2. *The MLP after them amplifies or erases heads*: the linear decomposition explains the MLP
   output on held-out prompts (cross-validated R² ≥ ``min_cv_r2``) and at least one head's
   coefficient is stably > 1 (amplified) or stably near/below 0 (erased or reversed).
   Interval: the range of the fold values (there is one R² per fold, not per prompt).
3. *A deep MLP's intercept points from topic to answer*: adding the intercept b to r_mid[l]
   raises the answer's rank on most prompts, and its logit lens favours the relation's answers
   more than random directions of the same norm. Figure: share of prompts where rank(Y)
   improves, bootstrap interval.
4. *The final layer suppresses the answer*: the final layer's total direct logit attribution
   to Y has its interval below 0 (suppress stage).
5. *Mitigation raises confidence*: removing the suppressors (zero-ablation, chosen on other
   prompts) raises p(Y) on held-out known prompts: interval of Δp(Y) above 0.
6. *Few-shot prompts engage the same heads earlier*: across two shot counts of one relation,
   the top heads overlap and their effect-weighted mean layer moves down (needs a run with
   several ``--shots``; see :func:`shot_claims`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from .components import head_effects, head_label
from .constraints import LEVEL, NON_NEGATIVE, POSITIVE, PROBABILITY, Interval, Options
from .stats import bootstrap_ci, bootstrap_ci_samples, pearson

HOLDS = "holds"
FAILS = "does not hold"
NOT_MEASURABLE = "not measurable here"

CLAIM_MOVERS = "Mover heads move the topic (subject) to the last position"
CLAIM_MLP = "The MLP after the mover heads amplifies or erases heads (linear decomposition)"
CLAIM_INTERCEPT = "A deep MLP's intercept redirects the residual from topic to answer"
CLAIM_SUPPRESS = "The final layer suppresses the correct answer"
CLAIM_MITIGATE = "Removing the final-layer suppressors raises confidence in the answer"
CLAIM_SHOTS = "Few-shot prompts engage the same heads, at earlier layers"


@dataclass(frozen=True)
class ClaimsConfig:
    min_cv_r2: float = 0.5  # the decomposition must explain half the MLP's variance on held-out prompts
    erase_below: float = 0.1  # |c| below this (or c < 0) counts as erased/reversed
    min_redirect_share: float = 0.5  # b must raise rank(Y) on more than half the prompts
    mitigation_mode: str = "zero"
    top_heads: int = 10  # heads compared across shot counts
    min_head_overlap: int = 5
    n_bootstrap: int = 2000
    level: float = 0.95
    seed: int = 0

    constraints: ClassVar[dict] = {
        "min_cv_r2": Interval(None, 1), "erase_below": Interval(), "min_redirect_share": PROBABILITY,
        "mitigation_mode": Options("zero", "mean", "scale"), "top_heads": POSITIVE, "min_head_overlap": NON_NEGATIVE,
        "n_bootstrap": POSITIVE, "level": LEVEL, "seed": NON_NEGATIVE,
    }


@dataclass(frozen=True)
class Claim:
    claim: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    measure: str
    rule: str
    detail: str = ""
    stage: str = ""


def _f(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _missing(claim: str, stage: str, why: str) -> Claim:
    return Claim(claim, None, None, None, NOT_MEASURABLE, "", "", why, stage)


def _bootstrap_pairs(x: np.ndarray, y: np.ndarray, cfg: ClaimsConfig) -> tuple[float, float]:
    """Percentile interval of Pearson's r, the prompts' (x, y) pairs resampled together."""
    return bootstrap_ci_samples((x, y), lambda a, b: pearson(a, b)[0], n=cfg.n_bootstrap, level=cfg.level,
                                seed=cfg.seed, paired=True)


def movers_claim(summary: dict | None, frame: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or frame is None or not len(frame):
        return _missing(CLAIM_MOVERS, "movers", "the movers stage did not run")
    heads = summary.get("heads", [])
    if not heads:
        return _missing(CLAIM_MOVERS, "movers", "no candidate head")
    movers = [h for h in heads if h.get("is_mover")]
    # Without a mover, the strongest candidate among the heads that at least look at the subject.
    looking = [h for h in heads if "attention" not in (h.get("failed") or [])]
    pool = movers or looking or heads
    best = max(pool, key=lambda h: (_f(h.get("projection_corr")) or -np.inf))
    rows = frame[(frame["layer"] == best["layer"]) & (frame["head"] == best["head"])]
    x = rows["attention_to_subject"].to_numpy(float)
    y = rows["projection"].to_numpy(float)
    lo, hi = _bootstrap_pairs(x, y, cfg)
    name = head_label(best["layer"], best["head"])
    thresholds = summary.get("thresholds", {})
    detail = (f"{len(movers)} of {len(heads)} candidate heads are movers"
              + (f" ({', '.join(summary.get('movers', []))})" if movers else "")
              + f"; strongest: {name}, attention to subject {best.get('attention_to_subject', float('nan')):.2f}, "
              f"median OV rank of X {best.get('ov_copy_rank')}")
    if not movers and best.get("failed"):
        detail += f", fails: {', '.join(best['failed'])}"
    return Claim(
        CLAIM_MOVERS, _f(best.get("projection_corr")), _f(lo), _f(hi), HOLDS if movers else FAILS,
        f"Pearson r of {name}: attention to subject vs a·W_U[X], across prompts",
        f"a head passes every mover threshold {thresholds}", detail, "movers",
    )


def mlp_claim(summary: dict | None, frame: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or summary.get("cv_r2") is None:
        return _missing(CLAIM_MLP, "decompose", "the decompose stage did not run")
    folds = pd.Series(dtype=float)
    if frame is not None and "r2" in frame:  # the decompose stage's ``folds`` table: held-out R² per fold
        folds = frame["r2"].astype(float)
    cv = _f(summary.get("cv_r2"))
    coefs = [c for c in summary.get("coefficients", []) if c.get("head", -1) is not None and c.get("head", -1) >= 0]
    amplified = [c["regressor"] for c in coefs if c.get("verdict_stable", True) and c.get("cv_mean", c["coef"]) > 1]
    erased = [c["regressor"] for c in coefs if c.get("verdict_stable", True) and c.get("cv_mean", c["coef"]) < cfg.erase_below]
    fits = cv is not None and cv >= cfg.min_cv_r2
    verdict = HOLDS if fits and (amplified or erased) else FAILS
    detail = (f"MLP {summary.get('layer')}: held-out R² {cv if cv is None else round(cv, 3)}; "
              f"amplified: {', '.join(amplified) or 'none'}; erased or reversed: {', '.join(erased) or 'none'}")
    return Claim(
        CLAIM_MLP, cv, _f(folds.min()) if len(folds) else None, _f(folds.max()) if len(folds) else None, verdict,
        f"cross-validated R² of m[{summary.get('layer')}] ≈ Σ c_h a_h + c_r r + b (interval: range over folds)",
        f"held-out R² ≥ {cfg.min_cv_r2} and a head with stable c > 1 or c < {cfg.erase_below}", detail, "decompose",
    )


def intercept_claim(summary: dict | None, frame: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or frame is None or "rank_Y_r_mid" not in getattr(frame, "columns", []):
        return _missing(CLAIM_INTERCEPT, "intercept", "the intercept stage did not run")
    improved = (frame["rank_Y_r_mid_plus_b"] < frame["rank_Y_r_mid"]).to_numpy(float)
    if not len(improved):
        return _missing(CLAIM_INTERCEPT, "intercept", "no prompt")
    value = float(improved.mean())
    lo, hi = bootstrap_ci(improved, n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed)
    share = _f(summary.get("answer_domain_share"))
    base = summary.get("answer_domain_baseline", {}) or {}
    base_high = _f(base.get("high"))
    domain_ok = share is not None and base_high is not None and share > base_high
    verdict = HOLDS if lo > cfg.min_redirect_share and domain_ok else FAILS
    detail = (f"intercept of MLP {summary.get('layer')}: answer-domain share of its top-{summary.get('top_k')} tokens "
              f"{share} (random directions: ≤ {base_high}); cos(b, W_U[Y] − W_U[X]) = "
              f"{_f(summary.get('cos_b_answer_minus_subject'))}")
    return Claim(
        CLAIM_INTERCEPT, value, _f(lo), _f(hi), verdict,
        "share of prompts where rank(Y) improves from r_mid[l] to r_mid[l] + b",
        f"interval above {cfg.min_redirect_share} and answer-domain share above the random-direction interval",
        detail, "intercept",
    )


def suppress_claim(summary: dict | None, cfg: ClaimsConfig) -> Claim:
    present = (summary or {}).get("suppression_present")
    if not present:
        return _missing(CLAIM_SUPPRESS, "suppress", "the suppress stage did not run")
    lo, hi = _f(present.get("ci_low")), _f(present.get("ci_high"))
    suppressors = [c["component"] for c in summary.get("components", []) if c.get("is_suppressor")]
    detail = (f"final layer {present.get('layer')}: total DLA to Y {_f(present.get('final_layer_total_dla'))}, "
              f"negative on {present.get('share_negative')} of prompts; components pushing Y down on most prompts: "
              f"{', '.join(suppressors) or 'none'}")
    return Claim(
        CLAIM_SUPPRESS, _f(present.get("final_layer_total_dla")), lo, hi,
        HOLDS if hi is not None and hi < 0 else FAILS,
        "mean direct logit attribution of the final layer (heads + MLP) to Y − mean logit",
        "interval below 0", detail, "suppress",
    )


def mitigation_claim(summary: dict | None, cfg: ClaimsConfig) -> Claim:
    mitigation = (summary or {}).get("mitigation")
    if not mitigation:
        return _missing(CLAIM_MITIGATE, "suppress", "the suppress stage did not run")
    entry = mitigation.get(cfg.mitigation_mode, {}).get("known", {})
    delta = entry.get("delta_p_answer")
    if not delta:
        return _missing(CLAIM_MITIGATE, "suppress", f"no held-out result for mode {cfg.mitigation_mode!r}")
    lo, hi = _f(delta.get("ci_low")), _f(delta.get("ci_high"))
    acc_b = entry.get("before", {}).get("accuracy")
    acc_a = entry.get("after", {}).get("accuracy")
    unknown = mitigation.get(cfg.mitigation_mode, {}).get("unknown", {})
    detail = (f"{cfg.mitigation_mode}-ablation of the suppressors (chosen on other prompts): p(Y) "
              f"{entry.get('before', {}).get('p_answer')} → {entry.get('after', {}).get('p_answer')}, accuracy "
              f"{acc_b} → {acc_a}; on unknown prompts Δp(Y) {(unknown.get('delta_p_answer') or {}).get('mean')}")
    return Claim(
        CLAIM_MITIGATE, _f(delta.get("mean")), lo, hi, HOLDS if lo is not None and lo > 0 else FAILS,
        "Δp(Y) on held-out known prompts", "interval above 0", detail, "suppress",
    )


def run_claims(summaries: dict, frames: dict, cfg: ClaimsConfig = ClaimsConfig()) -> list[Claim]:
    """The per-run claims from the stages' summaries and tables (missing stages → not measurable).

    ``frames``: ``movers`` and ``intercept`` (their main tables), ``decompose_folds`` (the decompose
    stage's ``folds`` table); a missing one is None.
    """
    claims = [
        movers_claim(summaries.get("movers"), frames.get("movers"), cfg),
        mlp_claim(summaries.get("decompose"), frames.get("decompose_folds"), cfg),
        intercept_claim(summaries.get("intercept"), frames.get("intercept"), cfg),
        suppress_claim(summaries.get("suppress"), cfg),
        mitigation_claim(summaries.get("suppress"), cfg),
        Claim(CLAIM_SHOTS, None, None, None, NOT_MEASURABLE, "", "",
              "needs one relation at two shot counts in one run (e.g. --shots 0,3)", "patch"),
    ]
    return claims


def _weighted_layer(effects: pd.DataFrame, layers: pd.Series) -> float:
    weights = effects.abs().mean(axis=0)
    return float((weights * layers[weights.index]).sum() / weights.sum())


def shot_claim(relation: str, low: tuple[int, pd.DataFrame], high: tuple[int, pd.DataFrame],
               cfg: ClaimsConfig = ClaimsConfig()) -> Claim:
    """Compare the patching of one relation at two shot counts.

    "Same heads": overlap of the top heads by |mean effect|. "Earlier": the effect-weighted mean
    layer of the heads, at the higher shot count minus the lower (negative = earlier), with a
    bootstrap interval that resamples the prompts of both runs independently.
    """
    (k0, p0), (k1, p1) = low, high
    if p0 is None or p1 is None or not len(p0) or not len(p1):
        return _missing(CLAIM_SHOTS, "patch", f"{relation}: the patch stage did not run at {k0} and {k1} shots")
    e0, e1 = head_effects(p0), head_effects(p1)
    layers = p0[p0["kind"] == "head"].drop_duplicates("component").set_index("component")["layer"]
    top = lambda e: list(e.abs().mean(axis=0).sort_values(ascending=False).index[: cfg.top_heads])  # noqa: E731
    t0, t1 = top(e0), top(e1)
    overlap = len(set(t0) & set(t1))
    shift = _weighted_layer(e1, layers) - _weighted_layer(e0, layers)
    # the prompts of the two runs resampled independently; each draw re-weights all heads, so a
    # quarter of the usual count suffices
    lo, hi = bootstrap_ci_samples(
        (np.arange(len(e0)), np.arange(len(e1))),
        lambda i0, i1: _weighted_layer(e1.iloc[i1.astype(int)], layers) - _weighted_layer(e0.iloc[i0.astype(int)], layers),
        n=max(1, cfg.n_bootstrap // 4), level=cfg.level, seed=cfg.seed,
    )
    verdict = HOLDS if overlap >= cfg.min_head_overlap and hi < 0 else FAILS
    detail = (f"{relation}: top-{cfg.top_heads} heads at {k0} shots {', '.join(t0[:5])}…, at {k1} shots "
              f"{', '.join(t1[:5])}…; {overlap} shared; effect-weighted mean head layer "
              f"{_weighted_layer(e0, layers):.2f} → {_weighted_layer(e1, layers):.2f}")
    return Claim(
        CLAIM_SHOTS, shift, float(lo), float(hi), verdict,
        f"shift of the effect-weighted mean layer of the heads, {k1}-shot minus {k0}-shot (negative = earlier)",
        f"≥ {cfg.min_head_overlap} of the top {cfg.top_heads} heads shared and the interval below 0", detail, "patch",
    )


@dataclass(frozen=True)
class ClaimsResult:
    claims: tuple[Claim, ...]
    config: ClaimsConfig = field(default_factory=ClaimsConfig)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.claims])

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"claims": self.to_frame()}

    def to_dict(self) -> dict:
        return {"claims": [asdict(c) for c in self.claims], "config": asdict(self.config)}

    def plot(self):
        return figures(self.to_frame(), self.to_dict())[0]


def figures(frame: pd.DataFrame, summary: dict) -> list:
    """Each measurable claim's figure with its interval, coloured by verdict."""
    import plotly.graph_objects as go

    colours = {HOLDS: "#2e7d32", FAILS: "#c62828", NOT_MEASURABLE: "#9e9e9e"}
    rows = frame.dropna(subset=["value"])
    fig = go.Figure()
    for _, r in rows.iterrows():
        err_plus = (r["ci_high"] - r["value"]) if pd.notna(r["ci_high"]) else None
        err_minus = (r["value"] - r["ci_low"]) if pd.notna(r["ci_low"]) else None
        fig.add_trace(go.Scatter(
            x=[r["value"]], y=[r["claim"]], mode="markers", marker=dict(size=12, color=colours.get(r["verdict"], "#555")),
            error_x=dict(type="data", symmetric=False, array=[err_plus or 0], arrayminus=[err_minus or 0]),
            name=r["verdict"], showlegend=False, hovertext=r["measure"],
        ))
    fig.update_layout(title="The paper's claims on this run (figure and 95% interval; colour = verdict)",
                      xaxis_title="measured figure (see each row's measure)", height=120 + 60 * max(1, len(rows)),
                      margin=dict(l=20, r=20, t=60, b=40))
    fig.update_yaxes(automargin=True)
    return [fig]
