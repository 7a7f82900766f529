"""Every column name recallscope writes, once, with its unit and what it measures.

One name per quantity across the stages' tables (``<stage>.parquet``, ``<stage>/<name>.parquet``,
each result's ``tables()``) and the per-item records of their summaries (``patch.top_components``,
``movers.heads``, ``decompose.coefficients``, ``suppress.components``, ``intercept.top_tokens``,
``claims.claims``, …): ``effect`` is the patching effect in every table that has one,
``prompt_index`` the prompt in every per-prompt table, ``ci_low`` / ``ci_high`` the 95% interval
of the row's own statistic. ``tests/test_columns.py`` runs every stage and fails on a column or
record key missing here; ``docs/columns.md`` is generated from this table
(``python scripts/columns_table.py``).

Notation (the paper's): X is the subject's token the stage reads (the last subject token unless
a setting says otherwise), Y the answer's first token; π(t) = logit[t] − mean logit; p(Y) the
softmax probability of Y at the end position (under the whole-answer metric, ``recall.answer_metric``,
Y is the first scored token and the recall, patch, trace and knockout figures are the whole
scored answer's, teacher-forced: π = Σ_t π(y_t), p = Π_t p(y_t)); a[l,h] head h's write in layer l, m[l] MLP l's
output, r[l] the residual entering layer l, r_mid[l] after its attention.
"""

from __future__ import annotations

# The summary's ``answer_metric`` (which tokens of the answer every stage scored: tasks.prompts) in
# the words of the terminal's run table and the report's identity line ("Y scored").
Y_SCORED = {"answer": "whole answer", "first_token": "first token"}

# name → (unit, meaning). Units: label / text / id / index / count / bool / share (0–1) /
# probability / logits / % (of what, said) / rank (0 = top) / cosine / Pearson r / R² / setting units.
COLUMNS: dict[str, tuple[str, str]] = {
    # --- prompts and tokens
    "prompt_index": ("index", "the prompt's position in the prompt set the stage was given (0-based)"),
    "subject": ("text", "the prompt's subject (the relation sample's subject, e.g. France)"),
    "answer": ("text", "the expected answer (the relation sample's object, e.g. Paris)"),
    "template": ("text", "the relation template the prompt was built from"),
    "text": ("text", "the prompt as the model reads it (demonstrations included)"),
    "n_tokens": ("count", "tokens of the prompt"),
    "subject_tokens": ("count", "tokens of the subject in the prompt"),
    "subject_start": ("index", "position of the subject's first token in the prompt"),
    "subject_stop": ("index", "position after the subject's last token in the prompt"),
    "answer_id": (
        "id",
        "token id of Y, the answer's first token (the first scored token: after the relation's shared answer prefix)",
    ),
    "answer_token": ("text", "Y decoded"),
    "subject_id": ("id", "token id of the subject's last token"),
    "subject_token": ("text", "the subject's last token decoded"),
    "x_id": (
        "id",
        "token id of X, the subject token the movers stage projects on and ranks (movers.subject_token: last or first)",
    ),
    "x_token": ("text", "X decoded (movers)"),
    "token": ("text", "a token decoded (causal tracing: the prompt's token at this position; intercept: a top token of b)"),
    "token_id": ("id", "a token id (intercept: a top token of b)"),
    "position": ("index", "a position in the prompt (causal tracing)"),
    "top1_id": ("id", "the model's top-1 token at the end position"),
    "top1_token": ("text", "the top-1 token decoded"),
    # --- recall
    "p_answer": (
        "probability",
        "p(Y) at the end position (whole-answer metric: Π_t p(y_t) of the scored tokens, teacher-forced)",
    ),
    "rank_answer": (
        "rank (0 = top)",
        "rank of Y among the vocabulary at the end position (whole-answer metric: the worst scored token's rank)",
    ),
    "pi_answer": ("logits", "π(Y) = logit[Y] − mean logit at the end position (whole-answer metric: Σ_t π(y_t))"),
    "n_answer_tokens": ("count", "the answer tokens scored (1 under the first-token metric; recall.answer_metric)"),
    "answer_tokens": ("text", "the scored answer tokens decoded (Y under the first-token metric)"),
    "p_top1": ("probability", "probability of the top-1 token"),
    "correct": (
        "bool",
        "Y is the top-1 token (whole-answer metric: every scored token is, i.e. greedy decoding gives the answer)",
    ),
    "known": ("bool", "the model knows the prompt: rank(Y) < recall.known_top_k (later stages use only these)"),
    # --- components
    "component": ("label", "L23H4 (head 4 of layer 23), MLP23, ATTN23 (a layer's attention output), RES23 (r[23])"),
    "kind": ("label", "head, mlp, attn or resid (causal tracing: resid, mlp, attn — the restored state)"),
    "layer": ("layer index", "the component's layer (0-based)"),
    "head": ("head index", "the head within its layer (0-based); empty for a component that is not a head"),
    # --- patch
    "effect": (
        "% of π(Y)",
        "patching effect: 100 · (π patched − π base) / scale (noise: scale π clean; denoise: the clean–corrupted gap); per prompt, or its aggregate over prompts (patch.aggregate)",
    ),
    "effect_attribution": ("% of π(Y)", "the effect as attribution patching estimates it (first order), per prompt"),
    "effect_mean_of_ratios": ("% of π(Y)", "mean over prompts of the per-prompt effect"),
    "effect_ratio_of_means": ("% of π(Y)", "100 · (mean π patched − mean π base) / mean scale: the paper's figure"),
    "mean_of_ratios_ci_low": ("% of π(Y)", "bootstrap 95% interval of effect_mean_of_ratios, low end"),
    "mean_of_ratios_ci_high": ("% of π(Y)", "bootstrap 95% interval of effect_mean_of_ratios, high end"),
    "ratio_of_means_ci_low": ("% of π(Y)", "bootstrap 95% interval of effect_ratio_of_means, low end"),
    "ratio_of_means_ci_high": ("% of π(Y)", "bootstrap 95% interval of effect_ratio_of_means, high end"),
    "effect_std": ("% of π(Y)", "standard deviation of the per-prompt effect"),
    "effect_median": ("% of π(Y)", "median of the per-prompt effect"),
    "effect_p10": ("% of π(Y)", "10th percentile of the per-prompt effect"),
    "effect_p25": ("% of π(Y)", "25th percentile of the per-prompt effect"),
    "effect_p75": ("% of π(Y)", "75th percentile of the per-prompt effect"),
    "effect_p90": ("% of π(Y)", "90th percentile of the per-prompt effect"),
    "pi_clean": ("logits", "π(Y) of the clean prompt"),
    "pi_base": ("logits", "π(Y) of the run being patched (noise: the clean run; denoise: the corrupted run)"),
    "pi_patched": ("logits", "π(Y) with the component patched"),
    "ci": ("% of π(Y)", "[low, high] bootstrap 95% interval of effect (patch.top_components)"),
    "share_negative": ("share (0–1)", "share of prompts on which the row's per-prompt value (effect, DLA) is negative"),
    "n_prompts": ("count", "prompts the row's statistic is computed over"),
    # --- movers
    "attention_to_subject": ("probability", "attention from the end position to the subject, summed over its tokens"),
    "attention_to_first_subject": ("probability", "attention from the end position to the subject's first token"),
    "attention_to_last_subject": ("probability", "attention from the end position to the subject's last token"),
    "subject_is_top_attended": ("bool", "the most attended position from the end is a subject token"),
    "top_attended_share": ("share (0–1)", "share of prompts where subject_is_top_attended"),
    "projection": ("logits", "a[l,h] · (w_f ⊙ (W_U[:,X] − mean W_U)): the head's write along X's folded, centred unembedding"),
    "projection_first": ("logits", "projection on the subject's first token"),
    "projection_last": ("logits", "projection on the subject's last token"),
    "projection_mean": ("logits", "mean projection over prompts"),
    "projection_corr": ("Pearson r", "r across prompts between attention to the subject and projection (the paper's scatter)"),
    "projection_corr_first": (
        "Pearson r",
        "the scatter's r with the subject's first token (attention to it vs projection_first)",
    ),
    "projection_corr_last": ("Pearson r", "the scatter's r with the subject's last token"),
    "projection_p_value": ("probability", "two-sided p-value of projection_corr"),
    "ov_rank_x": ("rank (0 = top)", "rank of X in the logit lens of X's embedding through the head's OV circuit"),
    "ov_rank_context": (
        "rank (0 = top)",
        "rank of X through the OV circuit reading r[l] at X's position (what the head reads there)",
    ),
    "ov_rank_effective": (
        "rank (0 = top)",
        "rank of X through the OV circuit reading r[1] at X's position (the effective embedding)",
    ),
    "ov_copy_rank": ("rank (0 = top)", "median ov_rank_x over the distinct X's"),
    "ov_copy_rank_context": ("rank (0 = top)", "median ov_rank_context over prompts"),
    "ov_copy_rank_effective": ("rank (0 = top)", "median ov_rank_effective over prompts"),
    "ov_copy_rank_subject_tokens": ("rank (0 = top)", "median OV rank of every distinct subject token, each as a copy of itself"),
    "ov_top5_share": ("share (0–1)", "share of distinct X's ranked top-5 through the OV circuit from the embedding"),
    "ov_top5_share_context": ("share (0–1)", "share of prompts with ov_rank_context < 5"),
    "ov_top5_share_effective": ("share (0–1)", "share of prompts with ov_rank_effective < 5"),
    "ov_top5_share_subject_tokens": ("share (0–1)", "share of distinct subject tokens ranked top-5 as copies of themselves"),
    "ov_input": ("label", "which OV input the mover test reads (movers.ov_input: context, effective, embedding)"),
    "ov_n_tokens": ("count", "distinct X's the OV ranks from the embedding are taken over"),
    "is_mover": ("bool", "the head passes every condition of the mover test"),
    "failed": (
        "labels",
        "the mover test's conditions the head fails: attention, correlation (scatter r), p_value (r's p-value), ov_copy",
    ),
    # --- decompose
    "regressor": (
        "label",
        "a regressor of the decomposition m[l] ≈ Σ c_h a[l,h] + c_r r[l] + b: a head (L23H4) or the residual r[l] (RES23)",
    ),
    "coef": ("coefficient", "c of the regressor, fitted on every prompt (c > 1 amplified, 0 ≤ c ≤ 1 attenuated, c < 0 reversed)"),
    "coef_lstsq": ("coefficient", "c of the exact least-squares fit, beside the SGD fit's coef (decompose.solver=sgd)"),
    "cv_mean": ("coefficient", "mean of c over the cross-validation folds"),
    "cv_std": ("coefficient", "standard deviation of c over the folds"),
    "verdict_stable": ("bool", "every fold gives c the same verdict (amplified, attenuated, reversed)"),
    "departs_stable": ("bool", "c is on the same side of 1 in every fold"),
    "identifiable": ("bool", "the regressor varies across prompts (its c can be estimated)"),
    "fold": ("index", "cross-validation fold (decompose, suppress)"),
    "r2": ("R²", "1 − Σ‖m − m̂‖² / Σ‖m − m̄‖², in-sample (decompose/folds: on the fold's held-out prompts)"),
    "cosine": ("cosine", "mean cosine between m and m̂ on the fold's held-out prompts"),
    "cv_r2": ("R²", "cross-validated R² (held-out prompts, held-out mean)"),
    "cv_cosine": ("cosine", "cross-validated cosine between m and m̂"),
    "cv_r2_uncentred": ("R²", "cross-validated R² against zero instead of the mean"),
    "intercept_only_r2_uncentred": ("R²", "cv_r2_uncentred of the intercept-only model (m̂ = b)"),
    "gain_over_no_heads": (
        "share (≤ 1)",
        "1 − Σ held-out sq_err / Σ sq_err_no_heads: the share of the no-head model's held-out error the heads remove",
    ),
    "sq_err": ("squared norm", "held-out ‖m − m̂‖² of the prompt under the fit"),
    "sq_err_intercept": ("squared norm", "held-out ‖m − b‖² under the intercept-only model"),
    "sq_err_no_heads": ("squared norm", "held-out squared error of the model without heads (c_r r + b)"),
    "sq_norm": ("squared norm", "‖m‖² of the prompt"),
    "dim": ("index", "a dimension of the residual stream (decompose/intercept: b[dim])"),
    "value": (
        "own units",
        "decompose/intercept: b[dim] (residual units); claims: the claim's primary figure, in its measure's units "
        "(not always the statistic that decided the verdict: decided_value)",
    ),
    "step": ("count", "SGD step (decompose.solver=sgd)"),
    "loss": ("squared norm", "mean squared error of the SGD fit at that step"),
    "n_amplified": ("count", "fold-stable heads whose coefficient interval lies above 1"),
    "n_attenuated": ("count", "fold-stable heads whose coefficient interval lies in [0, 1)"),
    "n_reversed": ("count", "fold-stable heads whose coefficient interval lies below 0"),
    # --- intercept
    "rank_Y_r_mid": ("rank (0 = top)", "rank of Y in the logit lens of r_mid[l] (before the MLP)"),
    "rank_X_r_mid": ("rank (0 = top)", "rank of X in the logit lens of r_mid[l]"),
    "rank_Y_r_mid_plus_b": ("rank (0 = top)", "rank of Y in the lens of r_mid[l] + b (the intercept alone added)"),
    "rank_X_r_mid_plus_b": ("rank (0 = top)", "rank of X in the lens of r_mid[l] + b"),
    "rank_Y_r_mid_plus_m": ("rank (0 = top)", "rank of Y in the lens of r_mid[l] + m[l] (what the model does)"),
    "rank_X_r_mid_plus_m": ("rank (0 = top)", "rank of X in the lens of r_mid[l] + m[l]"),
    "cos_m_Y": ("cosine", "cos(m[l], u_Y), u_t the folded, centred unembedding of t"),
    "cos_m_X": ("cosine", "cos(m[l], u_X)"),
    "cos_b_Y": ("cosine", "cos(b, u_Y)"),
    "cos_b_X": ("cosine", "cos(b, u_X)"),
    "cos_b_YX": ("cosine", "cos(b, u_Y − u_X), per prompt"),
    "cos_b_answer_minus_subject": ("cosine", "mean over prompts of cos_b_YX"),
    "logit": ("logits", "the token's logit in the linearised lens of b (intercept.top_tokens)"),
    "in_domain": ("bool", "the token is the first token of some answer of the relation"),
    "answer_domain_share": ("share (0–1)", "share of b's top-k tokens in the answer domain"),
    "answer_domain_random_high": ("share (0–1)", "the answer-domain share's 95% high end over random directions of b's norm"),
    # --- suppress
    "dla": ("logits", "direct logit attribution of the component to π(Y), per prompt"),
    "mean_dla": ("logits", "mean DLA over the known prompts"),
    "is_suppressor": ("bool", "mean DLA < 0 and DLA < 0 on more than suppress.min_share_negative of the prompts"),
    "population": ("label", "known or unknown prompts"),
    "mode": ("label", "before (no ablation) or the ablation of the suppressors: zero, mean, scale"),
    "p_before_top1": ("probability", "p of the token that was top-1 before the ablation"),
    "n_suppressors": ("count", "suppressors ablated (chosen on the other folds)"),
    "suppressors": ("labels", "the suppressors chosen on a fold's selection prompts"),
    "n_selection": ("count", "prompts a fold's suppressors were chosen on"),
    "n_held_out": ("count", "prompts a fold's ablation is measured on"),
    "layer_total_dla": ("logits", "the final layer's total DLA to Y (heads + bias + MLP), mean over known prompts"),
    "layer_total_ci_low": ("logits", "bootstrap 95% interval of layer_total_dla, low end"),
    "layer_total_ci_high": ("logits", "bootstrap 95% interval of layer_total_dla, high end"),
    "p_before": ("probability", "mean p(Y) on the held-out known prompts before the mitigation"),
    "p_after": ("probability", "mean p(Y) on the held-out known prompts after ablating the suppressors"),
    "accuracy_before": ("share (0–1)", "accuracy on the held-out known prompts before the mitigation"),
    "accuracy_after": ("share (0–1)", "accuracy after the mitigation"),
    "delta_p_unknown": ("probability", "mean change of p(Y) on the unknown prompts under the mitigation"),
    # --- causal tracing and knockout
    "p_clean": ("probability", "p(Y) of the clean run"),
    "p_corrupted": ("probability", "p(Y) with the subject's embeddings noised"),
    "p_restored": ("probability", "p(Y) of the noised run with this state restored to its clean value"),
    "indirect_effect": ("probability", "p_restored − p_corrupted"),
    "total_effect": ("probability", "p_clean − p_corrupted"),
    "mean_indirect_effect": ("probability", "mean indirect_effect over prompts in a position group"),
    "group": ("label", "ROME's position group (first/middle/last subject token, further tokens, last token)"),
    "groups": ("labels", "the position groups a position belongs to"),
    "block": (
        "label",
        "the last position's edges blocked: subject (to every subject token), non_subject (to every other earlier position), last (to itself)",
    ),
    "first_layer": ("layer index", "the knockout window's first layer"),
    "last_layer": ("layer index", "the knockout window's last layer"),
    "n_edges": ("count", "attention edges blocked in the window"),
    "p_blocked": ("probability", "p(Y) with the window's edges blocked"),
    "relative_change_pct": ("% of p(Y)", "100 · (p_blocked − p_clean) / p_clean"),
    "mean_relative_change_pct": ("% of p(Y)", "mean relative_change_pct over prompts"),
    # --- surgery (the mover heads ablated against random head sets)
    "scope": ("label", "where the heads are ablated: end (the end position only) or all (every position)"),
    "set_id": ("index", "the ablated head set: 0 = the mover heads, then the null sets"),
    "null": ("label", "movers (the mover heads' own set), layer (random heads of the movers' layers) or norm (matched on norm)"),
    "heads": ("labels", "the heads of the set, comma-separated (L23H4,L24H4)"),
    "p_ablated": ("probability", "p(Y) with the set's heads mean-ablated"),
    "drop_p": ("probability", "p_clean − p_ablated: the drop in p(Y) (per prompt, or its mean over prompts)"),
    "correct_clean": ("bool", "Y is the top-1 token of the clean run"),
    "correct_ablated": ("bool", "Y is the top-1 token with the set's heads mean-ablated"),
    "accuracy_clean": ("share (0–1)", "share of the prompts with correct_clean"),
    "accuracy_ablated": ("share (0–1)", "share of the prompts with correct_ablated"),
    "drop_accuracy": ("share (0–1)", "accuracy_clean − accuracy_ablated"),
    "norm": ("norm of a write", "mean over the set's heads of the norm the norm null matches on (surgery.norm)"),
    "in_mover_set": ("bool", "the head is one of the mover heads ablated together (the movers claim's heads)"),
    "change_norm": (
        "norm of a write",
        "RMS over prompts of ‖a_clean − ā‖: the end-position change mean-ablation makes to the head's write",
    ),
    "output_norm": ("norm of a write", "RMS over prompts of ‖a_clean‖: the head's end-position write"),
    "metric": ("label", "p_answer (the drop in p(Y)) or accuracy (the drop in accuracy)"),
    "movers_drop": ("probability or share", "the mover heads' mean drop in the row's metric"),
    "n_sets": ("count", "head sets in the null"),
    "n_possible": ("count", "distinct head sets the null's rule allows (empty: too many to count)"),
    "exhaustive": ("bool", "the null holds every set its rule allows (an exact permutation null)"),
    "null_median": ("probability or share", "median over the null's sets of their mean drop"),
    "null_quantile": ("probability or share", "the surgery.quantile (95th percentile) of the null's mean drops"),
    "null_mad": ("probability or share", "median absolute deviation of the null's mean drops"),
    "p_value": ("probability", "(1 + #null sets with a drop ≥ the movers') / (1 + n_sets): the empirical p-value"),
    "min_p_value": ("probability", "1 / (1 + n_sets): the smallest p-value the null can give"),
    "effect_size": ("robust z", "(movers_drop − null_median) / (1.4826 · null_mad); empty when null_mad is 0"),
    "draw": ("text", "how the null's sets are drawn"),
    "p_value_layer": ("probability", "claims: the layer null's p_value at claims.surgery_scope"),
    "p_value_norm": ("probability", "claims: the norm null's p_value at claims.surgery_scope"),
    "effect_size_layer": ("robust z", "claims: the layer null's effect_size at claims.surgery_scope"),
    "effect_size_norm": ("robust z", "claims: the norm null's effect_size at claims.surgery_scope"),
    "pool": ("count", "the norm null's pool of candidate heads per mover head"),
    "norm_ratio_median": ("ratio", "median over the null's sets of (the set's mean norm / the mover heads' mean norm)"),
    # --- onset (what demonstrations change: per prompt and per prompt × layer, at the end position)
    "attn_write_x": (
        "logits",
        "the mover heads of layer l (every head without the movers stage): their summed direct contribution to π(X) "
        "at the end position (linearised lens at the final residual)",
    ),
    "attn_write_x_cumulative": (
        "logits",
        "attn_write_x summed over layers 0..l: how much of X the mover heads have moved to the end",
    ),
    "attn_write_x_every_head": ("logits", "as attn_write_x, summed over every head of layer l"),
    "attn_write_x_every_head_cumulative": (
        "logits",
        "attn_write_x_every_head summed over layers 0..l: how much of X the attention has moved to the end",
    ),
    "lens_domain_share": (
        "share",
        "share of the top onset.domain_top_k tokens of the logit lens of r[l + 1] (the output of layer l) at the end "
        "that are first tokens of the relation's answers",
    ),
    "move_peak": ("logits", "the largest attn_write_x_cumulative over layers"),
    "move_layer": (
        "layer index",
        "the first layer where attn_write_x_cumulative ≥ onset.move_fraction × move_peak (empty when move_peak ≤ 0)",
    ),
    "domain_layer": (
        "layer index",
        "the first layer where lens_domain_share ≥ onset.min_domain_share; the model's layer count when it never is",
    ),
    # --- claims (claims.COLUMNS; the evidence columns are named as in the stage they come from)
    "claim": ("text", "the paper's claim"),
    "stage": ("label", "the stage whose results the claim reads"),
    "about": ("label", "the component(s) the primary statistic is about"),
    "measure": ("text", "what value is, with its units"),
    "ci_low": ("own units", "95% interval of the row's statistic, low end (claims: of value)"),
    "ci_high": ("own units", "95% interval of the row's statistic, high end"),
    "decided_by": ("text", "the condition threshold, margin and flips_at belong to"),
    "decided_value": (
        "threshold's units",
        "the statistic that decided the verdict (the CLI's and the report's value; not always the primary figure, value)",
    ),
    "decided_ci_low": ("threshold's units", "95% interval of decided_value, low end"),
    "decided_ci_high": ("threshold's units", "95% interval of decided_value, high end"),
    "threshold": ("own units", "the deciding condition's threshold, in its statistic's units"),
    "margin": (
        "own units",
        "signed room of the deciding statistic to its threshold (< 0, or 0 under a strict > or <: that condition is not met)",
    ),
    "flips_at": ("setting units", "the setting's value nearest its current one at which the verdict changes, all else fixed"),
    "prompts_used": ("count", "known prompts the deciding condition's interval is over (none: a figure without sampling error)"),
    "prompts_needed": (
        "count",
        "inconclusive claims: known prompts at which the interval would clear its threshold, effect as measured, width ∝ 1/√n",
    ),
    "prompts_available": ("count", "known prompts the relation can give at this run's known rate"),
    "verdict": (
        "label",
        "claims: holds, does not hold, inconclusive, not measurable here; decompose: amplified, attenuated, reversed",
    ),
    "rule": ("text", "every condition of the claim's rule, with the settings' values"),
    "detail": ("text", "the verdict in plain words"),
    "patch_rank": ("rank (1 = top)", "the head's rank among the heads by |patching effect|"),
    "n_movers": ("count", "heads that pass the movers stage's mover test"),
    "null_overlap": (
        "count",
        "the level quantile of the overlap of two random k-sets of heads (hypergeometric): the shot claim's chance level",
    ),
    "layer_shift": (
        "layers",
        "effect-weighted mean layer of the top heads at the most shots minus at the fewest (negative: earlier)",
    ),
    "layer_shift_ci_low": ("layers", "bootstrap 95% interval of layer_shift, low end"),
    "layer_shift_ci_high": ("layers", "bootstrap 95% interval of layer_shift, high end"),
    "onset_fewest": ("layer index", "C10, C11: the mean onset layer at the fewest shots, over the prompts compared"),
    "onset_most": ("layer index", "C10, C11: the mean onset layer at the most shots, over the prompts compared"),
    "every_head_shift": ("layers", "C10: the mean move onset shift read from every head's write instead of the mover heads'"),
    "p_fewest": ("probability", "C10, C11: mean p(Y) at the fewest shots, over the prompts compared"),
    "p_most": ("probability", "C10, C11: mean p(Y) at the most shots, over the prompts compared"),
    "pairing": (
        "label",
        "C10, C11: paired (the same prompts, by template and subject, at both shot counts) or independent (two samples)",
    ),
    "n_paired": ("count", "C10, C11: prompts known at both shot counts (0 when the comparison is independent)"),
    "condition": ("text", "one condition of a claim's rule (claims/sensitivity)"),
    "setting": ("label", "the setting its threshold comes from (claims.min_…, movers.min_…)"),
    "setting_value": ("setting units", "the setting's value in this run"),
    "estimate": ("own units", "the condition's statistic as measured (claims/sensitivity; ci_low, ci_high: its interval)"),
    "statistic": (
        "own units",
        "the end of the condition's interval that must clear the threshold (low end for > and >=, high end for < and <=)",
    ),
    "op": ("label", "the condition's comparison: >=, >, <=, <"),
    "state": ("label", "met (whole interval passes), failed (whole interval fails) or straddles the threshold"),
    "met_at": ("setting units", "the setting's value at which the condition turns met / stops being met"),
    "failed_at": ("setting units", "the setting's value at which the condition turns failed / stops failing"),
    "relation": ("label", "the relation a sweep's row belongs to"),
    "shots": ("count", "in-context demonstrations per prompt"),
}


def markdown() -> str:
    """docs/columns.md: the table above as Markdown, names in alphabetical order."""
    lines = [
        "# Column names",
        "",
        "<!-- generated by scripts/columns_table.py from recallscope.columns.COLUMNS: edit that table, not this file -->",
        "",
        "One name per quantity across every stage's tables and the records of the summaries; "
        "`tests/test_columns.py` runs every stage and fails on a name missing here.",
        "",
        "| column | unit | what it is |",
        "|---|---|---|",
    ]
    for name in sorted(COLUMNS, key=str.lower):
        unit, meaning = COLUMNS[name]
        lines.append(f"| `{name}` | {unit} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
