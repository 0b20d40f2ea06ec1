"""Paired statistics against small cases computed by hand."""

import math

import numpy as np
import pytest

from kneesynth import stats


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """correct_a, correct_b with the given 2 x 2 McNemar cell counts."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_table_counts_the_four_cells():
    a, b = pairs(5, 1, 6, 3)
    assert stats.mcnemar_table(a, b).tolist() == [[5, 1], [6, 3]]


def test_mcnemar_exact_binomial_by_hand():
    # b = 1, c = 6: p = 2 * sum_{k<=1} C(7, k) / 2^7 = 2 * 8 / 128 = 0.125
    a, b = pairs(5, 1, 6, 3)
    result = stats.mcnemar_test(a, b)
    expected = 2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7
    assert result.p_value == pytest.approx(expected) == pytest.approx(0.125)
    assert result.statistic == 1
    assert result.n == 15
    assert result.difference == pytest.approx((1 - 6) / 15)
    assert "exact" in result.note


def test_mcnemar_exact_p_is_capped_at_one_for_balanced_discordance():
    # b = c = 3: 2 * P(X <= 3), X ~ Bin(6, 1/2) = 2 * 42/64 > 1 -> 1
    a, b = pairs(2, 3, 3, 2)
    assert stats.mcnemar_test(a, b).p_value == 1.0


def test_mcnemar_chi_square_with_continuity_correction_by_hand():
    # b = 10, c = 30 (40 discordant >= 25): (|10 - 30| - 1)^2 / 40 = 9.025, chi2 with 1 df
    a, b = pairs(50, 10, 30, 10)
    result = stats.mcnemar_test(a, b)
    assert result.statistic == pytest.approx(9.025)
    # chi-square(1) survival function: erfc(sqrt(x / 2))
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert "chi-square" in result.note


def test_mcnemar_switches_to_chi_square_at_the_threshold():
    a, b = pairs(0, 10, 14, 0)  # 24 discordant pairs: exact
    assert "exact" in stats.mcnemar_test(a, b, exact_below=25).note
    a, b = pairs(0, 10, 15, 0)  # 25: chi-square, (|10 - 15| - 1)^2 / 25 = 0.64
    result = stats.mcnemar_test(a, b, exact_below=25)
    assert result.statistic == pytest.approx(0.64)


def test_mcnemar_without_discordant_pairs_has_p_one():
    a, b = pairs(4, 0, 0, 2)
    assert stats.mcnemar_test(a, b).p_value == 1.0


def test_mcnemar_rejects_unpaired_data():
    with pytest.raises(ValueError, match="one shape"):
        stats.mcnemar_test(np.ones(3, bool), np.ones(4, bool))


def seed_matrix(hits: list[int], n_images: int) -> np.ndarray:
    """(n_seeds, n_images) bool with the first hits[s] images of seed s correct."""
    return np.array([[i < h for i in range(n_images)] for h in hits])


def test_paired_t_across_seeds_by_hand():
    # accuracy differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3)
    a = seed_matrix([6, 7, 8], 10)
    b = seed_matrix([5, 5, 5], 10)
    result = stats.paired_t_across_seeds(a, b)
    t = 0.2 / (0.1 / math.sqrt(3))
    assert result.statistic == pytest.approx(t)
    # Student t with 2 degrees of freedom: two-sided p = 1 - t / sqrt(t^2 + 2)
    assert result.p_value == pytest.approx(1 - t / math.sqrt(t**2 + 2))
    assert result.difference == pytest.approx(0.2)
    assert result.n == 3


def test_paired_t_with_identical_differences_falls_back_to_wilcoxon():
    a = seed_matrix([7, 7, 7], 10)
    b = seed_matrix([5, 5, 5], 10)
    result = stats.paired_t_across_seeds(a, b)
    # three positive differences: exact two-sided signed-rank p = 2 * (1/2)^3
    assert result.p_value == pytest.approx(0.25)
    assert "Wilcoxon" in result.note
    assert math.isfinite(result.statistic)


def test_paired_t_with_no_difference_has_p_one():
    a = seed_matrix([5, 6, 7], 10)
    result = stats.paired_t_across_seeds(a, a.copy())
    assert (result.statistic, result.p_value) == (0.0, 1.0)


def test_wilcoxon_across_seeds_by_hand():
    # differences -0.1, +0.2, +0.3: ranks 1, 2, 3; W = min(W+, W-) = min(5, 1) = 1;
    # of the 8 equally likely sign patterns, W- <= 1 for 2 (rank sums 0 and 1):
    # two-sided p = 2 * 2/8 = 0.5
    a = seed_matrix([4, 7, 8], 10)
    b = seed_matrix([5, 5, 5], 10)
    result = stats.wilcoxon_across_seeds(a, b)
    assert result.statistic == 1
    assert result.p_value == pytest.approx(0.5)


def test_bootstrap_of_a_constant_difference_is_a_point():
    a = np.ones(20, bool)
    b = np.zeros(20, bool)
    result = stats.paired_bootstrap_accuracy_difference(a, b, n_resamples=200, seed=1)
    assert (result.statistic, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)
    assert result.p_value == pytest.approx(1 / 201)  # no resample reaches the null


def test_bootstrap_of_two_images_by_hand():
    # per-image differences [1, 0]: resampled means 0, 1/2, 1 with probabilities 1/4, 1/2,
    # 1/4 -> 95 % percentile interval [0, 1]; |d* - 1/2| >= 1/2 with probability 1/2
    a = np.array([True, True])
    b = np.array([False, True])
    result = stats.paired_bootstrap_accuracy_difference(a, b, n_resamples=20000, seed=0)
    assert result.statistic == 0.5
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_bootstrap_interval_matches_the_normal_approximation():
    # 400 images, d = +1 on 60, -1 on 20, 0 elsewhere: mean 0.1, sd of d = sqrt(0.2 - 0.01)
    d = np.array([1] * 60 + [-1] * 20 + [0] * 320)
    a, b = d == 1, d == -1
    result = stats.paired_bootstrap_accuracy_difference(a, b, n_resamples=20000, seed=3)
    half_width = 1.96 * math.sqrt(0.2 - 0.01) / math.sqrt(400)
    assert result.statistic == pytest.approx(0.1)
    assert result.ci_low == pytest.approx(0.1 - half_width, abs=0.006)
    assert result.ci_high == pytest.approx(0.1 + half_width, abs=0.006)
    assert result.p_value < 0.001


def test_bootstrap_pools_seeds_by_resampling_images_jointly():
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    b = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool)
    result = stats.paired_bootstrap_accuracy_difference(a, b, n_resamples=500, seed=0)
    # seed-averaged accuracy difference: ((2 - 1) + (2 - 0)) / 4 / 2 = 0.375
    assert result.statistic == pytest.approx(0.375)
    assert result.n == 4
    again = stats.paired_bootstrap_accuracy_difference(a, b, n_resamples=500, seed=0)
    assert (again.ci_low, again.ci_high, again.p_value) == (
        result.ci_low,
        result.ci_high,
        result.p_value,
    )


def test_bootstrap_accuracy_ci_by_hand():
    # one seed, 2 images, one right: resampled accuracy 0, 1/2, 1 -> interval [0, 1]
    accuracy, low, high = stats.bootstrap_accuracy_ci(np.array([True, False]), n_resamples=5000)
    assert (accuracy, low, high) == (0.5, 0.0, 1.0)
    # all right on both seeds: a point at 1
    assert stats.bootstrap_accuracy_ci(np.ones((2, 5), bool), n_resamples=100) == (1.0, 1.0, 1.0)
    # 400 images, 300 right: 0.75 +- 1.96 sqrt(0.75 * 0.25 / 400)
    correct = np.arange(400) < 300
    accuracy, low, high = stats.bootstrap_accuracy_ci(correct, n_resamples=20000, seed=2)
    half_width = 1.96 * math.sqrt(0.75 * 0.25 / 400)
    assert accuracy == 0.75
    assert low == pytest.approx(0.75 - half_width, abs=0.006)
    assert high == pytest.approx(0.75 + half_width, abs=0.006)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_caps_at_one_and_skips_nan():
    adjusted = stats.holm([0.5, np.nan, 0.6])
    assert adjusted[0] == pytest.approx(1.0)
    assert np.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(1.0)
    assert stats.holm([0.02]) == pytest.approx([0.02])
