"""Kellgren-Lawrence (KL) classification metrics for study B (scikit-learn based).

A prediction table is what :func:`kneesynth.study_b.classify.predict` writes per (task, arm, seed):
one row per real test image with columns ``image, participant, kl_grade, target,
prediction, prob_<class>...``. ``target`` is the class index of the task: the KL grade
0-4 for ``kl5`` and ``int(kl_grade >= 2)`` for ``kl_binary``.

Metrics (all from scikit-learn, ``zero_division=0`` so that a class that is never
predicted has precision 0 rather than a warning):

- ``accuracy``, ``balanced_accuracy`` (mean per-class recall),
- ``precision_<c>``, ``recall_<c>`` per class c and their unweighted means
  ``macro_precision``, ``macro_recall``,
- ``oa_positive_recall``: the share of test images with KL >= 2 (radiographic OA) that the
  classifier places in an OA-positive class (predicted KL >= 2 for ``kl5``, class 1 for
  ``kl_binary``); the abstract's "recall for OA-positive classes",
- ``oa_positive_precision``: the share of images predicted OA-positive that have KL >= 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kneesynth import tables
from kneesynth.errors import InputError
from kneesynth.io import read_tsv
from kneesynth.study_b.settings import PAPER_ACCURACY, PAPER_P_VALUE, TASK_CLASSES
from kneesynth.tables import table_row

if TYPE_CHECKING:
    from kneesynth.stats import Statistic


# scikit-learn (about 1.5 CPU s to import) and kneesynth.stats (scipy.stats, statsmodels) are
# imported by the functions that compute metrics and tests, so that the figure job, which
# only plots tables, does without them.

#: lowest KL grade counted as radiographic osteoarthritis (OA-positive)
OA_POSITIVE_KL = 2


def task_target(kl_grade: np.ndarray, task: str) -> np.ndarray:
    """Class index of each image for ``task``.

    kl_grade: (n,) integers 0-4. Returns (n,) int64: the grade for ``kl5``,
    ``kl_grade >= 2`` for ``kl_binary``.
    """
    kl_grade = np.asarray(kl_grade, dtype=np.int64)
    if task == "kl5":
        return kl_grade.copy()
    if task == "kl_binary":
        return (kl_grade >= OA_POSITIVE_KL).astype(np.int64)
    raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_CLASSES)}")


def oa_positive(labels: np.ndarray, task: str) -> np.ndarray:
    """(n,) bool: whether a target or predicted class of ``task`` means KL >= 2."""
    labels = np.asarray(labels, dtype=np.int64)
    if task == "kl5":
        return labels >= OA_POSITIVE_KL
    if task == "kl_binary":
        return labels == 1
    raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_CLASSES)}")


def classification_metrics(
    target: Sequence[int] | np.ndarray, prediction: Sequence[int] | np.ndarray, task: str
) -> dict[str, float]:
    """All scalar metrics of one prediction set.

    target, prediction: (n,) class indices of ``task``. Returns an ordered dict
    metric name -> value (see the module docstring for the names).
    """
    target = np.asarray(target, dtype=np.int64)
    prediction = np.asarray(prediction, dtype=np.int64)
    if target.shape != prediction.shape or target.ndim != 1 or target.size == 0:
        raise ValueError(
            f"target and prediction must be non-empty 1-D arrays of one length, got "
            f"{target.shape} and {prediction.shape}"
        )
    # heavy (sklearn): imported on use
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        precision_recall_fscore_support,
    )

    classes = list(TASK_CLASSES[task])
    precision, recall, _, _ = precision_recall_fscore_support(
        target, prediction, labels=classes, zero_division=0
    )
    # balanced accuracy over the classes present in the test set (scikit-learn's definition)
    metrics: dict[str, float] = {
        "accuracy": float(accuracy_score(target, prediction)),
        "balanced_accuracy": float(balanced_accuracy_score(target, prediction)),
    }
    for cls, p, r in zip(classes, precision, recall, strict=True):
        metrics[f"precision_{cls}"] = float(p)
        metrics[f"recall_{cls}"] = float(r)
    metrics["macro_precision"] = float(np.mean(precision))
    metrics["macro_recall"] = float(np.mean(recall))
    true_positive = oa_positive(target, task)
    predicted_positive = oa_positive(prediction, task)
    hits = np.sum(true_positive & predicted_positive)
    metrics["oa_positive_recall"] = (
        float(hits / true_positive.sum()) if true_positive.any() else 0.0
    )
    metrics["oa_positive_precision"] = (
        float(hits / predicted_positive.sum()) if predicted_positive.any() else 0.0
    )
    return metrics


def kl_confusion_matrix(
    target: Sequence[int] | np.ndarray, prediction: Sequence[int] | np.ndarray, task: str
) -> np.ndarray:
    """(k, k) int64 counts, rows = true class, columns = predicted class (scikit-learn)."""
    from sklearn.metrics import confusion_matrix  # heavy (sklearn): imported on use

    return confusion_matrix(
        np.asarray(target, dtype=np.int64),
        np.asarray(prediction, dtype=np.int64),
        labels=list(TASK_CLASSES[task]),
    ).astype(np.int64)


def metrics_per_seed(predictions: dict[tuple[str, str, int], pd.DataFrame]) -> pd.DataFrame:
    """Long table of every metric of every prediction set.

    predictions: (task, arm, seed) -> prediction table (columns ``target``, ``prediction``).
    Returns columns task, arm, seed, metric, value, rows in the order of ``predictions``.
    """
    rows = []
    for (task, arm, seed), table in predictions.items():
        for metric, value in classification_metrics(
            table["target"].to_numpy(), table["prediction"].to_numpy(), task
        ).items():
            rows.append({"task": task, "arm": arm, "seed": seed, "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=["task", "arm", "seed", "metric", "value"])


def _by_task_and_arm(
    predictions: dict[tuple[str, str, int], pd.DataFrame],
) -> dict[tuple[str, str], dict[int, pd.DataFrame]]:
    grouped: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    for (task, arm, seed), table in predictions.items():
        grouped.setdefault((task, arm), {})[seed] = table
    return grouped


@dataclass(frozen=True)
class ArmPredictions:
    """One arm's predictions on the test images, seeds sorted: ``target`` (n,),
    ``prediction`` (S, n), ``participant`` (n,), in the order of ``images``."""

    images: list[str]
    participant: np.ndarray
    target: np.ndarray
    prediction: np.ndarray

    @staticmethod
    def of(tables: dict[int, pd.DataFrame], images: Sequence[str]) -> ArmPredictions:
        ordered = [tables[seed].set_index("image").loc[list(images)] for seed in sorted(tables)]
        return ArmPredictions(
            list(images),
            ordered[0]["participant"].astype(str).to_numpy(),
            ordered[0]["target"].to_numpy(dtype=np.int64),
            np.stack([t["prediction"].to_numpy(dtype=np.int64) for t in ordered]),
        )

    @property
    def correct(self) -> np.ndarray:
        """(S, n) bool."""
        return self.prediction == self.target[None, :]

    def statistic(self, metric: str, task: str) -> Statistic:
        """``accuracy``, ``oa_positive_recall`` or ``macro_precision`` as a
        :class:`kneesynth.stats.Statistic` (per seed, with each image's influence)."""
        from kneesynth.stats import Statistic  # heavy (scipy, statsmodels): imported on use

        if metric == "accuracy":
            return Statistic.mean(self.correct)
        if metric == "oa_positive_recall":
            positive = oa_positive(self.target, task)[None, :]
            hit = oa_positive(self.prediction, task) & positive
            return Statistic.ratio_of_sums(hit, np.broadcast_to(positive, hit.shape))
        if metric == "macro_precision":
            classes = TASK_CLASSES[task]
            parts = [
                Statistic.ratio_of_sums(
                    (self.prediction == k) & (self.target[None, :] == k), self.prediction == k
                )
                for k in classes
            ]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            return total * (1.0 / len(classes))
        raise ValueError(f"no unit-level statistic for metric {metric!r}")


def accuracy_intervals(
    predictions: dict[tuple[str, str, int], pd.DataFrame],
    confidence_level: float = 0.95,
) -> dict[tuple[str, str], tuple[float, float]]:
    """(task, arm) -> CI of the seed-averaged accuracy: t interval over test participants
    and training seeds (:meth:`kneesynth.stats.Statistic.estimate`)."""
    intervals = {}
    for (task, arm), by_seed in _by_task_and_arm(predictions).items():
        arm_predictions = ArmPredictions.of(by_seed, by_seed[min(by_seed)]["image"].tolist())
        estimate = arm_predictions.statistic("accuracy", task).estimate(arm_predictions.participant)
        intervals[(task, arm)] = estimate.interval(confidence_level, bounds=(0.0, 1.0))
    return intervals


def kl_classification_table(
    per_seed: pd.DataFrame,
    accuracy_ci: dict[tuple[str, str], tuple[float, float]] | None = None,
    study: str = "B",
) -> pd.DataFrame:
    """Mean and std over seeds per (task, arm, metric): the rows of ``kl_classification.tsv``.

    per_seed: output of :func:`metrics_per_seed`; accuracy_ci: (task, arm) -> (low, high),
    put beside the accuracy rows (see :func:`accuracy_intervals`). Returns columns study,
    model (= arm), condition (= task), metric, value (mean over seeds), std (sample std,
    ddof=1; 0 for one seed), n_seeds, ci_low, ci_high, paper_value (the abstract's accuracy
    where it has one), note.
    """
    accuracy_ci = accuracy_ci or {}
    rows, order = [], []
    arm_order = {arm: i for i, arm in enumerate(dict.fromkeys(per_seed["arm"]))}
    metric_order = {m: i for i, m in enumerate(dict.fromkeys(per_seed["metric"]))}
    grouped = per_seed.groupby(["task", "arm", "metric"], sort=False)["value"]
    for (task, arm, metric), values in grouped:
        values = values.to_numpy(dtype=float)
        paper_value = PAPER_ACCURACY.get(arm) if metric == "accuracy" else None
        note = ""
        if paper_value is not None:
            note = "abstract: task (5-class or binary) not stated"
            if arm.startswith("real+ddpm"):
                note += "; DDPM variant not stated"
        ci_low, ci_high = accuracy_ci.get((task, arm), (np.nan, np.nan))
        if metric != "accuracy":
            ci_low = ci_high = np.nan
        order.append((list(TASK_CLASSES).index(task), arm_order[arm], metric_order[metric]))
        rows.append(
            table_row(
                study,
                arm,
                task,
                metric,
                float(values.mean()),
                paper_value,
                note,
                std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
                n_seeds=int(values.size),
                ci_low=ci_low,
                ci_high=ci_high,
            )
        )
    return pd.DataFrame([rows[i] for i in sorted(range(len(rows)), key=order.__getitem__)])


def pooled_confusion(predictions: dict[tuple[str, str, int], pd.DataFrame]) -> pd.DataFrame:
    """Confusion counts summed over seeds, long format: task, arm, true_class,
    predicted_class, count (every cell, zeros included)."""
    totals: dict[tuple[str, str], np.ndarray] = {}
    for (task, arm, _), table in predictions.items():
        matrix = kl_confusion_matrix(table["target"], table["prediction"], task)
        totals[(task, arm)] = totals.get((task, arm), 0) + matrix
    rows = []
    for (task, arm), matrix in totals.items():
        for i, true_class in enumerate(TASK_CLASSES[task]):
            for j, predicted_class in enumerate(TASK_CLASSES[task]):
                rows.append(
                    {
                        "task": task,
                        "arm": arm,
                        "true_class": true_class,
                        "predicted_class": predicted_class,
                        "count": int(matrix[i, j]),
                    }
                )
    return pd.DataFrame(rows, columns=["task", "arm", "true_class", "predicted_class", "count"])


# the columns every study's paired-test table shares (kneesynth.tables), then study B's own
PAIRED_TEST_COLUMNS = [
    *tables.PAIRED_TEST_COLUMNS,
    "task",
    "metric",
    "difference",
    "ci_low",
    "ci_high",
    "df",
    "paper_value",
    "note",
    "seed",
]

#: the metrics whose arm-vs-real difference is tested over seeds and participants
TESTED_METRICS = ("accuracy", "oa_positive_recall", "macro_precision")


def paired_tests_table(
    predictions: dict[tuple[str, str, int], pd.DataFrame],
    reference: str = "real",
    confidence_level: float = 0.95,
    study: str = "B",
) -> pd.DataFrame:
    """Tests of every augmented arm (``real+<generator>``) against ``reference`` on the same
    test images.

    predictions: (task, arm, seed) -> prediction table; every arm must have the reference's
    seeds and test images (checked by :func:`read_predictions`). Per (task, arm):

    - the headline, per metric of :data:`TESTED_METRICS`: the seed-averaged difference arm -
      reference, t-tested with a variance that adds the test set's (cluster-robust over
      participants: a participant's knees and visits are not independent) and the training
      seeds' (the per-seed differences' variance / S), Welch-Satterthwaite df (unit
      ``participant and seed``; fewer than 2 seeds: no test). Bouthillier et al. (MLSys 2021)
      on seed variance;
    - per seed, the clustered McNemar test (Durkalski et al. 2003, exact sign-flip over
      participants), a secondary test of that seed's pair of models.

    Holm's correction runs within each (task, test, metric) family, i.e. over the augmented
    arms (and their seeds for McNemar). Returns the columns :data:`PAIRED_TEST_COLUMNS`.
    """
    from kneesynth import stats  # heavy (scipy, statsmodels): imported on use

    rows: list[dict] = []
    for task in dict.fromkeys(task for task, _, _ in predictions):
        by_arm = {arm: t for (k, arm), t in _by_task_and_arm(predictions).items() if k == task}
        if reference not in by_arm:
            raise ValueError(f"task {task}: no predictions of the reference arm {reference!r}")
        images = by_arm[reference][min(by_arm[reference])]["image"].tolist()
        base = ArmPredictions.of(by_arm[reference], images)
        seeds = sorted(by_arm[reference])
        for arm in by_arm:
            if not arm.startswith("real+"):
                continue
            if sorted(by_arm[arm]) != seeds:
                raise ValueError(
                    f"task {task}: arm {arm} has seeds {sorted(by_arm[arm])}, "
                    f"reference {reference} has {seeds}"
                )
            candidate = ArmPredictions.of(by_arm[arm], images)
            comparison = f"{arm} vs {reference}"
            paper_p = PAPER_P_VALUE.get(arm, "")
            results: list[tuple[str, str, stats.TestResult]] = []
            for metric in TESTED_METRICS:
                result = stats.difference_test(
                    candidate.statistic(metric, task), base.statistic(metric, task),
                    base.participant, unit="participant", test="t_over_seeds_and_participants",
                    confidence=confidence_level, require_seeds=True,
                )  # fmt: skip
                results.append(("all", metric, result))
            for i, seed in enumerate(seeds):
                result = stats.clustered_mcnemar(
                    candidate.correct[i], base.correct[i], base.participant
                )
                results.append((str(seed), "accuracy", result))
            for seed_label, metric, result in results:
                note = result.note
                if paper_p and metric == "accuracy":
                    note = (note + "; " if note else "") + (
                        "abstract: p-value of the accuracy gain, test and task not stated"
                    )
                rows.append(
                    {
                        "study": study,
                        "comparison": comparison,
                        "test": result.test,
                        "statistic": result.statistic,
                        "p_value": result.p_value,
                        "p_adjusted": np.nan,
                        "n": result.n,
                        "unit": result.unit,
                        "n_units": result.n_units,
                        "task": task,
                        "metric": metric,
                        "difference": result.difference,
                        "ci_low": result.ci_low,
                        "ci_high": result.ci_high,
                        "df": result.df,
                        "paper_value": paper_p if metric == "accuracy" else "",
                        "note": note,
                        "seed": seed_label,
                    }
                )
    table = pd.DataFrame(rows, columns=PAIRED_TEST_COLUMNS)
    for _, index in table.groupby(["task", "test", "metric"], sort=False).groups.items():
        table.loc[index, "p_adjusted"] = stats.holm(table.loc[index, "p_value"].to_numpy())
    return table


# ---------------------------------------------------------------------------- prediction tables
PREDICTION_COLUMNS = ("image", "participant", "kl_grade", "target", "prediction")


def read_predictions(
    paths: Mapping[tuple[str, str, int], str | os.PathLike[str]],
    reference: str = "real",
) -> dict[tuple[str, str, int], pd.DataFrame]:
    """Read prediction tables keyed (task, arm, seed) and check that they pair up.

    Every table of a task must hold the same test images as the reference arm's first seed
    (one row each), with targets and predictions that are classes of the task.
    """
    tables: dict[tuple[str, str, int], pd.DataFrame] = {}
    for key, path in paths.items():
        task = key[0]
        table = read_tsv(path, required=list(PREDICTION_COLUMNS))
        table["image"] = table["image"].astype(str)
        if table["image"].duplicated().any():
            raise InputError(
                path, f"image {table['image'][table['image'].duplicated()].iloc[0]} listed twice"
            )
        for column in ("target", "prediction"):
            values = pd.to_numeric(table[column], errors="coerce")
            if values.isna().any() or not values.isin(TASK_CLASSES[task]).all():
                raise InputError(
                    path, f"{column} must hold classes {TASK_CLASSES[task]} of task {task}"
                )
            table[column] = values.astype(np.int64)
        tables[key] = table
    for (task, arm, seed), table in tables.items():
        reference_keys = sorted(k for k in tables if k[0] == task and k[1] == reference)
        if not reference_keys:
            continue
        expected = set(tables[reference_keys[0]]["image"])
        if set(table["image"]) != expected:
            raise InputError(
                paths[(task, arm, seed)],
                f"test images differ from those of {paths[reference_keys[0]]} "
                "(paired tests need the same test split for every arm)",
            )
    return tables
