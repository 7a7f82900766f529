"""Stage **patch**: causal mediation of every head and MLP at the end position.

The paper asks which components *carry* the fact to the end position. Its answer is activation
patching with mean ablation ("noising"): run the clean prompt ("The capital of France is"), but
replace one component's output at the end position by its mean over *corrupted* prompts — the
same prompt with the subject swapped for other subjects of the relation that have the same
number of tokens ("… of Spain is", "… of Japan is"), so every position lines up. The effect is
the relative change of the recall metric π(Y) = logit[Y] − mean logit::

    effect = 100 · (π_patched − π_clean) / π_clean      (%, per prompt, then averaged)

A strongly negative effect marks a component the recall needs. Components: every attention
head's write a[l,h] (``L{l}H{h}``), every MLP output m[l] (``MLP{l}``) and, as an option, the
whole residual stream entering a layer r[l] (``RES{l}``).

**Denoising** is the mirror image: run a corrupted prompt (the first same-length corruption of
each clean prompt) and patch in the *clean* prompt's value of one component. π is still the
clean answer's; its effect is the share of the clean–corrupted gap the component restores::

    effect = 100 · (π_patched − π_corrupted) / (π_clean − π_corrupted)      (%)

(π_corrupted, not π_clean, is the run being changed; dividing by it, as the noising formula
does by π_clean, would divide by a number near zero.)

**Path patching** (``mode="path"``, the paper's measurement) freezes every attention head to
the clean run, so the patched sender reaches the logits only directly and through the MLPs at
the end position; see :mod:`recallscope.path_patching`. ``mode="total"`` (the default) lets
every later component recompute (the total effect, classic activation patching).

The value patched in (``sender_mean``; computed in one place, :func:`sender_values`):

``per_prompt`` (default)
    the mean over same-length corruptions of the prompt itself (positions line up).
``dataset``
    recallscope's own-end dataset mean: one mean over the corrupted dataset (each prompt with
    its subject swapped, ``corruption_draw``), each corrupted prompt read at its own end
    position (:func:`dataset_mean`).
``dataset_by_position`` (the authors', ``path_patching`` in their fact_utils.py)
    the corrupted texts with the answer appended, right-padded with the end-of-text token and
    run without an attention mask, averaged over prompts at each absolute position and read at
    each clean prompt's end index (:func:`dataset_mean_by_position`). With prompts of different
    lengths this mixes one prompt's end with other prompts' subjects, answers and padding; with
    prompts of one length it equals ``dataset``.

Both dataset means cost one extra batched forward of the corrupted dataset, whatever the number
of senders. ``corruption_draw``: ``other_subject`` (default: never the clean subject nor a
demonstration's) or ``any_subject`` (the authors' ``np.random.randint`` over every nation);
:func:`recallscope.tasks.prompts.swapped_subject_prompts`.

Aggregation over prompts (``aggregate`` picks the headline; both are in the ``components``
table, with per-prompt quantiles and bootstrap intervals):

``mean_of_ratios`` (default)
    the mean over prompts of the per-prompt effect above: every prompt weighs the same.
``ratio_of_means`` (the paper's figure, ``plot_path_patching`` in the authors' fact_utils.py)
    ``100 · (mean π_patched − mean π_clean) / mean π_clean`` over the prompts (denoising:
    ``100 · (mean π_patched − mean π_base) / (mean π_clean − mean π_base)``): prompts with a
    large π weigh more.

``prompts``: ``known`` (default) patches the prompts the model answers correctly (a component
cannot carry a fact the model does not recall); ``all`` patches every prompt, as the paper's
code does.

recallscope's defaults (total effect, per-prompt same-length corruptions, mean of per-prompt
ratios, known prompts) answer "which components does *this* recall depend on, prompt by
prompt"; the ``paper`` preset (:mod:`recallscope.presets`) selects the authors' choice for each
setting it lists (path mode, the authors' dataset mean and corruption draw, ratio of means, every
prompt), equal to their ``path_patching`` loop on the same inputs (tests/test_paper_preset_reference.py).

Three engines compute the total-effect table (path mode: ``exact`` and ``naive`` only):

``naive``
    one full forward per component (``view.trace`` with an edit at the end position), batched
    over prompts — the loop structure of the paper's code (a forward per sender) and of
    TransformerLens's patching helpers, and
    the reference in the tests.
``exact`` (default)
    a change at the end position alters nothing at earlier positions (attention is causal) and
    nothing below the patched layer. So the clean run is recorded once, each layer's keys and
    values of the earlier positions are computed once from it, and a patched variant only
    recomputes *the end position* from the patched layer upward, its query attending over
    those cached keys/values plus its own. All variants of a batch of prompts (every component)
    run layer by layer as one batch: a variant joins the batch at the layer above the
    component it patches. π needs no full vocabulary: π = N_f(r) · (W_U[:, Y] − mean column of
    W_U) (+ b_U[Y] − mean b_U). The result equals the naive loop to float precision.
``attribution``
    attribution patching (Nanda 2023; Syed et al. 2023): the first-order estimate
    π_patched − π_clean ≈ (patched value − clean value) · ∂π/∂component, with every gradient
    from one backward pass through the end position (the earlier positions do not depend on
    end-position components, so their cached keys/values are constants). Passes: the clean
    forward, the corrupted forward (shared with the exact engine) and one backward.
    With ``attribution=True`` it runs beside the exact engine, and the summary reports its
    Spearman ρ and top-10 overlap with the exact effects.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from .components import Component, component_columns
from .constraints import NON_NEGATIVE, POSITIVE, RESAMPLES, Options
from .display import ResultView
from .errors import UserError
from .figures import patch as patch_figures
from .lens import answer_metric, recall_metric
from .models import Model
from .models.view import LOGIT_ELEMENTS, ModelView, position_ids_from_mask
from .path_patching import frozen_heads_pi, path_final_resid
from .progress import step as progress_step
from .progress import track
from .stats import spearman
from .tasks import PromptSet
from .tasks.prompts import (
    CORRUPTION_DRAWS,
    Prompt,
    answer_appended_ids,
    batches,
    corruptions,
    make_batch,
    swapped_subject_prompts,
)

MODES = ("total", "path")
DIRECTIONS = ("noise", "denoise")
SENDER_MEANS = ("per_prompt", "dataset", "dataset_by_position")
PROMPT_SETS = ("known", "all")
AGGREGATES = ("mean_of_ratios", "ratio_of_means")
COMPONENT_KINDS = ("heads", "mlp", "resid")
ENGINES = ("exact", "naive", "attribution")


@dataclass(frozen=True)
class PatchConfig:
    mode: str = "total"  # "total": later components recompute; "path": every head frozen (the paper's path patching)
    direction: str = "noise"  # "noise": clean run, corrupted mean patched in (the paper); "denoise": the reverse
    sender_mean: str = "per_prompt"  # "per_prompt": same-length corruptions; "dataset": one mean over the corrupted dataset,
    # each read at its own end; "dataset_by_position": the authors' mean at each absolute position of the right-padded texts
    corruption_draw: str = "other_subject"  # the dataset means' swapped subject: "other_subject" or "any_subject" (the authors')
    prompts: str = "known"  # "known": prompts the model gets right; "all": every prompt (the paper)
    aggregate: str = "mean_of_ratios"  # headline over prompts: "mean_of_ratios" or "ratio_of_means" (the paper)
    n_bootstrap: int = 1000  # resamples of the prompts for the intervals in the components table
    components: tuple[str, ...] = ("heads", "mlp")  # from "heads", "mlp", "resid"
    layers: tuple[int, ...] | None = None  # None: every layer
    top_k: int = 10  # components listed in the summary
    n_corruptions: int = 10  # corrupted prompts averaged per clean prompt (same token count)
    engine: str = "exact"
    attribution: bool = True  # also run attribution patching (total mode) and report its agreement with exact
    batch_size: int = 16  # clean prompts per batch (each carries one variant per component)
    min_prompts: int = 2  # fewer prompts with a same-length corruption than this is an error

    constraints: ClassVar[dict] = {
        "mode": Options(*MODES), "direction": Options(*DIRECTIONS), "sender_mean": Options(*SENDER_MEANS),
        "corruption_draw": Options(*CORRUPTION_DRAWS),
        "prompts": Options(*PROMPT_SETS), "aggregate": Options(*AGGREGATES), "n_bootstrap": RESAMPLES,
        "components": Options("heads", "mlp", "resid"), "layers": NON_NEGATIVE,
        "top_k": POSITIVE, "n_corruptions": POSITIVE, "engine": Options("exact", "naive", "attribution"),
        "batch_size": POSITIVE, "min_prompts": POSITIVE,
    }


# --------------------------------------------------------------------------- components
def select_components(cfg, kinds: Sequence[str], layers: Sequence[int] | None) -> list[Component]:
    """Components of ``kinds`` in ``layers``, checked against the model (errors are UserError)."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in COMPONENT_KINDS]
    if unknown or not kinds:
        raise UserError(f"--components: unknown {unknown or 'empty list'}; choose from {', '.join(COMPONENT_KINDS)}")
    if layers is None:
        layers = range(cfg.n_layers)
    layers = sorted(set(int(layer) for layer in layers))
    bad = [layer for layer in layers if not 0 <= layer < cfg.n_layers]
    if bad or not layers:
        raise UserError(f"--layers: {bad or 'empty list'} out of range; the model has layers 0..{cfg.n_layers - 1}")
    out = []
    for layer in layers:
        if "resid" in kinds:
            out.append(Component("resid", layer))
        if "heads" in kinds:
            out.extend(Component("head", layer, h) for h in range(cfg.n_heads))
        if "mlp" in kinds:
            out.append(Component("mlp", layer))
    return out


# --------------------------------------------------------------------------- the runs
@dataclass
class RunRecord:
    """End-position activations of one left-padded batch, [B, L, ...].

    ``head_out`` holds each head's write at the output projection, z[h] · W_O[h]
    (:meth:`ModelView.head_writes`) — before a post-attention norm, so that patching it and
    recomputing the norm of the sum is the intervention on the head's z (Gemma 3); elsewhere it is
    the head's write into the residual stream.
    """

    resid_pre: Tensor  # [B, L, d] at the end
    resid_mid: Tensor  # [B, L, d]
    mlp_out: Tensor  # [B, L, d]
    head_out: Tensor  # [B, L, H, d]
    resid_final: Tensor  # [B, d]

    def value(self, comp: Component) -> Tensor:
        """The component's value at the end position, [B, d]."""
        if comp.kind == "head":
            return self.head_out[:, comp.layer, comp.head]
        if comp.kind == "mlp":
            return self.mlp_out[:, comp.layer]
        return self.resid_pre[:, comp.layer]


@dataclass
class BaseRun:
    """The run that is patched: tokens, its end-position record and the cached earlier positions.

    ``prefix_kv`` holds, per layer, the keys and values [B, K, S-A, dh] of every position before
    the end — from the recorded run's ``trace(..., return_kv=True)``, reused by every patched
    variant (nothing at the end position changes them); :meth:`ModelView.forward_from` reads them.

    Under the whole-answer metric (``targets`` [B, A], A > 1) the rows carry the first A − 1
    scored tokens after the end (teacher forcing: ``Batch.with_targets``), and ``answer_resid``
    [B, A − 1, L + 1, d] holds the clean residual entering every layer (and the final residual,
    index L) at those positions: a patch at the end changes them only from the layer above it,
    where they join the patched end in :meth:`ModelView.forward_from`.
    """

    input_ids: Tensor
    attention_mask: Tensor
    answer_ids: Tensor  # [B] Y of the clean prompt (its first scored token)
    record: RunRecord
    prefix_kv: list[tuple[Tensor, Tensor]] = field(repr=False)
    targets: Tensor | None = None  # [B, A] the scored tokens (None: Y alone)
    answer_resid: Tensor | None = field(default=None, repr=False)  # [B, A − 1, L + 1, d]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_targets(self) -> int:
        return 1 if self.targets is None else self.targets.shape[1]

    def metric_positions(self) -> Tensor:
        """[B, A] the columns that predict the scored tokens: the end and the answer tokens after it."""
        S, A = self.input_ids.shape[1], self.n_targets
        return torch.arange(S - A, S, device=self.input_ids.device).expand(self.size, A)

    def with_answer(self, end: Tensor, layer: int) -> Tensor:
        """End-position residuals [B, C, d] entering ``layer`` (L: final) → [B, C, A, d] with the
        clean answer positions beside them; [B, C, d] unchanged when only Y is scored."""
        if self.answer_resid is None:
            return end
        rest = self.answer_resid[:, None, :, layer].expand(end.shape[0], end.shape[1], -1, -1)
        return torch.cat([end[:, :, None], rest], dim=2)

    def final_resid(self) -> Tensor:
        """The run's own final residual at the metric positions, [B, 1, (A,) d] (recall_pi's input)."""
        return self.with_answer(self.record.resid_final[:, None], self.record.resid_pre.shape[1])

    def sliced(self, sl: slice) -> "BaseRun":
        return BaseRun(self.input_ids[sl], self.attention_mask[sl], self.answer_ids[sl], _slice_record(self.record, sl),
                       [(k[sl], v[sl]) for k, v in self.prefix_kv],
                       None if self.targets is None else self.targets[sl],
                       None if self.answer_resid is None else self.answer_resid[sl])


RECORDED = ("resid_pre", "resid_mid", "mlp_out", "z", "resid_final")


def _end_record(view: ModelView, t, weight: Tensor | None = None) -> RunRecord:
    """The RunRecord of a trace recorded at the end position ([B, 1, ...], or [B, n, 1, ...]
    averaged over n with ``weight`` [B, n])."""
    def end(x: Tensor) -> Tensor:
        if weight is None:
            return x[:, 0]
        x = x[:, :, 0]
        return (x * weight.reshape(*weight.shape, *([1] * (x.dim() - 2)))).sum(1)

    z = t.z[:, 0] if weight is None else t.z[:, :, 0]  # [B, (n,) L, H, dh]
    heads = torch.stack([view.head_writes(layer, z[..., layer, :, :]) for layer in range(view.cfg.n_layers)], dim=-3)
    return RunRecord(
        resid_pre=end(t.resid_pre),
        resid_mid=end(t.resid_mid),
        mlp_out=end(t.mlp_out),
        head_out=heads if weight is None else end(heads[:, :, None]),  # each corruption's heads, then their mean
        resid_final=end(t.resid_final),
    )


@torch.no_grad()
def record_run(view: ModelView, input_ids: Tensor, attention_mask: Tensor, answer_ids: Tensor, prefix: bool,
               targets: Tensor | None = None) -> BaseRun | RunRecord:
    """One traced forward: the end-position record (and, with ``prefix``, the earlier positions' keys/values).

    ``targets`` [B, A] (A > 1, the whole-answer metric): the rows end with the first A − 1 scored
    tokens (``Batch.with_targets``); the end is column S − A and the answer positions' residuals
    are recorded too (``BaseRun.answer_resid``). Then a :class:`BaseRun` is returned even without ``prefix``.
    """
    S = input_ids.shape[1]
    A = 1 if targets is None else targets.shape[1]
    positions = None if A == 1 else torch.arange(S - A, S, device=view.device).expand(input_ids.shape[0], A)
    t = view.trace(input_ids, attention_mask, positions=positions, record=RECORDED, return_kv=prefix)
    rec = _end_record(view, t)
    if not prefix and A == 1:
        return rec
    answer_resid = None
    if A > 1:  # [B, A − 1, L + 1, d]: r[0..L−1] entering each layer, then the final residual
        answer_resid = torch.cat([t.resid_pre[:, 1:], t.resid_final[:, 1:, None]], dim=2)
    return BaseRun(
        input_ids=input_ids.to(view.device),
        attention_mask=attention_mask.to(view.device),
        answer_ids=answer_ids.to(view.device),
        record=rec,
        prefix_kv=[(k[:, :, : S - A].contiguous(), v[:, :, : S - A].contiguous()) for k, v in t.kv] if prefix else [],
        targets=None if A == 1 else targets.to(view.device),
        answer_resid=answer_resid,
    )


def recall_pi(view: ModelView, resid_final: Tensor, answer_ids: Tensor) -> Tensor:
    """π(Y) of end-position residuals [B, C, d] (answer_ids [B]) without the full vocabulary.

    logit[Y] − mean logit = N_f(r) · (W_U[:, Y] − mean column) + (b_U[Y] − mean b_U), unless a
    final softcap makes the logits non-linear in N_f(r) (then the full logits are computed, a few
    components at a time: B × c × V ≤ :data:`LOGIT_ELEMENTS`, so their memory does not grow with C or V).

    The whole-answer metric: residuals [B, C, A, d] at the A metric positions and ``answer_ids``
    [B, A] the scored tokens give π(answer) = Σ_t π(y_t), [B, C] (:func:`recallscope.lens.answer_metric`).
    """
    if resid_final.dim() == 4:
        B, C, A, d = resid_final.shape
        flat = resid_final.permute(0, 2, 1, 3).reshape(B * A, C, d)  # each (row, position) as a row of its own
        return recall_pi(view, flat, answer_ids.reshape(B * A)).reshape(B, A, C).sum(1)
    x = view.final_norm(resid_final)
    if view.cfg.final_softcap:
        step = max(1, LOGIT_ELEMENTS // (x.shape[0] * view.cfg.d_vocab))
        pis = []
        for i in range(0, x.shape[1], step):
            logits = view.unembed(x[:, i : i + step])
            pis.append(recall_metric(logits, answer_ids[:, None].expand(logits.shape[:-1])))
        return torch.cat(pis, dim=1)
    W_U = view.weights.W_U
    direction = W_U[:, answer_ids].T - W_U.mean(dim=1)  # [B, d]
    pi = torch.einsum("bcd,bd->bc", x, direction)
    b_U = view.weights.b_U
    if b_U is not None:
        pi = pi + (b_U[answer_ids] - b_U.mean())[:, None]
    return pi


def end_layer(
    view: ModelView,
    layer: int,
    resid: Tensor,
    base: BaseRun,
    head_delta: Tensor | None = None,
    mlp_delta: Tensor | None = None,
) -> Tensor:
    """Layer ``layer`` at the end position only, for C variants per prompt: [B, C, d] → [B, C, d]
    (under the whole-answer metric the end and the A − 1 answer positions after it: [B, C, A, d] → [B, C, A, d]).

    :meth:`ModelView.forward_from` with the base run's cached keys/values of the earlier
    positions (no end-position patch changes them). ``head_delta`` [B, C, H, d] / ``mlp_delta``
    [B, C, d] are added to the heads' writes (before a post-attention norm, which is then
    recomputed) / the MLP output at the end position — attribution patching differentiates through them.
    """
    edits = {}
    if head_delta is not None:
        edits[("head_out", layer)] = lambda heads: _at_end(heads, head_delta[:, :, None])
    if mlp_delta is not None:
        edits[("mlp_out", layer)] = lambda mlp: _at_end(mlp, mlp_delta[:, :, None])
    if resid.dim() == 4:
        out = view.forward_from(resid, layer, base.attention_mask, base.prefix_kv, stop=layer + 1,
                                positions=base.metric_positions(), edits=edits)
        return out.resid_final
    out = view.forward_from(resid[:, :, None], layer, base.attention_mask, base.prefix_kv, stop=layer + 1, edits=edits)
    return out.resid_final[:, :, 0]


def _at_end(x: Tensor, delta: Tensor) -> Tensor:
    """``x`` [B, C, T, ...] with ``delta`` [B, C, 1, ...] added at the end, its first position."""
    if x.shape[2] == 1:
        return x + delta
    return torch.cat([x[:, :, :1] + delta, x[:, :, 1:]], dim=2)


@torch.no_grad()
def corrupted_mean(view: ModelView, base: BaseRun, corrupt_ids: Tensor, weight: Tensor) -> RunRecord:
    """The weighted mean over corruptions of their end-position record, [B, ...].

    ``corrupt_ids`` [B, n, S] are the corruptions of each base row, aligned with it (same
    length and padding, only the subject tokens differ); ``weight`` [B, n] sums to 1 per row.
    Positions before the first column where any corruption differs are the base run's, so only
    the suffix from the subject on is computed (:meth:`ModelView.forward_from`, the n corruptions
    as variants), attending over the base run's cached keys and values — in k-shot prompts the
    demonstrations before the subject are never recomputed.
    """
    B, n, S = corrupt_ids.shape  # S: the prompts' own tokens (the base rows may carry answer tokens after them)
    corrupt_ids = corrupt_ids.to(view.device)
    mask = base.attention_mask[:, :S]
    differs = (corrupt_ids != base.input_ids[:, None, :S]).any(dim=(0, 1)).nonzero()
    lo = int(differs[0]) if len(differs) else S - 1
    lo = min(lo, S - 1)
    T = S - lo
    positions = position_ids_from_mask(mask)[:, lo:]
    resid = view.embed(corrupt_ids[:, :, lo:].reshape(B * n, T), positions.repeat_interleave(n, dim=0)).reshape(B, n, T, -1)
    past = [(k[:, :, :lo], v[:, :, :lo]) for k, v in base.prefix_kv]
    t = view.forward_from(resid, 0, mask, past, record=RECORDED)
    return _end_record(view, t, weight.to(device=view.device, dtype=view.dtype))


# --------------------------------------------------------------------------- engines
@torch.no_grad()
def exact_pi(view: ModelView, base: BaseRun, patch: RunRecord, components: Sequence[Component]) -> Tensor:
    """π of every patched variant, [B, C], recomputing only the end position above each patch
    (and, under the whole-answer metric, the answer positions after it)."""
    return recall_pi(view, exact_final_resid(view, base, patch, components), _scored(base))


@torch.no_grad()
def exact_final_resid(view: ModelView, base: BaseRun, patch: RunRecord, components: Sequence[Component]) -> Tensor:
    """The final end-position residual of every patched variant, [B, C, d] (the whole-answer
    metric: at the end and the answer positions, [B, C, A, d])."""
    cfg = view.cfg
    rec = base.record
    B = base.size
    by_entry: dict[int, list[int]] = {}
    for i, comp in enumerate(components):
        by_entry.setdefault(comp.entry_layer, []).append(i)
    order: list[int] = []
    state = base.with_answer(rec.resid_pre.new_zeros(B, 0, cfg.d_model), 0)
    # the progress bar moves with the work done: a layer's cost grows with the variants that run through it
    work = sum(sum(len(v) for e, v in by_entry.items() if e <= layer) for layer in range(cfg.n_layers))
    done = 0
    for layer in range(cfg.n_layers + 1):
        entering = by_entry.get(layer, [])
        if entering:
            entry = _entry_states(view, rec, patch, [components[i] for i in entering])
            state = torch.cat([state, base.with_answer(entry, layer)], dim=1)
            order.extend(entering)
        if layer < cfg.n_layers and state.shape[1]:
            state = end_layer(view, layer, state, base)
            done += state.shape[1]
            progress_step(done, work)
    out = torch.empty_like(state)
    out[:, order] = state
    return out


def _entry_states(view: ModelView, rec: RunRecord, patch: RunRecord, comps: Sequence[Component]) -> Tensor:
    """The patched end-position residuals entering the layer these components share, [B, C, d].

    RES{l}: the corrupted mean of r[l]. MLP{l}: r_mid[l] with the MLP's write swapped. A head
    L{l}H{h}: its write at the output projection swapped — with a post-attention norm (Gemma 3)
    the norm of the patched sum is recomputed, so the variant is the model with the head's z
    replaced — then layer l's MLP rerun on the new r_mid[l] (in parallel-residual models the MLP
    reads r[l], untouched by the patch) — one MLP call for all the heads of a layer.
    """
    out: list[Tensor | None] = [None] * len(comps)
    heads: dict[int, list[int]] = {}
    for i, comp in enumerate(comps):
        if comp.kind == "resid":
            out[i] = patch.resid_pre[:, comp.layer]
        elif comp.kind == "mlp":
            out[i] = rec.resid_mid[:, comp.layer] + patch.mlp_out[:, comp.layer]
        else:
            heads.setdefault(comp.layer, []).append(i)
    for layer, idx in heads.items():
        hs = [comps[i].head for i in idx]
        if view.cfg.post_attn_norm:
            raw = view.attn_raw(layer, None, heads=rec.head_out[:, layer])  # the clean projection output
            patched = raw[:, None] + patch.head_out[:, layer, hs] - rec.head_out[:, layer, hs]  # [B, c, d]
            resid_mid = rec.resid_pre[:, layer, None] + view.post_attn(layer, patched)
        else:
            resid_mid = rec.resid_mid[:, layer, None] + patch.head_out[:, layer, hs] - rec.head_out[:, layer, hs]
        mlp = rec.mlp_out[:, layer, None].expand_as(resid_mid) if view.cfg.parallel_residual else view.mlp(layer, resid_mid)
        for j, i in enumerate(idx):
            out[i] = resid_mid[:, j] + mlp[:, j]
    return torch.stack(out, dim=1)


def _scored(base: BaseRun) -> Tensor:
    """What recall_pi scores: Y [B], or the scored tokens [B, A] under the whole-answer metric."""
    return base.answer_ids if base.targets is None else base.targets


@torch.no_grad()
def naive_pi(view: ModelView, base: BaseRun, patch: RunRecord, components: Sequence[Component]) -> Tensor:
    """π of every patched variant, [B, C], with one full traced forward per component (the reference).

    Under the whole-answer metric each forward runs the rows with their answer tokens, the patch
    at the end column (S − A), and scores the last A columns."""
    out = []
    A = base.n_targets
    for comp in components:
        value = patch.value(comp)
        site = {"head": "head_out", "mlp": "mlp_out", "resid": "resid_pre"}[comp.kind]
        edits = {(site, comp.layer): _set_end(value, comp.head, -A)}
        if A == 1:
            t = view.trace(base.input_ids, base.attention_mask, edits=edits)
            out.append(recall_metric(t.logits[:, 0], base.answer_ids))
        else:
            t = view.trace(base.input_ids, base.attention_mask, positions=base.metric_positions(), edits=edits)
            out.append(answer_metric(t.logits, base.targets))
    return torch.stack(out, dim=1)


def _set_end(value: Tensor, head: int | None, column: int = -1) -> Callable[[Tensor], Tensor]:
    """An edit of a [B, S, ...] site: ``column`` (the end) := value (of head ``head``)."""
    def edit(x: Tensor) -> Tensor:
        x = x.clone()
        if head is not None:
            x[:, column, head] = value
        else:
            x[:, column] = value
        return x

    return edit


def attribution_pi(view: ModelView, base: BaseRun, patch: RunRecord, components: Sequence[Component]) -> Tensor:
    """First-order estimate of π of every patched variant, [B, C], from one backward pass."""
    rec = base.record
    B, L, H, d = rec.head_out.shape
    with torch.enable_grad():
        resid_deltas = torch.zeros(B, L, d, dtype=view.dtype, device=view.device, requires_grad=True)
        head_deltas = torch.zeros(B, L, H, d, dtype=view.dtype, device=view.device, requires_grad=True)
        mlp_deltas = torch.zeros(B, L, d, dtype=view.dtype, device=view.device, requires_grad=True)
        state = base.with_answer(rec.resid_pre[:, None, 0], 0)  # [B, 1, (A,) d]
        for layer in range(L):
            delta = resid_deltas[:, None, layer]
            state = state + delta if state.dim() == 3 else _at_end(state, delta[:, :, None])
            state = end_layer(view, layer, state, base, head_deltas[:, None, layer], mlp_deltas[:, None, layer])
        pi = recall_pi(view, state, _scored(base))[:, 0]
        pi.sum().backward()
    pi_clean = pi.detach()
    grads = {"resid": resid_deltas.grad, "head": head_deltas.grad, "mlp": mlp_deltas.grad}
    out = []
    for comp in components:
        delta = patch.value(comp) - rec.value(comp)
        g = grads[comp.kind][:, comp.layer, comp.head] if comp.kind == "head" else grads[comp.kind][:, comp.layer]
        out.append(pi_clean + (delta * g).sum(-1))
    return torch.stack(out, dim=1)


@torch.no_grad()
def path_exact_pi(view: ModelView, base: BaseRun, patch: RunRecord, components: Sequence[Component]) -> Tensor:
    """π of every path-patched variant (every head frozen), [B, C]: ``path_patching.path_final_resid``.

    Under the whole-answer metric the answer positions keep their clean residual: a patched end
    reaches them only through attention, and path patching freezes every head (so only the first
    scored token's π changes; :func:`path_naive_pi` computes the same with every position run)."""
    end = path_final_resid(view, base.record, patch, components)
    return recall_pi(view, base.with_answer(end, view.cfg.n_layers), _scored(base))


@torch.no_grad()
def path_naive_pi(view: ModelView, base: BaseRun, patch: RunRecord, components: Sequence[Component]) -> Tensor:
    """π of every path-patched variant, one full frozen-heads forward each: ``path_patching.frozen_heads_pi``."""
    return frozen_heads_pi(view, base.input_ids, base.attention_mask, base.answer_ids, patch, components, base.targets)


ENGINE_FUNCTIONS = {"exact": exact_pi, "naive": naive_pi, "attribution": attribution_pi}
PATH_ENGINE_FUNCTIONS = {"exact": path_exact_pi, "naive": path_naive_pi}


# --------------------------------------------------------------------------- preparing the batches
@dataclass
class PatchBatch:
    """One batch of prompts: the run that is patched, the values patched in, π references."""

    indices: list[int]  # prompt indices (into the filtered prompt set)
    base: BaseRun
    patch: RunRecord
    pi_clean: Tensor  # [B] π of the clean prompt
    pi_base: Tensor  # [B] π of the unpatched base run (clean in noise mode, corrupted in denoise)

    def effect_pct(self, pi_patched: Tensor, direction: str) -> Tensor:
        """[B, C] per-prompt effect (see the module docstring for both directions)."""
        scale = self.pi_clean if direction == "noise" else self.pi_clean - self.pi_base
        return 100.0 * (pi_patched - self.pi_base[:, None]) / scale[:, None]


@dataclass
class Prepared:
    prompts: PromptSet  # the clean prompts that have a corruption
    batches: list[PatchBatch]
    n_dropped: int  # clean prompts without any same-length corruption
    n_corruptions: list[int]  # per kept prompt


def with_corruptions(prompts: PromptSet, tokenizer, n_corruptions: int, min_prompts: int) -> tuple[PromptSet, list[list[Prompt]], int]:
    """Keep the prompts that have at least one same-length corruption (UserError when too few do)."""
    if n_corruptions < 1:
        raise UserError(f"patch.n_corruptions must be >= 1, got {n_corruptions}")
    excluded: dict[str, int] = {}  # reason -> corrupted prompts left out
    found = [corruptions(p, prompts, tokenizer, limit=n_corruptions, excluded=excluded) for p in prompts.prompts]
    keep = [bool(c) for c in found]
    kept = dataclasses.replace(prompts.subset(keep, reason="no_same_length_corruption"), corruptions_excluded=excluded)
    n_dropped = len(prompts) - len(kept)
    if len(kept) < max(1, min_prompts):
        raise UserError(
            f"patch needs at least {max(1, min_prompts)} prompts with a same-length corruption; "
            f"{len(kept)} of {len(prompts)} known prompts of {prompts.relation.name!r} have one"
            + "".join(f"; corruptions left out: {k}: {v}" for k, v in sorted(excluded.items()))
        )
    return kept, [c for c, k in zip(found, keep, strict=True) if k], n_dropped


def prepare(model: Model, prompts: PromptSet, config: PatchConfig, progress: bool = False) -> Prepared:
    """The clean and corrupted runs every engine starts from, all batches held at once."""
    kept, batches_, n_dropped, n_corr = prepare_batches(model, prompts, config, progress)
    return Prepared(kept, list(batches_), n_dropped, n_corr)


def engine_view(view: ModelView) -> ModelView:
    """The view the engines compute with: the model's own, or for a half-precision model
    (bfloat16, float16) a float32 copy of its weights (2 bytes more per parameter, for the stage).

    Why float32: in bfloat16 the exact and naive engines disagree by 6–8.5 points (the naive
    loop against itself with another batch shape: 1.3–1.8) and both sit 5–12 points off the
    float32 effects on smollm2-135m (issue 16): bfloat16 keeps 8 significant bits in every
    activation, and π(Y) is a small difference of large residual-stream sums. Effects are a
    property of the model's function; computing them in float32 from the half-precision weights
    measures that function with float32 rounding (the same weights, activations not rounded to
    8 bits), and the engines then agree to float32 rounding (tested).
    """
    if view.dtype in (torch.bfloat16, torch.float16):
        return ModelView(view.cfg, view.weights.to(dtype=torch.float32))
    return view


def prepare_batches(model: Model, prompts: PromptSet, config: PatchConfig, progress: bool = False,
                    view: ModelView | None = None):
    """(kept prompts, an iterator of prepared batches, n dropped, corruptions per prompt).

    Each batch is prepared when the iterator reaches it, so a caller that drops a batch after
    using it holds one batch of cached keys/values at a time. ``view``: the view to compute with
    (default :func:`engine_view` of the model's).
    """
    check_config(config, model)
    view = view if view is not None else engine_view(model.view)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    mean = None
    if config.sender_mean != "per_prompt":
        if len(prompts) < max(1, config.min_prompts):
            raise UserError(f"patch needs at least {max(1, config.min_prompts)} prompts; {prompts.relation.name!r} has {len(prompts)}")
        kept, n_dropped = prompts, 0
        mean, n_mean = dataset_sender_mean(view, model.tokenizer, prompts, config, pad_id)
        found = [[]] * len(kept)
        n_corr = [n_mean] * len(kept)
    else:
        kept, found, n_dropped = with_corruptions(prompts, model.tokenizer, config.n_corruptions, config.min_prompts)
        n_corr = [len(c) for c in found]
    groups = list(batches(kept.prompts, pad_id, config.batch_size))

    def prepared(indices: list[int]) -> Iterator[PatchBatch]:
        """The batch of these prompts; on CUDA out-of-memory, its two halves (recursively)."""
        try:
            batch = make_batch([kept.prompts[i] for i in indices], pad_id)
            pb = _prepare_batch(view, pad_id, indices, batch, [found[i] for i in indices], config, mean)
        except torch.cuda.OutOfMemoryError:
            if len(indices) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(indices) // 2
            yield from prepared(indices[:half])
            yield from prepared(indices[half:])
            return
        yield pb

    def each() -> Iterator[PatchBatch]:
        for indices, _ in track(groups, "patch", total=len(kept), enabled=progress, unit="prompts", weight=lambda g: len(g[0])):
            yield from prepared(list(indices))

    return kept, each(), n_dropped, n_corr


# --------------------------------------------------------------------------- the senders' values
@dataclass(frozen=True)
class DatasetMean:
    """A dataset mean of the corrupted runs, as the rows each clean prompt reads.

    ``record`` holds P mean records ([P, L, ...]); ``positions`` names the absolute position
    of each row (the authors' mean, :func:`dataset_mean_by_position`), or is None for one mean
    read by every prompt (recallscope's own-end mean, :func:`dataset_mean`; P = 1).
    """

    record: RunRecord
    positions: tuple[int, ...] | None = None

    def values(self, prompts: Sequence[Prompt]) -> RunRecord:
        """The senders' values patched into these clean prompts, [B, L, ...]: the mean at each
        prompt's end index — its own last token, ``n_tokens − 1``, in a right-padded row (see
        :func:`dataset_mean_by_position`) — or the one own-end mean."""
        rows = [0] * len(prompts) if self.positions is None else [self.positions.index(p.n_tokens - 1) for p in prompts]
        index = torch.tensor(rows, device=self.record.resid_pre.device)
        return RunRecord(*(getattr(self.record, f.name)[index] for f in dataclasses.fields(RunRecord)))


@torch.no_grad()
def dataset_mean(view: ModelView, prompts: Sequence[Prompt], pad_id: int, batch_size: int) -> DatasetMean:
    """recallscope's own-end dataset mean: each corrupted prompt read at *its own* end position,
    averaged over ``prompts`` ([1, L, ...], read by every clean prompt).

    Why not the authors' average (:func:`dataset_mean_by_position`): theirs averages the
    right-padded corrupted texts at each absolute position and reads the clean prompt's end
    index, so where prompt lengths differ (templates of different lengths, subjects of
    different token counts, k-shot demonstrations) the value patched in mixes end positions
    with subject tokens, answers and end-of-text padding of the other prompts. Here every
    corrupted prompt contributes its end position, the position the patch replaces. Where every
    prompt has the same length the two are equal (tested). Batches are left-padded with an
    attention mask (:func:`record_run`).
    """
    total: list[Tensor] | None = None
    n = 0
    for _, batch in batches(list(prompts), pad_id, batch_size):
        rec = record_run(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), prefix=False)
        sums = [getattr(rec, f.name).sum(0, keepdim=True) for f in dataclasses.fields(RunRecord)]
        total = sums if total is None else [a + b for a, b in zip(total, sums, strict=True)]
        n += batch.input_ids.shape[0]
    return DatasetMean(RunRecord(*(t / n for t in total)))


def end_of_text_id(tokenizer) -> int:
    """The token the authors' code pads with: the tokenizer's end-of-sequence token (GPT-2's
    ``<|endoftext|>``; FactDataset sets ``pad_token = eos_token``), else its padding token.
    Raises UserError when the tokenizer has neither."""
    for token_id in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token_id is not None:
            return int(token_id)
    raise UserError("patch.sender_mean=dataset_by_position pads with the end-of-text token; the tokenizer has no eos or pad token")


@torch.no_grad()
def dataset_mean_by_position(
    view: ModelView, tokenizer, corrupted: Sequence[Prompt], read_at: Sequence[int], batch_size: int
) -> DatasetMean:
    """The authors' dataset mean: the corrupted texts averaged at each absolute position, [P, L, ...].

    Their ``path_patching`` (easy_transformer/fact_utils.py) caches the sender over the
    corrupted dataset ``D_new`` — FactDataset texts *with the answer appended* ("… of Spain is
    Paris", :func:`~recallscope.tasks.prompts.answer_appended_ids`), tokenised with
    ``padding=True`` (right padding, the end-of-text token as pad: :func:`end_of_text_id`) and
    run as ``model(D_new.toks)`` with *no attention mask*, so the padding runs as real tokens —
    and patches in ``torch.mean(sender_cache[hook_name], dim=0)``: the mean over prompts at each
    absolute position, read at each clean prompt's end index (``D_new.word_idx`` is the clean
    dataset's: ``gen_flipped_prompts`` passes ``manual_word_idx=self.word_idx``). This function
    computes exactly that, as one batched forward of the corrupted dataset (in chunks of
    ``batch_size`` rows, each padded to the whole dataset's width, so every row is the row of
    their one batch), recorded only at the positions in ``read_at``.

    Their end index is the text's length − 2 (``get_end_idxs`` with ``name_tok_len=1``): the
    prompt's last token when the answer is one token. Where the tokenizer splits the answer
    that index falls inside the answer; ``read_at`` here is each clean prompt's own last token
    (``n_tokens − 1``), the position the patch replaces, whatever the answer's length. Their
    batch is as wide as the longest corrupted text; where a clean end index lies beyond it
    (their indexing would fail) the rows are padded further, which changes no earlier position.

    Why it differs from recallscope's own-end mean (:func:`dataset_mean`): with prompts of
    different lengths the average at position p mixes one prompt's end with another's subject,
    answer or padding; with prompts of one length the two are equal (tested).

    Returns a :class:`DatasetMean` whose rows are the positions in ``read_at`` (sorted, unique).
    Raises UserError when the tokenizer has no end-of-text token.
    """
    eot = end_of_text_id(tokenizer)
    texts = [answer_appended_ids(tokenizer, p) for p in corrupted]
    positions = sorted({int(i) for i in read_at})
    width = max(max(len(t) for t in texts), positions[-1] + 1)
    ids = torch.full((len(texts), width), eot, dtype=torch.long)
    for row, t in enumerate(texts):
        ids[row, : len(t)] = torch.tensor(t)
    total: list[Tensor] | None = None
    for start in range(0, len(texts), batch_size):
        chunk = ids[start : start + batch_size]
        at = torch.tensor(positions, device=view.device).expand(chunk.shape[0], len(positions))
        t = view.trace(chunk, torch.ones_like(chunk), positions=at, record=RECORDED)  # no mask: padding is read
        heads = torch.stack([view.head_writes(layer, t.z[..., layer, :, :]) for layer in range(view.cfg.n_layers)], dim=-3)
        values = (t.resid_pre, t.resid_mid, t.mlp_out, heads, t.resid_final)  # [b, P, ...] in RunRecord's order
        sums = [x.double().sum(0) for x in values]
        total = sums if total is None else [a + b for a, b in zip(total, sums, strict=True)]
    return DatasetMean(RunRecord(*((x / len(texts)).to(view.dtype) for x in total)), tuple(positions))


@torch.no_grad()
def sender_values(view: ModelView, base: BaseRun, batch, corrupt: list[list[Prompt]], mean: DatasetMean | None) -> RunRecord:
    """What replaces each sender in the noising run, [B, L, ...] (the one place the engines' patched values come from).

    ``mean`` given (``sender_mean`` dataset or dataset_by_position, computed once for the whole
    prompt set by :func:`dataset_sender_mean`): its rows at each clean prompt's end index.
    Otherwise (``per_prompt``): the mean over each prompt's own same-length corruptions
    (:func:`corrupted_mean`).
    """
    if mean is not None:
        return mean.values(batch.prompts)
    ids, weight = _aligned_corruptions(batch, corrupt)
    return corrupted_mean(view, base, ids, weight)


def dataset_sender_mean(view: ModelView, tokenizer, prompts: PromptSet, config: PatchConfig, pad_id: int) -> tuple[DatasetMean, int]:
    """The dataset mean ``config.sender_mean`` names, over one swapped-subject corruption per
    prompt drawn as ``config.corruption_draw`` says; (the mean, how many corrupted prompts it averages).

    One extra batched forward of the corrupted dataset, shared by every sender and every batch
    of clean prompts. Raises UserError when no prompt has a subject to swap in.
    """
    corrupted = swapped_subject_prompts(prompts, tokenizer, draw=config.corruption_draw)
    if not corrupted:
        raise UserError(f"patch.sender_mean={config.sender_mean}: no prompt of {prompts.relation.name!r} has another subject to swap in")
    if config.sender_mean == "dataset_by_position":
        read_at = [p.n_tokens - 1 for p in prompts.prompts]
        return dataset_mean_by_position(view, tokenizer, corrupted, read_at, config.batch_size), len(corrupted)
    return dataset_mean(view, corrupted, pad_id, config.batch_size), len(corrupted)


@torch.no_grad()
def _prepare_batch(view: ModelView, pad_id: int, indices, batch, corrupt: list[list[Prompt]], config: PatchConfig,
                   mean: DatasetMean | None = None) -> PatchBatch:
    answers = batch.answer_ids().to(view.device)
    # the whole-answer metric: the rows carry their first A − 1 scored tokens (teacher forcing)
    targets = batch.target_ids() if batch.n_targets > 1 else None
    if config.direction == "noise":
        # the path engine with a dataset mean needs no cached keys/values; the total-effect
        # engine and the per-prompt corrupted mean (computed over the clean prefix) do
        prefix = config.mode == "total" or mean is None
        ids, mask = batch.with_targets()
        base = record_run(view, ids, mask, answers, prefix=prefix, targets=targets)
        if not isinstance(base, BaseRun):
            base = BaseRun(ids.to(view.device), mask.to(view.device), answers, base, [])
        patch = sender_values(view, base, batch, corrupt, mean)
        pi_clean = recall_pi(view, base.final_resid(), _scored(base))[:, 0]
        pi_base = pi_clean
    else:  # the corrupted run scored on the clean answer (its rows carry the clean answer's tokens)
        first = [cs[0] for cs in corrupt]
        fb = make_batch(first, pad_id)
        base = record_run(view, *fb.with_targets(), answers, prefix=True, targets=targets)
        clean = record_run(view, *batch.with_targets(), answers, prefix=False, targets=targets)
        patch = clean.record if isinstance(clean, BaseRun) else clean
        clean_final = clean.final_resid() if isinstance(clean, BaseRun) else clean.resid_final[:, None]
        pi_clean = recall_pi(view, clean_final, _scored(base))[:, 0]
        pi_base = recall_pi(view, base.final_resid(), _scored(base))[:, 0]
    return PatchBatch(list(indices), base, patch, pi_clean, pi_base)


def _aligned_corruptions(batch, corrupt: list[list[Prompt]]) -> tuple[Tensor, Tensor]:
    """Corruption tokens [B, n, S] laid out like their clean row, and mean weights [B, n].

    Rows with fewer than n corruptions repeat their first one with weight 0.
    """
    B, S = batch.input_ids.shape
    n = max(len(cs) for cs in corrupt)
    ids = batch.input_ids[:, None].repeat(1, n, 1)
    weight = torch.zeros(B, n, dtype=torch.float64)  # cast to the view's dtype where used: 1/n in float32 is off by 1.5e-8
    for row, cs in enumerate(corrupt):
        pad = int(batch.pad[row])
        for j in range(n):
            ids[row, j, pad:] = torch.tensor(cs[j if j < len(cs) else 0].input_ids)
        weight[row, : len(cs)] = 1.0 / len(cs)
    return ids, weight


def check_config(config: PatchConfig, model: Model) -> None:
    for name, choices in (("mode", MODES), ("direction", DIRECTIONS), ("sender_mean", SENDER_MEANS),
                          ("corruption_draw", CORRUPTION_DRAWS), ("prompts", PROMPT_SETS), ("aggregate", AGGREGATES),
                          ("engine", ENGINES)):
        value = getattr(config, name)
        if value not in choices:
            raise UserError(f"patch.{name} must be one of {', '.join(choices)}, got {value!r}")
    if config.mode == "path" and config.engine == "attribution":
        raise UserError("patch.engine=attribution estimates the total effect; path mode has the engines exact and naive")
    if config.direction == "denoise" and config.sender_mean != "per_prompt":
        raise UserError("patch.direction=denoise patches each prompt's own clean value; it takes patch.sender_mean=per_prompt")
    if config.corruption_draw != "other_subject" and config.sender_mean == "per_prompt":
        raise UserError(
            f"patch.corruption_draw={config.corruption_draw} draws one swapped subject per prompt for a dataset mean; "
            "it takes patch.sender_mean=dataset or dataset_by_position (per_prompt uses same-length corruptions)"
        )
    if config.n_bootstrap < 1:
        raise UserError(f"patch.n_bootstrap must be >= 1, got {config.n_bootstrap}")
    if config.batch_size < 1:
        raise UserError(f"patch.batch_size must be >= 1, got {config.batch_size}")
    if config.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {config.top_k}")
    select_components(model.cfg, config.components, config.layers)


def run_engine(view: ModelView, prepared: Prepared, components: Sequence[Component], engine: str, direction: str,
               mode: str = "total") -> np.ndarray:
    """Per-prompt effects [n_prompts, C] of ``engine`` (in ``mode``) over every prepared batch."""
    return effects_from_pi(prepared, engine_pi(view, prepared, components, engine, mode), direction)


def engine_pi(view: ModelView, prepared: Prepared, components: Sequence[Component], engine: str, mode: str = "total") -> list[Tensor]:
    """π of every patched variant, one [B, C] tensor per prepared batch."""
    return [batch_pi(view, pb, components, engine, mode) for pb in prepared.batches]


def batch_pi(view: ModelView, pb: PatchBatch, components: Sequence[Component], engine: str, mode: str = "total") -> Tensor:
    """π of every patched variant of one prepared batch, [B, C] (CUDA out-of-memory: halves)."""
    fn = (PATH_ENGINE_FUNCTIONS if mode == "path" else ENGINE_FUNCTIONS)[engine]
    return _with_oom_retry(lambda b: fn(view, b.base, b.patch, components), pb)


def effects_from_pi(prepared: Prepared, pis: Sequence[Tensor], direction: str) -> np.ndarray:
    """Per-prompt effects [n_prompts, C] from the per-batch π of ``engine_pi``."""
    effects = np.zeros((len(prepared.prompts), pis[0].shape[1] if pis else 0))
    for pb, pi in zip(prepared.batches, pis, strict=True):
        effects[pb.indices] = pb.effect_pct(pi, direction).double().cpu().numpy()
    return effects


def gather_pi(prepared: Prepared, pis: Sequence[Tensor]) -> np.ndarray:
    """The per-batch π of ``engine_pi`` as one [n_prompts, C] array in prompt order."""
    out = np.zeros((len(prepared.prompts), pis[0].shape[1] if pis else 0))
    for pb, pi in zip(prepared.batches, pis, strict=True):
        out[pb.indices] = pi.double().cpu().numpy()
    return out


def _with_oom_retry(fn: Callable[[PatchBatch], Tensor], pb: PatchBatch) -> Tensor:
    """Run ``fn`` on the batch; on CUDA out-of-memory, on halves of it (recursively)."""
    try:
        return fn(pb)
    except torch.cuda.OutOfMemoryError:
        if pb.base.size == 1:
            raise
        torch.cuda.empty_cache()
        half = pb.base.size // 2
        return torch.cat([_with_oom_retry(fn, _slice_batch(pb, sl)) for sl in (slice(0, half), slice(half, None))])


def _slice_batch(pb: PatchBatch, sl: slice) -> PatchBatch:
    return PatchBatch(pb.indices[sl], pb.base.sliced(sl), _slice_record(pb.patch, sl), pb.pi_clean[sl], pb.pi_base[sl])


def _slice_record(r: RunRecord, sl: slice) -> RunRecord:
    return RunRecord(*(getattr(r, f.name)[sl] for f in dataclasses.fields(RunRecord)))


# --------------------------------------------------------------------------- result
def top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> int:
    """How many of the top-k components by |effect| two effect vectors share."""
    k = min(k, len(a))
    return len(set(np.argsort(-np.abs(a))[:k]) & set(np.argsort(-np.abs(b))[:k]))


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class PatchResult(ResultView):
    stage = "patch"

    prompts: PromptSet
    components: tuple[Component, ...]
    effects: np.ndarray = field(repr=False)  # [n_prompts, C] per-prompt effect (%) of the main engine
    pi_clean: np.ndarray = field(repr=False)  # [n_prompts]
    pi_base: np.ndarray = field(repr=False)  # [n_prompts]
    config: PatchConfig = PatchConfig()
    n_layers: int = 0
    n_heads: int = 0
    n_dropped: int = 0
    n_corruptions: tuple[int, ...] = ()
    attribution_effects: np.ndarray | None = field(default=None, repr=False)
    engine_seconds: float = 0.0
    attribution_seconds: float | None = None
    pi_patched: np.ndarray | None = field(default=None, repr=False)  # [n_prompts, C]

    def _pi_patched(self) -> np.ndarray:
        if self.pi_patched is not None:
            return self.pi_patched
        return self.pi_base[:, None] + self.effects * self._scale()[:, None] / 100.0

    def _scale(self) -> np.ndarray:
        return self.pi_clean if self.config.direction == "noise" else self.pi_clean - self.pi_base

    def mean_of_ratios(self) -> np.ndarray:
        """[C] mean over prompts of the per-prompt effect (%)."""
        return self.effects.mean(axis=0)

    def ratio_of_means(self) -> np.ndarray:
        """[C] 100 · (mean π_patched − mean π_base) / mean scale: the paper's figure (``plot_path_patching``)."""
        return 100.0 * (self._pi_patched().mean(axis=0) - self.pi_base.mean()) / self._scale().mean()

    def mean_effects(self) -> np.ndarray:
        """[C] the headline effect (%) over prompts: ``config.aggregate``."""
        return self.ratio_of_means() if self.config.aggregate == "ratio_of_means" else self.mean_of_ratios()

    def bootstrap(self, level: float = 0.95, seed: int = 0) -> dict[str, np.ndarray]:
        """Percentile bootstrap intervals over prompts (as ``stats.bootstrap_ci``) of both aggregates.

        The prompts are resampled with replacement ``config.n_bootstrap`` times (the same
        resamples for every component and both statistics); returns ``{stat: [2, C]}``.
        """
        n = len(self.pi_clean)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(self.config.n_bootstrap, n))
        weights = np.zeros((self.config.n_bootstrap, n))
        np.add.at(weights, (np.arange(self.config.n_bootstrap)[:, None], idx), 1.0 / n)
        ratios = weights @ self.effects  # [R, C]
        base = weights @ self.pi_base
        of_means = 100.0 * (weights @ self._pi_patched() - base[:, None]) / (weights @ self._scale())[:, None]
        alpha = (1.0 - level) / 2.0
        return {
            "mean_of_ratios": np.quantile(ratios, [alpha, 1.0 - alpha], axis=0),
            "ratio_of_means": np.quantile(of_means, [alpha, 1.0 - alpha], axis=0),
        }

    def components_frame(self) -> pd.DataFrame:
        """One row per component: both aggregates, their 95% bootstrap intervals, the per-prompt distribution."""
        ci = self.bootstrap()
        q = np.quantile(self.effects, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0) if len(self.effects) else np.full((5, len(self.components)), np.nan)
        frame = pd.DataFrame({
            **component_columns(list(self.components)),
            "effect": self.mean_effects(),
            "effect_ratio_of_means": self.ratio_of_means(),
            "ratio_of_means_ci_low": ci["ratio_of_means"][0],
            "ratio_of_means_ci_high": ci["ratio_of_means"][1],
            "effect_mean_of_ratios": self.mean_of_ratios(),
            "mean_of_ratios_ci_low": ci["mean_of_ratios"][0],
            "mean_of_ratios_ci_high": ci["mean_of_ratios"][1],
            "effect_std": self.effects.std(axis=0, ddof=1) if len(self.effects) > 1 else np.zeros(len(self.components)),
            "effect_p10": q[0], "effect_p25": q[1], "effect_median": q[2], "effect_p75": q[3], "effect_p90": q[4],
            "share_negative": (self.effects < 0).mean(axis=0),
            "n_prompts": np.full(len(self.components), len(self.effects), dtype=np.int64),
        })
        return frame

    def to_frame(self) -> pd.DataFrame:
        n, C = self.effects.shape
        comp = np.repeat(np.arange(C), n)
        prompt = np.tile(np.arange(n), C)
        effect = self.effects.T.reshape(-1)
        frame = pd.DataFrame({
            **component_columns([self.components[c] for c in comp]),
            "prompt_index": prompt.astype(np.int64),
            "pi_clean": self.pi_clean[prompt],
            "pi_base": self.pi_base[prompt],
            "pi_patched": self._pi_patched().T.reshape(-1),
            "effect": effect,
        })
        if self.attribution_effects is not None:
            frame["effect_attribution"] = self.attribution_effects.T.reshape(-1)
        return frame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The per-(component, prompt) table first, then the per-component aggregates."""
        return {"patch": self.to_frame(), "components": self.components_frame()}

    def agreement(self) -> dict | None:
        if self.attribution_effects is None or self.config.engine == "attribution":
            return None
        exact = self.mean_of_ratios()
        approx = self.attribution_effects.mean(axis=0)
        return {
            "spearman": spearman(exact, approx),
            "top10_overlap": top_overlap(exact, approx, 10),
            "passes": 3,
            "seconds": self.attribution_seconds,
        }

    def to_dict(self) -> dict:
        comps = self.components_frame()
        order = np.argsort(-np.abs(comps["effect"].to_numpy()))[: self.config.top_k]
        out = {
            "mode": self.config.mode,
            "direction": self.config.direction,
            "sender_mean": self.config.sender_mean,
            "corruption_draw": self.config.corruption_draw,
            "prompts": self.config.prompts,
            "aggregate": self.config.aggregate,
            "engine": self.config.engine,
            "components": list(self.config.components),
            "n_components": len(self.components),
            "answer_metric": self.prompts.metric,  # π of Y, or of the whole answer teacher-forced (tasks.prompts)
            "n_prompts": int(self.effects.shape[0]),
            "n_dropped_no_corruption": int(self.n_dropped),
            "n_corruptions": float(np.mean(self.n_corruptions)) if self.n_corruptions else 0.0,
            "corruptions_excluded": dict(self.prompts.corruptions_excluded),
            "mean_pi_clean": float(self.pi_clean.mean()),
            "top_components": [
                {
                    "component": r.component,
                    "layer": int(r.layer),
                    "head": None if pd.isna(r.head) else int(r.head),
                    "effect": float(r.effect),
                    "effect_ratio_of_means": float(r.effect_ratio_of_means),
                    "effect_mean_of_ratios": float(r.effect_mean_of_ratios),
                    "ci": [float(r.ratio_of_means_ci_low), float(r.ratio_of_means_ci_high)]
                    if self.config.aggregate == "ratio_of_means" else [float(r.mean_of_ratios_ci_low), float(r.mean_of_ratios_ci_high)],
                    "effect_std": float(r.effect_std),
                }
                for r in comps.iloc[order].itertuples()
            ],
            "engine_seconds": round(self.engine_seconds, 3),
        }
        agreement = self.agreement()
        if agreement is not None:
            out["attribution"] = agreement
        elif self.config.mode == "path":
            out["attribution"] = "not run: attribution patching estimates the total effect (path mode is exact at MLP cost)"
        return out

    def plot(self) -> go.Figure:
        """The layer × head heatmap of mean effects (the first of :func:`recallscope.figures.patch.figures`)."""
        return patch_figures.figures(self.tables(), self.to_dict())[0]


# --------------------------------------------------------------------------- the stage
def patch(model: Model, prompts: PromptSet, config: PatchConfig = PatchConfig(), progress: bool = True) -> PatchResult:
    """Patch every selected component at the end position of every prompt (see the module docstring).

    ``prompts`` are patched as given (the stage passes the known prompts or all of them,
    ``config.prompts``: :func:`stage_prompts`). Raises UserError on a bad config or too few usable prompts.
    """
    check_config(config, model)
    components = select_components(model.cfg, config.components, config.layers)
    view = engine_view(model.view)  # float32 for half-precision models
    kept, prepared_batches, n_dropped, n_corruptions = prepare_batches(model, prompts, config, progress=progress, view=view)
    n = len(kept)
    effects = np.zeros((n, len(components)))
    pi_patched = np.zeros((n, len(components)))
    with_attribution = config.mode == "total" and (config.attribution or config.engine == "attribution")
    attribution = np.zeros((n, len(components))) if with_attribution else None
    pi_clean = np.zeros(n)
    pi_base = np.zeros(n)
    engine_seconds = attribution_seconds = 0.0
    for pb in prepared_batches:  # one batch of cached keys/values held at a time
        start = time.perf_counter()
        pi = batch_pi(view, pb, components, config.engine, config.mode)
        effects[pb.indices] = pb.effect_pct(pi, config.direction).double().cpu().numpy()
        pi_patched[pb.indices] = pi.double().cpu().numpy()
        engine_seconds += time.perf_counter() - start
        if attribution is not None and config.engine != "attribution":
            start = time.perf_counter()
            attribution[pb.indices] = pb.effect_pct(batch_pi(view, pb, components, "attribution"), config.direction).double().cpu().numpy()
            attribution_seconds += time.perf_counter() - start
        pi_clean[pb.indices] = pb.pi_clean.double().cpu().numpy()
        pi_base[pb.indices] = pb.pi_base.double().cpu().numpy()
    if config.engine == "attribution":
        attribution, attribution_seconds = effects, None
    elif attribution is None:
        attribution_seconds = None
    else:
        attribution_seconds = round(attribution_seconds, 3)
    return PatchResult(
        prompts=kept,
        components=tuple(components),
        effects=effects,
        pi_clean=pi_clean,
        pi_base=pi_base,
        config=config,
        n_layers=model.cfg.n_layers,
        n_heads=model.cfg.n_heads,
        n_dropped=n_dropped,
        n_corruptions=tuple(n_corruptions),
        attribution_effects=attribution,
        engine_seconds=engine_seconds,
        attribution_seconds=attribution_seconds,
        pi_patched=pi_patched,
    )


def stage_prompts(ctx, config: PatchConfig) -> PromptSet:
    """The prompts the stage patches: the known ones, or every built prompt (``config.prompts``)."""
    if config.prompts == "known":
        return ctx.known_prompts()
    if not len(ctx.prompts):
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(ctx.prompts.dropped.items())) or "none built"
        raise UserError(f"patch --prompts all: no prompt of {ctx.prompts.relation.name!r} has a valid answer token ({dropped})")
    return ctx.prompts
