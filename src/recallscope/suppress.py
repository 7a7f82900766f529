"""Stage **suppress**: does the final layer push the correct answer down, and what if it didn't?

Lv et al. (2024) report an "anti-overconfidence" mechanism: in every model they studied, the
final layer writes *against* the correct answer Y at the end position, and undoing that write
raises the model's confidence in Y. This stage measures it rather than assuming it.

**Direct logit attribution (DLA).** The final residual at the end position is a sum of writes:
the embedding, every head a[l,h], every attention bias, every MLP m[l]. The logit lens of a
write v, *linearised* at the real final residual r_f of that prompt (the final norm's scale is
taken from r_f, so the lens is linear in v — :func:`recallscope.lens.logit_lens`), read at Y
minus its mean over the vocabulary, is the write's direct contribution to π(Y)::

    DLA(v) = lens(v; r_f)[Y] − mean_V lens(v; r_f)

Summed over every write (plus the norm's and the unembedding's biases, which belong to no
component) it gives π(Y) = logit[Y] − mean logit exactly (tested on the real model); with a
final logit soft-cap the sum is π before the cap. DLA is "direct": it ignores what a write does
through later layers, which for the final layer is nothing — the reason the final layer is
the natural place to read it.

For every head and the MLP of the last ``last_layers`` layers (default 1, the paper's final
layer; more layers show whether suppression is specific to the last one), over the *known*
prompts: the per-prompt DLA, its mean with a bootstrap interval (:func:`recallscope.stats.
bootstrap_ci`) and the share of prompts where it is negative. A **suppressor** is a component
whose mean DLA is negative and which is negative on more than ``threshold_share`` of the
prompts (default 0.5: "most"). Suppression is *present* when the final layer's total DLA
(all its heads, bias and MLP) has its whole interval below zero.

**Mitigation without labels.** The suppressors are edited at inference, with no knowledge of
Y: ``zero`` sets their end-position write to 0, ``mean`` replaces it by its mean over the
*selection* prompts (a "typical" write for the task, keeping its constant part), ``scale``
multiplies it by ``scale_factor``. Only the end position is edited by default (the paper's
focus; ``positions="all"`` edits every position, for zero and scale). Suppressors and mean
writes are chosen on some prompts and measured on others: the prompts (known and unknown
together) are split into ``folds`` groups by subject (so a held-out subject was never seen
during selection); for each fold, suppressors are chosen from the known prompts of the other
folds and the edit is evaluated on the held-out fold. Every prompt is held out exactly once;
metrics are computed over the union.

**Only what an edit changes is recomputed.** Every edit sits in the attributed layers (from
the lowest, ``start``, up), and with ``positions="end"`` only at the end position; attention is
causal, so nothing below ``start`` and nothing at an earlier position changes. The clean
attribution run keeps, per batch, the residual stream entering layer ``start`` at the edited
positions and the keys/values of the earlier positions at layers ``start`` and above
(:class:`Replay`); every fold × mode then reruns only those layers at those positions over the
cache (:meth:`ModelView.forward_from` with the same edits, :func:`evaluate_cached`) instead of a
full forward per variant (:func:`evaluate`, the reference, equal to 1e-6 in float64 — tested
on tiny models of every family and on smollm2-135m). The cache holds, per prompt,
(L − start) × 2 × K × S × d_head floats (default: the final layer only).

**Metrics**, before and after, on known prompts (top-1 was Y), unknown prompts and all:
mean p(Y), mean π(Y), accuracy (top-1 = Y), the Brier score of the top-1 confidence
mean((p_top1 − [top1 = Y])²), and the expected calibration error over ``ece_bins`` equal-width
bins of p_top1. "Do wrong answers gain confidence too?": on unknown prompts, the change of p of
the token the model chose *before* the edit (its wrong answer) and of p(Y).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from .components import Component
from .constraints import LEVEL, NON_NEGATIVE, POSITIVE, RESAMPLES, Interval, Options
from .display import ResultView
from .errors import UserError
from .figures import suppress as suppress_figures
from .lens import answer_stats, logit_lens, recall_metric
from .progress import track
from .stats import assign_folds as stats_assign_folds
from .stats import bootstrap_ci
from .models import load_model
from .recall import recall
from .tasks import PromptSet, batches, build_prompts, collect, load_relation

MODES = ("zero", "mean", "scale")
POPULATIONS = ("known", "unknown", "all")
LENS_CHUNK_ELEMENTS = 2**24  # cap on B × components × V floats held by one logit-lens call


@dataclass(frozen=True)
class SuppressConfig:
    last_layers: int = 1  # attribute the last this-many layers (1 = the paper's final layer)
    layers: tuple[int, ...] | None = None  # explicit layers to attribute (overrides last_layers)
    threshold_share: float = 0.5  # suppressor: negative on more than this share of known prompts
    modes: tuple[str, ...] = MODES
    scale_factor: float = 0.5  # "scale" mode multiplies the suppressors' write by this
    positions: str = "end"  # "end" (the paper's focus) or "all" positions are edited
    folds: int = 2  # cross-validation: choose on folds−1 parts, measure on the held-out one
    group_by_subject: bool = True  # folds split subjects, not prompts
    n_bootstrap: int = 2000
    ci_level: float = 0.95
    ece_bins: int = 10
    seed: int = 0
    batch_size: int = 32

    constraints: ClassVar[dict] = {
        "last_layers": POSITIVE, "layers": NON_NEGATIVE, "threshold_share": Interval(0, 1, "left"),
        "modes": Options(*MODES), "scale_factor": Interval(), "positions": Options("end", "all"), "folds": Interval(2, None),
        "n_bootstrap": RESAMPLES, "ci_level": LEVEL, "ece_bins": POSITIVE, "seed": NON_NEGATIVE, "batch_size": POSITIVE,
    }


# ----------------------------------------------------------------------------- attribution
def direct_logit_attribution(view, writes: Tensor, resid_final: Tensor, answer_ids: Tensor) -> Tensor:
    """DLA [B, C] of writes [B, C, d] to Y: the linearised logit lens (at the prompt's real final
    residual [B, d]) read at Y minus its mean over the vocabulary."""
    B, C, _ = writes.shape
    V = view.weights.W_U.shape[1]
    step = max(1, LENS_CHUNK_ELEMENTS // max(1, B * V))
    out = []
    for lo in range(0, C, step):
        chunk = writes[:, lo : lo + step]
        lens = logit_lens(view, chunk, reference=resid_final[:, None, :], mode="linearised")
        out.append(recall_metric(lens.float(), answer_ids[:, None].expand(B, chunk.shape[1])))
    return torch.cat(out, dim=1)


def bias_attribution(view, resid_final: Tensor, answer_ids: Tensor) -> Tensor:
    """[B] the part of π(Y) that belongs to no write: the final norm's shift and the unembedding bias."""
    zero = torch.zeros_like(resid_final)
    lens = logit_lens(view, zero, reference=resid_final, mode="linearised", include_bias=True)
    return recall_metric(lens.float(), answer_ids)


def candidate_components(n_layers: int, n_heads: int, layers: Sequence[int]) -> list[Component]:
    comps: list[Component] = []
    for l in layers:
        comps += [Component("head", l, h) for h in range(n_heads)]
        comps.append(Component("mlp", l))
    return comps


def resolve_layers(config: SuppressConfig, n_layers: int) -> list[int]:
    if config.layers:
        bad = [l for l in config.layers if not -n_layers <= l < n_layers]
        if bad:
            raise UserError(f"--layers {bad} out of range: the model has layers 0..{n_layers - 1}")
        return sorted({l % n_layers for l in config.layers})
    if not 1 <= config.last_layers <= n_layers:
        raise UserError(f"suppress.last_layers must be in 1..{n_layers}, got {config.last_layers}")
    return list(range(n_layers - config.last_layers, n_layers))


def validate(config: SuppressConfig) -> None:
    bad = [m for m in config.modes if m not in MODES]
    if bad or not config.modes:
        raise UserError(f"suppress.modes must be a non-empty subset of {', '.join(MODES)}, got {list(config.modes)}")
    if config.positions not in ("end", "all"):
        raise UserError(f"suppress.positions must be 'end' or 'all', got {config.positions!r}")
    if config.positions == "all" and "mean" in config.modes:
        raise UserError("suppress: mean-ablation is defined at the end position only; use positions='end' or drop 'mean'")
    if config.folds < 2:
        raise UserError(f"suppress.folds must be >= 2 (selection and evaluation on different prompts), got {config.folds}")
    if not 0.0 <= config.threshold_share < 1.0:
        raise UserError(f"suppress.threshold_share must be in [0, 1), got {config.threshold_share}")
    if config.ece_bins < 1:
        raise UserError(f"suppress.ece_bins must be >= 1, got {config.ece_bins}")


@dataclass
class ReplayBatch:
    """What one clean batch leaves for rerunning layers ``start`` and above (:class:`Replay`)."""

    indices: np.ndarray  # [B] prompt indices (into the stage's prompt list)
    attention_mask: Tensor  # [B, S]
    resid: Tensor  # [B, T, d] the residual entering layer ``start`` at the last T positions (T = 1: the end)
    past: list  # per layer: (keys, values) [B, K, S - T, dh] of the earlier positions (None below ``start``)

    def rows(self, keep: np.ndarray) -> "ReplayBatch":
        """The batch restricted to the rows where ``keep`` [B] is true."""
        r = torch.as_tensor(np.flatnonzero(keep), device=self.resid.device)
        past = [None if kv is None else (kv[0][r], kv[1][r]) for kv in self.past]
        return ReplayBatch(self.indices[keep], self.attention_mask[r], self.resid[r], past)


@dataclass
class Replay:
    """The clean run's cache from which :func:`evaluate_cached` reruns the edited layers.

    ``start`` is the lowest layer an edit touches; ``positions`` ``"end"`` caches the end
    position's residual entering ``start`` and the keys/values of every earlier position from
    ``start`` up; ``"all"`` caches the whole rows' residual entering ``start`` (no earlier position).
    """

    start: int
    positions: str
    batches: list[ReplayBatch]


@dataclass
class _Clean:
    """End-position measurements of the unedited model for a list of prompts."""

    dla: np.ndarray  # [N, C] per candidate component
    layer_total: np.ndarray  # [N, n_attr_layers] DLA of attn_out + mlp_out of each attributed layer
    writes: np.ndarray  # [N, C, d] the candidates' end-position writes at the edit site (for mean-ablation)
    stats: dict[str, np.ndarray]  # answer_stats of the real logits
    replay: Replay | None = None  # the cache the mitigation reruns from (``replay_from`` given)


@torch.no_grad()
def measure_clean(
    model, prompts: list, comps: list[Component], layers: list[int], batch_size: int, progress: bool = True,
    replay_from: int | None = None, positions: str = "end",
) -> _Clean:
    """The clean run's DLA, writes and answer statistics; with ``replay_from`` (a layer) also the
    :class:`Replay` cache for rerunning layers ``replay_from`` and above at ``positions``."""
    view = model.view
    replay: list[ReplayBatch] = []

    def measure(indices, batch) -> dict:
        entering: list[Tensor] = []

        def keep_entering(x: Tensor) -> Tensor:  # an identity edit: it only keeps the residual entering ``replay_from``
            entering.append(x)
            return x

        edits = {("resid_pre", replay_from): keep_entering} if replay_from is not None else None
        tr = view.trace(batch.input_ids, batch.attention_mask, record=["head_out", "mlp_out", "attn_out", "resid_final", "logits"]
                        + (["z"] if model.cfg.post_attn_norm else []), edits=edits, return_kv=replay_from is not None)
        if replay_from is not None:
            S = batch.input_ids.shape[1]
            T = 1 if positions == "end" else S
            replay.append(ReplayBatch(
                indices=np.asarray(indices), attention_mask=batch.attention_mask.to(view.device),
                resid=entering[0][:, S - T:].clone(),
                past=[None if layer < replay_from else (k[:, :, : S - T].contiguous(), v[:, :, : S - T].contiguous())
                      for layer, (k, v) in enumerate(tr.kv)],
            ))
        y = batch.answer_ids().to(view.device)
        w = torch.stack([tr.head_out[:, 0, c.layer, c.head] if c.kind == "head" else tr.mlp_out[:, 0, c.layer] for c in comps], dim=1)
        if model.cfg.post_attn_norm:
            # mean-ablation replaces a head's write at the trace's head_out edit site, which is
            # before the post-attention norm (Gemma 3): the mean of those writes, not of the
            # norm-scaled shares that DLA reads
            edit_writes = torch.stack([
                view.head_writes(c.layer, tr.z[:, 0, c.layer])[:, c.head] if c.kind == "head" else tr.mlp_out[:, 0, c.layer]
                for c in comps
            ], dim=1)
        else:
            edit_writes = w
        totals = torch.stack([tr.attn_out[:, 0, l] + tr.mlp_out[:, 0, l] for l in layers], dim=1)
        rf = tr.resid_final[:, 0]
        out = {
            "dla": direct_logit_attribution(view, w, rf, y).cpu().numpy().astype(np.float64),
            "layer_total": direct_logit_attribution(view, totals, rf, y).cpu().numpy().astype(np.float64),
            # float32 (numpy has no bfloat16), float64 kept: a float64 run's mean-ablation stays float64
            "writes": (edit_writes if edit_writes.dtype == torch.float64 else edit_writes.float()).cpu().numpy(),
        }
        out.update({f"stats.{k}": v.cpu().numpy() for k, v in answer_stats(tr.logits[:, 0], y).items()})
        return out

    got = collect(prompts, model.tokenizer.pad_token_id, batch_size, measure, "suppress: attribution", progress)
    stats = {k.removeprefix("stats."): v for k, v in got.items() if k.startswith("stats.")}
    cache = Replay(replay_from, positions, replay) if replay_from is not None else None
    return _Clean(got["dla"], got["layer_total"], got["writes"], stats, cache)


def summarise_dla(values: np.ndarray, config: SuppressConfig) -> dict:
    """Mean, bootstrap interval and share negative of per-prompt DLA values [N]."""
    low, high = bootstrap_ci(values, n=config.n_bootstrap, level=config.ci_level, seed=config.seed)
    return {
        "mean_dla": float(np.mean(values)) if len(values) else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "share_negative": float(np.mean(values < 0)) if len(values) else float("nan"),
    }


def choose_suppressors(dla: np.ndarray, threshold_share: float) -> np.ndarray:
    """[C] bool: mean DLA < 0 and negative on more than ``threshold_share`` of the prompts."""
    if dla.shape[0] == 0:
        return np.zeros(dla.shape[1], dtype=bool)
    return (dla.mean(0) < 0) & ((dla < 0).mean(0) > threshold_share)


# ----------------------------------------------------------------------------- mitigation
def make_edits(
    comps: list[Component], chosen: np.ndarray, mode: str, config: SuppressConfig, mean_writes: np.ndarray | None, device
) -> dict:
    """``view.trace`` edits that zero, mean-ablate or rescale the chosen components' writes."""
    cols = slice(-1, None) if config.positions == "end" else slice(None)
    by_site: dict[tuple[str, int], list[tuple[int | None, Tensor | None]]] = {}
    for c, comp, keep in zip(range(len(comps)), comps, chosen, strict=True):
        if not keep:
            continue
        site = ("head_out", comp.layer) if comp.kind == "head" else ("mlp_out", comp.layer)
        mean = torch.as_tensor(mean_writes[c], device=device) if mode == "mean" else None
        by_site.setdefault(site, []).append((comp.head, mean))

    def editor(targets):
        def fn(x: Tensor) -> Tensor:
            x = x.clone()
            for head, mean in targets:
                idx = (slice(None), cols) if head is None else (slice(None), cols, head)
                if mode == "zero":
                    x[idx] = 0
                elif mode == "mean":
                    x[idx] = mean.to(x.dtype)
                else:
                    x[idx] = x[idx] * config.scale_factor
            return x

        return fn

    return {site: editor(targets) for site, targets in by_site.items()}


def _after_stats(logits: Tensor, answer_ids: Tensor, before_top1: Tensor) -> dict[str, np.ndarray]:
    logits = logits.float()
    stats = answer_stats(logits, answer_ids)
    stats["p_before_top1"] = torch.softmax(logits, -1).gather(-1, before_top1[:, None]).squeeze(-1)
    return {k: v.cpu().numpy() for k, v in stats.items()}


@torch.no_grad()
def evaluate_cached(
    model, replay: Replay, held: np.ndarray, edits: dict, answer_ids: np.ndarray, before_top1: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`evaluate` of the prompts where ``held`` [N] is true, rerunning only layers
    ``replay.start`` and above at the cached positions (:meth:`ModelView.forward_from`).

    Every edit must sit at layer ``replay.start`` or above and, with ``replay.positions ==
    "end"``, at the end position only (``make_edits`` with the same ``positions``); then the
    earlier positions and lower layers are the clean run's and the result equals the full forward.
    Returns ``{name: [n_held]}`` in the order of ``np.flatnonzero(held)``.
    """
    view = model.view
    at = np.full(len(held), -1)
    at[np.flatnonzero(held)] = np.arange(int(held.sum()))
    out: dict[str, np.ndarray] = {}
    for rb in replay.batches:
        keep = held[rb.indices]
        if not keep.any():
            continue
        sub = rb.rows(keep) if not keep.all() else rb
        tr = view.forward_from(sub.resid, replay.start, sub.attention_mask, sub.past, record=["logits"], edits=edits)
        got = _after_stats(tr.logits[:, 0], torch.as_tensor(answer_ids[sub.indices], device=view.device),
                           torch.as_tensor(before_top1[sub.indices], device=view.device))
        for name, value in got.items():
            if name not in out:
                out[name] = np.zeros((int(held.sum()), *value.shape[1:]), dtype=value.dtype)
            out[name][at[sub.indices]] = value
    return out


@torch.no_grad()
def evaluate(model, prompts: list, edits: dict, before_top1: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """answer_stats after the edits, plus p of each prompt's *unedited* top-1 token.

    One full forward per prompt (``view.trace`` with the edits): the reference that
    :func:`evaluate_cached`, which the stage uses, is tested against.
    """
    view = model.view

    def measure(indices, batch) -> dict:
        tr = view.trace(batch.input_ids, batch.attention_mask, record=["logits"], edits=edits)
        y = batch.answer_ids().to(view.device)
        return _after_stats(tr.logits[:, 0], y, torch.as_tensor(before_top1[indices], device=view.device))

    return collect(prompts, model.tokenizer.pad_token_id, batch_size, measure)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Σ_b (n_b / N) |accuracy_b − mean confidence_b| over equal-width confidence bins."""
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def calibration_metrics(rows: pd.DataFrame, bins: int) -> dict:
    """Mean p(Y), π(Y), accuracy, Brier of the top-1 confidence, ECE, p_top1 of rows."""
    if rows.empty:
        return {"n": 0}
    conf = rows["p_top1"].to_numpy(float)
    correct = rows["correct"].to_numpy(bool).astype(float)
    return {
        "n": int(len(rows)),
        "p_answer": float(rows["p_answer"].mean()),
        "pi_answer": float(rows["pi_answer"].mean()),
        "accuracy": float(correct.mean()),
        "brier": float(np.mean((conf - correct) ** 2)),
        "ece": expected_calibration_error(conf, correct, bins),
        "p_top1": float(conf.mean()),
        "p_before_top1": float(rows["p_before_top1"].mean()),
    }


def assign_folds(subjects: Sequence[str], folds: int, by_subject: bool, seed: int) -> np.ndarray:
    """[N] fold of each prompt; whole subjects go to one fold when ``by_subject`` (and possible)
    — :func:`recallscope.stats.assign_folds`, the one fold assignment."""
    return stats_assign_folds(len(subjects), folds, seed, groups=list(subjects) if by_subject else None)


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class SuppressResult(ResultView):
    stage = "suppress"

    relation: str
    shots: int
    config: SuppressConfig
    layers: tuple[int, ...]
    final_layer: int
    components: list = field(repr=False)  # dicts: component, layer, head, mean_dla, ci_low, ci_high, share_negative, is_suppressor
    layer_totals: list = field(repr=False)  # dicts: layer, mean_dla, ci_low, ci_high, share_negative
    mitigation: dict = field(repr=False)  # mode -> population -> before/after metrics
    fold_suppressors: list = field(repr=False)  # per fold: list of component names chosen
    dla: pd.DataFrame = field(repr=False)  # per known prompt × component: the DLA to Y (the main table)
    evals: pd.DataFrame = field(repr=False)  # per prompt × mode: p(Y), π(Y), correctness before/after the edit
    n_known: int = 0
    n_unknown: int = 0
    n_layers: int = 0  # the model's shape: head_grid() / to_array() cover every head, NaN off the layers measured
    n_heads: int = 0

    def to_frame(self) -> pd.DataFrame:
        """The main table: one row per known prompt and component (``dla``: its DLA to Y)."""
        return self.dla.copy()

    def tables(self) -> dict[str, pd.DataFrame]:
        """``suppress`` (the DLA table, main) and ``eval`` (before/after each mitigation, per held-out prompt)."""
        return {"suppress": self.to_frame(), "eval": self.evals.copy()}

    def suppression_present(self) -> dict:
        final = next(t for t in self.layer_totals if t["layer"] == self.final_layer)
        return {
            "present": bool(final["ci_high"] < 0),
            "layer": self.final_layer,
            "final_layer_total_dla": final["mean_dla"],
            "ci_low": final["ci_low"],
            "ci_high": final["ci_high"],
            "share_negative": final["share_negative"],
            "any_suppressor": any(c["is_suppressor"] for c in self.components if c["layer"] == self.final_layer),
            "rule": f"the final layer's total DLA to Y (heads + bias + MLP) has its {self.config.ci_level:.0%} "
                    "bootstrap interval below 0 over the known prompts",
        }

    def to_dict(self) -> dict:
        return {
            "relation": self.relation,
            "shots": self.shots,
            "n_known": self.n_known,
            "n_unknown": self.n_unknown,
            "layers": list(self.layers),
            "suppressor_rule": f"mean DLA < 0 and DLA < 0 on more than {self.config.threshold_share:.0%} of known prompts",
            "edited_positions": self.config.positions,
            "folds": self.config.folds,
            "components": self.components,
            "layer_totals": self.layer_totals,
            "suppression_present": self.suppression_present(),
            "fold_suppressors": self.fold_suppressors,
            "mitigation": self.mitigation,
            "config": asdict(self.config),
        }

    def plot(self) -> go.Figure:
        """Mean DLA to Y per component (the first of :func:`recallscope.figures.suppress.figures`)."""
        return suppress_figures.figures(self.tables(), self.to_dict())[0]


def _mitigation_summary(evals: pd.DataFrame, config: SuppressConfig) -> dict:
    evals = evals.astype({"correct": bool})
    before = evals[evals["mode"] == "before"]
    out = {}
    for mode in config.modes:
        after = evals[evals["mode"] == mode]
        per_pop = {}
        for pop in POPULATIONS:
            b = before if pop == "all" else before[before["population"] == pop]
            a = after if pop == "all" else after[after["population"] == pop]
            entry = {"before": calibration_metrics(b, config.ece_bins), "after": calibration_metrics(a, config.ece_bins)}
            if len(a):
                merged = a.merge(b, on=["population", "prompt_index"], suffixes=("", "_before"))
                delta = merged["p_answer"].to_numpy() - merged["p_answer_before"].to_numpy()
                lo, hi = bootstrap_ci(delta, n=config.n_bootstrap, level=config.ci_level, seed=config.seed)
                entry["delta_p_answer"] = {"mean": float(delta.mean()), "ci_low": lo, "ci_high": hi}
                wrong = merged[~merged["correct_before"]]
                if len(wrong):
                    # p of the token the model chose before the edit, where that choice was wrong.
                    dw = wrong["p_before_top1"].to_numpy() - wrong["p_top1_before"].to_numpy()
                    entry["delta_p_wrong_top1"] = {"n": int(len(wrong)), "mean": float(dw.mean()), "share_up": float((dw > 0).mean())}
            per_pop[pop] = entry
        unk = per_pop["unknown"]
        per_pop["wrong_answers_gain"] = bool(unk.get("delta_p_wrong_top1", {}).get("mean", 0.0) > 0)
        out[mode] = per_pop
    return out


# ----------------------------------------------------------------------------- the stage
def suppress(
    model, known: PromptSet, unknown: PromptSet | None = None, config: SuppressConfig = SuppressConfig(), progress: bool = True
) -> SuppressResult:
    """The suppress stage on a loaded model, its known prompts and (optionally) its unknown ones.

    Both sets are used as given: the pipeline passes ``recall(model, prompts).known`` and
    ``.unknown_prompts()``; a direct call on them reproduces the run's tables."""
    validate(config)
    cfg = model.cfg
    layers = resolve_layers(config, cfg.n_layers)
    final_layer = cfg.n_layers - 1
    total_layers = sorted(set(layers) | {final_layer})
    if len(known) == 0:
        raise UserError(f"suppress: no known prompt for relation {known.relation.name!r}")
    comps = candidate_components(cfg.n_layers, cfg.n_heads, layers)
    unknown_list = list(unknown.prompts) if unknown is not None else []
    prompts = list(known.prompts) + unknown_list
    population = np.array(["known"] * len(known) + ["unknown"] * len(unknown_list))
    local_index = np.concatenate([np.arange(len(known)), np.arange(len(unknown_list))]).astype(int)
    clean = measure_clean(model, prompts, comps, total_layers, config.batch_size, progress,
                          replay_from=min(layers), positions=config.positions)
    answer_ids = np.array([p.answer_id for p in prompts])
    is_known = population == "known"

    # ---- attribution over every known prompt
    kdla = clean.dla[is_known]
    chosen_all = choose_suppressors(kdla, config.threshold_share)
    components = []
    for c, comp in enumerate(comps):
        components.append({
            "component": comp.label, "kind": comp.kind, "layer": comp.layer, "head": comp.head,
            **summarise_dla(kdla[:, c], config), "is_suppressor": bool(chosen_all[c]),
        })
    layer_totals = [{"layer": l, **summarise_dla(clean.layer_total[is_known, i], config)} for i, l in enumerate(total_layers)]

    # ---- cross-validated mitigation
    fold = assign_folds([p.subject for p in prompts], config.folds, config.group_by_subject, config.seed)
    base = {
        "population": population, "prompt_index": local_index, "subject": [p.subject for p in prompts],
        "answer": [p.answer for p in prompts], "fold": fold,
    }
    eval_frames = [pd.DataFrame({
        **base, "mode": "before", "p_answer": clean.stats["p_answer"], "pi_answer": clean.stats["pi_answer"],
        "correct": clean.stats["rank_answer"] == 0, "p_top1": clean.stats["p_top1"],
        "p_before_top1": clean.stats["p_top1"], "top1_id": clean.stats["top1_id"], "n_suppressors": 0,
    })]
    fold_suppressors = []
    steps = [(f, m) for f in range(config.folds) for m in config.modes]
    for f, mode in track(steps, "suppress: mitigation", total=len(steps), enabled=progress, unit="fits"):
        held = np.flatnonzero(fold == f)
        select = (fold != f) & is_known
        chosen = choose_suppressors(clean.dla[select], config.threshold_share)
        if mode == config.modes[0]:
            fold_suppressors.append({"fold": f, "n_selection": int(select.sum()), "n_held_out": int(len(held)),
                                     "suppressors": [comps[c].label for c in np.flatnonzero(chosen)]})
        if len(held) == 0:
            continue
        mean_writes = clean.writes[fold != f].mean(0) if mode == "mean" else None
        edits = make_edits(comps, chosen, mode, config, mean_writes, model.device)
        if edits:
            after = evaluate_cached(model, clean.replay, fold == f, edits, answer_ids, clean.stats["top1_id"])
        else:  # nothing to edit: the model is unchanged
            after = {k: clean.stats[k][held] for k in ("p_answer", "pi_answer", "rank_answer", "p_top1", "top1_id")}
            after["p_before_top1"] = clean.stats["p_top1"][held]
        eval_frames.append(pd.DataFrame({
            **{k: np.asarray(v)[held] for k, v in base.items()}, "mode": mode,
            "p_answer": after["p_answer"], "pi_answer": after["pi_answer"], "correct": after["rank_answer"] == 0,
            "p_top1": after["p_top1"], "p_before_top1": after["p_before_top1"], "top1_id": after["top1_id"],
            "n_suppressors": int(chosen.sum()),
        }))
    evals = pd.concat(eval_frames, ignore_index=True)
    evals["correct"] = evals["correct"].astype("boolean")

    # ---- the per-prompt DLA table (known prompts)
    kidx = np.flatnonzero(is_known)
    dla_rows = pd.DataFrame({
        "population": "known",
        "prompt_index": np.repeat(local_index[kidx], len(comps)),
        "subject": np.repeat(np.array(base["subject"], dtype=object)[kidx], len(comps)),
        "fold": np.repeat(fold[kidx], len(comps)),
        "component": [c.label for c in comps] * len(kidx),
        "layer": [c.layer for c in comps] * len(kidx),
        "head": pd.array([c.head for c in comps] * len(kidx), dtype="Int64"),
        "dla": kdla.reshape(-1),
    })
    dla_rows["head"] = dla_rows["head"].astype("Int64")
    mitigation = _mitigation_summary(evals, config)
    return SuppressResult(
        relation=known.relation.name, shots=known.shots, config=config, layers=tuple(layers), final_layer=final_layer,
        components=components, layer_totals=layer_totals, mitigation=mitigation, fold_suppressors=fold_suppressors,
        dla=dla_rows, evals=evals, n_known=int(is_known.sum()), n_unknown=int((~is_known).sum()),
        n_layers=model.cfg.n_layers, n_heads=model.cfg.n_heads,
    )


@torch.no_grad()
def attribution_identity(model, prompts: list) -> tuple[np.ndarray, np.ndarray]:
    """(Σ of the DLA of every write + biases, π(Y)) per prompt — equal up to float error.

    The writes are the embedding, every head, every attention bias and every MLP at the end
    position, each read by the same linearised lens as the stage uses.
    """
    view = model.view
    cfg = model.cfg
    indices, b = next(iter(batches(prompts, model.tokenizer.pad_token_id, len(prompts))))
    tr = view.trace(b.input_ids, b.attention_mask, record=["resid_pre", "head_out", "attn_out", "mlp_out", "resid_final", "logits"])
    y = b.answer_ids().to(view.device)
    parts = [tr.resid_pre[:, 0, 0][:, None]]  # the embedding (r[0])
    for l in range(cfg.n_layers):
        heads = tr.head_out[:, 0, l]
        parts.append(heads)
        parts.append((tr.attn_out[:, 0, l] - heads.sum(1))[:, None])  # the bias, 0 where there is none
        parts.append(tr.mlp_out[:, 0, l][:, None])
    writes = torch.cat(parts, dim=1)
    rf = tr.resid_final[:, 0]
    total = direct_logit_attribution(view, writes, rf, y).sum(1) + bias_attribution(view, rf, y)
    order = np.argsort(indices)  # batches() sorts prompts by length; back to the given order
    return total.cpu().numpy()[order], recall_metric(tr.logits[:, 0].float(), y).cpu().numpy()[order]


# ----------------------------------------------------------------------------- sweep
def sweep(
    models: Sequence[str],
    relations: Sequence[str],
    shots_list: Sequence[int] = (0, 1, 3),
    config: SuppressConfig = SuppressConfig(),
    seed: int = 0,
    max_prompts: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> pd.DataFrame:
    """One row per model × relation × shots × mitigation mode with the stage's headline figures."""
    rows = []
    for model_name in models:
        model = load_model(model_name, device=device)
        for rel_name in relations:
            relation = load_relation(rel_name)
            for k in shots_list:
                head = {"model": model.name, "relation": relation.name, "shots": k}
                try:
                    prompts = build_prompts(relation, model.tokenizer, shots=k, seed=seed, max_prompts=max_prompts)
                    rec = recall(model, prompts, progress=progress)
                    res = suppress(model, rec.known_prompts(), rec.unknown_prompts(), config, progress=progress)
                except UserError as exc:
                    log(f"{model_name} {rel_name} {k}-shot: skipped ({exc})")
                    rows.append({**head, "skipped": str(exc)})
                    continue
                sp = res.suppression_present()
                sup = [c["component"] for c in res.components if c["is_suppressor"]]
                common = {
                    **head, "n_prompts": len(prompts), "n_known": res.n_known, "n_unknown": res.n_unknown,
                    "final_dla": sp["final_layer_total_dla"], "final_dla_ci_low": sp["ci_low"],
                    "final_dla_ci_high": sp["ci_high"], "final_share_negative": sp["share_negative"],
                    "suppression_present": sp["present"], "suppressors": ",".join(sup),
                    "fold_suppressors": " | ".join(",".join(f["suppressors"]) for f in res.fold_suppressors),
                }
                for mode, per_pop in res.mitigation.items():
                    row = {**common, "mode": mode}
                    for pop in POPULATIONS:
                        for when in ("before", "after"):
                            for key in ("p_answer", "pi_answer", "accuracy", "brier", "ece"):
                                row[f"{pop}_{key}_{when}"] = per_pop[pop][when].get(key, float("nan"))
                        row[f"{pop}_delta_p_answer"] = per_pop[pop].get("delta_p_answer", {}).get("mean", float("nan"))
                    row["unknown_delta_p_wrong_top1"] = per_pop["unknown"].get("delta_p_wrong_top1", {}).get("mean", float("nan"))
                    row["wrong_answers_gain"] = per_pop["wrong_answers_gain"]
                    rows.append(row)
                log(f"{model.name} {relation.name} {k}-shot: final DLA {sp['final_layer_total_dla']:.3f} "
                    f"[{sp['ci_low']:.3f}, {sp['ci_high']:.3f}], suppressors {sup}")
    return pd.DataFrame(rows)


def check_config(config: SuppressConfig, model) -> None:
    validate(config)
    resolve_layers(config, model.cfg.n_layers)
