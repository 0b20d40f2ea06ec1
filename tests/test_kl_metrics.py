"""KL classification metrics, the study B table and its paired tests on hand-made predictions."""

import numpy as np
import pandas as pd
import pytest

from kneesynth.study_b import kl_figures, kl_metrics

TARGET = [0, 0, 1, 2, 3, 4, 4]
PREDICTION = [0, 1, 1, 2, 4, 4, 0]


def test_task_target():
    grades = np.array([0, 1, 2, 3, 4])
    assert kl_metrics.task_target(grades, "kl5").tolist() == [0, 1, 2, 3, 4]
    assert kl_metrics.task_target(grades, "kl_binary").tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown task"):
        kl_metrics.task_target(grades, "kl3")


def test_five_class_metrics_by_hand():
    metrics = kl_metrics.classification_metrics(TARGET, PREDICTION, "kl5")
    assert metrics["accuracy"] == pytest.approx(4 / 7)
    # per-class recall 1/2, 1, 1, 0, 1/2 -> balanced accuracy 0.6
    assert metrics["balanced_accuracy"] == pytest.approx(0.6)
    assert [metrics[f"recall_{c}"] for c in range(5)] == pytest.approx([0.5, 1, 1, 0, 0.5])
    # predicted 0: images 0 (KL0) and 6 (KL4); predicted 1: images 1 (KL0), 2 (KL1);
    # predicted 3: none (precision 0 by convention); predicted 4: images 4 (KL3), 5 (KL4)
    assert [metrics[f"precision_{c}"] for c in range(5)] == pytest.approx([0.5, 0.5, 1, 0, 0.5])
    assert metrics["macro_precision"] == pytest.approx(0.5)
    assert metrics["macro_recall"] == pytest.approx(0.6)
    # KL >= 2: images 3, 4, 5, 6; predicted >= 2 for 3, 4, 5 -> recall 3/4, precision 3/3
    assert metrics["oa_positive_recall"] == pytest.approx(0.75)
    assert metrics["oa_positive_precision"] == pytest.approx(1.0)


def test_binary_metrics_by_hand():
    target = kl_metrics.task_target(np.array(TARGET), "kl_binary")
    prediction = kl_metrics.task_target(np.array(PREDICTION), "kl_binary")
    metrics = kl_metrics.classification_metrics(target, prediction, "kl_binary")
    assert metrics["accuracy"] == pytest.approx(6 / 7)
    assert metrics["oa_positive_recall"] == metrics["recall_1"] == pytest.approx(0.75)
    assert metrics["precision_1"] == pytest.approx(1.0)


def test_metrics_reject_unequal_lengths():
    with pytest.raises(ValueError, match="one length"):
        kl_metrics.classification_metrics([0, 1], [0], "kl5")


def test_confusion_matrix_rows_are_true_grades():
    matrix = kl_metrics.kl_confusion_matrix(TARGET, PREDICTION, "kl5")
    expected = np.zeros((5, 5), int)
    for t, p in zip(TARGET, PREDICTION, strict=True):
        expected[t, p] += 1
    assert matrix.tolist() == expected.tolist()
    assert kl_metrics.kl_confusion_matrix([1, 1], [1, 0], "kl_binary").tolist() == [[0, 0], [1, 1]]


def predictions_for(correct: np.ndarray, target: np.ndarray) -> pd.DataFrame:
    """A prediction table whose row i is right iff correct[i] (wrong: the next class)."""
    prediction = np.where(correct, target, (target + 1) % 5)
    return pd.DataFrame(
        {
            "image": [f"img{i}.png" for i in range(len(target))],
            "participant": [f"p{i // 2}" for i in range(len(target))],  # two knees each
            "kl_grade": target,
            "target": target,
            "prediction": prediction,
        }
    )


def make_predictions(n_images=60, seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, n_images)
    accuracy = {"real": 0.6, "real+ddpm_cond": 0.8, "real+wgan": 0.62, "syn-wgan": 0.3}
    predictions = {}
    for arm, rate in accuracy.items():
        for seed in seeds:
            correct = rng.random(n_images) < rate
            predictions[("kl5", arm, seed)] = predictions_for(correct, target)
    return predictions


def test_kl_classification_table_means_over_seeds():
    predictions = make_predictions()
    per_seed = kl_metrics.metrics_per_seed(predictions)
    table = kl_metrics.kl_classification_table(per_seed)
    row = table[(table["model"] == "real") & (table["metric"] == "accuracy")].iloc[0]
    accuracies = [
        (
            predictions[("kl5", "real", s)]["prediction"]
            == predictions[("kl5", "real", s)]["target"]
        ).mean()
        for s in range(3)
    ]
    assert row["value"] == pytest.approx(np.mean(accuracies))
    assert row["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert row["n_seeds"] == 3
    assert row["paper_value"] == pytest.approx(0.813)
    assert row["study"] == "B" and row["condition"] == "kl5"
    wgan = table[(table["model"] == "real+wgan") & (table["metric"] == "accuracy")].iloc[0]
    assert pd.isna(wgan["paper_value"])
    assert list(table["model"].unique()) == ["real", "real+ddpm_cond", "real+wgan", "syn-wgan"]


def test_paired_tests_table_compares_augmented_arms_with_real():
    predictions = make_predictions()
    table = kl_metrics.paired_tests_table(predictions)
    assert list(table.columns) == kl_metrics.PAIRED_TEST_COLUMNS
    assert set(table["comparison"]) == {"real+ddpm_cond vs real", "real+wgan vs real"}
    # per comparison: the t over seeds and participants of 3 metrics, McNemar per seed
    assert table.groupby("comparison").size().tolist() == [6, 6]
    assert table["unit"].notna().all() and (table["n_units"] == 30).all()  # 60 images, 30 people
    headline = table[table["test"] == "t_over_seeds_and_participants"]
    assert set(headline["metric"]) == {"accuracy", "oa_positive_recall", "macro_precision"}
    assert (headline["unit"] == "participant and seed").all()
    tested = headline.set_index(["comparison", "metric"])
    gain = tested.loc[("real+ddpm_cond vs real", "accuracy")]
    assert gain["ci_low"] > 0 and gain["p_adjusted"] < 0.05  # 0.8 vs 0.6, 60 images x 3 seeds
    assert gain["paper_value"] == "<0.01"
    assert tested.loc[("real+wgan vs real", "accuracy"), "paper_value"] == "~0.15"
    # the seed-averaged accuracy difference, recomputed by hand
    diffs = [
        (
            predictions[("kl5", "real+ddpm_cond", s)]["prediction"]
            == predictions[("kl5", "real+ddpm_cond", s)]["target"]
        ).mean()
        - (
            predictions[("kl5", "real", s)]["prediction"]
            == predictions[("kl5", "real", s)]["target"]
        ).mean()
        for s in range(3)
    ]
    assert gain["difference"] == pytest.approx(np.mean(diffs))
    # Holm within the McNemar family of 6 tests (2 arms x 3 seeds)
    mcnemar = table[table["test"] == "clustered_mcnemar"].dropna(subset=["p_value"])
    smallest = mcnemar["p_value"].idxmin()
    assert mcnemar.loc[smallest, "p_adjusted"] == pytest.approx(
        min(1.0, len(mcnemar) * mcnemar.loc[smallest, "p_value"])
    )
    assert (mcnemar["unit"] == "participant").all()


def test_paired_tests_of_identical_arms_find_no_difference():
    predictions = make_predictions()
    for seed in range(3):
        predictions[("kl5", "real+wgan", seed)] = predictions[("kl5", "real", seed)].copy()
    table = kl_metrics.paired_tests_table(predictions)
    same = table[table["comparison"] == "real+wgan vs real"]
    assert (same["difference"] == 0).all()
    headline = same[same["test"] == "t_over_seeds_and_participants"]
    assert (headline["p_value"] == 1.0).all()
    assert (headline["ci_low"] == 0).all() and (headline["ci_high"] == 0).all()
    mcnemar = same[same["test"] == "clustered_mcnemar"]
    assert mcnemar["p_value"].isna().all()  # no discordant participant: no test
    assert mcnemar["note"].str.contains("too few discordant participants").all()


def test_paired_tests_need_the_reference_arm_and_its_seeds():
    predictions = make_predictions()
    without_real = {k: v for k, v in predictions.items() if k[1] != "real"}
    with pytest.raises(ValueError, match="reference arm"):
        kl_metrics.paired_tests_table(without_real)
    missing_seed = {k: v for k, v in predictions.items() if k != ("kl5", "real+wgan", 2)}
    with pytest.raises(ValueError, match="seeds"):
        kl_metrics.paired_tests_table(missing_seed)


def test_one_seed_gives_no_headline_test():
    predictions = {k: v for k, v in make_predictions().items() if k[2] == 0}
    table = kl_metrics.paired_tests_table(predictions)
    headline = table[table["test"] == "t_over_seeds_and_participants"]
    assert headline["p_value"].isna().all()
    assert headline["note"].str.contains("one training seed").all()


def test_pooled_confusion_sums_seeds():
    target = np.array([0, 1, 2, 3, 4])
    predictions = {
        ("kl5", "real", 0): predictions_for(np.array([1, 1, 1, 1, 0], bool), target),
        ("kl5", "real", 1): predictions_for(np.array([1, 1, 1, 1, 1], bool), target),
    }
    confusion = kl_metrics.pooled_confusion(predictions)
    assert len(confusion) == 25 and confusion["count"].sum() == 10
    cell = confusion.set_index(["true_class", "predicted_class"])["count"]
    assert cell[(4, 4)] == 1 and cell[(4, 0)] == 1 and cell[(0, 0)] == 2


def test_accuracy_intervals_go_into_the_table():
    predictions = make_predictions()
    intervals = kl_metrics.accuracy_intervals(predictions)
    table = kl_metrics.kl_classification_table(kl_metrics.metrics_per_seed(predictions), intervals)
    accuracy = table[table["metric"] == "accuracy"]
    assert (accuracy["ci_low"] <= accuracy["value"]).all()
    assert (accuracy["value"] <= accuracy["ci_high"]).all()
    assert table.loc[table["metric"] != "accuracy", "ci_low"].isna().all()


def test_figures_are_written(tmp_path):
    predictions = make_predictions()
    per_seed = kl_metrics.metrics_per_seed(predictions)
    table = kl_metrics.kl_classification_table(per_seed, kl_metrics.accuracy_intervals(predictions))
    kl_figures.plot_confusion_matrices(kl_metrics.pooled_confusion(predictions), tmp_path / "c.png")
    kl_figures.plot_accuracy(table, per_seed, tmp_path / "a.png")
    for name in ("c.png", "a.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]  # no temp files left
