"""Memorisation check: is a synthetic image a copy of a training image?

Akbar et al. (their code: muhamadusman/Synthetic_Memorization, ``coorelation.py``) take, for
every synthetic image, the Pearson correlation with every training image (``scipy.stats.pearsonr``
on the flattened grey values) and keep the maximum and the training image that reaches it. That
loop costs one Python call per pair. Here the same numbers come from normalised matrix products:
each image (row of ``(n, H*W)``) is centred and scaled to unit L2 norm, so that the dot product
of two rows *is* their Pearson correlation; ``S @ T.T`` over blocks of rows, with a running
maximum and argmax, gives every synthetic image's maximum correlation with bounded memory (the
block sizes follow from a memory budget) at close to the speed of one bare matrix product.

A maximum correlation means little on its own (two radiographs of different knees correlate
highly), so it is calibrated: the real held-out images' maximum correlation with the same
training set is the baseline, and a synthetic image is flagged as a likely copy when it exceeds
the configured quantile (default 0.99) of that baseline. The same is done for the nearest
training image in a feature space (study B: the FID feature network; study A, which has no
FID, a PCA of the training DRRs): flagged when closer than the (1 - quantile) quantile of the
held-out images' nearest-neighbour distances.

Image sources are anything with ``len()`` whose slices give ``(b, H, W)`` (or ``(b, D)``)
arrays: numpy arrays, memory maps, or :class:`kneesynth.data.images.ImageFiles` (PNG files read lazily), so a training
set larger than memory is read block by block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that compute correlations (heavy; the table and figure job
# import this module through kneesynth.checks.memorization_report without needing it).

logger = logging.getLogger(__name__)

FLOAT_BYTES = 4  # float32 throughout


class ImageSource(Protocol):
    """Images ``(n, H, W)`` or flattened ``(n, D)`` that can be sliced along the first axis."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Maximum Pearson correlation, blocked
# --------------------------------------------------------------------------------------------


def normalise_rows(
    images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``(n, H, W)`` or ``(n, D)`` -> float32 ``(n, D)`` with every row centred and of unit L2 norm.

    The dot product of two such rows is the Pearson correlation of the two images. A constant
    image (zero variance: Pearson undefined) becomes a zero row, i.e. correlation 0 with all.
    """
    import torch  # heavy (torch): imported on use

    rows = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    rows = rows.to(device=device, dtype=torch.float32).reshape(rows.shape[0], -1)
    means = rows.mean(dim=1, keepdim=True)
    centred = rows - means  # a new tensor: the caller's array is never written to
    norms = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    # a spread below float32 resolution of the image's own norm (sqrt(norm^2 + D mean^2))
    # counts as a constant image
    scale = torch.sqrt(norms.square() + rows.shape[1] * means.square())
    inverse = torch.where(norms > 1e-5 * scale, 1.0 / norms, torch.zeros_like(norms))
    return centred.mul_(inverse)


def block_sizes(
    n_synthetic: int, n_training: int, dim: int, memory_budget_bytes: int
) -> tuple[int, int, bool]:
    """Rows per synthetic block, rows per training block and whether the whole normalised
    training set is kept, so that the working set stays within ``memory_budget_bytes``.

    Working set: a training block ``(bt, D)``, a synthetic block ``(bs, D)`` and the correlation
    block ``(bs, bt)``, float32, plus as much again for temporaries (centring, the max).
    The training set is kept whole (read and normalised once) when it takes at most half the
    budget; else both are tiled.
    """
    budget = max(int(memory_budget_bytes), 1) // FLOAT_BYTES  # in floats
    if n_training * dim <= budget // 2:
        bt, keep = n_training, True
        remaining = budget - n_training * dim
    else:
        bt, keep = max(1, budget // (4 * dim)), False
        remaining = budget - bt * dim
    # synthetic block: its rows (dim) + its correlations (bt), twice for temporaries
    bs = max(1, remaining // (2 * (dim + bt)))
    return int(min(bs, max(n_synthetic, 1))), int(min(bt, max(n_training, 1))), keep


@dataclass
class MaxCorrelation:
    """Per synthetic image: ``max_correlation`` (n,) float32 and ``nearest_index`` (n,) int64."""

    max_correlation: np.ndarray
    nearest_index: np.ndarray


def _as_source(images: Any) -> Any:
    return (
        images
        if hasattr(images, "__getitem__") and hasattr(images, "__len__")
        else np.asarray(images)
    )


def max_correlation(
    synthetic: ImageSource | np.ndarray,
    training: ImageSource | np.ndarray,
    *,
    memory_budget_mb: float = 512,
    device: torch.device | str = "cpu",
) -> MaxCorrelation:
    """Maximum Pearson correlation of each synthetic image with any training image.

    Args:
        synthetic: ``(n_s, H, W)`` (or ``(n_s, D)``) source, sliceable along axis 0.
        training: ``(n_t, H, W)`` source with the same number of pixels per image.
        memory_budget_mb: bound on the working memory (see :func:`block_sizes`).
        device: where the products run (``cuda`` on a GPU node).

    Returns:
        :class:`MaxCorrelation`: for each synthetic image the maximum over training images of
        the Pearson correlation, and the index of that training image (the first on ties in a
        block, the earliest block across blocks).
    """
    import torch  # heavy (torch): imported on use

    synthetic, training = _as_source(synthetic), _as_source(training)
    n_s, n_t = len(synthetic), len(training)
    if n_t == 0:
        raise ValueError("max_correlation: the training set is empty")
    first = np.asarray(training[0:1])
    dim = int(np.prod(first.shape[1:]))
    if n_s and int(np.prod(np.asarray(synthetic[0:1]).shape[1:])) != dim:
        raise ValueError(
            f"max_correlation: synthetic and training images differ in size ({np.asarray(synthetic[0:1]).shape[1:]} vs {first.shape[1:]})"
        )
    bs, bt, keep = block_sizes(n_s, n_t, dim, int(memory_budget_mb * 2**20))
    logger.info(
        "max correlation: %d synthetic x %d training images of %d pixels; blocks %d x %d%s",
        n_s,
        n_t,
        dim,
        bs,
        bt,
        " (training set kept)" if keep else "",
    )
    best = torch.full((n_s,), -math.inf, dtype=torch.float32, device=device)
    best_index = torch.zeros((n_s,), dtype=torch.int64, device=device)
    cached = normalise_rows(training[0:n_t], device) if keep else None
    for s0 in range(0, n_s, bs):
        s_rows = normalise_rows(synthetic[s0 : s0 + bs], device)
        block_best = best[s0 : s0 + bs]
        block_index = best_index[s0 : s0 + bs]
        for t0 in range(0, n_t, bt):
            t_rows = cached if keep else normalise_rows(training[t0 : t0 + bt], device)
            values, indices = torch.max(s_rows @ t_rows.T, dim=1)
            better = values > block_best
            block_best.copy_(torch.where(better, values, block_best))
            block_index.copy_(torch.where(better, indices + t0, block_index))
    return MaxCorrelation(best.clamp_(-1.0, 1.0).cpu().numpy(), best_index.cpu().numpy())


def max_correlation_brute_force(synthetic: np.ndarray, training: np.ndarray) -> MaxCorrelation:
    """Reference: ``scipy.stats.pearsonr`` for every pair, as Akbar et al. (slow; for tests)."""
    from scipy.stats import pearsonr  # heavy (scipy): imported on use

    synthetic = np.asarray(synthetic, dtype=np.float64).reshape(len(synthetic), -1)
    training = np.asarray(training, dtype=np.float64).reshape(len(training), -1)
    best = np.empty(len(synthetic))
    index = np.empty(len(synthetic), dtype=np.int64)
    for i, image in enumerate(synthetic):
        scores = [
            pearsonr(image, other).statistic if np.ptp(image) and np.ptp(other) else 0.0
            for other in training
        ]
        index[i] = int(np.argmax(scores))
        best[i] = scores[index[i]]
    return MaxCorrelation(best.astype(np.float32), index)


# --------------------------------------------------------------------------------------------
# Feature space nearest neighbour
# --------------------------------------------------------------------------------------------


def nearest_in_features(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest reference row of each query row (scikit-learn): distances, indices."""
    from sklearn.neighbors import NearestNeighbors  # heavy (sklearn): imported on use

    index = NearestNeighbors(n_neighbors=1).fit(np.asarray(reference, dtype=np.float64))
    distances, indices = index.kneighbors(np.asarray(query, dtype=np.float64))
    return distances[:, 0], indices[:, 0]


def pca_features(
    training: np.ndarray, n_components: int, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A feature map for a study without an FID network: the PCA of the training images.

    ``training`` ``(n, H, W)``; returns ``f((m, H, W)) -> (m, k)`` with k = min(n_components,
    n, H*W).
    """
    from sklearn.decomposition import PCA  # heavy (sklearn): imported on use

    flat = np.asarray(training, dtype=np.float32).reshape(len(training), -1)
    k = int(min(n_components, flat.shape[0], flat.shape[1]))
    pca = PCA(n_components=k, random_state=seed % 2**32).fit(flat)
    return lambda images: pca.transform(
        np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    )


def features_in_blocks(
    extract: Callable[[np.ndarray], np.ndarray], images: ImageSource, block: int = 256
) -> np.ndarray:
    """Apply ``extract`` to ``images`` block by block: ``(n, ...)`` -> ``(n, k)``."""
    parts = [np.asarray(extract(images[i : i + block])) for i in range(0, len(images), block)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0))


# --------------------------------------------------------------------------------------------
# The check for one generator
# --------------------------------------------------------------------------------------------


@dataclass
class MemorizationResult:
    """Everything the check found for one generator.

    Arrays per synthetic image (n_s,): ``max_correlation``, ``nearest_index``, ``flagged``;
    ``feature_distance``, ``feature_nearest_index``, ``feature_flagged`` (empty if no features).
    Per held-out image (n_h,): ``baseline_max_correlation``, ``baseline_feature_distance``.
    """

    max_correlation: np.ndarray
    nearest_index: np.ndarray
    flagged: np.ndarray
    baseline_max_correlation: np.ndarray
    correlation_threshold: float
    quantile: float
    feature_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_nearest_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    feature_flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    baseline_feature_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_threshold: float = float("nan")
    feature_space: str = ""
    n_training: int = 0

    def summary(self) -> dict[str, float]:
        """The numbers of ``memorization.tsv`` for this generator (metric -> value)."""
        out = {
            "max_correlation_median": float(np.median(self.max_correlation)),
            "max_correlation_max": float(np.max(self.max_correlation)),
            "fraction_flagged": float(np.mean(self.flagged)),
            "n_flagged": float(np.sum(self.flagged)),
            "baseline_quantile": float(self.correlation_threshold),
            "baseline_max_correlation_median": float(np.median(self.baseline_max_correlation)),
            "n_synthetic": float(len(self.max_correlation)),
            "n_held_out": float(len(self.baseline_max_correlation)),
            "n_training": float(self.n_training),
        }
        if len(self.feature_distance):
            out.update(
                {
                    "feature_distance_median": float(np.median(self.feature_distance)),
                    "feature_distance_min": float(np.min(self.feature_distance)),
                    "feature_fraction_flagged": float(np.mean(self.feature_flagged)),
                    "feature_baseline_quantile": float(self.feature_threshold),
                    "nearest_agreement": float(
                        np.mean(self.feature_nearest_index == self.nearest_index)
                    ),
                }
            )
        return out


def calibrate_threshold(baseline: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of the held-out baseline (numpy's linear interpolation)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    baseline = np.asarray(baseline, dtype=np.float64)
    if baseline.size == 0:
        raise ValueError("calibration needs at least one held-out image")
    return float(np.quantile(baseline, quantile))


class MemorizationReference:
    """A training set and its held-out baseline, computed once, against which any number of
    generators' synthetic sets are checked (:meth:`check`).

    Args:
        training: ``(n_t, H, W)`` the images the generators were trained on.
        held_out: ``(n_h, H, W)`` real images the generators never saw (the baseline).
        quantile: a synthetic image is flagged when its maximum correlation exceeds this
            quantile of the held-out images' maximum correlations (and, in feature space, when
            its nearest-neighbour distance is below the ``1 - quantile`` quantile).
        features: optional ``(m, H, W) -> (m, k)`` feature map (FID network, PCA).
    """

    def __init__(
        self,
        training: ImageSource | np.ndarray,
        held_out: ImageSource | np.ndarray,
        *,
        quantile: float = 0.99,
        memory_budget_mb: float = 512,
        device: torch.device | str = "cpu",
        features: Callable[[np.ndarray], np.ndarray] | None = None,
        feature_space: str = "",
        feature_block: int = 256,
    ):
        self.training, self.held_out = _as_source(training), _as_source(held_out)
        self.quantile, self.memory_budget_mb, self.device = quantile, memory_budget_mb, device
        self.features, self.feature_space, self.feature_block = (
            features,
            feature_space,
            feature_block,
        )
        self.baseline = max_correlation(
            self.held_out, self.training, memory_budget_mb=memory_budget_mb, device=device
        )
        self.threshold = calibrate_threshold(self.baseline.max_correlation, quantile)
        if features is not None:
            self.training_features = features_in_blocks(features, self.training, feature_block)
            held_out_features = features_in_blocks(features, self.held_out, feature_block)
            self.baseline_feature_distance, _ = nearest_in_features(
                held_out_features, self.training_features
            )
            self.feature_threshold = calibrate_threshold(
                self.baseline_feature_distance, 1.0 - quantile
            )
        logger.info(
            "baseline: %d held-out images, median max correlation %.4f, %g quantile %.4f",
            len(self.held_out),
            float(np.median(self.baseline.max_correlation)),
            quantile,
            self.threshold,
        )

    def check(self, synthetic: ImageSource | np.ndarray) -> MemorizationResult:
        """Maximum correlation (and feature-space nearest neighbour) of every synthetic image,
        flagged against the held-out baseline."""
        synthetic = _as_source(synthetic)
        found = max_correlation(
            synthetic, self.training, memory_budget_mb=self.memory_budget_mb, device=self.device
        )
        result = MemorizationResult(
            max_correlation=found.max_correlation,
            nearest_index=found.nearest_index,
            flagged=found.max_correlation > self.threshold,
            baseline_max_correlation=self.baseline.max_correlation,
            correlation_threshold=self.threshold,
            quantile=self.quantile,
            n_training=len(self.training),
        )
        if self.features is not None:
            distance, nearest = nearest_in_features(
                features_in_blocks(self.features, synthetic, self.feature_block),
                self.training_features,
            )
            result.feature_distance = distance
            result.feature_nearest_index = nearest
            result.feature_flagged = distance < self.feature_threshold
            result.baseline_feature_distance = self.baseline_feature_distance
            result.feature_threshold = self.feature_threshold
            result.feature_space = self.feature_space
        return result


def memorization_check(
    synthetic: ImageSource | np.ndarray,
    training: ImageSource | np.ndarray,
    held_out: ImageSource | np.ndarray,
    **options: Any,
) -> MemorizationResult:
    """The memorisation check of one generator: ``synthetic`` ``(n_s, H, W)`` against
    ``training``, calibrated on ``held_out`` (options of :class:`MemorizationReference`)."""
    return MemorizationReference(training, held_out, **options).check(synthetic)


def top_pairs(result: MemorizationResult, k: int) -> np.ndarray:
    """Indices of the ``k`` synthetic images with the highest maximum correlation (descending)."""
    order = np.argsort(-result.max_correlation, kind="stable")
    return order[: max(0, int(k))]
