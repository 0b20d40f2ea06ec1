"""Segmentation maps of DRRs, as in Mei et al.: contour and contour + bone.

* contour map: 0.5 where the DRR is above ``contour_threshold`` (0.1 in the paper), 0 elsewhere;
* bone map: the contour map plus 0.5 where the (normalised) bone projection is above
  ``bone_threshold``: bone 1.0, soft tissue 0.5, background 0.

Bone is added only inside the contour, so the bone map takes exactly the values {0, 0.5, 1}
(a bone pixel outside the contour would be 0.5 and read as soft tissue; with the configured
thresholds it does not happen for a leg, and clamping it inside the contour keeps the three
classes exact).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kneesynth.errors import InputError
from kneesynth.io import atomic_path, load_npz, save_npz

logger = logging.getLogger(__name__)

BACKGROUND, SOFT_TISSUE, BONE = 0.0, 0.5, 1.0


@dataclass(frozen=True)
class SegmentationSettings:
    """The ``segmentation`` config section."""

    contour_threshold: float = 0.1
    bone_threshold: float = 0.02
    figure_volumes: int = 3
    figure_views: int = 4

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SegmentationSettings:
        settings = cls(
            contour_threshold=float(config["contour_threshold"]),
            bone_threshold=float(config["bone_threshold"]),
            figure_volumes=int(config.get("figure_volumes", 3)),
            figure_views=int(config.get("figure_views", 4)),
        )
        if not (0.0 <= settings.contour_threshold < 1.0 and 0.0 <= settings.bone_threshold < 1.0):
            raise ValueError("segmentation: thresholds must lie in [0, 1)")
        return settings


def contour_mask(drr: np.ndarray, contour_threshold: float = 0.1) -> np.ndarray:
    """Contour map, same shape as ``drr`` (views, H, W) float32: 0.5 where drr > threshold, else 0."""
    return np.where(drr > contour_threshold, np.float32(SOFT_TISSUE), np.float32(BACKGROUND))


def bone_mask(
    drr: np.ndarray,
    bone_projection: np.ndarray,
    contour_threshold: float = 0.1,
    bone_threshold: float = 0.02,
) -> np.ndarray:
    """Contour + bone map (views, H, W) float32 in {0, 0.5, 1}: contour plus 0.5 where the bone
    projection is above ``bone_threshold`` inside the contour."""
    contour = contour_mask(drr, contour_threshold)
    bone = (bone_projection > bone_threshold) & (contour > 0)
    return contour + np.float32(SOFT_TISSUE) * bone.astype(np.float32)


def read_drr(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read ``results/drr/{volume}.npz`` and check it: ``drr`` and ``bone_projection``
    (views, H, W) of one shape, finite, in [0, 1]; ``angles_deg`` (views,)."""

    try:
        arrays = load_npz(path)
    except zipfile.BadZipFile as error:  # a damaged .npz is a damaged zip archive
        raise InputError(path, f"cannot read npz ({error})") from None
    for key in ("drr", "bone_projection", "angles_deg"):
        if key not in arrays:
            raise InputError(path, f"missing array '{key}'")
    drr, bone = arrays["drr"], arrays["bone_projection"]
    if drr.ndim != 3 or bone.shape != drr.shape:
        raise InputError(
            path, f"drr {drr.shape} and bone_projection {bone.shape} must both be (views, H, W)"
        )
    if arrays["angles_deg"].shape != (drr.shape[0],):
        raise InputError(
            path, f"angles_deg {arrays['angles_deg'].shape} does not match {drr.shape[0]} views"
        )
    for key, array in (("drr", drr), ("bone_projection", bone)):
        if (
            not np.isfinite(array).all()
            or array.min(initial=0.0) < 0.0
            or array.max(initial=0.0) > 1.0
        ):
            raise InputError(path, f"'{key}' must be finite and in [0, 1]")
    return arrays


def segment_drr_file(
    drr_path: str | os.PathLike[str], output_path: str | os.PathLike[str], config: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """``results/drr/{volume}.npz`` -> ``results/segmentation/{volume}.npz`` (``contour``,
    ``bone``: (views, H, W) float32 in {0, 0.5, 1}), written atomically."""

    settings = SegmentationSettings.from_config(config)
    arrays = read_drr(drr_path)
    contour = contour_mask(arrays["drr"], settings.contour_threshold)
    bone = bone_mask(
        arrays["drr"],
        arrays["bone_projection"],
        settings.contour_threshold,
        settings.bone_threshold,
    )
    logger.info(
        "%s: contour covers %.1f %% of pixels, bone %.1f %%",
        drr_path,
        100.0 * float((contour > 0).mean()),
        100.0 * float((bone == BONE).mean()),
    )
    save_npz(output_path, contour=contour, bone=bone)
    return {"contour": contour, "bone": bone}


def figure_views(n_views: int, count: int) -> list[int]:
    """``count`` view indices spread evenly over ``n_views`` (0 first)."""
    count = max(1, min(count, n_views))
    return sorted({int(round(i * n_views / count)) % n_views for i in range(count)})


def segmentation_figure(
    drr_paths: Sequence[str | os.PathLike[str]],
    segmentation_paths: Sequence[str | os.PathLike[str]],
    output_path: str | os.PathLike[str],
    config: Mapping[str, Any],
) -> None:
    """Figure of a few views (columns: DRR, contour, contour + bone per view) for the first
    ``figure_volumes`` volumes (rows), written atomically to ``output_path`` (PNG)."""
    import matplotlib  # heavy (matplotlib): imported on use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy (matplotlib): imported on use

    settings = SegmentationSettings.from_config(config)
    if len(drr_paths) != len(segmentation_paths):
        raise ValueError("need one segmentation file per DRR file")
    if not drr_paths:
        raise InputError(output_path, "no volumes to show")
    pairs = list(zip(drr_paths, segmentation_paths, strict=True))[: settings.figure_volumes]
    first = read_drr(pairs[0][0])
    views = figure_views(first["drr"].shape[0], settings.figure_views)
    panels = ("DRR", "contour", "contour + bone")
    fig, axes = plt.subplots(
        len(pairs),
        len(views) * len(panels),
        figsize=(1.6 * len(views) * len(panels), 1.8 * len(pairs) + 0.4),
        squeeze=False,
    )
    for row, (drr_path, segmentation_path) in enumerate(pairs):
        arrays = read_drr(drr_path)
        masks = load_npz(segmentation_path)
        volume = os.path.basename(str(drr_path)).removesuffix(".npz")
        for column, view in enumerate(views):
            view = min(view, arrays["drr"].shape[0] - 1)
            images = (arrays["drr"][view], masks["contour"][view], masks["bone"][view])
            for panel, (title, image) in enumerate(zip(panels, images, strict=True)):
                axis = axes[row, column * len(panels) + panel]
                axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(f"{title}\n{arrays['angles_deg'][view]:.0f} deg", fontsize=7)
            if column == 0:
                axes[row, 0].set_ylabel(volume.replace("SMIR.Body.", ""), fontsize=6)
    fig.suptitle(
        "DRRs and their segmentation maps (background 0, soft tissue 0.5, bone 1)", fontsize=9
    )
    fig.tight_layout()
    with atomic_path(output_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
