"""Inference on the independent unit: clustered estimates, seed-and-unit tests, clustered
McNemar, and Holm's correction.

Test images are not independent: the views of one CT volume share its anatomy, and the knees
and visits of one OAI participant share the participant. Models retrained with another seed
differ too. Every estimate here therefore names its **unit** (volume, participant) and, where
models are retrained, its **seeds**, and its uncertainty comes from those, never from images
treated as independent (Maier-Hein et al., Metrics Reloaded, Nat. Methods 2024, on
hierarchical data; Bouthillier et al., MLSys 2021, on seed variance).

The building block is :class:`Statistic`: a number computed per training seed from per-image
sums (a mean, a ratio of sums such as accuracy, recall or precision, their differences and
ratios), carried with its linearisation (each image's influence on it). Its :meth:`estimate
<Statistic.estimate>` combines two variance components,

- the test-set component: the cluster-robust (sandwich) variance of the seed-averaged
  influences summed per unit, C / (C - 1) * sum_c (sum_{i in c} z_i)^2 (the CR1 estimator, as
  statsmodels' ``cov_type="cluster"`` gives for a mean; Cameron & Miller, J. Hum. Resour. 2015),
- the seed component: the variance of the per-seed values over seeds / S,

and refers the estimate to a t distribution whose degrees of freedom come from the
Welch-Satterthwaite formula (C - 1 for one seed). Hand-written because no library offers the
seed level: statsmodels' cluster-robust covariance covers one level of clustering, and its
MixedLM reports z-tests (anti-conservative at five volumes). The calibration tests
(``tests/test_calibration.py``) simulate nulls with volume, participant and seed effects and
check the false-positive rate.

Also here: the clustered McNemar test (Durkalski et al., Stat. Med. 2003) with its exact
sign-flip distribution, and Holm's correction (statsmodels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05


@dataclass(frozen=True)
class TestResult:
    """One inferential row. ``p_value`` is NaN where the units cannot support a test at
    alpha (too few volumes, participants or seeds; ``note`` says why). ``n`` counts images,
    ``n_units`` the independent units (``unit``); ``df`` the t degrees of freedom."""

    test: str
    statistic: float
    p_value: float
    n: int
    difference: float
    unit: str
    n_units: int
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    df: float = float("nan")
    note: str = ""


# ----------------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class Estimate:
    """A point estimate with a t-based uncertainty: ``value``, its standard error ``se``
    (``sqrt(var_units + var_seeds)``), ``df`` (Welch-Satterthwaite), and the counts of
    independent units and seeds behind it. ``se`` is NaN when it cannot be estimated (fewer
    than 2 units, or fewer than 2 seeds where seeds are required)."""

    value: float
    se: float
    df: float
    n_units: int
    n_seeds: int
    var_units: float
    var_seeds: float
    note: str = ""

    @property
    def testable(self) -> bool:
        return math.isfinite(self.se) and math.isfinite(self.df) and self.df > 0

    def interval(
        self, confidence: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)
    ) -> tuple[float, float]:
        """Two-sided t interval ``value +- t_{df} se``, cut to the statistic's range
        ``bounds`` (an accuracy lies in [0, 1]); (NaN, NaN) when not testable."""
        if not self.testable:
            return float("nan"), float("nan")
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, self.df)) * self.se
        return max(bounds[0], self.value - half), min(bounds[1], self.value + half)

    def t_statistic(self, null: float = 0.0) -> float:
        if not self.testable:
            return float("nan")
        if self.se == 0.0:
            return 0.0 if self.value == null else math.copysign(math.inf, self.value - null)
        return (self.value - null) / self.se

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided p of ``value == null``; NaN when not testable."""
        t = self.t_statistic(null)
        if math.isnan(t):
            return float("nan")
        return float(min(1.0, 2.0 * scipy_stats.t.sf(abs(t), self.df)))


@dataclass(frozen=True)
class Statistic:
    """A statistic of (seed, image) data with its linearisation.

    ``per_seed`` (S,): its value for each training seed (S = 1 for one model); ``influence``
    (n,): each test image's seed-averaged influence, so that the estimate minus its
    population value is about ``influence.sum()`` (delta method). Build one with
    :meth:`mean` or :meth:`ratio_of_sums`; combine with ``+``, ``-``, ``*`` (a number) and
    ``/`` (another statistic: the ratio of the two, delta method).
    """

    per_seed: np.ndarray
    influence: np.ndarray

    @staticmethod
    def ratio_of_sums(numerator, denominator) -> Statistic:
        """sum_i numerator / sum_i denominator per seed (accuracy, recall, precision).

        numerator, denominator: (S, n) or (n,) non-negative per-image counts. A seed whose
        denominator sums to 0 gets the value 0 and no influence (scikit-learn's
        ``zero_division=0``).
        """
        y = np.atleast_2d(np.asarray(numerator, dtype=np.float64))
        x = np.atleast_2d(np.asarray(denominator, dtype=np.float64))
        x = np.broadcast_to(x, y.shape)
        if y.ndim != 2 or y.shape[1] == 0:
            raise ValueError(f"need (seeds, images) arrays, got {y.shape}")
        totals = x.sum(axis=1)
        safe = np.where(totals > 0, totals, 1.0)
        per_seed = np.where(totals > 0, y.sum(axis=1) / safe, 0.0)
        influence = (y - per_seed[:, None] * x) / safe[:, None]
        influence[totals == 0] = 0.0
        return Statistic(per_seed, influence.mean(axis=0))

    @staticmethod
    def mean(values) -> Statistic:
        """The mean over images per seed; values (S, n) or (n,)."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        return Statistic.ratio_of_sums(values, np.ones_like(values))

    def _check(self, other: Statistic) -> None:
        if self.per_seed.shape != other.per_seed.shape:
            raise ValueError(
                f"statistics of {self.per_seed.size} and {other.per_seed.size} seeds differ"
            )
        if self.influence.shape != other.influence.shape:
            raise ValueError("statistics of different test images cannot be combined")

    def __add__(self, other: Statistic) -> Statistic:
        self._check(other)
        return Statistic(self.per_seed + other.per_seed, self.influence + other.influence)

    def __sub__(self, other: Statistic) -> Statistic:
        self._check(other)
        return Statistic(self.per_seed - other.per_seed, self.influence - other.influence)

    def __mul__(self, factor: float) -> Statistic:
        return Statistic(self.per_seed * float(factor), self.influence * float(factor))

    __rmul__ = __mul__

    def __truediv__(self, other: Statistic) -> Statistic:
        """The ratio self / other per seed; influence by the delta method."""
        self._check(other)
        if np.any(other.per_seed == 0):
            raise ValueError("ratio with a zero denominator")
        ratio = self.per_seed / other.per_seed
        value, base = ratio.mean(), other.per_seed.mean()
        return Statistic(ratio, (self.influence - value * other.influence) / base)

    @property
    def value(self) -> float:
        return float(self.per_seed.mean())

    def estimate(self, units, *, require_seeds: bool = False) -> Estimate:
        """Variance over independent ``units`` (n,) labels (volume or participant of each
        image) and, with several seeds, over seeds; Welch-Satterthwaite df.

        With one seed the seed component is 0 (the models are taken as given; the note says
        so) unless ``require_seeds``, which then makes the estimate untestable.
        """
        units = np.asarray(units)
        if units.shape != self.influence.shape:
            raise ValueError(f"units {units.shape} do not match the images {self.influence.shape}")
        _, index = np.unique(units, return_inverse=True)
        n_units = int(index.max()) + 1 if index.size else 0
        n_seeds = int(self.per_seed.size)
        value = self.value
        notes = []
        var_units = var_seeds = float("nan")
        if n_units >= 2:
            per_unit = np.bincount(index, weights=self.influence, minlength=n_units)
            var_units = float(n_units / (n_units - 1) * np.sum(per_unit**2))
        else:
            notes.append(f"too few units: {n_units} (a test over units needs at least 2)")
        if n_seeds >= 2:
            var_seeds = float(np.var(self.per_seed, ddof=1) / n_seeds)
        elif require_seeds:
            notes.append("one training seed: seed-to-seed variance cannot be estimated")
        else:
            var_seeds = 0.0
            notes.append("one trained model per arm: generalises over test units, not training")
        if math.isnan(var_units) or math.isnan(var_seeds):
            return Estimate(
                value, float("nan"), float("nan"), n_units, n_seeds, var_units, var_seeds,
                "; ".join(notes),
            )  # fmt: skip
        variance = var_units + var_seeds
        denominator = var_units**2 / (n_units - 1)
        if n_seeds >= 2:
            denominator += var_seeds**2 / (n_seeds - 1)
        df = variance**2 / denominator if denominator > 0 else float(n_units - 1)
        return Estimate(
            value, math.sqrt(variance), df, n_units, n_seeds, var_units, var_seeds,
            "; ".join(notes),
        )  # fmt: skip


def difference_test(
    first: Statistic,
    second: Statistic,
    units,
    *,
    unit: str,
    test: str,
    confidence: float = 0.95,
    require_seeds: bool = False,
) -> TestResult:
    """t-test of first - second over independent ``units`` (and seeds), with its t interval.

    ``n`` is the number of images; the row's p is NaN (with a note) when the units or seeds
    cannot support a test.
    """
    difference = first - second
    estimate = difference.estimate(units, require_seeds=require_seeds)
    low, high = estimate.interval(confidence)
    note = estimate.note
    if estimate.testable:
        detail = f"{estimate.n_units} {unit}s"
        if estimate.n_seeds >= 2:
            detail += f" x {estimate.n_seeds} seeds"
        note = f"t on {detail}, Satterthwaite df {estimate.df:.3g}" + (f"; {note}" if note else "")
    return TestResult(
        test=test,
        statistic=estimate.t_statistic(),
        p_value=estimate.p_value(),
        n=int(difference.influence.size),
        difference=estimate.value,
        unit=unit if estimate.n_seeds < 2 or not require_seeds else f"{unit} and seed",
        n_units=estimate.n_units,
        ci_low=low,
        ci_high=high,
        df=estimate.df,
        note=note,
    )


def cluster_bootstrap_interval(
    values,
    units,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of the mean of per-image ``values`` (n,), resampling whole ``units``
    (scipy.stats.bootstrap on per-unit sums and counts, paired). (NaN, NaN) below 2 units.

    With few units it is too narrow (it ignores that the variance is estimated from C units:
    at 5 volumes it covers about 80 %, tests/test_calibration.py); verdicts use the t
    interval of :func:`difference_test`, this one is shown beside it.
    """
    values = np.asarray(values, dtype=np.float64)
    _, index = np.unique(np.asarray(units), return_inverse=True)
    n_units = int(index.max()) + 1 if index.size else 0
    if n_units < 2:
        return float("nan"), float("nan")
    sums = np.bincount(index, weights=values, minlength=n_units)
    counts = np.bincount(index, minlength=n_units).astype(np.float64)
    if np.allclose(sums / counts, sums[0] / counts[0]):
        value = float(sums.sum() / counts.sum())
        return value, value

    def mean_of_units(unit_sums, unit_counts, axis=-1):
        return unit_sums.sum(axis=axis) / unit_counts.sum(axis=axis)

    result = scipy_stats.bootstrap(
        (sums, counts), mean_of_units, paired=True, vectorized=True, n_resamples=int(n_resamples),
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# ----------------------------------------------------------------------------- McNemar
def mcnemar_table(correct_a, correct_b) -> np.ndarray:
    """2 x 2 table [[both correct, only a correct], [only b correct, both wrong]] of (n,)
    bool arrays of the same images."""
    a, b = _as_pair(correct_a, correct_b)
    if a.ndim != 1:
        raise ValueError(f"McNemar needs (n,) arrays of one seed, got shape {a.shape}")
    return np.array(
        [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=np.int64
    )


def _as_pair(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired data must be non-empty and of one shape, got {a.shape} and {b.shape}"
        )
    return a, b


def sign_flip_distribution(differences) -> tuple[np.ndarray, np.ndarray]:
    """Exact null distribution of sum_k s_k d_k over independent random signs s_k = +-1.

    differences: (K,) integers. Returns (sums, probabilities). Computed by convolution over
    the integer support (exact for any K, no 2^K enumeration).
    """
    d = np.abs(np.asarray(differences, dtype=np.int64))
    d = d[d != 0]
    total = int(d.sum())
    probability = np.zeros(2 * total + 1)
    probability[total] = 1.0
    for step in d:
        shifted = np.zeros_like(probability)
        shifted[step:] += 0.5 * probability[:-step]
        shifted[:-step] += 0.5 * probability[step:]
        probability = shifted
    return np.arange(-total, total + 1), probability


def clustered_mcnemar(
    correct_a, correct_b, units, *, alpha: float = ALPHA, unit: str = "participant"
) -> TestResult:
    """McNemar's test of equal accuracy of two classifiers on the same images, for images
    clustered in independent ``units`` (a participant's knees and visits).

    Durkalski et al. (Stat. Med. 2003): with d_k = (only a right) - (only b right) in unit k,
    X^2 = (sum_k d_k)^2 / sum_k d_k^2. Under H0 the unit differences are symmetric about 0,
    so the exact p-value comes from the sign-flip distribution of sum_k d_k (for units of
    one image each this is the exact binomial McNemar test). Hand-written: statsmodels'
    ``mcnemar`` treats images as independent. When even all discordant units agreeing
    could not give p <= alpha, p is NaN and the note says so.
    """
    a, b = _as_pair(correct_a, correct_b)
    units = np.asarray(units)
    if a.ndim != 1 or units.shape != a.shape:
        raise ValueError("clustered McNemar needs (n,) correctness and unit arrays")
    table = mcnemar_table(a, b)
    only_a, only_b = int(table[0, 1]), int(table[1, 0])
    _, index = np.unique(units, return_inverse=True)
    n_units = int(index.max()) + 1
    d = np.bincount(index, weights=(a & ~b).astype(float) - (~a & b).astype(float))
    d = np.rint(d).astype(np.int64)
    discordant = int(np.count_nonzero(d))
    observed = int(d.sum())
    sq = float(np.sum(d.astype(float) ** 2))
    statistic = observed**2 / sq if sq > 0 else 0.0
    note = (
        f"b={only_a} (only candidate right), c={only_b} (only reference right) in "
        f"{discordant} of {n_units} {unit}s with a non-zero difference; exact sign-flip"
    )
    sums, probability = sign_flip_distribution(d)
    smallest = float(probability[np.abs(sums) == np.abs(sums).max()].sum()) if sq > 0 else 1.0
    if smallest > alpha:
        return TestResult(
            "clustered_mcnemar", statistic, float("nan"), int(a.size), (only_a - only_b) / a.size,
            unit, n_units,
            note=f"too few discordant {unit}s ({discordant}): the smallest attainable p is "
            f"{smallest:.3g} > {alpha}; " + note,
        )  # fmt: skip
    p_value = float(probability[np.abs(sums) >= abs(observed)].sum())
    return TestResult(
        "clustered_mcnemar", statistic, float(min(1.0, p_value)), int(a.size),
        (only_a - only_b) / a.size, unit, n_units, note=note,
    )  # fmt: skip


# ----------------------------------------------------------------------------- multiplicity
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
