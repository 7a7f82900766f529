"""Stage **knockout**: attention knockout (Geva et al. 2023, "Dissecting Recall of Factual
Associations in Auto-Regressive Language Models", §4) — in which layers does the last position
read the subject?

The method, as Geva et al.'s code runs it (google-research, ``dissecting_factual_predictions/
factual_associations_dissection.ipynb``: ``set_block_attn_hooks``, ``trace_with_attn_block``
and the "Information flow analysis" cell):

- For a window of k consecutive layers centred on layer l — ``range(max(0, l − k//2),
  min(L, l − (−k//2)))``, the same centred, truncated windows as ROME's, one per layer l — the
  attention edges from the **last position** to a set of positions are blocked: their entries
  of the attention mask are set to the dtype's minimum before the softmax, so those keys get
  probability 0 and the rest renormalise (``attn_mask[s, t] = 0`` → ``(1 − mask)·min``).
- Blocked sets: ``subject`` (every subject token), and the two controls ``non_subject`` (every
  position before the last that is not a subject token) and ``last`` (the last position's edge
  to itself).
- The effect is the relative change of p(Y) at the last position,
  100 · (p_blocked − p_clean) / p_clean (%), per prompt; recallscope reports its mean over
  prompts per window with a bootstrap interval (``stats.bootstrap_ci``, percentile, over
  prompts). Geva et al. score the model's top-1 token; recallscope scores Y, the answer's first
  token (the same token on the known prompts this stage is given). Under the whole-answer metric
  (answers of several tokens, :mod:`recallscope.tasks.prompts`) the answer's first A − 1 scored
  tokens follow the end, p is the probability of the whole scored answer, Π_t p(y_t)
  teacher-forced, and the edges blocked are still the **end position's** (Geva et al.'s last
  position, which predicts the first scored token): the appended answer positions keep theirs,
  so a drop measures what the end's reading of the subject adds to the answer.

The ``non_subject`` control includes the first position. On models that use it as an
attention sink (most of the last position's attention parked there, as in smollm2-135m),
blocking it redistributes that mass over the remaining keys and collapses p(Y) in most windows:
under Geva et al.'s definition that is what this control measures; compare the subject curve
with ``last`` and read ``non_subject`` with this in mind.

Window size: Geva et al. use k = 9 for GPT-2 XL's 48 layers. recallscope's default scales that
share of the depth: k = max(1, round(9 · L / 48)) (6 for smollm2-135m's 30 layers);
``knockout.window`` sets it.

Which edges are blocked, exactly: in every layer of the window, for **every query head**, the
edge from the last position's query to each blocked key position (the mask is shared by the
heads, as in Geva et al.'s code, which repeats one mask over the heads). With grouped-query
attention the keys/values of a key/value head are unchanged (other positions still read them);
only the last position's attention pattern of each query head loses those keys. In a layer with
a sliding window (Gemma), an edge outside the window is already absent, so blocking it changes
nothing: the edges removed are the requested ones that the layer's window allows.

Engines: ``naive`` runs one full forward per (blocked set, window) (``view.trace`` with
``attn_bias`` edits), as Geva et al. do; ``exact`` (default) reuses the clean run: blocking edges
*from the last position* changes nothing at earlier positions, and nothing below the window, so
each knockout runs only the last position from the window's first layer upward over the clean
run's cached keys/values (``ModelView.forward_from``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .causal_trace import answer_seq_prob, check_subjects, window_layers
from .claims import NOT_MEASURABLE, Claim, ClaimsConfig, Condition, decide
from .constraints import LEVEL, POSITIVE, RESAMPLES, Options
from .display import ResultView
from .errors import UserError
from .figures import knockout as knockout_figures
from .models import Model
from .models.view import ModelView
from .progress import track
from .stats import bootstrap_ci
from .tasks import PromptSet
from .tasks.prompts import Batch, batches

BLOCKS = ("subject", "non_subject", "last")
ENGINES = ("exact", "naive")


@dataclass(frozen=True)
class KnockoutConfig:
    window: int | None = None  # k layers blocked together; None: max(1, round(9 · L / 48)); 1 ≤ k ≤ L
    blocks: tuple[str, ...] = BLOCKS  # from "subject", "non_subject", "last"
    engine: str = "exact"  # "exact" | "naive"
    batch_size: int = 16  # prompts per batch; > 0
    n_bootstrap: int = 2000
    level: float = 0.95
    seed: int = 0

    constraints: ClassVar[dict] = {
        "window": POSITIVE,
        "blocks": Options(*BLOCKS),
        "engine": Options(*ENGINES),
        "batch_size": POSITIVE,
        "n_bootstrap": RESAMPLES,
        "level": LEVEL,
    }


def default_window(n_layers: int) -> int:
    """Geva et al.'s k = 9 of GPT-2 XL's 48 layers, scaled to the model's depth."""
    return max(1, round(9 * n_layers / 48))


def check_config(config: KnockoutConfig, model: Model | None = None) -> None:
    """Raise :class:`UserError` (one line) for a setting out of range; before any work."""
    bad = [b for b in config.blocks if b not in BLOCKS]
    if bad or not config.blocks:
        raise UserError(f"knockout.blocks: unknown {bad or 'empty list'}; choose from {', '.join(BLOCKS)}")
    if config.engine not in ENGINES:
        raise UserError(f"knockout.engine must be one of {', '.join(ENGINES)}, got {config.engine!r}")
    if config.batch_size < 1:
        raise UserError(f"knockout.batch_size must be >= 1, got {config.batch_size}")
    if config.window is not None and config.window < 1:
        raise UserError(f"knockout.window must be >= 1, got {config.window}")
    if model is not None and config.window is not None and config.window > model.cfg.n_layers:
        raise UserError(
            f"knockout.window {config.window} is larger than the model ({model.cfg.n_layers} layers); set --set knockout.window=N with N <= {model.cfg.n_layers}"
        )


def blocked_keys(batch: Batch, block: str) -> Tensor:
    """[B, S] true at the key positions whose edge from the last position is blocked."""
    B, S = batch.input_ids.shape
    real = batch.attention_mask.bool()
    subject = batch.subject_mask() & real
    subject[:, -1] = False  # the last position's edge to itself is the "last" control, never a subject edge
    if block == "subject":
        return subject
    if block == "non_subject":
        keys = real & ~subject
        keys[:, -1] = False
        return keys
    keys = torch.zeros(B, S, dtype=torch.bool)
    keys[:, -1] = True
    return keys


def block_edit(keys: Tensor, query: int = -1):
    """An ``attn_bias`` edit: query row ``query``'s (the end's) entries at ``keys`` [B, S] := dtype
    min (blocked). The end is the last query, or under the whole-answer metric the A-th from
    last (row −A of the whole sequence and of an incremental forward over the last A positions)."""

    def edit(bias: Tensor) -> Tensor:
        bias = bias.clone()
        row = bias[:, :, query, :]
        bias[:, :, query, :] = row.masked_fill(keys[:, None, :].to(bias.device), torch.finfo(bias.dtype).min)
        return bias

    return edit


def _scored_rows(batch: Batch) -> tuple[Tensor, Tensor, Tensor, int]:
    """(input_ids, attention_mask [B, S + A − 1], scored tokens [B, A], A): the rows with their
    answer tokens appended (A = 1: the batch's own)."""
    ids, mask = batch.with_targets()
    return ids, mask, batch.target_ids(), batch.n_targets


def _keys_of(batch: Batch, block: str, width: int) -> Tensor:
    """:func:`blocked_keys` widened to the rows with the answer tokens (never blocked: they come after the end)."""
    keys = blocked_keys(batch, block)
    return torch.cat([keys, keys.new_zeros(keys.shape[0], width - keys.shape[1])], 1)


@torch.no_grad()
def naive_batch(view: ModelView, batch: Batch, blocks, window: int) -> tuple[np.ndarray, dict]:
    """p_clean [B] and {block: p_blocked [B, L]}: one full forward per (block, window centre)."""
    L = view.cfg.n_layers
    ids, mask, y, A = _scored_rows(batch)
    y = y.to(view.device)
    S = ids.shape[1]
    at = torch.arange(S - A, S).expand(len(batch.prompts), A)
    base = view.trace(ids, mask, positions=at, record=["logits"])
    p_clean = answer_seq_prob(view, base.logits, y).cpu().numpy()
    out = {}
    for block in blocks:
        keys = _keys_of(batch, block, S)
        table = np.zeros((len(batch.prompts), L))
        for centre in range(L):
            edits = {("attn_bias", m): block_edit(keys, -A) for m in window_layers(centre, window, L)}
            tr = view.trace(ids, mask, positions=at, record=["logits"], edits=edits)
            table[:, centre] = answer_seq_prob(view, tr.logits, y).cpu().numpy()
        out[block] = table
    return p_clean, out


@torch.no_grad()
def exact_batch(view: ModelView, batch: Batch, blocks, window: int) -> tuple[np.ndarray, dict]:
    """As :func:`naive_batch`, running only the last position from the window's first layer up
    (under the whole-answer metric the end and the A − 1 answer positions after it).

    Rows = prompts × blocked sets (each row has its own mask); one
    :meth:`ModelView.forward_from` call per window centre, over the clean run's keys/values of
    every earlier position."""
    L = view.cfg.n_layers
    ids, attention_mask, y, A = _scored_rows(batch)
    B, S = ids.shape
    nb = len(blocks)
    y = y.to(view.device)
    positions = torch.arange(S - A, S).expand(B, A)
    clean = view.trace(ids, attention_mask, record=["logits", "resid_pre"], return_kv=True, positions=positions)
    p_clean = answer_seq_prob(view, clean.logits, y).cpu().numpy()

    def rows(x: Tensor) -> Tensor:  # row r = block r // B, prompt r % B
        return x.repeat(nb, *([1] * (x.dim() - 1)))

    keys = torch.cat([_keys_of(batch, block, S) for block in blocks])
    mask = rows(attention_mask.to(view.device))
    past = [(rows(k[:, :, : S - A]), rows(v[:, :, : S - A])) for k, v in clean.kv]
    resid = rows(clean.resid_pre)  # [nb·B, A, L, d] at the end (and the answer positions)
    table = np.zeros((nb * B, L))
    edit = block_edit(keys, -A)
    at = rows(positions)
    for centre in range(L):
        layers = window_layers(centre, window, L)
        tr = view.forward_from(
            resid[:, :, layers[0]],
            layers[0],
            mask,
            past,
            positions=at,
            record=["logits"],
            edits={("attn_bias", m): edit for m in layers},
        )
        table[:, centre] = answer_seq_prob(view, tr.logits, rows(y)).cpu().numpy()
    return p_clean, {block: table[i * B : (i + 1) * B] for i, block in enumerate(blocks)}


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class KnockoutResult(ResultView):
    stage = "knockout"

    """Attention knockout of a prompt set.

    ``frame`` (main table): one row per prompt × blocked set × window: ``prompt_index``,
    ``block``, ``layer`` (the window's centre), ``first_layer``, ``last_layer`` (the blocked
    layers, inclusive), ``n_edges`` (key positions blocked per layer and query head),
    ``p_clean``, ``p_blocked`` (p(Y)), ``relative_change_pct`` = 100 (p_blocked − p_clean) / p_clean.
    ``windows``: block × layer: mean relative change (%) with its bootstrap interval, n_prompts.
    """

    prompts: PromptSet
    frame: pd.DataFrame = field(repr=False)
    windows: pd.DataFrame = field(repr=False)
    config: KnockoutConfig
    window: int
    n_layers: int
    engine_seconds: float = 0.0
    mover_layers: tuple[int, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"knockout": self.to_frame(), "windows": self.windows.copy()}

    def dip(self, block: str = "subject") -> dict | None:
        """The window with the most negative mean relative change of ``block``."""
        w = self.windows[self.windows["block"] == block]
        if not len(w):
            return None
        row = w.loc[w["mean_relative_change_pct"].idxmin()]
        return {
            "layer": int(row["layer"]),
            "first_layer": int(row["first_layer"]),
            "last_layer": int(row["last_layer"]),
            "mean_relative_change_pct": float(row["mean_relative_change_pct"]),
            "ci_low": float(row["ci_low"]),
            "ci_high": float(row["ci_high"]),
        }

    def to_dict(self) -> dict:
        return {
            "relation": self.prompts.relation.name,
            "shots": self.prompts.shots,
            "n_prompts": int(self.frame["prompt_index"].nunique()),
            "n_layers": self.n_layers,
            "window": self.window,
            "window_rule": (
                "set by knockout.window"
                if self.config.window is not None
                else "max(1, round(9 · L / 48)): Geva et al.'s 9 of GPT-2 XL's 48 layers, scaled"
            ),
            "blocks": list(self.config.blocks),
            "engine": self.config.engine,
            "answer_metric": self.prompts.metric,  # p of Y, or of the whole scored answer (tasks.prompts)
            "dips": {block: self.dip(block) for block in self.config.blocks},
            "mover_layers": list(self.mover_layers),
        }

    def plot(self):
        return knockout_figures.figures(self.tables(), self.to_dict())[0]


def knockout(
    model: Model,
    prompts: PromptSet,
    config: KnockoutConfig = KnockoutConfig(),
    progress: bool = True,
    mover_layers: tuple[int, ...] = (),
) -> KnockoutResult:
    """Attention knockout for every prompt, blocked set and window (see the module docstring).

    ``prompts``: the prompts the stage uses, as given (the pipeline passes the known ones, ``recall(model, prompts).known``; a direct call on them reproduces the run's table).

    ``mover_layers`` (optional, from the movers stage) are carried into the summary for the
    figure and the claim. Raises :class:`UserError` for a bad setting, an empty prompt set or a
    subject not located before the last token."""
    check_config(config, model)
    check_subjects(prompts)
    view = model.view
    L = model.cfg.n_layers
    k = config.window if config.window is not None else default_window(L)
    blocks = tuple(b for b in BLOCKS if b in config.blocks)
    engine = exact_batch if config.engine == "exact" else naive_batch
    rows: dict[str, list] = {
        c: [] for c in ("prompt_index", "block", "layer", "first_layer", "last_layer", "n_edges", "p_clean", "p_blocked")
    }
    groups = list(batches(prompts.prompts, model.tokenizer.pad_token_id if model.tokenizer is not None else 0, config.batch_size))
    start = time.perf_counter()
    for indices, batch in track(
        groups, "knockout", total=len(prompts), enabled=progress, unit="prompts", weight=lambda g: len(g[0])
    ):
        p_clean, blocked = engine(view, batch, blocks, k)
        for block in blocks:
            n_edges = blocked_keys(batch, block).sum(1).numpy()
            for row, i in enumerate(indices):
                for centre in range(L):
                    layers = window_layers(centre, k, L)
                    rows["prompt_index"].append(prompts.prompts[i].index)
                    rows["block"].append(block)
                    rows["layer"].append(centre)
                    rows["first_layer"].append(layers[0])
                    rows["last_layer"].append(layers[-1])
                    rows["n_edges"].append(int(n_edges[row]))
                    rows["p_clean"].append(float(p_clean[row]))
                    rows["p_blocked"].append(float(blocked[block][row, centre]))
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(rows).sort_values(["prompt_index", "block", "layer"], kind="stable").reset_index(drop=True)
    frame["relative_change_pct"] = 100.0 * (frame["p_blocked"] - frame["p_clean"]) / frame["p_clean"]
    windows = window_means(frame, config)
    return KnockoutResult(prompts, frame, windows, config, k, L, seconds, tuple(sorted(set(mover_layers))))


def window_means(frame: pd.DataFrame, config: KnockoutConfig) -> pd.DataFrame:
    out = []
    for (block, layer), g in frame.groupby(["block", "layer"], sort=False):
        v = g["relative_change_pct"].to_numpy(float)
        lo, hi = bootstrap_ci(v, n=config.n_bootstrap, level=config.level, seed=config.seed)
        out.append(
            {
                "block": block,
                "layer": int(layer),
                "first_layer": int(g["first_layer"].iloc[0]),
                "last_layer": int(g["last_layer"].iloc[0]),
                "mean_relative_change_pct": float(v.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "n_prompts": len(v),
            }
        )
    return pd.DataFrame(out).sort_values(["block", "layer"]).reset_index(drop=True)


# --------------------------------------------------------------------------- claims
CLAIM_READS_SUBJECT = "The last position reads the subject in the layers where the mover heads sit (attention knockout)"


def reads_subject_claim(
    windows: pd.DataFrame | None, summary: dict | None, mover_layers, cfg: ClaimsConfig = ClaimsConfig()
) -> Claim:
    """Geva et al. §4 against the paper's mover heads: blocking the last position's edges to the
    subject lowers p(Y) most in a window that contains a mover head's layer.

    Figure: the subject curve's lowest mean relative change of p(Y) (%) with its bootstrap
    interval. Holds when that interval's high end is at most −``cfg.min_knockout_drop_pct``
    (an effect-size floor chosen by recallscope, default a 10% drop: Geva et al. report drops of
    tens of percent; without a floor any noise-level dip passed "interval < 0"), the dip's interval
    lies below the non-subject control's mean at the same window (when that control ran), and the
    window [first, last layer] holds a mover head. Does not hold when an interval lies wholly on the
    failing side (or no mover head is in the window); inconclusive when one straddles
    (``claims.decide``). ``mover_layers``: the layers of the heads patching
    singles out as movers (``claims.patching_movers``, the heads the movers claim tests, whether
    or not they pass that claim's test; the pipeline passes them); empty: not measurable."""
    stage = "knockout"
    if windows is None or summary is None or not len(windows):
        return Claim(CLAIM_READS_SUBJECT, None, None, None, NOT_MEASURABLE, "", "", "the knockout stage did not run", stage)
    mover_layers = sorted({int(x) for x in (mover_layers or ())})
    subject = windows[windows["block"] == "subject"]
    if not len(subject):
        return Claim(CLAIM_READS_SUBJECT, None, None, None, NOT_MEASURABLE, "", "", "the subject edges were not blocked", stage)
    row = subject.loc[subject["mean_relative_change_pct"].idxmin()]
    first, last, centre = int(row["first_layer"]), int(row["last_layer"]), int(row["layer"])
    control = windows[(windows["block"] == "non_subject") & (windows["layer"] == centre)]
    control_mean = float(control["mean_relative_change_pct"].iloc[0]) if len(control) else float("nan")
    measure = "lowest mean change of p(Y) (%) when the last position's edges to the subject are blocked"
    value, ci = float(row["mean_relative_change_pct"]), (float(row["ci_low"]), float(row["ci_high"]))
    detail = (
        f"dip at window {first}..{last} (centre {centre}, k = {summary.get('window')}); non-subject control there: "
        f"{control_mean:.1f}%; layers of the heads patching singles out as movers: {mover_layers or 'none'}"
    )
    if not mover_layers:
        return Claim(
            CLAIM_READS_SUBJECT,
            value,
            *ci,
            NOT_MEASURABLE,
            measure,
            "",
            detail + " (the movers stage did not run: add it to --stages)",
            stage,
        )
    inside = any(first <= m <= last for m in mover_layers)
    n = int(row["n_prompts"]) if pd.notna(row.get("n_prompts")) else None
    conditions = [
        Condition.measured(
            "lowest mean change of p(Y) (%)",
            "claims.min_knockout_drop_pct",
            cfg.min_knockout_drop_pct,
            value,
            ci,
            "<=",
            -cfg.min_knockout_drop_pct,
            n,
            sign=-1.0,
        ),
        Condition.exact("mover heads inside the window", None, None, float(inside), ">=", 1.0),
    ]
    if np.isfinite(control_mean):
        # the dip's interval against the control's mean at the same window
        conditions.append(
            Condition.measured("mean change (%) against the non-subject control", None, None, value, ci, "<", control_mean, n)
        )
    return decide(CLAIM_READS_SUBJECT, stage, f"layers {first}..{last}", measure, value, ci, conditions, detail, {})
