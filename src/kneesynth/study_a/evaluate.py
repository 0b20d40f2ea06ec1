"""Study A's evaluation: MAE and PSNR per image, Table I (mean, std and the CI clustered by
volume beside the paper's values) and the paired tests (over test volumes, Holm). No torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneesynth.errors import InputError
from kneesynth.io import load_npz, read_tsv, write_tsv
from kneesynth.seeding import derive_seed
from kneesynth.study_a.settings import CONDITIONS, MODELS, PAPER_TABLE1

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- evaluation


def image_metrics(generated: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """MAE and PSNR (dB, data range 1) per image of (n, H, W) arrays, in float64.

    The formulas of MONAI's ``MAEMetric`` and ``PSNRMetric`` (``20 log10(1) - 10 log10(MSE)``),
    written out here because importing MONAI (several CPU seconds) for two means would make
    this table job slower than its work; tests/test_study_a.py checks them against MONAI.
    """
    error = np.asarray(generated, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    axes = tuple(range(1, error.ndim))
    mae = np.abs(error).mean(axis=axes)
    with np.errstate(divide="ignore"):
        psnr = -10.0 * np.log10(np.square(error).mean(axis=axes))
    return {"mae": mae, "psnr": psnr}


def _sample_name(path: str | os.PathLike[str]) -> tuple[str, str]:
    stem = Path(path).name.removesuffix(".npz")
    model, _, condition = stem.partition("_")
    if model not in MODELS or condition not in CONDITIONS:
        raise InputError(
            path, "sample file must be named {unet,csm,ctm}_{contour,contour_bone}.npz"
        )
    return model, condition


def evaluate_samples(
    sample_paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]
):
    """Per-image MAE and PSNR of every sample file -> TSV (study, model, condition, volume,
    view, image, mae, psnr, evaluations). Returns the DataFrame."""
    import pandas as pd  # heavy (pandas): imported on use

    frames = []
    for path in sample_paths:
        model, condition = _sample_name(path)
        sample = load_npz(path)
        for key in ("generated", "target", "volume", "view"):
            if key not in sample:
                raise InputError(path, f"no {key!r} array")
        if sample["generated"].shape != sample["target"].shape:
            raise InputError(path, "generated and target differ in shape")
        metrics = image_metrics(sample["generated"], sample["target"])
        if not (np.isfinite(metrics["mae"]).all() and np.isfinite(metrics["psnr"]).all()):
            raise InputError(path, "non-finite MAE or PSNR (identical or broken images)")
        frames.append(
            pd.DataFrame(
                {
                    "study": "A",
                    "model": model,
                    "condition": condition,
                    "volume": sample["volume"].astype(str),
                    "view": sample["view"].astype(int),
                    "image": np.arange(sample["generated"].shape[0]),
                    "mae": metrics["mae"],
                    "psnr": metrics["psnr"],
                    "evaluations": int(sample.get("evaluations", np.array(1))),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    write_tsv(output, table)
    return table


def _read_metrics(metrics_tsv):
    return read_tsv(metrics_tsv, required=["model", "condition", "volume", "view", "mae", "psnr"])


def _subset(metrics, metrics_tsv, model: str, condition: str):
    subset = metrics[(metrics["model"] == model) & (metrics["condition"] == condition)]
    if subset.empty:
        raise InputError(metrics_tsv, f"no rows for {model} under {condition}")
    return subset


def table1(
    metrics_tsv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    confidence: float = 0.95,
):
    """Table I: mean and std (ddof 1, over images) per model x condition x metric beside the
    paper's, the 95 % CI of the mean clustered by test volume (t over volumes; empty with one
    test volume), and the network evaluations per image of the model's sampler."""
    import pandas as pd  # heavy (pandas): imported on use

    from kneesynth.stats import Statistic  # heavy (pandas, scipy, statsmodels): imported on use

    metrics = _read_metrics(metrics_tsv)
    rows = []
    for model in MODELS:
        for condition in CONDITIONS:
            subset = _subset(metrics, metrics_tsv, model, condition)
            volumes = subset["volume"].astype(str).to_numpy()
            evaluations = (
                int(subset["evaluations"].iloc[0]) if "evaluations" in subset else float("nan")
            )
            for metric in ("mae", "psnr"):
                values = subset[metric].to_numpy(dtype=float)
                estimate = Statistic.mean(values).estimate(volumes)
                low, high = estimate.interval(confidence)
                paper_mean, paper_std = PAPER_TABLE1[(model, condition, metric)]
                mean = float(values.mean())
                rows.append(
                    {
                        "study": "A",
                        "model": model,
                        "condition": condition,
                        "metric": metric,
                        "mean": mean,
                        "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                        "n": int(values.size),
                        "n_volumes": estimate.n_units,
                        "ci_low": low,
                        "ci_high": high,
                        "value": mean,
                        "paper_value": paper_mean,
                        "paper_std": paper_std,
                        "evaluations_per_image": evaluations,
                        "unit": "dB" if metric == "psnr" else "intensity (range 1)",
                        "note": (
                            f"{100 * confidence:g} % CI of the mean, t over {estimate.n_units} "
                            "test volumes"
                            if estimate.testable
                            else estimate.note
                        ),
                    }
                )
    table = pd.DataFrame(rows)
    write_tsv(output, table)
    return table


#: the study A comparisons: (first, second, condition of first, condition of second)
COMPARISONS = [
    (first, second, condition, condition)
    for condition in CONDITIONS
    for first, second in (("ctm", "unet"), ("ctm", "csm"), ("unet", "csm"))
] + [(model, model, "contour", "contour_bone") for model in MODELS]


def paired_tests(
    metrics_tsv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    confidence: float = 0.95,
    bootstrap_resamples: int = 2000,
    seed: int = 0,
):
    """Model comparisons over test volumes, Holm-adjusted together.

    The unit is the test volume: the views of one volume share its anatomy, so images are
    not independent. Per metric and comparison (CTM vs U-Net, CTM vs CSM, U-Net vs CSM under
    each condition; contour vs contour + bone for each model), the mean paired difference
    first - second over the same test images is tested by a t-test over volumes (the
    cluster-robust variance of :class:`kneesynth.stats.Statistic`: with equal views per
    volume, the one-sample t-test of the per-volume mean differences, V - 1 df), with its t
    interval (``ci_low``, ``ci_high``) and, beside it, a percentile cluster bootstrap by
    volume (``bootstrap_ci_low``, ``bootstrap_ci_high``; too narrow at a few volumes). With
    one test volume no test is possible: ``p_value`` is empty and the note says why. Each
    model is one trained network, so the tests generalise over test volumes, not over
    training runs.
    """
    import pandas as pd  # heavy (pandas): imported on use

    from kneesynth.stats import (  # heavy (pandas, scipy, statsmodels): imported on use
        Statistic,
        cluster_bootstrap_interval,
        difference_test,
        holm,
    )

    metrics = _read_metrics(metrics_tsv)
    key = ["volume", "view"]
    rows = []
    for metric in ("mae", "psnr"):
        for first, second, condition_a, condition_b in COMPARISONS:
            a = _subset(metrics, metrics_tsv, first, condition_a).set_index(key)[metric]
            b = _subset(metrics, metrics_tsv, second, condition_b).set_index(key)[metric]
            a, b = a.align(b, join="inner")
            if a.size < 2:
                raise InputError(metrics_tsv, "fewer than 2 test images shared by a comparison")
            volumes = a.index.get_level_values("volume").astype(str).to_numpy()
            same_condition = condition_a == condition_b
            comparison = (
                f"{first}_vs_{second}" if same_condition else f"{first}:contour_vs_contour_bone"
            )
            result = difference_test(
                Statistic.mean(a.to_numpy(float)), Statistic.mean(b.to_numpy(float)), volumes,
                unit="volume", test="t_over_volumes", confidence=confidence,
            )  # fmt: skip
            boot_low, boot_high = cluster_bootstrap_interval(
                a.to_numpy(float) - b.to_numpy(float), volumes, confidence=confidence,
                n_resamples=bootstrap_resamples, seed=derive_seed(seed, comparison, metric),
            )  # fmt: skip
            rows.append(
                {
                    "study": "A",
                    "comparison": comparison,
                    "test": result.test,
                    "statistic": result.statistic,
                    "p_value": result.p_value,
                    "n": result.n,
                    "unit": result.unit,
                    "n_units": result.n_units,
                    "metric": metric,
                    "condition": condition_a if same_condition else "contour_vs_contour_bone",
                    "model": f"{first}_vs_{second}" if same_condition else first,
                    "difference": result.difference,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "bootstrap_ci_low": boot_low,
                    "bootstrap_ci_high": boot_high,
                    "df": result.df,
                    "note": result.note,
                }
            )
    table = pd.DataFrame(rows)
    table.insert(5, "p_adjusted", holm(table["p_value"].to_numpy()))
    tested = int(table["p_value"].notna().sum())
    table["correction"] = f"holm over the {tested} testable study A tests"
    write_tsv(output, table)
    return table
