"""Paired statistics shared by the studies: McNemar, paired tests across seeds, a paired
bootstrap CI of an accuracy difference, and Holm's correction.

Every test compares two classifiers (or models) evaluated on the SAME test items, so all
tests are paired. Conventions:

- ``correct_a``, ``correct_b``: bool arrays, True where model a (the candidate, e.g. an
  augmented arm) resp. model b (the reference, e.g. ``real``) classified a test image
  correctly. Shapes are (n_images,) for one seed, (n_seeds, n_images) for several seeds
  (row s of both arrays comes from the same training seed; column i is the same image).
- Differences are a - b (positive: the candidate is better).

Libraries: statsmodels (McNemar, Holm), scipy.stats (paired t, Wilcoxon, bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests


@dataclass(frozen=True)
class TestResult:
    """One paired test. ``ci_low``/``ci_high`` are NaN for tests without an interval."""

    test: str
    statistic: float
    p_value: float
    n: int
    difference: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    note: str = ""


def _as_correct_pair(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired data must be non-empty and of one shape, got {a.shape} and {b.shape}"
        )
    return a, b


def mcnemar_table(correct_a, correct_b) -> np.ndarray:
    """2 x 2 table [[both correct, only a correct], [only b correct, both wrong]].

    correct_a, correct_b: (n,) bool. The discordant cells are [0, 1] = b_count (a right,
    b wrong) and [1, 0] = c_count (a wrong, b right).
    """
    a, b = _as_correct_pair(correct_a, correct_b)
    if a.ndim != 1:
        raise ValueError(f"McNemar needs (n,) arrays of one seed, got shape {a.shape}")
    return np.array(
        [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=np.int64
    )


def mcnemar_test(correct_a, correct_b, exact_below: int = 25) -> TestResult:
    """McNemar's test of equal error rates of two classifiers on the same images.

    correct_a, correct_b: (n,) bool. With fewer than ``exact_below`` discordant pairs the
    exact binomial test is used (statistic = min(b, c), two-sided p = 2 P(X <= min) with
    X ~ Binomial(b + c, 1/2), capped at 1); otherwise the chi-square statistic with
    continuity correction (|b - c| - 1)^2 / (b + c), 1 degree of freedom (statsmodels).
    """
    table = mcnemar_table(correct_a, correct_b)
    discordant_a, discordant_b = int(table[0, 1]), int(table[1, 0])
    exact = discordant_a + discordant_b < exact_below
    result = mcnemar(table, exact=exact, correction=True)
    n = int(table.sum())
    return TestResult(
        test="mcnemar",
        statistic=float(result.statistic),
        p_value=float(min(1.0, result.pvalue)),
        n=n,
        difference=(discordant_a - discordant_b) / n,
        note=(
            f"b={discordant_a} (only candidate right), c={discordant_b} (only reference right); "
            + ("exact binomial" if exact else "chi-square with continuity correction")
        ),
    )


def _seed_accuracies(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-seed accuracies (n_seeds,) of a and b and their differences, from integer counts
    so that equal counts give bit-equal differences (no spurious variance)."""
    a, b = _as_correct_pair(correct_a, correct_b)
    if a.ndim != 2:
        raise ValueError(f"seed-level tests need (n_seeds, n_images) arrays, got {a.shape}")
    n_images = a.shape[1]
    hits_a, hits_b = a.sum(axis=1), b.sum(axis=1)
    return hits_a / n_images, hits_b / n_images, (hits_a - hits_b) / n_images


def paired_t_across_seeds(correct_a, correct_b) -> TestResult:
    """Paired t-test of per-seed accuracies (scipy.stats.ttest_rel).

    correct_a, correct_b: (n_seeds, n_images) bool; seed s of a is paired with seed s of b.
    Identical differences across seeds leave t undefined: all zero -> t = 0, p = 1;
    otherwise the Wilcoxon signed-rank test is reported instead (said in ``note``).
    """
    acc_a, acc_b, diff = _seed_accuracies(correct_a, correct_b)
    n = diff.size
    if n < 2:
        raise ValueError(f"a paired test across seeds needs at least 2 seeds, got {n}")
    if np.all(diff == diff[0]):
        if diff[0] == 0:
            return TestResult("paired_t_seeds", 0.0, 1.0, n, 0.0, note="no difference on any seed")
        wilcoxon = wilcoxon_across_seeds(correct_a, correct_b)
        return TestResult(
            "paired_t_seeds",
            wilcoxon.statistic,
            wilcoxon.p_value,
            n,
            float(diff.mean()),
            note="t undefined (identical differences on every seed): Wilcoxon signed-rank",
        )
    result = scipy_stats.ttest_rel(acc_a, acc_b)
    return TestResult(
        "paired_t_seeds", float(result.statistic), float(result.pvalue), n, float(diff.mean())
    )


def wilcoxon_across_seeds(correct_a, correct_b) -> TestResult:
    """Wilcoxon signed-rank test of per-seed accuracy differences (scipy, exact for small n).

    correct_a, correct_b: (n_seeds, n_images) bool. All differences zero -> statistic 0,
    p = 1. With 3 seeds the smallest possible two-sided p is 0.25.
    """
    _, _, diff = _seed_accuracies(correct_a, correct_b)
    n = diff.size
    if np.all(diff == 0):
        return TestResult("wilcoxon_seeds", 0.0, 1.0, n, 0.0, note="no difference on any seed")
    result = scipy_stats.wilcoxon(diff, zero_method="wilcox")
    return TestResult(
        "wilcoxon_seeds", float(result.statistic), float(result.pvalue), n, float(diff.mean())
    )


def _bootstrap_mean(per_image: np.ndarray, n_resamples: int, confidence_level: float, seed: int):
    """Percentile bootstrap of the mean over test images (scipy.stats.bootstrap)."""
    return scipy_stats.bootstrap(
        (per_image,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )


def paired_bootstrap_accuracy_difference(
    correct_a,
    correct_b,
    n_resamples: int = 10000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> TestResult:
    """Paired bootstrap of the accuracy difference a - b, resampling test images.

    correct_a, correct_b: (n_images,) or (n_seeds, n_images) bool. With several seeds the
    images are resampled jointly for all seeds (one image draw keeps all its seeds), i.e. the
    bootstrap of the mean of d_i = mean over seeds of (a_si - b_si); its mean is the
    difference of the seed-averaged accuracies. The interval is scipy.stats.bootstrap's
    percentile interval. The two-sided p-value comes from the same resamples, centred at
    the observed difference (H0: no difference):
    p = (1 + #{|d* - d_obs| >= |d_obs|}) / (1 + n_resamples).
    """
    a, b = _as_correct_pair(correct_a, correct_b)
    if a.ndim == 1:
        a, b = a[None], b[None]
    per_image = (a.astype(np.int64) - b.astype(np.int64)).mean(axis=0)  # (n_images,)
    observed = float(per_image.mean())
    result = _bootstrap_mean(per_image, n_resamples, confidence_level, seed)
    distribution = result.bootstrap_distribution
    extreme = np.sum(np.abs(distribution - observed) >= abs(observed) - 1e-12)
    p_value = float(min(1.0, (1 + extreme) / (1 + n_resamples)))
    return TestResult(
        test="bootstrap_accuracy_difference",
        statistic=observed,
        p_value=p_value,
        n=int(per_image.size),
        difference=observed,
        ci_low=float(result.confidence_interval.low),
        ci_high=float(result.confidence_interval.high),
        note=(
            f"paired percentile bootstrap over test images ({n_resamples} resamples, "
            f"images resampled jointly across {a.shape[0]} seed(s))"
        ),
    )


def bootstrap_accuracy_ci(
    correct, n_resamples: int = 10000, confidence_level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy and its percentile bootstrap CI, resampling test images.

    correct: (n_images,) or (n_seeds, n_images) bool; with several seeds the accuracy is
    the seed average and images are resampled jointly across seeds (as in
    :func:`paired_bootstrap_accuracy_difference`). Returns (accuracy, ci_low, ci_high).
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.size == 0:
        raise ValueError("no predictions to bootstrap")
    per_image = correct.reshape(-1, correct.shape[-1]).mean(axis=0)  # (n_images,)
    result = _bootstrap_mean(per_image, n_resamples, confidence_level, seed)
    interval = result.confidence_interval
    return float(per_image.mean()), float(interval.low), float(interval.high)


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (statsmodels ``multipletests(method="holm")``).

    p_values: (m,) floats; NaN entries stay NaN and are not counted in m.
    """
    p_values = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p_values, np.nan)
    finite = np.isfinite(p_values)
    if finite.any():
        adjusted[finite] = multipletests(p_values[finite], method="holm")[1]
    return adjusted
