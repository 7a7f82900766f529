"""Stage **recall**: does the model know the fact?

For each prompt, the end-position logits give p(Y), rank(Y), π(Y) and the top-1 token; a prompt
is *known* when the top-1 token is Y (or, configurably, when Y ranks within the top k). Later
stages work on the known prompts; the result says how many were dropped and why.

Answers of several tokens (the whole-answer metric, ``answer_metric``; :mod:`recallscope.tasks.prompts`):
the answer's scored tokens are appended to the prompt and each is read at the position before
it (teacher forcing), so p = Π_t p(y_t), π = Σ_t π(y_t), and the rank is the worst of the
tokens' ranks: a prompt is *known* when every scored token ranks within the top k — with k = 1,
exactly when greedy decoding from the prompt reproduces the answer's scored tokens (each greedy
step is the top-1 token given the tokens before it, which teacher forcing supplies). The
relation's shared answer prefix is part of the prompt, so it is not asked of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from .constraints import POSITIVE, Options
from .display import ResultView
from .errors import UserError
from .figures import recall as recall_figures
from .lens import answer_stats
from .models import Model
from .tasks import PromptSet, collect
from .tasks.prompts import ANSWER_METRICS, DROP_SHARED_FIRST_TOKEN, DROP_UNKNOWN, SCORE_WHOLE_ANSWERS


@dataclass(frozen=True)
class RecallConfig:
    known_top_k: int = 1  # a prompt is "known" when rank(Y) < known_top_k (every scored token's, for several)
    batch_size: int = 64
    # how answers are scored by every stage that scores Y: "auto", "first_token" or "answer" (the
    # whole answer, teacher-forced); the pipeline builds the prompts with it (tasks.prompts)
    answer_metric: str = "auto"

    constraints: ClassVar[dict] = {"known_top_k": POSITIVE, "batch_size": POSITIVE, "answer_metric": Options(*ANSWER_METRICS)}


@dataclass(frozen=True, repr=False)  # the short repr of display.ResultView
class RecallResult(ResultView):
    stage = "recall"

    prompts: PromptSet
    frame: pd.DataFrame = field(repr=False)
    config: RecallConfig = RecallConfig()

    @property
    def known_mask(self) -> np.ndarray:
        """[n_prompts] bool: which of ``prompts`` the model knows (``config.known_top_k``)."""
        return self.frame["known"].to_numpy()

    @property
    def known(self) -> PromptSet:
        """The known prompts: what the pipeline hands every later stage (:meth:`known_prompts`).

        A stage function uses the prompts it is given, so ``movers(model, recall(model, prompts).known, config)``
        is the run's movers stage, and ``movers(model, prompts, config)`` is the same stage on every prompt."""
        return self.known_prompts()

    def known_prompts(self) -> PromptSet:
        """The prompt set filtered to known prompts; UserError with the counts if none is left."""
        kept = self.prompts.subset(self.known_mask, reason=DROP_UNKNOWN)
        if len(kept) == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(kept.dropped.items()) if v) or "no prompts"
            raise UserError(f"no known prompt left for relation {self.prompts.relation.name!r} ({reasons})")
        return kept

    def unknown_prompts(self) -> PromptSet:
        return self.prompts.subset(~self.known_mask)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The stage's tables by name (one: the main table, ``to_frame()``)."""
        return {"recall": self.to_frame()}

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict:
        f = self.frame
        dropped = {k: int(v) for k, v in self.prompts.dropped.items() if v}
        n_unknown = int((~f["known"]).sum()) if len(f) else 0
        return {
            "relation": self.prompts.relation.name,
            "shots": self.prompts.shots,
            "n_prompts": int(len(f)),
            "n_known": int(f["known"].sum()) if len(f) else 0,
            "accuracy": float(f["correct"].mean()) if len(f) else float("nan"),
            "mean_p_answer": float(f["p_answer"].mean()) if len(f) else float("nan"),
            "median_rank_answer": float(f["rank_answer"].median()) if len(f) else float("nan"),
            "mean_pi_answer": float(f["pi_answer"].mean()) if len(f) else float("nan"),
            "dropped": {**dropped, **({DROP_UNKNOWN: n_unknown} if n_unknown else {})},
            "known_rule": self.known_rule(),
            **self.prompts.metric_record(),
        }

    def known_rule(self) -> str:
        k = self.config.known_top_k
        if self.prompts.metric == "first_token":
            return f"rank(Y) < {k}"
        return (f"every scored answer token ranks < {k} under teacher forcing"
                + (" (greedy decoding reproduces the answer)" if k == 1 else ""))

    def plot(self) -> go.Figure:
        """p(Y) of the known and the unknown prompts (the first of :func:`recallscope.figures.recall.figures`)."""
        return recall_figures.figures(self.tables(), self.to_dict())[0]


@torch.no_grad()
def recall(model: Model, prompts: PromptSet, config: RecallConfig = RecallConfig(), progress: bool = True) -> RecallResult:
    """Score every prompt of ``prompts`` on ``model`` with the metric the prompts were built for
    (``prompts.metric``: Y at the end, or the whole answer teacher-forced); ``.known`` of the result
    is the prompts every later stage of the pipeline uses (stage functions use the prompts they are
    given). The table has one row per prompt (``p_answer``, ``rank_answer``, ``pi_answer`` of the
    scored tokens; ``n_answer_tokens`` and ``answer_tokens``: how many tokens were scored and their
    text — 1 and Y under the first-token metric)."""
    if len(prompts) == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(prompts.dropped.items()) if v) or "the relation has no samples"
        hint = SCORE_WHOLE_ANSWERS if prompts.dropped.get(DROP_SHARED_FIRST_TOKEN) else ""
        raise UserError(f"no prompt left for relation {prompts.relation.name!r} after filtering ({reasons}){hint}")
    tok = model.tokenizer

    def measure(indices, batch) -> dict:
        A = batch.n_targets
        if A == 1:
            trace = model.view.trace(batch.input_ids, batch.attention_mask, record=["logits"])
            stats = answer_stats(trace.logits[:, 0], batch.answer_ids().to(model.device))
        else:  # the whole answer, teacher-forced: the last A columns predict the A scored tokens
            ids, mask = batch.with_targets()
            S = ids.shape[1]
            positions = torch.arange(S - A, S).expand(len(indices), A)
            trace = model.view.trace(ids, mask, positions=positions, record=["logits"])
            stats = answer_stats(trace.logits, batch.target_ids().to(model.device))
        return {k: v.cpu().numpy() for k, v in stats.items()}

    stats = collect(prompts.prompts, tok.pad_token_id, config.batch_size, measure, "recall", progress)
    rows = [
        {
            "prompt_index": i,
            "subject": p.subject,
            "answer": p.answer,
            "template": p.template,
            "text": p.text,
            "n_tokens": p.n_tokens,
            "subject_tokens": p.subject_n_tokens,
            "answer_id": p.answer_id,
            "answer_token": tok.decode([p.answer_id]),
            "subject_token": tok.decode([p.subject_id]),
            "p_answer": float(stats["p_answer"][i]),
            "rank_answer": int(stats["rank_answer"][i]),
            "pi_answer": float(stats["pi_answer"][i]),
            "top1_id": int(stats["top1_id"][i]),
            "top1_token": tok.decode([int(stats["top1_id"][i])]),
            "p_top1": float(stats["p_top1"][i]),
            "n_answer_tokens": p.n_targets,
            "answer_tokens": tok.decode(list(p.targets)),
        }
        for i, p in enumerate(prompts.prompts)
    ]
    frame = pd.DataFrame(rows)
    frame["correct"] = frame["rank_answer"] == 0
    frame["known"] = frame["rank_answer"] < config.known_top_k
    return RecallResult(prompts=prompts, frame=frame, config=config)
