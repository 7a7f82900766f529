"""Small statistics shared by the stages and the claims table.

:func:`bootstrap_ci` is the percentile bootstrap: resample the per-prompt values with
replacement ``n`` times, compute the statistic on each resample, and report the
``(1 − level)/2`` and ``(1 + level)/2`` quantiles of those statistics. It assumes the prompts are
exchangeable draws from the task (prompts that share a subject or a template are not
independent, so the interval is, if anything, too narrow). The generator is seeded, so the
same values give the same interval.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    n: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of ``stat`` over ``values``.

    NaN values are dropped first. An empty input gives ``(nan, nan)``; a single value gives a
    zero-width interval at that value.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n, x.size))
    samples = x[idx]
    if stat is np.mean:
        stats = samples.mean(axis=1)  # vectorised fast path for the common case
    else:
        stats = np.array([stat(row) for row in samples], dtype=float)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def share(mask: Sequence[bool] | np.ndarray) -> float:
    """Fraction of true values (nan for an empty input)."""
    m = np.asarray(mask, dtype=bool).ravel()
    return float(m.mean()) if m.size else float("nan")
