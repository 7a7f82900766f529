"""Stage **onset**: how early, layer by layer, the subject reaches the last position and the answer
domain appears there — the per-prompt figures behind the question *what do demonstrations change?*

Lv et al. (2024, arXiv 2403.19521) compare zero- and few-shot prompts. The one few-shot sentence of
their abstract, "These zero-shot mechanisms are also employed in few-shot scenarios" (v1; v4 reads "in
both zero- and few-shot setups"), is claim C6's (the same heads). recallscope's issue 30 reads their
few-shot analysis as reporting that with demonstrations the mover heads act in earlier layers and the
model recognises the output domain (the kind of answer: a city) earlier; these rows test that reading.
No sentence of that section is quoted here: its text was not at hand when the rows were written, so a
reader should check the wording against the paper. This stage measures, per known prompt at the end
position, in one forward pass, the two onsets that statement is about, and p(Y); the claims across the
shot counts of a sweep (:func:`earlier_claims`, rows C10 and C11) compare them between the fewest and
the most shots.

(a) **Move onset** — when the subject arrives at the last position. Each head's write a[l,h] at the
    end position (the recorded ``head_out``: its share of what reaches the residual) read along the
    subject's unembedding, as the movers stage's projection a[l,h]·u_X does, but as a direct logit
    attribution: the linearised logit lens at the prompt's final residual, read at X minus its mean
    over the vocabulary (:func:`recallscope.lens.token_attribution`, logits of π(X)). Summed over the
    **mover heads** of a layer — the heads patching singles out in this cell (``claims.patching_movers``,
    the heads claim C1 tests and the surgery stage ablates; the pipeline passes them) — ``attn_write_x``;
    accumulated over layers 0..l, ``attn_write_x_cumulative`` C(l): how much of X the mover heads have
    moved to the end by the end of layer l. Its peak over layers is ``move_peak`` (logits); the **move
    layer** is the first layer l where C(l) ≥ ``move_fraction`` × the peak (undefined, NaN, when the
    peak is ≤ 0: the movers moved nothing). This is issue 30's wording: "the earliest layer at which the
    mover heads' write along W_U[X] crosses a stated fraction of its maximum". Each cell's own movers
    are read, so where demonstrations hand the transport to heads in earlier layers (which C6 tests as
    a change of heads) the move layer moves with them. The same sum over **every** head (the attention's
    net transport of X, whatever heads do it) is kept beside it, ``attn_write_x_every_head`` and its
    running sum, and C10 reports its shift as a second figure; it is also the move measure of a run
    without the movers stage (``movers=None``: the summary's ``move_heads`` then says "every head").
    Why this and not causal tracing's restoration of the subject at the last token (ROME's
    ``trace_important_states`` at the last position, the ``trace`` stage), the issue's alternative: that
    needs T·L restorations of n noised runs per prompt (minutes per prompt on two cores: the trace
    stage is opt-in), while this is one forward pass, cheap enough for every run, and reads the same
    write the movers stage and claim C1 read.
(b) **Domain onset** — when the answer domain appears. The logit lens at the end position of the
    residual after each layer l, r[l + 1] (the whole state read as the final residual: final norm with
    its own scale, unembedding, ``mode="normalised"``; after the last layer it is the model's logits),
    and the share of its top ``domain_top_k`` tokens that are first tokens of the relation's answers —
    the answer domain exactly as the intercept stage defines it (``PromptSet.answer_ids``: every usable
    answer of the relation, so the same set at every shot count). The **domain layer** is the first
    layer whose share is ≥ ``domain_share``; a prompt whose lens never gets there has domain layer L
    (one past the last layer: censored, so a comparison counts it as late as possible, never dropped).
(c) **p(Y)** from the final logits (equal to the recall stage's).

Layer indices: l is the layer whose attention (a) or whose output (b) is read, 0..L − 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from .claims import NOT_MEASURABLE, Claim, ClaimsConfig, Condition, decide
from .constraints import POSITIVE, PROBABILITY, Interval
from .display import ResultView
from .errors import UserError
from .figures import onset as onset_figures
from .lens import token_attribution
from .models.view import LOGIT_ELEMENTS, ModelView
from .stats import bootstrap_ci, bootstrap_ci_samples
from .tasks.collect import collect
from .tasks.prompts import Prompt


@dataclass(frozen=True)
class OnsetConfig:
    move_fraction: float = 0.5  # the move layer: C(l) reaches this share of its peak (0.5: half the transport done)
    domain_top_k: int = 10  # top tokens of the logit lens read for the answer domain
    min_domain_share: float = 0.2  # the domain layer: at least this share of those tokens are answers' first tokens
    batch_size: int = 32

    constraints: ClassVar[dict] = {
        "move_fraction": Interval(0, 1, closed="right"),
        "domain_top_k": POSITIVE,
        "min_domain_share": PROBABILITY,
        "batch_size": POSITIVE,
    }

    def thresholds(self) -> dict:
        """The two settings the onsets are read with; the claims re-read them from the summary
        (``recallscope claims RUN_DIR --set onset.move_fraction=…``: :data:`recallscope.claims.READ_SETTINGS`)."""
        return {"move_fraction": self.move_fraction, "min_domain_share": self.min_domain_share}


def move_heads(movers: Sequence[tuple[int, int]] | None) -> str:
    """The heads that time the move, as the summary and the claims name them: "the mover heads L23H4,
    L29H1" or "every head"."""
    if movers is None:
        return "every head"
    return "the mover heads " + ", ".join(f"L{layer}H{head}" for layer, head in movers)


def first_crossing(values: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """[N] the first index along the last axis of ``values`` [N, L] where it is ≥ ``threshold`` [N]; L where none is."""
    hit = values >= np.asarray(threshold, dtype=float)[:, None]
    return np.where(hit.any(1), hit.argmax(1), values.shape[1])


def onsets(
    layers: pd.DataFrame, move_fraction: float, min_domain_share: float, cumulative: str = "attn_write_x_cumulative"
) -> pd.DataFrame:
    """Per prompt (index ``prompt_index``, ascending): ``move_peak`` (logits), ``move_layer`` (NaN when the
    peak is ≤ 0) and ``domain_layer`` (L = never) from the stage's ``layers`` table (module docstring).
    The stage writes its main table with it, and the claims read the onsets again with the settings in
    effect (``--set onset.move_fraction=…`` re-reads them without re-running the stage). ``cumulative``:
    the running write the move is read from (the mover heads'; ``attn_write_x_every_head_cumulative``
    for every head's)."""
    ordered = layers.sort_values(["prompt_index", "layer"], kind="stable")
    index = ordered["prompt_index"].drop_duplicates().to_numpy()
    n_layers = int(ordered["layer"].max()) + 1 if len(ordered) else 0
    running = ordered[cumulative].to_numpy(float).reshape(len(index), n_layers)
    share = ordered["lens_domain_share"].to_numpy(float).reshape(len(index), n_layers)
    peak = running.max(1) if n_layers else np.zeros(len(index))
    move = first_crossing(running, move_fraction * peak).astype(float)
    move[~(peak > 0)] = np.nan  # nothing moved: no onset
    domain = first_crossing(share, np.full(len(index), float(min_domain_share)))
    return pd.DataFrame(
        {"move_peak": peak, "move_layer": move, "domain_layer": domain.astype("int64")},
        index=pd.Index(index, name="prompt_index"),
    )


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class OnsetResult(ResultView):
    stage = "onset"

    frame: pd.DataFrame = field(repr=False)  # one row per prompt
    layers: pd.DataFrame = field(repr=False)  # one row per prompt × layer
    n_layers: int
    answer_domain_size: int
    config: OnsetConfig = OnsetConfig()
    movers: tuple[tuple[int, int], ...] | None = None  # the heads that time the move; None: every head

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def tables(self) -> dict[str, pd.DataFrame]:
        """``onset`` (per prompt: the move and domain layers, the move's peak, p(Y)) and ``layers`` (per
        prompt × layer: the attention's write along u_X, its running sum, the lens's answer-domain share)."""
        return {"onset": self.to_frame(), "layers": self.layers.copy()}

    def to_dict(self) -> dict:
        f, L, c = self.frame, self.n_layers, self.config
        moved = f["move_layer"].dropna()
        return {
            "n_prompts": int(len(f)),
            "n_layers": L,
            "thresholds": c.thresholds(),
            "domain_top_k": c.domain_top_k,
            "answer_domain_size": self.answer_domain_size,
            "mean_move_layer": float(moved.mean()) if len(moved) else None,
            "n_moved": int(len(moved)),
            "mean_move_peak": float(f["move_peak"].mean()) if len(f) else None,
            "mean_domain_layer": float(f["domain_layer"].mean()) if len(f) else None,
            "n_domain_reached": int((f["domain_layer"] < L).sum()),
            "mean_p_answer": float(f["p_answer"].mean()) if len(f) else None,
            "move_heads": move_heads(self.movers),
            "movers": None if self.movers is None else [{"layer": layer, "head": head} for layer, head in self.movers],
            "move": (
                f"first layer l where Σ_l'≤l Σ_h DLA(a[l',h] → π(X)) ≥ {c.move_fraction:g} × its peak over layers "
                f"(the end-position write of {move_heads(self.movers)}, at the final residual's scale)"
            ),
            "domain": (
                f"first layer whose output's logit lens at the end has ≥ {c.min_domain_share:g} of its top "
                f"{c.domain_top_k} tokens among the relation's {self.answer_domain_size} answers' first tokens; "
                f"{L} = never"
            ),
        }

    def plot(self) -> go.Figure:
        """The layer profiles (the first of :func:`recallscope.figures.onset.figures`)."""
        return onset_figures.figures(self.tables(), self.to_dict())[0]


def _domain_shares(view: ModelView, states: torch.Tensor, domain: torch.Tensor, k: int) -> torch.Tensor:
    """[...] the share of the top-k tokens of the logit lens of each state [..., d] (read as the final
    residual) that lie in ``domain``, a few rows at a time (at most LOGIT_ELEMENTS logits at once)."""
    flat = states.reshape(-1, states.shape[-1])
    rows = max(1, LOGIT_ELEMENTS // view.weights.W_U.shape[1])
    out = [
        torch.isin(view.logits_from_resid(flat[i : i + rows]).topk(k, dim=-1).indices, domain).double().mean(-1)
        for i in range(0, flat.shape[0], rows)
    ]
    return torch.cat(out).reshape(states.shape[:-1])


@torch.no_grad()
def measure_onsets(
    view: ModelView,
    prompts: Sequence[Prompt],
    answer_domain: Sequence[int],
    config: OnsetConfig = OnsetConfig(),
    pad_id: int = 0,
    progress: bool = True,
    movers: Sequence[tuple[int, int]] | None = None,
) -> OnsetResult:
    """The onsets of ``prompts`` (module docstring): one forward pass per batch, recording every head's
    end-position write [B, L, H, d] and the residual after every layer [B, L, d].

    ``movers``: the (layer, head) pairs whose write along u_X times the move (the cell's mover heads);
    None reads every head. An empty list is refused (UserError: no mover head, nothing to time).

    ``prompts``: the prompts the stage uses, as given (the pipeline passes the known ones, ``recall(model,
    prompts).known``; a direct call on them reproduces the run's tables). ``answer_domain``: token ids of the
    relation's answers' first tokens (``PromptSet.answer_ids``). UserError on no prompt or an empty domain."""
    cfg = view.cfg
    prompts = list(prompts)
    if not prompts:
        raise UserError("onset: no prompt to analyse")
    if not answer_domain:
        raise UserError("onset: the relation has no answer domain (no usable answer)")
    L = cfg.n_layers
    mask = torch.ones(L, cfg.n_heads, dtype=torch.float64)  # [L, H]: the heads whose write times the move
    if movers is not None:
        movers = sorted({(int(layer), int(head)) for layer, head in movers})
        if not movers:
            raise UserError("onset: no mover head to time the move with (the movers stage named none)")
        bad = [f"L{layer}H{head}" for layer, head in movers if not (0 <= layer < L and 0 <= head < cfg.n_heads)]
        if bad:
            raise UserError(f"onset: mover heads {', '.join(bad)} are outside the model's {L} layers × {cfg.n_heads} heads")
        mask.zero_()
        for layer, head in movers:
            mask[layer, head] = 1.0
    domain = torch.tensor(sorted({int(t) for t in answer_domain}), device=view.device)
    k = min(config.domain_top_k, view.weights.W_U.shape[1])

    def measure(indices, batch) -> dict:
        t = view.trace(batch.input_ids, batch.attention_mask, record=["head_out", "resid_pre", "resid_final"])
        final = t.resid_final[:, 0]  # [B, d]
        x = batch.subject_ids().to(view.device)
        # [B, L, H]: each head's direct contribution to π(X), at the final residual's scale
        dla = token_attribution(view, t.head_out[:, 0], final[:, None, None], x[:, None, None])
        after = torch.cat([t.resid_pre[:, 0, 1:], final[:, None]], 1)  # [B, L, d]: r[l + 1], the output of layer l
        logits = view.logits_from_resid(final).double()
        p = torch.softmax(logits, -1).gather(1, batch.answer_ids().to(view.device)[:, None])[:, 0]
        dla = dla.double().cpu()
        return {
            "write": (dla * mask).sum(-1),
            "write_every_head": dla.sum(-1),
            "share": _domain_shares(view, after, domain, k).cpu(),
            "p_answer": p.cpu(),
        }

    got = collect(prompts, pad_id, config.batch_size, measure, "onset", progress)
    write = got["write"].numpy()  # [N, L]
    every = got["write_every_head"].numpy()
    N = len(prompts)
    layers = pd.DataFrame(
        {
            "prompt_index": np.repeat(np.arange(N), L),
            "layer": np.tile(np.arange(L), N),
            "attn_write_x": write.ravel(),
            "attn_write_x_cumulative": np.cumsum(write, 1).ravel(),
            "attn_write_x_every_head": every.ravel(),
            "attn_write_x_every_head_cumulative": np.cumsum(every, 1).ravel(),
            "lens_domain_share": got["share"].numpy().ravel(),
        }
    )
    found = onsets(layers, config.move_fraction, config.min_domain_share)
    frame = pd.DataFrame(
        {
            "prompt_index": np.arange(N),
            "subject": [p.subject for p in prompts],
            "template": [p.template for p in prompts],
            "p_answer": got["p_answer"].numpy(),
            **{c: found[c].to_numpy() for c in found.columns},
        }
    )
    return OnsetResult(frame, layers, L, int(len(domain)), config, None if movers is None else tuple(movers))


def onset(
    model, prompts, config: OnsetConfig = OnsetConfig(), progress: bool = True, movers: Sequence[tuple[int, int]] | None = None
) -> OnsetResult:
    """The onset stage on a loaded :class:`~recallscope.models.Model` and a ``PromptSet``: its prompts, as
    given (the pipeline passes the known ones, ``recall(model, prompts).known``; a direct call on them
    reproduces the run's tables), and its ``answer_ids`` (the answer domain: every usable answer of the
    relation, whatever prompts are kept). ``movers``: the (layer, head) pairs that time the move (the
    pipeline passes ``claims.patching_movers`` of the cell's movers stage; None: every head). UserError
    as :func:`measure_onsets`."""
    return measure_onsets(
        model.view,
        prompts.prompts,
        prompts.answer_ids,
        config,
        pad_id=model.tokenizer.pad_token_id,
        progress=progress,
        movers=movers,
    )


# ----------------------------------------------------------------------------- claims across shot counts
CLAIM_MOVE_EARLIER = "Demonstrations move the subject to the last position earlier"
CLAIM_DOMAIN_EARLIER = "With demonstrations the answer domain appears earlier"

Cell = tuple  # (shots, main table | None, layers table | None, summary | None)
EVERY_HEAD = "attn_write_x_every_head_cumulative"


def _cell_onsets(main: pd.DataFrame, layers: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """A cell's per-prompt onsets with the thresholds its summary holds (the stage's, or ``--set`` ones
    written there by :func:`recallscope.claims.with_read_settings`), keyed by (template, subject)."""
    th = {**OnsetConfig().thresholds(), **(summary.get("thresholds") or {})}
    found = onsets(layers, float(th["move_fraction"]), float(th["min_domain_share"]))
    if EVERY_HEAD in layers.columns:  # every head's transport, C10's second figure (absent in older runs)
        every = onsets(layers, float(th["move_fraction"]), float(th["min_domain_share"]), cumulative=EVERY_HEAD)
        found["move_layer_every_head"] = every["move_layer"]
    out = main.set_index("prompt_index")[["template", "subject", "p_answer"]].join(found, how="inner")
    return out.set_index(["template", "subject"])


def _shift(a: pd.Series, b: pd.Series, paired: bool, cfg: ClaimsConfig) -> tuple[float | None, tuple, int]:
    """Mean shift b − a (layers) with its bootstrap interval, over the pairs (paired) or the two samples
    (independent), and the prompts it is over (pairs, or the smaller sample)."""
    if paired:
        both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
        diff = (both["b"] - both["a"]).to_numpy(float)
        if not len(diff):
            return None, (None, None), 0
        return float(diff.mean()), bootstrap_ci(diff, n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed), len(diff)
    x, y = a.dropna().to_numpy(float), b.dropna().to_numpy(float)
    if not len(x) or not len(y):
        return None, (None, None), 0
    ci = bootstrap_ci_samples((x, y), lambda u, v: np.mean(v) - np.mean(u), n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed)
    return float(y.mean() - x.mean()), ci, min(len(x), len(y))


def earlier_claims(relation: str, low: Cell, high: Cell, cfg: ClaimsConfig = ClaimsConfig()) -> list[Claim]:
    """The two claims about what demonstrations change, for one relation, from its onset tables at the
    fewest and the most shots (rows C10 and C11; ``low``/``high``: (shots, the onset stage's main table,
    its ``layers`` table, its summary), None for a stage that did not run there).

    What they test (Lv et al. 2024, arXiv 2403.19521, few-shot analysis; module docstring): with
    demonstrations *the mover heads act in earlier layers* (C10) and *the model recognises the output
    domain earlier* (C11), as recallscope's issue 30 words the paper's finding — not a quotation. The
    abstract's own few-shot sentence, "These zero-shot mechanisms are also employed in few-shot
    scenarios", is C6's.

    C10's move onset is timed by each cell's own mover heads (the onset stage's ``movers``, named in its
    summary's ``move_heads`` and in the row's detail); the same shift read from every head's write is
    reported beside it (detail, and ``every_head_shift`` among the evidence) where the tables hold it.

    Primary of each: the mean shift of the onset layer (most shots minus fewest; layers, negative =
    earlier) over prompts — **paired** where the same prompts (template and subject) are known at both
    shot counts (the mean of the per-prompt differences, bootstrap over those pairs), otherwise
    (fewer than two such prompts) **independent** (the difference of the two means, each cell resampled
    on its own). Rule: its interval lies below −``min_onset_shift`` (default 0: the statement itself,
    "earlier"); a shift of exactly 0 on every prompt (the same layer at both counts: the planted control)
    is an interval [0, 0], failed. Where a model has what C11 states, it holds: the planted model with a
    head added that writes the answer domain at the end once demonstration answers are in the prompt
    (tests/test_onset.py, ``planted_with_demonstrations``) gives domain onsets 1 → 0 on every prompt,
    interval [−1, −1], *holds*. C10 has no such check on a model: the planted design cannot move its
    subject earlier with demonstrations (layer 0 sees the demonstrations only through attention, so a
    layer-0 mover would act at 0 shots too, and an earlier move needs the 0-shot mover later than layer 1,
    which would change every other planted figure); its *holds* is shown on tables whose answer is known. C10 adds the floor ``min_move_logits``: the attention's peak write
    along u_X, the mean over prompts at the shot count where it is smaller (bootstrap of that minimum),
    must be ≥ it (default 1 logit of π(X)) — without a transport of the subject there is nothing whose
    timing could move, and the random control (peaks ≈ 0.07 logits) must fail there rather than straddle
    on onsets that noise places at random layers. C11 needs no floor: a domain that never appears gives
    every prompt the censored layer L at both counts, a zero shift, failed. Prompts whose move has no
    onset (peak ≤ 0) at either count are left out of C10's shift (counted in the detail).

    Columns: ``onset_fewest``/``onset_most`` (the mean onset layer at each count, over the prompts
    compared), ``p_fewest``/``p_most`` (their mean p(Y)), ``pairing`` and ``n_paired``."""
    (k0, main0, lay0, s0), (k1, main1, lay1, s1) = low, high
    if any(x is None for x in (main0, lay0, main1, lay1)) or not len(main0) or not len(main1):
        why = f"{relation}: the onset stage did not run at {k0} and {k1} shots"
        return [
            Claim(c, None, None, None, NOT_MEASURABLE, "", "", why, "onset") for c in (CLAIM_MOVE_EARLIER, CLAIM_DOMAIN_EARLIER)
        ]
    a, b = _cell_onsets(main0, lay0, s0 or {}), _cell_onsets(main1, lay1, s1 or {})
    common = a.index.intersection(b.index)
    paired = len(common) >= 2 and a.index.is_unique and b.index.is_unique
    pairing = "paired" if paired else "independent"
    if paired:
        a, b = a.loc[common], b.loc[common]
    L = int((s1 or {}).get("n_layers") or (s0 or {}).get("n_layers") or 0)
    evidence_base = {"pairing": pairing, "n_paired": len(common) if paired else 0}
    out = []
    every_evidence: dict = {}
    for claim, column, what in ((CLAIM_MOVE_EARLIER, "move_layer", "move"), (CLAIM_DOMAIN_EARLIER, "domain_layer", "domain")):
        shift, ci, n = _shift(a[column], b[column], paired, cfg)
        name = f"mean {what} onset shift, {k1} − {k0} shots (layers)"
        conds = [
            Condition.measured(
                name, "claims.min_onset_shift", cfg.min_onset_shift, shift, ci, "<", 0.0 - cfg.min_onset_shift, n, sign=-1.0
            )
        ]
        if what == "move":
            x, y = a["move_peak"].to_numpy(float), b["move_peak"].to_numpy(float)
            weaker = min(x.mean(), y.mean())
            boot = (
                bootstrap_ci_samples(
                    (np.arange(len(x)),),
                    lambda i: min(x[i].mean(), y[i].mean()),
                    n=cfg.n_bootstrap,
                    level=cfg.level,
                    seed=cfg.seed,
                    paired=True,
                )
                if paired
                else bootstrap_ci_samples(
                    (x, y), lambda u, v: min(np.mean(u), np.mean(v)), n=cfg.n_bootstrap, level=cfg.level, seed=cfg.seed
                )
            )
            conds.append(
                Condition.measured(
                    "the attention's peak write along u_X (logits), the weaker shot count",
                    "claims.min_move_logits",
                    cfg.min_move_logits,
                    weaker,
                    boot,
                    ">=",
                    cfg.min_move_logits,
                    min(len(x), len(y)),
                )
            )
            unmoved = int(a["move_layer"].isna().sum() + b["move_layer"].isna().sum())
            heads = [(summ or {}).get("move_heads", "every head") for summ in (s0, s1)]
            layers = [sorted({int(h["layer"]) for h in (summ or {}).get("movers") or []}) for summ in (s0, s1)]
            bound = ""
            if all(layers):
                named = " and ".join(f"{', '.join(map(str, ls))} at {k} shots" for ls, k in zip(layers, (k0, k1), strict=True))
                bound = (
                    f" (they sit in layers {named}: their move onset can only be one of those layers, so it moves "
                    "earlier only if the transport shifts to an earlier mover layer; every head's onset, further on, "
                    "counts every other head's write too)"
                )
            extra = (
                f"; timed by {heads[0]} at {k0} shots and {heads[1]} at {k1}{bound}"
                f"; peak write along u_X {a['move_peak'].mean():.3g} logits at {k0} shots, "
                f"{b['move_peak'].mean():.3g} at {k1}; {unmoved} prompt-counts without an onset (peak ≤ 0)"
            )
            if "move_layer_every_head" in a.columns and "move_layer_every_head" in b.columns:
                every_shift, every_ci, _ = _shift(a["move_layer_every_head"], b["move_layer_every_head"], paired, cfg)
                if every_shift is not None:
                    extra += f"; every head's move onset shifts {every_shift:.3g} [{every_ci[0]:.3g}, {every_ci[1]:.3g}] layers"
                    every_evidence = {"every_head_shift": every_shift}
        else:
            reached = lambda f: int((f["domain_layer"] < L).sum())  # noqa: E731
            extra = (
                f"; the domain appears in the lens on {reached(a)} of {len(a)} prompts at {k0} shots, "
                f"{reached(b)} of {len(b)} at {k1} (never = layer {L})"
            )
        m0, m1 = a[column].mean(), b[column].mean()
        detail = (
            f"{relation}: mean {what} onset layer {m0:.3g} at {k0} shots → {m1:.3g} at {k1} ({pairing}, "
            f"{n} prompts); mean p(Y) {a['p_answer'].mean():.3g} → {b['p_answer'].mean():.3g}{extra}"
        )
        evidence = {
            **evidence_base,
            "onset_fewest": float(m0) if pd.notna(m0) else None,
            "onset_most": float(m1) if pd.notna(m1) else None,
            "p_fewest": float(a["p_answer"].mean()),
            "p_most": float(b["p_answer"].mean()),
            **(every_evidence if what == "move" else {}),
        }
        timed_by_movers = all((summ or {}).get("movers") for summ in (s0, s1))
        about = (
            ("the mover heads' write along u_X" if timed_by_movers else "the heads' write along u_X")
            if what == "move"
            else "logit lens at the end"
        )
        out.append(
            decide(
                claim,
                "onset",
                about,
                f"mean shift of the {what} onset layer from {k0} to {k1} shots "
                f"(layers; negative = earlier; {pairing} over prompts)",
                shift,
                ci,
                conds,
                detail,
                evidence,
            )
        )
    return out
