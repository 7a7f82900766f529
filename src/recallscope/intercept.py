"""Stage **intercept**: the MLP's intercept as the relation's "function application".

The decompose stage writes the MLP output as m[l] ≈ Σ_h c_h a[l,h] + c_r r + b. The intercept b is
the same vector for every prompt; Lv et al. read it as the relation itself ("capital of"): added to
a residual stream that holds the subject ("France"), it moves the stream towards the answer domain
(cities) and, with the subject, to the answer ("Paris"). Measured here:

1. **What b says** — the logit lens of b (linearised, no biases: b is one component of the
   residual, not a whole residual; reference = the *mean* final residual at the end position over
   the prompts, a positive scalar that changes no ranking), its top-k tokens, and the
   **answer-domain share**: the fraction of those top-k tokens that are first tokens of some answer
   of the relation (``PromptSet.answer_ids``). Baseline: ``n_random`` Gaussian directions of the
   same norm as b (seeded with the run seed), read the same way; the summary gives their mean share,
   a ``level`` (95%) percentile interval, the chance rate |answer domain| / V and the one-sided
   empirical p-value (1 + #random ≥ b) / (1 + n_random).
2. **Where b points** — cos(b, u_Y − u_X), averaged over prompts, with u_t = w_f ⊙ (W_U[:, t] −
   mean_v W_U[:, v]): the unembedding row of token t, centred over the vocabulary
   (:func:`recallscope.lens.token_direction`; the centring cancels in the difference) and with the
   final norm's weight w_f folded in, so that ⟨v, u_t⟩ is what the lens reads from v for t (up to
   the norm's positive per-prompt scale). Same random baseline. Beside it, per prompt,
   cos(m[l], u_X) and cos(m[l], u_Y) — does the MLP's whole output point away from the subject and
   towards the answer? — and cos(b, u_Y), cos(b, u_X).
3. **The redirect test** — for each prompt, the rank (0 = top) of Y and of X in the logit lens of
   three residual states at layer l: r_mid[l] (before the MLP), r_mid[l] + b (the intercept alone
   added) and r_mid[l] + m[l] (what the model really does; in parallel-residual models the state
   after attention and MLP). These are whole residual states, so they are read by the ordinary
   logit lens as if each were the final residual (``mode="normalised"``: the final norm with the
   state's own scale, then W_U with its bias). Summary: median rank of Y and of X at each point and
   the share of prompts where Y outranks X. If b applies the relation, Y should rise and X fall
   from the first point to the second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from .constraints import LEVEL, POSITIVE
from .display import ResultView
from .errors import UserError
from .figures import intercept as intercept_figures
from .lens import logit_lens, token_direction, token_rank
from .models.view import ModelView
from .tasks.collect import collect
from .tasks.prompts import Prompt

POINTS = ("r_mid", "r_mid_plus_b", "r_mid_plus_m")


@dataclass(frozen=True)
class InterceptConfig:
    top_k: int = 20  # tokens read from the intercept's logit lens
    n_random: int = 1000  # random directions of the same norm, for the baselines
    level: float = 0.95  # width of the baselines' percentile interval
    batch_size: int = 32
    random_chunk: int = 100  # random directions read by the lens at once (memory: chunk × V floats)

    constraints: ClassVar[dict] = {
        "top_k": POSITIVE, "n_random": POSITIVE, "level": LEVEL, "batch_size": POSITIVE, "random_chunk": POSITIVE,
    }


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class InterceptResult(ResultView):
    stage = "intercept"

    layer: int
    frame: pd.DataFrame = field(repr=False)  # one row per prompt
    top_tokens: tuple[dict, ...]
    answer_domain_share: float
    baseline_share: np.ndarray = field(repr=False)  # [n_random]
    cos_answer_minus_subject: float
    baseline_cos: np.ndarray = field(repr=False)  # [n_random]
    answer_domain_size: int
    vocab_size: int
    intercept_norm: float
    config: InterceptConfig = InterceptConfig()

    def redirect(self) -> dict:
        f = self.frame
        out = {}
        for p in POINTS:
            y, x = f[f"rank_Y_{p}"], f[f"rank_X_{p}"]
            out[p] = {
                "median_rank_Y": float(y.median()),
                "median_rank_X": float(x.median()),
                "share_Y_top1": float((y == 0).mean()),
                "share_Y_above_X": float((y < x).mean()),
            }
        return out

    def _interval(self, values: np.ndarray) -> dict:
        lo, hi = (1 - self.config.level) / 2, (1 + self.config.level) / 2
        return {"mean": float(values.mean()), "low": float(np.quantile(values, lo)), "high": float(np.quantile(values, hi))}

    def tables(self) -> dict[str, pd.DataFrame]:
        """The stage's tables by name (one: the main table, ``to_frame()``)."""
        return {"intercept": self.to_frame()}

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict:
        f = self.frame
        share_base = self._interval(self.baseline_share)
        cos_base = self._interval(self.baseline_cos)
        n = len(self.baseline_share)
        return {
            "layer": self.layer,
            "n_prompts": int(len(f)),
            "intercept_norm": self.intercept_norm,
            "top_k": self.config.top_k,
            "top_tokens": [dict(t) for t in self.top_tokens],
            "answer_domain_share": self.answer_domain_share,
            "answer_domain_baseline": {
                **share_base, "level": self.config.level, "n_random": n,
                "chance": self.answer_domain_size / self.vocab_size,
                "p_value": float((1 + (self.baseline_share >= self.answer_domain_share).sum()) / (1 + n)),
            },
            "answer_domain_size": self.answer_domain_size,
            "cos_b_answer_minus_subject": self.cos_answer_minus_subject,
            "cos_b_answer_minus_subject_baseline": {
                **cos_base, "level": self.config.level, "n_random": n,
                "p_value": float((1 + (self.baseline_cos >= self.cos_answer_minus_subject).sum()) / (1 + n)),
            },
            "cos_b_answer": float(f["cos_b_Y"].mean()),
            "cos_b_subject": float(f["cos_b_X"].mean()),
            "cos_m_subject": float(f["cos_m_X"].mean()),
            "cos_m_answer": float(f["cos_m_Y"].mean()),
            "redirect": self.redirect(),
            "directions": "u_t = w_f ⊙ (W_U[:,t] − mean_v W_U[:,v]): centred unembedding, final-norm weight folded in",
            "lens": ("b: linearised lens, reference = mean final residual at the end, no biases; "
                     "redirect: the normalised lens (each state read as the final residual), ranks 0 = top"),
        }

    def plot(self) -> go.Figure:
        """The logit lens of the intercept: top tokens (the first of :func:`recallscope.figures.intercept.figures`)."""
        return intercept_figures.figures(self.tables(), self.to_dict())[0]


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def domain_share(logits: Tensor, domain: Tensor, top_k: int) -> Tensor:
    """Share [...] of the top_k tokens of each row of logits [..., V] that lie in ``domain``."""
    top = logits.topk(top_k, dim=-1).indices
    return torch.isin(top, domain).float().mean(-1)


@torch.no_grad()
def analyse_intercept(
    view: ModelView,
    prompts: Sequence[Prompt],
    intercept: Tensor,
    layer: int,
    answer_domain: Sequence[int],
    config: InterceptConfig = InterceptConfig(),
    seed: int = 0,
    pad_id: int = 0,
    decode: Callable[[int], str] = str,
    progress: bool = True,
) -> InterceptResult:
    """The intercept stage (see the module docstring): b of MLP ``layer`` ([d_model], residual units)
    read by the logit lens, against random directions, and the redirect test on ``prompts``.

    ``prompts``: the prompts the stage uses, as given (the pipeline passes the known ones,
    ``recall(model, prompts).known``; a direct call on them reproduces the run's table).
    ``answer_domain``: token ids of the relation's answers' first tokens. UserError on a bad
    layer, setting or shape, no prompt, or an empty answer domain."""
    cfg = view.cfg
    prompts = list(prompts)
    if not prompts:
        raise UserError("intercept: no prompt to analyse")
    if not 0 <= layer < cfg.n_layers:
        raise UserError(f"--layer {layer} out of range: the model has layers 0..{cfg.n_layers - 1}")
    if intercept.shape != (cfg.d_model,):
        raise UserError(f"intercept: b has shape {tuple(intercept.shape)}, the model's width is {cfg.d_model} (re-run decompose)")
    if config.top_k < 1 or config.n_random < 1:
        raise UserError(f"intercept: top_k and n_random must be >= 1, got {config.top_k} and {config.n_random}")
    if not answer_domain:
        raise UserError("intercept: the relation has no answer domain (no usable answer)")
    b = intercept.to(view.device, view.dtype)
    domain = torch.tensor(sorted(set(int(t) for t in answer_domain)), device=view.device)
    N = len(prompts)
    V = view.weights.W_U.shape[1]

    def measure(indices, batch) -> dict:
        t = view.trace(batch.input_ids, batch.attention_mask, record=["resid_mid", "mlp_out", "resid_final"])
        r_mid, m = t.resid_mid[:, 0, layer], t.mlp_out[:, 0, layer]
        y_ids, x_ids = batch.answer_ids().to(view.device), batch.subject_ids().to(view.device)
        states = {"r_mid": r_mid, "r_mid_plus_b": r_mid + b, "r_mid_plus_m": r_mid + m}
        ranks = {}
        for name, state in states.items():
            logits = logit_lens(view, state, mode="normalised").float()
            ranks[f"rank_Y_{name}"] = token_rank(logits, y_ids).cpu().numpy()
            ranks[f"rank_X_{name}"] = token_rank(logits, x_ids).cpu().numpy()
        u_y, u_x = token_direction(view, y_ids), token_direction(view, x_ids)
        cos = {
            "cos_m_Y": _cos(m, u_y), "cos_m_X": _cos(m, u_x),
            "cos_b_Y": _cos(b.expand_as(u_y), u_y), "cos_b_X": _cos(b.expand_as(u_x), u_x),
            "cos_b_YX": _cos(b.expand_as(u_y), u_y - u_x),
        }
        return {
            "final": t.resid_final[:, 0].double(), "diff": (u_y - u_x).double(),
            **{k: v.astype(np.int64) for k, v in ranks.items()},
            **{k: v.cpu().numpy().astype(np.float64) for k, v in cos.items()},
        }

    got = collect(prompts, pad_id, config.batch_size, measure, "intercept: redirect test", progress)
    finals, diffs = got.pop("final"), got.pop("diff")
    rows = {
        "prompt_index": np.arange(N), "subject": [p.subject for p in prompts], "answer": [p.answer for p in prompts],
        "answer_id": [p.answer_id for p in prompts], "subject_id": [p.subject_id for p in prompts],
        "answer_token": [decode(p.answer_id) for p in prompts], "subject_token": [decode(p.subject_id) for p in prompts],
        **got,
    }
    frame = pd.DataFrame(rows)

    # The logit lens of b, and of random directions of the same norm, with one reference.
    reference = finals.mean(0).to(view.dtype)
    lens_b = logit_lens(view, b, reference=reference).float()
    top = lens_b.topk(config.top_k)
    in_domain = torch.isin(top.indices, domain)
    top_tokens = tuple(
        {"token": decode(int(i)), "token_id": int(i), "logit": float(v), "in_domain": bool(d)}
        for i, v, d in zip(top.indices.tolist(), top.values.tolist(), in_domain.tolist(), strict=True)
    )
    share = float(in_domain.float().mean())
    cos_b = float(_cos(b.expand(N, -1), diffs).mean())
    gen = torch.Generator().manual_seed(int(seed))
    norm_b = float(b.double().norm())
    base_share, base_cos = [], []
    for start in range(0, config.n_random, config.random_chunk):
        n = min(config.random_chunk, config.n_random - start)
        rand = torch.randn(n, cfg.d_model, generator=gen, dtype=torch.float64)
        rand = (rand / rand.norm(dim=-1, keepdim=True) * norm_b).to(view.device)
        logits = logit_lens(view, rand.to(view.dtype), reference=reference).float()
        base_share.append(domain_share(logits, domain, config.top_k).cpu())
        # Mean over prompts of cos(random, u_Y − u_X): normalise both, then one matrix product.
        unit_d = diffs / diffs.norm(dim=-1, keepdim=True)
        base_cos.append(((rand / rand.norm(dim=-1, keepdim=True)) @ unit_d.T).mean(-1).cpu())
    return InterceptResult(
        layer=layer, frame=frame, top_tokens=top_tokens, answer_domain_share=share,
        baseline_share=torch.cat(base_share).numpy(), cos_answer_minus_subject=cos_b,
        baseline_cos=torch.cat(base_cos).numpy(), answer_domain_size=int(len(domain)), vocab_size=int(V),
        intercept_norm=norm_b, config=config,
    )


def check_config(config: InterceptConfig, model=None) -> None:
    """The settings that the declared constraints do not cover (none depend on the model today)."""
    if config.top_k < 1 or config.n_random < 1:
        raise UserError(f"intercept: top_k and n_random must be >= 1, got {config.top_k} and {config.n_random}")
