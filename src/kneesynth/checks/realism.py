"""Realism, automatically: a classifier two-sample test (C2ST) between real and synthetic images.

A small CNN learns to tell real from synthetic images; if it cannot do better than chance on
images it did not train on, the two sets are indistinguishable to it (AUC 0.5). This is the
automatic stand-in for the reader study's detection rate (Smits Serena et al.: readers spotted 16.7 % of
DDPM vs 62.5 % of GAN images; Lopez-Paz & Oquab, ICLR 2017).

Cross-fitting: the images are split into k folds, grouped by their unit so that images that
share a source never sit on both sides of a fold (study A: a target DRR and its
reconstruction; study B: the knees and visits of one participant). For each fold a fresh CNN
is trained on the other k - 1 folds and scores the held-out fold.

The test, valid at any n: within a fold the scores come from a model that never saw the
fold, so under H0 (the two sets come from one distribution) an exact rank test on that fold
is valid. Paired data (study A: one real and one synthetic image per target) use the
Wilcoxon signed-rank test of synthetic - real scores, exact under the within-pair
exchangeability of H0; unpaired data (study B) use the Mann-Whitney test on one image per
unit (a participant's other images are not independent draws), exact up to 30 images per
class. Both are one-sided: the
alternative is that the CNN scores synthetic images higher (AUC > 0.5). The folds' p-values
are combined by Bonferroni (k times the smallest), valid whatever the dependence between
folds; pooling the folds' rank statistics is not (their models share training images, and a
simulation rejected 15 % of nulls at 0.05). Where even a perfect separation could not reach
alpha (too few images per fold), the p-value is left empty and the note says so. The AUC is
the mean of the folds' AUCs over all their images. Its CI is the union of a percentile
bootstrap that resamples units within each fold and class and a distribution-free bound
(:func:`auc_bound_interval`), so that a perfect separation of a few units does not give a
CI of [1, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kneesynth.seeding import derive_seed
from kneesynth.stats import ALPHA, sign_flip_distribution

logger = logging.getLogger(__name__)


class RealismCNN(nn.Module):
    """Small CNN: ``(b, 1, H, W)`` image -> ``(b,)`` logit of "synthetic".

    Three conv-ReLU blocks (``channels``, 2x, 4x), max pooling between them, global average
    pooling and a linear read-out: few parameters, so it learns the low-level statistics that
    give a generator away (noise, texture, edges) rather than memorising images.
    """

    def __init__(self, channels: int = 8):
        super().__init__()
        c = int(channels)
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * c, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1)).squeeze(1)


#: fit on the images at ``train`` (indices), score those at ``test``; the int is a seed
FitAndScore = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


@dataclass
class RealismResult:
    """Out-of-fold ``scores`` (n,), ``labels`` (n,) (1 = synthetic), ``fold`` (n,) and the test:
    ``auc`` = mean of ``fold_auc`` with its bootstrap CI, ``p_value`` (Bonferroni over the
    folds' exact tests; NaN when the images cannot reach alpha, said in ``note``),
    ``pooled_auc`` of all scores, and the count of independent units per class."""

    scores: np.ndarray
    labels: np.ndarray
    fold: np.ndarray
    auc: float
    auc_low: float
    auc_high: float
    p_value: float
    fold_auc: list[float]
    fold_p: list[float]
    pooled_auc: float
    n_real_units: int
    n_synthetic_units: int
    test: str
    note: str = ""

    def summary(self) -> dict[str, float]:
        """Numbers for ``realism.tsv`` (metric -> value)."""
        return {
            "c2st_auc": self.auc,
            "c2st_auc_ci_low": self.auc_low,
            "c2st_auc_ci_high": self.auc_high,
            "c2st_p_value": self.p_value,
            "n_real": float(np.sum(self.labels == 0)),
            "n_synthetic": float(np.sum(self.labels == 1)),
            "n_real_units": float(self.n_real_units),
            "n_synthetic_units": float(self.n_synthetic_units),
            "fold_auc_min": float(np.min(self.fold_auc)),
            "fold_auc_max": float(np.max(self.fold_auc)),
            "pooled_auc": self.pooled_auc,
        }


def balanced_subsample(
    n_real: int, n_synthetic: int, max_per_class: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of as many real as synthetic images (at most ``max_per_class`` of each)."""
    n = min(n_real, n_synthetic, max_per_class or max(n_real, n_synthetic))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_real, n, replace=False)), np.sort(
        rng.choice(n_synthetic, n, replace=False)
    )


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (1 = synthetic) as the Mann-Whitney U / (m n) with midranks (equals
    scikit-learn's ``roc_auc_score``, tested; without its per-call validation cost)."""
    from scipy.stats import rankdata  # heavy (scipy): imported on use

    positive = np.asarray(labels) == 1
    m, n = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def _grouped_folds(labels: np.ndarray, units: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each image: units dealt to ``folds`` folds by scikit-learn's shuffled KFold,
    separately per class (paired units all together), so each fold holds both classes and no
    unit is split."""
    from sklearn.model_selection import KFold  # heavy (sklearn): imported on use

    paired = set(units[labels == 0]) == set(units[labels == 1])
    strata = [units] if paired else [units[labels == 0], units[labels == 1]]
    fold_of_unit: dict[str, int] = {}
    for i, members in enumerate(strata):
        names = np.unique(members)
        splitter = KFold(
            n_splits=folds, shuffle=True, random_state=derive_seed(seed, "folds", i) % 2**32
        )
        for k, (_, test) in enumerate(splitter.split(names)):
            fold_of_unit.update(dict.fromkeys(names[test].tolist(), k))
    return np.array([fold_of_unit[u] for u in units])


def _signed_rank_test(differences: np.ndarray) -> tuple[float, float]:
    """One-sided exact Wilcoxon signed-rank test of ``differences`` > 0 (ties and zeros
    handled exactly: zeros dropped, tied |d| get average ranks). Returns (p, smallest
    attainable p). Exact for any n via the sign-flip distribution of the doubled ranks."""
    from scipy.stats import rankdata  # heavy (scipy): imported on use

    d = differences[differences != 0]
    if d.size == 0:
        return 1.0, 1.0
    doubled_ranks = np.rint(2 * rankdata(np.abs(d))).astype(np.int64)
    sums, probability = sign_flip_distribution(doubled_ranks)
    observed = int(np.sum(doubled_ranks * np.sign(d)))
    return float(probability[sums >= observed].sum()), float(probability[-1])


def _subset_sum_distribution(values: np.ndarray, size: int) -> np.ndarray:
    """Counts of the sums of all ``size``-subsets of the integer ``values`` (index = sum), by
    dynamic programming over the items: the exact permutation null of a rank sum with ties."""
    total = int(values.sum())
    counts = np.zeros((size + 1, total + 1))
    counts[0, 0] = 1.0
    for value in values:
        value = int(value)
        counts[1:, value:] = counts[1:, value:] + counts[:-1, : total + 1 - value]
    return counts[size]


#: folds with at most this many images per class get the exact rank-sum null
EXACT_RANK_SUM_MAX = 30


def _rank_sum_test(synthetic: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """One-sided Mann-Whitney test of synthetic scores > real scores. Exact (the permutation
    distribution of the midrank sum, ties included) when both classes have at most
    :data:`EXACT_RANK_SUM_MAX` images; scipy's normal approximation with tie correction
    above. Returns (p, smallest attainable p)."""
    from scipy.stats import mannwhitneyu, rankdata  # heavy (scipy): imported on use

    if max(synthetic.size, real.size) > EXACT_RANK_SUM_MAX:
        result = mannwhitneyu(synthetic, real, alternative="greater", method="asymptotic")
        return float(result.pvalue), 0.0
    doubled = np.rint(2 * rankdata(np.concatenate([synthetic, real]))).astype(np.int64)
    counts = _subset_sum_distribution(doubled, synthetic.size)
    observed = int(doubled[: synthetic.size].sum())
    total = counts.sum()
    largest = int(np.flatnonzero(counts)[-1])
    return float(counts[observed:].sum() / total), float(counts[largest] / total)


def _one_per_unit(index: np.ndarray, units: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One image of ``index`` per unit (the first unit's pick is seeded), sorted."""
    picks = [rng.choice(index[units[index] == unit]) for unit in np.unique(units[index])]
    return np.sort(np.asarray(picks, dtype=np.int64))


def auc_bound_interval(auc: float, units: int, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of an AUC from ``units`` independent units of the smaller
    class: Birnbaum & McCarty (1956) bound the variance of the AUC by theta (1 - theta) /
    min(m, n), and the theta within z standard errors of the estimate form the Wilson score
    interval. Unlike a bootstrap it does not collapse to a point when the folds separate
    perfectly. Hand-written: no library offers this bound."""
    from scipy.stats import norm  # heavy (scipy): imported on use

    z = float(norm.ppf(0.5 + confidence / 2))
    n = max(int(units), 1)
    centre = (auc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(auc * (1 - auc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _bootstrap_fold_auc(
    labels, scores, fold, units, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile CI of the mean per-fold AUC, resampling units within each fold (and within
    each class unless the units are pairs, which are resampled whole). A resample weights each
    image by the draws of its unit, so a fold's AUC is w_syn' C w_real / (sum w_syn sum w_real)
    with C the fold's (synthetic x real) comparison matrix: all resamples in a few products."""
    rng = np.random.default_rng(seed)
    mean_auc = np.zeros(n_resamples)
    folds = int(fold.max()) + 1
    for k in range(folds):
        in_fold = np.flatnonzero(fold == k)
        synthetic, real = in_fold[labels[in_fold] == 1], in_fold[labels[in_fold] == 0]
        comparison = (scores[synthetic][:, None] > scores[real][None, :]) + 0.5 * (
            scores[synthetic][:, None] == scores[real][None, :]
        )
        weights = {}
        paired = set(units[synthetic]) == set(units[real])
        groups = [in_fold] if paired else [synthetic, real]
        for members in groups:
            names, index = np.unique(units[members], return_inverse=True)
            draws = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), n_resamples)
            for position, image in enumerate(members):
                weights[int(image)] = draws[:, index[position]]
        w_synthetic = np.stack([weights[int(i)] for i in synthetic], axis=1).astype(np.float64)
        w_real = np.stack([weights[int(i)] for i in real], axis=1).astype(np.float64)
        auc = np.sum((w_synthetic @ comparison) * w_real, axis=1) / (
            w_synthetic.sum(axis=1) * w_real.sum(axis=1)
        )
        mean_auc += auc / folds
    tail = (1 - confidence) / 2
    return float(np.quantile(mean_auc, tail)), float(np.quantile(mean_auc, 1 - tail))


def cross_fitted_test(
    labels: np.ndarray,
    units: np.ndarray,
    fit_and_score: FitAndScore,
    *,
    folds: int = 3,
    seed: int = 0,
    confidence: float = 0.95,
    bootstrap_resamples: int = 1000,
    alpha: float = ALPHA,
) -> RealismResult:
    """Cross-fitted two-sample test of any scorer (the CNN, or a cheap model in tests).

    Args:
        labels: (n,) 1 = synthetic, 0 = real.
        units: (n,) the independent unit of each image. Images that share a unit stay in
            one fold. A unit holding one real and one synthetic image is a pair (study A:
            the target and its reconstruction): then every unit must be a pair and the
            folds use the signed-rank test; otherwise every unit holds one class and the
            folds use the rank-sum test on one image per unit.
        fit_and_score: trains on ``train`` indices and returns scores of ``test`` indices
            (higher = more synthetic).
    """
    labels = np.asarray(labels).astype(np.int64)
    units = np.asarray(units).astype(str)
    kinds = {u: set(labels[units == u]) for u in np.unique(units)}
    paired = all(kind == {0, 1} for kind in kinds.values())
    if not paired and any(len(kind) > 1 for kind in kinds.values()):
        raise ValueError("a unit must hold one real and one synthetic image, or one class only")
    if paired and not all(np.sum(units == u) == 2 for u in kinds):
        raise ValueError("paired units must hold exactly one real and one synthetic image")
    real_units = len({u for u in units[labels == 0]})
    synthetic_units = len({u for u in units[labels == 1]})
    if min(real_units, synthetic_units) < 2 * int(folds):
        raise ValueError(
            f"the C2ST with {folds} folds needs at least {2 * int(folds)} real and "
            f"{2 * int(folds)} synthetic units, got {real_units} and {synthetic_units}"
        )
    assignment = _grouped_folds(labels, units, int(folds), seed)
    scores = np.full(labels.size, np.nan)
    fold_of = np.full(labels.size, -1)
    fold_auc, fold_p, smallest = [], [], []
    rng = np.random.default_rng(derive_seed(seed, "one_per_unit"))
    for k in range(int(folds)):
        train, test = np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)
        scores[test] = fit_and_score(train, test, derive_seed(seed, "fold", k))
        fold_of[test] = k
        fold_auc.append(_auc(labels[test], scores[test]))
        if paired:
            by_unit = {u: test[units[test] == u] for u in np.unique(units[test])}
            differences = np.array(
                [
                    scores[i[labels[i] == 1][0]] - scores[i[labels[i] == 0][0]]
                    for i in by_unit.values()
                ]
            )
            p_k, smallest_k = _signed_rank_test(differences)
        else:
            real = _one_per_unit(test[labels[test] == 0], units, rng)
            synthetic = _one_per_unit(test[labels[test] == 1], units, rng)
            p_k, smallest_k = _rank_sum_test(scores[synthetic], scores[real])
        fold_p.append(p_k)
        smallest.append(smallest_k)
        logger.info("c2st fold %d/%d: AUC %.3f on %d images, p %.3g", k + 1, folds, fold_auc[-1], len(test), p_k)  # fmt: skip
    test_name = "signed-rank (paired)" if paired else "rank-sum (one image per unit)"
    attainable = min(1.0, len(fold_p) * min(smallest))
    note = f"{len(fold_p)} grouped folds, exact one-sided {test_name} per fold, Bonferroni"
    if attainable > alpha:
        p_value = float("nan")
        note = (
            f"too few units per fold: even a perfect separation gives p >= {attainable:.3g} > "
            f"{alpha}; " + note
        )
    else:
        p_value = float(min(1.0, len(fold_p) * min(fold_p)))
    auc = float(np.mean(fold_auc))
    boot_low, boot_high = _bootstrap_fold_auc(
        labels, scores, fold_of, units, int(bootstrap_resamples), confidence,
        derive_seed(seed, "bootstrap"),
    )  # fmt: skip
    bound_low, bound_high = auc_bound_interval(auc, min(real_units, synthetic_units), confidence)
    low, high = min(boot_low, bound_low), max(boot_high, bound_high)
    return RealismResult(
        scores, labels, fold_of, auc, low, high, p_value, fold_auc, fold_p,
        _auc(labels, scores), real_units, synthetic_units, test_name, note,
    )  # fmt: skip


def _train_fold(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    channels: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: torch.device,
) -> RealismCNN:
    torch.manual_seed(seed)
    model = RealismCNN(channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start : start + batch_size]
            x, y = images[batch].to(device), labels[batch].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def _score(
    model: RealismCNN, images: torch.Tensor, batch_size: int, device: torch.device
) -> np.ndarray:
    out = [
        torch.sigmoid(model(images[i : i + batch_size].to(device))).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).double().numpy()


def classifier_two_sample_test(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    real_units=None,
    synthetic_units=None,
    paired: bool = False,
    folds: int = 5,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    channels: int = 8,
    confidence: float = 0.95,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> RealismResult:
    """Cross-fitted CNN two-sample test between ``real`` and ``synthetic`` images.

    Args:
        real: ``(n_r, H, W)`` real held-out images in [0, 1].
        synthetic: ``(n_s, H, W)`` synthetic images of the same size.
        real_units, synthetic_units: the unit of each image (default: each its own).
        paired: ``real[i]`` and ``synthetic[i]`` share a source (a target and its
            reconstruction): one unit per pair.
        folds: k of the grouped k-fold cross-fitting (each image scored out of fold).

    Returns:
        :class:`RealismResult` (see :func:`cross_fitted_test`).
    """
    real, synthetic = np.asarray(real, dtype=np.float32), np.asarray(synthetic, dtype=np.float32)
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"real and synthetic images differ in size: {real.shape[1:]} vs {synthetic.shape[1:]}"
        )
    if paired:
        if len(real) != len(synthetic):
            raise ValueError("paired C2ST needs as many real as synthetic images")
        real_units = synthetic_units = [f"pair{i}" for i in range(len(real))]
    real_units = [f"real{i}" for i in range(len(real))] if real_units is None else real_units
    if synthetic_units is None:
        synthetic_units = [f"synthetic{i}" for i in range(len(synthetic))]
    if not paired:
        real_units = [f"real:{u}" for u in real_units]
        synthetic_units = [f"synthetic:{u}" for u in synthetic_units]
    device = torch.device(device)
    images = torch.from_numpy(np.concatenate([real, synthetic])[:, None])
    labels = np.concatenate([np.zeros(len(real)), np.ones(len(synthetic))]).astype(np.int64)
    label_tensor = torch.from_numpy(labels.astype(np.float32))

    def fit_and_score(train: np.ndarray, test: np.ndarray, fold_seed: int) -> np.ndarray:
        model = _train_fold(
            images[train], label_tensor[train], channels=channels, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, seed=fold_seed, device=device,
        )  # fmt: skip
        return _score(model, images[test], batch_size, device)

    return cross_fitted_test(
        labels, np.asarray([*real_units, *synthetic_units]), fit_and_score, folds=folds,
        seed=seed, confidence=confidence, bootstrap_resamples=bootstrap_resamples,
    )  # fmt: skip
