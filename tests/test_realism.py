"""Classifier two-sample test: exact per-fold tests, grouped folds, the test on easy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu, wilcoxon
from sklearn.metrics import roc_auc_score

from kneesynth.checks.realism import (
    _auc,
    _grouped_folds,
    _rank_sum_test,
    _signed_rank_test,
    balanced_subsample,
    classifier_two_sample_test,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    assert _auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_exact_rank_sum_matches_scipy_without_ties_and_enumeration_with_ties():
    rng = np.random.default_rng(0)
    synthetic, real = rng.normal(0.5, 1, 7), rng.normal(0, 1, 9)
    p, smallest = _rank_sum_test(synthetic, real)
    assert p == pytest.approx(
        mannwhitneyu(synthetic, real, alternative="greater", method="exact").pvalue
    )
    assert smallest == pytest.approx(1 / math.comb(16, 7))
    # with ties: the share of all 126 splits whose midrank sum is at least the observed one
    from itertools import combinations

    from scipy.stats import rankdata

    synthetic, real = np.array([1.0, 1, 1, 0.5, 0.2]), np.array([1.0, 0.1, 0.2, 0.3])
    ranks = rankdata(np.r_[synthetic, real])
    sums = [ranks[list(c)].sum() for c in combinations(range(9), 5)]
    expected = np.mean(np.array(sums) >= ranks[:5].sum() - 1e-9)
    assert _rank_sum_test(synthetic, real)[0] == pytest.approx(expected)


def test_exact_signed_rank_matches_scipy():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.3, 1, 10)
    p, smallest = _signed_rank_test(differences)
    assert p == pytest.approx(wilcoxon(differences, alternative="greater", method="exact").pvalue)
    assert smallest == pytest.approx(2.0**-10)


def test_auc_bound_interval_is_the_wilson_interval_of_the_smaller_class():
    from kneesynth.checks.realism import auc_bound_interval

    low, high = auc_bound_interval(1.0, 8)
    assert high == 1.0 and low == pytest.approx(8 / (8 + 1.959964**2), rel=1e-4)
    low, high = auc_bound_interval(0.5, 1000)
    assert low == pytest.approx(0.5 - 1.96 * 0.5 / math.sqrt(1000), abs=2e-3)


def test_folds_keep_units_together_and_hold_both_classes():
    labels = np.r_[np.zeros(30), np.ones(12)].astype(int)
    units = np.r_[np.repeat([f"p{i}" for i in range(10)], 3), [f"s{i}" for i in range(12)]]
    fold = _grouped_folds(labels, units, 3, seed=0)
    for unit in set(units):
        assert len(set(fold[units == unit])) == 1
    for k in range(3):
        assert set(labels[fold == k]) == {0, 1}
    pairs = np.r_[[f"t{i}" for i in range(9)], [f"t{i}" for i in range(9)]]
    paired = _grouped_folds(np.r_[np.zeros(9), np.ones(9)].astype(int), pairs, 3, seed=0)
    for i in range(9):
        assert paired[i] == paired[9 + i]  # a target and its reconstruction share a fold


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
    assert result.p_value == pytest.approx(min(1.0, 4 * min(result.fold_p)))  # Bonferroni
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
    assert first.p_value > 0.05
    np.testing.assert_array_equal(first.scores, second.scores)


def test_small_paired_c2st_says_it_cannot_reach_alpha():
    """The demo's study A situation: 12 targets and their reconstructions, 3 folds of 4 pairs:
    even a perfect separation gives p = 3 / 16 per the exact signed-rank test."""
    real = textures(12, 16, noise=0.0, seed=1)
    synthetic = textures(12, 16, noise=0.4, seed=2)
    result = classifier_two_sample_test(
        real, synthetic, paired=True, folds=3, epochs=6, batch_size=8, learning_rate=3e-3,
        channels=4, seed=0,
    )  # fmt: skip
    assert math.isnan(result.p_value)
    assert "too few units per fold" in result.note
    assert result.auc_high <= 1 and result.auc_low < 0.9  # 12 pairs: no CI of [1, 1]
    assert result.test == "signed-rank (paired)"


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
    "confidence": 0.95,
    "bootstrap_resamples": 100,
    "held_out_split": "test",
    "seed": 0,
}


def test_study_drivers_write_one_row_per_number(tmp_path):
    import pandas as pd
    from PIL import Image

    from kneesynth.checks.realism_report import study_a_realism, study_b_realism
    from kneesynth.io import save_npz

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
    assert value["n_real_units"] == 6  # pairs: a target and its reconstruction

    real_paths = []
    for i, image in enumerate(textures(10, 24, 0.0, seed=7)):  # real images larger than synthetic
        real_paths.append(str(tmp_path / f"real{i}.png"))
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(real_paths[-1])
    pd.DataFrame(
        {
            "image": real_paths,
            "participant": [f"p{i // 2}" for i in range(10)],
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
    assert value["n_real_units"] <= 4  # 8 test images of 4 participants (two knees each)


def test_sample_without_targets_names_the_file(tmp_path):
    from kneesynth.checks.realism_report import study_a_realism
    from kneesynth.errors import InputError
    from kneesynth.io import save_npz

    save_npz(tmp_path / "csm_contour.npz", generated=textures(4, 16, 0.1, seed=0))
    with pytest.raises(InputError, match="csm_contour.npz: no 'target' array"):
        study_a_realism([tmp_path / "csm_contour.npz"], SETTINGS)


def test_too_few_images_for_the_folds_names_the_file(tmp_path):
    from kneesynth.checks.realism_report import study_a_realism
    from kneesynth.errors import InputError
    from kneesynth.io import save_npz

    save_npz(
        tmp_path / "ctm_contour.npz",
        generated=textures(3, 16, 0.1, seed=0),
        target=textures(3, 16, 0.0, seed=1),
    )
    with pytest.raises(
        InputError, match="ctm_contour.npz: the C2ST with 2 folds needs at least 4 real"
    ):
        study_a_realism([tmp_path / "ctm_contour.npz"], SETTINGS)
    with pytest.raises(ValueError, match="needs at least 6 real and 6 synthetic units"):
        classifier_two_sample_test(textures(5, 16, 0, 0), textures(5, 16, 0, 1), folds=3)
