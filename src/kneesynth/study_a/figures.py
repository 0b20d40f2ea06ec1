"""Study A's Fig. 3: mask, reference and every model's sample, per condition. No torch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneesynth.io import atomic_path, load_npz
from kneesynth.study_a.settings import CONDITION_LABELS, CONDITIONS, MODEL_LABELS, MODELS

if TYPE_CHECKING:
    pass
from kneesynth.study_a.evaluate import _sample_name


def figure3(
    sample_paths: Sequence[str | os.PathLike[str]],
    output_png: str | os.PathLike[str],
    output_pdf: str | os.PathLike[str] | None = None,
    cases: int = 2,
) -> None:
    """Fig. 3 layout: rows = test cases under both conditions; columns = condition, U-Net,
    CSM, CTM, ground truth, then the absolute error maps |model - ground truth|."""
    import matplotlib  # heavy (matplotlib): imported on use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy (matplotlib): imported on use

    samples = {}
    for path in sample_paths:
        samples[_sample_name(path)] = load_npz(path)
    missing = [(m, c) for m in MODELS for c in CONDITIONS if (m, c) not in samples]
    if missing:
        raise ValueError(f"figure 3 needs samples of every model and condition; missing {missing}")
    n_images = min(s["generated"].shape[0] for s in samples.values())
    picks = np.linspace(0, n_images - 1, min(cases, n_images)).round().astype(int)
    rows = [(i, c) for i in picks for c in CONDITIONS]
    columns = ["condition", *[MODEL_LABELS[m] for m in MODELS], "ground truth"]
    columns += [f"|{MODEL_LABELS[m]} - GT|" for m in MODELS]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.6 * len(columns), 1.7 * len(rows)), squeeze=False
    )
    error_max = 0.25
    for r, (i, condition) in enumerate(rows):
        reference = samples[("ctm", condition)]
        target = reference["target"][i]
        panels = [(reference["mask"][i], "gray", 1.0)]
        panels += [(samples[(m, condition)]["generated"][i], "gray", 1.0) for m in MODELS]
        panels += [(target, "gray", 1.0)]
        panels += [
            (np.abs(samples[(m, condition)]["generated"][i] - target), "magma", error_max)
            for m in MODELS
        ]
        for c, (image, cmap, vmax) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                label = f"{reference['volume'][i]}\nview {int(reference['view'][i])}\n{CONDITION_LABELS[condition]}"
                ax.set_ylabel(label, fontsize=6)
    fig.subplots_adjust(right=0.9)
    colorbar_axis = fig.add_axes((0.92, 0.3, 0.012, 0.4))
    fig.colorbar(im, cax=colorbar_axis, label="absolute error")
    fig.suptitle("Study A (Fig. 3 of Mei et al.): DRRs generated from segmentations", fontsize=9)
    for path in [output_png, output_pdf]:
        if path is None:
            continue
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=Path(path).suffix.lstrip("."))
    plt.close(fig)
