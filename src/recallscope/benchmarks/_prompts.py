"""The prompts a benchmark measures on: per shot count, the known prompts of a seeded sample."""

from __future__ import annotations

from collections.abc import Iterator

from ..models import Model, load_model
from ..recall import recall
from ..tasks import PromptSet, build_prompts, load_relation


def known_by_shots(options, default_max_prompts: tuple[int, int]) -> Iterator[tuple[Model, int, PromptSet]]:
    """``(model, shots, known prompts)`` for each of ``options.shots``: ``options.max_prompts`` prompts
    (else ``default_max_prompts`` = (with ``--quick``, without)) sampled with ``options.seed``, then
    those the model knows (the recall stage's rule). The model is loaded once."""
    model = load_model(options.model, device=options.device)
    relation = load_relation(options.relation)
    max_prompts = options.max_prompts or (default_max_prompts[0] if options.quick else default_max_prompts[1])
    for shots in options.shots:
        ps = build_prompts(relation, model.tokenizer, shots=shots, seed=options.seed, max_prompts=max_prompts)
        yield model, shots, recall(model, ps, progress=False).known_prompts()
