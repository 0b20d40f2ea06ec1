"""Classifier two-sample test: DeLong against the direct formula, and the test on easy cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from kneesynth.realism import (
    auc_confidence_interval,
    balanced_subsample,
    classifier_two_sample_test,
    delong_auc,
)

torch.set_num_threads(1)


def delong_direct(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) from the placement values, O(m n): the reference for the midrank version."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    psi = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(positive) + v01.var(ddof=1) / len(negative)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_direct_formula_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(17), np.ones(23)].astype(int)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes ties
    auc, variance = delong_auc(labels, scores)
    expected_auc, expected_variance = delong_direct(labels, scores)
    assert auc == pytest.approx(expected_auc, abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert variance == pytest.approx(expected_variance, rel=1e-10)


def test_hand_computed_auc():
    # synthetic scores 0.9, 0.4; real 0.5, 0.1: pairs won 1+1+0+1 = 3 of 4
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.4, 0.5, 0.1])
    auc, variance = delong_auc(labels, scores)
    assert auc == pytest.approx(0.75)
    # V10 = (1, 0.5), V01 = (0.5, 1): var = 0.125/2 + 0.125/2
    assert variance == pytest.approx(0.125)


def test_confidence_interval_and_p_value():
    low, high, p = auc_confidence_interval(0.5, 0.01)
    assert low == pytest.approx(0.5 - 1.959964 * 0.1, abs=1e-6) and high == pytest.approx(
        0.5 + 1.959964 * 0.1, abs=1e-6
    )
    assert p == pytest.approx(1.0)
    low, high, p = auc_confidence_interval(0.99, 0.0004)
    assert high == 1.0 and p < 1e-6


def test_delong_needs_two_per_class():
    with pytest.raises(ValueError, match="at least 2"):
        delong_auc(np.array([1, 0, 0]), np.array([0.2, 0.1, 0.3]))


def textures(n: int, size: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(2 * np.pi * (x[None] * rng.uniform(1, 3, (n, 1, 1)) + y[None]))
    return np.clip(base + noise * rng.standard_normal((n, size, size)), 0, 1).astype(np.float32)


def test_c2st_detects_an_obvious_difference():
    real = textures(40, 16, noise=0.0, seed=1)
    synthetic = textures(40, 16, noise=0.3, seed=2)  # grainy "generator"
    result = classifier_two_sample_test(
        real, synthetic, folds=4, epochs=8, batch_size=16, learning_rate=3e-3, channels=4, seed=0
    )
    assert result.auc > 0.9
    assert result.auc_low > 0.5 and result.p_value < 0.01
    assert not np.isnan(result.scores).any() and set(result.fold) == {0, 1, 2, 3}
    assert result.auc == pytest.approx(np.mean(result.fold_auc))
    for k, fold_auc in enumerate(result.fold_auc):
        in_fold = result.fold == k
        assert fold_auc == pytest.approx(
            roc_auc_score(result.labels[in_fold], result.scores[in_fold])
        )
    assert result.pooled_auc == pytest.approx(roc_auc_score(result.labels, result.scores))


def test_c2st_cannot_separate_same_distribution_and_is_deterministic():
    real = textures(40, 16, noise=0.1, seed=3)
    synthetic = textures(40, 16, noise=0.1, seed=4)
    first = classifier_two_sample_test(
        real, synthetic, folds=4, epochs=3, batch_size=16, channels=4, seed=0
    )
    second = classifier_two_sample_test(
        real, synthetic, folds=4, epochs=3, batch_size=16, channels=4, seed=0
    )
    assert first.auc_low < 0.5 < first.auc_high
    np.testing.assert_array_equal(first.scores, second.scores)


def test_balanced_subsample():
    real, synthetic = balanced_subsample(10, 30, 8, seed=0)
    assert len(real) == len(synthetic) == 8 and len(set(real)) == 8 and real.max() < 10
    real, synthetic = balanced_subsample(10, 30, None, seed=0)
    assert len(real) == len(synthetic) == 10


SETTINGS = {
    "folds": 2,
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "channels": 2,
    "max_images_per_class": 6,
    "held_out_split": "test",
    "seed": 0,
}


def test_study_drivers_write_one_row_per_number(tmp_path):
    import pandas as pd
    from PIL import Image

    from kneesynth.io import save_npz
    from kneesynth.realism import study_a_realism, study_b_realism

    save_npz(
        tmp_path / "ctm_contour.npz",
        generated=textures(8, 16, 0.2, seed=5),
        target=textures(8, 16, 0.0, seed=6),
    )
    rows = study_a_realism([tmp_path / "ctm_contour.npz"], SETTINGS)
    assert rows[["study", "model", "condition"]].drop_duplicates().values.tolist() == [
        ["A", "ctm", "contour"]
    ]
    value = rows.set_index("metric")["value"]
    assert value["n_real"] == 6 and value["n_synthetic"] == 6 and 0 <= value["c2st_auc"] <= 1

    real_paths = []
    for i, image in enumerate(textures(10, 24, 0.0, seed=7)):  # real images larger than synthetic
        real_paths.append(str(tmp_path / f"real{i}.png"))
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(real_paths[-1])
    pd.DataFrame(
        {
            "image": real_paths,
            "participant": "p",
            "side": 1,
            "visit": "V00",
            "kl_grade": 0,
            "split": ["train"] * 2 + ["test"] * 8,
        }
    ).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    synthetic_paths = []
    for i, image in enumerate(textures(7, 16, 0.2, seed=8)):
        synthetic_paths.append(str(tmp_path / f"syn{i}.png"))
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(synthetic_paths[-1])
    pd.DataFrame({"image": synthetic_paths, "kl_grade": 0, "generator": "wgan"}).to_csv(
        tmp_path / "wgan.tsv", sep="\t", index=False
    )
    rows = study_b_realism(tmp_path / "manifest.tsv", [tmp_path / "wgan.tsv"], SETTINGS)
    value = rows.set_index("metric")["value"]
    assert (
        rows["model"].unique().tolist() == ["wgan"]
        and value["n_real"] == 6
        and value["n_synthetic"] == 6
    )


def test_sample_without_targets_names_the_file(tmp_path):
    from kneesynth.errors import InputError
    from kneesynth.io import save_npz
    from kneesynth.realism import study_a_realism

    save_npz(tmp_path / "csm_contour.npz", generated=textures(4, 16, 0.1, seed=0))
    with pytest.raises(InputError, match="csm_contour.npz: no 'target' array"):
        study_a_realism([tmp_path / "csm_contour.npz"], SETTINGS)


def test_too_few_images_for_the_folds_names_the_file(tmp_path):
    from kneesynth.errors import InputError
    from kneesynth.io import save_npz
    from kneesynth.realism import study_a_realism

    save_npz(
        tmp_path / "ctm_contour.npz",
        generated=textures(3, 16, 0.1, seed=0),
        target=textures(3, 16, 0.0, seed=1),
    )
    with pytest.raises(InputError, match="ctm_contour.npz: the C2ST with 2 folds needs at least 4"):
        study_a_realism([tmp_path / "ctm_contour.npz"], SETTINGS)
    with pytest.raises(ValueError, match="needs at least 6"):
        classifier_two_sample_test(textures(5, 16, 0, 0), textures(5, 16, 0, 1), folds=3)
