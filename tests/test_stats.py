import numpy as np
import pytest

from recallscope.stats import bootstrap_ci, share


def test_bootstrap_ci_contains_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    low, high = bootstrap_ci(x, seed=3)
    assert low < x.mean() < high
    # The normal-theory 95% half-width is 1.96 σ/√n ≈ 0.098; the bootstrap agrees within 20%.
    assert abs((high - low) / 2 - 1.96 * x.std(ddof=1) / np.sqrt(x.size)) < 0.02
    assert bootstrap_ci(x, seed=3) == (low, high)
    assert bootstrap_ci(x, seed=4) != (low, high)


def test_bootstrap_ci_custom_stat_and_level():
    x = np.arange(101, dtype=float)
    low, high = bootstrap_ci(x, stat=np.median, n=500, level=0.5, seed=0)
    wide = bootstrap_ci(x, stat=np.median, n=500, level=0.99, seed=0)
    assert low <= 50 <= high
    assert wide[0] <= low and wide[1] >= high
    assert wide[1] - wide[0] > high - low


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    assert all(np.isnan(bootstrap_ci([])))
    assert bootstrap_ci([1.0, np.nan, 1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], level=1.5)
    assert share([True, False, False, True]) == 0.5
