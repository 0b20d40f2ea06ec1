"""Study A's dataset: per-volume DRRs + segmentations + splits -> one .npz with ``drr``,
``contour``, ``bone`` (n, H, W) float32 and ``volume``, ``view``, ``split`` (n,).

Conditions: ``contour`` (soft tissue 0.5, background 0) and ``contour_bone`` (bone 1, soft
tissue 0.5, background 0; the segmentation file's ``bone`` map). Images are in [0, 1].
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneesynth.data.splits import SPLITS
from kneesynth.errors import InputError
from kneesynth.io import load_npz, read_tsv, save_npz
from kneesynth.study_a.settings import CONDITIONS

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def condition_key(condition: str) -> str:
    """Dataset array holding the mask of ``condition``."""
    if condition == "contour":
        return "contour"
    if condition == "contour_bone":
        return "bone"
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def _resize(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(n, H, W) -> (n, size, size); area averaging for DRRs, nearest for label masks."""
    if images.shape[-2:] == (size, size):
        return images.astype(np.float32)
    import torch  # heavy (torch): imported on use
    import torch.nn.functional as F  # heavy (torch): imported on use

    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    return F.interpolate(tensor, size=(size, size), mode=mode)[:, 0].numpy()


def _read_volume(drr_path: Path, segmentation_path: Path) -> dict[str, np.ndarray]:
    drr_file = load_npz(drr_path)
    seg_file = load_npz(segmentation_path)
    if "drr" not in drr_file:
        raise InputError(drr_path, "no 'drr' array")
    for key in ("contour", "bone"):
        if key not in seg_file:
            raise InputError(segmentation_path, f"no {key!r} array")
    drr = drr_file["drr"]
    if drr.ndim != 3:
        raise InputError(drr_path, f"'drr' must be (views, H, W), got shape {drr.shape}")
    if not np.isfinite(drr).all() or drr.min() < 0 or drr.max() > 1:
        raise InputError(drr_path, "'drr' must be finite and in [0, 1]")
    for key in ("contour", "bone"):
        mask = seg_file[key]
        if mask.shape != drr.shape:
            raise InputError(
                segmentation_path, f"{key!r} has shape {mask.shape}, the DRRs {drr.shape}"
            )
        if not np.isin(mask, (0.0, 0.5, 1.0)).all():
            raise InputError(segmentation_path, f"{key!r} must hold only 0, 0.5 and 1")
    return {"drr": drr, "contour": seg_file["contour"], "bone": seg_file["bone"]}


def assemble_dataset(
    drr_paths: Sequence[str | os.PathLike[str]],
    segmentation_paths: Sequence[str | os.PathLike[str]],
    volumes_tsv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    image_size: int,
) -> dict[str, int]:
    """Collect every volume's views into one .npz at ``image_size`` x ``image_size``.

    ``volumes_tsv``: columns volume, split (per volume: the default split by volume) and
    optionally view (the paper's split over images: one row per volume and view). Volumes in
    the file without DRRs are an error; DRR files without a row are ignored.
    Output arrays: drr, contour, bone (n, S, S) float32; volume (n,) str; view (n,) int64;
    split (n,) str. Returns the number of images per split.
    """
    splits = read_tsv(volumes_tsv, required=["volume", "split"])
    bad = sorted(set(splits["split"]) - set(SPLITS))
    if bad:
        raise InputError(volumes_tsv, f"unknown split(s) {', '.join(map(str, bad))}")
    by_view = "view" in splits.columns
    drr_by_volume = {Path(p).name.removesuffix(".npz"): Path(p) for p in drr_paths}
    seg_by_volume = {Path(p).name.removesuffix(".npz"): Path(p) for p in segmentation_paths}
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("drr", "contour", "bone")}
    volume_column, view_column, split_column = [], [], []
    for volume in sorted(dict.fromkeys(splits["volume"].astype(str))):
        if volume not in drr_by_volume or volume not in seg_by_volume:
            raise InputError(volumes_tsv, f"volume {volume} has no DRR or segmentation file")
        images = _read_volume(drr_by_volume[volume], seg_by_volume[volume])
        views = images["drr"].shape[0]
        rows = splits[splits["volume"].astype(str) == volume]
        if by_view:
            split_of_view = dict(
                zip(rows["view"].astype(int), rows["split"].astype(str), strict=True)
            )
            missing = sorted(set(range(views)) - set(split_of_view))
            if missing:
                raise InputError(volumes_tsv, f"volume {volume}: no split for view(s) {missing}")
            view_splits = [split_of_view[v] for v in range(views)]
        else:
            if rows["split"].nunique() != 1:
                raise InputError(volumes_tsv, f"volume {volume} is in more than one split")
            view_splits = [str(rows["split"].iloc[0])] * views
        arrays["drr"].append(_resize(images["drr"], image_size, "area"))
        arrays["contour"].append(_resize(images["contour"], image_size, "nearest"))
        arrays["bone"].append(_resize(images["bone"], image_size, "nearest"))
        volume_column += [volume] * views
        view_column += list(range(views))
        split_column += view_splits
    if not volume_column:
        raise InputError(volumes_tsv, "no volumes listed")
    split_array = np.array(split_column)
    counts = {split: int(np.sum(split_array == split)) for split in SPLITS}
    for split in ("train", "test"):
        if counts[split] == 0:
            raise InputError(volumes_tsv, f"no {split} images")
    save_npz(
        output,
        drr=np.concatenate(arrays["drr"]).astype(np.float32),
        contour=np.concatenate(arrays["contour"]).astype(np.float32),
        bone=np.concatenate(arrays["bone"]).astype(np.float32),
        volume=np.array(volume_column),
        view=np.array(view_column, dtype=np.int64),
        split=split_array,
    )
    logger.info("study A dataset: %s images per split -> %s", counts, output)
    return counts


def load_dataset(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the dataset .npz written by :func:`assemble_dataset` (checked)."""
    data = load_npz(path)
    missing = [k for k in ("drr", "contour", "bone", "volume", "view", "split") if k not in data]
    if missing:
        raise InputError(path, f"missing array(s) {', '.join(missing)}")
    return data
