"""Benchmarks (``recallscope bench``): ratios measured side by side in one run, printed as JSON lines.

Each module ``benchmarks/<name>.py`` defines ``run(options) -> Iterator[dict]``; every dict is
one line with at least ``bench`` and ``ratio``. They are not tests: they measure, and the
figures go to BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, replace
from typing import Iterator


@dataclass(frozen=True)
class BenchOptions:
    model: str = "smollm2-135m"
    relation: str | None = None  # None: each benchmark's own (patch total: country_capital_extended; path: paper_country_capital)
    shots: tuple[int, ...] = (0, 3)
    seed: int = 0
    max_prompts: int | None = None
    device: str = "cpu"
    quick: bool = False  # smaller samples, for a smoke run
    mode: str = "total"  # patch: "total" (exact vs naive total effect) or "path" (path engine vs frozen-heads loop)


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


DEFAULT_RELATION = "country_capital_extended"


def run(name: str, options: BenchOptions) -> Iterator[dict]:
    """The lines of benchmark ``name``; without a relation, the module's ``default_relation(options)``."""
    module = importlib.import_module(f"recallscope.benchmarks.{name}")
    if options.relation is None:
        default = getattr(module, "default_relation", None)
        options = replace(options, relation=default(options) if default else DEFAULT_RELATION)
    yield from module.run(options)
