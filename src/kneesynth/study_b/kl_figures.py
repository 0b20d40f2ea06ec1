"""Study B's classifier figures: confusion matrices pooled over seeds, and accuracy per arm with
the seeds' spread and the paper's values. Plots tables only (no scikit-learn, no scipy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kneesynth.io import atomic_path
from kneesynth.study_b.settings import TASK_CLASS_NAMES, TASK_CLASSES

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------- figures
def plot_confusion_matrices(confusion: pd.DataFrame, path, arms: Sequence[str] | None = None):
    """Seed-pooled confusion matrices: one row of panels per task, one column per arm.

    confusion: output of :func:`pooled_confusion`. Colour = share of the true class's test
    images (rows sum to 1); numbers = counts summed over seeds. Writes ``path`` atomically.
    """
    import matplotlib  # heavy (matplotlib): imported on use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy (matplotlib): imported on use

    tasks = [t for t in TASK_CLASSES if t in set(confusion["task"])]
    arms = list(arms or dict.fromkeys(confusion["arm"]))
    fig, axes = plt.subplots(
        len(tasks),
        len(arms),
        figsize=(2.9 * len(arms), 2.7 * len(tasks)),
        squeeze=False,
        gridspec_kw={"wspace": 0.45, "hspace": 0.55},
    )
    image = None
    for row, task in enumerate(tasks):
        k = len(TASK_CLASSES[task])
        for col, arm in enumerate(arms):
            ax = axes[row, col]
            cells = confusion[(confusion["task"] == task) & (confusion["arm"] == arm)]
            if cells.empty:
                ax.set_axis_off()
                continue
            counts = np.zeros((k, k), dtype=np.int64)
            counts[cells["true_class"], cells["predicted_class"]] = cells["count"]
            share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
            names = TASK_CLASS_NAMES[task]
            ax.set_xticks(range(k), names, fontsize=6, rotation=45)
            ax.set_yticks(range(k), names, fontsize=6)
            accuracy = np.trace(counts) / max(counts.sum(), 1)
            ax.set_title(f"{arm}\n{task}, accuracy {accuracy:.3f}", fontsize=8)
            if col == 0:
                ax.set_ylabel("true", fontsize=7)
            if row == len(tasks) - 1:
                ax.set_xlabel("predicted", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of true class")
    fig.suptitle("KL classifiers on the real test split (counts summed over seeds)", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy(table: pd.DataFrame, per_seed: pd.DataFrame, path):
    """Accuracy per arm: bar = mean over seeds, whisker = 95 % t interval over test
    participants and seeds, dots = single seeds, star = the abstract's accuracy (task not
    stated), one panel per task. table: :func:`kl_classification_table`; per_seed: :func:`metrics_per_seed`.
    """
    import matplotlib  # heavy (matplotlib): imported on use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy (matplotlib): imported on use

    accuracy = table[table["metric"] == "accuracy"]
    tasks = [t for t in TASK_CLASSES if t in set(accuracy["condition"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = accuracy[accuracy["condition"] == task].reset_index(drop=True)
        x = np.arange(len(rows))
        values = rows["value"].to_numpy(float)
        low = values - rows["ci_low"].to_numpy(float)
        high = rows["ci_high"].to_numpy(float) - values
        ax.bar(x, values, color="#9ecae1", edgecolor="#3182bd", width=0.6, label="mean over seeds")
        ax.errorbar(
            x,
            values,
            yerr=np.vstack([low, high]),
            fmt="none",
            ecolor="black",
            capsize=4,
            label="95 % CI (participants, seeds)",
        )
        seeds = per_seed[(per_seed["task"] == task) & (per_seed["metric"] == "accuracy")]
        for i, arm in enumerate(rows["model"]):
            points = seeds.loc[seeds["arm"] == arm, "value"].to_numpy(float)
            ax.scatter(
                np.full(points.size, i) + np.linspace(-0.12, 0.12, points.size),
                points,
                s=12,
                color="#08519c",
                zorder=3,
                label="one seed" if i == 0 else None,
            )
        paper = rows["paper_value"].astype(float)
        if paper.notna().any():
            ax.scatter(
                x[paper.notna()],
                paper[paper.notna()],
                marker="*",
                s=90,
                color="#de2d26",
                zorder=4,
                label="abstract (task not stated)",
            )
        ax.set_xticks(x, rows["model"], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy on the real test split")
        ax.set_title({"kl5": "5-class KL grade", "kl_binary": "KL >= 2 (binary)"}[task], fontsize=9)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)
