"""Stage **claims**: does the paper's story hold for *this* model and relation?

Each of the paper's claims becomes one row: a **primary measurement** that matches what the
paper states, a 95% interval, the **rule** that turns it into a verdict (written in the row),
the **margin** by which the rule is met, and the verdict — *holds*, *does not hold*, or *not
measurable here* (a stage did not run, no prompt qualified, or the claim needs several shot
counts). Stricter or complementary evidence sits in further columns of the same row; it never
decides the verdict unless the rule names it. The figures are read from the other stages'
tables and summaries; nothing is recomputed on the model.

Every rule is a conjunction of **conditions**, each "statistic op threshold" where the
statistic is the relevant end of an interval (the lower end for "above", the upper end for
"below") or, where the paper's statement needs it, a count. A condition's **margin** is the
signed distance from the statistic to the threshold (positive: met with that much room, in
the statistic's units). The row's ``threshold``, ``margin`` and ``flips_at`` are the *deciding*
condition's (:func:`deciding_condition`): the primary one, unless the primary holds and another
fails, then the first that fails (the ``decided_by`` column names it) — so the row's margin is negative (or 0
under a strict ">"/"<") exactly when the verdict is *does not hold*. ``flips_at`` is the value
of that condition's setting at which the verdict would flip with everything else held fixed
(None when changing that setting alone cannot flip it: another condition fails too, or the
threshold is derived from the data or the model, not a setting);
the ``sensitivity`` table lists every condition with its own ``flips_at`` (``recallscope
claims RUN_DIR --sensitivity``). The thresholds are fields of :class:`ClaimsConfig` (or of the
movers stage's config, whose mover test the movers claim reuses), printed in the manifest.
The paper states no numeric threshold anywhere: every threshold below is recallscope's.

The claims (``claim`` column; "the paper" = Lv et al. 2024, arXiv 2403.19521)

1. *Mover heads move the topic to the last position* (movers). The heads are the ones
   patching singles out: the ``mover_top_heads`` movers-stage candidates with the largest
   |patching effect| (in the run's aggregate), strongest first. Primary: the share of prompts in
   which the head's OV circuit, reading the residual stream at the subject's position in
   context (r[l] entering the head's layer at X, through ln1 · W_V · W_O, logit lens), ranks X
   in its top 5 (the movers stage's ``ov_input``; ``context`` by default). Rule, for at least
   one of those heads: the lower end of that share's interval ≥ ``movers.min_ov_top5_share``,
   the lower end of the mean attention from the end to the subject ≥
   ``movers.min_attention_to_subject``, and the lower end of the scatter's r (attention vs
   a·W_U[X], the paper's scatter) ≥ ``movers.min_projection_corr``. The row shows the first head
   (in patching order) that passes, else the top one. Columns: the same OV share through IOI's
   effective embedding and through the raw embedding, attention to the first subject token, r
   at the first and the last subject token, the head's patching rank.
2. *The MLP after the movers amplifies or erases heads* (decompose). Primary: the held-out
   gain of the linear decomposition over the intercept-only model, 1 − Σ‖m − m̂‖² /
   Σ‖m − m̄_train‖² over the cross-validation's held-out prompts, bootstrap interval over
   prompts: do the terms that depend on the prompt predict the MLP's output at all? Rule: its
   lower end > ``min_heldout_gain`` *and* at least one head's coefficient departs from
   pass-through (c = 1): its bootstrap interval excludes 1 by more than ``min_coef_departure``
   and every fold's c lies on the same side of 1 (heads that do not vary across prompts are
   not counted). Amplified (c > 1), attenuated (0 ≤ c < 1) and reversed (c < 0) heads are
   counted separately (interval wholly inside the range, fold-stable). Columns: centred and
   uncentred held-out R², the intercept-only model's uncentred R², the gain over the model
   without head terms. The paper claims no R² level, so none is required.
3. *A deep MLP's intercept redirects the residual from topic to answer* (intercept). Primary:
   the share of prompts where adding b to r_mid[l] improves rank(Y) (bootstrap interval).
   Rule: its lower end > ``min_redirect_share`` and the answer-domain share of b's top tokens
   above the random-direction baseline's upper end. Kept because the planted control passes
   both and the random one fails both (tests/test_claims_controls.py).
4. *The final layer suppresses the correct answer* (suppress). Primary: per final-layer
   component (each head and the MLP), the mean direct logit attribution to Y (logits);
   reported: the component with the lowest interval upper end. Rule: its interval lies below
   −``min_suppression_logits`` and it is negative on more than ``min_share_negative`` of the
   prompts. Column: the whole layer's total DLA with its interval (the previous rule).
5. *Removing the suppressors raises confidence* (suppress). Primary: Δp(Y) on held-out known
   prompts after ``mitigation_mode``-ablating the suppressors chosen on the other fold. Rule:
   interval lower end > ``min_mitigation_delta_p``.
6. *Few-shot prompts employ the same heads* (patch at two shot counts; :func:`shot_claim`).
   Primary: the overlap of the top-k heads at the fewest and the most shots, heads ranked by
   the mean over prompts of |patching effect| (the size of a head's effect on a typical prompt:
   a head whose effect changes sign from prompt to prompt is still used; ranking by |mean
   effect| instead let heads with tiny, sign-changing effects trade places at the k-th rank on
   the planted control) (k = min(``top_heads``, ⌊heads/4⌋)), bootstrap interval (prompts of both runs
   resampled). Rule: its lower end > the ``level`` quantile of the overlap of two random
   k-sets of heads (hypergeometric: the permutation null of the head labels, exact, from
   ``scipy.stats.hypergeom``). Column: the shift of the effect-weighted mean head layer (more
   shots minus fewer; negative = earlier), with its interval — reported, not required (the
   paper says the zero-shot mechanisms are also employed few-shot, not that they move).

Effect-size floors (why these values)
    ``min_suppression_logits = 0.1``: a component that lowers Y's logit by 0.1 multiplies Y's
    odds by at most e^−0.1 ≈ 0.90, a change of p(Y) below 10% of itself. A push that small is
    not "the model suppresses its answer" in the paper's sense (its suppressors lower Y by
    logits, not hundredths); the random-weight control's final-layer heads sit at about
    −0.02 logits with tight intervals over 225 prompts and must not count.
    ``min_mitigation_delta_p = 0.01``: one percentage point of probability; a smaller rise
    does not "raise confidence" in any practical sense (the random control gains ~6·10⁻⁷).
    ``min_heldout_gain = 0`` and ``min_coef_departure = 0``: the paper's statements themselves
    (the decomposition predicts something held out; a coefficient differs from 1).

Columns of the ``claims`` table (one row per claim; all rows have every column, None where a
column does not apply; :data:`COLUMNS`):

- ``claim``, ``stage`` (the stage whose results it reads), ``about`` (the component(s) the
  primary figure is about, e.g. ``L23H4``, ``MLP23``), ``measure`` (what ``value`` is, with
  units), ``value``, ``ci_low``, ``ci_high`` (95% interval), ``threshold`` (the deciding
  condition's: the primary's, in ``value``'s units, unless another condition decides a failure),
  ``margin``, ``flips_at`` (setting units), ``verdict``,
  ``rule`` (every condition, with the settings' values), ``detail`` (plain words);
- movers (named as in the movers stage's per-head summary): ``ov_top5_share_effective``, ``ov_top5_share``, ``attention_to_subject``,
  ``attention_to_first_subject``, ``projection_corr_first``, ``projection_corr_last``, ``patch_rank``, ``n_movers``;
- decompose: ``cv_r2``, ``cv_r2_uncentred``, ``intercept_only_r2_uncentred``,
  ``gain_over_no_heads``, ``n_amplified``, ``n_attenuated``, ``n_reversed``;
- intercept: ``answer_domain_share``, ``answer_domain_random_high``, ``cos_b_answer_minus_subject``;
- suppress: ``layer_total_dla``, ``layer_total_ci_low``, ``layer_total_ci_high``, ``share_negative``;
  mitigation: ``p_before``, ``p_after``, ``accuracy_before``, ``accuracy_after``, ``delta_p_unknown``;
- few-shot: ``null_overlap``, ``layer_shift``, ``layer_shift_ci_low``, ``layer_shift_ci_high``.

The ``sensitivity`` table: one row per condition: ``claim, condition, setting, setting_value,
statistic, op, threshold, margin, holds, flips_at``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy import stats as _scipy_stats

from .components import head_effects, head_label
from .constraints import LEVEL, NON_NEGATIVE, POSITIVE, PROBABILITY, Interval, Options
from .display import ResultView
from .figures import claims as claims_figures
from .stats import bootstrap_ci, bootstrap_ci_samples, pearson

HOLDS = "holds"
FAILS = "does not hold"
NOT_MEASURABLE = "not measurable here"

CLAIM_MOVERS = "Mover heads move the topic (subject) to the last position"
CLAIM_MLP = "The MLP after the mover heads amplifies or erases heads (linear decomposition)"
CLAIM_INTERCEPT = "A deep MLP's intercept redirects the residual from topic to answer"
CLAIM_SUPPRESS = "The final layer suppresses the correct answer"
CLAIM_MITIGATE = "Removing the final-layer suppressors raises confidence in the answer"
CLAIM_SHOTS = "Few-shot prompts employ the same heads as zero-shot"

EVIDENCE = (
    "ov_top5_share_effective", "ov_top5_share", "attention_to_subject", "attention_to_first_subject",
    "projection_corr_first", "projection_corr_last",
    "patch_rank", "n_movers",
    "cv_r2", "cv_r2_uncentred", "intercept_only_r2_uncentred", "gain_over_no_heads", "n_amplified", "n_attenuated",
    "n_reversed",
    "answer_domain_share", "answer_domain_random_high", "cos_b_answer_minus_subject",
    "layer_total_dla", "layer_total_ci_low", "layer_total_ci_high", "share_negative",
    "p_before", "p_after", "accuracy_before", "accuracy_after", "delta_p_unknown",
    "null_overlap", "layer_shift", "layer_shift_ci_low", "layer_shift_ci_high",
)
COLUMNS = ("claim", "stage", "about", "measure", "value", "ci_low", "ci_high", "decided_by", "threshold", "margin",
           "flips_at", "verdict", "rule", "detail") + EVIDENCE
SENSITIVITY_COLUMNS = ("claim", "condition", "setting", "setting_value", "statistic", "op", "threshold", "margin", "holds",
                       "flips_at")


@dataclass(frozen=True)
class ClaimsConfig:
    mover_top_heads: int = 3  # the heads patching singles out: this many candidates by |patching effect|
    min_heldout_gain: float = 0.05  # effect-size floor: share of the intercept-only model's held-out error removed
    min_coef_departure: float = 0.0  # a head's c interval must exclude 1 by more than this
    min_redirect_share: float = 0.5  # b must raise rank(Y) on more than half the prompts
    min_suppression_logits: float = 0.1  # effect-size floor of a suppressor (logits; module docstring)
    min_share_negative: float = 0.5  # a suppressor is negative on more than this share of prompts
    min_mitigation_delta_p: float = 0.01  # effect-size floor of the mitigation (probability; module docstring)
    min_trace_effect: float = 0.01  # effect-size floor of the causal-tracing peak (probability; causal_trace.mlp_peak_claim)
    min_knockout_drop_pct: float = 10.0  # effect-size floor of the knockout dip (% of p(Y); knockout.reads_subject_claim)
    mitigation_mode: str = "zero"
    top_heads: int = 10  # heads compared across shot counts (at most a quarter of the model's heads)
    n_bootstrap: int = 2000
    level: float = 0.95
    seed: int = 0

    constraints: ClassVar[dict] = {
        "mover_top_heads": POSITIVE, "min_heldout_gain": Interval(None, 1), "min_coef_departure": NON_NEGATIVE,
        "min_redirect_share": PROBABILITY, "min_suppression_logits": NON_NEGATIVE, "min_share_negative": PROBABILITY,
        "min_mitigation_delta_p": Interval(0, 1), "min_trace_effect": Interval(0, 1),
        "min_knockout_drop_pct": Interval(0, 100), "mitigation_mode": Options("zero", "mean", "scale"),
        "top_heads": POSITIVE, "n_bootstrap": POSITIVE, "level": LEVEL, "seed": NON_NEGATIVE,
    }


@dataclass(frozen=True)
class Condition:
    """One condition of a rule: ``statistic op threshold``, threshold = ``sign`` × the setting's value."""

    name: str
    setting: str | None  # "claims.min_..." / "movers.min_..."; None: a threshold derived from the data
    setting_value: float | None
    statistic: float | None
    op: str  # ">=", ">", "<=", "<"
    threshold: float
    sign: float = 1.0

    def margin(self) -> float | None:
        if self.statistic is None or not math.isfinite(self.statistic):
            return None
        return float(self.statistic - self.threshold) if self.op in (">=", ">") else float(self.threshold - self.statistic)

    def holds(self) -> bool:
        m = self.margin()
        return m is not None and (m >= 0 if self.op in (">=", "<=") else m > 0)

    def flip_value(self) -> float | None:
        """The setting's value at which this condition changes (in setting units)."""
        if self.setting is None or self.statistic is None or not math.isfinite(self.statistic):
            return None
        return float(self.statistic / self.sign)

    def text(self) -> str:
        where = f"{self.setting} = {self.setting_value:g}" if self.setting is not None else "derived, not a setting"
        return f"{self.name} {self.op} {self.threshold:.4g} ({where})"


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
    about: str | None = None
    threshold: float | None = None
    margin: float | None = None
    flips_at: float | None = None
    conditions: tuple[Condition, ...] = ()
    evidence: dict = field(default_factory=dict)

    @property
    def decided_by(self) -> str | None:
        """The name of the condition the row's ``threshold``, ``margin`` and ``flips_at`` belong to
        (:func:`deciding_condition`); it differs from what ``value`` measures when the primary
        condition holds and another fails. None for a row without conditions (not measurable)."""
        return deciding_condition(self.conditions).name if self.conditions else None

    def row(self) -> dict:
        """The claims table's row (:data:`COLUMNS`)."""
        base = {k: getattr(self, k) for k in COLUMNS if k not in EVIDENCE}
        return {**base, **{k: self.evidence.get(k) for k in EVIDENCE}}

    def sensitivity(self) -> list[dict]:
        """One row per condition; ``flips_at`` only where moving that setting alone flips the verdict."""
        met = [c.holds() for c in self.conditions]
        rows = []
        for i, c in enumerate(self.conditions):
            others = all(m for j, m in enumerate(met) if j != i)
            rows.append({
                "claim": self.claim, "condition": c.name, "setting": c.setting, "setting_value": c.setting_value,
                "statistic": c.statistic, "op": c.op, "threshold": c.threshold, "margin": c.margin(), "holds": met[i],
                "flips_at": c.flip_value() if others and self.verdict != NOT_MEASURABLE else None,
            })
        return rows


def deciding_condition(conditions: Sequence[Condition]) -> Condition:
    """The condition a row's ``threshold``, ``margin`` and ``flips_at`` are read from: the primary
    (first) one when it fails or when every condition holds, else the first that fails. So a row's
    margin is negative (or 0 under a strict ">"/"<") exactly when its verdict is *does not hold*."""
    primary = conditions[0]
    if primary.holds():
        return next((c for c in conditions[1:] if not c.holds()), primary)
    return primary


def decide(claim: str, stage: str, about: str | None, measure: str, value, ci: tuple, conditions: list[Condition],
           detail: str, evidence: dict) -> Claim:
    """A claim whose verdict is the conjunction of ``conditions`` (the first is the primary one).

    ``threshold``, ``margin`` and ``flips_at`` are the :func:`deciding_condition`'s; ``flips_at``
    is None when moving that condition's setting alone cannot flip the verdict (another condition
    fails too, or its threshold comes from the data)."""
    deciding = deciding_condition(conditions)
    failing = [c for c in conditions if not c.holds()]
    unmet = [f"{c.name} = {_g(c.statistic)}, needs {c.op} {c.threshold:.4g}" for c in failing]
    if unmet:
        detail = f"{detail}; not met: {'; '.join(unmet)}"
        if deciding is not conditions[0]:  # the row's threshold and margin are not the primary figure's
            detail += f" (threshold and margin: {deciding.name})"
    alone = not failing or failing == [deciding]
    return Claim(
        claim, _f(value), _f(ci[0]), _f(ci[1]), FAILS if failing else HOLDS, measure,
        " and ".join(c.text() for c in conditions), detail, stage, about, deciding.threshold, deciding.margin(),
        deciding.flip_value() if alone else None, tuple(conditions), evidence,
    )


def _g(x) -> str:
    return "none" if x is None else f"{x:.4g}"


def _f(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _missing(claim: str, stage: str, why: str) -> Claim:
    return Claim(claim, None, None, None, NOT_MEASURABLE, "", "", why, stage)


def _ci(values: np.ndarray, cfg: ClaimsConfig) -> tuple[float, float]:
    return bootstrap_ci(np.asarray(values, dtype=float), n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed)


def _pearson_ci(x: np.ndarray, y: np.ndarray, cfg: ClaimsConfig) -> tuple[float, float]:
    """Percentile bootstrap interval of Pearson's r, the prompts' (x, y) pairs resampled together
    (vectorised over resamples; a resample where x or y is constant has no r and is dropped)."""
    if len(x) < 3 or pearson(x, y)[0] != pearson(x, y)[0]:
        return float("nan"), float("nan")
    idx = np.random.default_rng(cfg.seed).integers(0, len(x), size=(cfg.n_bootstrap, len(x)))
    xs, ys = x[idx] - x[idx].mean(1, keepdims=True), y[idx] - y[idx].mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xs * ys).sum(1) / np.sqrt((xs**2).sum(1) * (ys**2).sum(1))
    r = r[np.isfinite(r)]
    alpha = (1 - cfg.level) / 2
    return tuple(float(v) for v in np.quantile(r, [alpha, 1 - alpha])) if len(r) else (float("nan"), float("nan"))


# ----------------------------------------------------------------------------- 1. movers
def _patching_order(heads: list[dict]) -> list[int]:
    """Indices of the movers stage's candidate heads by |patching effect|, largest first (candidate
    order where a head has no effect)."""
    return sorted(range(len(heads)), key=lambda i: (-abs(heads[i]["effect"]) if _f(heads[i].get("effect")) is not None
                                                    else math.inf, i))


def patching_movers(summary: dict | None, cfg: ClaimsConfig) -> list[dict]:
    """The heads patching singles out as mover heads: the ``cfg.mover_top_heads`` candidates of the
    movers stage's summary (``heads``) with the largest |patching effect|, strongest first; [] when
    the movers stage did not run. Lv et al. locate the mover heads by path patching (the authors'
    code: easy_transformer/fact_utils.py, path_patching); the effects here are the run's patch
    stage's (total effects by default, path patching under ``--preset paper``). The movers claim
    (C1) then tests whether these heads move X, and the knockout claim asks whether the last
    position reads the subject in their layers."""
    heads = (summary or {}).get("heads") or []
    return [heads[i] for i in _patching_order(heads)[: cfg.mover_top_heads]]


def movers_claim(summary: dict | None, frame: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or frame is None or not len(frame):
        return _missing(CLAIM_MOVERS, "movers", "the movers stage did not run")
    heads = summary.get("heads", [])
    if not heads:
        return _missing(CLAIM_MOVERS, "movers", "no candidate head")
    th = summary.get("thresholds", {})
    ov_input = th.get("ov_input", "context")
    ov_column = {"context": "ov_rank_context", "effective": "ov_rank_effective", "embedding": "ov_rank_x"}[ov_input]
    if ov_column not in frame:
        return _missing(CLAIM_MOVERS, "movers", "the movers table predates the in-context OV columns: rerun movers with --force")
    order = _patching_order(heads)
    chosen = [heads[i] for i in order[: cfg.mover_top_heads]]
    # the attention the movers stage's scatter uses (its subject_token setting, written in its summary)
    first = str(summary.get("subject_token", "")).startswith("X = the subject's first")
    att_column = "attention_to_first_subject" if first else "attention_to_subject"

    def evaluate(h: dict) -> tuple[list[Condition], dict]:
        rows = frame[(frame["layer"] == h["layer"]) & (frame["head"] == h["head"])]
        ov = (rows[ov_column].to_numpy(float) < 5).astype(float)
        att = rows[att_column].to_numpy(float)
        proj = rows["projection"].to_numpy(float)
        ov_ci, att_ci = _ci(ov, cfg), _ci(att, cfg)
        r_ci = _pearson_ci(att, proj, cfg)
        conds = [
            Condition(f"OV top-5 share of X ({ov_input}), interval low", "movers.min_ov_top5_share",
                      th.get("min_ov_top5_share", 0.5), _f(ov_ci[0]), ">=", float(th.get("min_ov_top5_share", 0.5))),
            Condition("mean attention end → subject, interval low", "movers.min_attention_to_subject",
                      th.get("min_attention_to_subject", 0.3), _f(att_ci[0]), ">=", float(th.get("min_attention_to_subject", 0.3))),
            Condition("scatter r (attention vs a·W_U[X]), interval low", "movers.min_projection_corr",
                      th.get("min_projection_corr", 0.5), _f(r_ci[0]), ">=", float(th.get("min_projection_corr", 0.5))),
        ]
        first_share = lambda col: float((rows[col].to_numpy(float) < 5).mean()) if col in rows else None  # noqa: E731
        return conds, {"value": float(ov.mean()), "ci": ov_ci, "evidence": {
            "ov_top5_share_effective": first_share("ov_rank_effective"), "ov_top5_share": _f(h.get("ov_top5_share")),
            "attention_to_subject": _f(h.get("attention_to_subject")),
            "attention_to_first_subject": _f(h.get("attention_to_first_subject")),
            "projection_corr_first": _f(h.get("projection_corr_first")), "projection_corr_last": _f(h.get("projection_corr_last")),
        }}

    evaluated = [(h, *evaluate(h)) for h in chosen]
    passing = [e for e in evaluated if all(c.holds() for c in e[1])]
    h, conds, fig = (passing or evaluated)[0]
    name = head_label(h["layer"], h["head"])
    rank = order.index(heads.index(h)) + 1
    movers = summary.get("movers", [])
    evidence = {**fig["evidence"], "patch_rank": rank, "n_movers": len(movers)}
    detail = (f"heads singled out by patching (top {len(chosen)} by |effect|): "
              f"{', '.join(head_label(c['layer'], c['head']) for c in chosen)}; "
              + (f"{name} passes" if passing else f"none passes; shown: {name} (patching rank {rank})")
              + f"; the movers stage's mover test passes for {len(movers)} of {len(heads)} candidates"
              + (f" ({', '.join(movers)})" if movers else ""))
    return decide(CLAIM_MOVERS, "movers", name,
                  f"share of prompts where {name}'s OV circuit, reading the residual at the subject's position "
                  f"({ov_input}), ranks X top-5", fig["value"], fig["ci"], conds, detail, evidence)


# ----------------------------------------------------------------------------- 2. decompose
def _departure(row) -> float:
    """Signed distance of a coefficient's interval from c = 1 (positive: the interval excludes 1)."""
    return float(max(row["ci_low"] - 1.0, 1.0 - row["ci_high"]))


def mlp_claim(summary: dict | None, coefs: pd.DataFrame | None, heldout: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or coefs is None or heldout is None or not len(heldout) or "ci_low" not in coefs:
        return _missing(CLAIM_MLP, "decompose", "the decompose stage did not run (or predates its held-out table: rerun it)")
    err, base = heldout["sq_err"].to_numpy(float), heldout["sq_err_intercept"].to_numpy(float)
    gain = lambda a, b: 1.0 - np.sum(a) / np.sum(b) if np.sum(b) > 0 else float("nan")  # noqa: E731
    value = gain(err, base)
    ci = bootstrap_ci_samples((err, base), gain, n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed, paired=True)
    heads = coefs[coefs["head"].notna() & coefs["identifiable"].astype(bool)]
    stable = heads[heads["departs_stable"].astype(bool)]
    departures = stable.apply(_departure, axis=1) if len(stable) else pd.Series(dtype=float)
    best = stable.loc[departures.idxmax()] if len(stable) else None
    amplified = stable[stable["ci_low"] > 1]
    attenuated = stable[(stable["ci_low"] >= 0) & (stable["ci_high"] < 1)]
    reversed_ = stable[stable["ci_high"] < 0]
    layer = summary.get("layer")
    conds = [
        Condition("held-out gain over the intercept-only model, interval low", "claims.min_heldout_gain",
                  cfg.min_heldout_gain, _f(ci[0]), ">", cfg.min_heldout_gain),
        Condition("largest distance of a fold-stable head coefficient's interval from c = 1", "claims.min_coef_departure",
                  cfg.min_coef_departure, _f(departures.max()) if len(departures) else None, ">", cfg.min_coef_departure),
    ]
    names = lambda f: ", ".join(f"{r.regressor} ({r.coef:.3g})" for r in f.itertuples()) or "none"  # noqa: E731
    detail = (f"MLP {layer}: amplified (c > 1): {names(amplified)}; attenuated (0 ≤ c < 1): {names(attenuated)}; "
              f"reversed (c < 0): {names(reversed_)}"
              + (f"; farthest from pass-through: {best['regressor']} c = {best['coef']:.3g} "
                 f"[{best['ci_low']:.3g}, {best['ci_high']:.3g}]" if best is not None else "; no head departs stably from c = 1"))
    evidence = {
        "cv_r2": _f(summary.get("cv_r2")), "cv_r2_uncentred": _f(summary.get("cv_r2_uncentred")),
        "intercept_only_r2_uncentred": _f(summary.get("intercept_only_cv_r2_uncentred")),
        "gain_over_no_heads": _f(summary.get("heldout_gain_over_no_heads")),
        "n_amplified": len(amplified), "n_attenuated": len(attenuated), "n_reversed": len(reversed_),
    }
    return decide(CLAIM_MLP, "decompose", f"MLP{layer}",
                  f"held-out gain of m[{layer}] ≈ Σ c_h a_h + c_r r + b over the intercept-only model "
                  "(1 − Σ‖m − m̂‖² / Σ‖m − m̄‖², held-out prompts)", value, ci, conds, detail, evidence)


# ----------------------------------------------------------------------------- 3. intercept
def intercept_claim(summary: dict | None, frame: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or frame is None or "rank_Y_r_mid" not in getattr(frame, "columns", []):
        return _missing(CLAIM_INTERCEPT, "intercept", "the intercept stage did not run")
    improved = (frame["rank_Y_r_mid_plus_b"] < frame["rank_Y_r_mid"]).to_numpy(float)
    if not len(improved):
        return _missing(CLAIM_INTERCEPT, "intercept", "no prompt")
    ci = _ci(improved, cfg)
    share = _f(summary.get("answer_domain_share"))
    base_high = _f((summary.get("answer_domain_baseline") or {}).get("high"))
    conds = [
        Condition("share of prompts where b improves rank(Y), interval low", "claims.min_redirect_share",
                  cfg.min_redirect_share, _f(ci[0]), ">", cfg.min_redirect_share),
        Condition("answer-domain share of b's top tokens minus the random directions' upper end", None, None,
                  None if share is None or base_high is None else share - base_high, ">", 0.0),
    ]
    layer = summary.get("layer")
    detail = (f"intercept of MLP {layer}: answer-domain share of its top-{summary.get('top_k')} tokens {share} "
              f"(random directions: ≤ {base_high}); cos(b, W_U[Y] − W_U[X]) = {_f(summary.get('cos_b_answer_minus_subject'))}")
    evidence = {"answer_domain_share": share, "answer_domain_random_high": base_high,
                "cos_b_answer_minus_subject": _f(summary.get("cos_b_answer_minus_subject"))}
    return decide(CLAIM_INTERCEPT, "intercept", f"MLP{layer}",
                  "share of prompts where rank(Y) improves from r_mid[l] to r_mid[l] + b", float(improved.mean()), ci,
                  conds, detail, evidence)


# ----------------------------------------------------------------------------- 4, 5. suppress
def suppress_claim(summary: dict | None, cfg: ClaimsConfig) -> Claim:
    present = (summary or {}).get("suppression_present")
    components = (summary or {}).get("components") or []
    if not present or not components:
        return _missing(CLAIM_SUPPRESS, "suppress", "the suppress stage did not run")
    final = present.get("layer")
    pool = [c for c in components if c.get("layer") == final and _f(c.get("ci_high")) is not None] or \
        [c for c in components if _f(c.get("ci_high")) is not None]
    if not pool:
        return _missing(CLAIM_SUPPRESS, "suppress", "no final-layer component with an interval")
    best = min(pool, key=lambda c: c["ci_high"])
    count = [c["component"] for c in pool
             if c["ci_high"] < -cfg.min_suppression_logits and (c.get("share_negative") or 0) > cfg.min_share_negative]
    conds = [
        Condition("mean DLA to Y (logits), interval high", "claims.min_suppression_logits", cfg.min_suppression_logits,
                  _f(best["ci_high"]), "<", -cfg.min_suppression_logits, sign=-1.0),
        Condition("share of prompts with DLA < 0", "claims.min_share_negative", cfg.min_share_negative,
                  _f(best.get("share_negative")), ">", cfg.min_share_negative),
    ]
    detail = (f"final layer {final}: components below −{cfg.min_suppression_logits:g} logits on most prompts: "
              f"{', '.join(count) or 'none'}; the layer's total DLA {_f(present.get('final_layer_total_dla')):.4g} "
              f"[{_f(present.get('ci_low')):.4g}, {_f(present.get('ci_high')):.4g}]")
    evidence = {"layer_total_dla": _f(present.get("final_layer_total_dla")), "layer_total_ci_low": _f(present.get("ci_low")),
                "layer_total_ci_high": _f(present.get("ci_high")), "share_negative": _f(best.get("share_negative"))}
    return decide(CLAIM_SUPPRESS, "suppress", best["component"],
                  f"mean direct logit attribution of {best['component']} to Y (logits), the final-layer component "
                  "with the lowest interval", best.get("mean_dla"), (best.get("ci_low"), best.get("ci_high")), conds,
                  detail, evidence)


def mitigation_claim(summary: dict | None, cfg: ClaimsConfig) -> Claim:
    mitigation = (summary or {}).get("mitigation")
    if not mitigation:
        return _missing(CLAIM_MITIGATE, "suppress", "the suppress stage did not run")
    entry = mitigation.get(cfg.mitigation_mode, {}).get("known", {})
    delta = entry.get("delta_p_answer")
    if not delta:
        return _missing(CLAIM_MITIGATE, "suppress", f"no held-out result for mode {cfg.mitigation_mode!r}")
    unknown = mitigation.get(cfg.mitigation_mode, {}).get("unknown", {})
    before, after = entry.get("before", {}), entry.get("after", {})
    conds = [Condition("Δp(Y) on held-out known prompts, interval low", "claims.min_mitigation_delta_p",
                       cfg.min_mitigation_delta_p, _f(delta.get("ci_low")), ">", cfg.min_mitigation_delta_p)]
    suppressors = sorted({s for f in (summary.get("fold_suppressors") or []) for s in f.get("suppressors", [])})
    detail = (f"{cfg.mitigation_mode}-ablation of the suppressors chosen on the other fold ({', '.join(suppressors) or 'none'}): "
              f"p(Y) {before.get('p_answer')} → {after.get('p_answer')}, accuracy {before.get('accuracy')} → "
              f"{after.get('accuracy')}")
    evidence = {"p_before": _f(before.get("p_answer")), "p_after": _f(after.get("p_answer")),
                "accuracy_before": _f(before.get("accuracy")), "accuracy_after": _f(after.get("accuracy")),
                "delta_p_unknown": _f((unknown.get("delta_p_answer") or {}).get("mean"))}
    return decide(CLAIM_MITIGATE, "suppress", ", ".join(suppressors) or None, "Δp(Y) on held-out known prompts (probability)",
                  delta.get("mean"), (delta.get("ci_low"), delta.get("ci_high")), conds, detail, evidence)


def run_claims(summaries: dict, frames: dict, cfg: ClaimsConfig = ClaimsConfig()) -> list[Claim]:
    """The per-run claims from the stages' summaries and tables (missing stages → not measurable).

    ``frames``: ``movers`` and ``intercept`` (their main tables), ``decompose`` (its main table,
    per regressor) and ``decompose_heldout`` (its ``heldout`` table); a missing one is None.
    """
    return [
        movers_claim(summaries.get("movers"), frames.get("movers"), cfg),
        mlp_claim(summaries.get("decompose"), frames.get("decompose"), frames.get("decompose_heldout"), cfg),
        intercept_claim(summaries.get("intercept"), frames.get("intercept"), cfg),
        suppress_claim(summaries.get("suppress"), cfg),
        mitigation_claim(summaries.get("suppress"), cfg),
        Claim(CLAIM_SHOTS, None, None, None, NOT_MEASURABLE, "", "",
              "needs one relation at two shot counts in one run (e.g. --shots 0,3)", "patch"),
    ]


# ----------------------------------------------------------------------------- 6. shots
def _weighted_layer(weights: np.ndarray, layers: np.ndarray) -> float:
    return float((weights * layers).sum() / weights.sum())


def shot_k(cfg: ClaimsConfig, n_heads: int) -> int:
    """k of the top-k comparison: at most a quarter of the heads, so that chance overlap stays small."""
    return max(1, min(cfg.top_heads, n_heads // 4))


def shot_claim(relation: str, low: tuple[int, pd.DataFrame], high: tuple[int, pd.DataFrame],
               cfg: ClaimsConfig = ClaimsConfig()) -> Claim:
    """The few-shot claim for one relation from its patch tables at two shot counts (module docstring, 6).

    ``low``/``high``: (shots, the patch stage's per-prompt main table).
    """
    (k0, p0), (k1, p1) = low, high
    if p0 is None or p1 is None or not len(p0) or not len(p1):
        return _missing(CLAIM_SHOTS, "patch", f"{relation}: the patch stage did not run at {k0} and {k1} shots")
    e0, e1 = head_effects(p0), head_effects(p1)
    names = [c for c in e0.columns if c in set(e1.columns)]
    if not names:
        return _missing(CLAIM_SHOTS, "patch", f"{relation}: no head patched at both shot counts")
    a0, a1 = e0[names].to_numpy(float), e1[names].to_numpy(float)
    layers = p0[p0["kind"] == "head"].drop_duplicates("component").set_index("component")["layer"].reindex(names).to_numpy(float)
    n, k = len(names), shot_k(cfg, len(names))

    def top(mean_abs: np.ndarray) -> np.ndarray:  # [..., n] -> [..., k] head indices, ties by label order
        return np.argsort(-mean_abs, axis=-1, kind="stable")[..., :k]

    m0, m1 = np.nanmean(np.abs(a0), 0), np.nanmean(np.abs(a1), 0)  # mean |effect| per head (module docstring)
    t0, t1 = top(m0), top(m1)
    overlap = len(set(t0) & set(t1))
    rng = np.random.default_rng(cfg.seed)
    B = max(1, cfg.n_bootstrap // 4)
    i0 = rng.integers(0, len(a0), size=(B, len(a0)))
    i1 = rng.integers(0, len(a1), size=(B, len(a1)))
    b0 = np.stack([np.nanmean(np.abs(a0[i]), 0) for i in i0])
    b1 = np.stack([np.nanmean(np.abs(a1[i]), 0) for i in i1])
    boot = np.array([len(set(x) & set(y)) for x, y in zip(top(b0), top(b1), strict=True)], dtype=float)
    alpha = (1 - cfg.level) / 2
    ci = tuple(float(v) for v in np.quantile(boot, [alpha, 1 - alpha]))
    null = _scipy_stats.hypergeom(n, k, k)  # overlap of two random k-sets of n heads (permuted labels)
    q = float(null.ppf(cfg.level))
    shift = _weighted_layer(m1, layers) - _weighted_layer(m0, layers)
    shifts = np.array([_weighted_layer(x, layers) - _weighted_layer(y, layers) for x, y in zip(b1, b0, strict=True)])
    s_lo, s_hi = (float(v) for v in np.quantile(shifts, [alpha, 1 - alpha]))
    conds = [Condition(f"top-{k} head overlap, interval low", None, None, ci[0], ">", q)]
    detail = (f"{relation}: top-{k} of {n} heads at {k0} shots {', '.join(names[i] for i in t0)}; at {k1} shots "
              f"{', '.join(names[i] for i in t1)}; {overlap} shared (random head sets: mean {null.mean():.2f}, "
              f"{cfg.level:.0%} quantile {q:g}, p = {float(null.sf(overlap - 1)):.2g}); effect-weighted mean head layer "
              f"{_weighted_layer(m0, layers):.2f} → {_weighted_layer(m1, layers):.2f}")
    evidence = {"null_overlap": q, "layer_shift": shift, "layer_shift_ci_low": s_lo, "layer_shift_ci_high": s_hi}
    return decide(CLAIM_SHOTS, "patch", f"top-{k} heads",
                  f"heads among the top {k} by mean |patching effect| at both {k0} and {k1} shots", overlap, ci, conds,
                  detail, evidence)


# ----------------------------------------------------------------------------- result
def claims_frame(claims) -> pd.DataFrame:
    """The claims table (:data:`COLUMNS`, one row per claim)."""
    return pd.DataFrame([c.row() for c in claims], columns=list(COLUMNS))


def sensitivity_frame(claims) -> pd.DataFrame:
    return pd.DataFrame([r for c in claims for r in c.sensitivity()], columns=list(SENSITIVITY_COLUMNS))


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class ClaimsResult(ResultView):
    stage = "claims"

    claims: tuple[Claim, ...]
    config: ClaimsConfig = field(default_factory=ClaimsConfig)

    def to_frame(self) -> pd.DataFrame:
        return claims_frame(self.claims)

    def tables(self) -> dict[str, pd.DataFrame]:
        """``claims`` (one row per claim, :data:`COLUMNS`) and ``sensitivity`` (one row per condition)."""
        return {"claims": self.to_frame(), "sensitivity": sensitivity_frame(self.claims)}

    def to_dict(self) -> dict:
        return {"claims": [c.row() for c in self.claims], "sensitivity": [r for c in self.claims for r in c.sensitivity()],
                "config": asdict(self.config)}

    def plot(self) -> go.Figure:
        """Each measurable claim's margin (the first of :func:`recallscope.figures.claims.figures`)."""
        return claims_figures.figures(self.tables(), self.to_dict())[0]
