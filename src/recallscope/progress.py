"""Progress on stderr, never on stdout (``--json`` output stays clean): a terminal, a notebook, or nothing.

A bar is shown when the caller asks for one (``progress=True``, the default of every stage
function and of :func:`recallscope.run`) and someone can see it: stderr is a terminal, the code
runs in a Jupyter kernel (where stderr is not a TTY, yet the cell's output shows it), or
``RECALLSCOPE_PROGRESS=1``. ``progress=False`` is always quiet. The bars are tqdm's: its notebook
widget where ipywidgets is installed, else its text bar on stderr (which Jupyter also renders).

Units are prompts, advanced as each batch finishes (a stage of 33 prompts in batches of 16 moves
0 → 16 → 32 → 33, not 0/3 → 3/3); a long batch reports its own steps with :func:`step` (the patch
engines: one step per layer), so the bar moves within it too. In a terminal a finished bar is
removed (the CLI prints its own "done in" lines); in a notebook it stays, as the cell's record of
what ran and how long it took.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (IPython's ZMQ shell; a terminal IPython is not one)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def visible(enabled: bool = True) -> bool:
    """Whether a bar asked for (``enabled``) is shown: stderr is a TTY, a notebook, or ``RECALLSCOPE_PROGRESS=1``."""
    if not enabled:
        return False
    return os.environ.get("RECALLSCOPE_PROGRESS") == "1" or in_notebook() or _stderr_is_tty()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


@dataclass
class _Item:
    """The item a bar is working on: where it starts on the bar and how many units it covers."""

    bar: Any
    start: float
    weight: float


_ACTIVE: list[_Item] = []  # innermost last: the bar a :func:`step` inside the current item moves


def track(
    items: Iterable[T],
    description: str,
    total: float | None = None,
    enabled: bool = True,
    unit: str = "batches",
    weight: Callable[[T], float] | None = None,
) -> Iterator[T]:
    """Yield ``items``, advancing a bar on stderr by ``weight(item)`` (default 1) after each.

    ``total`` is the sum of the weights (e.g. the number of prompts when each item is a batch and
    ``weight`` its size, ``unit="prompts"``). While an item is being worked on, :func:`step` moves
    the bar within it. Nothing is shown unless :func:`visible`.
    """
    if not visible(enabled):
        yield from items
        return
    bar = _new_bar(description, total, unit)
    done = 0.0
    try:
        for item in items:
            w = float(weight(item)) if weight is not None else 1.0
            _ACTIVE.append(_Item(bar, done, w))
            try:
                yield item
            finally:
                _ACTIVE.pop()
            done += w
            _move(bar, done)
    finally:
        bar.close()


def step(done: float, total: float) -> None:
    """Within the item a :func:`track` bar is working on, ``done`` of ``total`` steps are finished
    (e.g. layers of an engine). A no-op when no bar is shown, so engines may call it unconditionally."""
    if not _ACTIVE or total <= 0:
        return
    item = _ACTIVE[-1]
    _move(item.bar, item.start + item.weight * min(max(done / total, 0.0), 1.0))


def _move(bar, to: float) -> None:
    if to > bar.n:
        bar.update(to - bar.n)


def _new_bar(description: str, total: float | None, unit: str):
    notebook = in_notebook()
    if notebook and _has_widgets():
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    # a count of whole units, even while step() moves the bar by fractions of one
    count = "{n:.0f}/{total:.0f} " + unit if total is not None else "{n:.0f} " + unit
    return tqdm(
        total=total,
        desc=description,
        file=sys.stderr,
        leave=notebook,  # a notebook keeps the finished bar; a terminal clears it
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| " + count + " [{elapsed}<{remaining}]"
        if total
        else "{desc}: " + count + " [{elapsed}]",
        mininterval=0.5,
    )


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def working(message: str, usually: str, enabled: bool = True) -> Iterator[None]:
    """Say on stderr what a long one-time step is doing and how long it usually takes, then how long it took.

    For steps that report no progress of their own (the first load of an embedded model
    de-quantises its GGUF file). Shown whenever ``enabled``: a silent minute reads as a hang,
    whether or not stderr is a terminal (the CLI's stdout stays the ``--json`` channel).
    """
    if not enabled:
        yield
        return
    start = time.perf_counter()
    print(f"recallscope: {message} (once; usually {usually}) …", file=sys.stderr, flush=True)
    yield
    print(f"recallscope: done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
