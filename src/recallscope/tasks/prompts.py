"""Prompts: k-shot text, token positions of the subject and the answer, corruptions, batches.

A :class:`Prompt` knows its tokens, where the subject sits in them (``subject_span``), the
answer's first token Y (``answer_id``) and the subject's last token X (``subject_id``, the
"topic token" of the paper). Batches are left-padded so the end position is the last column of
every row; :class:`Batch` carries the shifted subject positions, so nothing is misaligned.

Y is found by tokenizing ``prompt + " " + answer`` and taking the first token after the prompt,
which is right for byte-level BPE and SentencePiece tokenizers alike. Subjects that appear twice
with different answers are dropped.

**Which tokens of the answer are scored** (``answer_metric``, :data:`ANSWER_METRICS`; the prompt
set says which one it used, ``PromptSet.metric``):

``first_token``
    the answer's first token Y at the end position (the paper's recall metric π(Y)). Answers whose
    first token is shared with a *different* answer of the relation are dropped: the first-token
    score could not tell them apart.
``answer`` (recallscope's metric for answers of several tokens)
    every token of the answer, teacher-forced: the answer's tokens are appended to the prompt and
    token t is scored at the position of token t − 1 (π(answer) = Σ_t π(y_t), p(answer) = Π_t
    p(y_t)). The tokens that *every* answer of the relation starts with (``" 1"`` of a birth year
    on smollm2-135m: ``'Ġ'``, ``'1'``) tell no two answers apart; they are appended to the prompt
    itself (``Prompt.answer_prefix``), so the end position is the one that predicts the first token
    where the relation's answers differ, and the scored tokens ``Prompt.target_ids`` start there.
    No answer is dropped for a shared first token.
``auto`` (default)
    ``first_token`` unless it would leave fewer than two of the relation's answers with a first
    token of their own (``presidents_birth_year``, ``presidents_election_year``: years start with
    a shared space or digit token on both embedded models), then ``answer``. Every relation that
    first-token scoring can measure keeps it, so no earlier figure changes.

Whose: recallscope's. Teacher forcing is how ROME scores a target of several tokens — the answer
appended to the prompt, the log-probability of each of its tokens read at the position before it
(``test_batch_prediction`` in ROME's experiments/py/eval_utils_counterfact.py, which averages the
negative log-probabilities over the tokens, as ``rome/compute_v.py``'s ``nll_loss_each`` does
with the prompt followed by all but the last target token). recallscope reports Π_t p(y_t) and
Σ_t π(y_t) instead of the mean: p stays a probability and π the paper's logit difference. ROME's
causal tracing and Geva et al.'s attention knockout score one token only: the model's top-1 at
the last position (``predict_from_input`` in ROME's experiments/causal_trace.py, which Geva et
al.'s code imports), and ROME's tracing skips a fact whose first predicted token is not the
whole expected answer (``calculate_hidden_flow``: ``answer.strip() != expect``). The LRE paper
(Hernandez et al., evandez/relations ``src/functional.py``) takes the top-1 next token and counts
it correct when it is a prefix of the answer (``is_nontrivial_prefix``), so on years every prompt
would be "known" once the model predicts ``" 1"``.

Why the whole answer rather than π at the first differing token alone (the other choice the
issue names): after the shared ``" 1"`` a birth year's first differing digit takes three values
(7, 8, 9) — it names a century, not the year: in ``presidents_birth_year`` 10 of the 19 samples
are born in the 1900s, so a model that always says 19xx would "know" more than half of them on
it. The whole answer makes *known* mean that greedy decoding reproduces the year.
π(answer) and p(answer) are functions of the final residuals at the A metric positions, so the
exact engines stay exact by carrying A positions (the end and the A − 1 answer tokens after it)
instead of one, each recomputed from the layer of the patch, restoration or blocked edge
upward; with A = 1 every formula is today's π(Y), p(Y) and rank(Y).
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .relation import Relation, Sample, Template

DROP_SHARED_FIRST_TOKEN = "answer_first_token_shared"
DROP_SAME_TOKENS = "answer_tokens_shared"
DROP_AMBIGUOUS_SUBJECT = "subject_with_several_answers"
DROP_SUBJECT_NOT_FOUND = "subject_tokens_not_found"
DROP_EMPTY = "empty_subject_or_answer"
DROP_SUBSAMPLED = "over_max_prompts"
DROP_UNKNOWN = "unknown_to_model"
# A corruption whose own answer starts with the clean answer's first token would still be
# scored on that token: it does not remove the fact, so it is not used as a corruption. Under the
# whole-answer metric a corruption is left out when its answer's scored tokens are the clean ones.
EXCLUDE_SAME_ANSWER = "corruption_with_the_same_answer_first_token"
EXCLUDE_SAME_ANSWER_TOKENS = "corruption_with_the_same_answer_tokens"
# How an answer is scored (the module docstring): the recall metric of every stage that scores Y.
ANSWER_METRICS = ("auto", "first_token", "answer")
# Where first-token scoring dropped answers, how to keep them (said in the messages that count the drops).
SCORE_WHOLE_ANSWERS = "; --set recall.answer_metric=answer scores every token of the answers"
METRIC_RULES = {
    "first_token": "π(Y) of the answer's first token Y at the end position",
    "answer": "π(answer) = Σ_t π(y_t) of the answer's tokens after the relation's shared prefix, teacher-forced",
}


@dataclass(frozen=True)
class Prompt:
    text: str
    subject: str
    answer: str
    template: str
    demos: tuple[Sample, ...]
    input_ids: tuple[int, ...]
    subject_span: tuple[int, int]  # [start, stop) token indices of the query subject
    answer_id: int  # Y: first token of " " + answer after the prompt (the first scored token)
    index: int = 0  # position in its PromptSet
    demo_template: str | None = None  # the demonstrations' template; None: the query's own
    # The whole-answer metric: the answer's tokens the metric scores, in order (token t is predicted
    # at the position of token t − 1, the first at the end); () under the first-token metric: (Y,).
    target_ids: tuple[int, ...] = ()
    answer_prefix: tuple[int, ...] = ()  # the relation's shared answer tokens, the last of input_ids

    @property
    def subject_id(self) -> int:
        """X: the subject's last token (the topic token the mover heads move)."""
        return self.input_ids[self.subject_span[1] - 1]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def targets(self) -> tuple[int, ...]:
        """The scored tokens: ``target_ids`` under the whole-answer metric, else ``(answer_id,)``."""
        return self.target_ids or (self.answer_id,)

    @property
    def n_targets(self) -> int:
        """A: how many positions the metric reads (the end and the first A − 1 scored tokens appended)."""
        return len(self.targets)

    @property
    def subject_n_tokens(self) -> int:
        return self.subject_span[1] - self.subject_span[0]


@dataclass(frozen=True)
class PromptSet:
    relation: Relation
    shots: int
    seed: int
    prompts: tuple[Prompt, ...]
    dropped: dict = field(default_factory=dict)  # reason -> count of prompts
    answer_ids: tuple[int, ...] = ()  # first scored tokens of every answer of the relation (the answer domain)
    # reason -> candidate corrupted prompts left out (filled by whoever draws corruptions)
    corruptions_excluded: dict = field(default_factory=dict)
    metric: str = "first_token"  # how answers are scored: "first_token" or "answer" (ANSWER_METRICS)
    answer_prefix: tuple[int, ...] = ()  # the answer tokens every answer shares, appended to every prompt
    answer_prefix_text: str = ""  # those tokens decoded (" 1" for birth years on smollm2-135m)
    metric_reason: str = ""  # why ``metric`` (the rule of answer_metric="auto", or the setting)

    def metric_record(self) -> dict:
        """For summaries: the metric, its rule, why it was chosen and the shared prefix's text."""
        return {"answer_metric": self.metric, "answer_metric_rule": METRIC_RULES[self.metric],
                "answer_metric_reason": self.metric_reason, "answer_prefix": self.answer_prefix_text}

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:
        """One line (the dataclass's own repr lists every prompt): relation, shots, count, what was dropped."""
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()) if v)
        return f"PromptSet({self.relation.name!r}, {self.shots}-shot, {len(self)} prompts" + (f"; dropped: {dropped})" if dropped else ")")

    def subset(self, keep, reason: str | None = None) -> "PromptSet":
        """Keep prompts where ``keep`` (a bool sequence) is true; count the rest under ``reason``."""
        keep = list(keep)
        kept = tuple(replace(p, index=i) for i, p in enumerate(p for p, k in zip(self.prompts, keep, strict=True) if k))
        dropped = dict(self.dropped)
        if reason is not None and len(kept) < len(self.prompts):
            dropped[reason] = dropped.get(reason, 0) + len(self.prompts) - len(kept)
        return replace(self, prompts=kept, dropped=dropped)


def stable_seed(*parts) -> int:
    """A seed from values, the same in every process (unlike hash())."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode()) & 0x7FFFFFFF


def demo_sentence(template: str, sample: Sample) -> str:
    return f"{Template.parse(template).format(sample.subject)} {sample.object}."


def prompt_text(template: str, subject: str, demos: tuple[Sample, ...], demo_template: str | None = None) -> str:
    """"The capital of Japan is Tokyo. The capital of France is" for one demonstration.

    Demonstrations use ``demo_template`` when given (the paper's one-shot format is "The capital
    of X' is Y'. " before any lead-in: ``add_a_shot`` in the authors' fact_dataset.py), else the
    query's own template.
    """
    return _prompt_text_and_subject_start(template, subject, demos, demo_template)[0]


def _prompt_text_and_subject_start(template: str, subject: str, demos: tuple[Sample, ...],
                                   demo_template: str | None = None) -> tuple[str, int]:
    """The prompt and the character where its query subject starts, both from one parse of the template."""
    parsed = Template.parse(template)
    lead = "".join(demo_sentence(demo_template or template, d) + " " for d in demos)
    return lead + parsed.format(subject), len(lead) + len(parsed.prefix)


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of a prompt, with the special tokens the tokenizer adds
    at the start (BOS) kept and those it adds at the end (an EOS or ``<|im_end|>`` appended by
    a post-processor) removed: the last token must be the prompt's own, the position the
    answer is read from.

    Raises:
        UserError: the tokenizer adds special tokens in the middle of the text, so the
            prompt's own tokens cannot be told from them.
    """
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if ids == plain:
        return ids, offsets
    n_trailing = _trailing_added(ids, plain)
    if n_trailing is None:
        added = [t for t in ids if t not in plain]
        raise UserError(
            f"the tokenizer adds special tokens {tokenizer.convert_ids_to_tokens(added)} inside the prompt {text!r}; "
            "recallscope needs the prompt's own tokens to end the sequence"
        )
    return (ids[: len(ids) - n_trailing], offsets[: len(ids) - n_trailing]) if n_trailing else (ids, offsets)


def _trailing_added(ids: list[int], plain: list[int]) -> int | None:
    """How many tokens the tokenizer appended after the text's own tokens (``ids`` = added
    prefix + ``plain`` + added suffix), or None when ``ids`` is not of that form."""
    for lead in range(len(ids) - len(plain) + 1):
        if ids[lead: lead + len(plain)] == plain:
            return len(ids) - lead - len(plain)
    return None


def _answer_id(tokenizer, text: str, ids: list[int], answer: str) -> int:
    full = _encode(tokenizer, text + " " + answer)[0]
    if len(full) > len(ids) and list(full[: len(ids)]) == ids:
        return int(full[len(ids)])
    # The answer merged with the prompt's last token; score the answer on its own.
    return int(tokenizer(" " + answer, add_special_tokens=False)["input_ids"][0])


def _subject_span(offsets: list[tuple[int, int]], start: int, stop: int) -> tuple[int, int] | None:
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < stop and b > start]
    return (hits[0], hits[-1] + 1) if hits else None


def _answer_tokens(tokenizer, text: str, ids: list[int], answer: str) -> tuple[int, ...]:
    """Every token of " " + answer after the prompt's tokens (tokenised with the prompt, as
    :func:`_answer_id`; alone where the answer merges with the prompt's last token)."""
    full = _encode(tokenizer, text + " " + answer)[0]
    if len(full) > len(ids) and list(full[: len(ids)]) == ids:
        return tuple(int(t) for t in full[len(ids):])
    return tuple(int(t) for t in tokenizer(" " + answer, add_special_tokens=False)["input_ids"])


def make_prompt(tokenizer, template: str, subject: str, answer: str, demos: tuple[Sample, ...],
                demo_template: str | None = None, answer_prefix: tuple[int, ...] | None = None) -> Prompt | None:
    """The prompt of one (template, subject, answer) with its demonstrations; None when the
    subject cannot be located in its tokens.

    ``answer_prefix`` None: scored on the answer's first token. A tuple (the whole-answer metric):
    every answer token is a target, and the first ``len(answer_prefix)`` of them — which must be
    ``answer_prefix``, else None — are appended to the prompt (:func:`with_answer_prefix`)."""
    text, start = _prompt_text_and_subject_start(template, subject, demos, demo_template)
    assert text[start:start + len(subject)] == subject
    ids, offsets = _encode(tokenizer, text)
    span = _subject_span(offsets, start, start + len(subject))
    if span is None:
        return None
    whole = answer_prefix is not None
    targets = _answer_tokens(tokenizer, text, ids, answer) if whole else ()
    prompt = Prompt(
        text=text,
        subject=subject,
        answer=answer,
        template=template,
        demos=demos,
        input_ids=tuple(ids),
        subject_span=span,
        answer_id=targets[0] if whole else _answer_id(tokenizer, text, ids, answer),
        demo_template=demo_template,
        target_ids=targets,
    )
    return with_answer_prefix(prompt, answer_prefix, tokenizer) if whole and answer_prefix else prompt


def with_answer_prefix(prompt: Prompt, prefix: tuple[int, ...], tokenizer) -> Prompt | None:
    """A whole-answer prompt with the first ``len(prefix)`` answer tokens moved into the prompt:
    appended to its tokens (and, decoded, to its text); the targets are the rest. None when the
    prompt's answer does not start with ``prefix`` or nothing would be left to score."""
    n = len(prefix)
    if tuple(prompt.target_ids[:n]) != tuple(prefix) or len(prompt.target_ids) <= n:
        return None
    rest = prompt.target_ids[n:]
    return replace(prompt, text=prompt.text + tokenizer.decode(list(prefix)), input_ids=prompt.input_ids + tuple(prefix),
                   answer_id=rest[0], target_ids=rest, answer_prefix=tuple(prefix))


def shared_prefix(sequences) -> tuple[int, ...]:
    """The longest token prefix every sequence starts with, shorter than the shortest one (so
    each keeps at least one token to score)."""
    sequences = [tuple(t) for t in sequences]
    if not sequences:
        return ()
    limit = min(len(t) for t in sequences) - 1
    n = 0
    while n < limit and all(t[n] == sequences[0][n] for t in sequences):
        n += 1
    return sequences[0][:n]


def answer_tokens(tokenizer, answer: str) -> tuple[int, ...]:
    """The tokens of " " + answer alone (no special tokens): how two answers are compared."""
    return tuple(int(t) for t in tokenizer(" " + answer, add_special_tokens=False)["input_ids"])


def first_token(tokenizer, answer: str) -> int:
    return int(tokenizer(" " + answer, add_special_tokens=False)["input_ids"][0])


def build_prompts(
    relation: Relation,
    tokenizer,
    shots: int = 0,
    seed: int = 0,
    max_prompts: int | None = None,
    demonstrations: str = "template",
    answer_metric: str = "auto",
) -> PromptSet:
    """Every (template, sample) prompt of a relation with ``shots`` seeded demonstrations.

    Demonstrations are drawn, per prompt, from the *other* subjects of the relation with a
    seed derived from ``seed``, the subject and the template, so a prompt's demonstrations do
    not depend on which other prompts are built.

    ``demonstrations``: "template" (default) writes each demonstration in the query's own
    template; "plain" writes them in the relation's plain template — its
    ``properties.demonstration_template`` (``paper_country_capital``: "The capital of {} is",
    the paper's one-shot format), else its first zero-shot template.

    ``answer_metric`` (:data:`ANSWER_METRICS`): which tokens of the answer are scored — see the
    module docstring; the prompt set records the one used (``metric``, ``metric_reason``) and,
    under the whole-answer metric, the relation's shared answer prefix appended to every prompt.
    """
    if answer_metric not in ANSWER_METRICS:
        raise UserError(f"answer_metric must be one of {', '.join(ANSWER_METRICS)}, got {answer_metric!r}")
    if shots < 0:
        raise UserError(f"--shots must be >= 0, got {shots}")
    if demonstrations not in ("template", "plain"):
        raise UserError(f"demonstrations must be 'template' or 'plain', got {demonstrations!r}")
    demo_template = None
    if demonstrations == "plain":
        demo_template = relation.properties.get("demonstration_template") or (relation.templates_zs or relation.templates)[0]
    for template in relation.templates_for(shots):  # a Relation built in Python has not met the loader's check
        try:
            Template.parse(template)
        except ValueError as exc:
            raise UserError(f"relation {relation.name!r}: template {template!r} {exc}") from None
    dropped: Counter = Counter()
    answers_of: dict[str, set[str]] = {}
    for s in relation.samples:
        answers_of.setdefault(s.subject, set()).add(s.object)
    samples = []
    seen = set()
    for s in relation.samples:
        if not s.subject or not s.object:
            dropped[DROP_EMPTY] += 1
        elif len(answers_of[s.subject]) > 1:
            dropped[DROP_AMBIGUOUS_SUBJECT] += 1
        elif (s.subject, s.object) not in seen:
            seen.add((s.subject, s.object))
            samples.append(s)
    # Answers that share their first token with a different answer cannot be scored apart on it.
    first = {o: first_token(tokenizer, o) for o in {s.object for s in samples}}
    owners: dict[int, set[str]] = {}
    for obj, tok in first.items():
        owners.setdefault(tok, set()).add(obj)
    clash = {o for o, t in first.items() if len(owners[t]) > 1}
    n_own = len(first) - len(clash)
    if answer_metric == "auto":
        metric = "first_token" if n_own >= 2 else "answer"
        reason = (f"auto: {n_own} of the relation's {len(first)} answers have a first token of their own"
                  + ("" if metric == "first_token" else " (fewer than 2: the first token cannot tell answers apart)"))
    else:
        metric, reason = answer_metric, f"set: recall.answer_metric={answer_metric}"
    if metric == "first_token":
        usable = [s for s in samples if s.object not in clash]
        dropped[DROP_SHARED_FIRST_TOKEN] += len(samples) - len(usable)
    else:  # only answers whose every token is another answer's are left out (different strings, one tokenisation)
        whole = {o: answer_tokens(tokenizer, o) for o in first}
        holders: dict[tuple[int, ...], set[str]] = {}
        for obj, toks in whole.items():
            holders.setdefault(toks, set()).add(obj)
        usable = [s for s in samples if len(holders[whole[s.object]]) == 1]
        if len(usable) < len(samples):
            dropped[DROP_SAME_TOKENS] += len(samples) - len(usable)
    if shots > 0 and len(usable) - 1 < shots:
        raise UserError(
            f"--shots {shots} needs at least {shots + 1} usable samples in relation {relation.name!r}; it has {len(usable)} "
            f"of {len(relation.samples)} ({_drop_reasons(dropped, owners, tokenizer)})"
        )
    templates = relation.templates_for(shots)
    prompts: list[Prompt] = []
    for template in templates:
        for sample in usable:
            demos: tuple[Sample, ...] = ()
            if shots:
                rng = np.random.default_rng(stable_seed(seed, sample.subject, template))
                others = [s for s in usable if s.subject != sample.subject]
                demos = tuple(others[i] for i in rng.choice(len(others), size=shots, replace=False))
            prompt = make_prompt(tokenizer, template, sample.subject, sample.object, demos, demo_template if shots else None,
                                 answer_prefix=() if metric == "answer" else None)
            if prompt is None:
                dropped[DROP_SUBJECT_NOT_FOUND] += 1
                continue
            prompts.append(prompt)
    prefix: tuple[int, ...] = ()
    if metric == "answer":
        # the tokens every answer starts with tell no two answers apart: they join the prompt
        prefix = shared_prefix(p.target_ids for p in prompts)
        if prefix:
            prompts = [with_answer_prefix(p, prefix, tokenizer) for p in prompts]
    if max_prompts is not None and len(prompts) > max_prompts:
        rng = np.random.default_rng(stable_seed(seed, "max_prompts"))
        keep = sorted(rng.choice(len(prompts), size=max_prompts, replace=False))
        dropped[DROP_SUBSAMPLED] += len(prompts) - max_prompts
        prompts = [prompts[i] for i in keep]
    prompts = [replace(p, index=i) for i, p in enumerate(prompts)]
    if metric == "answer":  # the first scored token of each answer (after the shared prefix)
        domain = {p.answer_id for p in prompts}
        for sample in usable:
            toks = answer_tokens(tokenizer, sample.object)
            if toks[: len(prefix)] == prefix and len(toks) > len(prefix):
                domain.add(toks[len(prefix)])
        answer_ids = tuple(sorted(domain))
    else:
        answer_ids = tuple(sorted({first[s.object] for s in usable}))
    return PromptSet(relation, shots, seed, tuple(prompts), dict(dropped), answer_ids, metric=metric, answer_prefix=prefix,
                     answer_prefix_text=tokenizer.decode(list(prefix)) if prefix else "", metric_reason=reason)


def _drop_reasons(dropped: Counter, owners: dict[int, set[str]], tokenizer) -> str:
    """"answer_first_token_shared: 19 (every answer starts with the token ' 1')": the counts per
    reason, and which first tokens the dropped answers share."""
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()) if v) or "none dropped"
    shared = sorted((t for t, objs in owners.items() if len(objs) > 1), key=lambda t: -len(owners[t]))
    if not shared or not dropped.get(DROP_SHARED_FIRST_TOKEN):
        return reasons
    if len(shared) == 1 and len(owners) == 1:
        return f"{reasons}; every answer starts with the token {tokenizer.decode([shared[0]])!r}{SCORE_WHOLE_ANSWERS}"
    tokens = ", ".join(f"{tokenizer.decode([t])!r} ({len(owners[t])} answers)" for t in shared[:3])
    return f"{reasons}; shared first tokens: {tokens}{', ...' if len(shared) > 3 else ''}{SCORE_WHOLE_ANSWERS}"


def corruptions(
    prompt: Prompt, prompt_set: PromptSet, tokenizer, limit: int | None = None, excluded: dict[str, int] | None = None
) -> list[Prompt]:
    """The prompt with its subject swapped for other subjects of the relation.

    Only swaps that keep the whole prompt's token count and change nothing but the subject
    tokens are kept, so every position (end included) lines up with the clean prompt. A
    subject whose answer has the clean answer's first token (on person → sport, about a quarter
    of the swaps: another footballer) is left out and counted in ``excluded`` under
    :data:`EXCLUDE_SAME_ANSWER`: its run still predicts Y, so it would dilute the corrupted mean.
    Under the whole-answer metric (``prompt.target_ids``) the rule is on the whole answer: a subject
    whose answer has the clean answer's tokens is left out (:data:`EXCLUDE_SAME_ANSWER_TOKENS`;
    an answer that shares only its first tokens is a corruption), and the corrupted prompt carries
    the same answer prefix, so its positions line up with the clean prompt's.
    """
    out = []
    whole = bool(prompt.target_ids)  # the whole-answer metric: the answer's scored tokens must differ
    clean_first = first_token(tokenizer, prompt.answer)
    clean_tokens = answer_tokens(tokenizer, prompt.answer) if whole else ()
    answers_of: dict[str, set[str]] = {}
    for s in prompt_set.relation.samples:
        answers_of.setdefault(s.subject, set()).add(s.object)
    subjects = sorted({s.subject for s in prompt_set.relation.samples if s.subject != prompt.subject})
    rng = np.random.default_rng(stable_seed(prompt_set.seed, "corrupt", prompt.subject, prompt.template))
    rng.shuffle(subjects)
    lo, hi = prompt.subject_span
    for subject in subjects:
        if any(d.subject == subject for d in prompt.demos):
            continue
        if whole:
            same, reason = any(answer_tokens(tokenizer, a) == clean_tokens for a in answers_of[subject]), EXCLUDE_SAME_ANSWER_TOKENS
        else:
            same, reason = any(first_token(tokenizer, a) == clean_first for a in answers_of[subject]), EXCLUDE_SAME_ANSWER
        if same:
            if excluded is not None:
                excluded[reason] = excluded.get(reason, 0) + 1
            continue
        other = make_prompt(tokenizer, prompt.template, subject, prompt.answer, prompt.demos, prompt.demo_template,
                            answer_prefix=_prefix_of(prompt))
        if other is None or other.n_tokens != prompt.n_tokens or other.subject_span != prompt.subject_span:
            continue
        if other.input_ids[:lo] != prompt.input_ids[:lo] or other.input_ids[hi:] != prompt.input_ids[hi:]:
            continue
        out.append(other)
        if limit is not None and len(out) >= limit:
            break
    return out


# How the dataset means (``patch.sender_mean`` dataset, dataset_by_position) draw each prompt's
# swapped subject: recallscope's (never the clean subject nor a demonstration's) or the authors'.
CORRUPTION_DRAWS = ("other_subject", "any_subject")


def swapped_subject_prompts(prompts: PromptSet, tokenizer, draw: str = "other_subject") -> list[Prompt]:
    """One corrupted prompt per prompt: its subject swapped for a subject of the relation.

    As the authors' ``gen_flipped_prompts(('N', 'RAND'))`` (easy_transformer/fact_dataset.py)
    the subject is replaced whatever its token count, and the answer stays the clean prompt's.
    ``draw`` picks the replacement, with a seed from the prompt set's seed, the subject, the
    template and the text:

    ``other_subject`` (recallscope's default)
        uniformly among the *other* subjects, never the subject itself nor a demonstration's
        (a corruption that keeps the subject corrupts nothing).
    ``any_subject`` (the authors' draw)
        uniformly among *every* subject of the relation, as ``nations[np.random.randint(len(nations))]``
        does: the clean subject itself (the corrupted prompt is then the clean one: 1 prompt in
        n_subjects on average) and, at k shots, a demonstration's subject are allowed.

    recallscope's seeded draw follows the same distribution as the authors' but not their
    random numbers (their NumPy global state is not reproduced). A drawn subject whose prompt
    cannot be tokenised around it is passed over for the next one of the same seeded
    permutation; a prompt with no candidate at all is skipped. Returns the corrupted prompts in
    the order of ``prompts``. Raises ValueError for an unknown ``draw``.
    """
    if draw not in CORRUPTION_DRAWS:
        raise ValueError(f"draw must be one of {', '.join(CORRUPTION_DRAWS)}, got {draw!r}")
    subjects = sorted({s.subject for s in prompts.relation.samples})
    out = []
    for p in prompts.prompts:
        taken = {p.subject, *(d.subject for d in p.demos)} if draw == "other_subject" else set()
        candidates = [s for s in subjects if s not in taken]
        if not candidates:
            continue
        rng = np.random.default_rng(stable_seed(prompts.seed, "swap", p.subject, p.template, p.text))
        for j in rng.permutation(len(candidates)):
            other = make_prompt(tokenizer, p.template, candidates[j], p.answer, p.demos, p.demo_template, _prefix_of(p))
            if other is not None:
                out.append(other)
                break
    return out


def answer_appended_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The tokens of ``prompt.text + " " + prompt.answer``, tokenised as one text (BOS kept,
    special tokens appended at the end dropped): what the authors' FactDataset tokenises — its
    texts carry the answer (``"… the capital of France is Paris"``). Under the whole-answer metric
    the prompt's tokens (the shared answer prefix included) and its scored tokens: the same
    tokenisation, as the targets were cut from it."""
    if prompt.target_ids:
        return list(prompt.input_ids) + list(prompt.target_ids)
    return _encode(tokenizer, prompt.text + " " + prompt.answer)[0]


def _prefix_of(prompt: Prompt) -> tuple[int, ...] | None:
    """What :func:`make_prompt` needs to build another prompt scored like this one."""
    return prompt.answer_prefix if prompt.target_ids else None


@dataclass
class Batch:
    """Left-padded tokens of several prompts; the end position is column -1 of every row."""

    prompts: list[Prompt]
    input_ids: Tensor  # [B, S]
    attention_mask: Tensor  # [B, S]
    pad: Tensor  # [B] padding added on the left of each row

    def subject_mask(self) -> Tensor:
        """[B, S] true at the query subject's tokens."""
        B, S = self.input_ids.shape
        mask = torch.zeros(B, S, dtype=torch.bool)
        for row, p in enumerate(self.prompts):
            lo, hi = p.subject_span
            mask[row, lo + int(self.pad[row]) : hi + int(self.pad[row])] = True
        return mask

    def subject_last(self) -> Tensor:
        """[B] column of the subject's last token (X)."""
        return torch.tensor([p.subject_span[1] - 1 + int(self.pad[r]) for r, p in enumerate(self.prompts)])

    def answer_ids(self) -> Tensor:
        return torch.tensor([p.answer_id for p in self.prompts])

    @property
    def n_targets(self) -> int:
        """A, the scored tokens per prompt (1 under the first-token metric); one for every row
        (:func:`batches` groups prompts by it). ValueError when the rows differ."""
        counts = {p.n_targets for p in self.prompts}
        if len(counts) != 1:
            raise ValueError(f"a batch's prompts score different numbers of answer tokens: {sorted(counts)}")
        return counts.pop()

    def target_ids(self) -> Tensor:
        """[B, A] the scored tokens; column t is read at column S − 1 + t of :meth:`with_targets`."""
        return torch.tensor([list(p.targets) for p in self.prompts])

    def with_targets(self) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask) [B, S + A − 1]: each row with its first A − 1 scored tokens
        appended (teacher forcing). The end position is column S − 1 = −A; the metric reads the
        last A columns. With A = 1 the batch's own tensors."""
        A = self.n_targets
        if A == 1:
            return self.input_ids, self.attention_mask
        extra = torch.tensor([list(p.targets[:-1]) for p in self.prompts], dtype=self.input_ids.dtype)
        return torch.cat([self.input_ids, extra], 1), torch.cat([self.attention_mask, torch.ones_like(extra)], 1)

    def subject_ids(self) -> Tensor:
        return torch.tensor([p.subject_id for p in self.prompts])


def make_batch(prompts: list[Prompt], pad_id: int) -> Batch:
    S = max(p.n_tokens for p in prompts)
    ids = torch.full((len(prompts), S), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), S), dtype=torch.long)
    pad = torch.zeros(len(prompts), dtype=torch.long)
    for row, p in enumerate(prompts):
        n = p.n_tokens
        ids[row, S - n :] = torch.tensor(p.input_ids)
        mask[row, S - n :] = 1
        pad[row] = S - n
    return Batch(list(prompts), ids, mask, pad)


def batches(prompts, pad_id: int, batch_size: int = 64, max_tokens: int = 16384):
    """Batches of prompts of similar length (less padding), in the prompts' original order; the
    prompts of a batch score one number of answer tokens (:attr:`Batch.n_targets`)."""
    order = sorted(range(len(prompts)), key=lambda i: (prompts[i].n_targets, prompts[i].n_tokens))
    chunk: list[int] = []
    for i in order:
        longest = max([prompts[j].n_tokens for j in chunk] + [prompts[i].n_tokens])
        other_targets = bool(chunk) and prompts[chunk[0]].n_targets != prompts[i].n_targets
        if chunk and (len(chunk) >= batch_size or longest * (len(chunk) + 1) > max_tokens or other_targets):
            yield chunk, make_batch([prompts[j] for j in chunk], pad_id)
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk, make_batch([prompts[j] for j in chunk], pad_id)
