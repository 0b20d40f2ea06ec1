"""Realism, automatically: a classifier two-sample test (C2ST) between real and synthetic images.

A small CNN learns to tell real from synthetic images; if it cannot do better than chance on
images it did not train on, the two sets are indistinguishable to it (AUC 0.5). This is the
automatic stand-in for the reader study's detection rate (papers/000: readers spotted 16.7 % of
DDPM vs 62.5 % of GAN images).

Cross-fitting: the images are split into k stratified folds; for each fold a fresh CNN is
trained on the other k - 1 folds and scores the held-out fold, so every image gets an
out-of-fold score from a model that never saw it. Each fold's AUC comes with DeLong's variance
(fast midrank algorithm of Sun & Xu 2014); the reported AUC is the mean over folds, with
variance sum(var_k) / k^2 (the folds are disjoint test sets) and a normal 95 % CI. Averaging
per-fold AUCs rather than pooling the scores avoids comparing scores of different fold models,
whose calibrations differ; the AUC of the pooled scores is reported beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kneesynth.seeding import derive_seed

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


def _midrank(values: np.ndarray) -> np.ndarray:
    """Ranks (1-based) with ties given their mean rank; as in Sun & Xu (2014)."""
    from scipy.stats import rankdata

    return rankdata(values, method="average")


def delong_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong variance.

    Hand-written because neither scipy, scikit-learn nor statsmodels provides DeLong's
    variance. Args: ``labels`` (n,) in {0, 1} (1 = synthetic), ``scores`` (n,) higher = more
    synthetic. Returns ``(auc, variance)``.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positive, negative = scores[labels], scores[~labels]
    m, n = len(positive), len(negative)
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong needs at least 2 images per class, got {m} synthetic and {n} real"
        )
    rank_positive = _midrank(positive)
    rank_negative = _midrank(negative)
    rank_all = _midrank(np.concatenate([positive, negative]))
    auc = (rank_all[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (rank_all[:m] - rank_positive) / n  # per synthetic image: fraction of real below it
    v01 = 1.0 - (rank_all[m:] - rank_negative) / m  # per real image: fraction of synthetic above
    variance = np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n
    return float(auc), float(variance)


def auc_confidence_interval(
    auc: float, variance: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Normal (Wald) CI of the AUC from its DeLong variance, clipped to [0, 1], and the
    two-sided p-value of AUC = 0.5. Returns ``(low, high, p_value)``."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2.0)
    se = float(np.sqrt(max(variance, 0.0)))
    low, high = max(0.0, auc - z * se), min(1.0, auc + z * se)
    if se == 0.0:
        p_value = 1.0 if auc == 0.5 else 0.0
    else:
        p_value = float(2.0 * norm.sf(abs(auc - 0.5) / se))
    return low, high, p_value


@dataclass
class RealismResult:
    """Out-of-fold ``scores`` (n,), ``labels`` (n,) (1 = synthetic), ``fold`` (n,) and the test:
    ``auc`` = mean of ``fold_auc`` with its CI and p-value; ``pooled_auc`` of all scores."""

    scores: np.ndarray
    labels: np.ndarray
    fold: np.ndarray
    auc: float
    auc_low: float
    auc_high: float
    p_value: float
    fold_auc: list[float]
    pooled_auc: float = float("nan")

    def summary(self) -> dict[str, float]:
        """Numbers for ``realism.tsv`` (metric -> value)."""
        return {
            "c2st_auc": self.auc,
            "c2st_auc_ci_low": self.auc_low,
            "c2st_auc_ci_high": self.auc_high,
            "c2st_p_value": self.p_value,
            "n_real": float(np.sum(self.labels == 0)),
            "n_synthetic": float(np.sum(self.labels == 1)),
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
    folds: int = 5,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    channels: int = 8,
    confidence: float = 0.95,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> RealismResult:
    """Cross-fitted classifier two-sample test between ``real`` and ``synthetic`` images.

    Args:
        real: ``(n_r, H, W)`` real held-out images in [0, 1].
        synthetic: ``(n_s, H, W)`` synthetic images of the same size.
        folds: k of the stratified k-fold cross-fitting (each image scored out of fold).

    Returns:
        :class:`RealismResult` with the mean per-fold AUC, its DeLong CI and the p-value of
        AUC = 0.5. Every fold needs at least 2 real and 2 synthetic images.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    real, synthetic = np.asarray(real, dtype=np.float32), np.asarray(synthetic, dtype=np.float32)
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"real and synthetic images differ in size: {real.shape[1:]} vs {synthetic.shape[1:]}"
        )
    if min(len(real), len(synthetic)) < 2 * int(folds):
        raise ValueError(
            f"the C2ST with {folds} folds needs at least {2 * int(folds)} real and "
            f"{2 * int(folds)} synthetic images, got {len(real)} and {len(synthetic)}"
        )
    device = torch.device(device)
    images = torch.from_numpy(np.concatenate([real, synthetic])[:, None])
    labels = np.concatenate([np.zeros(len(real)), np.ones(len(synthetic))])
    label_tensor = torch.from_numpy(labels.astype(np.float32))
    scores = np.full(len(labels), np.nan)
    fold_of = np.full(len(labels), -1)
    fold_auc: list[float] = []
    fold_variance: list[float] = []
    splitter = StratifiedKFold(
        n_splits=int(folds), shuffle=True, random_state=derive_seed(seed, "folds") % 2**32
    )
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        model = _train_fold(
            images[train], label_tensor[train], channels=channels, epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, seed=derive_seed(seed, "fold", k), device=device,
        )  # fmt: skip
        scores[test] = _score(model, images[test], batch_size, device)
        fold_of[test] = k
        fold_auc_k, fold_variance_k = delong_auc(labels[test], scores[test])
        fold_auc.append(fold_auc_k)
        fold_variance.append(fold_variance_k)
        logger.info("c2st fold %d/%d: AUC %.3f on %d images", k + 1, folds, fold_auc[-1], len(test))
    auc, variance = float(np.mean(fold_auc)), float(np.sum(fold_variance)) / len(fold_auc) ** 2
    low, high, p_value = auc_confidence_interval(auc, variance, confidence)
    pooled_auc = float(roc_auc_score(labels, scores))
    return RealismResult(
        scores, labels.astype(np.int64), fold_of, auc, low, high, p_value, fold_auc, pooled_auc
    )


# --------------------------------------------------------------------------------------------
# Per study
# --------------------------------------------------------------------------------------------

TABLE_COLUMNS = ["study", "model", "condition", "metric", "value", "paper_value", "note"]
NOTE = (
    "classifier two-sample test: cross-fitted CNN real vs synthetic, mean per-fold AUC, DeLong 95 % CI; "
    "0.5 = indistinguishable. No paper value: the automatic stand-in for the reader study "
    "(readers detected 16.7 % of DDPM and 62.5 % of GAN images)"
)


def _test_kwargs(settings: dict) -> dict:
    return {
        key: settings[key] for key in ("folds", "epochs", "batch_size", "learning_rate", "channels")
    }


def _enough_images(path, per_class: int, settings: dict) -> None:
    from kneesynth.errors import InputError

    if per_class < 2 * int(settings["folds"]):
        raise InputError(
            path,
            f"the C2ST with {settings['folds']} folds needs at least {2 * int(settings['folds'])} "
            f"real and synthetic images, found {per_class} of one of them",
        )


def realism_rows(study: str, model: str, condition: str, result: RealismResult) -> list[dict]:
    """Rows of ``realism.tsv`` for one generator."""
    return [
        {
            "study": study,
            "model": model,
            "condition": condition,
            "metric": metric,
            "value": value,
            "paper_value": "",
            "note": NOTE if metric == "c2st_auc" else "",
        }
        for metric, value in result.summary().items()
    ]


def study_a_realism(sample_paths, settings: dict, device: torch.device | str = "cpu"):
    """Study A: each sample set's generated DRRs vs their real targets (the test DRRs whose
    masks they were generated from). Returns the rows as a DataFrame."""
    import pandas as pd

    from kneesynth.errors import InputError
    from kneesynth.io import load_npz

    rows = []
    for path in sample_paths:
        from kneesynth.controls import study_a_model_condition

        stem = str(path).rsplit("/", 1)[-1].removesuffix(".npz")
        model, condition = study_a_model_condition(stem)
        sample = load_npz(path)
        for key in ("generated", "target"):
            if key not in sample:
                raise InputError(path, f"no {key!r} array")
        real_index, synthetic_index = balanced_subsample(
            len(sample["target"]),
            len(sample["generated"]),
            settings.get("max_images_per_class"),
            derive_seed(int(settings["seed"]), "A", stem),
        )
        _enough_images(path, len(real_index), settings)
        result = classifier_two_sample_test(
            sample["target"][real_index], sample["generated"][synthetic_index], seed=derive_seed(int(settings["seed"]), "c2st", "A", stem),
            device=device, **_test_kwargs(settings),
        )  # fmt: skip
        logger.info(
            "A %s: C2ST AUC %.3f [%.3f, %.3f]", stem, result.auc, result.auc_low, result.auc_high
        )
        rows += realism_rows("A", model, condition, result)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def study_b_realism(
    real_manifest, sample_manifests, settings: dict, device: torch.device | str = "cpu"
):
    """Study B: each generator's images vs real held-out images (``held_out_split``), read at
    the synthetic images' size. Returns the rows as a DataFrame."""
    import pandas as pd

    from kneesynth.memorization import ImageFiles, resolve_image_path
    from kneesynth.oai_generators import read_oai_manifest
    from kneesynth.synthetic import read_sample_manifest

    held = read_oai_manifest(real_manifest, split=settings["held_out_split"])
    rows = []
    for manifest in sample_manifests:
        frame = read_sample_manifest(manifest)
        generator = str(frame["generator"].iloc[0])
        synthetic = ImageFiles(
            [resolve_image_path(p, manifest) for p in frame["image"].astype(str)]
        )
        real = ImageFiles(
            [resolve_image_path(p, real_manifest) for p in held["image"].astype(str)],
            synthetic.size,
        )
        real_index, synthetic_index = balanced_subsample(
            len(real),
            len(synthetic),
            settings.get("max_images_per_class"),
            derive_seed(int(settings["seed"]), "B", generator),
        )
        _enough_images(manifest, len(real_index), settings)
        real_images = np.stack([real[int(i)] for i in real_index])
        synthetic_images = np.stack([synthetic[int(i)] for i in synthetic_index])
        result = classifier_two_sample_test(
            real_images,
            synthetic_images,
            seed=derive_seed(int(settings["seed"]), "c2st", "B", generator),
            device=device,
            **_test_kwargs(settings),
        )
        logger.info(
            "B %s: C2ST AUC %.3f [%.3f, %.3f]",
            generator,
            result.auc,
            result.auc_low,
            result.auc_high,
        )
        rows += realism_rows("B", generator, "all", result)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
