"""Prompts: k-shot text, token positions of the subject and the answer, corruptions, batches.

A :class:`Prompt` knows its tokens, where the subject sits in them (``subject_span``), the
answer's first token Y (``answer_id``) and the subject's last token X (``subject_id``, the
"topic token" of the paper). Batches are left-padded so the end position is the last column of
every row; :class:`Batch` carries the shifted subject positions, so nothing is misaligned.

Y is found by tokenizing ``prompt + " " + answer`` and taking the first token after the prompt,
which is right for byte-level BPE and SentencePiece tokenizers alike. Answers whose first token
is shared with a *different* answer of the relation are dropped (the first-token score could
not tell them apart); so are subjects that appear twice with different answers.
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
DROP_AMBIGUOUS_SUBJECT = "subject_with_several_answers"
DROP_SUBJECT_NOT_FOUND = "subject_tokens_not_found"
DROP_EMPTY = "empty_subject_or_answer"
DROP_SUBSAMPLED = "over_max_prompts"
DROP_UNKNOWN = "unknown_to_model"
# A corruption whose own answer starts with the clean answer's first token would still be
# scored on that token: it does not remove the fact, so it is not used as a corruption.
EXCLUDE_SAME_ANSWER = "corruption_with_the_same_answer_first_token"


@dataclass(frozen=True)
class Prompt:
    text: str
    subject: str
    answer: str
    template: str
    demos: tuple[Sample, ...]
    input_ids: tuple[int, ...]
    subject_span: tuple[int, int]  # [start, stop) token indices of the query subject
    answer_id: int  # Y: first token of " " + answer after the prompt
    index: int = 0  # position in its PromptSet
    demo_template: str | None = None  # the demonstrations' template; None: the query's own

    @property
    def subject_id(self) -> int:
        """X: the subject's last token (the topic token the mover heads move)."""
        return self.input_ids[self.subject_span[1] - 1]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

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
    answer_ids: tuple[int, ...] = ()  # first tokens of every answer of the relation (the answer domain)
    # reason -> candidate corrupted prompts left out (filled by whoever draws corruptions)
    corruptions_excluded: dict = field(default_factory=dict)

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


def make_prompt(tokenizer, template: str, subject: str, answer: str, demos: tuple[Sample, ...],
                demo_template: str | None = None) -> Prompt | None:
    text, start = _prompt_text_and_subject_start(template, subject, demos, demo_template)
    assert text[start:start + len(subject)] == subject
    ids, offsets = _encode(tokenizer, text)
    span = _subject_span(offsets, start, start + len(subject))
    if span is None:
        return None
    return Prompt(
        text=text,
        subject=subject,
        answer=answer,
        template=template,
        demos=demos,
        input_ids=tuple(ids),
        subject_span=span,
        answer_id=_answer_id(tokenizer, text, ids, answer),
        demo_template=demo_template,
    )


def first_token(tokenizer, answer: str) -> int:
    return int(tokenizer(" " + answer, add_special_tokens=False)["input_ids"][0])


def build_prompts(
    relation: Relation,
    tokenizer,
    shots: int = 0,
    seed: int = 0,
    max_prompts: int | None = None,
    demonstrations: str = "template",
) -> PromptSet:
    """Every (template, sample) prompt of a relation with ``shots`` seeded demonstrations.

    Demonstrations are drawn, per prompt, from the *other* subjects of the relation with a
    seed derived from ``seed``, the subject and the template, so a prompt's demonstrations do
    not depend on which other prompts are built.

    ``demonstrations``: "template" (default) writes each demonstration in the query's own
    template; "plain" writes them in the relation's plain template — its
    ``properties.demonstration_template`` (``paper_country_capital``: "The capital of {} is",
    the paper's one-shot format), else its first zero-shot template.
    """
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
    # Answers that share their first token with a different answer cannot be scored apart.
    first = {o: first_token(tokenizer, o) for o in {s.object for s in samples}}
    owners: dict[int, set[str]] = {}
    for obj, tok in first.items():
        owners.setdefault(tok, set()).add(obj)
    clash = {o for o, t in first.items() if len(owners[t]) > 1}
    usable = [s for s in samples if s.object not in clash]
    dropped[DROP_SHARED_FIRST_TOKEN] += len(samples) - len(usable)
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
            prompt = make_prompt(tokenizer, template, sample.subject, sample.object, demos, demo_template if shots else None)
            if prompt is None:
                dropped[DROP_SUBJECT_NOT_FOUND] += 1
                continue
            prompts.append(prompt)
    if max_prompts is not None and len(prompts) > max_prompts:
        rng = np.random.default_rng(stable_seed(seed, "max_prompts"))
        keep = sorted(rng.choice(len(prompts), size=max_prompts, replace=False))
        dropped[DROP_SUBSAMPLED] += len(prompts) - max_prompts
        prompts = [prompts[i] for i in keep]
    prompts = [replace(p, index=i) for i, p in enumerate(prompts)]
    answer_ids = tuple(sorted({first[s.object] for s in usable}))
    return PromptSet(relation, shots, seed, tuple(prompts), dict(dropped), answer_ids)


def _drop_reasons(dropped: Counter, owners: dict[int, set[str]], tokenizer) -> str:
    """"answer_first_token_shared: 19 (every answer starts with the token ' 1')": the counts per
    reason, and which first tokens the dropped answers share."""
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()) if v) or "none dropped"
    shared = sorted((t for t, objs in owners.items() if len(objs) > 1), key=lambda t: -len(owners[t]))
    if not shared:
        return reasons
    if len(shared) == 1 and len(owners) == 1:
        return f"{reasons}; every answer starts with the token {tokenizer.decode([shared[0]])!r}"
    tokens = ", ".join(f"{tokenizer.decode([t])!r} ({len(owners[t])} answers)" for t in shared[:3])
    return f"{reasons}; shared first tokens: {tokens}{', ...' if len(shared) > 3 else ''}"


def corruptions(
    prompt: Prompt, prompt_set: PromptSet, tokenizer, limit: int | None = None, excluded: dict[str, int] | None = None
) -> list[Prompt]:
    """The prompt with its subject swapped for other subjects of the relation.

    Only swaps that keep the whole prompt's token count and change nothing but the subject
    tokens are kept, so every position (end included) lines up with the clean prompt. A
    subject whose answer has the clean answer's first token (on person → sport, about a quarter
    of the swaps: another footballer) is left out and counted in ``excluded`` under
    :data:`EXCLUDE_SAME_ANSWER`: its run still predicts Y, so it would dilute the corrupted mean.
    """
    out = []
    clean_first = first_token(tokenizer, prompt.answer)
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
        if any(first_token(tokenizer, answer) == clean_first for answer in answers_of[subject]):
            if excluded is not None:
                excluded[EXCLUDE_SAME_ANSWER] = excluded.get(EXCLUDE_SAME_ANSWER, 0) + 1
            continue
        other = make_prompt(tokenizer, prompt.template, subject, prompt.answer, prompt.demos, prompt.demo_template)
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
            other = make_prompt(tokenizer, p.template, candidates[j], p.answer, p.demos, p.demo_template)
            if other is not None:
                out.append(other)
                break
    return out


def answer_appended_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The tokens of ``prompt.text + " " + prompt.answer``, tokenised as one text (BOS kept,
    special tokens appended at the end dropped): what the authors' FactDataset tokenises — its
    texts carry the answer (``"… the capital of France is Paris"``)."""
    return _encode(tokenizer, prompt.text + " " + prompt.answer)[0]


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
    """Batches of prompts of similar length (less padding), in the prompts' original order."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i].n_tokens)
    chunk: list[int] = []
    for i in order:
        longest = max([prompts[j].n_tokens for j in chunk] + [prompts[i].n_tokens])
        if chunk and (len(chunk) >= batch_size or longest * (len(chunk) + 1) > max_tokens):
            yield chunk, make_batch([prompts[j] for j in chunk], pad_id)
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk, make_batch([prompts[j] for j in chunk], pad_id)
