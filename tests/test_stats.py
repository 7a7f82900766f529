"""recallscope.stats: scipy's percentile bootstrap (the same draws and quantiles as the
hand-written one it replaced), Pearson's p-value, Spearman's ρ, the one fold assignment."""

import math

import numpy as np
import pytest

from recallscope.stats import assign_folds, bootstrap_ci, bootstrap_ci_samples, pearson, spearman


def test_bootstrap_ci_contains_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    low, high = bootstrap_ci(x, seed=3)
    assert low < x.mean() < high
    # The normal-theory 95% half-width is 1.96 σ/√n ≈ 0.098; the bootstrap agrees within 20%.
    assert abs((high - low) / 2 - 1.96 * x.std(ddof=1) / np.sqrt(x.size)) < 0.02
    assert bootstrap_ci(x, seed=3) == (low, high)
    assert bootstrap_ci(x, seed=4) != (low, high)


def _hand_percentile_bootstrap(x, stat, n, level, seed):
    """The interval recallscope computed by hand before scipy: the reference for equality."""
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(n, x.size))]
    stats = np.array([stat(row) for row in samples])
    alpha = (1.0 - level) / 2.0
    return tuple(float(v) for v in np.quantile(stats, [alpha, 1.0 - alpha]))


@pytest.mark.parametrize("stat", [np.mean, np.median])
def test_bootstrap_ci_equals_the_hand_written_percentile_bootstrap(stat):
    x = np.random.default_rng(5).exponential(size=57)
    got = bootstrap_ci(x, stat=stat, n=1500, level=0.9, seed=11)
    want = _hand_percentile_bootstrap(x, stat, 1500, 0.9, 11)
    assert got == pytest.approx(want, abs=1e-12)


def test_paired_and_independent_samples():
    rng = np.random.default_rng(2)
    x = rng.normal(size=80)
    y = 0.6 * x + rng.normal(size=80)
    lo, hi = bootstrap_ci_samples((x, y), lambda a, b: pearson(a, b)[0], n=800, seed=4, paired=True)
    # paired = the indices resampled once: the hand-written bootstrap over the index array
    idx = np.arange(80)
    want = _hand_percentile_bootstrap(idx, lambda i: pearson(x[i], y[i])[0], 800, 0.95, 4)
    assert (lo, hi) == pytest.approx(want, abs=1e-12)
    assert lo < pearson(x, y)[0] < hi
    # two independent samples: a difference of means, centred near the true difference
    a, b = rng.normal(0.0, 1.0, 300), rng.normal(0.5, 1.0, 200)
    lo, hi = bootstrap_ci_samples((a, b), lambda s, t: t.mean() - s.mean(), n=1000, seed=0)
    assert lo < b.mean() - a.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(1 / 300 + 1 / 200), rel=0.2)
    assert all(np.isnan(bootstrap_ci_samples(([1.0], [1.0, 2.0]), lambda s, t: 0.0)))


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


def test_pearson_p_value_is_exact():
    # n = 4: under the null r is uniform on [-1, 1], so p = 1 − |r|
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 3.0, 2.0, 5.0])
    r, p = pearson(x, y)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert p == pytest.approx(1 - abs(r), abs=1e-10)
    # n = 3: p = 1 − (2/π) arcsin |r|
    r3, p3 = pearson(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0]))
    assert p3 == pytest.approx(1 - 2 / math.pi * math.asin(abs(r3)), abs=1e-10)
    # any n: p = 2 ∫_|r|^1 (1 − ρ²)^((n−4)/2) dρ / B(1/2, (n−2)/2), integrated numerically
    rng = np.random.default_rng(0)
    for n in (10, 60, 400):
        a = rng.normal(size=n)
        b = 0.15 * a + rng.normal(size=n)
        r, p = pearson(a, b)
        rho = np.linspace(abs(r), 1.0, 200_001)
        log_beta = math.lgamma(0.5) + math.lgamma((n - 2) / 2) - math.lgamma((n - 1) / 2)
        density = np.exp((n - 4) / 2 * np.log1p(-rho[:-1] ** 2) - log_beta)
        expected = 2 * float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(rho[:-1])))
        assert p == pytest.approx(expected, rel=1e-3)
    assert all(math.isnan(v) for v in pearson(np.ones(5), np.arange(5.0)))


def test_spearman_is_pearson_of_average_ranks():
    a = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    b = np.array([2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0])
    from scipy.stats import rankdata  # average ranks: b has ties

    assert spearman(a, b) == pytest.approx(np.corrcoef(rankdata(a), rankdata(b))[0, 1], abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.ones(4), np.arange(4.0)))


def test_one_fold_assignment():
    fold = assign_folds(50, 4, seed=3)
    assert sorted(np.bincount(fold)) == [12, 12, 13, 13]  # near-equal parts
    assert (assign_folds(50, 4, seed=3) == fold).all() and not (assign_folds(50, 4, seed=4) == fold).all()
    # the parts of the seeded shuffle, in order (the decompose folds before this module existed)
    order = np.random.default_rng(3).permutation(50)
    for f, part in enumerate(np.array_split(order, 4)):
        assert (fold[part] == f).all()
    subjects = [f"s{i % 7}" for i in range(40)]
    grouped = assign_folds(40, 3, seed=0, groups=subjects)
    for s in set(subjects):  # a subject never straddles folds
        assert len(set(grouped[[i for i, t in enumerate(subjects) if t == s]])) == 1
    assert set(grouped) == {0, 1, 2}
    # fewer subjects than folds: prompts are shuffled instead
    assert set(assign_folds(6, 4, seed=0, groups=["a"] * 6)) == {0, 1, 2, 3}
