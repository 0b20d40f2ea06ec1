"""Inference on the independent unit, against small cases by hand and the libraries' answers."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar

from kneesynth import stats
from kneesynth.stats import Statistic


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """correct_a, correct_b with the given 2 x 2 McNemar cell counts."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_table_counts_the_four_cells():
    a, b = pairs(5, 1, 6, 3)
    assert stats.mcnemar_table(a, b).tolist() == [[5, 1], [6, 3]]


def test_clustered_mcnemar_with_one_image_per_unit_is_the_exact_mcnemar_test():
    a, b = pairs(20, 11, 3, 6)
    result = stats.clustered_mcnemar(a, b, np.arange(a.size))
    exact = mcnemar(stats.mcnemar_table(a, b), exact=True).pvalue
    assert result.p_value == pytest.approx(exact)
    assert result.n_units == a.size and result.unit == "participant"
    assert result.statistic == pytest.approx((11 - 3) ** 2 / 14)  # Durkalski's X^2


def test_clustered_mcnemar_counts_a_participants_images_once():
    """Eight discordant images of two participants are two units, not eight."""
    a, b = pairs(10, 8, 0, 2)
    units = np.array(["p0"] * 10 + ["p1"] * 4 + ["p2"] * 4 + ["p3"] * 2)
    result = stats.clustered_mcnemar(a, b, units)
    assert math.isnan(result.p_value)  # two discordant units: the smallest p is 0.5
    assert "too few discordant participants (2)" in result.note
    independent = stats.clustered_mcnemar(a, b, np.arange(a.size))
    assert independent.p_value < 0.01


def test_clustered_mcnemar_sign_flip_distribution_by_hand():
    # unit differences +2, +1, -1: +-2 +-1 +-1 gives 4, 2, 2, 0, 0, -2, -2, -4
    sums, probability = stats.sign_flip_distribution([2, 1, -1])
    by_sum = dict(zip(sums.tolist(), probability.tolist(), strict=True))
    assert by_sum[4] == by_sum[-4] == pytest.approx(1 / 8)
    assert by_sum[2] == by_sum[-2] == pytest.approx(2 / 8)
    assert by_sum[0] == pytest.approx(2 / 8)
    assert by_sum[1] == by_sum[3] == 0
    assert sum(probability) == pytest.approx(1.0)


def test_clustered_mcnemar_without_discordance_cannot_test():
    a = np.ones(12, bool)
    result = stats.clustered_mcnemar(a, a.copy(), np.repeat(np.arange(4), 3))
    assert math.isnan(result.p_value) and result.difference == 0


def test_mean_estimate_equals_statsmodels_cluster_robust_ols():
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(6), [3, 5, 4, 7, 2, 6])
    values = rng.normal(size=units.size) + 0.4 * units
    estimate = Statistic.mean(values).estimate(units)
    ols = sm.OLS(values, np.ones_like(values)).fit(cov_type="cluster", cov_kwds={"groups": units})
    assert estimate.value == pytest.approx(ols.params[0])
    assert estimate.se == pytest.approx(ols.bse[0])
    assert estimate.df == pytest.approx(5)


def test_balanced_clusters_give_the_t_test_of_unit_means():
    rng = np.random.default_rng(1)
    units = np.repeat(np.arange(5), 8)
    values = rng.normal(size=units.size) + rng.normal(size=5)[units]
    result = stats.difference_test(
        Statistic.mean(values), Statistic.mean(np.zeros_like(values)), units,
        unit="volume", test="t",
    )  # fmt: skip
    means = values.reshape(5, 8).mean(axis=1)
    expected = scipy_stats.ttest_1samp(means, 0.0)
    interval = expected.confidence_interval(0.95)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))
    assert result.n == 40 and result.n_units == 5 and result.unit == "volume"


def test_one_unit_gives_no_test():
    values = np.linspace(0, 1, 12)
    result = stats.difference_test(
        Statistic.mean(values), Statistic.mean(values * 0), np.zeros(12), unit="volume", test="t"
    )
    assert math.isnan(result.p_value) and math.isnan(result.ci_low)
    assert "too few units: 1" in result.note


def test_seed_variance_is_added_and_one_seed_cannot_test_when_seeds_are_required():
    rng = np.random.default_rng(2)
    units = np.repeat(np.arange(30), 4)
    shift = np.array([0.3, -0.2, 0.25])[:, None]  # seed-to-seed differences
    a = rng.random((3, units.size)) < 0.7 + shift * 0.1
    b = rng.random((3, units.size)) < 0.7
    difference = Statistic.mean(a) - Statistic.mean(b)
    with_seeds = difference.estimate(units)
    assert with_seeds.var_seeds == pytest.approx(np.var(difference.per_seed, ddof=1) / 3)
    assert with_seeds.se == pytest.approx(math.sqrt(with_seeds.var_units + with_seeds.var_seeds))
    assert 2 <= with_seeds.df <= 29
    one = (Statistic.mean(a[:1]) - Statistic.mean(b[:1])).estimate(units, require_seeds=True)
    assert not one.testable and "one training seed" in one.note


def test_ratio_of_sums_and_its_influence_by_hand():
    # recall-like: hits 3 of 4 positives in seed 0, 1 of 2 in seed 1
    numerator = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    denominator = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    statistic = Statistic.ratio_of_sums(numerator, denominator)
    assert statistic.per_seed.tolist() == [0.75, 0.5]
    # influence (y - R x) / X, averaged over seeds
    expected = (
        (numerator[0] - 0.75 * denominator[0]) / 4 + (numerator[1] - 0.5 * denominator[1]) / 2
    ) / 2
    np.testing.assert_allclose(statistic.influence, expected)


def test_ratio_of_statistics_by_the_delta_method_matches_a_bootstrap():
    rng = np.random.default_rng(3)
    units = np.repeat(np.arange(40), 3)
    synthetic = rng.normal(0.8, 0.1, units.size) + rng.normal(0, 0.05, 40)[units]
    real = synthetic / 0.85 + rng.normal(0, 0.02, units.size)
    ratio = (Statistic.mean(synthetic) / Statistic.mean(real)).estimate(units)
    assert ratio.value == pytest.approx(synthetic.mean() / real.mean())
    draws = []
    for _ in range(2000):
        picked = np.concatenate([np.flatnonzero(units == u) for u in rng.integers(40, size=40)])
        draws.append(synthetic[picked].mean() / real[picked].mean())
    assert ratio.se == pytest.approx(np.std(draws), rel=0.15)


def test_cluster_bootstrap_interval_resamples_units():
    values = np.r_[np.zeros(10), np.ones(10)]
    units = np.repeat([0, 1], 10)
    low, high = stats.cluster_bootstrap_interval(values, units, n_resamples=500, seed=0)
    assert low == 0.0 and high == 1.0  # two units: resamples are all-0, mixed or all-1
    assert stats.cluster_bootstrap_interval(values, np.zeros(20), n_resamples=50) == pytest.approx(
        (math.nan, math.nan), nan_ok=True
    )


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06])


def test_holm_caps_at_one_and_skips_nan():
    adjusted = stats.holm([0.5, float("nan"), 0.6])
    assert adjusted[0] == pytest.approx(1.0) and math.isnan(adjusted[1])
