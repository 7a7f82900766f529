"""The statistics the stages and the claims table share, from :mod:`scipy.stats`.

- :func:`bootstrap_ci`: the percentile bootstrap (``scipy.stats.bootstrap``, ``method=
  "percentile"``): resample the per-prompt values with replacement ``n`` times, compute the
  statistic on each resample, and report the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles
  of those statistics. Several samples (resampled independently) or paired samples (resampled
  together) as ``scipy.stats.bootstrap`` takes them. It assumes the prompts are exchangeable
  draws from the task (prompts that share a subject or a template are not independent, so the
  interval is, if anything, too narrow). The generator is seeded, so the same values give the
  same interval.
- :func:`proportion_ci`: the Clopper–Pearson ("exact") interval of a share k/n
  (``scipy.stats.binomtest(...).proportion_ci(method="exact")``), for a count of prompts — it
  never has zero width where k/n is 0 or 1 at a finite n, as a bootstrap of 0/1 values does.
- :func:`pearson` (r and its two-sided p-value, ``scipy.stats.pearsonr``) and :func:`spearman`
  (ρ, ``scipy.stats.spearmanr``), NaN where the coefficient is undefined.
- :func:`assign_folds`: the one assignment of prompts to cross-validation folds (decompose,
  suppress). scipy has no such function (scikit-learn's ``GroupKFold`` is not seeded and would
  be a dependency for six lines), hence this one.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _stats


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[..., float] = np.mean,
    n: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of ``stat`` over the values of one sample.

    NaN values are dropped first. An empty input gives ``(nan, nan)``; a single value gives a
    zero-width interval at that value. ``stat`` maps a 1-D array to a number (``np.mean`` runs
    vectorised). A statistic that is NaN on some resamples gives a NaN bound.
    Raises ValueError for ``level`` outside (0, 1) or ``n`` < 1.
    """
    _check(n, level)
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    if stat is np.mean:
        return _interval((x,), lambda s, axis=-1: np.mean(s, axis=axis), n, level, seed, vectorized=True)
    return _interval((x,), stat, n, level, seed)


def bootstrap_ci_samples(
    samples: Sequence[np.ndarray],
    stat: Callable[..., float],
    n: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(*samples)``: each sample resampled on its own, or,
    with ``paired``, all samples resampled with the same indices (they must have one length).

    Pass index arrays (``np.arange(len(...))``) as samples when the statistic reads rows of
    frames. Samples of fewer than two values give ``(nan, nan)``. Raises ValueError as
    :func:`bootstrap_ci`.
    """
    _check(n, level)
    samples = tuple(np.asarray(s) for s in samples)
    if any(len(s) < 2 for s in samples):
        return float("nan"), float("nan")
    return _interval(samples, stat, n, level, seed, paired=paired)


def _check(n: int, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def _interval(samples, stat, n, level, seed, vectorized=False, paired=False) -> tuple[float, float]:
    with warnings.catch_warnings():
        # a degenerate resample distribution gives NaN bounds, which callers report; no warning text
        warnings.simplefilter("ignore", _stats.DegenerateDataWarning)
        res = _stats.bootstrap(
            samples, stat, n_resamples=n, confidence_level=level, method="percentile", vectorized=vectorized,
            paired=paired, rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def proportion_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson interval ``(low, high)`` of the share ``k / n`` (``scipy.stats.binomtest``,
    ``proportion_ci(method="exact")``): the binomial interval whose two tails each hold at most
    (1 − level)/2. ``n`` = 0 gives ``(0, 1)`` (nothing observed). Raises ValueError for ``level``
    outside (0, 1) or k outside [0, n]."""
    _check(1, level)
    if n == 0:
        return 0.0, 1.0
    ci = _stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Pearson r and its two-sided p-value (t-test on n − 2 degrees of freedom, ``scipy.stats.pearsonr``).

    NaN (both) when n < 3 or an input is constant (r is undefined).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan"), float("nan")
    res = _stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's ρ (the Pearson correlation of average ranks, ``scipy.stats.spearmanr``); NaN when
    an input is constant or has fewer than two values."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(_stats.spearmanr(a, b).statistic)


def assign_folds(n: int, folds: int, seed: int, groups: Sequence | None = None) -> np.ndarray:
    """[n] the fold (0..folds-1) of each item, from a seeded shuffle split into ``folds`` parts.

    The units shuffled are the items, or with ``groups`` (one label per item) the distinct
    groups — sorted, then permuted — so that every group lands in one fold; when there are
    fewer groups than folds the items are shuffled instead. The shuffled order is cut into
    ``folds`` contiguous parts of near-equal size (``np.array_split``). ValueError when
    ``folds`` < 1.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    rng = np.random.default_rng(seed)
    if groups is not None:
        groups = list(groups)
        if len(groups) != n:
            raise ValueError(f"assign_folds: {len(groups)} group labels for {n} items")
        unique = sorted(set(groups))
        if len(unique) >= folds:
            fold_of_group = np.empty(len(unique), dtype=int)
            for f, part in enumerate(np.array_split(rng.permutation(len(unique)), folds)):
                fold_of_group[part] = f
            index = {g: i for i, g in enumerate(unique)}
            return fold_of_group[[index[g] for g in groups]].astype(int)
    out = np.empty(n, dtype=int)
    for f, part in enumerate(np.array_split(rng.permutation(n), folds)):
        out[part] = f
    return out
