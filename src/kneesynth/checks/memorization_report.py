"""The memorisation check run on each study (study A's DRR samples, study B's synthetic sets), its
table (``memorization.tsv``, one number per row) and the figure of the closest pairs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kneesynth.data.images import ImageFiles
from kneesynth.data.manifest import resolve_image
from kneesynth.errors import InputError
from kneesynth.tables import TABLE_COLUMNS, table_row

if TYPE_CHECKING:
    import torch
from kneesynth.checks.memorization import (
    ImageSource,
    MemorizationReference,
    MemorizationResult,
    pca_features,
    top_pairs,
)
from kneesynth.checks.settings import study_a_model_condition
from kneesynth.data.manifest import read_oai_manifest, read_sample_manifest
from kneesynth.io import atomic_path, load_npz, read_tsv, save_npz
from kneesynth.study_a.dataset import load_dataset

logger = logging.getLogger(__name__)

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
    import pandas as pd  # heavy (pandas): imported on use

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
    import matplotlib  # heavy (matplotlib): imported on use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy (matplotlib): imported on use

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
    import pandas as pd  # heavy (pandas): imported on use

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
    import torch  # heavy (torch): imported on use
    import torch.nn.functional as F  # heavy (torch): imported on use

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
    import pandas as pd  # heavy (pandas): imported on use

    from kneesynth.study_b.fid import classifier_extractor  # heavy (torch): imported on use

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
    import pandas as pd  # heavy (pandas): imported on use

    return pd.concat(
        [read_tsv(p, required=TABLE_COLUMNS) for p in partial_tables], ignore_index=True
    )[TABLE_COLUMNS]
