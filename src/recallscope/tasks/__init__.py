"""Tasks: relations (built-in and LRE files), k-shot prompts, corruptions, padded batches."""

from .collect import collect
from .prompts import Batch, Prompt, PromptSet, batches, build_prompts, corruptions, make_batch
from .relation import Relation, Sample, builtin_names, load_relation

__all__ = ["collect", "Batch", "Prompt", "PromptSet", "batches", "build_prompts", "corruptions", "make_batch",
           "Relation", "Sample", "builtin_names", "load_relation"]
