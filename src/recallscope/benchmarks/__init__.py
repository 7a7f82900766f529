"""Benchmarks (``recallscope bench``): ratios measured side by side in one run, printed as JSON lines.

Each module ``benchmarks/<name>.py`` defines ``run(options) -> Iterator[dict]``; every dict is
one line with at least ``bench`` and ``ratio``. They are not tests: they measure, and the
figures go to BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class BenchOptions:
    model: str = "smollm2-135m"
    relation: str = "country_capital_extended"
    shots: tuple[int, ...] = (0, 3)
    seed: int = 0
    max_prompts: int | None = None
    device: str = "cpu"
    quick: bool = False  # smaller samples, for a smoke run


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def run(name: str, options: BenchOptions) -> Iterator[dict]:
    module = importlib.import_module(f"recallscope.benchmarks.{name}")
    yield from module.run(options)
