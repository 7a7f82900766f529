"""Progress bars on stderr (rich), never on stdout, so ``--json`` output stays clean."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterable[T]:
    if not enabled or not sys.stderr.isatty() and not _forced():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _forced() -> bool:
    import os

    return os.environ.get("RECALLSCOPE_PROGRESS") == "1"
