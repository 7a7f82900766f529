"""Stage **surgery**: are the mover heads specially necessary? Ablate them, against a null.

Lv et al. (2024) list, among the checks their paper leaves open, to "surgically" disable the
identified mover heads and test whether recall degrades *more than when disabling other heads*.
Patching (:mod:`recallscope.patch`) measures one component at a time; this stage ablates the
mover heads *together* and compares the damage with the damage done by random head sets of the
same size — a null distribution.

**Which heads.** The heads the movers claim (C1) names: ``claims.patching_movers``, the
``claims.mover_top_heads`` candidates of the movers stage with the largest |patching effect|,
whether or not they pass C1's mover test (the run layer passes them; :func:`surgery` takes any
heads).

**The ablation** (recallscope's; the paper describes no procedure). A head's write at the
``head_out`` edit site, z[l,h] · W_O[h] (:meth:`~recallscope.models.view.ModelView.head_writes`,
before a post-attention norm, which is recomputed: the intervention on the head's z), is
replaced by its mean over the prompt's *corrupted* versions — the prompt with its subject
swapped for other subjects of the relation with the same token count (the corruptions of
:mod:`recallscope.patch`, ``n_corruptions`` of them), so every position lines up. The mean is
the corrupted runs' mean of z, times W_O (the same as the mean of the writes: the map is
linear). Mean ablation keeps the head's average write and removes what it writes *about this
subject*, which is what a mover contributes. Two scopes (both computed):

- ``end``: at the end position only — where the paper locates the movers' work (they move the
  subject *to the last position*) and where patching singled them out;
- ``all``: at every position. Before the subject's first token every corrupted prompt equals the
  clean one, so the corrupted mean *is* the clean write there (attention is causal) and the
  ablation changes nothing: "every position" is in effect every position from the subject on.

**What is measured**, on the known prompts that have a corruption: p(Y) (softmax of the end
position's logits, Y the answer's first token) and accuracy (rank(Y) = 0, as the recall stage
counts it), clean and ablated; the drop is clean − ablated (probability, and share of prompts),
per prompt, then averaged over prompts.

**The nulls.** Random head sets of the mover set's size, none containing a mover head (the
question is whether *other* heads do as much damage):

- ``layer`` (random, from the same layers): for each layer holding k mover heads, k heads drawn
  uniformly from that layer's other heads. Ablating a head of layer 3 and a head of layer 25 are
  different interventions (the later one has fewer layers to be compensated by); matching the
  layers per head takes depth out of the comparison.
- ``norm`` (matched on output norm): each mover head's pool is the ``norm_pool`` other heads
  whose norm is nearest to its own on a log scale (any layer), grown one head at a time until
  ``n_null`` distinct sets exist; a set takes one head from each mover's pool (no head twice). The norm (``surgery.norm``) is by default ``change``: the
  root-mean-square over prompts of ‖a_clean − ā‖, the end-position change the ablation makes
  to the head's write — the size of the intervention itself. A head that writes a large but
  prompt-independent vector (one that parks its attention on the first token) has a large
  output norm and is barely touched by mean ablation; matching on the plain output norm
  (``norm = "output"``: the RMS of ‖a_clean‖) would pair the movers with such heads and make
  the null easy to beat. Matching on the change asks whether the movers do more damage than
  *equally large* perturbations elsewhere.

Each null holds ``n_null`` distinct sets (default 200) drawn with the stage's seed; where fewer
distinct sets exist, it holds every one of them (an exhaustive, exact permutation null;
``exhaustive`` in the ``nulls`` table), and the smallest p-value it can give is 1 / (1 + n).

**Statistics** (per scope × null × metric, the ``nulls`` table): the movers' mean drop; the
null's median and ``quantile`` (95th percentile) of its sets' mean drops; the empirical p-value
with the +1 correction, p = (1 + #{null sets with drop ≥ the movers'}) / (1 + n) (Phipson &
Smyth 2010: never 0, exact for an exhaustive null); and the effect size, a robust z,
(movers' drop − null median) / (1.4826 · MAD of the null). Why robust: a null set that happens
to contain one important head does many times the typical damage, so the null is skewed with a
long right tail; its standard deviation would be set by those few sets, its median absolute
deviation is not (1.4826 · MAD equals the standard deviation for a normal null, so the figure
reads as a z-score). None when the null has no spread (MAD 0: more than half its sets give the
same drop).

**Engines.** ``naive``: one full forward per head set and scope (``view.trace`` with the
``head_out`` edits), the corrupted means from full forwards of every corruption. ``batched``
(default): the head sets are *variants over a shared prefix* — one :meth:`ModelView.forward_from`
per layer for all of them (``[B, C, T, d]``). What cannot change is reused: for ``end``,
every position before the end and every layer below a set's first ablated layer (the clean run's
keys/values and residual); for ``all``, every position before the subject (the ablation is the
identity there) and, again, every layer below the set's first ablated layer. A set joins the
batch at its first ablated layer. The two engines agree to float64 rounding (tests/test_surgery.py).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from .causal_trace import answer_prob
from .claims import NOT_MEASURABLE, Claim, ClaimsConfig, Condition, decide
from .components import head_label
from .constraints import LEVEL, NON_NEGATIVE, POSITIVE, Options
from .display import ResultView
from .errors import UserError
from .figures import surgery as surgery_figures
from .lens import token_rank
from .models import Model
from .models.view import LOGIT_ELEMENTS, ModelView, position_ids_from_mask
from .patch import _aligned_corruptions, engine_view, with_corruptions
from .progress import track
from .tasks import PromptSet
from .tasks.prompts import batches, stable_seed
from .verdicts import fmt, number

SCOPES = ("end", "all")
NULLS = ("layer", "norm")
NORMS = ("change", "output")
ENGINES = ("batched", "naive")
METRICS = ("p_answer", "accuracy")
MOVERS = "movers"
# Rows (prompts × head sets × positions) one layer call of the batched engine holds at once: each
# row carries every head's write (H × d numbers at the head_out site, ~85 MB in float32 on
# smollm2-135m at 4096 rows) and an MLP activation; more sets run in chunks.
MAX_ROWS = 4096
MAX_COMBINATIONS = 200_000  # pool combinations the norm null lists exhaustively; beyond, it samples
MAD_TO_SD = 1.4826  # 1 / Φ⁻¹(3/4): MAD × this = the standard deviation of a normal distribution


@dataclass(frozen=True)
class SurgeryConfig:
    n_null: int = 200  # distinct random head sets per null (every set when fewer exist)
    nulls: tuple[str, ...] = NULLS  # "layer": same layers as the movers; "norm": matched on the head norm
    scopes: tuple[str, ...] = SCOPES  # "end": the end position only; "all": every position
    norm: str = "change"  # what the norm null matches: "change" (‖a − ā‖, the ablation's size) or "output" (‖a‖)
    norm_pool: int = 10  # each mover's pool in the norm null: at least this many other heads nearest in log norm
    quantile: float = 0.95  # the null quantile reported (and compared with by the claims row)
    n_corruptions: int = 10  # corrupted prompts averaged per clean prompt (same token count)
    engine: str = "batched"  # "batched" | "naive" (one forward per head set: the reference)
    batch_size: int = 8  # clean prompts per batch
    min_prompts: int = 2  # fewer known prompts with a same-length corruption is an error
    max_prompts: int | None = None  # at most this many of those prompts, a seeded draw (None: every one)
    seed: int = 0

    constraints: ClassVar[dict] = {
        "n_null": POSITIVE,
        "nulls": Options(*NULLS),
        "scopes": Options(*SCOPES),
        "norm": Options(*NORMS),
        "norm_pool": POSITIVE,
        "quantile": LEVEL,
        "n_corruptions": POSITIVE,
        "engine": Options(*ENGINES),
        "batch_size": POSITIVE,
        "min_prompts": POSITIVE,
        "max_prompts": POSITIVE,
        "seed": NON_NEGATIVE,
    }


def check_config(config: SurgeryConfig, model: Model | None = None) -> None:
    """Raise :class:`UserError` (one line) for a setting out of range; before any work."""
    for name, allowed in (("nulls", NULLS), ("scopes", SCOPES)):
        values = getattr(config, name)
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise UserError(f"surgery.{name}: unknown {bad or 'empty list'}; choose from {', '.join(allowed)}")
    for name, allowed in (("norm", NORMS), ("engine", ENGINES)):
        if getattr(config, name) not in allowed:
            raise UserError(f"surgery.{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    for name in ("n_null", "norm_pool", "n_corruptions", "batch_size", "min_prompts", "max_prompts"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise UserError(f"surgery.{name} must be >= 1, got {getattr(config, name)}")
    if not 0 < config.quantile < 1:
        raise UserError(f"surgery.quantile must be in (0, 1), got {config.quantile}")


def check_heads(heads: Sequence[tuple[int, int]], n_layers: int, n_heads: int) -> tuple[tuple[int, int], ...]:
    """The heads as distinct (layer, head) pairs in the given order; UserError when empty or out of range."""
    out = tuple(dict.fromkeys((int(layer), int(head)) for layer, head in heads))
    if not out:
        raise UserError("surgery: no mover head to ablate (the movers stage named none)")
    bad = [head_label(layer, head) for layer, head in out if not (0 <= layer < n_layers and 0 <= head < n_heads)]
    if bad:
        raise UserError(f"surgery: head(s) {', '.join(bad)} out of range: the model has {n_layers} layers × {n_heads} heads")
    return out


# ----------------------------------------------------------------------------- the null head sets
HeadSet = tuple[tuple[int, int], ...]  # (layer, head) pairs, sorted


@dataclass(frozen=True)
class Null:
    """One null: its head sets (sorted (layer, head) tuples), how many distinct sets exist, and the rule."""

    name: str
    sets: tuple[HeadSet, ...]
    n_possible: int | None  # None: too many to count (every set was not listed)
    rule: str
    pool: int | None = None  # the norm null's pool size per mover

    @property
    def exhaustive(self) -> bool:
        return self.n_possible is not None and len(self.sets) == self.n_possible


def _choose(n_possible: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the sets kept: every one (in order) when at most ``n`` exist, else ``n`` distinct ones, sorted."""
    if n_possible <= n:
        return np.arange(n_possible)
    return np.sort(rng.choice(n_possible, size=n, replace=False))


def layer_null(movers: HeadSet, n_heads: int, n: int, rng: np.random.Generator) -> Null:
    """Head sets with the movers' number of heads in each of their layers, drawn from each layer's
    other heads (uniformly over every such set; each set once). ``n_possible`` = Π_l C(H − k_l, k_l)."""
    per_layer: dict[int, int] = {}
    for layer, _ in movers:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    options = []  # per layer: every choice of k_l of its non-mover heads
    for layer, k in sorted(per_layer.items()):
        others = [h for h in range(n_heads) if (layer, h) not in movers]
        options.append([tuple((layer, h) for h in combo) for combo in itertools.combinations(others, k)])
    sizes = [len(o) for o in options]
    n_possible = math.prod(sizes)
    sets = []
    for index in _choose(n_possible, n, rng):  # mixed-radix decoding of a set's index
        chosen, rest = [], int(index)
        for opts, size in zip(reversed(options), reversed(sizes), strict=True):
            rest, i = divmod(rest, size)
            chosen.extend(opts[i])
        sets.append(tuple(sorted(chosen)))
    rule = (
        f"{len(movers)} heads: in each layer of the movers ({', '.join(f'L{l}: {k}' for l, k in sorted(per_layer.items()))}) "
        "as many of its other heads, uniformly"
    )
    return Null("layer", tuple(sets), n_possible, rule)


def norm_pools(movers: HeadSet, norms: np.ndarray, pool: int) -> list[list[tuple[int, int]]]:
    """Each mover's pool: the ``pool`` non-mover heads whose norm is nearest to its own on a log
    scale (ties: lower layer, then head, first). ``norms`` [L, H]; a zero norm is taken as 1e-12 of
    the largest (it matches other heads that write nothing)."""
    L, H = norms.shape
    floor = 1e-12 * max(float(norms.max()), 1e-300)
    logs = np.log(np.maximum(norms, floor))
    others = [(layer, head) for layer in range(L) for head in range(H) if (layer, head) not in movers]
    pools = []
    for layer, head in movers:
        distance = [abs(logs[o] - logs[layer, head]) for o in others]
        order = sorted(range(len(others)), key=lambda i: (distance[i], others[i]))
        pools.append([others[i] for i in order[:pool]])
    return pools


def _pool_sets(pools: list[list[tuple[int, int]]]) -> list[HeadSet] | None:
    """Every distinct set with one head from each pool and no head twice, sorted; None when the
    pools have more than :data:`MAX_COMBINATIONS` combinations to list."""
    if math.prod(len(p) for p in pools) > MAX_COMBINATIONS:
        return None
    return sorted({tuple(sorted(combo)) for combo in itertools.product(*pools) if len(set(combo)) == len(combo)})


def norm_null(movers: HeadSet, norms: np.ndarray, pool: int, n: int, rng: np.random.Generator, what: str) -> Null:
    """Head sets with one head from each mover's pool (:func:`norm_pools`), no head twice, each set once.

    The pools start at ``pool`` heads and grow one head at a time until ``n`` distinct sets exist
    (or the pools hold every other head): the tightest matching that gives ``n`` sets. Movers of
    similar norm share most of their pool, so three movers with pools of 10 can give as few as
    C(10, 3) = 120 sets. Where the pools have more than :data:`MAX_COMBINATIONS` combinations,
    ``n`` distinct sets are drawn by rejection and ``n_possible`` is None (not counted).
    """
    others = norms.size - len(movers)
    size = min(pool, others)
    while True:
        pools = norm_pools(movers, norms, size)
        possible = _pool_sets(pools)
        if possible is None or len(possible) >= n or size >= others:
            break
        size += 1
    if possible is not None:
        sets, n_possible = tuple(possible[i] for i in _choose(len(possible), n, rng)), len(possible)
    else:
        drawn: set[HeadSet] = set()
        for _ in range(1000 * n):
            combo = [p[int(rng.integers(len(p)))] for p in pools]
            if len(set(combo)) == len(combo):
                drawn.add(tuple(sorted(combo)))
                if len(drawn) == n:
                    break
        sets, n_possible = tuple(sorted(drawn)), None
    grown = f" (grown from {pool} until {n} sets exist)" if size > pool else ""
    rule = (
        f"{len(movers)} heads: one from each mover's pool of the {size} other heads nearest in log {what} norm{grown} "
        "(any layer), no head twice, uniformly over such sets"
    )
    return Null("norm", sets, n_possible, rule, size)


def set_masks(sets: Sequence[HeadSet], n_layers: int, n_heads: int) -> Tensor:
    """[C, L, H] bool: true at the heads of each set."""
    masks = torch.zeros(len(sets), n_layers, n_heads, dtype=torch.bool)
    for c, heads in enumerate(sets):
        for layer, head in heads:
            masks[c, layer, head] = True
    return masks


# ----------------------------------------------------------------------------- one batch of prompts
@dataclass
class SurgeryBatch:
    """A batch of clean prompts with what every ablation starts from.

    Positions ``lo..S-1`` (T of them) are those from the first column where any corruption differs
    from its clean row (the subject's first token, for the batch's earliest subject) to the end.
    """

    input_ids: Tensor  # [B, S] left-padded
    attention_mask: Tensor  # [B, S]
    answer_ids: Tensor  # [B]
    lo: int
    kv: list = field(repr=False)  # per layer the clean run's (keys, values) [B, K, S, dh]
    resid_pre: Tensor = field(repr=False)  # [B, T, L, d] the clean residual entering each layer at lo..S-1
    z_clean: Tensor = field(repr=False)  # [B, L, H, dh] the clean run's z at the end
    z_mean: Tensor = field(repr=False)  # [B, T, L, H, dh] the corrupted runs' weighted mean z at lo..S-1
    p_clean: Tensor = field(repr=False)  # [B]
    correct_clean: Tensor = field(repr=False)  # [B] bool


def first_differing_column(input_ids: Tensor, corrupt_ids: Tensor) -> int:
    """The first column where any corruption differs from its clean row (at most S − 1)."""
    S = input_ids.shape[1]
    differs = (corrupt_ids != input_ids[:, None].to(corrupt_ids.device)).any(dim=(0, 1)).nonzero()
    return min(int(differs[0]) if len(differs) else S - 1, S - 1)


def answer_prob_and_correct(view: ModelView, resid_final: Tensor, answer_ids: Tensor) -> tuple[Tensor, Tensor]:
    """p(Y) and rank(Y) = 0 for end-position residuals [N, d] (``answer_ids`` [N]): the full
    vocabulary's logits, :data:`LOGIT_ELEMENTS` // V rows at a time (so N × V never coexist)."""
    chunk = max(1, LOGIT_ELEMENTS // view.cfg.d_vocab)
    probs, correct = [], []
    for i in range(0, resid_final.shape[0], chunk):
        logits = view.logits_from_resid(resid_final[i : i + chunk])
        y = answer_ids[i : i + chunk].to(logits.device)
        probs.append(answer_prob(view, logits, y).to(view.device))
        correct.append((token_rank(logits, y) == 0).to(view.device))
    return torch.cat(probs), torch.cat(correct)


@torch.no_grad()
def prepare_batch(
    view: ModelView, input_ids: Tensor, attention_mask: Tensor, answer_ids: Tensor, corrupt_ids: Tensor, weight: Tensor
) -> SurgeryBatch:
    """The clean run (keys/values of every position, residuals and z from ``lo`` on) and the
    corrupted runs' mean z at positions ``lo..S-1``.

    ``corrupt_ids`` [B, n, S] the corruptions laid out like their clean rows (only the subject
    differs), ``weight`` [B, n] (rows sum to 1). The corrupted runs are computed from ``lo`` on
    only, as n variants per row over the clean run's keys/values of [:lo] (equal there: the tokens
    are the same and attention is causal).
    """
    device = view.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    corrupt_ids = corrupt_ids.to(device)
    B, n, S = corrupt_ids.shape
    lo = first_differing_column(input_ids, corrupt_ids)
    T = S - lo
    positions = torch.arange(lo, S, device=device).expand(B, T)
    clean = view.trace(input_ids, attention_mask, positions=positions, record=("resid_pre", "z", "resid_final"), return_kv=True)
    ids = position_ids_from_mask(attention_mask)[:, lo:]
    resid = view.embed(corrupt_ids[:, :, lo:].reshape(B * n, T), ids.repeat_interleave(n, dim=0)).reshape(B, n, T, -1)
    past = [(k[:, :, :lo], v[:, :, :lo]) for k, v in clean.kv]
    corrupted = view.forward_from(resid, 0, attention_mask, past, positions=positions, record=("z",))
    z_mean = torch.einsum("bn,bntlhe->btlhe", weight.to(device=device, dtype=view.dtype), corrupted.z)
    p_clean, correct = answer_prob_and_correct(view, clean.resid_final[:, -1], answer_ids.to(device))
    return SurgeryBatch(
        input_ids, attention_mask, answer_ids.to(device), lo, clean.kv, clean.resid_pre, clean.z[:, -1], z_mean, p_clean, correct
    )


def head_norms(view: ModelView, sb: SurgeryBatch) -> tuple[Tensor, Tensor]:
    """Per prompt and head, ‖a_clean − ā‖² and ‖a_clean‖² at the end position, at the head_out edit site: [B, L, H] each."""
    change, output = [], []
    for layer in range(view.cfg.n_layers):
        clean = sb.z_clean[:, layer]
        change.append(view.head_writes(layer, clean - sb.z_mean[:, -1, layer]).pow(2).sum(-1))
        output.append(view.head_writes(layer, clean).pow(2).sum(-1))
    return torch.stack(change, 1), torch.stack(output, 1)


# ----------------------------------------------------------------------------- engines
def _replace_heads(mask: Tensor, mean: Tensor):
    """A head_out edit [B, C, T, H, d] → the same with the heads in ``mask`` [C, H] set to ``mean`` [B, T, H, d]."""

    def edit(heads: Tensor) -> Tensor:
        return torch.where(mask[None, :, None, :, None].to(heads.device), mean[:, None].to(heads.dtype), heads)

    return edit


@torch.no_grad()
def batched_final_resid(view: ModelView, sb: SurgeryBatch, masks: Tensor, scope: str, max_rows: int = MAX_ROWS) -> Tensor:
    """The end-position residual after the last layer with each head set ablated, [B, C, d].

    ``masks`` [C, L, H] (every set non-empty); ``scope`` "end" or "all". Positions computed: the
    end (``end``) or ``lo..S-1`` (``all``: before ``lo`` the ablation is the identity), over the clean
    run's keys/values of the earlier positions. A set joins the batch at its first ablated layer
    with the clean residual there; below it nothing changes. Sets run in chunks of at most
    ``max_rows`` rows (B × sets × positions) per layer call.
    """
    cfg = view.cfg
    B, S = sb.input_ids.shape
    T = 1 if scope == "end" else S - sb.lo
    p = S - T
    past = [(k[:, :, :p], v[:, :, :p]) for k, v in sb.kv]
    positions = torch.arange(p, S, device=view.device).expand(B, T)
    masks = masks.to(view.device)
    entry = masks.flatten(1).to(torch.int64).argmax(1) // cfg.n_heads  # the first ablated layer of each set
    order = torch.argsort(entry, stable=True)
    states = sb.resid_pre[:, -T:]  # [B, T, L, d]
    out = torch.empty(B, masks.shape[0], cfg.d_model, dtype=view.dtype, device=view.device)
    chunk = max(1, max_rows // (B * T))
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        first = entry[idx]
        resid = states.new_empty(B, 0, T, cfg.d_model)
        for layer in range(int(first.min()), cfg.n_layers):
            joining = int((first == layer).sum())
            if joining:  # sets whose first ablated layer is this one start from the clean residual here
                resid = torch.cat([resid, states[:, None, :, layer].expand(B, joining, T, cfg.d_model)], dim=1)
            active = masks[idx[: resid.shape[1]], layer]  # [C_active, H]
            edits = None
            if bool(active.any()):
                mean = view.head_writes(layer, sb.z_mean[:, -T:, layer])  # [B, T, H, d]
                edits = {("head_out", layer): _replace_heads(active, mean)}
            resid = view.forward_from(
                resid, layer, sb.attention_mask, past, stop=layer + 1, positions=positions, edits=edits
            ).resid_final
        out[:, idx] = resid[:, :, -1]
    return out


@torch.no_grad()
def batched_batch(view: ModelView, sb: SurgeryBatch, masks: Tensor, scope: str) -> tuple[Tensor, Tensor]:
    """p(Y) and correctness [B, C] with each head set ablated (the batched engine)."""
    B, C = sb.input_ids.shape[0], masks.shape[0]
    resid = batched_final_resid(view, sb, masks, scope)
    p, correct = answer_prob_and_correct(view, resid.reshape(B * C, -1), sb.answer_ids.repeat_interleave(C))
    return p.reshape(B, C), correct.reshape(B, C)


@torch.no_grad()
def naive_means(view: ModelView, input_ids: Tensor, attention_mask: Tensor, corrupt_ids: Tensor, weight: Tensor) -> Tensor:
    """The corrupted runs' weighted mean z at every position, [B, S, L, H, dh], from one full forward
    of every corruption (the reference for :func:`prepare_batch`'s reuse)."""
    B, n, S = corrupt_ids.shape
    positions = torch.arange(S, device=view.device).expand(B * n, S)
    t = view.trace(corrupt_ids.reshape(B * n, S), attention_mask.repeat_interleave(n, dim=0), positions=positions, record=("z",))
    z = t.z.reshape(B, n, *t.z.shape[1:])
    return torch.einsum("bn,bnslhe->bslhe", weight.to(device=view.device, dtype=view.dtype), z)


@torch.no_grad()
def naive_batch(
    view: ModelView,
    input_ids: Tensor,
    attention_mask: Tensor,
    answer_ids: Tensor,
    z_mean: Tensor,
    sets: Sequence[HeadSet],
    scope: str,
) -> tuple[Tensor, Tensor]:
    """p(Y) and correctness [B, C]: one full forward per head set (``view.trace`` with ``head_out``
    edits at the end column or at every column), ``z_mean`` [B, S, L, H, dh] from :func:`naive_means`."""
    cols = slice(-1, None) if scope == "end" else slice(None)
    p, correct = [], []
    for heads in sets:
        edits = {}
        for layer in sorted({layer for layer, _ in heads}):
            idx = [h for l2, h in heads if l2 == layer]
            mean = view.head_writes(layer, z_mean[:, :, layer])  # [B, S, H, d]

            def edit(x: Tensor, idx=idx, mean=mean) -> Tensor:
                x = x.clone()
                x[:, cols, idx] = mean[:, cols, idx]
                return x

            edits[("head_out", layer)] = edit
        t = view.trace(input_ids, attention_mask, record=("resid_final",), edits=edits)
        pc = answer_prob_and_correct(view, t.resid_final[:, 0], answer_ids)
        p.append(pc[0])
        correct.append(pc[1])
    return torch.stack(p, 1), torch.stack(correct, 1)


# ----------------------------------------------------------------------------- statistics
def null_stats(observed: float, null: np.ndarray, quantile: float = 0.95) -> dict:
    """The movers' drop against a null of drops (one per head set).

    ``p_value`` = (1 + #{null ≥ observed}) / (1 + n) (the +1 correction: a null of n sets cannot
    show p < 1/(1 + n)); ``effect_size`` = (observed − median) / (1.4826 · MAD), None when the MAD
    is 0; ``null_quantile`` the ``quantile`` of the null (linear interpolation).
    """
    null = np.asarray(null, dtype=float)
    n = len(null)
    if n == 0:
        return {
            "n_sets": 0,
            "null_median": None,
            "null_quantile": None,
            "null_mad": None,
            "p_value": None,
            "min_p_value": None,
            "effect_size": None,
        }
    median = float(np.median(null))
    mad = float(np.median(np.abs(null - median)))
    return {
        "n_sets": n,
        "null_median": median,
        "null_quantile": float(np.quantile(null, quantile)),
        "null_mad": mad,
        "p_value": float((1 + np.sum(null >= observed)) / (1 + n)),
        "min_p_value": 1.0 / (1 + n),
        "effect_size": float((observed - median) / (MAD_TO_SD * mad)) if mad > 0 else None,
    }


def drop_frame(prompts_frame: pd.DataFrame) -> pd.DataFrame:
    """Per (scope, set) the mean drops over prompts, from the per-prompt table."""
    g = prompts_frame.groupby(["scope", "set_id"], sort=False)
    out = g.agg(
        null=("null", "first"),
        heads=("heads", "first"),
        n_prompts=("prompt_index", "size"),
        p_clean=("p_clean", "mean"),
        p_ablated=("p_ablated", "mean"),
        drop_p=("drop_p", "mean"),
        accuracy_clean=("correct_clean", "mean"),
        accuracy_ablated=("correct_ablated", "mean"),
    ).reset_index()
    out["drop_accuracy"] = out["accuracy_clean"] - out["accuracy_ablated"]
    return out


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class SurgeryResult(ResultView):
    """Head surgery of a prompt set: the movers ablated, against the null head sets.

    Tables (:meth:`tables`, the main one first):

    - ``surgery`` (main): one row per scope × head set — ``scope`` ("end", "all"), ``set_id`` (0 =
      the movers), ``null`` ("movers", "layer", "norm"), ``heads`` ("L1H0,L2H0"), ``n_prompts``,
      the means over prompts of ``p_clean``, ``p_ablated``, ``drop_p`` (probability),
      ``accuracy_clean``, ``accuracy_ablated``, ``drop_accuracy`` (share of prompts), and the set's
      ``norm`` (mean over its heads of the matched norm).
    - ``prompts``: one row per scope × set × prompt — ``prompt_index``, ``p_clean``, ``p_ablated``,
      ``drop_p``, ``correct_clean``, ``correct_ablated``.
    - ``nulls``: one row per scope × null × metric ("p_answer": drop in p(Y); "accuracy") —
      ``movers_drop``, ``n_sets``, ``n_possible``, ``exhaustive``, ``null_median``,
      ``null_quantile``, ``null_mad``, ``p_value``, ``min_p_value``, ``effect_size`` (:func:`null_stats`).
    - ``heads``: one row per head of the model — ``component``, ``layer``, ``head``, ``in_mover_set``,
      ``change_norm`` (RMS over prompts of ‖a_clean − ā‖ at the end), ``output_norm`` (RMS of ‖a_clean‖).
    """

    stage: ClassVar[str] = "surgery"

    prompts: PromptSet
    heads: HeadSet
    frame: pd.DataFrame = field(repr=False)  # the prompts table
    nulls: tuple[Null, ...] = field(repr=False)
    head_table: pd.DataFrame = field(repr=False)
    config: SurgeryConfig = SurgeryConfig()
    n_dropped: int = 0
    engine_seconds: float = 0.0

    def sets_frame(self) -> pd.DataFrame:
        sets = drop_frame(self.frame)
        norms = {
            (r.layer, r.head): r.norm
            for r in self.head_table.assign(norm=self.head_table[f"{self.config.norm}_norm"]).itertuples()
        }
        by_id = {i: hs for i, hs in enumerate(self._all_sets())}
        sets["norm"] = [float(np.mean([norms[h] for h in by_id[i]])) for i in sets["set_id"]]
        return sets

    def _norm_ratio(self, null: str) -> float | None:
        """The median over the null's sets of (the set's mean norm / the movers' mean norm): how well
        its sets match the movers in ``config.norm``'s norm (1 = exactly)."""
        sets = self.sets_frame()
        sets = sets[sets["scope"] == sets["scope"].iloc[0]]
        movers = float(sets.loc[sets["set_id"] == 0, "norm"].iloc[0])
        values = sets.loc[sets["null"] == null, "norm"].to_numpy(float)
        return float(np.median(values) / movers) if movers > 0 and len(values) else None

    def _all_sets(self) -> list[HeadSet]:
        return [self.heads] + [s for null in self.nulls for s in null.sets]

    def nulls_frame(self) -> pd.DataFrame:
        sets = self.sets_frame()
        rows = []
        for scope in self.config.scopes:
            here = sets[sets["scope"] == scope]
            movers = here[here["set_id"] == 0].iloc[0]
            for null in self.nulls:
                values = here[here["null"] == null.name]
                for metric, column in (("p_answer", "drop_p"), ("accuracy", "drop_accuracy")):
                    stats = null_stats(float(movers[column]), values[column].to_numpy(float), self.config.quantile)
                    rows.append(
                        {
                            "scope": scope,
                            "null": null.name,
                            "metric": metric,
                            "movers_drop": float(movers[column]),
                            **stats,
                            "n_possible": null.n_possible,
                            "exhaustive": null.exhaustive,
                        }
                    )
        return pd.DataFrame(rows)

    def to_frame(self) -> pd.DataFrame:
        return self.sets_frame()

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "surgery": self.sets_frame(),
            "prompts": self.frame.copy(),
            "nulls": self.nulls_frame(),
            "heads": self.head_table.copy(),
        }

    def to_dict(self) -> dict:
        nulls = self.nulls_frame()
        return {
            "relation": self.prompts.relation.name,
            "shots": self.prompts.shots,
            "n_prompts": int(self.frame["prompt_index"].nunique()),
            "n_dropped_no_corruption": self.n_dropped,
            "n_sampled_out": int(self.prompts.dropped.get(SAMPLED_OUT, 0)),
            "max_prompts": self.config.max_prompts,
            "heads": [head_label(layer, head) for layer, head in self.heads],
            "heads_source": "the movers claim's heads (claims.patching_movers: the movers stage's candidates with the "
            "largest |patching effect|)",
            "ablation": "each head's write z·W_O replaced by its mean over the prompt's same-length corruptions",
            "scopes": list(self.config.scopes),
            "quantile": self.config.quantile,
            "norm": self.config.norm,
            "nulls": [
                {
                    "null": n.name,
                    "draw": n.rule,
                    "n_sets": len(n.sets),
                    "n_possible": n.n_possible,
                    "exhaustive": n.exhaustive,
                    "pool": n.pool,
                    "norm_ratio_median": self._norm_ratio(n.name),
                }
                for n in self.nulls
            ],
            "results": nulls.to_dict(orient="records"),
            "engine": self.config.engine,
            "engine_seconds": round(self.engine_seconds, 3),
        }

    def plot(self) -> go.Figure:
        """The end-position null histogram (the first of :func:`recallscope.figures.surgery.figures`)."""
        return surgery_figures.figures(self.tables(), self.to_dict())[0]


def prepared_batches(view: ModelView, groups: list, found: list, description: str, progress: bool = False):
    """For each ``(indices, batch)`` of ``groups`` (``tasks.batches`` of the kept prompts; ``found[i]``
    the corruptions of kept prompt i): ``(indices, batch, corrupt_ids [B, n, S], weight [B, n],``
    :class:`SurgeryBatch` ``)``, prepared when reached (one batch held at a time)."""
    for indices, batch in track(groups, description, total=len(groups), enabled=progress):
        ids, weight = _aligned_corruptions(batch, [found[i] for i in indices])
        yield (
            indices,
            batch,
            ids,
            weight,
            prepare_batch(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), ids, weight),
        )


def measure_norms(view: ModelView, prepared) -> tuple[np.ndarray, np.ndarray]:
    """Every head's RMS over the prompts of ‖a_clean − ā‖ and of ‖a_clean‖ at the end position, [L, H]
    each, from the batches of :func:`prepared_batches`."""
    cfg = view.cfg
    change = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    output = torch.zeros_like(change)
    n = 0
    for *_, sb in prepared:
        c, o = head_norms(view, sb)
        change += c.sum(0).double().cpu()
        output += o.sum(0).double().cpu()
        n += sb.input_ids.shape[0]
    return change.div(n).sqrt().numpy(), output.div(n).sqrt().numpy()


def draw_nulls(movers: HeadSet, change_norm: np.ndarray, output_norm: np.ndarray, config: SurgeryConfig) -> tuple[Null, ...]:
    """The nulls of ``config.nulls`` (in :data:`NULLS` order, from one generator seeded with
    ``config.seed``) that have at least one set; UserError when none has."""
    rng = np.random.default_rng(config.seed)
    made = []
    for name in NULLS:
        if name not in config.nulls:
            continue
        if name == "layer":
            made.append(layer_null(movers, change_norm.shape[1], config.n_null, rng))
        else:
            norms = change_norm if config.norm == "change" else output_norm
            made.append(norm_null(movers, norms, config.norm_pool, config.n_null, rng, config.norm))
    nulls = tuple(n for n in made if n.sets)
    if not nulls:
        raise UserError(
            f"surgery: no null head set exists for the heads {', '.join(head_label(*h) for h in movers)} "
            f"({'; '.join(n.rule for n in made)})"
        )
    return nulls


SAMPLED_OUT = "surgery_max_prompts"  # the prompts' ``dropped`` reason for those surgery.max_prompts leaves out


def sample_prompts(kept: PromptSet, found: list, limit: int | None, seed: int) -> tuple[PromptSet, list]:
    """At most ``limit`` of ``kept`` (with their corruptions ``found``): a uniform draw without
    replacement, seeded by ``seed``, in the prompts' order; all of them when ``limit`` is None or not
    below their number. The others are counted under :data:`SAMPLED_OUT` in ``dropped``."""
    if limit is None or len(kept) <= limit:
        return kept, found
    pick = set(np.random.default_rng(stable_seed("surgery.max_prompts", seed)).choice(len(kept), limit, replace=False).tolist())
    keep = [i in pick for i in range(len(kept))]
    return kept.subset(keep, reason=SAMPLED_OUT), [f for f, k in zip(found, keep, strict=True) if k]


def surgery(
    model: Model,
    prompts: PromptSet,
    heads: Sequence[tuple[int, int]],
    config: SurgeryConfig = SurgeryConfig(),
    progress: bool = True,
) -> SurgeryResult:
    """Ablate ``heads`` (the movers: (layer, head) pairs) and every null head set on ``prompts``,
    at the scopes of ``config`` (module docstring).

    ``prompts``: the prompts the stage uses, as given (the pipeline passes the known ones,
    ``recall(model, prompts).known``, and the movers claim's heads, ``claims.patching_movers``; a
    direct call with them reproduces the run's tables), those with a same-length corruption kept.

    Two passes over the prompts, one batch in memory at a time: the first measures every head's
    norm (for the norm null), the second ablates every set. Raises :class:`UserError` for a bad
    setting, no or out-of-range heads, fewer than ``min_prompts`` prompts with a same-length
    corruption, or a null with no possible set (then the other null still runs; both: error).
    """
    check_config(config)
    cfg = model.cfg
    movers = check_heads(heads, cfg.n_layers, cfg.n_heads)
    view = engine_view(model.view)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    kept, found, n_dropped = with_corruptions(prompts, model.tokenizer, config.n_corruptions, config.min_prompts)
    kept, found = sample_prompts(kept, found, config.max_prompts, config.seed)
    groups = list(batches(kept.prompts, pad_id, config.batch_size))
    start = time.perf_counter()
    change_norm, output_norm = measure_norms(view, prepared_batches(view, groups, found, "surgery: head norms", progress))
    mover_set = tuple(sorted(movers))
    nulls = draw_nulls(mover_set, change_norm, output_norm, config)
    sets = [mover_set] + [s for n in nulls for s in n.sets]
    labels = [MOVERS] + [n.name for n in nulls for _ in n.sets]
    masks = set_masks(sets, cfg.n_layers, cfg.n_heads)
    rows: list[dict] = []
    for indices, batch, ids, weight, sb in prepared_batches(
        view, groups, found, f"surgery: {len(sets)} head sets ablated", progress
    ):
        for scope in config.scopes:
            if config.engine == "batched":
                p, correct = batched_batch(view, sb, masks, scope)
            else:
                z_mean = naive_means(view, sb.input_ids, sb.attention_mask, ids.to(view.device), weight)
                p, correct = naive_batch(view, sb.input_ids, sb.attention_mask, sb.answer_ids, z_mean, sets, scope)
            p, correct = p.double().cpu().numpy(), correct.cpu().numpy()
            p_clean, correct_clean = sb.p_clean.double().cpu().numpy(), sb.correct_clean.cpu().numpy()
            for c, (heads_c, null) in enumerate(zip(sets, labels, strict=True)):
                label = ",".join(head_label(*h) for h in heads_c)
                for row, i in enumerate(indices):
                    rows.append(
                        {
                            "scope": scope,
                            "set_id": c,
                            "null": null,
                            "heads": label,
                            "prompt_index": kept.prompts[i].index,
                            "p_clean": float(p_clean[row]),
                            "p_ablated": float(p[row, c]),
                            "correct_clean": bool(correct_clean[row]),
                            "correct_ablated": bool(correct[row, c]),
                        }
                    )
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(rows)
    frame["drop_p"] = frame["p_clean"] - frame["p_ablated"]
    order = {scope: i for i, scope in enumerate(config.scopes)}
    frame = (
        frame.assign(_scope=frame["scope"].map(order))
        .sort_values(["_scope", "set_id", "prompt_index"], kind="stable")
        .drop(columns="_scope")
        .reset_index(drop=True)
    )
    head_table = pd.DataFrame(
        [
            {
                "component": head_label(layer, head),
                "layer": layer,
                "head": head,
                "in_mover_set": (layer, head) in movers,
                "change_norm": float(change_norm[layer, head]),
                "output_norm": float(output_norm[layer, head]),
            }
            for layer in range(cfg.n_layers)
            for head in range(cfg.n_heads)
        ]
    )
    return SurgeryResult(kept, movers, frame, nulls, head_table, config, n_dropped, seconds)


# ----------------------------------------------------------------------------- claims
CLAIM_NECESSARY = "Ablating the mover heads hurts recall more than ablating matched random heads"
NULL_WORDS = {"layer": "same-layer", "norm": "norm-matched"}
SCOPE_WORDS = {"end": "at the end position", "all": "at every position"}


def necessity_claim(
    prompts: pd.DataFrame | None, summary: dict | None, mover_heads: Sequence[dict] | None, cfg: ClaimsConfig = ClaimsConfig()
) -> Claim:
    """The paper's open check (Lv et al. 2024, "next checks"): disabling the mover heads degrades
    recall more than disabling other heads.

    Read at ``cfg.surgery_scope`` (default the end position, where the paper locates the movers'
    work). Per null (``layer``: random heads of the movers' layers; ``norm``: matched on the norm),
    the figure is the movers' mean drop in p(Y) minus the null's ``quantile`` (95th percentile) of
    its sets' mean drops, with a percentile bootstrap interval over prompts (the prompts resampled
    once for every set together: the movers' mean and the null's quantile are recomputed on each
    resample; the null's sets are fixed). Conditions: each null's excess > 0 (the first null is the
    primary figure) and, the effect-size floor, the movers' mean drop > ``cfg.min_surgery_drop_p``
    (probability: a smaller drop is not "hurts recall"; on the random control p(Y) is ~1/V, so the
    drop cannot reach it and the row does not hold there). ``mover_heads``: the heads the movers
    claim names now (``claims.patching_movers``); when they are not the heads the stage ablated
    (claims settings changed since), the row is not measurable. ``prompts``: the stage's ``prompts``
    table; ``summary``: its summary entry.

    The p-values and robust z of each null are evidence columns, not conditions: an exhaustive null
    of n sets cannot give p below 1 / (1 + n) however far the movers lie above every set (the
    planted control's layer null holds 3 sets: p ≥ 0.25), while the excess over the null's 95th
    percentile, with its interval over prompts, says how far. Not measurable when the stage did not
    run, ran no null set, or did not ablate at ``cfg.surgery_scope``. Returns a :class:`Claim`
    (``about``: the ablated heads).
    """
    stage = "surgery"
    if prompts is None or not summary or not len(prompts):
        return _missing(stage, "the surgery stage did not run (add it to --stages)")
    named = [head_label(int(h["layer"]), int(h["head"])) for h in mover_heads or []]
    ablated = list(summary.get("heads") or [])
    if not named:
        return _missing(stage, "the movers stage did not run: no mover heads to compare")
    if sorted(named) != sorted(ablated):
        return _missing(
            stage,
            f"the surgery stage ablated {', '.join(ablated)}, the movers claim names {', '.join(named)}: rerun surgery (--force)",
        )
    scope = cfg.surgery_scope
    rows = prompts[prompts["scope"] == scope]
    if not len(rows):
        return _missing(stage, f"the surgery stage did not ablate at scope {scope!r} (surgery.scopes)")
    drops = rows.pivot(index="set_id", columns="prompt_index", values="drop_p").sort_index()
    nulls_of = rows.drop_duplicates("set_id").set_index("set_id")["null"].reindex(drops.index)
    D = drops.to_numpy(float)  # [sets, prompts]; set 0 = the movers
    n = D.shape[1]
    q = float(summary.get("quantile", 0.95))
    names = [name for name in NULLS if (nulls_of == name).any()]
    if not names:
        return _missing(stage, "no null head set was ablated (every head of the movers' layers is a mover)")
    rng = np.random.default_rng(cfg.seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=cfg.n_bootstrap) / n  # [boot, prompts]
    means, boot = D.mean(1), D @ weights.T  # [sets], [sets, boot]
    alpha = (1 - cfg.level) / 2

    def interval(x: np.ndarray) -> tuple[float, float]:
        return tuple(float(v) for v in np.quantile(x, [alpha, 1 - alpha]))

    conditions, figures = [], {}
    for name in names:
        idx = (nulls_of == name).to_numpy()
        excess = means[0] - float(np.quantile(means[idx], q))
        ci = interval(boot[0] - np.quantile(boot[idx], q, axis=0))
        figures[name] = (excess, ci)
        conditions.append(
            Condition.measured(
                f"movers' mean drop in p(Y) minus the {name} null's {100 * q:g}th percentile", None, None, excess, ci, ">", 0.0, n
            )
        )
    floor_ci = interval(boot[0])
    conditions.append(
        Condition.measured(
            "movers' mean drop in p(Y) (probability)",
            "claims.min_surgery_drop_p",
            cfg.min_surgery_drop_p,
            means[0],
            floor_ci,
            ">",
            cfg.min_surgery_drop_p,
            n,
        )
    )
    results = {(r["scope"], r["null"], r["metric"]): r for r in summary.get("results") or []}
    stats = lambda s, null: results.get((s, null, "p_answer"), {})  # noqa: E731
    parts = []
    for s in summary.get("scopes") or []:
        for null in names:
            r = stats(s, null)
            if r:
                parts.append(
                    f"{s}/{null}: movers {fmt(r.get('movers_drop'))}, null median {fmt(r.get('null_median'))}, "
                    f"{q:.0%} {fmt(r.get('null_quantile'))}, p = {fmt(r.get('p_value'))} (≥ {fmt(r.get('min_p_value'))}, "
                    f"{r.get('n_sets')} sets), robust z {fmt(r.get('effect_size'))}"
                )
    detail = (
        f"heads {', '.join(ablated)} ablated {SCOPE_WORDS[scope]} on {n} prompts (the mover heads as patching names them: "
        "C1's heads, the largest |patching effect|, whether or not they pass the movers stage's own mover test); "
        "drop in p(Y) — " + "; ".join(parts)
    )
    evidence = {
        "drop_p": number(means[0]),
        **{f"p_value_{null}": number(stats(scope, null).get("p_value")) for null in NULLS},
        **{f"effect_size_{null}": number(stats(scope, null).get("effect_size")) for null in NULLS},
    }
    value, ci = figures[names[0]]
    return decide(
        CLAIM_NECESSARY,
        stage,
        ", ".join(ablated),
        f"the mover heads' mean drop in p(Y) minus the {100 * q:g}th percentile of the {NULL_WORDS[names[0]]} random "
        f"head sets' mean drops (probability; ablation {SCOPE_WORDS[scope]})",
        value,
        ci,
        conditions,
        detail,
        evidence,
    )


def _missing(stage: str, why: str) -> Claim:
    return Claim(CLAIM_NECESSARY, None, None, None, NOT_MEASURABLE, "", "", why, stage)
