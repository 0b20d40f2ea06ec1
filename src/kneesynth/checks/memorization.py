"""Memorisation check: is a synthetic image a copy of a training image?

Akbar et al. (papers/001, code muhamadusman/Synthetic_Memorization ``coorelation.py``) take, for
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
arrays: numpy arrays, memory maps, or :class:`ImageFiles` (PNG files read lazily), so a training
set larger than memory is read block by block.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kneesynth.data.images import ImageFiles
from kneesynth.data.manifest import resolve_image
from kneesynth.errors import InputError
from kneesynth.tables import TABLE_COLUMNS, table_row

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that compute correlations: the table and figure job
# (memorization_table, plot_top_pairs) and the image readers do without it.

logger = logging.getLogger(__name__)

FLOAT_BYTES = 4  # float32 throughout


class ImageSource(Protocol):
    """Images ``(n, H, W)`` or flattened ``(n, D)`` that can be sliced along the first axis."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


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
    import torch

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
    import torch

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
    from scipy.stats import pearsonr

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
    from sklearn.neighbors import NearestNeighbors

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
    from sklearn.decomposition import PCA

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


# --------------------------------------------------------------------------------------------
# The checks of each study, the table and the figure
# --------------------------------------------------------------------------------------------

PAPER_NOTE = (
    "Akbar et al. give no threshold or rate: they show the synthetic images with the highest "
    "maximum correlation and find copies from diffusion models trained on small data sets"
)


def summary_rows(
    study: str, model: str, condition: str, result: MemorizationResult
) -> list[dict[str, Any]]:
    """Rows of ``memorization.tsv`` for one generator (one number per row)."""
    notes = {
        "max_correlation_median": "max over training images of the Pearson correlation (Akbar et al.)",
        "fraction_flagged": f"max correlation above the {result.quantile:g} quantile of the real held-out images' max correlation",
        "baseline_quantile": f"{result.quantile:g} quantile of the real held-out images' max correlation with the training set",
        "feature_distance_median": f"Euclidean distance to the nearest training image in feature space: {result.feature_space}",
        "feature_fraction_flagged": f"nearest training image closer than the {1 - result.quantile:g} quantile of the held-out images' distances ({result.feature_space})",
        "nearest_agreement": "fraction whose nearest training image is the same in pixel correlation and in feature space",
    }
    return [
        table_row(
            study,
            model,
            condition,
            metric,
            value,
            "",
            notes.get(metric, PAPER_NOTE if metric == "max_correlation_max" else ""),
        )
        for metric, value in result.summary().items()
    ]


def per_image_table(
    study: str,
    model: str,
    condition: str,
    result: MemorizationResult,
    training_names: Sequence[str],
) -> Any:
    """One row per synthetic image: its max correlation, nearest training image, flags."""
    import pandas as pd

    table = pd.DataFrame(
        {
            "study": study,
            "model": model,
            "condition": condition,
            "synthetic_index": np.arange(len(result.max_correlation)),
            "max_correlation": result.max_correlation,
            "nearest_training": [training_names[i] for i in result.nearest_index],
            "flagged": result.flagged,
        }
    )
    if len(result.feature_distance):
        table["feature_distance"] = result.feature_distance
        table["feature_nearest_training"] = [
            training_names[i] for i in result.feature_nearest_index
        ]
        table["feature_flagged"] = result.feature_flagged
    return table


@dataclass
class TopPairs:
    """The ``k`` closest (synthetic, training) pairs of one generator for the figure.

    ``synthetic``, ``training``: (k, H, W); ``max_correlation`` (k,); ``flagged`` (k,).
    """

    label: str
    synthetic: np.ndarray
    training: np.ndarray
    max_correlation: np.ndarray
    flagged: np.ndarray
    threshold: float


def collect_top_pairs(
    label: str, result: MemorizationResult, synthetic: ImageSource, training: ImageSource, k: int
) -> TopPairs:
    order = top_pairs(result, k)
    return TopPairs(
        label=label,
        synthetic=np.stack([np.asarray(synthetic[int(i) : int(i) + 1])[0] for i in order]),
        training=np.stack(
            [np.asarray(training[int(j) : int(j) + 1])[0] for j in result.nearest_index[order]]
        ),
        max_correlation=result.max_correlation[order],
        flagged=result.flagged[order],
        threshold=result.correlation_threshold,
    )


def save_top_pairs(path: str | os.PathLike[str], pairs: Sequence[TopPairs]) -> None:
    """All generators' pairs of one study in one .npz (arrays keyed ``<i>_<field>``)."""
    from kneesynth.io import save_npz

    arrays: dict[str, np.ndarray] = {"labels": np.array([p.label for p in pairs])}
    for i, p in enumerate(pairs):
        arrays.update(
            {
                f"{i}_synthetic": p.synthetic,
                f"{i}_training": p.training,
                f"{i}_max_correlation": p.max_correlation,
                f"{i}_flagged": p.flagged,
                f"{i}_threshold": np.array(p.threshold),
            }
        )
    save_npz(path, **arrays)


def load_top_pairs(path: str | os.PathLike[str]) -> list[TopPairs]:
    from kneesynth.io import load_npz

    data = load_npz(path)
    if "labels" not in data:
        raise InputError(path, "no 'labels' array (not a memorisation pairs file)")
    return [
        TopPairs(
            str(label),
            data[f"{i}_synthetic"],
            data[f"{i}_training"],
            data[f"{i}_max_correlation"],
            data[f"{i}_flagged"],
            float(data[f"{i}_threshold"]),
        )
        for i, label in enumerate(data["labels"])
    ]


def plot_top_pairs(pairs: Sequence[TopPairs], path: str | os.PathLike[str]) -> None:
    """One row per generator: its ``k`` closest pairs side by side (synthetic | nearest
    training image), titled with the maximum correlation (red when flagged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kneesynth.io import atomic_path

    k = max((len(p.max_correlation) for p in pairs), default=1)
    fig, axes = plt.subplots(
        max(len(pairs), 1), 2 * k, figsize=(1.3 * 2 * k, 1.55 * max(len(pairs), 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for row, p in enumerate(pairs):
        for j in range(len(p.max_correlation)):
            left, right = axes[row, 2 * j], axes[row, 2 * j + 1]
            left.imshow(p.synthetic[j], cmap="gray", vmin=0, vmax=1)
            right.imshow(p.training[j], cmap="gray", vmin=0, vmax=1)
            colour = "red" if p.flagged[j] else "black"
            left.set_title(f"r={p.max_correlation[j]:.3f}", fontsize=7, color=colour)
            right.set_title("nearest train", fontsize=6)
        axes[row, 0].text(
            -0.15,
            0.5,
            p.label,
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=7,
        )
    fig.suptitle(
        "Closest synthetic-training pairs (max Pearson correlation; red: above the held-out baseline quantile)",
        fontsize=8,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)


def study_a_memorization(
    dataset_path: str | os.PathLike[str],
    sample_paths: Sequence[str | os.PathLike[str]],
    settings: Mapping[str, Any],
    device: torch.device | str = "cpu",
) -> tuple[Any, Any, list[TopPairs]]:
    """Study A: every CSM/CTM sample set against the training DRRs, calibrated on the test DRRs.

    Feature space: study A has no FID network (the paper reports none), so the nearest
    training image is also found in the space of the first ``pca_components`` principal
    components of the training DRRs. Returns (summary rows, per-image table, top pairs).
    """
    import pandas as pd

    from kneesynth.checks.controls import study_a_model_condition
    from kneesynth.io import load_npz
    from kneesynth.study_a.dataset import load_dataset

    data = load_dataset(dataset_path)
    train = np.flatnonzero(data["split"] == "train")
    held = np.flatnonzero(data["split"] == settings["held_out_split"])
    if train.size == 0 or held.size < 2:
        raise InputError(
            dataset_path, f"need training images and at least 2 {settings['held_out_split']} images"
        )
    training, held_out = data["drr"][train], data["drr"][held]
    names = [
        f"{v}/view{w}" for v, w in zip(data["volume"][train], data["view"][train], strict=True)
    ]
    n_pca = int(settings["pca_components"])
    reference = MemorizationReference(
        training, held_out, quantile=float(settings["quantile"]), memory_budget_mb=float(settings["memory_budget_mb"]), device=device,
        features=pca_features(training, n_pca, int(settings["seed"])), feature_space=f"pca{min(n_pca, len(training), training[0].size)}_of_training_drrs",
    )  # fmt: skip
    rows, tables, pairs = [], [], []
    for path in sample_paths:
        stem = Path(path).name.removesuffix(".npz")
        model, condition = study_a_model_condition(stem)
        sample = load_npz(path)
        if "generated" not in sample:
            raise InputError(path, "no 'generated' array")
        if sample["generated"].shape[1:] != training.shape[1:]:
            raise InputError(
                path,
                f"generated images are {sample['generated'].shape[1:]}, the training DRRs {training.shape[1:]}",
            )
        result = reference.check(sample["generated"])
        rows += summary_rows("A", model, condition, result)
        tables.append(per_image_table("A", model, condition, result, names))
        pairs.append(
            collect_top_pairs(
                f"A {model} {condition}",
                result,
                sample["generated"],
                training,
                int(settings["top_k"]),
            )
        )
        logger.info(
            "A %s %s: median max correlation %.4f, %d flagged",
            model,
            condition,
            float(np.median(result.max_correlation)),
            int(result.flagged.sum()),
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS), pd.concat(tables, ignore_index=True), pairs


def uint8_features(
    extract: Callable[[np.ndarray], np.ndarray], image_size: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a feature extractor of uint8 ``(n, S, S)`` images for float ``(n, H, W)`` in [0, 1]."""
    import torch
    import torch.nn.functional as F

    def features(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.shape[-2:] != (image_size, image_size):
            images = F.interpolate(
                torch.from_numpy(images)[:, None],
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
            )[:, 0].numpy()
        return extract(np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8))

    return features


def study_b_memorization(
    real_manifest: str | os.PathLike[str],
    sample_manifests: Sequence[str | os.PathLike[str]],
    feature_weights: str | os.PathLike[str],
    settings: Mapping[str, Any],
    device: torch.device | str = "cpu",
) -> tuple[Any, Any, list[TopPairs]]:
    """Study B: every generator's synthetic set against the real training split, calibrated on
    the real held-out split; feature space: the FID feature network (kneesynth.study_b.fid).

    Real images are read at the synthetic images' size (bilinear), lazily (:class:`ImageFiles`).
    """
    import pandas as pd

    from kneesynth.data.manifest import read_oai_manifest, read_sample_manifest
    from kneesynth.study_b.fid import classifier_extractor

    extract, description, fid_size = classifier_extractor(feature_weights, device)
    features = uint8_features(extract, fid_size)
    train_rows = read_oai_manifest(real_manifest, split="train")
    held_rows = read_oai_manifest(real_manifest, split=settings["held_out_split"])
    references: dict[tuple[int, int], tuple[MemorizationReference, ImageFiles]] = {}
    rows, tables, pairs = [], [], []
    for manifest in sample_manifests:
        frame = read_sample_manifest(manifest)
        generator = str(frame["generator"].iloc[0])
        synthetic = ImageFiles([resolve_image(p, manifest) for p in frame["image"].astype(str)])
        size = tuple(synthetic.size)
        if size not in references:
            training = ImageFiles(
                [resolve_image(p, real_manifest) for p in train_rows["image"].astype(str)],
                size,
            )
            held_out = ImageFiles(
                [resolve_image(p, real_manifest) for p in held_rows["image"].astype(str)], size
            )
            reference = MemorizationReference(
                training, held_out, quantile=float(settings["quantile"]), memory_budget_mb=float(settings["memory_budget_mb"]),
                device=device, features=features, feature_space=f"fid_features:{description}",
            )  # fmt: skip
            references[size] = (reference, training)
        reference, training = references[size]
        result = reference.check(synthetic)
        rows += summary_rows("B", generator, "all", result)
        tables.append(
            per_image_table("B", generator, "all", result, [str(p) for p in training.paths])
        )
        pairs.append(
            collect_top_pairs(f"B {generator}", result, synthetic, training, int(settings["top_k"]))
        )
        logger.info(
            "B %s: median max correlation %.4f, %d flagged",
            generator,
            float(np.median(result.max_correlation)),
            int(result.flagged.sum()),
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS), pd.concat(tables, ignore_index=True), pairs


def memorization_table(partial_tables: Sequence[str | os.PathLike[str]]) -> Any:
    """Stack the per-study summary tables into ``memorization.tsv``."""
    import pandas as pd

    from kneesynth.io import read_tsv

    return pd.concat(
        [read_tsv(p, required=TABLE_COLUMNS) for p in partial_tables], ignore_index=True
    )[TABLE_COLUMNS]
