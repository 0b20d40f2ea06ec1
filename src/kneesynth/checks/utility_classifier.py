"""Train-on-synthetic utility of study B: the KL classifier trained on synthetic images only
against the one trained on real images only (the classifier arms of
:mod:`kneesynth.study_b.classify`); and ``utility.tsv``, its rows beside the segmentation
utility of study A (:mod:`kneesynth.checks.utility`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kneesynth.checks.utility import ratio_interval, segmentation_utility
from kneesynth.errors import InputError
from kneesynth.study_b.kl_metrics import ArmPredictions, read_predictions
from kneesynth.tables import table_row

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# KL classifier: synthetic only vs real only
# --------------------------------------------------------------------------------------------


def classifier_utility(
    predictions: Mapping[tuple[str, int], pd.DataFrame],
    synthetic_arms: Sequence[str],
    *,
    task: str = "kl5",
    real_arm: str = "real",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Accuracy of KL classifiers trained on synthetic images only vs real images only.

    ``predictions``: (arm, seed) -> prediction table (``image, participant, target,
    prediction``) on the real test split. Per synthetic arm: accuracy (mean over seeds) of both
    arms and their ratio (the mean over seeds of seed s's ratio, seeds paired by index) with a
    t interval over test participants and seeds (delta method).
    """

    def arm_predictions(arm: str) -> ArmPredictions:
        tables = {seed: table for (name, seed), table in predictions.items() if name == arm}
        if not tables:
            raise ValueError(f"no predictions of arm {arm!r}")
        return ArmPredictions.of(tables, images)

    real_tables = {seed: t for (name, seed), t in predictions.items() if name == real_arm}
    if not real_tables:
        raise ValueError(f"no predictions of the {real_arm!r} arm")
    images = real_tables[min(real_tables)]["image"].astype(str).tolist()
    real = arm_predictions(real_arm)
    real_accuracy = real.statistic("accuracy", task)
    rows = [
        table_row(
            "B",
            f"kl_classifier_{task}",
            real_arm,
            "accuracy",
            real_accuracy.value,
            note=f"mean over {real_accuracy.per_seed.size} seed(s)",
        )
    ]
    for arm in synthetic_arms:
        try:
            accuracy = arm_predictions(arm).statistic("accuracy", task)
        except KeyError:
            raise ValueError(
                f"arm {arm!r} was tested on other images than arm {real_arm!r}"
            ) from None
        ratio, low, high, note_ci = ratio_interval(
            accuracy, real_accuracy, real.participant, confidence
        )
        generator = arm.removeprefix("syn-")
        note = "accuracy(trained on synthetic only) / accuracy(trained on real only), same real test split"
        rows += [
            table_row(
                "B",
                f"kl_classifier_{task}",
                arm,
                "accuracy",
                accuracy.value,
                note=f"mean over {accuracy.per_seed.size} seed(s)",
            ),
            table_row(
                "B",
                f"kl_classifier_{task}",
                arm,
                "accuracy_ratio",
                ratio,
                "",
                f"{note}; the papers give no value for {generator}",
            ),
            table_row(
                "B", f"kl_classifier_{task}", arm, "accuracy_ratio_ci_low", low, note=note_ci
            ),
            table_row(
                "B", f"kl_classifier_{task}", arm, "accuracy_ratio_ci_high", high, note=note_ci
            ),
        ]
    return pd.DataFrame(rows).astype({"value": float})


def read_kl_predictions(
    paths: Sequence[str | os.PathLike[str]], task: str
) -> dict[tuple[str, int], pd.DataFrame]:
    """Prediction tables ``results/classifiers/<task>/<arm>/seed<k>.tsv`` keyed (arm, seed),
    checked by :func:`kneesynth.study_b.kl_metrics.read_predictions` (same test images in every arm)."""

    keyed = {}
    for path in paths:
        path = Path(path)
        if not path.stem.startswith("seed") or not path.stem[4:].isdigit():
            raise InputError(path, "prediction file must be named seed<k>.tsv")
        keyed[(task, path.parent.name, int(path.stem[4:]))] = path
    tables = read_predictions(keyed, reference="real")
    return {(arm, seed): table for (_, arm, seed), table in tables.items()}


def utility_table(
    dataset_path: str | os.PathLike[str],
    synthetic_pairs_path: str | os.PathLike[str],
    prediction_paths: Sequence[str | os.PathLike[str]],
    checks: Mapping[str, Any],
    device: torch.device | str = "cpu",
    state_root: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``utility.tsv`` (segmentation and, if predictions are given, KL classification rows)
    and the per-image Dice table. ``checks``: the ``checks`` config section."""
    utility = checks["utility"]
    seed = int(checks["seed"])
    rows, per_image = segmentation_utility(
        dataset_path,
        synthetic_pairs_path,
        utility["segmenter"],
        seed,
        mask_split=utility["mask_split"],
        memorization=checks["memorization"],
        confidence=float(utility["confidence"]),
        device=device,
        state_root=state_root,
    )
    if prediction_paths:
        predictions = read_kl_predictions(prediction_paths, utility["kl_task"])
        kl_rows = classifier_utility(
            predictions,
            list(utility["kl_arms"]),
            task=utility["kl_task"],
            confidence=float(utility["confidence"]),
        )
        rows = pd.concat([rows, kl_rows], ignore_index=True)
    else:
        rows = pd.concat(
            [
                rows,
                pd.DataFrame(
                    [
                        table_row(
                            "B",
                            f"kl_classifier_{utility['kl_task']}",
                            "none",
                            "accuracy_ratio",
                            float("nan"),
                            note="checks.utility.kl_arms is empty: no synthetic-only classifier arms",
                        )
                    ]
                ),
            ],
            ignore_index=True,
        )
    return rows, per_image
