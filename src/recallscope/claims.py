"""Stage **claims**: does the paper's story hold for *this* model and relation?

Each of the paper's claims becomes one row: a **primary measurement** that matches what the
paper states, a 95% interval, the **rule** that turns it into a verdict (written in the row),
the **margin** by which the rule is met, and one of four verdicts (below). Stricter or
complementary evidence sits in further columns of the same row; it never decides the verdict
unless the rule names it. The figures are read from the other stages' tables and summaries;
nothing is recomputed on the model.

Verdicts (:func:`decide_conditions`, the one decision every row — the trace, knockout and
few-shot rows included — goes through)
    Every rule is a conjunction of **conditions** (:class:`Condition`), each "statistic op
    threshold" where the statistic is measured with a 95% interval: a bootstrap over prompts,
    or for a *count* of prompts ("negative on more than half of the prompts") the Clopper–Pearson
    interval of the share (:func:`recallscope.stats.proportion_ci`), so that counts are decided
    the same way; a figure without sampling error (a layer index, a share against a null's
    quantile) is its own point interval. A condition is **met** when its whole interval lies on
    the passing side of the threshold, **failed** when its whole interval lies on the failing
    side (the threshold itself is on the failing side of a strict ">"/"<" and on the passing side
    of ">="/"<="), and **straddles** otherwise. The verdict is

    - *holds*: every condition is met;
    - *does not hold*: at least one condition fails — evidence that the mechanism is absent,
      not merely that it was not seen;
    - *inconclusive*: none fails but some interval straddles its threshold — too few prompts to
      decide either way (the row says how many would decide it: prompts needed, below);
    - *not measurable here*: a stage did not run, no prompt qualified, or the claim needs
      several shot counts.

Margins, the deciding condition, flips
    A condition's **statistic** is its interval's end that must clear the threshold (the low end
    for ">"/">=", the high end for "<"/"<="); its **margin** is the signed distance from that
    end to the threshold (≥ 0, > 0 under a strict inequality: met). The row's ``threshold``,
    ``margin`` and ``flips_at`` are the *deciding* condition's (``decided_by``; its estimate and
    interval are ``decided_value``, ``decided_ci_low``, ``decided_ci_high``, in the threshold's
    units, since it is not always what ``value`` measures): for *holds* the primary (first)
    condition; for *does not hold* the primary if it fails, else the first that fails; for
    *inconclusive* the straddling condition that would settle the verdict first as the sample
    grows (:func:`decide_conditions`). ``flips_at`` (:func:`flips_at`) is the value of that
    condition's setting nearest its current value at which the verdict changes, everything else
    fixed (a met condition turns straddling at its statistic, a failed one at its other end;
    None when that setting alone cannot change the verdict, or the threshold is derived from the
    data, not a setting); the ``sensitivity`` table lists every condition with its interval,
    state, ``met_at``, ``failed_at`` and ``flips_at`` (``recallscope claims RUN_DIR
    --sensitivity``). The thresholds are fields of :class:`ClaimsConfig` (or of the movers
    stage's config, whose mover test the movers claim reuses: :data:`READ_SETTINGS`, which
    ``recallscope claims RUN_DIR --set`` also takes), printed in the manifest. The paper states
    no numeric threshold anywhere: every threshold below is recallscope's.

Prompts needed (``prompts_used``, ``prompts_needed``, ``prompts_available``)
    For a straddling condition measured over n known prompts (``prompts_used``), the known
    prompts at which its interval would clear the threshold *if the estimate stayed as measured
    and the interval's half-widths shrank as 1/√n* (the rate of a standard error; bootstrap and
    Clopper–Pearson intervals of a mean or a share narrow so; it is an estimate, not a power
    analysis): n' = n · (w / d)², d the estimate's distance to the threshold, w the half-width on
    the threshold's side (:meth:`Condition.prompts_needed`). The estimate's side says which way
    it would be decided. The row's ``prompts_needed`` is the deciding condition's: one condition
    heading to fail settles the verdict (the fewest such prompts), otherwise every straddling
    condition must pass (the most). ``prompts_available`` is what the relation can give: its
    usable prompts × this run's known rate (the run layer's ``known_available``); when fewer than
    needed, the detail says more prompts of this relation cannot decide it.

The claims (``claim`` column; "the paper" = Lv et al. 2024, arXiv 2403.19521)

1. *Mover heads move the topic to the last position* (movers). The heads are the ones
   patching singles out: the ``mover_top_heads`` movers-stage candidates with the largest
   |patching effect| (in the run's aggregate), strongest first. Primary: the share of prompts in
   which the head's OV circuit, reading the residual stream at the subject's position in
   context (r[l] entering the head's layer at X, through ln1 · W_V · W_O, logit lens), ranks X
   in its top 5 (the movers stage's ``ov_input``; ``context`` by default), a count
   (Clopper–Pearson). Rule, for at least one of those heads: that share ≥
   ``movers.min_ov_top5_share``, the mean attention from the end to the subject ≥
   ``movers.min_attention_to_subject``, and the scatter's r (attention vs a·W_U[X], the paper's
   scatter; bootstrap interval) ≥ ``movers.min_projection_corr``. The claim is about *some*
   head (:func:`best_of`): it holds if one head holds, does not hold only if every head fails,
   and the row shows the first head (in patching order) that holds, else the first
   inconclusive one, else the top one. Columns: the same OV share through IOI's effective
   embedding and through the raw embedding, attention to the first subject token, r at the
   first and the last subject token, the head's patching rank.
2. *The MLP after the movers amplifies or erases heads* (decompose). Primary: the held-out
   gain of the linear decomposition over the intercept-only model, 1 − Σ‖m − m̂‖² /
   Σ‖m − m̄_train‖² over the cross-validation's held-out prompts, bootstrap interval over
   prompts: do the terms that depend on the prompt predict the MLP's output at all? Rule: it
   is > ``min_heldout_gain`` *and* some head's coefficient departs from pass-through (c = 1)
   by more than ``min_coef_departure`` (:func:`departure_condition`: met when a fold-stable
   head's interval clears 1 by that much — every fold's c on the same side of 1; heads that do
   not vary across prompts are not counted — failed only when every head's interval lies within
   that distance of 1). Amplified (c > 1), attenuated (0 ≤ c < 1) and reversed (c < 0) heads are
   counted separately (interval wholly inside the range, fold-stable). Columns: centred and
   uncentred held-out R², the intercept-only model's uncentred R², the gain over the model
   without head terms. The paper claims no R² level, so none is required.
3. *A deep MLP's intercept redirects the residual from topic to answer* (intercept). Primary:
   the share of prompts where adding b to r_mid[l] improves rank(Y) (a count, Clopper–Pearson).
   Rule: it is > ``min_redirect_share`` and the answer-domain share of b's top tokens lies
   above the random-direction baseline's upper end (exact: a property of one vector against a
   null of random directions).
4. *The final layer suppresses the correct answer* (suppress). Primary: per final-layer
   component (each head and the MLP), the mean direct logit attribution to Y (logits). Rule,
   for some component: its interval lies below −``min_suppression_logits`` and it is negative
   on more than ``min_share_negative`` of the prompts (a count, Clopper–Pearson); the row shows
   the component with the lowest interval among those of the first verdict of holds,
   inconclusive, does not hold (:func:`best_of`). Column: the whole layer's total DLA with its
   interval (the previous rule).
5. *Removing the suppressors raises confidence* (suppress). Primary: Δp(Y) on held-out known
   prompts after ``mitigation_mode``-ablating the suppressors chosen on the other fold. Rule:
   it is > ``min_mitigation_delta_p``.
6. *Few-shot prompts employ the same heads* (patch at two shot counts; :func:`shot_claim`).
   Primary: the overlap of the top-k heads at the fewest and the most shots, heads ranked by
   the mean over prompts of |patching effect| (the size of a head's effect on a typical prompt:
   a head whose effect changes sign from prompt to prompt is still used; ranking by |mean
   effect| instead let heads with tiny, sign-changing effects trade places at the k-th rank on
   the planted control) (k = min(``top_heads``, ⌊heads/4⌋)), bootstrap interval (prompts of both runs
   resampled). Rule: it is > the ``level`` quantile of the overlap of two random k-sets of
   heads (hypergeometric: the permutation null of the head labels, exact, from
   ``scipy.stats.hypergeom``) *and* there are heads to share: the strongest head's mean
   |Δπ(Y)| (logits, patched − clean) is ≥ ``min_head_effect_logits`` at both shot counts (the
   smaller of the two, bootstrap interval). Column: the shift of the effect-weighted mean head
   layer (more shots minus fewer; negative = earlier), with its interval — reported, not
   required (the paper says the zero-shot mechanisms are also employed few-shot, not that they
   move).

The trace (:func:`recallscope.causal_trace.mlp_peak_claim`), knockout
(:func:`recallscope.knockout.reads_subject_claim`) and surgery
(:func:`recallscope.surgery.necessity_claim`, C9: ablating the mover heads hurts recall more than
ablating matched random heads) rows, where those opt-in stages ran, are decided the same way; so
are the two rows across shot counts about what demonstrations change
(:func:`recallscope.onset.earlier_claims`: C10, the subject reaches the last position earlier;
C11, the answer domain appears earlier), beside C6 in a sweep.

Controls: what demonstrates absence (tests/test_claims_controls.py)
    On the ``planted`` control every claim holds (but C10 and C11: no demonstration mechanism is
    planted, below); on the ``random`` control every measurable
    claim *does not hold* — not inconclusive — under both presets, because each rule has a
    condition whose whole interval the random model puts on the failing side. The tests run
    ``recallscope run --model planted|random --shots 0,3 [--preset paper]`` (random: ``--set
    recall.known_top_k=49152``) and check every row the run writes, whatever rows exist; a new
    rule names here the floor or null that lets it fail:

    - C1: effect-size floors, the movers thresholds themselves: the OV share's threshold 0.5 is
      "more often than not", far above the chance of ranking X top-5 (5 / V); random heads
      attend ~0.1 to the subject against 0.3, and their r straddles 0 against 0.5 (all three
      fail there).
    - C2: the floor ``min_heldout_gain`` (random: a gain interval below 0.01, against 0.05). The
      departure condition cannot fail at its default 0 unless every head demonstrably passes
      through; the gain floor carries the evidence of absence.
    - C3: a null distribution. The primary's threshold 0.5 is chance itself (a direction
      unrelated to Y improves rank(Y) on about half the prompts), so on random its share may
      straddle 0.5 (at 0 shots of ``recallscope run --model random`` it lies below: 0.09 to
      0.40); where it does, the answer-domain share of b's top tokens against the upper end of
      random directions' (``intercept.n_random``) decides: 0 against 0.
    - C4: the floor ``min_suppression_logits`` (random: the lowest final-layer interval sits
      around [−0.04, −0.01] logits, wholly above −0.1).
    - C5: the floor ``min_mitigation_delta_p`` (random: Δp(Y) ≈ 10⁻⁶).
    - C6: the floor ``min_head_effect_logits``, added because the overlap alone could not fail
      there: with 12 heads and k = 3 the bootstrap overlap's upper end reaches k, and a random
      model's heads keep their sizes across shot counts (their weights, not a mechanism, set
      them). Its strongest head moves π(Y) by ≤ 0.03 logits (π(Y) itself is ≈ 0, so % effects
      are ratios of noise), against 0.1.
    - C10: the floor ``min_move_logits`` (random: the attention's peak write along u_X ≈ 0.07 logits,
      against 1); C11: a domain that never appears in the lens gives a shift of exactly 0 (failed). The
      planted control has no demonstration mechanism (its movers act in layer 1 and the domain appears
      after layer 1 at every shot count), so both rows *do not hold* there too: a zero shift, failed;
      with a head added that writes the answer domain once demonstrations are in the prompt, C11 holds
      (domain onset 1 → 0 on every prompt; :func:`recallscope.onset.earlier_claims`; tests/test_onset.py).
    - trace: the floor ``min_trace_effect`` (random: IE ~10⁻⁹ of probability); knockout: the
      floor ``min_knockout_drop_pct`` (random: a dip of ~0.2% against 10%); surgery: the floor
      ``min_surgery_drop_p`` (random: p(Y) ≈ 1/V, so ablating any heads moves it by < 10⁻⁶; the
      excess over the null alone can pass there, at the 10⁻⁷ scale, since patching picks the
      heads that move p(Y) most).

Effect-size floors (why these values)
    ``min_suppression_logits = 0.1``: a component that lowers Y's logit by 0.1 multiplies Y's
    odds by at most e^−0.1 ≈ 0.90, a change of p(Y) below 10% of itself. A push that small is
    not "the model suppresses its answer" in the paper's sense (its suppressors lower Y by
    logits, not hundredths); the random-weight control's final-layer heads sit at about
    −0.02 logits with tight intervals over 225 prompts and must not count.
    ``min_head_effect_logits = 0.1``: the same size, for the few-shot claim's heads: a head
    whose removal moves π(Y) by less than a tenth of a logit is not a mechanism that prompts
    could share.
    ``min_mitigation_delta_p = 0.01``: one percentage point of probability; a smaller rise
    does not "raise confidence" in any practical sense (the random control gains ~6·10⁻⁷).
    ``min_surgery_drop_p = 0.01``: the same point of probability, for the mover heads' ablation:
    a smaller drop of p(Y) is not "hurts recall".
    ``min_heldout_gain = 0.05``: the decomposition must remove at least 5% of the
    intercept-only model's held-out error (random: < 1%); ``min_coef_departure = 0``: the
    paper's statement itself (a coefficient differs from 1).

Columns of the ``claims`` table (one row per claim; all rows have every column, None where a
column does not apply; :data:`COLUMNS`):

- ``claim``, ``verdict`` (:data:`VERDICTS`), ``decided_by`` (the deciding condition),
  ``decided_value``, ``decided_ci_low``, ``decided_ci_high`` (the statistic that decided the
  verdict and its interval, in the threshold's units: what the CLI and the report show as the
  claim's value), ``threshold``, ``margin`` (its), ``flips_at`` (setting units), then ``stage``
  (the stage whose results it reads), ``about`` (the component(s) the primary figure is about,
  e.g. ``L23H4``, ``MLP23``), ``measure`` (what ``value`` is, with units), ``value``,
  ``ci_low``, ``ci_high`` (the claim's primary figure and its 95% interval: not always the
  deciding statistic, e.g. C1's OV share 1 [0.75, 1] while its scatter r decided),
  ``prompts_used`` (the known prompts the deciding interval is over; None for a figure without
  sampling error), ``prompts_needed`` (inconclusive rows: the known prompts that would decide
  it, effect as measured, width ∝ 1/√n), ``prompts_available`` (the known prompts the relation
  can give at this run's known rate), ``rule`` (every condition, with the settings' values),
  ``detail`` (plain words);
- movers (named as in the movers stage's per-head summary): ``ov_top5_share_effective``, ``ov_top5_share``, ``attention_to_subject``,
  ``attention_to_first_subject``, ``projection_corr_first``, ``projection_corr_last``, ``patch_rank``, ``n_movers``;
- decompose: ``cv_r2``, ``cv_r2_uncentred``, ``intercept_only_r2_uncentred``,
  ``gain_over_no_heads``, ``n_amplified``, ``n_attenuated``, ``n_reversed``;
- intercept: ``answer_domain_share``, ``answer_domain_random_high``, ``cos_b_answer_minus_subject``;
- suppress: ``layer_total_dla``, ``layer_total_ci_low``, ``layer_total_ci_high``, ``share_negative``;
  mitigation: ``p_before``, ``p_after``, ``accuracy_before``, ``accuracy_after``, ``delta_p_unknown``;
- few-shot: ``null_overlap``, ``layer_shift``, ``layer_shift_ci_low``, ``layer_shift_ci_high``;
- surgery (named as in the surgery stage): ``drop_p`` (the mover heads' mean drop in p(Y)),
  ``p_value_layer``, ``p_value_norm``, ``effect_size_layer``, ``effect_size_norm`` (each null's
  p-value and robust z), at ``surgery_scope``.

The ``sensitivity`` table (:data:`SENSITIVITY_COLUMNS`): one row per condition: ``claim,
condition, setting, setting_value, estimate, ci_low, ci_high`` (the condition's statistic and its
interval), ``statistic`` (the end that must clear the threshold), ``op, threshold, margin,
state`` (:data:`MET`, :data:`FAILED` or :data:`STRADDLES`), ``met_at, failed_at`` (the setting's
values at which it turns met / failed), ``flips_at`` (where the verdict changes),
``prompts_used, prompts_needed``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy import stats as _scipy_stats

from .components import head_effects, head_label
from .constraints import LEVEL, NON_NEGATIVE, POSITIVE, RESAMPLES, PROBABILITY, Interval, Options
from .display import ResultView
from .figures import claims as claims_figures
from .stats import bootstrap_ci, bootstrap_ci_samples, pearson, proportion_ci
from .verdicts import LEADING

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_MEASURABLE = "not measurable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURABLE)
# a condition's state: its interval wholly on the passing side, wholly on the failing side, or across the threshold
MET, FAILED, STRADDLES = "met", "failed", "straddles"

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
    "onset_fewest", "onset_most", "p_fewest", "p_most", "pairing", "n_paired", "every_head_shift",
    "drop_p", "p_value_layer", "p_value_norm", "effect_size_layer", "effect_size_norm",
)
# the verdict and the statistic that decided it lead (what the CLI and the report show as a claim's
# value); the claim's primary figure (``value``, ``ci_low``, ``ci_high``, what ``measure`` names) follows
COLUMNS = LEADING + ("stage", "about", "measure", "value", "ci_low", "ci_high", "prompts_used", "prompts_needed",
           "prompts_available", "rule", "detail") + EVIDENCE
SENSITIVITY_COLUMNS = ("claim", "condition", "setting", "setting_value", "estimate", "ci_low", "ci_high", "statistic", "op",
                       "threshold", "margin", "state", "met_at", "failed_at", "flips_at", "prompts_used", "prompts_needed")


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
    min_head_effect_logits: float = 0.1  # effect-size floor of the few-shot claim's strongest head (logits of π(Y))
    min_move_logits: float = 1.0  # effect-size floor of the subject's transport, C10 (logits of π(X); onset.earlier_claims)
    min_onset_shift: float = 0.0  # C10, C11: the onset must move earlier by more than this (layers)
    min_surgery_drop_p: float = 0.01  # effect-size floor of the movers' ablation (probability; surgery.necessity_claim)
    surgery_scope: str = "end"  # the surgery row reads this ablation: "end" (end position) or "all" (every position)
    mitigation_mode: str = "zero"
    top_heads: int = 10  # heads compared across shot counts (at most a quarter of the model's heads)
    n_bootstrap: int = 2000
    level: float = 0.95
    seed: int = 0

    constraints: ClassVar[dict] = {
        "mover_top_heads": POSITIVE, "min_heldout_gain": Interval(None, 1), "min_coef_departure": NON_NEGATIVE,
        "min_redirect_share": PROBABILITY, "min_suppression_logits": NON_NEGATIVE, "min_share_negative": PROBABILITY,
        "min_mitigation_delta_p": Interval(0, 1), "min_trace_effect": Interval(0, 1),
        "min_knockout_drop_pct": Interval(0, 100), "min_head_effect_logits": NON_NEGATIVE, "min_move_logits": NON_NEGATIVE,
        "min_onset_shift": NON_NEGATIVE, "min_surgery_drop_p": Interval(0, 1), "surgery_scope": Options("end", "all"),
        "mitigation_mode": Options("zero", "mean", "scale"),
        "top_heads": POSITIVE, "n_bootstrap": RESAMPLES, "level": LEVEL, "seed": NON_NEGATIVE,
    }


# ----------------------------------------------------------------------------- conditions and verdicts
_ABOVE, _STRICT = (">=", ">"), (">", "<")


@dataclass(frozen=True)
class Condition:
    """One condition of a rule: a statistic measured with an interval, ``statistic op threshold``,
    threshold = ``sign`` × the setting's value (module docstring, "Verdicts").

    ``estimate`` is the statistic as measured, ``low``/``high`` its interval (equal for a figure
    without sampling error: :meth:`exact`), ``n`` the prompts the interval is over (None: no
    sampling error, so no prompt count can change it). Build one with :meth:`measured`,
    :meth:`exact` or :meth:`count` (a share of prompts: Clopper–Pearson)."""

    name: str
    setting: str | None  # "claims.min_..." / "movers.min_..."; None: a threshold derived from the data
    setting_value: float | None
    estimate: float | None
    low: float | None
    high: float | None
    op: str  # ">=", ">", "<=", "<"
    threshold: float
    sign: float = 1.0
    n: int | None = None

    @classmethod
    def measured(cls, name: str, setting: str | None, setting_value, estimate, ci: Sequence, op: str, threshold: float,
                 n: int | None, sign: float = 1.0) -> Condition:
        """A statistic with its interval ``ci`` = (low, high) over ``n`` prompts."""
        return cls(name, setting, _f(setting_value), _f(estimate), _f(ci[0]), _f(ci[1]), op, float(threshold), sign, n)

    @classmethod
    def exact(cls, name: str, setting: str | None, setting_value, value, op: str, threshold: float,
              sign: float = 1.0) -> Condition:
        """A figure without sampling error (a layer index, a count of heads, a share against a null's
        quantile): its interval is the point, so the condition is met or failed, never straddles."""
        v = _f(value)
        return cls(name, setting, _f(setting_value), v, v, v, op, float(threshold), sign, None)

    @classmethod
    def count(cls, name: str, setting: str | None, setting_value, k: int, n: int, op: str, threshold: float,
              level: float, sign: float = 1.0) -> Condition:
        """A share of prompts, k of n, with its Clopper–Pearson interval (:func:`recallscope.stats.proportion_ci`)."""
        lo, hi = proportion_ci(int(k), int(n), level)
        return cls(name, setting, _f(setting_value), k / n if n else None, lo, hi, op, float(threshold), sign, int(n))

    @property
    def statistic(self) -> float | None:
        """The interval's end on the passing side's far edge: its low end for ">="/">", its high end for
        "<="/"<" (the end that must clear the threshold for the condition to be met)."""
        return self.low if self.op in _ABOVE else self.high

    @property
    def far_end(self) -> float | None:
        """The other end: the condition fails when even this end lies on the failing side."""
        return self.high if self.op in _ABOVE else self.low

    def passes(self, x: float) -> bool:
        """Whether a value ``x`` lies on the passing side of the threshold (strict for ">"/"<")."""
        t = self.threshold
        return {">=": x >= t, ">": x > t, "<=": x <= t, "<": x < t}[self.op]

    def state(self) -> str:
        """:data:`MET` (the whole interval passes), :data:`FAILED` (the whole interval fails; also when
        there is no figure to test: the rule's object is absent) or :data:`STRADDLES`."""
        s, far = self.statistic, self.far_end
        if s is None:
            return FAILED
        if self.passes(s):
            return MET
        return STRADDLES if far is not None and self.passes(far) else FAILED

    def margin(self) -> float | None:
        """Signed room from :attr:`statistic` to the threshold (≥ 0, > 0 under ">"/"<": met)."""
        if self.statistic is None:
            return None
        return float(self.statistic - self.threshold) if self.op in _ABOVE else float(self.threshold - self.statistic)

    def met_at(self) -> float | None:
        """The setting's value at which this condition turns met / stops being met (setting units)."""
        # + 0.0: a zero statistic under sign −1 is −0.0, printed "-0" (0.0 − 0.0 is +0.0)
        return None if self.setting is None or self.statistic is None else float(self.statistic / self.sign) + 0.0

    def failed_at(self) -> float | None:
        """The setting's value at which this condition turns failed / stops failing (setting units)."""
        return None if self.setting is None or self.far_end is None else float(self.far_end / self.sign) + 0.0

    def towards(self) -> str | None:
        """For a straddling condition, the side its estimate lies on: where a larger sample would take it."""
        if self.state() != STRADDLES or self.estimate is None:
            return None
        return MET if self.passes(self.estimate) else FAILED

    def prompts_needed(self) -> int | None:
        """For a straddling condition: the prompts at which its interval would clear the threshold if
        the estimate stayed as measured and each half of the interval shrank as 1/√n (the standard
        error's rate). With d = |estimate − threshold| and w the half-width on the threshold's side
        (estimate to that end), the end reaches the threshold at n' = n · (w / d)² (≥ n, since the
        interval straddles); the smallest integer beyond it (at it, where the inequality allows
        equality). None when the condition does not straddle, has no ``n``, or its estimate lies on
        the threshold (no sample size decides it)."""
        side = self.towards()
        if side is None or self.n is None:
            return None
        e, t = self.estimate, self.threshold
        d = abs(e - t)
        end = self.low if e > t else self.high
        if d == 0 or end is None:
            return None
        need = round(self.n * ((e - end) / d) ** 2, 9)
        # the end must reach the passing side (towards met) or the failing side; one of them is strict
        strict = (self.op in _STRICT) == (side == MET)
        return int(math.floor(need) + 1 if strict else math.ceil(need))

    def text(self) -> str:
        where = f"{self.setting} = {self.setting_value:g}" if self.setting is not None else "derived, not a setting"
        return f"{self.name} {self.op} {self.threshold:.4g} ({where})"


@dataclass(frozen=True)
class Decision:
    """What :func:`decide_conditions` makes of a rule's conditions."""

    verdict: str  # HOLDS, FAILS or INCONCLUSIVE
    deciding: Condition  # the condition the row's threshold, margin and flips_at belong to
    prompts_needed: int | None  # inconclusive: the prompts at which the deciding condition would decide it


def _verdict_of(states: Sequence[str]) -> str:
    return FAILS if FAILED in states else INCONCLUSIVE if STRADDLES in states else HOLDS


def decide_conditions(conditions: Sequence[Condition]) -> Decision:
    """The four-valued verdict of a rule, the conjunction of ``conditions`` (the first is the primary):

    - *does not hold* when some condition fails (its interval wholly on the failing side); deciding:
      the primary if it fails, else the first that fails;
    - *inconclusive* when none fails and some straddles its threshold; deciding: the straddling
      condition that would settle the verdict first as the sample grows with every estimate as
      measured — the one heading to fail that needs the fewest prompts (one failure decides), else
      the one heading to pass that needs the most (all must pass); its prompts needed are the row's;
    - *holds* when every condition is met; deciding: the primary.

    Raises ValueError on an empty list (a row without conditions is not measurable)."""
    if not conditions:
        raise ValueError("a rule needs at least one condition")
    states = [c.state() for c in conditions]
    verdict = _verdict_of(states)
    if verdict == FAILS:
        return Decision(FAILS, conditions[states.index(FAILED)], None)
    if verdict == HOLDS:
        return Decision(HOLDS, conditions[0], None)
    open_ = [c for c, s in zip(conditions, states, strict=True) if s == STRADDLES]
    need = lambda c: c.prompts_needed() if c.prompts_needed() is not None else math.inf  # noqa: E731
    to_fail = [c for c in open_ if c.towards() == FAILED]
    deciding = min(to_fail, key=need) if to_fail else max(open_, key=need)
    return Decision(INCONCLUSIVE, deciding, deciding.prompts_needed())


def flips_at(conditions: Sequence[Condition], i: int) -> float | None:
    """The value of condition ``i``'s setting nearest its current value at which the verdict changes,
    every other figure fixed (setting units); None when no value of that setting alone changes it
    (another condition fails too) or the threshold is not a setting. A met condition changes state
    at :meth:`Condition.met_at`, a failed one at :meth:`Condition.failed_at`, a straddling one at
    either."""
    c = conditions[i]
    if c.setting is None or c.statistic is None or c.setting_value is None:
        return None
    states = [x.state() for x in conditions]
    now, verdict = states[i], _verdict_of(states)
    reachable = {MET: c.met_at(), FAILED: c.failed_at()}
    if c.statistic != c.far_end:  # a point interval cannot straddle
        reachable[STRADDLES] = c.met_at() if now == MET else c.failed_at()
    values = [at for state, at in reachable.items() if state != now and at is not None
              and _verdict_of([*states[:i], state, *states[i + 1:]]) != verdict]
    return min(values, key=lambda v: abs(v - c.setting_value)) if values else None


def deciding_condition(conditions: Sequence[Condition]) -> Condition:
    """The condition a row's ``threshold``, ``margin`` and ``flips_at`` are read from (:func:`decide_conditions`)."""
    return decide_conditions(conditions).deciding


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
    prompts_available: int | None = None  # known prompts the relation can give (:func:`known_available`)

    @property
    def deciding(self) -> Condition | None:
        return decide_conditions(self.conditions).deciding if self.conditions else None

    # the row's columns read off the deciding condition: column -> Condition attribute
    DECIDING_COLUMNS: ClassVar[dict] = {"decided_by": "name", "decided_value": "estimate", "decided_ci_low": "low",
                                        "decided_ci_high": "high", "prompts_used": "n"}

    def deciding_figures(self) -> dict:
        """The deciding condition's name, estimate and interval (in the threshold's units: it is not always
        what ``value`` measures) and the prompts its interval is over (None: no sampling error), as the
        row's :data:`DECIDING_COLUMNS`; all None for a row without conditions (not measurable)."""
        d = self.deciding
        return {col: None if d is None else getattr(d, attr) for col, attr in self.DECIDING_COLUMNS.items()}

    @property
    def decided_by(self) -> str | None:
        """The name of the condition the row's ``threshold``, ``margin`` and ``flips_at`` belong to
        (:func:`decide_conditions`)."""
        return self.deciding_figures()["decided_by"]

    @property
    def prompts_needed(self) -> int | None:
        """Inconclusive rows: the known prompts at which the verdict would be decided, every estimate as
        measured and interval widths ∝ 1/√n (:meth:`Condition.prompts_needed`); None otherwise."""
        return decide_conditions(self.conditions).prompts_needed if self.conditions and self.verdict == INCONCLUSIVE else None

    def row(self) -> dict:
        """The claims table's row (:data:`COLUMNS`)."""
        figures = self.deciding_figures()
        return {k: figures[k] if k in figures else self.evidence.get(k) if k in EVIDENCE else getattr(self, k)
                for k in COLUMNS}

    def sensitivity(self) -> list[dict]:
        """One row per condition (:data:`SENSITIVITY_COLUMNS`): its interval, state, where it turns met
        or failed and where the verdict flips (:func:`flips_at`), and for a straddling condition the
        prompts that would decide it."""
        measured = self.verdict != NOT_MEASURABLE
        return [{
            "claim": self.claim, "condition": c.name, "setting": c.setting, "setting_value": c.setting_value,
            "estimate": c.estimate, "ci_low": c.low, "ci_high": c.high, "statistic": c.statistic, "op": c.op,
            "threshold": c.threshold, "margin": c.margin(), "state": c.state(), "met_at": c.met_at(),
            "failed_at": c.failed_at(), "flips_at": flips_at(self.conditions, i) if measured else None,
            "prompts_used": c.n, "prompts_needed": c.prompts_needed(),
        } for i, c in enumerate(self.conditions)]


def decide(claim: str, stage: str, about: str | None, measure: str, value, ci: tuple, conditions: Sequence[Condition],
           detail: str, evidence: dict) -> Claim:
    """A claim row whose verdict is :func:`decide_conditions` of ``conditions`` (the first is the
    primary, which ``value`` and ``ci`` usually measure). ``threshold``, ``margin`` and ``flips_at``
    are the deciding condition's (``decided_by``; ``decided_value`` and ``decided_ci_*`` its figure);
    the detail lists the conditions not met and, for an inconclusive row, the prompts that would
    decide it. New claim rows build their conditions and call this."""
    conditions = tuple(conditions)
    d = decide_conditions(conditions)
    states = [c.state() for c in conditions]
    failing = [c for c, s in zip(conditions, states, strict=True) if s == FAILED]
    open_ = [c for c, s in zip(conditions, states, strict=True) if s == STRADDLES]
    if failing:
        unmet = "; ".join(f"{_compared(c)}, needs {c.op} {c.threshold:.4g}" for c in failing)
        detail = f"{detail}; not met: {unmet}"
    if open_ and not failing:
        spans = "; ".join(f"{c.name} {_g(c.estimate)} [{_g(c.low)}, {_g(c.high)}] against {c.op} {c.threshold:.4g}"
                          for c in open_)
        detail = f"{detail}; undecided (interval across the threshold): {spans}"
        if d.prompts_needed is not None:
            detail += (f"; ≈ {d.prompts_needed:,} known prompts would decide it (now {d.deciding.n}; towards "
                       f"{'holds' if d.deciding.towards() == MET else 'does not hold'}), if the effect stayed as measured "
                       "and the interval narrowed as 1/√n")
        else:
            detail += "; no number of prompts decides it at this estimate (it lies on the threshold, or has no sample size)"
    if d.deciding is not conditions[0] and d.verdict != HOLDS:  # the row's threshold and margin are not the primary's
        detail += f" (threshold and margin: {d.deciding.name})"
    return Claim(
        claim, _f(value), _f(ci[0]), _f(ci[1]), d.verdict, measure, " and ".join(c.text() for c in conditions), detail,
        stage, about, d.deciding.threshold, d.deciding.margin(), flips_at(conditions, conditions.index(d.deciding)),
        conditions, evidence,
    )


def best_of(candidates: Sequence[tuple[Sequence[Condition], object]]) -> int:
    """For a claim about *some* component (one mover head, one suppressor), the index of the candidate
    the row shows: the first that holds, else the first inconclusive, else the first. The claim's verdict
    is that candidate's: it holds if one candidate holds, fails only if every candidate fails."""
    verdicts = [decide_conditions(conds).verdict for conds, _ in candidates]
    return next((i for v in (HOLDS, INCONCLUSIVE) for i, x in enumerate(verdicts) if x == v), 0)


def with_available(claim: Claim, available: int | None) -> Claim:
    """``claim`` with ``prompts_available`` (the known prompts the relation can give at this run's known
    rate; the run layer computes it from the recall stage's summary) set; an inconclusive row's detail
    says whether the relation can give the prompts that would decide it."""
    if available is None:
        return claim
    detail = claim.detail
    needed = claim.prompts_needed
    if claim.verdict == INCONCLUSIVE and needed is not None:
        detail += (f"; the relation gives about {available} known prompts at this run's known rate"
                   + (" — fewer than needed: more prompts of this relation cannot decide it" if needed > available else ""))
    return replace(claim, prompts_available=available, detail=detail)


def _g(x) -> str:
    return "none" if x is None else f"{x:.4g}"


def _compared(c: Condition) -> str:
    """The figure a condition's rule compares, named as what it is: a figure without sampling error
    as ``name = x``; an interval's end as that end with the estimate beside it ("held-out gain …:
    lower end of its interval -0.003316 (value 0.006527)"), never the end as if it were the value."""
    if c.statistic is None or c.low == c.high:
        return f"{c.name} = {_g(c.statistic)}"
    end = "lower" if c.op in _ABOVE else "upper"
    return f"{c.name}: {end} end of its interval {_g(c.statistic)} (value {_g(c.estimate)})"


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
    (vectorised over resamples; a resample where x or y is constant has no r and is dropped).
    (−1, 1) where r is undefined on the prompts themselves (fewer than 3, or x or y constant): any r
    is possible."""
    if len(x) < 3 or pearson(x, y)[0] != pearson(x, y)[0]:
        return -1.0, 1.0
    idx = np.random.default_rng(cfg.seed).integers(0, len(x), size=(cfg.n_bootstrap, len(x)))
    xs, ys = x[idx] - x[idx].mean(1, keepdims=True), y[idx] - y[idx].mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xs * ys).sum(1) / np.sqrt((xs**2).sum(1) * (ys**2).sum(1))
    r = r[np.isfinite(r)]
    alpha = (1 - cfg.level) / 2
    return tuple(float(v) for v in np.quantile(r, [alpha, 1 - alpha])) if len(r) else (-1.0, 1.0)



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


# The other stages' settings the claim rules read from those stages' summaries (the movers claim reuses
# the movers stage's mover thresholds, written in its summary's ``thresholds``): ``recallscope claims
# RUN_DIR --set`` takes them beside ``claims.*`` and re-evaluates the rules with them, from the files.
READ_SETTINGS = ("movers.min_ov_top5_share", "movers.min_attention_to_subject", "movers.min_projection_corr",
                 "onset.move_fraction", "onset.min_domain_share")


def with_read_settings(summaries: dict, settings: dict) -> dict:
    """``summaries`` (stage → its summary) with the :data:`READ_SETTINGS` in ``settings`` (``{"movers.min_ov_top5_share":
    0.3, ...}``, already checked) written where the rules read them; nothing else changes (the stage itself is not
    re-run: its own verdicts, e.g. the movers stage's list of movers, stay as recorded). KeyError for another key."""
    out = dict(summaries)
    for key, value in settings.items():
        if key not in READ_SETTINGS:
            raise KeyError(key)
        stage, name = key.split(".", 1)
        if out.get(stage):
            out[stage] = {**out[stage], "thresholds": {**(out[stage].get("thresholds") or {}), name: value}}
    return out


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
        att_ci, r_ci = _ci(att, cfg), _pearson_ci(att, proj, cfg)
        n = len(rows)
        ov_min = float(th.get("min_ov_top5_share", 0.5))
        att_min = float(th.get("min_attention_to_subject", 0.3))
        r_min = float(th.get("min_projection_corr", 0.5))
        conds = [
            Condition.count(f"OV top-5 share of X ({ov_input})", "movers.min_ov_top5_share", ov_min, int(ov.sum()), n,
                            ">=", ov_min, cfg.level),
            Condition.measured("mean attention end → subject", "movers.min_attention_to_subject", att_min,
                               float(att.mean()) if n else None, att_ci, ">=", att_min, n),
            Condition.measured("scatter r (attention vs a·W_U[X])", "movers.min_projection_corr", r_min,
                               pearson(att, proj)[0], r_ci, ">=", r_min, n),
        ]
        first_share = lambda col: float((rows[col].to_numpy(float) < 5).mean()) if col in rows else None  # noqa: E731
        return conds, {"value": conds[0].estimate, "ci": (conds[0].low, conds[0].high), "evidence": {
            "ov_top5_share_effective": first_share("ov_rank_effective"), "ov_top5_share": _f(h.get("ov_top5_share")),
            "attention_to_subject": _f(h.get("attention_to_subject")),
            "attention_to_first_subject": _f(h.get("attention_to_first_subject")),
            "projection_corr_first": _f(h.get("projection_corr_first")), "projection_corr_last": _f(h.get("projection_corr_last")),
        }}

    evaluated = [(h, *evaluate(h)) for h in chosen]
    h, conds, fig = evaluated[best_of([(e[1], e[0]) for e in evaluated])]
    verdict = decide_conditions(conds).verdict
    name = head_label(h["layer"], h["head"])
    rank = order.index(heads.index(h)) + 1
    movers = summary.get("movers", [])
    evidence = {**fig["evidence"], "patch_rank": rank, "n_movers": len(movers)}
    shown = {HOLDS: f"{name} passes", INCONCLUSIVE: f"none passes; undecided: {name} (patching rank {rank})",
             FAILS: f"every one fails; shown: {name} (patching rank {rank})"}[verdict]
    detail = (f"heads singled out by patching (top {len(chosen)} by |effect|): "
              f"{', '.join(head_label(c['layer'], c['head']) for c in chosen)}; {shown}"
              f"; the movers stage's mover test passes for {len(movers)} of {len(heads)} candidates"
              + (f" ({', '.join(movers)})" if movers else ""))
    return decide(CLAIM_MOVERS, "movers", name,
                  f"share of prompts where {name}'s OV circuit, reading the residual at the subject's position "
                  f"({ov_input}), ranks X top-5", fig["value"], fig["ci"], conds, detail, evidence)


# ----------------------------------------------------------------------------- 2. decompose
def _departure(row) -> float:
    """Signed distance of a coefficient's interval from c = 1 (positive: the interval excludes 1)."""
    return float(max(row["ci_low"] - 1.0, 1.0 - row["ci_high"]))


def departure_condition(heads: pd.DataFrame, cfg: ClaimsConfig, n: int) -> tuple[Condition, pd.Series | None]:
    """"Some head's coefficient departs from pass-through (c = 1)", over the identifiable heads of a
    decompose table (``coef``, ``ci_low``, ``ci_high``, ``departs_stable``), and the head it reads.

    The statistic is the largest distance from c = 1 over the heads, with an interval built from
    theirs: its low end is the largest distance of a head's *nearer* interval end (positive: that
    interval excludes 1; a head whose folds disagree on the side of 1 counts at most 0), its high
    end the largest distance of a head's *farther* end. So it is met when some fold-stable head's
    interval clears 1 by more than ``min_coef_departure`` and fails only when every head's interval
    lies within that distance of 1 (every head demonstrably passes through); the estimate is |c − 1|
    of the head with the farthest nearer end. No identifiable head: no figure (fails)."""
    name = "largest distance of a head coefficient's interval from c = 1"
    if not len(heads):
        return Condition.exact(name, "claims.min_coef_departure", cfg.min_coef_departure, None, ">",
                               cfg.min_coef_departure), None
    near = heads.apply(_departure, axis=1)
    far = np.maximum(heads["ci_high"].to_numpy(float) - 1.0, 1.0 - heads["ci_low"].to_numpy(float))
    counted = np.where(heads["departs_stable"].astype(bool).to_numpy(), near.to_numpy(float), np.minimum(near, 0.0))
    # the head the low end comes from (ties: the farther nearer end)
    i = int(np.lexsort((-near.to_numpy(float), -counted))[0])
    best = heads.iloc[i]
    # an unstable head's low end is capped, not a shrinking bootstrap half-width: no prompt count follows from it
    used = n if bool(best["departs_stable"]) else None
    return Condition.measured(name, "claims.min_coef_departure", cfg.min_coef_departure, abs(float(best["coef"]) - 1.0),
                              (float(counted.max()), float(far.max())), ">", cfg.min_coef_departure, used), best


def mlp_claim(summary: dict | None, coefs: pd.DataFrame | None, heldout: pd.DataFrame | None, cfg: ClaimsConfig) -> Claim:
    if not summary or coefs is None or heldout is None or not len(heldout) or "ci_low" not in coefs:
        return _missing(CLAIM_MLP, "decompose", "the decompose stage did not run (or predates its held-out table: rerun it)")
    err, base = heldout["sq_err"].to_numpy(float), heldout["sq_err_intercept"].to_numpy(float)
    gain = lambda a, b: 1.0 - np.sum(a) / np.sum(b) if np.sum(b) > 0 else float("nan")  # noqa: E731
    value = gain(err, base)
    ci = bootstrap_ci_samples((err, base), gain, n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed, paired=True)
    heads = coefs[coefs["head"].notna() & coefs["identifiable"].astype(bool)]
    stable = heads[heads["departs_stable"].astype(bool)]
    departure, best = departure_condition(heads, cfg, len(heldout))
    amplified = stable[stable["ci_low"] > 1]
    attenuated = stable[(stable["ci_low"] >= 0) & (stable["ci_high"] < 1)]
    reversed_ = stable[stable["ci_high"] < 0]
    layer = summary.get("layer")
    conds = [
        Condition.measured("held-out gain over the intercept-only model", "claims.min_heldout_gain", cfg.min_heldout_gain,
                           value, ci, ">", cfg.min_heldout_gain, len(heldout)),
        departure,
    ]
    names = lambda f: ", ".join(f"{r.regressor} ({r.coef:.3g})" for r in f.itertuples()) or "none"  # noqa: E731
    detail = (f"MLP {layer}: amplified (c > 1): {names(amplified)}; attenuated (0 ≤ c < 1): {names(attenuated)}; "
              f"reversed (c < 0): {names(reversed_)}"
              + (f"; farthest from pass-through: {best['regressor']} c = {best['coef']:.3g} "
                 f"[{best['ci_low']:.3g}, {best['ci_high']:.3g}]" if best is not None else "; no identifiable head"))
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
    share = _f(summary.get("answer_domain_share"))
    base_high = _f((summary.get("answer_domain_baseline") or {}).get("high"))
    conds = [
        Condition.count("share of prompts where b improves rank(Y)", "claims.min_redirect_share", cfg.min_redirect_share,
                        int(improved.sum()), len(improved), ">", cfg.min_redirect_share, cfg.level),
        Condition.exact("answer-domain share of b's top tokens minus the random directions' upper end", None, None,
                        None if share is None or base_high is None else share - base_high, ">", 0.0),
    ]
    layer = summary.get("layer")
    detail = (f"intercept of MLP {layer}: answer-domain share of its top-{summary.get('top_k')} tokens {share} "
              f"(random directions: ≤ {base_high}); cos(b, W_U[Y] − W_U[X]) = {_f(summary.get('cos_b_answer_minus_subject'))}")
    evidence = {"answer_domain_share": share, "answer_domain_random_high": base_high,
                "cos_b_answer_minus_subject": _f(summary.get("cos_b_answer_minus_subject"))}
    return decide(CLAIM_INTERCEPT, "intercept", f"MLP{layer}",
                  "share of prompts where rank(Y) improves from r_mid[l] to r_mid[l] + b", conds[0].estimate,
                  (conds[0].low, conds[0].high), conds, detail, evidence)


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
    n = (summary or {}).get("n_known")

    def conditions(c: dict) -> list[Condition]:
        share = _f(c.get("share_negative"))
        return [
            Condition.measured("mean DLA to Y (logits)", "claims.min_suppression_logits", cfg.min_suppression_logits,
                               c.get("mean_dla"), (c.get("ci_low"), c.get("ci_high")), "<", -cfg.min_suppression_logits, n,
                               sign=-1.0),
            Condition.count("share of prompts with DLA < 0", "claims.min_share_negative", cfg.min_share_negative,
                            int(round(share * n)), n, ">", cfg.min_share_negative, cfg.level)
            if n and share is not None else
            Condition.exact("share of prompts with DLA < 0", "claims.min_share_negative", cfg.min_share_negative, share, ">",
                            cfg.min_share_negative),
        ]

    pool = sorted(pool, key=lambda c: c["ci_high"])  # the lowest interval first
    candidates = [(conditions(c), c) for c in pool]
    conds, best = candidates[best_of(candidates)]
    count = [c["component"] for cs, c in candidates if decide_conditions(cs).verdict == HOLDS]
    detail = (f"final layer {final}: components below −{cfg.min_suppression_logits:g} logits on most prompts "
              "(both intervals clear): "
              f"{', '.join(count) or 'none'}; the layer's total DLA {_f(present.get('final_layer_total_dla')):.4g} "
              f"[{_f(present.get('ci_low')):.4g}, {_f(present.get('ci_high')):.4g}]")
    evidence = {"layer_total_dla": _f(present.get("final_layer_total_dla")), "layer_total_ci_low": _f(present.get("ci_low")),
                "layer_total_ci_high": _f(present.get("ci_high")), "share_negative": _f(best.get("share_negative"))}
    return decide(CLAIM_SUPPRESS, "suppress", best["component"],
                  f"mean direct logit attribution of {best['component']} to Y (logits): the final-layer component "
                  "whose rule comes closest to holding (the lowest interval among the first verdict of holds, "
                  "inconclusive, does not hold)", best.get("mean_dla"), (best.get("ci_low"), best.get("ci_high")), conds,
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
    conds = [Condition.measured("Δp(Y) on held-out known prompts", "claims.min_mitigation_delta_p",
                                cfg.min_mitigation_delta_p, delta.get("mean"), (delta.get("ci_low"), delta.get("ci_high")),
                                ">", cfg.min_mitigation_delta_p, (entry.get("after") or {}).get("n"))]
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
    # The effect-size floor: the strongest head's mean |Δπ(Y)| (logits) at the shot count where it is
    # weaker; without heads that matter there is no mechanism to share (module docstring, 6).
    d0, d1 = (np.abs(head_effects(p, "delta_pi")[names].to_numpy(float)) for p in (p0, p1))
    strongest = min(np.nanmean(d0, 0).max(), np.nanmean(d1, 0).max())
    boot_strongest = np.minimum(np.stack([np.nanmean(d0[i], 0) for i in i0]).max(1),
                                np.stack([np.nanmean(d1[i], 0) for i in i1]).max(1))
    strongest_ci = tuple(float(v) for v in np.quantile(boot_strongest, [alpha, 1 - alpha]))
    # prompts: the smaller of the two runs (both are resampled; more prompts means more at each shot count)
    used = min(len(a0), len(a1))
    conds = [
        Condition.measured(f"top-{k} head overlap", None, None, overlap, ci, ">", q, used),
        Condition.measured("strongest head's mean |Δπ(Y)| (logits), the weaker shot count", "claims.min_head_effect_logits",
                           cfg.min_head_effect_logits, strongest, strongest_ci, ">=", cfg.min_head_effect_logits, used),
    ]
    detail = (f"{relation}: top-{k} of {n} heads at {k0} shots {', '.join(names[i] for i in t0)}; at {k1} shots "
              f"{', '.join(names[i] for i in t1)}; {overlap} shared (random head sets: mean {null.mean():.2f}, "
              f"{cfg.level:.0%} quantile {q:g}, p = {float(null.sf(overlap - 1)):.2g}); effect-weighted mean head layer "
              f"{_weighted_layer(m0, layers):.2f} → {_weighted_layer(m1, layers):.2f}; strongest head's mean |Δπ(Y)| "
              f"{np.nanmean(d0, 0).max():.3g} logits at {k0} shots, {np.nanmean(d1, 0).max():.3g} at {k1}")
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
